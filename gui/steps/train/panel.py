"""The Train step: settings in plain words, Start / Pause / Stop, progress, live plots, log and run history.

The panel edits the training part of the project's RunConfig (epochs, learning rate, TrainConfig) and drives the
engine through the one TrainingController; everything it shows comes from the engine's plain-data events.
"""

from __future__ import annotations

import dataclasses
import html
import os
from pathlib import Path
from typing import Callable

import numpy as np
from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QImage, QPixmap
from PySide6.QtWidgets import (QApplication, QComboBox, QDialog, QDoubleSpinBox, QFormLayout, QGridLayout,
                               QGroupBox, QHBoxLayout, QLabel, QMessageBox, QPlainTextEdit, QProgressBar,
                               QPushButton, QScrollArea, QSpinBox, QSplitter, QTabWidget, QVBoxLayout, QWidget)

from engine import events as ev
from engine.config import RunConfig
from engine.errors import UserError
from engine.train.prefix import preparing_text
from engine.train.runtime import available_devices
from engine.train.trainer import RunResult
from gui.widgets.doctor import DoctorPanel
from gui.widgets.format import plural
from gui.widgets.lr_plot import LRPlot
from gui.widgets.plots import TrainingPlots
from gui.steps.train.history import RunHistory
from gui.steps.train.worker import TrainingController, preload_training_modules, training_modules_preloaded

EPOCH_FORMAT = "Epoch: %p %"  # the epoch bar's text while an epoch trains (a Preparing stage has its own)

# (key, the list's label: short enough for the settings column, what it means on hover)
OPTIMIZERS = [("adamw", "AdamW (safe default)", "AdamW: adaptive steps for each weight; a safe default."),
              ("sgd", "SGD with momentum", "SGD with momentum: the classic way to fine-tune; it may need a tuned "
               "learning rate (Find...).")]
SCHEDULES = [("cosine", "Warm-up, then cosine", "A short warm-up, then the learning rate lowers slowly (cosine)."),
             ("onecycle", "One cycle (up, then down)", "One cycle: the learning rate rises, then falls."),
             ("constant", "Warm-up, then constant", "A short warm-up, then the same learning rate.")]
AUGMENTS = [("none", "None: the pictures as they are"), ("light", "Light: crops and mirror images"),
            ("strong", "Strong: crops, mirrors, colour and RandAugment")]
PRECISIONS = [("auto", "Automatic (fastest)", "Mixed precision where it is faster on this computer, full "
               "precision elsewhere."), ("fp32", "Full precision (fp32)"),
              ("bf16", "bfloat16 mixed precision"), ("fp16", "float16 mixed precision")]

START_TIP = "Train with these settings. The run is saved in the project's runs folder."


def _combo(items, tip: str) -> QComboBox:
    box = QComboBox()
    for key, label, *meaning in items:
        box.addItem(label, key)
        box.setItemData(box.count() - 1, meaning[0] if meaning else label, Qt.ItemDataRole.ToolTipRole)
    box.setToolTip(tip)
    # Shrinks with the settings column (the open list still shows the whole labels).
    box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    box.setMinimumContentsLength(14)
    return box


def _select(box: QComboBox, key) -> None:
    index = box.findData(key)
    box.setCurrentIndex(max(index, 0))


