"""The Review view of the Data step: the data doctor's findings (engine.advise.doctor), one at a time, with the
pictures side by side and the user's decision: keep, exclude from training, or relabel as another class.

Decisions are overrides in the project (``DataConfig.exclude`` / ``relabel``): no file moves, and training, evaluation
and the health report see the dataset with them applied (engine.data.scan.apply_overrides). *Apply to folders* moves
the files as decided and writes an undo log (engine.advise.folders); *Undo* moves them back.

The doctor runs on the job service's lane of the Data step ("doctor"), with progress and Cancel; the thumbnails come
from a ``ThumbnailLoader`` on the same service.
"""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (QComboBox, QFrame, QGridLayout, QHBoxLayout, QHeaderView, QLabel, QMessageBox,
                               QProgressBar, QPushButton, QSplitter, QTreeWidget, QTreeWidgetItem, QVBoxLayout,
                               QWidget)

from engine.advise.doctor import DoctorReport, Duplicate, LabelIssue, Suspicious
from engine.advise.task_doctor import diagnose_any as diagnose  # a CSV of several tasks: task by task (#17)
from engine.advise.folders import apply_to_folders, undo_last, undo_logs
from engine.data.scan import DatasetIndex, override_key
from gui import style
from gui.project import ProjectModel
from gui.support.jobs import Jobs
from gui.widgets.thumbnails import ThumbnailLoader

THUMB = 180
EXAMPLES = 3  # pictures shown of the given and of the suggested class beside a likely wrong label
KIND_WORDS = {"label": "Wrong label?", "duplicate": "Copies", "suspicious": "Suspicious"}


