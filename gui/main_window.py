"""The main window: the welcome page or the project's steps, the File menu, the status bar, drag and drop.

The window only wires things together: the project and its draft live in ``gui.project``, the steps in
``gui.sidebar``, the Data step in ``gui.steps.data.page``. Other steps plug in with ``window.steps.set_page(key, widget)``
and report their state with ``window.steps.set_state(key, StepState..., reason)``; they read and change the settings
through ``window.project`` (a ``ProjectModel``).

Questions to the user (unsaved changes, file dialogs, errors) go through small ``ask_*`` / ``show_error`` methods so
that tests can answer them.
"""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

import os
from pathlib import Path

from PySide6.QtCore import QSettings, QUrl
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QKeySequence
from PySide6.QtWidgets import QFileDialog, QLabel, QMainWindow, QMenu, QMessageBox, QStackedWidget, QWidget

from engine.paths import user_data_dir
from engine.project.demo import DEMO_NAME, open_demo_project
from engine.errors import UserError
from engine.project.runs import list_runs
from engine.project.project import PROJECT_SUFFIX, Project, discard_draft, new_project, open_project, read_draft, \
    safe_file_stem
from gui import style
from gui.steps.data.page import DataPage
from gui.steps.data.health import ATTENTION
from gui.widgets.format import plural
from gui.project import DraftKeeper, ProjectModel
from gui.support.jobs import Jobs
from gui.settings import LAST_FOLDER_KEY, LAST_PROJECT_FOLDER_KEY, RecentProjects, default_settings, read_bytes
from gui.support import errors, gc_guard
from gui.support.dialogs import start_folder
from gui.sidebar import Steps, StepState
from gui.welcome import WelcomePage