class TrainSettings(QWidget):
    """The settings form; ``apply(config)`` returns the config with the form's values."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        form = QFormLayout(self)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.epochs = QSpinBox(minimum=1, maximum=1000)
        self.epochs.setToolTip("How many times the model sees every training picture. More epochs can fit "
                               "better, but take longer and may over-fit small datasets.")
        self.lr = QDoubleSpinBox(decimals=5, minimum=0.00001, maximum=1.0, singleStep=0.0005)
        self.lr.setToolTip("How big the learning steps of the new head are; retrained layers use a fraction of it. "
                           "Lower it if the loss jumps around or becomes NaN.")
        self.find_lr = QPushButton("Find...")
        self.find_lr.setToolTip("Try a range of learning rates on your pictures for a few seconds (Smith's range "
                                "test) and suggest the one where the loss was lowest.")
        self.batch = QSpinBox(minimum=0, maximum=1024)
        self.batch.setSpecialValueText("Automatic")
        self.batch.setToolTip("Pictures per learning step. Automatic chooses for your computer (and takes fewer at "
                              "a time if the GPU runs out of memory). Larger is faster on a GPU but needs more "
                              "memory.")
        self.optimizer = _combo(OPTIMIZERS, "How the weights are updated from the gradients.")
        self.schedule = _combo(SCHEDULES, "How the learning rate changes during each phase.")
        self.augment = _combo(AUGMENTS, "Random changes to the training pictures so that the model learns what "
                              "matters, not where or how bright. Stronger helps small datasets.")
        self.preview = QPushButton("Preview...")
        self.preview.setToolTip("Show how the chosen augmentation changes a training picture.")
        self.smoothing = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=0.5, singleStep=0.05)
        self.smoothing.setToolTip("Label smoothing: makes the model less over-confident. 0.1 is a good default.")
        self.early = QSpinBox(minimum=0, maximum=100)
        self.early.setSpecialValueText("Off")
        self.early.setToolTip("End a phase after this many epochs without a better validation accuracy.")
        self.precision = _combo(PRECISIONS, "Mixed precision trains faster with the same accuracy: on GPUs, and "
                                "on CPUs that compute bfloat16 natively (with batches of 4 or more, validation "
                                "staying in full precision).")
        self.device = _combo(available_devices(), "Where to train. A GPU is much faster when there is one.")
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1)
        self.seed.setToolTip("The same seed and settings give the same result on the CPU.")
        augment_row = QHBoxLayout()
        augment_row.addWidget(self.augment, 1)
        augment_row.addWidget(self.preview)
        form.addRow("Epochs", self.epochs)
        lr_row = QHBoxLayout()
        lr_row.addWidget(self.lr, 1)
        lr_row.addWidget(self.find_lr)
        form.addRow("Learning rate", lr_row)
        form.addRow("Batch size", self.batch)
        form.addRow("Optimizer", self.optimizer)
        form.addRow("Schedule", self.schedule)
        form.addRow("Augmentation", augment_row)
        form.addRow("Label smoothing", self.smoothing)
        form.addRow("Early stopping (epochs)", self.early)
        form.addRow("Precision", self.precision)
        form.addRow("Device", self.device)
        form.addRow("Seed", self.seed)
        for w in (self.epochs, self.batch, self.early, self.seed):
            w.valueChanged.connect(self.changed)
        for w in (self.lr, self.smoothing):
            w.valueChanged.connect(self.changed)
        for w in (self.optimizer, self.schedule, self.augment, self.precision, self.device):
            w.currentIndexChanged.connect(self.changed)

    def load(self, config: RunConfig) -> None:
        t = config.train
        widgets = (self.epochs, self.lr, self.batch, self.smoothing, self.early, self.seed, self.optimizer,
                   self.schedule, self.augment, self.precision, self.device)
        for w in widgets:
            w.blockSignals(True)
        self.epochs.setValue(config.total_epochs)
        self.lr.setValue(config.lr)
        self.batch.setValue(t.batch_size)
        self.smoothing.setValue(t.label_smoothing)
        self.early.setValue(t.early_stopping)
        self.seed.setValue(t.seed)
        _select(self.optimizer, t.optimizer)
        _select(self.schedule, t.schedule)
        _select(self.augment, t.augment)
        _select(self.precision, t.precision)
        _select(self.device, t.device)
        for w in widgets:
            w.blockSignals(False)
        # Explicit phases carry their own epochs and rates: edit those in the Layers step.
        self.epochs.setEnabled(not config.phases)
        self.lr.setEnabled(not config.phases)

    def apply(self, config: RunConfig) -> RunConfig:
        train = dataclasses.replace(
            config.train, batch_size=self.batch.value(), optimizer=self.optimizer.currentData(),
            schedule=self.schedule.currentData(), augment=self.augment.currentData(),
            label_smoothing=round(self.smoothing.value(), 4), early_stopping=self.early.value(),
            precision=self.precision.currentData(), device=self.device.currentData(), seed=self.seed.value())
        if config.phases:
            return dataclasses.replace(config, train=train)
        return dataclasses.replace(config, epochs=self.epochs.value(), lr=self.lr.value(), train=train)


class AugmentPreview(QDialog):
    def __init__(self, path: str, augment: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from engine.data.preview import augmented_views

        self.setWindowTitle("Augmentation preview")
        grid = QGridLayout(self)
        self.views = augmented_views(path, augment, n=8)
        self.labels: list[QLabel] = []
        for i, array in enumerate(self.views):
            # The views are permuted tensors (channels last): QImage reads rows of contiguous bytes.
            array = np.ascontiguousarray(array, dtype=np.uint8)
            h, w, _ = array.shape
            image = QImage(array.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
            label = QLabel()
            self.labels.append(label)
            label.setPixmap(QPixmap.fromImage(image).scaled(160, 160, Qt.AspectRatioMode.KeepAspectRatio,
                                                            Qt.TransformationMode.SmoothTransformation))
            grid.addWidget(label, i // 4, i % 4)
        grid.addWidget(QLabel(f"Eight random training views of {Path(path).name} with the "
                              f"'{augment}' augmentation."), 2, 0, 1, 4)


class TrainPanel(QWidget):
    """The Train step. ``set_config`` gives it the project's configuration; ``configChanged`` reports edits."""

    configChanged = Signal(object)
    runFinished = Signal(object)  # RunResult

    def __init__(self, parent: QWidget | None = None, controller: TrainingController | None = None,
                 jobs=None) -> None:
        super().__init__(parent)
        from gui.support.jobs import Jobs

        self.controller = controller or TrainingController(self)
        # The learning-rate search runs on a lane of the window's job service (its own service when made alone).
        self.jobs = Jobs(self, 1, service=jobs if jobs is not None else getattr(parent, "jobs", None))
        self.preloaded = training_modules_preloaded()  # set once the modules a run needs are imported
        self.base_config: RunConfig | None = None
        # (config) -> (the config a run trains, a sentence or ""): set by the window to add the labelled pool pictures.
        self.prepare_config: Callable[[RunConfig], tuple[RunConfig, str]] | None = None
        self.last_result: RunResult | None = None
        self.run_dir: str | None = None
        self.dataset = None  # the Data step's scan of the project's pictures, when there is one
        self.preview_dialog: AugmentPreview | None = None  # the last augmentation preview opened

        self.settings = TrainSettings()
        self.settings.changed.connect(self._settings_changed)
        self.settings.preview.clicked.connect(self.show_preview)
        self.start_button = QPushButton("Start training")
        self.start_button.setToolTip(START_TIP)
        self.blocked_reason = ""  # why the Train step cannot start yet (set_blocked); empty when it can
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Pause between two batches; Resume continues exactly where it stopped.")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("End the run after the current batch. Everything trained so far is kept.")
        self.start_button.clicked.connect(self.start)
        self.pause_button.clicked.connect(self.toggle_pause)
        self.stop_button.clicked.connect(self.stop)
        self.epoch_bar = QProgressBar()
        self.epoch_bar.setFormat(EPOCH_FORMAT)
        self.epoch_bar.setValue(0)
        self.epoch_bar.setToolTip("How far the current epoch (one pass over the training pictures) is.")
        self.run_bar = QProgressBar()
        self._set_run_range(1)
        self.run_bar.setValue(0)
        self.run_bar.setToolTip("Epochs finished out of all the epochs of the run (every phase together).")
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        self.log = QPlainTextEdit(readOnly=True)
        self.log.setMaximumBlockCount(5000)
        self.log.setPlaceholderText("Messages from the training appear here.")
        self.plots = TrainingPlots()
        self.history = RunHistory()
        self.lr_plot = LRPlot()
        self.lr_plot.applyRequested.connect(self.apply_lr)
        self.settings.find_lr.clicked.connect(self.find_lr)
        self.doctor = DoctorPanel()
        self.doctor.actionRequested.connect(self.apply_advice)
        self.history.table.itemSelectionChanged.connect(self._show_selected_advice)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        box = QGroupBox("Settings")
        box_layout = QVBoxLayout(box)
        box_layout.addWidget(self.settings)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(box)
        left.setMinimumWidth(380)
        left_layout.addWidget(scroll, 1)
        buttons = QHBoxLayout()
        for b in (self.start_button, self.pause_button, self.stop_button):
            buttons.addWidget(b)
        left_layout.addLayout(buttons)
        left_layout.addWidget(self.epoch_bar)
        left_layout.addWidget(self.run_bar)
        left_layout.addWidget(self.status)
        self.runs_note = ""  # what the window adds about where the runs go (set_runs_note)
        self.runs_label = QLabel()
        self.runs_label.setTextFormat(Qt.TextFormat.PlainText)
        self.runs_label.setWordWrap(True)
        self.runs_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_runs_button = QPushButton("Open folder")
        self.open_runs_button.setToolTip("Show the runs folder in the file manager: each run is a folder with its "
                                         "settings, its curves and its trained model.")
        self.open_runs_button.clicked.connect(self.open_runs_folder)
        runs_row = QHBoxLayout()
        runs_row.addWidget(self.runs_label, 1)
        runs_row.addWidget(self.open_runs_button, 0, Qt.AlignmentFlag.AlignTop)
        left_layout.addLayout(runs_row)

        self.tabs = QTabWidget()
        self.tabs.addTab(self.plots, "Live")
        self.tabs.addTab(self.history, "Run history")
        self.tabs.addTab(self.lr_plot, "Learning rate")
        self.tabs.addTab(self.doctor, "Advice")
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.tabs)
        right.addWidget(self.log)
        right.setSizes([520, 140])
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(right)
        self.splitter.setSizes([420, 800])
        self.splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.splitter)

        self.history.resumeRequested.connect(self.resume_run)
        self.history.scratchRequested.connect(self.compare_with_scratch)
        self.scratch_for: str | None = None  # the run a training from scratch is compared with, while it trains
        self.controller.event.connect(self.on_event)
        self.controller.finished.connect(self.on_finished)
        self._update_buttons()

    # --- configuration ----------------------------------------------------------------------------------------

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        preload_training_modules()  # the user is about to train: import what a run needs, in the background
        super().showEvent(event)

    def set_config(self, config: RunConfig) -> None:
        self.base_config = config
        self.settings.load(config)
        if not self.running:
            self._set_run_range(max(1, config.total_epochs))
        self.history.set_folder(config.out)
        self._show_runs_folder()
        self._update_buttons()

    def set_dataset(self, dataset) -> None:
        """The Data step's scan (pictures checked, split drawn): a run started here trains on exactly it."""
        self.dataset = dataset

    def config(self) -> RunConfig | None:
        return self.settings.apply(self.base_config) if self.base_config else None

    def _settings_changed(self) -> None:
        if self.base_config is not None:
            self.base_config = self.config()
            self.configChanged.emit(self.base_config)

    # --- the runs folder --------------------------------------------------------------------------------------

    def set_runs_note(self, note: str) -> None:
        """A sentence shown after the runs folder (e.g. that a project not yet saved keeps its runs elsewhere)."""
        self.runs_note = note
        self._show_runs_folder()

    def _show_runs_folder(self) -> None:
        folder = self.base_config.out if self.base_config is not None else ""
        self.open_runs_button.setEnabled(bool(folder))
        self.runs_label.setToolTip(folder)
        if not folder:
            self.runs_label.setText("")
            return
        breakable = folder.replace(os.sep, os.sep + "\u200b")  # a long path wraps at its separators
        self.runs_label.setText(f"Runs are saved in {breakable}" + (f"\n{self.runs_note}" if self.runs_note else ""))

    def open_runs_folder(self) -> None:
        """Show the runs folder in the file manager (made first when no run has been saved yet)."""
        if self.base_config is None:
            return
        folder = Path(self.base_config.out)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.status.setText(f"The runs folder {folder} cannot be made ({exc.strerror or exc}).")
            return
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
            self.status.setText(f"No file manager could be opened: the runs are in {folder}.")

    # --- control ----------------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.controller.running

    def start(self) -> None:
        config = self.config()
        if config is None or self.running:
            return
        status, sentence = "Starting: reading the pictures and preparing the model ...", ""
        if self.prepare_config is not None:  # the project's labelled pool pictures join (engine.active), as in `train`
            try:
                config, sentence = self.prepare_config(config)
            except UserError as exc:
                self.status.setText(str(exc))
                return
            if sentence:
                status = f"Starting: {sentence[0].lower()}{sentence[1:]}"
        self._launch(config, status)
        if sentence:
            self.log.appendPlainText(sentence)  # kept in the run's log too

    def _launch(self, config: RunConfig, status: str) -> None:
        """Train ``config`` on the training thread, the live view cleared for it (Start, and the scratch
        comparison)."""
        self._clear_view(status)
        self._set_run_range(config.total_epochs)
        self.plots.start()
        dataset = self.dataset
        if dataset is not None and Path(dataset.root).resolve() != Path(config.data.source).resolve():
            dataset = None  # another folder than the one scanned: the engine scans it itself
        self.controller.start(config, dataset)
        self._update_buttons()

    def resume_run(self, run_dir: str) -> None:
        """Continue a stopped, failed or interrupted run from its checkpoint (the Run history's Resume button)."""
        from engine.project import runs

        if self.running:
            return
        self.plots.load_records(runs.read_metrics(run_dir))  # the epochs it has done; the rest come live
        self.plots.start()
        self.log.clear()
        self.run_dir = run_dir
        self.last_result = None
        self.epoch_bar.setFormat(EPOCH_FORMAT)
        self.epoch_bar.setValue(0)
        self.status.setText(f"Resuming {Path(run_dir).name} from its last checkpoint ...")
        self.tabs.setCurrentWidget(self.plots)
        self.controller.continue_run(run_dir)
        self._update_buttons()

    def compare_with_scratch(self, run_dir: str) -> None:
        """Train the run again from random weights with the same budget (the Run history's button); when it
        completes, the run's summary states what transfer gained (engine.advise.scratch)."""
        from engine.advise.scratch import scratch_config
        from engine.errors import UserError

        if self.running:
            return
        try:
            config = scratch_config(run_dir)
        except UserError as exc:
            self.status.setText(str(exc))
            return
        self.scratch_for = run_dir
        self._launch(config, f"Training {Path(run_dir).name} again from random weights, with the same budget ...")

    def toggle_pause(self) -> None:
        if self.controller.paused:
            self.controller.resume()
            self.plots.resume()
            self.status.setText("Training ...")
        else:
            self.controller.pause()
            self.plots.pause()  # the pause is not counted in the time left
            self.status.setText("Paused after the current batch. Press Resume to continue.")
        self._update_buttons()

    def clear(self) -> None:
        """Another project was opened (or this one closed): nothing of the previous project's runs stays on show —
        curves, log, progress, the finished run. A run still training keeps its live view."""
        if self.running:
            return
        self._clear_view("Ready.")
        self.doctor.clear()  # the previous project's advice is not this one's
        self.tabs.setTabText(self.tabs.indexOf(self.doctor), "Advice")

    def _clear_view(self, status: str) -> None:
        """Curves, log, progress and the finished run gone; ``status`` said; the live curves on show."""
        self.plots.reset()
        self.log.clear()
        self.run_dir = None
        self.last_result = None
        self.epoch_bar.setFormat(EPOCH_FORMAT)
        self.epoch_bar.setValue(0)
        self.run_bar.setValue(0)
        self.status.setText(status)
        self.tabs.setCurrentWidget(self.plots)

    def stop(self) -> None:
        if self.running:
            self.controller.stop()
            self.status.setText("Stopping after the current batch ...")
            self.stop_button.setEnabled(False)

    def shutdown(self) -> None:
        """Stop and wait for a run (the window is closing): the run is saved as 'stopped'."""
        self.controller.shutdown()
        self.jobs.shutdown()  # the learning-rate search, if one runs
        self.plots.stop()

    def set_blocked(self, reason: str) -> None:
        """Why a run cannot start yet (the Train step's reason in the sidebar: no pictures, a model without its
        weights ...), or "" when it can: Start is disabled, its tooltip saying why, until the reason goes."""
        self.blocked_reason = reason
        self._update_buttons()

    def _set_run_range(self, total: int) -> None:
        self.run_bar.setRange(0, total)
        self.run_bar.setFormat(f"Run: %v of {plural(total, 'epoch')}")

    def _update_buttons(self) -> None:
        running = self.running
        self.start_button.setEnabled(not running and self.base_config is not None and not self.blocked_reason)
        self.start_button.setToolTip(f"Not yet possible: {self.blocked_reason}" if self.blocked_reason else START_TIP)
        self.pause_button.setEnabled(running)
        self.pause_button.setText("Resume" if self.controller.paused else "Pause")
        self.stop_button.setEnabled(running)
        self.settings.setEnabled(not running)
        self.settings.find_lr.setEnabled(not running and self.base_config is not None
                                         and not self.jobs.running("lr_find"))
        self.history.set_busy(running)

    # --- engine events ----------------------------------------------------------------------------------------

    def on_event(self, event) -> None:
        self.plots.add_event(event)
        if isinstance(event, ev.StepEnded):
            if self.epoch_bar.format() != EPOCH_FORMAT:  # after a Preparing stage
                self.epoch_bar.setFormat(EPOCH_FORMAT)
            self.epoch_bar.setValue(round(100 * event.step / event.steps))
            if not self.controller.paused:
                self.status.setText(f"Epoch {event.epoch}: step {event.step} of {event.steps}, "
                                    f"loss {event.loss:.3f}")
        elif isinstance(event, ev.Preparing):  # work before the first epoch (the frozen layers' outputs), its own bar
            text = preparing_text(event)
            # The bar holds the counts (the whole sentence wrapped over two lines in it); the line below says what.
            short = text.replace(f"Preparing: {event.what} \u2014 ", "Preparing: ", 1)
            self.epoch_bar.setFormat(short.replace("%", "%%"))
            self.epoch_bar.setValue(round(100 * event.done / max(event.total, 1)))
            if not self.controller.paused:
                self.status.setText(text)
        elif isinstance(event, ev.EpochEnded):
            self.run_bar.setValue(event.epoch)
            self._log(f"Epoch {event.epoch} of {event.total_epochs} ({event.phase_name}): validation accuracy "
                      f"{event.val_acc:.1%}, loss {event.val_loss:.3f}" + ("  - best so far" if event.is_best else ""))
        elif isinstance(event, ev.RunStarted):
            self.run_dir = event.run_dir
            self.epoch_bar.setFormat(EPOCH_FORMAT)
            self.epoch_bar.setValue(0)
            self._set_run_range(event.total_epochs)
            self.run_bar.setValue(event.epochs_done)
            if event.resumed:
                self._log(f"Resuming {event.run_dir} after {event.epochs_done} of "
                          f"{plural(event.total_epochs, 'epoch')}.")
            else:
                self._log(f"Run folder: {event.run_dir}")
        elif isinstance(event, ev.PhaseStarted):
            self._log(f"Phase {event.index + 1} '{event.name}': {event.trainable_params:,} of "
                      f"{event.total_params:,} parameters retrain.")
        elif isinstance(event, ev.Log):
            self._log(event.message, warning=event.level == "warning")

    def on_finished(self, result: RunResult) -> None:
        self.last_result = result
        self.plots.stop()
        if result.status == "failed":
            self.status.setText(f"The run failed: {result.error}")
            self._log(result.error or "The run failed.", warning=True)
        else:
            best = f"{result.best_val_acc:.1%} (epoch {result.best_epoch})" if result.best_val_acc is not None else "-"
            word = "Finished" if result.status == "completed" else "Stopped"
            self.status.setText(f"{word}. Best validation accuracy: {best}.")
            self._log(f"{word} after {plural(result.epochs_completed, 'epoch')}; best validation accuracy {best}.")
        if self.scratch_for is not None:
            self._record_scratch(self.scratch_for, result)
            self.scratch_for = None
        self.history.refresh()
        self._advise(result)
        self._update_buttons()
        self.runFinished.emit(result)

    def _record_scratch(self, run_dir: str, result: RunResult) -> None:
        from engine.advise.scratch import record_comparison
        from engine.errors import UserError

        if result.status != "completed" or not result.run_dir:
            self._log("The training from scratch did not complete, so nothing is compared.", warning=True)
            return
        try:
            comparison = record_comparison(run_dir, result.run_dir)
        except UserError as exc:
            self._log(str(exc), warning=True)
            return
        if comparison is not None:
            self.status.setText(comparison["sentence"])
            self._log(comparison["sentence"])

    def _log(self, text: str, warning: bool = False) -> None:
        if warning:
            self.log.appendHtml(f"<span style='color:#D55E00'>{html.escape(text)}</span>")
        else:
            self.log.appendPlainText(text)

    # --- the learning-rate finder and the training doctor -----------------------------------------------------

    def find_lr(self) -> None:
        """Run the learning-rate finder (engine.advise.lr_finder) for the current settings in the background; the
        curve and the suggestion appear in the 'Learning rate' tab."""
        config = self.config()
        if config is None or self.running or self.jobs.running("lr_find"):
            return
        dataset = self.dataset
        if dataset is not None and Path(dataset.root).resolve() != Path(config.data.source).resolve():
            dataset = None

        def work(progress, stop):
            from engine.advise.lr_finder import find_lr

            preload_training_modules().wait()  # timm may be half-imported by the preload thread (see show_preview)
            return find_lr(config, dataset=dataset, on_progress=progress, stop=stop)

        self.lr_plot.clear()
        self.lr_plot.show_message("Searching: trying learning rates from 1e-07 upwards on your training pictures ...")
        self.tabs.setCurrentWidget(self.lr_plot)
        self.status.setText("Finding a learning rate ...")
        self.jobs.start("lr_find", work, self._lr_found, on_error=self._lr_failed,
                        on_progress=lambda done, total: self.status.setText(
                            f"Finding a learning rate: {done} of {total} ..."),
                        on_cancel=lambda: self.status.setText("The learning-rate search was stopped."),
                        what="The learning-rate search")
        self._update_buttons()

    def _lr_found(self, finding) -> None:
        self.lr_plot.show_finding(finding)
        self.status.setText(f"Suggested learning rate: {finding.suggestion:.2g} (see the 'Learning rate' tab).")
        self._update_buttons()

    def _lr_failed(self, message: str) -> None:
        self.lr_plot.show_message(message)
        self.status.setText(message)
        self._update_buttons()

    def apply_lr(self, lr: float) -> None:
        """The finder's suggestion becomes the learning rate of the next run."""
        from engine.advise.lr_finder import with_lr

        config = self.config()
        if config is None or self.running:
            return
        self._replace_config(with_lr(config, lr), f"Learning rate set to {lr:g} for the next run.")

    def _replace_config(self, config: RunConfig, words: str) -> None:
        self.base_config = config
        self.settings.load(config)
        self.configChanged.emit(config)
        self.status.setText(words)

    def _advise(self, result: RunResult) -> None:
        """The training doctor's verdicts on the run that just ended (also written into its summary.json)."""
        if result.status == "failed" or not result.run_dir:
            return
        from engine.advise.training_doctor import advise_run

        verdicts = advise_run(result.run_dir)
        self.doctor.show_verdicts(verdicts, Path(result.run_dir).name)
        self.tabs.setTabText(self.tabs.indexOf(self.doctor), f"Advice ({len(verdicts)})" if verdicts else "Advice")
        if verdicts:
            self.tabs.setCurrentWidget(self.doctor)

    def _show_selected_advice(self) -> None:
        rows = self.history.selected_rows()
        if len(rows) != 1 or self.running:
            return
        from engine.advise.training_doctor import read_advice

        path = self.history.infos[rows[0]].path
        self.doctor.show_verdicts(read_advice(path), Path(path).name)

    def apply_advice(self, action: dict) -> None:
        """A verdict's button: its settings for the next run, or the step it names."""
        from engine.advise.training_doctor import apply_action
        from engine.errors import ConfigError

        if action.get("step"):
            steps = getattr(self.window(), "steps", None)
            if steps is not None and hasattr(steps, "go_to"):
                steps.go_to(action["step"])
            return
        config = self.config()
        if config is None or self.running:
            return
        try:
            changed = apply_action(config, action)
        except ConfigError as exc:
            self.status.setText(str(exc))
            return
        self._replace_config(changed, f"{action.get('label', 'Changed')}: set for the next run; press Start to "
                                      "train it.")

    # --- preview ----------------------------------------------------------------------------------------------

    def show_preview(self) -> None:
        """Eight augmented views of the first training picture, in a dialog (``preview_dialog``)."""
        from engine.data.scan import scan
        from engine.errors import UserError
        from engine.data.images import ImageError

        if self.base_config is None:
            return
        source = self.base_config.data.source
        preloaded = preload_training_modules()
        if not preloaded.is_set():
            # The preview imports timm's transforms, which the background preload may be importing right now: two
            # threads importing one package can each see it half-made ("partially initialized module").
            QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
            try:
                preloaded.wait()
            finally:
                QApplication.restoreOverrideCursor()
        try:
            index = self.dataset
            if index is None or Path(index.root).resolve() != Path(source).resolve():
                index = scan(source, verify=False)  # the Data step has not scanned this folder
            train = index.split("train")
            if not train:
                QMessageBox.information(self, "Augmentation preview",
                                        "No preview: the project has no training pictures yet.")
                return
            dialog = AugmentPreview(train[0].path, self.settings.augment.currentData(), self)
        except (UserError, ImageError) as exc:
            QMessageBox.information(self, "Augmentation preview", f"No preview: {exc}")
            return
        self.preview_dialog = dialog
        dialog.open()