def _name(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


class Tile(QFrame):
    """One picture with a caption under it."""

    def __init__(self, path: str, caption: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.path = path
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.picture = QLabel("...")
        self.picture.setFixedSize(THUMB, THUMB)
        self.picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.caption = QLabel(caption)
        self.caption.setWordWrap(True)
        self.caption.setFixedWidth(THUMB)
        self.caption.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        self.setToolTip(path)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.picture)
        layout.addWidget(self.caption)

    def show_image(self, image: QImage) -> None:
        self.picture.setPixmap(QPixmap.fromImage(image).scaled(THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio,
                                                               Qt.TransformationMode.SmoothTransformation))

    def show_error(self, reason: str) -> None:
        self.picture.setText("cannot be shown")
        self.picture.setToolTip(reason)


class ReviewView(QWidget):
    """Emits ``overrides_changed`` after the user decided (the project's DataConfig holds the decisions),
    ``rescan_requested`` after files were moved, and ``back_requested`` for the picture grid."""

    overrides_changed = Signal()
    rescan_requested = Signal()
    back_requested = Signal()
    status = Signal(str)

    def __init__(self, project: ProjectModel, jobs: Jobs, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.project = project
        self.jobs = jobs
        self.index: DatasetIndex | None = None  # the scan without the overrides: the doctor sees every picture
        self.report: DoctorReport | None = None
        self.loader = ThumbnailLoader(THUMB, parent=self, jobs=jobs)
        self.loader.loaded.connect(self._on_thumbnail)
        self.loader.failed.connect(self._on_thumbnail_failed)
        self.tiles: list[Tile] = []

        self.back = QPushButton("Back to the pictures")
        self.back.setToolTip("Return to the grid of pictures.")
        self.back.clicked.connect(self.back_requested)
        self.run_button = QPushButton("Look for mistakes")
        self.run_button.setIcon(style.icon("refresh"))
        self.run_button.setToolTip("Compare every picture with the others through the project's model: likely "
                                   "wrong labels, copies (also between training and validation) and suspicious "
                                   "pictures. Nothing is changed.")
        self.run_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setIcon(style.icon("cancel"))
        self.cancel_button.setToolTip("Stop looking. Nothing is changed.")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.hide()
        self.apply_button = QPushButton("Apply to folders...")
        self.apply_button.setToolTip("Move the files as you decided: relabelled pictures into their class's folder, "
                                     "excluded ones into .excluded-by-review in the data folder. An undo log is "
                                     "written first.")
        self.apply_button.clicked.connect(self.apply_to_folders)
        self.undo_button = QPushButton("Undo apply")
        self.undo_button.setToolTip("Move back the files of the last 'Apply to folders'.")
        self.undo_button.clicked.connect(self.undo)
        top = QHBoxLayout()
        top.addWidget(self.back)
        top.addStretch(1)
        for b in (self.run_button, self.cancel_button, self.apply_button, self.undo_button):
            top.addWidget(b)

        self.summary = QLabel("Press 'Look for mistakes' to review the pictures.")
        self.summary.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.hide()

        self.filter = QComboBox()
        for text, kind in (("Every finding", ""), ("Likely wrong labels", "label"), ("Copies and leakage",
                                                                                     "duplicate"),
                           ("Suspicious pictures", "suspicious")):
            self.filter.addItem(text, kind)
        self.filter.setToolTip("Show one kind of finding only.")
        self.filter.currentIndexChanged.connect(self._fill)
        self.list = QTreeWidget()
        self.list.setHeaderLabels(["Finding", "Picture", "Why", "Score", "Your decision"])
        self.list.setRootIsDecorated(False)
        self.list.setAlternatingRowColors(True)
        self.list.header().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.list.currentItemChanged.connect(lambda *_: self._show_current())
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.filter)
        left_layout.addWidget(self.list, 1)

        self.title = QLabel()
        self.title.setWordWrap(True)
        self.tiles_box = QWidget()
        self.tiles_layout = QGridLayout(self.tiles_box)
        self.tiles_layout.setContentsMargins(0, 0, 0, 0)
        self.keep = QPushButton("Keep")
        self.keep.setIcon(style.icon("ok"))
        self.keep.setToolTip("The picture is fine as it is: undo any decision on it.")
        self.keep.clicked.connect(lambda: self.decide("keep"))
        self.exclude = QPushButton("Exclude from training")
        self.exclude.setToolTip("Leave the picture out of training, validation and evaluation. The file stays where "
                                "it is. For copies: the copies in training (or all but the first).")
        self.exclude.clicked.connect(lambda: self.decide("exclude"))
        self.relabel_to = QComboBox()
        self.relabel_to.setToolTip("The class the picture really belongs to.")
        self.relabel = QPushButton("Relabel as")
        self.relabel.setToolTip("Train and evaluate the picture as the class chosen beside. The file stays where it "
                                "is until you apply the decisions to the folders.")
        self.relabel.clicked.connect(lambda: self.decide("relabel"))
        actions = QHBoxLayout()
        actions.addWidget(self.keep)
        actions.addWidget(self.exclude)
        actions.addWidget(self.relabel)
        actions.addWidget(self.relabel_to)
        actions.addStretch(1)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(8, 0, 0, 0)
        right_layout.addWidget(self.title)
        right_layout.addWidget(self.tiles_box)
        right_layout.addLayout(actions)
        right_layout.addStretch(1)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(0, 2)
        self.splitter.setStretchFactor(1, 3)
        self.splitter.setSizes([620, 760])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.summary)
        layout.addWidget(self.progress)
        layout.addWidget(self.splitter, 1)
        self._update_controls()

    # -- the dataset and the doctor ----------------------------------------------------------------------------

    def set_index(self, index: DatasetIndex | None) -> None:
        """The scan without the overrides; a new dataset forgets the findings of the old one."""
        if index is None or self.index is None or index.root != self.index.root:
            self.report = None
            self.cancel()
            self.summary.setText("Press 'Look for mistakes' to review the pictures.")
        self.index = index
        self.relabel_to.clear()
        for name in index.classes if index else []:
            self.relabel_to.addItem(name)
        self._fill()

    def start(self) -> None:
        index = self.index
        if index is None or self.jobs.running("doctor"):
            return
        model = self.project.config.model
        self.progress.setRange(0, 0)
        self.progress.show()
        self.summary.setText(f"Looking for mistakes with {model.name} ...")

        def work(progress, stop):
            def report(what: str, done: int, total: int) -> None:
                progress.say(what)
                progress(done, total)

            return diagnose(index, model=model.name, weights=model.weights, on_progress=report, stop=stop)

        self.jobs.start("doctor", work, self._on_report, on_error=self._on_failed, on_progress=self._on_progress,
                        on_phase=lambda text: self.summary.setText(text + " ..."), on_cancel=self._on_cancelled,
                        what="Looking for mistakes")
        self._update_controls()

    def cancel(self) -> None:
        if self.jobs.running("doctor"):
            self.jobs.cancel("doctor")

    def show_report(self, report: DoctorReport) -> None:
        """Show findings (the doctor's result; tests and screenshots give one directly)."""
        self._on_report(report)

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)

    def _on_report(self, report: DoctorReport) -> None:
        self.report = report
        self.progress.hide()
        text = " ".join(report.summary())
        if report.notes:
            text += "\n" + " ".join(report.notes)
        self.summary.setText(text)
        self.status.emit(report.summary()[0])
        self._fill()
        self._update_controls()

    def _on_failed(self, message: str) -> None:
        self.progress.hide()
        self.summary.setText(message)
        self.status.emit(message)
        self._update_controls()

    def _on_cancelled(self) -> None:
        self.progress.hide()
        self.summary.setText("Looking for mistakes was cancelled: nothing was changed.")
        self._update_controls()

    # -- the list ------------------------------------------------------------------------------------------------

    def findings(self) -> list[tuple[str, object]]:
        if self.report is None:
            return []
        out: list[tuple[str, object]] = [("label", x) for x in self.report.label_issues]
        out += [("duplicate", x) for x in self.report.duplicates]
        out += [("suspicious", x) for x in self.report.suspicious]
        return out

    def _fill(self) -> None:
        current = self.list.currentItem()
        keep = current.data(0, Qt.ItemDataRole.UserRole) if current is not None else None
        self.list.clear()
        kind = self.filter.currentData()
        chosen = None
        for number, (what, finding) in enumerate(self.findings()):
            if kind and what != kind:
                continue
            item = QTreeWidgetItem([KIND_WORDS[what], *self._columns(what, finding)])
            item.setData(0, Qt.ItemDataRole.UserRole, number)
            item.setToolTip(1, self._paths(what, finding)[0])
            item.setIcon(0, style.icon("warning" if what != "suspicious" else "info"))
            self.list.addTopLevelItem(item)
            if number == keep:
                chosen = item
        for column in (0, 3, 4):
            self.list.resizeColumnToContents(column)
        self.list.setColumnWidth(1, 170)  # the full path is in the tooltip
        if self.list.topLevelItemCount():
            self.list.setCurrentItem(chosen or self.list.topLevelItem(0))
        self._show_current()

    def _columns(self, what: str, finding) -> list[str]:
        if what == "label":
            x: LabelIssue = finding
            return [_name(x.path), f"labelled {x.given}, looks like {x.suggested}", f"{x.score:.2f}",
                    self._decision(x.path)]
        if what == "duplicate":
            d: Duplicate = finding
            why = f"{len(d.paths)} {d.kind} copies"
            if d.leakage:
                why += ", in " + " and ".join(sorted(set(d.splits))) + " (leakage)"
            if d.conflict:
                why += ", labelled " + " and ".join(sorted(set(d.labels))) + " (conflict)"
            decisions = {self._decision(p) for p in d.paths} - {""}
            return [_name(d.paths[0]), why, f"{d.score:.2f}", ", ".join(sorted(decisions))]
        s: Suspicious = finding
        return [_name(s.path), s.reason.split(":")[0].split(" (")[0], f"{s.score:.2f}", self._decision(s.path)]

    @staticmethod
    def _paths(what: str, finding) -> list[str]:
        return list(finding.paths) if what == "duplicate" else [finding.path]

    def _key(self, path: str) -> str:
        assert self.index is not None
        return override_key(self.index, path)

    def _decision(self, path: str) -> str:
        if self.index is None:
            return ""
        data = self.project.config.data
        key = self._key(path)
        if key in data.exclude:
            return "excluded"
        if key in data.relabel:
            return f"relabelled as {data.relabel[key]}"
        return ""

    def current(self) -> tuple[str, object] | None:
        item = self.list.currentItem()
        if item is None:
            return None
        return self.findings()[item.data(0, Qt.ItemDataRole.UserRole)]

    # -- the pictures side by side -------------------------------------------------------------------------------

    def _show_current(self) -> None:
        for tile in self.tiles:
            self.tiles_layout.removeWidget(tile)
            tile.hide()
            tile.deleteLater()
        self.tiles = []
        self.loader.cancel_pending()
        found = self.current()
        if found is None or self.index is None:
            self.title.setText("No finding to show." if self.report is not None else "")
            self._update_controls()
            return
        what, finding = found
        classes = self.index.classes
        split_of = {s.path: s.split for s in self.index.samples}
        rows: list[list[tuple[str, str]]] = []
        if what == "label":
            x: LabelIssue = finding
            self.title.setText(f"<b>{_name(x.path)}</b> is labelled <b>{x.given}</b> but looks like "
                               f"<b>{x.suggested}</b> (score {x.score:.2f}: the model, trained without it, gives "
                               f"its label a {1 - x.score:.0%} chance). Left: the picture; then examples of "
                               f"{x.given} and of {x.suggested}.")
            rows.append([(x.path, f"this picture ({x.split}), labelled {x.given}")])
            for name in (x.given, x.suggested):
                label = classes.index(name)
                examples = [s.path for s in self.index.samples if s.label == label and s.path != x.path
                            and s.split == "train"][:EXAMPLES]
                rows.append([(p, f"{name} ({split_of[p]})") for p in examples])
            self.relabel_to.setCurrentText(x.suggested)
        elif what == "duplicate":
            d: Duplicate = finding
            verdict = ("the same file" if d.kind == "exact" else "the same picture, altered (resized, re-encoded, "
                       "cropped or mirrored)")
            extra = ""
            if d.leakage:
                extra += " One copy is held out for measuring while another trains: the measured accuracy is " \
                         "overstated. Exclude the training copy."
            if d.conflict:
                extra += " The copies carry different labels: keep the right one."
            self.title.setText(f"<b>{len(d.paths)} copies</b>: {verdict} (similarity {d.score:.2f}).{extra}")
            rows.append([(p, f"{_name(p)}<br>{s}, {label}") for p, s, label in zip(d.paths, d.splits, d.labels)])
        else:
            s: Suspicious = finding
            self.title.setText(f"<b>{_name(s.path)}</b> ({s.split}, {s.label}): {s.reason}")
            rows.append([(s.path, f"{s.split}, {s.label}")])
        for r, row in enumerate(rows):
            for c, (path, caption) in enumerate(row[:6]):
                tile = Tile(path, caption)
                self.tiles_layout.addWidget(tile, r, c)
                self.tiles.append(tile)
                self.loader.request(path)
        self._update_controls()

    def _on_thumbnail(self, path: str, image: QImage) -> None:
        for tile in self.tiles:
            if tile.path == path:
                tile.show_image(image)

    def _on_thumbnail_failed(self, path: str, reason: str) -> None:
        for tile in self.tiles:
            if tile.path == path:
                tile.show_error(reason)

    # -- decisions -----------------------------------------------------------------------------------------------

    def targets(self, action: str) -> list[str]:
        """The pictures an action on the current finding applies to."""
        found = self.current()
        if found is None:
            return []
        what, finding = found
        if what != "duplicate":
            return [finding.path]
        d: Duplicate = finding
        if action == "exclude":
            if d.leakage and "train" in d.splits and len(set(d.splits)) > 1:
                return [p for p, s in zip(d.paths, d.splits) if s == "train"]
            return list(d.paths[1:])
        return list(d.paths)

    def decide(self, action: str, class_name: str | None = None) -> None:
        """Keep, exclude or relabel (as ``class_name`` or the class chosen beside the button) the current finding."""
        if self.index is None or not self.project.is_open:
            return
        data = self.project.config.data
        exclude = list(data.exclude)
        relabel = dict(data.relabel)
        name = class_name or self.relabel_to.currentText()
        for path in self.targets(action):
            key = self._key(path)
            if key in exclude:
                exclude.remove(key)
            relabel.pop(key, None)
            if action == "exclude":
                exclude.append(key)
            elif action == "relabel":
                given = self.index.classes[next(s.label for s in self.index.samples if s.path == path)]
                if name != given:
                    relabel[key] = name
        self.project.update_data(exclude=tuple(exclude), relabel=relabel)
        self.overrides_changed.emit()
        row = self.list.indexOfTopLevelItem(self.list.currentItem())
        self._fill()
        if action != "keep" and 0 <= row + 1 < self.list.topLevelItemCount():
            self.list.setCurrentItem(self.list.topLevelItem(row + 1))  # on to the next finding

    # -- the folders ---------------------------------------------------------------------------------------------

    def apply_to_folders(self, confirm: bool = True) -> None:
        index = self.index
        data = self.project.config.data
        if index is None or not (data.exclude or data.relabel):
            return
        n = len(data.exclude) + len(data.relabel)
        if confirm and QMessageBox.question(
                self, "Apply to folders",
                f"Move the files of your {n} decision{'s' if n != 1 else ''} in {index.root}?\n\nRelabelled pictures "
                "move into the folder of their class; excluded ones into .excluded-by-review inside the data folder. "
                "An undo log is written first, and 'Undo apply' moves them back.") != QMessageBox.StandardButton.Yes:
            return
        exclude, relabel = data.exclude, dict(data.relabel)

        def done(applied) -> None:
            left_exclude = tuple(k for k in exclude if k not in applied.excluded)
            left_relabel = {k: v for k, v in relabel.items() if k not in applied.relabelled}
            self.project.update_data(exclude=left_exclude, relabel=left_relabel)
            self.report = None
            self.summary.setText(applied.message())
            self.status.emit(applied.message())
            self.rescan_requested.emit()
            self._fill()
            self._update_controls()

        self.jobs.start("apply", lambda progress, stop: apply_to_folders(index, exclude, relabel), done,
                        on_error=self._on_failed, what="Moving the files")

    def undo(self) -> None:
        if self.index is None:
            return
        root = self.index.root

        def done(result) -> None:
            self.report = None
            self.summary.setText(f"Moved {len(result.moves)} file{'s' if len(result.moves) != 1 else ''} back."
                                 + (f" {result.skipped[0]}" if result.skipped else ""))
            self.rescan_requested.emit()
            self._fill()
            self._update_controls()

        self.jobs.start("apply", lambda progress, stop: undo_last(root), done, on_error=self._on_failed,
                        what="Moving the files back")

    def _update_controls(self) -> None:
        running = self.jobs.running("doctor")
        has_index = self.index is not None
        self.run_button.setEnabled(has_index and not running)
        self.cancel_button.setVisible(running)
        data = self.project.config.data if self.project.is_open else None
        folders = has_index and self.index.layout != "csv"
        self.apply_button.setEnabled(bool(folders and data and (data.exclude or data.relabel)))
        self.undo_button.setEnabled(bool(folders and undo_logs(self.index.root)))
        chosen = self.current() is not None
        for b in (self.keep, self.exclude, self.relabel, self.relabel_to):
            b.setEnabled(chosen)

    def shutdown(self) -> None:
        self.cancel()
        self.loader.shutdown()