APP_NAME = "Transfer Studio"
PROJECT_FILTER = f"Transfer Studio projects (*{PROJECT_SUFFIX});;All files (*)"


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None, data_dir: str | os.PathLike | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        gc_guard.install()  # Qt objects are only ever freed on this thread (see gui.support.gc_guard)
        self.settings = settings if settings is not None else default_settings()
        self.data_dir = Path(data_dir) if data_dir is not None else user_data_dir()
        self.error_reporter = errors.install(self.data_dir / "logs", self)  # no exception reaches only the terminal
        self.recent = RecentProjects(self.settings)
        self.project = ProjectModel(self.data_dir, self)
        self.drafts = DraftKeeper(self.project, self.data_dir, self)
        self.drafts.error.connect(self.show_status)

        self.welcome = WelcomePage()
        self.steps = Steps()
        # The one job service for background work other than training: every step runs on a lane of it, and
        # shutdown() stops and waits for all of it.
        self.jobs = Jobs(self)
        self.data_page = DataPage(self.project, jobs=self.jobs)
        self.steps.set_page("data", self.data_page)
        from gui.training_steps import TrainingSteps

        self.training = TrainingSteps(self)
        self.project.project_replaced.connect(self.training.train.clear)  # no curves of another project's run
        self.training.train.prepare_config = self._with_labelled_pool
        from gui.result_steps import ResultSteps

        self.results = ResultSteps(self)
        from gui.steps.label import LabelPage

        self.label_page = LabelPage(self.project, jobs=self.jobs)  # active learning (engine.active)
        self.steps.set_page("label", self.label_page)
        self.label_page.stateChanged.connect(lambda state, reason: self.steps.set_state("label", StepState(state),
                                                                                        reason))
        self.label_page.stateChanged.emit(*self.label_page.step_state())
        self.training.train.runFinished.connect(lambda result: self.label_page.refresh_runs(  # (None: no result)
            result.run_dir if getattr(result, "status", None) == "completed" else None))
        self.stack = QStackedWidget()
        self.stack.addWidget(self.welcome)
        self.stack.addWidget(self.steps)
        self.setCentralWidget(self.stack)

        self.summary = QLabel()
        self.summary.setToolTip("The project's pictures and model.")
        self.offline_label = QLabel("Offline: no network connection")
        self.offline_label.setToolTip("Work offline is on (File menu): Transfer Studio opens no network connection at "
                                      "all; pretrained weights come only from this computer.")
        self.statusBar().addPermanentWidget(self.offline_label)
        self.statusBar().addPermanentWidget(self.summary)

        self._make_actions()
        self._make_menus()
        self.setAcceptDrops(True)
        self.setWindowIcon(style.app_icon())
        self.setMinimumSize(760, 520)

        self.welcome.open_folder_requested.connect(self.choose_folder)
        self.welcome.open_project_requested.connect(self.choose_project)
        self.welcome.open_demo_requested.connect(self.open_demo)
        self.welcome.recent_requested.connect(self.open_project_file)
        self.data_page.open_folder_requested.connect(self.choose_dataset_folder)
        self.data_page.status.connect(self.show_status)
        self.data_page.state_changed.connect(self._update_steps)
        self.data_page.prepared.connect(self._on_prepared)
        self.project.changed.connect(self._update_title)
        self.project.changed.connect(self._update_summary)
        self.project.changed.connect(self._update_actions)
        self.project.dataset_changed.connect(self._update_steps)
        self.project.changed.connect(self._update_runs_note)
        self.training.train.runFinished.connect(self._run_ended)

        self._restore_settings()
        self._show_welcome()
        self._update_title()
        self._update_actions()
        self._update_steps()

    # -- actions and menus -----------------------------------------------------------------------------------

    def _action(self, text: str, tip: str, slot, shortcut=None, icon: str | None = None) -> QAction:
        action = QAction(text, self)
        action.setToolTip(tip)
        action.setStatusTip(tip)
        if shortcut is not None:
            action.setShortcut(shortcut)
        if icon:
            action.setIcon(style.icon(icon))
        action.triggered.connect(lambda _checked=False: slot())
        return action

    def _make_actions(self) -> None:
        self.act_open_folder = self._action(
            "Open &image folder...", "Start a new project from a folder of pictures (one sub-folder per class).",
            self.choose_folder, QKeySequence("Ctrl+Shift+O"), "open-folder")
        self.act_open_project = self._action("&Open project...", "Open a project you saved before.",
                                             self.choose_project, QKeySequence.StandardKey.Open, "open-project")
        self.act_demo = self._action("Open &demo project", "Open the demo: generated pictures and a small model that "
                                     "trains in under a minute without a download.", self.open_demo, icon="demo")
        self.act_save = self._action("&Save", "Save the project (its folder of pictures and every setting).",
                                     self.save, QKeySequence.StandardKey.Save, "save")
        self.act_save_as = self._action("Save &as...", "Save the project in a new file.", self.save_as,
                                        QKeySequence.StandardKey.SaveAs)
        self.act_close = self._action("&Close project", "Close the project and go back to the start page.",
                                      self.close_project, QKeySequence.StandardKey.Close)
        self.act_quit = self._action("&Quit", "Close Transfer Studio.", self.close, QKeySequence.StandardKey.Quit)
        self.act_offline = QAction("Work &offline", self)
        self.act_offline.setCheckable(True)
        self.act_offline.setToolTip("Open no network connection at all: no downloads, no checks for weights online. "
                                    "Pictures and models never leave this computer either way.")
        self.act_offline.setStatusTip(self.act_offline.toolTip())
        self.act_offline.toggled.connect(lambda on: self.set_offline(on))
        self.act_data_folder = self._action(
            "Show the app's data &folder", "Open the folder where Transfer Studio keeps the demo and its backups.",
            lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.data_dir))))
        self.act_about = self._action("&About Transfer Studio", "Version and licence.", self._about)
        self.act_check = self._action(
            "&Check this computer...", "Python, PyTorch and CUDA versions, each GPU and whether it computes in bf16 "
            "and fp16, free disk space, offline mode and the pretrained weights on this computer, with what to do "
            "about each problem.", self.check_computer)
        self.act_guide = self._action(
            "&Guide", "What each step is for and how to choose: which strategy when, what freezing means, what the "
            "figures of Evaluate mean, exports, working offline.", self.show_guide, QKeySequence("F1"))

    def _make_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        file_menu.setToolTipsVisible(True)
        file_menu.addAction(self.act_open_folder)
        file_menu.addAction(self.act_open_project)
        self.recent_menu = QMenu("Open &recent", self)
        self.recent_menu.setToolTipsVisible(True)
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file_menu.addMenu(self.recent_menu)
        file_menu.addAction(self.act_demo)
        file_menu.addSeparator()
        file_menu.addAction(self.act_save)
        file_menu.addAction(self.act_save_as)
        file_menu.addAction(self.act_close)
        file_menu.addSeparator()
        file_menu.addAction(self.act_offline)
        file_menu.addSeparator()
        file_menu.addAction(self.act_quit)
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.setToolTipsVisible(True)
        help_menu.addAction(self.act_guide)
        help_menu.addAction(self.act_check)
        help_menu.addSeparator()
        help_menu.addAction(self.act_data_folder)
        help_menu.addAction(self.act_about)
        self.steps.help_requested.connect(self.show_guide)  # the "?" of each step

    def set_offline(self, offline: bool, remember: bool = True) -> None:
        """The offline switch (engine.models.build.offline_mode): remembered, and shown in the status bar while on. The
        TRANSFER_STUDIO_OFFLINE environment variable turns it on for a session whatever was remembered."""
        from engine.offline import set_offline

        set_offline(offline)  # the switch, and the guard that refuses any connection to another computer while on
        if self.act_offline.isChecked() != offline:
            self.act_offline.setChecked(offline)
        self.offline_label.setVisible(offline)
        if remember:
            self.settings.setValue("network/offline", offline)

    def check_computer(self) -> None:
        """Help > Check this computer: the one dialog of this window (gui.check), checking afresh each time."""
        from gui.check import show_check

        show_check(self, runs_dir=self.project.config.out if self.project.is_open else None)

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        paths = self.recent.paths()
        for path in paths:
            action = self.recent_menu.addAction(Path(path).stem)
            action.setToolTip(path)
            action.triggered.connect(lambda _checked=False, p=path: self.open_project_file(p))
        if not paths:
            empty = self.recent_menu.addAction("No recent projects")
            empty.setEnabled(False)

    # -- opening ---------------------------------------------------------------------------------------------

    def choose_folder(self) -> None:
        folder = self.ask_folder("Open a folder of pictures")
        if folder:
            self.open_folder(folder)

    def open_folder(self, folder: str | os.PathLike) -> bool:
        """Start a new project from a folder of pictures (after asking about unsaved changes)."""
        if not self.maybe_keep_changes():
            return False
        folder = Path(folder).expanduser().resolve()
        self.settings.setValue(LAST_FOLDER_KEY, str(folder.parent if folder.is_dir() else folder))
        self.project.load(new_project(folder, data_dir=self.data_dir))
        self._show_steps()
        self.data_page.start_scan()
        return True

    def choose_dataset_folder(self) -> None:
        """The Data step's 'Choose another folder...': the same project, other pictures."""
        folder = self.ask_folder("Choose the folder of pictures for this project")
        if not folder:
            return
        if not self.project.is_open:
            self.open_folder(folder)
            return
        self.settings.setValue(LAST_FOLDER_KEY, str(Path(folder).parent))
        self.project.update_data(source=str(Path(folder).resolve()))
        self.project.set_dataset(None)
        self.data_page.start_scan()

    def choose_project(self) -> None:
        path = self.ask_open_project()
        if path:
            self.open_project_file(path)

    def open_project_file(self, path: str | os.PathLike) -> bool:
        path = str(Path(path).expanduser().resolve())
        if self.project.path == path and self.stack.currentWidget() is self.steps:
            return True  # already open (e.g. a double-click on a recent project)
        if not self.maybe_keep_changes():
            return False
        try:
            opened = open_project(path, data_dir=self.data_dir)
        except UserError as exc:
            self.show_error("The project cannot be opened", str(exc))
            if not Path(path).exists():
                self.recent.remove(path)
                self.welcome.set_recent(self.recent.paths())
            return False
        self.settings.setValue(LAST_PROJECT_FOLDER_KEY, str(Path(path).parent))
        self.recent.add(path)
        self.project.load(opened.project)
        self._show_steps()
        self.data_page.start_scan()
        for note in opened.notes:
            self.show_error("The project was changed while opening", note, warning=False)
        return True

    def open_demo(self) -> bool:
        """Open the demo project; its pictures are made in the data folder on first use (in the background)."""
        if not self.maybe_keep_changes():
            return False
        data_dir = self.data_dir

        def prepare(on_progress, stop):
            project = open_demo_project(data_dir, on_progress=on_progress, stop=stop)
            return project.config.data, project

        self.project.load(None)
        self._show_steps()
        self.show_status(f"Preparing the {DEMO_NAME.lower()} ...")
        self.data_page.start_scan(prepare)
        return True

    def _on_prepared(self, project) -> None:
        if isinstance(project, Project):
            self.project.load(project)
            if project.path:
                self.recent.add(project.path)

    # -- saving and closing ----------------------------------------------------------------------------------

    def save(self) -> bool:
        if not self.project.is_open:
            return False
        if self.project.path is None:
            return self.save_as()
        return self._save_to(self.project.path)

    def save_as(self) -> bool:
        if not self.project.is_open:
            return False
        start = self.project.path or str(Path(start_folder(self, last_key=LAST_PROJECT_FOLDER_KEY))
                                         / (safe_file_stem(self.project.name) + PROJECT_SUFFIX))
        path = self.ask_save_project(start)
        if not path:
            return False
        if not path.endswith(PROJECT_SUFFIX):
            path += PROJECT_SUFFIX
        if self.project.path != str(Path(path).resolve()):
            self.project.rename(Path(path).stem)
        return self._save_to(path)

    def _save_to(self, path: str) -> bool:
        try:
            result = self.project.save(path, busy=self._runs_busy())
        except UserError as exc:
            self.show_error("The project was not saved", str(exc))
            return False
        saved = result.project
        self.settings.setValue(LAST_PROJECT_FOLDER_KEY, str(Path(saved.path).parent))
        self.recent.add(saved.path)
        self.drafts.discard()
        moved, copied = len(result.moved), len(result.copied)
        self.show_status(f"Saved {saved.path}" + (f"; its {moved} run{'s' if moved != 1 else ''} moved into "
                                                  f"{saved.config.out}" if moved else "")
                         + (f"; copies of its {copied} run{'s' if copied != 1 else ''} made in {saved.config.out}"
                            if copied else ""))
        for note in result.notes:
            self.show_error("The runs stayed where they were", note, warning=False)
        return True

    def _with_labelled_pool(self, config):
        """The settings a run started in the Train step trains: the project's, with the pool pictures labelled in
        the Label step joined (engine.active, as `main.py train PROJECT.tsproj` and the Label step's Retrain do), and
        the sentence that says so ("" when none is labelled)."""
        from engine.active import with_labelled_pool

        project = self.project.project
        if project is None:
            return config, ""
        joined, summary = with_labelled_pool(project, config)
        return joined, summary.sentence() if summary is not None else ""

    def _runs_busy(self) -> str:
        """Why the project's runs cannot move right now (a sentence), or ""."""
        if self.training.train.running:
            return "A model of this project is training."
        pages = (self.results.evaluate, self.results.predict)
        if any(page.jobs.running(kind) for page in pages for kind in ("evaluate", "heatmap", "predict", "export")):
            return "The Evaluate or Predict & Export step is working with a run."
        return ""

    def _update_runs_note(self) -> None:
        self.training.train.set_runs_note(self.project.runs_note())

    def _run_ended(self, _result) -> None:
        """A run of a project whose runs only a save keeps with it: the project now has something to save."""
        if self.project.runs_waiting is not None:
            self.project.mark_modified()

    def close_project(self) -> bool:
        if not self.maybe_keep_changes():
            return False
        self.data_page.cancel_scan()
        self.project.load(None)
        self.drafts.discard()
        self._show_welcome()
        return True

    def maybe_keep_changes(self) -> bool:
        """Before the project goes away: True when it may go (saved, discarded or unchanged)."""
        if not self.project.is_open or not self.project.is_dirty:
            return True
        answer = self.ask_unsaved()
        if answer == "save":
            return self.save()
        if answer == "discard":
            self.drafts.discard()
            return True
        return False

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self.training.confirm_close() or not self.maybe_keep_changes():
            event.ignore()
            return
        self._save_settings()
        self.shutdown()
        self.drafts.discard()
        event.accept()

    def shutdown(self) -> None:
        """Stop all background work and wait for it: every job (scans, thumbnails, models, evaluation, predictions,
        exports) and the training run. The one shutdown path; safe to call more than once."""
        self.drafts.timer.stop()
        self.jobs.shutdown()
        self.training.shutdown()

    # -- the draft left by a crash ---------------------------------------------------------------------------

    def restore_draft(self) -> bool:
        """Offer the draft of a session that ended without saving; True when it was restored."""
        draft = read_draft(data_dir=self.data_dir)
        if draft is None:
            return False
        if not self.ask_restore_draft(draft.project):
            discard_draft(data_dir=self.data_dir)
            return False
        self.project.load(draft.project, dirty=True)
        self._show_steps()
        self.data_page.start_scan()
        self.drafts.write_now()
        return True

    # -- questions (tests replace these) ---------------------------------------------------------------------

    def ask_unsaved(self) -> str:
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("Unsaved changes")
        box.setText(f"Save the changes to \u201c{self.project.name}\u201d?")
        waiting = self.project.runs_waiting
        box.setInformativeText("If you don't save, your changes will be lost." + (
            f" Its runs stay in {waiting}, but no project will list them." if waiting and list_runs(waiting) else ""))
        box.setStandardButtons(QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                               | QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Save)
        answer = box.exec()
        return {QMessageBox.StandardButton.Save: "save",
                QMessageBox.StandardButton.Discard: "discard"}.get(QMessageBox.StandardButton(answer), "cancel")

    def ask_restore_draft(self, project: Project) -> bool:
        answer = QMessageBox.question(
            self, "Restore unsaved changes?",
            f"Transfer Studio closed before \u201c{project.name}\u201d was saved. Restore the unsaved changes?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes)
        return answer == QMessageBox.StandardButton.Yes

    def ask_folder(self, title: str) -> str:
        return QFileDialog.getExistingDirectory(self, title, start_folder(self, last_key=LAST_FOLDER_KEY))

    def ask_open_project(self) -> str:
        start = start_folder(self, last_key=LAST_PROJECT_FOLDER_KEY)
        path, _ = QFileDialog.getOpenFileName(self, "Open a project", start, PROJECT_FILTER)
        return path

    def ask_save_project(self, start: str) -> str:
        path, _ = QFileDialog.getSaveFileName(self, "Save the project", start, PROJECT_FILTER)
        return path

    def show_error(self, title: str, message: str, warning: bool = True) -> None:
        box = QMessageBox.warning if warning else QMessageBox.information
        box(self, title, message)

    def show_status(self, message: str) -> None:
        self.statusBar().showMessage(message, 10_000)

    # -- drag and drop ---------------------------------------------------------------------------------------

    @staticmethod
    def _dropped_path(mime) -> Path | None:
        urls = [u for u in mime.urls() if u.isLocalFile()] if mime.hasUrls() else []
        if len(urls) != 1:
            return None
        path = Path(urls[0].toLocalFile())
        if path.is_dir() or (path.is_file() and path.suffix.lower() in (PROJECT_SUFFIX, ".csv")):
            return path
        return None

    def dragEnterEvent(self, event) -> None:
        if self._dropped_path(event.mimeData()) is not None:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event) -> None:
        path = self._dropped_path(event.mimeData())
        if path is None:
            event.ignore()
            return
        event.acceptProposedAction()
        if path.suffix.lower() == PROJECT_SUFFIX:
            self.open_project_file(path)
        else:
            self.open_folder(path)

    # -- what the window shows -------------------------------------------------------------------------------

    def _show_welcome(self) -> None:
        self.welcome.set_recent(self.recent.paths())
        self.stack.setCurrentWidget(self.welcome)

    def _show_steps(self) -> None:
        self.stack.setCurrentWidget(self.steps)
        self.steps.go_to("data")

    def _update_title(self) -> None:
        if self.project.is_open:
            self.setWindowTitle(f"{APP_NAME} - {self.project.name}[*]")
            self.setWindowModified(self.project.is_dirty)
        else:
            self.setWindowTitle(APP_NAME)
            self.setWindowModified(False)

    def _update_actions(self) -> None:
        is_open = self.project.is_open
        for action in (self.act_save, self.act_save_as, self.act_close):
            action.setEnabled(is_open)

    def _update_summary(self) -> None:
        index = self.project.dataset
        if not self.project.is_open:
            self.summary.setText("")
            return
        parts = []
        if index is not None:
            counts = index.counts()
            sizes = " / ".join(f"{sum(counts[s].values()):,} {s}" for s in ("train", "val", "test")
                               if any(counts[s].values()))
            parts.append(f"{sizes} pictures")
            from gui.widgets.task_heads import class_words  # several tasks: their classes (issue #17)

            parts.append(class_words(index))
        model = self.project.config.model
        weights = {"pretrained": "pretrained", "none": "random weights"}.get(model.weights, Path(model.weights).name)
        parts.append(f"{model.name.split(':', 1)[-1]} ({weights})")
        self.summary.setText("  \u00b7  ".join(parts))

    def _update_steps(self) -> None:
        """The Data step's state; steps plugged in from elsewhere report their own."""
        page = self.data_page
        index = self.project.dataset
        if page.scanning:
            state, reason = StepState.READY, "Checking the pictures ..."
        elif index is not None:
            attention = [m for k, m in ((a.kind, a.message) for a in index.health.advice) if k in ATTENTION]
            if attention:
                state = StepState.ATTENTION
                reason = (f"{len(attention)} thing{'s' if len(attention) > 1 else ''} to look at (see Health): "
                          + attention[0])
            else:
                state = StepState.DONE
                from gui.widgets.task_heads import class_words  # several tasks: their classes (issue #17)

                reason = f"{class_words(index)}, {plural(len(index.samples), 'picture')}."
        elif page.error:
            state, reason = StepState.ATTENTION, page.error
        elif self.project.is_open:
            state, reason = StepState.READY, "Choose a folder of pictures."
        else:
            state, reason = StepState.BLOCKED, "Open a folder of pictures or a project first."
        self.steps.set_state("data", state, reason)
        self._update_summary()

    # -- settings --------------------------------------------------------------------------------------------

    def _restore_settings(self) -> None:
        from engine.models.build import offline_mode

        remembered = str(self.settings.value("network/offline", False)).lower() in ("true", "1")
        self.set_offline(offline_mode() or remembered, remember=False)
        geometry = read_bytes(self.settings, "window/geometry")
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(1200, 780)
        for key, splitter in (("window/data_splitter", self.data_page.splitter),
                              ("window/data_side_splitter", self.data_page.side)):
            state = read_bytes(self.settings, key)
            if state is not None:
                splitter.restoreState(state)
            elif splitter is self.data_page.splitter:
                splitter.setSizes([640, 480])
            else:
                splitter.setSizes([240, 520])  # the counts; the split and the health report

    def _save_settings(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/data_splitter", self.data_page.splitter.saveState())
        self.settings.setValue("window/data_side_splitter", self.data_page.side.saveState())
        self.settings.sync()

    def show_guide(self, key: str | None = None):
        """Open the guide (a window beside this one) at step ``key``'s section; without a key, at the step shown."""
        from gui.help import show_guide

        if key is None and self.stack.currentWidget() is self.steps:
            key = self.steps.current_key()
        return show_guide(self, key)

    def _about(self) -> None:
        QMessageBox.about(self, f"About {APP_NAME}",
                          f"<h3>{APP_NAME}</h3><p>Transfer learning on your own pictures, on your own computer.</p>"
                          f"<p>Projects, demo and backups are kept in {self.data_dir}.</p>")
