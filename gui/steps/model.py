"""The Model step: a searchable catalogue of timm and torchvision models, and where their weights come from.

The table shows each model's size, input size, pretrained weight sets, their licence and whether weights are on this
computer now; the panel beside it chooses the weights: pretrained (downloaded with a progress bar when there is a
connection, or found in the local caches), a weight file imported into the app's model library, a model trained in
an earlier run, or none. Loading the catalogue, counting parameters, downloading and importing all run off the GUI
thread, as jobs of the window's job service (``gui.support.jobs``).

Plug-in API::

    picker = ModelPicker(parent, runs_folder="runs", jobs=window_jobs)   # jobs: the window's job service, or None
    picker.modelChosen.connect(lambda name, weights: ...)   # "timm:resnet18", "pretrained" | "none" | a file
    picker.set_config(config)                                # show the config's model and weights
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from PySide6.QtCore import (QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, QTimer, Signal)
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (QAbstractItemView, QButtonGroup, QCheckBox, QComboBox, QFileDialog, QFormLayout,
                               QGroupBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QProgressBar, QPushButton,
                               QRadioButton, QSplitter, QTableView, QVBoxLayout, QWidget)

from engine.models import catalogue
from engine.errors import ModelError
from engine.models.build import OFFLINE_ENV, offline_mode
from engine.models.catalogue import ModelInfo
from engine.config import RunConfig
from engine.project.library import ModelLibrary, TrainedModel, trained_models
from gui.support.dialogs import start_folder
from gui.support.jobs import Jobs
from gui.support.model_builder import CatalogueService, ModelBuilder
from gui.widgets.format import format_count, plural

NAME, PARAMS, INPUT, WEIGHTS, LICENCE, OFFLINE = range(6)
COLUMNS = ("Model", "Parameters", "Input", "Pretrained weights", "Licence", "Weights offline")
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
NAME_ROLE = Qt.ItemDataRole.UserRole + 2
SEARCH_DELAY_MS = 150  # typing pauses this long before the table filters again
IMPORT = "import"  # the kind of the picker's own jobs (the builder and the catalogue run on lanes of their own)

# Okabe-Ito: bluish green for "ready offline", vermillion for "needs a download or has none".
READY = QColor("#009E73")
MISSING = QColor("#D55E00")

OFFLINE_TEXT = {
    "cached": "on this computer",
    "imported": "imported file",
    "run": "earlier run",
    "download": "needs download",
    "none": "none published",
}


class CatalogueTableModel(QAbstractTableModel):
    """Rows of ``ModelInfo``; counts arrive later (``set_count``), and rows being painted ask for theirs
    (``countsWanted``), so that only what the user looks at is counted."""

    countsWanted = Signal(list)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._items: list[ModelInfo] = []
        self._rows: dict[str, int] = {}
        self._counts: dict[str, int | None] = {}
        self._offline: dict[str, str] = {}
        self._wanted: list[str] = []
        self.project_model: str | None = None  # the project's model (its row says so on hover)
        self._ask = QTimer(self)
        self._ask.setSingleShot(True)
        self._ask.setInterval(0)
        self._ask.timeout.connect(self._flush_wanted)

    def set_items(self, items: list[ModelInfo]) -> None:
        self.beginResetModel()
        self._items = list(items)
        self._rows = {item.name: i for i, item in enumerate(self._items)}
        self.endResetModel()

    def items(self) -> list[ModelInfo]:
        return list(self._items)

    def set_count(self, name: str, value: int | None) -> None:
        self._counts[name] = value
        row = self._rows.get(name)
        if row is not None:
            index = self.index(row, PARAMS)
            self.dataChanged.emit(index, index)

    def count(self, name: str) -> int | None:
        return self._counts.get(name)

    def set_offline(self, status: dict[str, str]) -> None:
        self._offline = dict(status)
        if self._items:
            self.dataChanged.emit(self.index(0, OFFLINE), self.index(len(self._items) - 1, OFFLINE))

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._items)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return len(COLUMNS)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        item = self._items[index.row()]
        column = index.column()
        if role == NAME_ROLE:
            return item.name
        if role == Qt.ItemDataRole.DisplayRole:
            if column == NAME:
                return item.arch if item.source == "timm" else f"{item.arch} (torchvision)"
            if column == PARAMS:
                if item.name not in self._counts:
                    self._want(item.name)
                    return "\u2026"
                value = self._counts[item.name]
                return format_count(value) if value is not None else "?"
            if column == INPUT:
                return f"{item.input_size[1]}\u00d7{item.input_size[2]}" if item.input_size else ""
            if column == WEIGHTS:
                if not item.tags:
                    return "none"
                return item.default_tag + (f" (+{len(item.tags) - 1})" if len(item.tags) > 1 else "")
            if column == LICENCE:
                return item.license or ("not stated" if item.tags else "")
            if column == OFFLINE:
                return OFFLINE_TEXT.get(self._offline.get(item.name, ""), "")
        if role == SORT_ROLE:
            if column == PARAMS:
                value = self._counts.get(item.name)
                return value if value is not None else 1 << 62
            if column == INPUT:
                return item.input_size[1] if item.input_size else 0
            return str(self.data(index, Qt.ItemDataRole.DisplayRole)).lower()
        if role == Qt.ItemDataRole.ForegroundRole and column == OFFLINE:
            status = self._offline.get(item.name, "")
            return READY if status in ("cached", "imported", "run") else MISSING if status else None
        if role == Qt.ItemDataRole.TextAlignmentRole and column in (PARAMS, INPUT):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.FontRole and column == NAME and item.recommended:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == NAME:
                return f"{item.name}" + (f"\nRecommended: {item.recommended}" if item.recommended else "") + (
                    "\nThis project's model." if item.name == self.project_model else "")
            if column == PARAMS:
                return ("Parameters of the model as published, including its original head: ImageNet's 1,000-class "
                        "classifier for most models. Your model gets a new head for your own classes instead, so the "
                        "Layers step shows fewer for the same model (MobileNetV2: 3.5 M here, 2.2 M with 2 classes).")
            if column == WEIGHTS:
                return ("Pretrained weight sets: " + ", ".join(item.tags)) if item.tags else \
                    "No pretrained weights are published for this model."
            if column == LICENCE:
                return "The licence the pretrained configuration states for the default weights."
            if column == OFFLINE:
                return "Whether weights for this model can be used without an internet connection right now."
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def request_count(self, name: str) -> None:
        if name not in self._counts:
            self._want(name)

    def _want(self, name: str) -> None:
        if name not in self._wanted:
            self._wanted.append(name)
        self._ask.start()

    def _flush_wanted(self) -> None:
        if self._wanted:
            self.countsWanted.emit(list(self._wanted))  # top to bottom, as painted
            self._wanted.clear()


class ModelPicker(QWidget):
    """Choose a model and the weights it starts from; ``modelChosen(name, weights)`` when the user confirms.

    ``weights`` is "pretrained" (the weights are on this computer by then), "none", or the path of a weight file
    (an imported file in the model library, or an earlier run's ``best.safetensors``)."""

    modelChosen = Signal(str, str)
    catalogueLoaded = Signal()
    catalogueFailed = Signal(str)  # the sentence that says why the catalogue could not be loaded
    weightsArrived = Signal()  # pretrained weights were downloaded: which models work offline has changed

    def __init__(self, parent=None, runs_folder: str | os.PathLike | None = None,
                 library: ModelLibrary | None = None, cache_dir: str | os.PathLike | None = None,
                 jobs: Jobs | None = None) -> None:
        super().__init__(parent)
        self.jobs = Jobs(self, service=jobs)
        self.library = library or ModelLibrary()
        self.runs_folder = Path(runs_folder) if runs_folder is not None else Path(RunConfig().out)
        self._all: tuple[ModelInfo, ...] = ()
        self._current: ModelInfo | None = None
        self._imports = []
        self._runs: list[TrainedModel] = []
        self._pending_choice: tuple[str, str] | None = None
        # The project's own (model, weights): a weight file it uses that was never imported into the library is
        # still listed (and chosen) under "A weight file", not left out while another source shows as chosen.
        self._project_weights: tuple[str, str] | None = None
        self._status: dict[str, str] = {}  # model name -> key of OFFLINE_TEXT
        self._choose_after_download = False
        self._just_downloaded = False  # keep the download's message when the choice follows it

        # Filters
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("Search models: resnet, vit, efficientnet, *in21k* ...")
        self.search_edit.setClearButtonEnabled(True)
        self.search_edit.setToolTip("Part of a model's name or of a weight set's name; * and ? work as wildcards.")
        self.recommended_check = QCheckBox("Recommended for beginners")
        self.recommended_check.setChecked(True)
        self.recommended_check.setToolTip("A short list of reliable models, small and fast first.")
        self.offline_check = QCheckBox("Available offline")
        self.offline_check.setToolTip("Only models whose weights are on this computer now: downloaded before, "
                                      "imported, or trained in an earlier run.")
        self.source_combo = QComboBox()
        for text, value in (("timm and torchvision", ""), ("timm", "timm"), ("torchvision", "torchvision")):
            self.source_combo.addItem(text, value)
        self.source_combo.setToolTip("Which library's models to list.")
        filters = QHBoxLayout()
        filters.addWidget(self.search_edit, 1)
        filters.addWidget(self.recommended_check)
        filters.addWidget(self.offline_check)
        filters.addWidget(self.source_combo)
        self.data_source = ""  # the project's pictures, which "Suggest models" scores the models on
        self.suggestions = None  # the last "Suggest models" dialog (gui.widgets.advice)
        self.suggest_button = QPushButton("Suggest models")
        self.suggest_button.setToolTip("Rank the models whose weights are on this computer by how well they suit "
                                       "your pictures, measured on a sample of them without training.")
        self.suggest_button.clicked.connect(self.suggest)
        filters.addWidget(self.suggest_button)
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(SEARCH_DELAY_MS)
        self._search_timer.timeout.connect(self.refilter)
        self.search_edit.textChanged.connect(self._search_timer.start)
        for box in (self.recommended_check, self.offline_check):
            box.toggled.connect(self.refilter)
        self.source_combo.currentIndexChanged.connect(self.refilter)

        # Table
        self.table_model = CatalogueTableModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.table_model)
        self.proxy.setSortRole(SORT_ROLE)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # the catalogue's own order until asked
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 8)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(NAME, QHeaderView.ResizeMode.Stretch)
        for column, width in ((PARAMS, 80), (INPUT, 70), (WEIGHTS, 130), (LICENCE, 85), (OFFLINE, 115)):
            header.resizeSection(column, width)
        self.table.selectionModel().currentRowChanged.connect(self._row_changed)
        self.table.doubleClicked.connect(lambda _: self.choose())
        self.count_label = QLabel("Loading the model catalogue ...")

        # Details
        self.name_label = QLabel()
        self.name_label.setWordWrap(True)
        self.name_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.facts_label = QLabel()
        self.facts_label.setWordWrap(True)
        self.reason_label = QLabel()
        self.reason_label.setWordWrap(True)

        weights_box = QGroupBox("Weights to start from")
        self.source_group = QButtonGroup(self)
        self.pretrained_radio = QRadioButton("Pretrained (recommended)")
        self.pretrained_radio.setToolTip("Weights learnt on millions of photos: the point of transfer learning.")
        self.file_radio = QRadioButton("A weight file")
        self.file_radio.setToolTip("A .safetensors, .pth, .pt or .bin file imported into the app's model library.")
        self.run_radio = QRadioButton("A model you trained before")
        self.run_radio.setToolTip("The best weights of an earlier run of this model; its head is replaced when "
                                  "your classes differ.")
        self.none_radio = QRadioButton("None: random weights (for comparison only)")
        self.none_radio.setToolTip("Start from scratch; with few pictures this learns far less than pretrained "
                                   "weights.")
        for i, radio in enumerate((self.pretrained_radio, self.file_radio, self.run_radio, self.none_radio)):
            self.source_group.addButton(radio, i)
        self.pretrained_radio.setChecked(True)
        self.source_group.idToggled.connect(lambda *_: self._update_weights())

        self.tag_combo = QComboBox()
        self.tag_combo.setToolTip("Which published weight set to use; the first is timm's default.")
        self.tag_combo.currentIndexChanged.connect(lambda *_: self._update_weights())
        self.availability_label = QLabel()
        self.availability_label.setWordWrap(True)
        self.download_button = QPushButton("Download now")
        self.download_button.setToolTip("Fetch the pretrained weights into the local cache, so that they work "
                                        "offline afterwards.")
        self.download_button.clicked.connect(self.download)
        self.cancel_button = QPushButton("Stop")
        self.cancel_button.clicked.connect(self.cancel_download)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.cancel_button.setVisible(False)
        download_row = QHBoxLayout()
        download_row.addWidget(self.download_button)
        download_row.addWidget(self.progress, 1)
        download_row.addWidget(self.cancel_button)

        self.file_combo = QComboBox()
        self.file_combo.setToolTip("Weight files imported for this model.")
        self.file_combo.currentIndexChanged.connect(lambda *_: self._update_weights())
        self.import_button = QPushButton("Import a file ...")
        self.import_button.setToolTip("Copy a weight file for this model into the app's model library "
                                      "(checked to fit, stored as .safetensors).")
        self.import_button.clicked.connect(self._ask_import)
        file_row = QHBoxLayout()
        file_row.addWidget(self.file_combo, 1)
        file_row.addWidget(self.import_button)
        self.run_combo = QComboBox()
        self.run_combo.setToolTip("Earlier runs of this model that saved weights.")
        self.run_combo.currentIndexChanged.connect(lambda *_: self._update_weights())

        form = QVBoxLayout(weights_box)
        form.addWidget(self.pretrained_radio)
        pretrained_form = QFormLayout()
        pretrained_form.setContentsMargins(22, 0, 0, 0)
        pretrained_form.addRow("Weight set:", self.tag_combo)
        form.addLayout(pretrained_form)
        indent = QVBoxLayout()
        indent.setContentsMargins(22, 0, 0, 0)
        indent.addWidget(self.availability_label)
        indent.addLayout(download_row)
        form.addLayout(indent)
        form.addWidget(self.file_radio)
        file_indent = QVBoxLayout()
        file_indent.setContentsMargins(22, 0, 0, 0)
        file_indent.addLayout(file_row)
        form.addLayout(file_indent)
        form.addWidget(self.run_radio)
        run_indent = QVBoxLayout()
        run_indent.setContentsMargins(22, 0, 0, 0)
        run_indent.addWidget(self.run_combo)
        form.addLayout(run_indent)
        form.addWidget(self.none_radio)

        self.message_label = QLabel()
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.use_button = QPushButton("Use this model")
        self.use_button.setDefault(True)
        self.use_button.setToolTip("Continue with this model and these weights.")
        self.use_button.clicked.connect(self.choose)

        details = QWidget()
        details_layout = QVBoxLayout(details)
        details_layout.setContentsMargins(8, 0, 0, 0)
        details_layout.addWidget(self.name_label)
        details_layout.addWidget(self.facts_label)
        details_layout.addWidget(self.reason_label)
        details_layout.addWidget(weights_box)
        details_layout.addWidget(self.message_label)
        details_layout.addStretch()
        details_layout.addWidget(self.use_button)
        details.setMinimumWidth(330)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.table, 1)
        left_layout.addWidget(self.count_label)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(details)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setChildrenCollapsible(False)
        splitter.setSizes([760, 400])
        self.splitter = splitter

        layout = QVBoxLayout(self)
        layout.addLayout(filters)
        layout.addWidget(splitter, 1)

        self.builder = ModelBuilder(self, jobs=self.jobs)
        self.builder.progress.connect(self._download_progress)
        self.builder.downloaded.connect(self._downloaded)
        self.builder.failed.connect(self._download_failed)
        self.builder.busyChanged.connect(self._busy_changed)

        self.service = CatalogueService(self, cache_dir, jobs=self.jobs)
        self.service.loaded.connect(self._catalogue_loaded)
        self.service.failed.connect(self.count_label.setText)
        self.service.failed.connect(self.catalogueFailed)
        self.service.counted.connect(self.table_model.set_count)
        self.service.counted.connect(self._counted)
        self.table_model.countsWanted.connect(self.service.want)
        self._set_details_enabled(False)

    # -- public API

    def set_runs_folder(self, folder: str | os.PathLike) -> None:
        """Where earlier runs are (their models can be reused)."""
        self.runs_folder = Path(folder)
        self.refresh_offline()

    def set_config(self, config: RunConfig) -> None:
        """Select the config's model and weight source (once the catalogue has loaded). The config's model is the
        project's: its row stays in the table whatever the filters (unless the user searches for something else)."""
        self.runs_folder = Path(config.out)
        self.data_source = config.data.source
        self._pending_choice = (config.model.name, config.model.weights)
        self._project_weights = (config.model.name, config.model.weights)
        try:
            self.table_model.project_model = catalogue.base_name(config.model.name)
        except ModelError:  # not a model name at all: the Model step says so
            self.table_model.project_model = None
        if self._all:
            self.refresh_offline()
            self.refilter()
            self._apply_pending()

    def suggest(self, models=None) -> None:
        """Open the ranked suggestions for the project's pictures (``models``: score these candidates instead of
        every model on this computer); choosing one there confirms it as "Use this model" does."""
        from gui.widgets.advice import SuggestionsDialog

        if not self.data_source:
            self._say("Open a folder of pictures first: the models are scored on your own pictures.", error=True)
            return
        dialog = SuggestionsDialog(self, self.jobs, self.data_source, self.runs_folder, self.library, models)
        dialog.chosen.connect(self._suggestion_chosen)
        self.suggestions = dialog
        dialog.open()
        dialog.start()

    def _suggestion_chosen(self, name: str, weights: str) -> None:
        self.select(name)
        self.modelChosen.emit(name, weights)

    def catalogue_ready(self) -> bool:
        """Whether the catalogue has loaded (until then nothing is selected, and availability is not known)."""
        return bool(self._all)

    def select(self, name: str) -> bool:
        """Select ``name`` in the table, clearing the filters when it is hidden; False for an unknown model."""
        base = catalogue.base_name(name)
        if self._select_quietly(base):
            return True
        for widget in (self.search_edit, self.recommended_check, self.offline_check, self.source_combo):
            widget.blockSignals(True)
        self.search_edit.clear()
        self.recommended_check.setChecked(False)
        self.offline_check.setChecked(False)
        self.source_combo.setCurrentIndex(0)
        for widget in (self.search_edit, self.recommended_check, self.offline_check, self.source_combo):
            widget.blockSignals(False)
        self.refilter()
        return self._select_quietly(base)

    def current_model(self) -> ModelInfo | None:
        return self._current

    def choice(self) -> tuple[str, str] | None:
        """The (name, weights) the picker would choose now, or None when the weights are not usable yet."""
        if self._current is None:
            return None
        item = self._current
        source = self.source_group.checkedId()
        if source == 0:
            tag = self.tag_combo.currentData()
            name = f"timm:{item.arch}.{tag}" if item.source == "timm" and tag and tag != item.default_tag \
                else item.name
            return name, "pretrained"
        if source == 1:
            path = self.file_combo.currentData()
            return (item.name, path) if path else None
        if source == 2:
            run = self.run_combo.currentData()
            return (run.architecture, run.path) if run else None
        return item.name, "none"

    def choose(self) -> None:
        """Confirm the choice: emits ``modelChosen``; pretrained weights not on this computer are downloaded
        first (with progress), or the picker says why they cannot be."""
        choice = self.choice()
        if choice is None:
            return
        name, weights = choice
        if weights == "pretrained" and not catalogue.pretrained_availability(name).offline:
            self._choose_after_download = True
            self.download()
            return
        if not self._just_downloaded:
            self._say("")
        self._just_downloaded = False
        self.modelChosen.emit(name, weights)

    def download(self) -> None:
        choice = self.choice()
        if choice is None or choice[1] != "pretrained":
            return
        self._say("")
        self.progress.setRange(0, 0)
        self.builder.download(choice[0])

    def cancel_download(self) -> None:
        self._choose_after_download = False
        self.builder.cancel()
        self._say("The download was stopped; nothing was changed.")

    def import_file(self, path: str | os.PathLike) -> None:
        """Import a weight file for the selected model into the library, off the GUI thread."""
        if self._current is None:
            return
        architecture = self._current.name
        self._say(f"Importing {Path(path).name} ...")
        self.import_button.setEnabled(False)
        self.jobs.start(IMPORT, lambda progress, stop: self.library.import_file(path, architecture), self._imported,
                        on_error=self._import_failed, what="Importing the weight file")

    def refilter(self) -> None:
        if not self._all:
            return
        offline = None
        if self.offline_check.isChecked():
            status = self._status
            offline = lambda item: status.get(item.name) in ("cached", "imported", "run")  # noqa: E731
        items = catalogue.search(self.search_edit.text(), self._all, source=self.source_combo.currentData() or None,
                                 recommended_only=self.recommended_check.isChecked(), offline=offline)
        if self.recommended_check.isChecked():
            order = {name: i for i, (name, _) in enumerate(catalogue.RECOMMENDED)}
            items.sort(key=lambda i: order.get(i.name, len(order)))
        matches = len(items)
        # The project's model is always listed (first), even when a filter would hide it, unless the user searches.
        own = self.table_model.project_model
        source = self.source_combo.currentData()
        if own and not self.search_edit.text().strip() and all(i.name != own for i in items):
            item = next((i for i in self._all if i.name == own), None)
            if item is not None and (not source or item.source == source):
                items.insert(0, item)
        keep = self._current.name if self._current else None
        self.table_model.set_items(items)
        self.count_label.setText(f"{matches} of {plural(len(self._all), 'model')}" + (
            ", and this project's model" if len(items) > matches else "") + (
            "" if items else " \u2014 nothing matches: clear the search or the filters."))
        if keep and not self._select_quietly(keep) and items:
            self.table.setCurrentIndex(self.proxy.index(0, NAME))
        elif not items:
            self._show_model(None)

    def refresh_offline(self) -> None:
        """Look again at the caches, the library and the runs folder (after a download, an import, a run)."""
        self._imports = self.library.imported()
        self._runs = trained_models(self.runs_folder)
        imported = {catalogue.base_name(e.architecture) for e in self._imports if e.architecture}
        trained = {catalogue.base_name(r.architecture) for r in self._runs}
        index = catalogue.OfflineIndex()
        status = {}
        for item in self._all:
            if index.pretrained(item):
                status[item.name] = "cached"
            elif item.name in imported:
                status[item.name] = "imported"
            elif item.name in trained:
                status[item.name] = "run"
            else:
                status[item.name] = "download" if item.tags else "none"
        self._status = status
        self.table_model.set_offline(status)
        if self._current is not None:
            self._show_model(self._current)

    # -- internals

    def _counted(self, name: str, _value) -> None:
        if self._current is not None and self._current.name == name:
            self._show_facts(self._current)

    def _catalogue_loaded(self, models) -> None:
        self._all = tuple(models)
        self.refresh_offline()
        self._set_details_enabled(True)  # before the first row is shown, which then disables what does not apply
        self.refilter()
        self._apply_pending()
        if self._current is None and self.proxy.rowCount():
            self.table.setCurrentIndex(self.proxy.index(0, NAME))
        self.catalogueLoaded.emit()

    def _apply_pending(self) -> None:
        if not self._pending_choice:
            return
        name, weights = self._pending_choice
        self._pending_choice = None
        if not self.select(name):
            return
        if weights == "pretrained":
            self.pretrained_radio.setChecked(True)
            tag = catalogue.tag_of(name)
            if tag:
                self.tag_combo.setCurrentIndex(max(0, self.tag_combo.findData(tag)))
        elif weights == "none":
            self.none_radio.setChecked(True)
        else:
            for combo, radio in ((self.file_combo, self.file_radio), (self.run_combo, self.run_radio)):
                for i in range(combo.count()):
                    data = combo.itemData(i)
                    if (getattr(data, "path", data)) == weights:
                        combo.setCurrentIndex(i)
                        radio.setChecked(True)
                        return

    def _select_quietly(self, name: str) -> bool:
        for row in range(self.proxy.rowCount()):
            index = self.proxy.index(row, NAME)
            if index.data(NAME_ROLE) == name:
                self.table.setCurrentIndex(index)
                self.table.scrollTo(index)
                return True
        return False

    def _row_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        name = current.data(NAME_ROLE) if current.isValid() else None
        self._show_model(catalogue.info(name) if name else None)

    def _show_model(self, item: ModelInfo | None) -> None:
        self._current = item
        self._set_details_enabled(item is not None)
        if item is None:
            self.name_label.setText("<h3>No model selected</h3>")
            self.facts_label.clear()
            self.reason_label.clear()
            return
        self.name_label.setText(f"<h3 style='margin:0'>{item.arch}</h3>")
        self._show_facts(item)
        self.reason_label.setText(f"<i>Recommended: {item.recommended}</i>" if item.recommended else "")
        self.reason_label.setVisible(bool(item.recommended))
        # Weight sets
        self.tag_combo.blockSignals(True)
        self.tag_combo.clear()
        for tag in item.tags:
            label = tag + ("  (default)" if tag == item.default_tag else "")
            self.tag_combo.addItem(label, tag)
        if item.default_tag:
            self.tag_combo.setCurrentIndex(max(0, self.tag_combo.findData(item.default_tag)))
        # torchvision's pretrained weights are always its default set (the engine loads DEFAULT).
        self.tag_combo.setEnabled(item.source == "timm" and len(item.tags) > 1)
        self.tag_combo.blockSignals(False)
        # Imported files and earlier runs of this model
        self.file_combo.blockSignals(True)
        self.file_combo.clear()
        for entry in self._imports:
            if entry.architecture and catalogue.base_name(entry.architecture) == item.name:
                self.file_combo.addItem(f"{entry.label} ({format_count(entry.params)} parameters)", entry.path)
        own = self._project_file(item)
        if own is not None and self.file_combo.findData(own) < 0:
            missing = "" if Path(own).is_file() else ", missing"
            self.file_combo.addItem(f"{Path(own).name} (this project's file{missing})", own)
            self.file_combo.setItemData(self.file_combo.count() - 1, own, Qt.ItemDataRole.ToolTipRole)
        if not self.file_combo.count():
            self.file_combo.addItem("No file imported for this model yet", None)
        self.file_combo.blockSignals(False)
        self.run_combo.blockSignals(True)
        self.run_combo.clear()
        for run in self._runs:
            if catalogue.base_name(run.architecture) == item.name:
                self.run_combo.addItem(run.label, run)
        if not self.run_combo.count():
            self.run_combo.addItem(f"No earlier run of this model in {self.runs_folder}", None)
        self.run_combo.blockSignals(False)
        self.pretrained_radio.setEnabled(item.has_pretrained)
        if not item.has_pretrained and self.pretrained_radio.isChecked():
            self.none_radio.setChecked(True)
        self._say("")
        self._update_weights()

    def _project_file(self, item: ModelInfo) -> str | None:
        """The weight file the project uses for ``item``, when that is a file (not pretrained, none or a run)."""
        if self._project_weights is None:
            return None
        name, weights = self._project_weights
        try:
            same = catalogue.base_name(name) == item.name
        except ModelError:
            return None
        if not same or weights in ("pretrained", "none") or Path(weights).is_dir():
            return None
        return weights

    def _show_facts(self, item: ModelInfo) -> None:
        count = self.table_model.count(item.name)
        self.table_model.request_count(item.name)
        facts = [f"from {item.source}"]
        if count is not None:
            facts.append(f"{format_count(count)} parameters")
        if item.input_size:
            facts.append(f"pictures resized to {item.input_size[1]}\u00d7{item.input_size[2]}")
        self.facts_label.setText(", ".join(facts) + ".")

    def _update_weights(self) -> None:
        item = self._current
        if item is None:
            return
        source = self.source_group.checkedId()
        pretrained = source == 0
        self.tag_combo.setEnabled(pretrained and item.source == "timm" and len(item.tags) > 1)
        self.file_combo.setEnabled(source == 1)
        self.run_combo.setEnabled(source == 2)
        downloading = self.builder.is_busy()
        availability = None
        if item.has_pretrained:
            tag = self.tag_combo.currentData()
            availability = catalogue.pretrained_availability(item.name, tag)
            licence = catalogue.license_of(item.name, tag)
            text = availability.where if availability.offline else availability.reason
            mark = ("<span style='color:#009E73'>\u2714</span> " if availability.offline
                    else "<span style='color:#D55E00'>\u2716</span> ")
            licence_text = f" Licence: {licence}." if licence else " The licence is not stated in its configuration."
            self.availability_label.setText(mark + html.escape(text + licence_text))
            self.download_button.setVisible(not availability.offline and not downloading)
            offline = offline_mode()
            self.download_button.setEnabled(pretrained and not offline)
            self.download_button.setToolTip(
                f"Offline mode is on ({OFFLINE_ENV}=1): nothing is downloaded." if offline else
                "Fetch the pretrained weights into the local cache, so that they work offline afterwards.")
        else:
            self.availability_label.setText(f"No pretrained weights are published for {item.arch}.")
            self.download_button.setVisible(False)
        needs_download = pretrained and item.has_pretrained and not availability.offline
        cannot_download = needs_download and offline_mode()
        self.use_button.setEnabled(self.choice() is not None and not downloading and not cannot_download)
        self.use_button.setText("Download and use this model" if needs_download and not cannot_download
                                else "Use this model")
        if cannot_download:
            self.use_button.setToolTip("Offline mode is on, so these weights cannot be downloaded: import a weight "
                                       "file, or choose a model whose weights are on this computer.")
        elif source == 1 and self.file_combo.currentData() is None:
            self.use_button.setToolTip("Import a weight file for this model first.")
        elif source == 2 and self.run_combo.currentData() is None:
            self.use_button.setToolTip("There is no earlier run of this model to start from.")
        else:
            self.use_button.setToolTip("Continue with this model and these weights.")

    def _set_details_enabled(self, enabled: bool) -> None:
        for widget in (self.pretrained_radio, self.file_radio, self.run_radio, self.none_radio, self.use_button,
                       self.import_button):
            widget.setEnabled(enabled)

    def _say(self, text: str, error: bool = False) -> None:
        shown = html.escape(text)
        self.message_label.setText(f"<span style='color:#D55E00'>{shown}</span>" if error and text else shown)
        self.message_label.setVisible(bool(text))

    def _ask_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a weight file", start_folder(self),
                                              "Weight files (*.safetensors *.pth *.pt *.bin)")
        if path:
            self.import_file(path)

    def _imported(self, entry) -> None:
        """The imported file becomes the project's weights at once (importing it says that is what the user
        wants): no second click on *Use this model*."""
        self.import_button.setEnabled(True)
        self.refresh_offline()
        if entry.architecture and (self._current is None or self._current.name != catalogue.base_name(
                entry.architecture)):
            self.select(entry.architecture)  # the user looked at another model while the file was imported
        self.file_radio.setChecked(True)
        index = self.file_combo.findData(entry.path)
        if index < 0:
            self._say(f"{entry.label} was imported into the model library.")
            return
        self.file_combo.setCurrentIndex(index)
        self.choose()
        self._say(f"{entry.label} was imported into the model library; this project now starts from it.")

    def _import_failed(self, message: str) -> None:
        self.import_button.setEnabled(True)
        self._say(message, error=True)

    def _download_progress(self, text: str, done: int, total: int) -> None:
        if total:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(1000 * done / total))
            self.progress.setFormat(f"{done / 1e6:.0f} of {total / 1e6:.0f} MB")
        else:
            self.progress.setRange(0, 0)
        self.progress.setToolTip(text)

    def _downloaded(self, where: str) -> None:
        self.refresh_offline()
        self.weightsArrived.emit()
        self._say("The pretrained weights are now on this computer; they also work offline from now on.")
        if self._choose_after_download:
            self._choose_after_download = False
            self._just_downloaded = True
            self.choose()

    def _download_failed(self, message: str) -> None:
        self._choose_after_download = False
        self._say(message, error=True)

    def _busy_changed(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self._update_weights()
