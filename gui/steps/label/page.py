"""The Label step: label the right pictures next.

The user points the project at a folder of unlabelled pictures (the *pool*), and the chosen run's model ranks them
(``engine.active.ranking``: uncertainty balanced with diversity). Then, three ways to answer, all stored at once in the
labels CSV beside the project (``engine.active.labels``, written atomically):

- **One by one**: the queue of suggestions, the current picture large with the model's guess pre-selected; number keys
  give a class, Enter accepts the guess, 0 says "none of these", Space skips (``view.LabelView``);
- **Grid**: every picture still to label, with the model's guess; select many and label them at once;
- **Map**: the pictures on a 2-D map of the model's features (PCA), ringed in the colour of the guess, filled once
  answered; drag a lasso around a group and label it at once.

*Retrain* trains the project's settings on its data plus the labelled pictures (``engine.active.retrain``: with feature
extraction and the frozen layers' outputs stored, only the head is refitted on them, engine.active.refit: seconds, and
the status line says so), the chart below shows validation accuracy against the pictures labelled, round after round,
and the new run's suggestions follow; the status line says how far the labelling is ("12 of 340 pool pictures
labelled; 20 suggested"). Saving the project takes the labels along (engine.active.relocate): the page follows them. Background work runs on a lane of the
window's job service.
"""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

import html
import json
import os
from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QHBoxLayout, QLabel, QListWidget,
                               QListWidgetItem, QProgressBar, QPushButton, QSpinBox, QSplitter, QTabWidget,
                               QVBoxLayout, QWidget)

from engine.active import (NONE_OF_THESE, Labels, copy_into_class_folders, labels_path_for, pca_map, read_labels,
                           read_rounds, retrain, run_round, scan_pool, suggest)
from engine.errors import UserError
from gui import style
from gui.support.dialogs import start_folder
from gui.support.jobs import Jobs
from gui.steps.label.charts import PictureMap, RoundsChart, class_colour
from gui.steps.label.view import LabelView
from gui.widgets.format import plural
from gui.widgets.run_chooser import RunChooser
from gui.widgets.thumbnails import ThumbnailCache, ThumbnailLoader, make_thumbnail, placeholder_pixmap

THUMB = 64
BIG = 720  # pixels: the longer side of the picture being labelled
NONE_WORDS = "none of these"
SEED = 0


def _answer_words(label: str | None) -> str:
    return NONE_WORDS if label == NONE_OF_THESE else (label or "")


class LabelPage(QWidget):
    """The Label step's page (see the module). ``project``: the window's ProjectModel."""

    retrained = Signal(object)  # RunResult of a retrain that completed
    labelsChanged = Signal()
    stateChanged = Signal(str, str)  # the step's state (gui.sidebar.StepState's value) and the reason, in words

    def __init__(self, project, jobs: Jobs | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.project = project
        self.jobs = Jobs(self, 2, service=jobs)
        self.loader = ThumbnailLoader(THUMB, parent=self, jobs=jobs)
        self.thumbs = ThumbnailCache()
        self.loader.loaded.connect(self._thumb_loaded)
        self.pool = None
        self.labels: Labels | None = None
        self.classes: list[str] = []
        self.found = None  # engine.active.ranking.SuggestResult
        self.coords = None
        self.queue: list = []  # Suggestions, in their order
        self.position = 0
        self.map_selection: list[int] = []
        self._after_retrain = ""  # what the last retrain did, said again once its suggestions are shown

        # -- the top: model, pool, suggest ------------------------------------------------------------------
        self.run_chooser = RunChooser("The trained model that suggests pictures and guesses their class.")
        self.pool_label = QLabel()
        self.pool_label.setTextFormat(Qt.TextFormat.RichText)  # escaped folder names: "Tom's" shown as written
        self.pool_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.pool_button = QPushButton(style.icon("open-folder"), "Choose the pictures to label...")
        self.pool_button.setToolTip("A folder of pictures nobody has sorted yet (sub-folders too). They are checked "
                                    "like the labelled data and never used for training until you label them.")
        self.count = QSpinBox()
        self.count.setRange(1, 500)
        self.count.setValue(20)
        self.count.setSuffix(" pictures")
        self.count.setToolTip("How many pictures to suggest at a time.")
        self.suggest_button = QPushButton(style.icon("review"), "Suggest")
        self.suggest_button.setToolTip("Rank the pictures still to label by how much labelling each would help the "
                                       "model: those it is least sure about, spread over different kinds of picture "
                                       "(not twenty near-copies).")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.hide()
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.RichText)  # escaped messages: quotes shown as written
        top = QHBoxLayout()
        top.addWidget(QLabel("Model:"))
        top.addWidget(self.run_chooser, 2)
        top.addSpacing(12)
        top.addWidget(self.pool_button)
        top.addWidget(self.pool_label, 2)
        top2 = QHBoxLayout()
        top2.addWidget(QLabel("Suggest"))
        top2.addWidget(self.count)
        top2.addWidget(self.suggest_button)
        top2.addWidget(self.progress)
        top2.addWidget(self.status, 1)

        # -- one by one ---------------------------------------------------------------------------------------
        self.queue_list = QListWidget()
        self.queue_list.setIconSize(QSize(THUMB, THUMB))
        self.queue_list.setMinimumWidth(230)
        self.queue_list.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # long file names keep their ends
        self.queue_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.queue_list.setToolTip("The suggested pictures, most helpful first; a tick marks those answered.")
        self.view = LabelView()
        one = QSplitter()
        one.addWidget(self.queue_list)
        one.addWidget(self.view)
        one.setStretchFactor(1, 1)
        one.setSizes([260, 700])

        # -- grid -------------------------------------------------------------------------------------------
        self.grid = QListWidget()
        self.grid.setViewMode(QListWidget.ViewMode.IconMode)
        self.grid.setIconSize(QSize(THUMB + 32, THUMB + 32))
        self.grid.setGridSize(QSize(THUMB + 72, THUMB + 76))
        self.grid.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.grid.setMovement(QListWidget.Movement.Static)
        self.grid.setWordWrap(True)
        self.grid.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.grid.setToolTip("Every picture still to label, with the model's guess. Select several (Ctrl or Shift "
                             "click, or drag) and label them at once below.")
        self.grid_class = QComboBox()
        self.grid_apply = QPushButton("Label the selected pictures")
        self.grid_pick = QComboBox()
        self.grid_pick.setToolTip("Select every picture the model guesses as this class, to check and label them at "
                                  "once.")
        grid_row = QHBoxLayout()
        grid_row.addWidget(QLabel("Select all guessed as"))
        grid_row.addWidget(self.grid_pick)
        grid_row.addStretch(1)
        grid_row.addWidget(QLabel("Answer:"))
        grid_row.addWidget(self.grid_class)
        grid_row.addWidget(self.grid_apply)
        grid_page = QWidget()
        g = QVBoxLayout(grid_page)
        g.setContentsMargins(0, 0, 0, 0)
        g.addWidget(self.grid, 1)
        g.addLayout(grid_row)

        # -- map --------------------------------------------------------------------------------------------
        self.map = PictureMap()
        self.map.setToolTip("Pictures the model sees alike lie close together. Drag a lasso around a group with the "
                            "left button to select it; the right button and the wheel pan and zoom.")
        self.map_words = QLabel("Drag a lasso around a group of pictures to select them.")
        self.map_class = QComboBox()
        self.map_apply = QPushButton("Label the selected pictures")
        self.map_thumbs = QListWidget()
        self.map_thumbs.setViewMode(QListWidget.ViewMode.IconMode)
        self.map_thumbs.setIconSize(QSize(48, 48))
        self.map_thumbs.setFlow(QListWidget.Flow.LeftToRight)
        self.map_thumbs.setWrapping(False)
        self.map_thumbs.setFixedHeight(78)
        self.map_thumbs.setToolTip("The pictures inside the lasso: check them before labelling them at once.")
        map_row = QHBoxLayout()
        map_row.addWidget(self.map_words, 1)
        map_row.addWidget(QLabel("Answer:"))
        map_row.addWidget(self.map_class)
        map_row.addWidget(self.map_apply)
        map_page = QWidget()
        m = QVBoxLayout(map_page)
        m.setContentsMargins(0, 0, 0, 0)
        m.addWidget(self.map, 1)
        m.addWidget(self.map_thumbs)
        m.addLayout(map_row)

        self.tabs = QTabWidget()
        self.tabs.addTab(one, "One by one")
        self.tabs.addTab(grid_page, "Grid")
        self.tabs.addTab(map_page, "Map")

        # -- bottom: counts, retrain, chart --------------------------------------------------------------------
        self.counts = QLabel()
        self.counts.setWordWrap(True)
        self.counts.setTextFormat(Qt.TextFormat.RichText)  # escaped file names: "Tom's" shown as written
        self.retrain_button = QPushButton(style.icon("step-train"), "Retrain with the labelled pictures")
        self.retrain_button.setToolTip("Train the project's settings again on its pictures plus those labelled here "
                                       "(pictures marked 'none of these' stay out). With feature extraction the "
                                       "stored outputs of the frozen layers are reused: seconds, not minutes.")
        self.copy_button = QPushButton("Copy into class folders...")
        self.copy_button.setToolTip("Also copy each labelled picture into the sub-folder of its class in a folder "
                                    "you choose (e.g. the project's own data folder). The pool stays as it is.")
        self.chart = RoundsChart()
        self.chart.setToolTip("Validation accuracy of each round's model against the number of training pictures: "
                              "is labelling still paying off?")
        side = QVBoxLayout()
        side.addWidget(self.counts)
        side.addWidget(self.retrain_button)
        side.addWidget(self.copy_button)
        side.addStretch(1)
        bottom = QHBoxLayout()
        bottom.addLayout(side, 1)
        bottom.addWidget(self.chart, 2)
        bottom_box = QWidget()
        bottom_box.setLayout(bottom)
        bottom_box.setMaximumHeight(190)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 4, 10, 6)
        layout.addLayout(top)
        layout.addLayout(top2)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(bottom_box)

        self.pool_button.clicked.connect(self.choose_pool)
        self.suggest_button.clicked.connect(self.suggest)
        self.run_chooser.runChosen.connect(self._run_chosen)
        self.run_chooser.refreshRequested.connect(lambda: self.refresh_runs())
        self.queue_list.currentRowChanged.connect(self._queue_row)
        self.view.answered.connect(self.answer)
        self.view.skipped.connect(lambda _path: self._go(self.position + 1))
        self.view.back_requested.connect(lambda: self._go(max(0, self.position - 1)))
        self.grid_apply.clicked.connect(self._label_grid_selection)
        self.grid_pick.activated.connect(self._pick_guessed)
        self.grid.itemSelectionChanged.connect(self._update_buttons)
        self.map.selectionChanged.connect(self._map_selected)
        self.map_apply.clicked.connect(self._label_map_selection)
        self.retrain_button.clicked.connect(self.retrain)
        self.copy_button.clicked.connect(self.copy_into_folders)
        self.project.project_replaced.connect(self.reload)
        self.project.config_changed.connect(lambda config: self.set_runs_folder(config.out))
        self.project.changed.connect(self._follow_labels)  # a save brings the labels beside the project file
        self.reload()

    # -- project, runs, pool --------------------------------------------------------------------------------------

    def reload(self) -> None:
        """Another project (or none): its runs, its pool and its labels."""
        self.jobs.cancel_all()
        self.found, self.coords, self.queue, self.position, self.pool = None, None, [], 0, None
        project = self.project.project
        self.labels = None
        if project is not None:
            try:
                self.labels = read_labels(labels_path_for(project))
            except UserError as exc:
                self._say(str(exc))
        self.set_runs_folder(project.config.out if project is not None else None)
        self._show_all()
        if project is not None and project.pool:
            self._scan_pool(project.pool)
        else:
            self.pool_label.setText("<i>No folder of pictures to label yet.</i>")
        self._update_rounds()

    def _follow_labels(self) -> None:
        """The labels CSV moved or was copied (the project was saved, or saved as another file): read it there."""
        project = self.project.project
        if project is None or self.labels is None:
            return
        where = str(labels_path_for(project))
        if os.path.normcase(os.path.abspath(where)) == os.path.normcase(os.path.abspath(self.labels.path)):
            return
        try:
            self.labels = read_labels(where)
        except UserError as exc:
            self._say(str(exc))
            return
        self._show_all(keep_position=True)
        self._update_rounds()

    def set_runs_folder(self, folder: str | None) -> None:
        if self.run_chooser.set_folder(folder):
            self.refresh_runs()

    def refresh_runs(self, select: str | None = None) -> None:
        self.run_chooser.refresh(select)
        self._run_chosen()

    def _run_chosen(self) -> None:
        run = self.run_chooser.current_run()
        classes: list[str] = []
        if run:
            try:
                classes = json.loads((Path(run) / "labels.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                classes = []
        self.classes = [str(c) for c in classes]
        self.view.set_classes(self.classes)
        for box in (self.grid_class, self.map_class, self.grid_pick):
            box.clear()
            for i, name in enumerate(self.classes):
                box.addItem(style_swatch(i), name, name)
        for box in (self.grid_class, self.map_class):
            box.addItem(NONE_WORDS, NONE_OF_THESE)
        self._update_rounds()
        self._update_buttons()

    def choose_pool(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose the folder of pictures to label", start_folder(self))
        if folder:
            self.set_pool(folder)

    def set_pool(self, folder: str) -> None:
        """Make ``folder`` the project's pool (kept by the next save) and read it."""
        self.project.set_active_paths(pool=str(Path(folder).resolve()))
        self._scan_pool(str(Path(folder).resolve()))

    def _scan_pool(self, folder: str) -> None:
        dataset = self.project.dataset
        known = [s.path for s in dataset.samples] if dataset is not None else []
        self.pool_label.setText(html.escape(folder))
        self.pool_label.setToolTip(folder)
        self._busy("Checking the pictures to label ...")
        self.jobs.start("pool", lambda progress, stop: scan_pool(folder, known=known, on_progress=progress, stop=stop),
                        self._pool_read, on_error=self._failed, on_progress=self._progress,
                        what="Reading the pictures to label")

    def _pool_read(self, pool) -> None:
        self.pool = pool
        self._idle()
        problems = [a.message for a in pool.health.advice]
        self.pool_label.setText(f"{html.escape(pool.root)} \u2014 {plural(len(pool.paths), 'picture')}")
        self._say(" ".join(problems) if problems else f"{plural(len(pool.paths), 'picture')} to label. "
                  + ("Press Suggest." if self.run_chooser.current_run() else "Train a model first."))
        self._update_buttons()
        if self.run_chooser.current_run():
            self.suggest()

    # -- suggestions ------------------------------------------------------------------------------------------

    def suggest(self) -> None:
        run = self.run_chooser.current_run()
        if self.pool is None or not run or self.labels is None:
            return
        pool, labels, n = list(self.pool.paths), self.labels, self.count.value()

        def work(progress, stop):
            found = suggest(run, pool, n, labels=labels, seed=SEED, on_progress=progress, stop=stop)
            coords = pca_map(found.outputs.features, seed=SEED)
            return found, coords

        self._busy("The model is looking at the pictures to label ...")
        self.jobs.start("suggest", work, self._suggested, on_error=self._failed, on_progress=self._progress,
                        what="Suggesting pictures")

    def _suggested(self, value) -> None:
        self.found, self.coords = value
        self.queue = list(self.found.suggestions)
        self.position = 0
        self._idle()
        self._say(self.progress_sentence() + (f" {self._after_retrain}" if self._after_retrain else ""))
        self._after_retrain = ""
        self._show_all()
        self._go(0)
        self.view.setFocus()

    # -- answering ------------------------------------------------------------------------------------------------

    def answer(self, path: str, label: str) -> None:
        """Store one answer (saved at once) and move to the next picture of the queue."""
        self.answer_many([path], label)
        rows = [s.path for s in self.queue]
        if path in rows and rows.index(path) == self.position:
            self._go(self.position + 1)

    def answer_many(self, paths: list[str], label: str) -> None:
        if self.labels is None or not paths:
            return
        self.labels.set(paths, label)
        try:
            self.labels.save()
        except UserError as exc:
            self.labels.remove(paths)
            self._say(str(exc))
            return
        if not self.project.project.labels:
            self.project.set_active_paths(labels=self.labels.path)
        self._show_all(keep_position=True)
        self._say(self.progress_sentence())
        self.labelsChanged.emit()

    def _go(self, position: int) -> None:
        if not self.queue:
            self.view.set_picture(None)
            return
        self.position = min(position, len(self.queue))
        if self.position >= len(self.queue):
            self.view.set_picture(None)
            self.view.image.set_placeholder("Every suggestion has been seen. Retrain to learn from your answers, or "
                                            "press Suggest for more.")
            self.queue_list.setCurrentRow(-1)
            return
        s = self.queue[self.position]
        self.queue_list.blockSignals(True)
        self.queue_list.setCurrentRow(self.position)
        self.queue_list.blockSignals(False)
        self.view.set_picture(s.path, s.predicted, s.confidence, f"{self.position + 1} of {len(self.queue)}",
                              self.labels.label_of(s.path) if self.labels else None)
        path = s.path
        self.jobs.start("picture", lambda progress, stop: make_thumbnail(path, BIG),
                        lambda image: self.view.set_image(path, image), on_error=lambda _m: None,
                        what="Showing the picture")

    def _queue_row(self, row: int) -> None:
        if row >= 0:
            self._go(row)
            self.view.setFocus()

    def _label_grid_selection(self) -> None:
        paths = [item.data(Qt.ItemDataRole.UserRole) for item in self.grid.selectedItems()]
        self.answer_many(paths, self.grid_class.currentData())

    def _pick_guessed(self, _index: int = 0) -> None:
        name = self.grid_pick.currentData()
        self.grid.clearSelection()
        for i in range(self.grid.count()):
            item = self.grid.item(i)
            if item.data(Qt.ItemDataRole.UserRole + 1) == name:
                item.setSelected(True)

    def _map_selected(self, rows: list[int]) -> None:
        self.map_selection = rows
        out = self.found.outputs if self.found is not None else None
        self.map_thumbs.clear()
        if out is None or not rows:
            self.map_words.setText("Drag a lasso around a group of pictures to select them.")
        else:
            guesses = [self.classes[int(out.probs[r].argmax())] for r in rows if out.ok[r]] if self.classes else []
            common = max(set(guesses), key=guesses.count) if guesses else None
            guessed = f"; the model guesses '{common}' for {guesses.count(common)}." if common else "."
            self.map_words.setText(f"{plural(len(rows), 'picture')} selected{guessed}")
            if common is not None and common in self.classes:
                self.map_class.setCurrentIndex(self.classes.index(common))
            for r in rows[:200]:
                self.map_thumbs.addItem(self._item(out.paths[r], ""))
        self._update_buttons()

    def _label_map_selection(self) -> None:
        if self.found is None:
            return
        paths = [self.found.outputs.paths[r] for r in self.map_selection]
        self.answer_many(paths, self.map_class.currentData())
        self.map.set_selection([])

    # -- retrain ------------------------------------------------------------------------------------------------

    def retrain(self) -> None:
        if self.labels is None or not self.labels.labelled() or self.project.project is None:
            return
        config, labels, start = self.project.config, self.labels, self.run_chooser.current_run()

        def work(progress, stop):
            from engine import events as ev

            def on_event(event):
                if isinstance(event, ev.EpochEnded):
                    progress(event.epoch, event.total_epochs)
                    progress.say(f"Retraining: epoch {event.epoch} of {event.total_epochs}, validation accuracy "
                                 f"{event.val_acc:.1%}")
                elif isinstance(event, ev.Preparing):
                    progress.say("Retraining: preparing the pictures ...")
            return retrain(config, labels, on_event=on_event, stop=stop, start_run=start)

        self._busy("Retraining with the labelled pictures ...")
        self.jobs.start("retrain", work, self._retrained, on_error=self._failed, on_progress=self._progress,
                        on_phase=self._say, what="Retraining")

    def _retrained(self, value) -> None:
        result, summary, round_ = value
        refit = getattr(value, "refit", None)
        self._idle()
        if result.status != "completed":
            self._say(f"The retrain did not complete: {result.error or result.status}.")
            return
        acc = f"{result.best_val_acc:.1%}" if result.best_val_acc is not None else "-"
        how = (f"Retrained ({refit.sentence()})" if refit is not None else
               f"Retrained ({self.project.config.strategy.replace('-', ' ')}, the whole run)")
        self._after_retrain = f"{how}: {summary.sentence()} Validation accuracy {acc}."
        self._say(f"{self._after_retrain} New suggestions from this model follow.")
        self._update_rounds()
        self.retrained.emit(result)
        self.refresh_runs(result.run_dir)
        self.suggest()

    def copy_into_folders(self) -> None:
        if self.labels is None:
            return
        dataset = self.project.dataset
        start = dataset.root if dataset is not None and dataset.layout == "class-folders" else None
        folder = QFileDialog.getExistingDirectory(self, "Copy the labelled pictures into the class folders of",
                                                  start or start_folder(self))
        if not folder:
            return
        labels = self.labels
        self.jobs.start("copy", lambda progress, stop: copy_into_class_folders(labels, folder),
                        lambda written: self._say(f"{plural(len(written), 'picture')} copied into the class folders of "
                                                  f"{folder}."), on_error=self._failed, what="Copying pictures")

    # -- showing --------------------------------------------------------------------------------------------------

    def _item(self, path: str, text: str) -> QListWidgetItem:
        item = QListWidgetItem(text)
        item.setData(Qt.ItemDataRole.UserRole, path)
        item.setToolTip(path)
        pixmap = self.thumbs.get(path)
        if pixmap is None:
            self.loader.request(path)
            pixmap = placeholder_pixmap(THUMB, class_colour(7).lighter(400))
        item.setIcon(pixmap)
        return item

    def _thumb_loaded(self, path: str, image) -> None:
        from gui.widgets.pictures import square_pixmap

        pixmap = square_pixmap(image, THUMB)
        self.thumbs.put(path, pixmap)
        for widget in (self.queue_list, self.grid, self.map_thumbs):
            for i in range(widget.count()):
                item = widget.item(i)
                if item.data(Qt.ItemDataRole.UserRole) == path:
                    item.setIcon(pixmap)

    def _show_all(self, keep_position: bool = False) -> None:
        """The queue, the grid, the map and the counts, from the suggestions and the answers."""
        labels = self.labels
        self.queue_list.blockSignals(True)
        self.queue_list.clear()
        for s in self.queue:
            answer = labels.label_of(s.path) if labels else None
            mark = f"\u2714 {_answer_words(answer)}" if answer else f"guess: {s.predicted} {s.confidence:.0%}"
            self.queue_list.addItem(self._item(s.path, f"{os.path.basename(s.path)}\n{mark}"))
        if keep_position and self.queue:
            self.queue_list.setCurrentRow(min(self.position, len(self.queue) - 1))
        self.queue_list.blockSignals(False)
        out = self.found.outputs if self.found is not None else None
        self.grid.clear()
        if out is not None:
            guesses: list[int | None] = []
            answers, tips = [], []
            for i, path in enumerate(out.paths):
                guess = int(out.probs[i].argmax()) if out.ok[i] else None
                guesses.append(guess)
                answer = labels.label_of(path) if labels else None
                answers.append(answer)
                guess_name = self.classes[guess] if guess is not None and guess < len(self.classes) else "?"
                tips.append(path)
                if out.ok[i]:
                    text = (f"\u2714 {_answer_words(answer)}" if answer else
                            f"{guess_name} {float(out.probs[i].max()):.0%}")
                    item = self._item(path, text)
                    item.setData(Qt.ItemDataRole.UserRole + 1, guess_name)
                    self.grid.addItem(item)
            if self.coords is not None and len(self.coords) == len(out.paths):
                self.map.set_points(self.coords, self.classes, guesses, answers, tips)
        self._update_counts()
        self._update_buttons()

    def progress_sentence(self) -> str:
        """Where the labelling stands, in the user's terms: '12 of 340 pool pictures labelled; 20 suggested.'"""
        total = len(self.pool.paths) if self.pool is not None else 0
        answered = sum(1 for p in self.pool.paths if p in self.labels) if self.pool is not None and self.labels else 0
        text = f"{answered:,} of {plural(total, 'pool picture')} labelled"
        if self.queue:
            text += f"; {len(self.queue)} suggested"
        return text + "."

    def _update_counts(self) -> None:
        if self.labels is None:
            self.counts.setText("")
            return
        counts = self.labels.counts()
        if not counts:
            self.counts.setText("No picture labelled yet. Your answers are kept in "
                                f"{html.escape(self.labels.path)}.")
            return
        parts = [f"{n} {html.escape(_answer_words(name))}" for name, n in sorted(counts.items())]
        self.counts.setText(f"<b>{plural(len(self.labels), 'answer')}</b>: {', '.join(parts)}.<br>"
                            f"<small>Kept in {html.escape(self.labels.path)}</small>")
        self.counts.setToolTip(self.labels.path)

    def _update_rounds(self) -> None:
        rounds = read_rounds(self.labels) if self.labels is not None else []
        if not rounds and self.run_chooser.current_run():
            first = run_round(self.run_chooser.current_run())
            rounds = [first] if first is not None else []
        points = [(r.labelled, r.val_accuracy) for r in rounds if r.val_accuracy is not None]
        self.chart.set_rounds([p[0] for p in points], [p[1] for p in points])

    def _update_buttons(self) -> None:
        busy = self.jobs.running("suggest") or self.jobs.running("retrain")
        has_run = bool(self.run_chooser.current_run())
        self.suggest_button.setEnabled(self.pool is not None and has_run and not busy)
        self.retrain_button.setEnabled(bool(self.labels and self.labels.labelled()) and not busy
                                       and self.project.project is not None)
        self.copy_button.setEnabled(bool(self.labels and self.labels.labelled()))
        self.grid_apply.setEnabled(bool(self.grid.selectedItems()))
        self.map_apply.setEnabled(bool(self.map_selection))
        state = self.step_state()
        if state != getattr(self, "_state", None):
            self._state = state
            self.stateChanged.emit(*state)
        if not has_run:
            self.view.image.set_placeholder("Train a model first (the Train step): it suggests which pictures to "
                                            "label and guesses their class.")
        elif self.pool is None and not self.queue:
            self.view.image.set_placeholder("Choose the folder of pictures to label (above): the model then "
                                            "suggests the ones most worth your time.")

    def step_state(self) -> tuple[str, str]:
        """How the step stands, for the sidebar: ("blocked" | "ready" | "done", a sentence)."""
        if self.project.project is None:
            return "blocked", "Open a project and train a model first."
        if not self.run_chooser.completed_runs():
            return "blocked", "Train a model first (the Train step): it suggests which pictures to label."
        n = len(self.labels.labelled()) if self.labels is not None else 0
        if n:
            return "done", f"{plural(n, 'picture')} labelled; retrain to learn from them."
        if self.pool is None:
            return "ready", "Choose a folder of pictures still to label."
        return "ready", "Label the suggested pictures."

    def _busy(self, text: str) -> None:
        self.progress.setRange(0, 0)
        self.progress.show()
        self._say(text)
        self._update_buttons()

    def _idle(self) -> None:
        self.progress.hide()
        self._update_buttons()

    def _progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)

    def _say(self, text: str) -> None:
        self.status.setText(html.escape(text))

    def _failed(self, message: str) -> None:
        self._idle()
        self._say(message)

    def shutdown(self) -> None:
        self.jobs.shutdown()
        self.loader.shutdown()


def style_swatch(index: int):
    """A small square in a class's colour, for the answer lists."""
    from PySide6.QtGui import QIcon

    return QIcon(placeholder_pixmap(12, class_colour(index)))
