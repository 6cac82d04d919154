"""The Layers step: choose which parts of the network to retrain, by looking at the network itself.

A tree of the model (stages, then their blocks, then single layers, built only when a row is opened; each stage named
in plain words, 'block 4 of 19', beside the model's own name, 'features.3') with, per row,
its type, its parameters, whether it is retrained, its learning-rate multiplier and what happens to its BatchNorm
statistics; a live summary and a strip of the depth of the network; presets with one line saying when to use each;
and the list of phases for the strategies that train in several steps.

What the editor shows is exactly what the engine trains: the plan is a tuple of ``engine.config.Phase``, per stage,
as ``engine.train.strategies`` applies it. Rows below a stage follow their stage (the engine freezes whole stages).

Plug-in API (see ``LayerEditor``)::

    editor = LayerEditor(parent)
    editor.set_config(config)                      # epochs, learning rate, layer decay; a saved plan
    editor.open_model(name, weights, num_classes)  # builds off the GUI thread, then shows the tree
    # or, with a model built elsewhere: editor.set_model(tree, modules, title)
    editor.planChanged.connect(lambda phases, strategy: ...)
    config = editor.apply_to(config)               # the plan written into a RunConfig
"""

from __future__ import annotations

import dataclasses
import functools
import html
import math
from typing import Mapping

from PySide6.QtCore import QAbstractItemModel, QEvent, QModelIndex, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPainter, QPalette, QPen
from PySide6.QtWidgets import (QAbstractItemView, QButtonGroup, QComboBox, QDoubleSpinBox, QGridLayout,
                               QHBoxLayout, QHeaderView, QLabel, QProgressBar, QPushButton, QSizePolicy, QSpinBox,
                               QSplitter, QStackedWidget, QStyledItemDelegate, QTableWidget, QTableWidgetItem,
                               QToolTip, QTreeView, QVBoxLayout, QWidget)

from engine.config import Phase, RunConfig
from engine.errors import ConfigError
from engine.train.strategies import check_phase, resolve_phases
from engine.models.layers import HEAD, LayerNode, LayerTree, ModuleTree
from gui.widgets.format import format_count, plural

# Okabe-Ito colours (colour-blind safe): what retrains, and what is kept as it is.
TRAIN_COLOUR = QColor("#E69F00")  # orange
FROZEN_COLOUR = QColor("#56B4E9")  # sky blue

# (strategy, button text, when to use it)
PRESETS: tuple[tuple[str, str, str], ...] = (
    ("feature-extraction", "Feature extraction",
     "Few pictures, similar to everyday photos: keep every layer, retrain only the new head."),
    ("fine-tune-shallow", "Shallow",
     "A few hundred pictures per class: also retrain the last layers, gently."),
    ("fine-tune-deep", "Deep",
     "Many pictures, or pictures unlike photos (X-rays, microscopy): retrain everything, early layers slower."),
    ("progressive", "Progressive",
     "When deep fine-tuning is unstable: start with the head, then unfreeze one more stage per phase."),
    ("lp-ft", "LP-FT",
     "A robust path to deeper fine-tuning: the head alone first, then everything at a lower rate."),
    ("lora", "LoRA adapters",
     "Large models, or one small file per task: layers kept, small adapters learn beside them (tick the stages)."),
)
PRESET_NAMES = {strategy: label for strategy, label, _ in PRESETS}
CUSTOM = "custom"
BN_CHOICES = (("frozen", "Keep the pretrained statistics"), ("train", "Update them from your pictures"))

NAME, TYPE, PARAMS, RETRAIN, LR, BN = range(6)
COLUMNS = ("Layer", "Type", "Parameters", "Retrain", "Learning rate \u00d7", "BatchNorm statistics")
KEY_ROLE = Qt.ItemDataRole.UserRole + 1  # a row's node key ("stage:layer1", "layer1.0.conv1", ...)


def format_share(part: int, total: int) -> str:
    if total <= 0:
        return "0 %"
    share = 100 * part / total
    if 0 < share < 1:
        return "< 1 %"
    if 99 < share < 100:
        return "> 99 %"
    return f"{share:.0f} %"


def format_multiplier(value: float) -> str:
    return f"{value:.3g}"


def stage_list(stages: Mapping[str, float], tree: LayerTree) -> str:
    """A phase's stages in words: 'only the head', 'everything', 'layer4 and the head', 'blocks.9 ... (4 stages)'."""
    names = [n for n in tree.names if n in stages]
    if not names:
        return "nothing"
    if len(names) == len(tree.names):
        return "everything"
    if names == [HEAD]:
        return "only the head"
    body = [n for n in names if n != HEAD]
    text = ", ".join(body) if len(body) <= 2 else f"{body[0]} \u2026 {body[-1]} ({len(body)} stages)"
    return text + (" and the head" if HEAD in names else "")


def published_size(name: str) -> tuple[int, int] | None:
    """(parameters, classes) of catalogue model ``name`` as published, with its original head: the count the Model
    step shows. None when the count is not known without building the model."""
    from engine.models import catalogue

    try:
        base = catalogue.base_name(name)
        count = _param_counts().get(base)
        if count is None:
            return None
        source, arch = base.split(":", 1)
        if source == "torchvision":
            return count, 1000  # torchvision's classification models are ImageNet-1k's
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(arch)
        classes = getattr(cfg, "num_classes", None) if cfg is not None else None
        return count, int(classes if classes is not None else 1000)
    except Exception:  # an unknown name or an unreadable table: the sentence simply leaves the comparison out
        return None


@functools.lru_cache(maxsize=1)
def _param_counts():
    from engine.models.catalogue import ParamCounts

    return ParamCounts()


def size_sentence(tree: LayerTree, name: str = "", num_classes: int | str | None = None) -> str:
    """'2.2 M parameters with your 2-class head (3.5 M with ImageNet's 1,000-class head)': the model's size here,
    and the size the catalogue shows for it (the model as published, with its original head). Several tasks:
    ``num_classes`` is their words (gui.widgets.task_heads.task_words)."""
    total = tree.total_params
    text = f"{format_count(total)} parameters"
    if isinstance(num_classes, str):  # several tasks (issue #17): one head each, not a head for the combinations
        text += f" with a head for each of your {num_classes}"
    elif num_classes:
        text += f" with your {num_classes:,}-class head"
    published = published_size(name) if name else None
    if published is not None and published[0] != total:
        count, classes = published
        if classes == 1000:
            head = "with ImageNet's 1,000-class head"
        elif classes > 0:
            head = f"with its original {classes:,}-class head"
        else:
            head = "as published, without a head"
        text += f" ({format_count(count)} {head})"
    return text


STAGE_HINT = ("Stages are numbered from the input: the first ones find edges, colours and textures, later ones "
              "combine them into shapes and parts, and the new head chooses between your classes.")
STEM = "stem"  # timm's name for the first layers of a network (engine.models.layers)
PLAIN_SEPARATOR = "  \u00b7  "  # between a row's plain name and the model's own name for it


def plain_stage_names(names: list[str]) -> dict[str, str]:
    """Plain words for each stage, from the input to the head: 'the first layers' for timm's stem, then 'block 1 of
    19' ... 'block 19 of 19' in order, and 'new head for your classes'."""
    blocks = [n for n in names if n not in (HEAD, STEM)]
    plain = {n: f"block {i} of {len(blocks)}" for i, n in enumerate(blocks, start=1)}
    if STEM in names:
        plain[STEM] = "the first layers"
    if HEAD in names:
        plain[HEAD] = "new head for your classes"
    return plain


def plain_group_name(stages: tuple[str, ...], plain: Mapping[str, str]) -> str:
    """'blocks 1\u20134 of 19' for a group of consecutive stages, from their plain names."""
    numbers = [plain[s].split()[1] for s in stages if plain.get(s, "").startswith("block ")]
    if len(numbers) != len(stages) or not numbers:
        return ""
    total = plain[stages[0]].rsplit(" ", 1)[-1]
    return f"blocks {numbers[0]}\u2013{numbers[-1]} of {total}"


# --- the tree model ---------------------------------------------------------------------------------------------


class _Row:
    __slots__ = ("node", "parent", "row", "children")

    def __init__(self, node: LayerNode, parent: "_Row | None", row: int) -> None:
        self.node, self.parent, self.row = node, parent, row
        self.children: list[_Row] | None = None  # None until the row is opened (fetchMore)


class LayerTreeModel(QAbstractItemModel):
    """The model's layer tree with one phase's plan: ``set_plan(stages, bn)`` shows it, the user edits it through
    the Retrain checkboxes and the learning-rate multipliers, and ``edited`` says so (read it back with ``plan()``).

    Children are made only when a row is opened (``canFetchMore``/``fetchMore``), so a network of any size shows
    at once."""

    edited = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._modules: ModuleTree | None = None
        self._roots: list[_Row] = []
        self._stages: dict[str, float] = {}
        self._bn = "frozen"
        self._memory: dict[str, float] = {}  # multipliers of stages untied by hand, restored when ticked again
        self._decay = 0.75
        self._head_label = "head"
        self._plain: dict[str, str] = {}  # each stage's plain name ('block 4 of 19')

    # -- content

    def set_tree(self, modules: ModuleTree | None, head_label: str = "head") -> None:
        self.beginResetModel()
        self._modules = modules
        self._head_label = head_label
        self._plain = plain_stage_names(modules.tree.names) if modules else {}
        self._roots = [_Row(n, None, i) for i, n in enumerate(modules.roots())] if modules else []
        self._memory.clear()
        self.endResetModel()

    @property
    def tree(self) -> LayerTree | None:
        return self._modules.tree if self._modules else None

    def set_plan(self, stages: Mapping[str, float], bn: str) -> None:
        self._stages, self._bn = dict(stages), bn
        self._refresh()

    def set_layer_decay(self, decay: float) -> None:
        self._decay = decay

    def plan(self) -> tuple[dict[str, float], str]:
        return dict(self._stages), self._bn

    # -- structure

    def index(self, row: int, column: int, parent: QModelIndex = QModelIndex()) -> QModelIndex:
        rows = self._rows_of(parent)
        if rows is None or not (0 <= row < len(rows)) or not (0 <= column < len(COLUMNS)):
            return QModelIndex()
        return self.createIndex(row, column, rows[row])

    def parent(self, index: QModelIndex | None = None):  # noqa: A003 - Qt's name
        if index is None:
            return super().parent()
        if not index.isValid():
            return QModelIndex()
        row: _Row = index.internalPointer()
        if row.parent is None:
            return QModelIndex()
        return self.createIndex(row.parent.row, 0, row.parent)

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:
        if parent.isValid() and parent.column() != 0:
            return 0
        rows = self._rows_of(parent)
        return len(rows) if rows else 0

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return len(COLUMNS)

    def hasChildren(self, parent: QModelIndex = QModelIndex()) -> bool:
        if not parent.isValid():
            return bool(self._roots)
        row: _Row = parent.internalPointer()
        return parent.column() == 0 and row.node.has_children

    def canFetchMore(self, parent: QModelIndex) -> bool:
        if not parent.isValid():
            return False
        row: _Row = parent.internalPointer()
        return row.children is None and row.node.has_children

    def fetchMore(self, parent: QModelIndex) -> None:
        if not self.canFetchMore(parent) or self._modules is None:
            return
        row: _Row = parent.internalPointer()
        nodes = self._modules.children(row.node)
        if not nodes:
            row.children = []
            return
        self.beginInsertRows(parent, 0, len(nodes) - 1)
        row.children = [_Row(n, row, i) for i, n in enumerate(nodes)]
        self.endInsertRows()

    def _rows_of(self, parent: QModelIndex) -> list[_Row] | None:
        if not parent.isValid():
            return self._roots
        return parent.internalPointer().children

    def find(self, key: str, parent: QModelIndex = QModelIndex()) -> QModelIndex:
        """The index of the loaded row with this key (stage rows are 'stage:<name>'), searching opened rows."""
        for r in range(self.rowCount(parent)):
            index = self.index(r, 0, parent)
            if index.internalPointer().node.key == key:
                return index
            found = self.find(key, index)
            if found.isValid():
                return found
        return QModelIndex()

    # -- plan state of a row

    def _trained(self, node: LayerNode) -> bool | None:
        """True/False, or None for a group with some of its stages trained."""
        inside = [s in self._stages for s in node.stages]
        return True if all(inside) else False if not any(inside) else None

    def _multipliers(self, node: LayerNode) -> list[float]:
        return [self._stages[s] for s in node.stages if s in self._stages]

    # -- data

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        node: LayerNode = index.internalPointer().node
        column = index.column()
        trained = self._trained(node)
        if role == KEY_ROLE:
            return node.key
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(node, column, trained)
        if role == Qt.ItemDataRole.EditRole and column == LR:
            values = self._multipliers(node)
            return values[0] if values else 1.0
        if role == Qt.ItemDataRole.CheckStateRole and column == RETRAIN:
            return (Qt.CheckState.Checked if trained else Qt.CheckState.Unchecked if trained is False
                    else Qt.CheckState.PartiallyChecked)
        if role == Qt.ItemDataRole.DecorationRole and column == NAME:
            return TRAIN_COLOUR if trained is not False else FROZEN_COLOUR
        if role == Qt.ItemDataRole.TextAlignmentRole and column in (PARAMS, LR):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole and column in (LR, BN) and (
                trained is False or node.kind in ("module", "parameter")):
            return QColor(QPalette().color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text))
        if role == Qt.ItemDataRole.FontRole and node.kind in ("group", "stage"):
            font = QFont()
            font.setBold(node.kind == "group" or trained is True)
            return font
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(node, column, trained)
        return None

    def plain_name(self, node: LayerNode) -> str:
        """A stage's or group's name in plain words ('block 4 of 19', 'new head for your classes'); '' for rows
        inside a stage."""
        if node.kind == "stage":
            return self._plain.get(node.stage, "")
        if node.kind == "group":
            return plain_group_name(node.stages, self._plain)
        return ""

    def _display(self, node: LayerNode, column: int, trained: bool | None):
        if column == NAME:
            technical = self._head_label if node.kind == "stage" and node.stage == HEAD else node.name
            plain = self.plain_name(node)
            # Plain words first, the model's own name second (the one the command line and config files use).
            return f"{plain}{PLAIN_SEPARATOR}{technical}" if plain and plain != technical else technical
        if column == TYPE:
            return node.type
        if column == PARAMS:
            return format_count(node.params)
        if column == RETRAIN:
            return "Retrain" if trained else "Keep as is" if trained is False else "Some"
        if column == LR:
            values = self._multipliers(node)
            if not values:
                return "\u2014"
            low, high = min(values), max(values)
            return format_multiplier(low) if math.isclose(low, high) else \
                f"{format_multiplier(low)}\u2013{format_multiplier(high)}"
        if column == BN:
            if not node.batchnorms:
                return ""
            if trained is None:
                return "kept or updated" if self._bn == "train" else "kept"
            return "updated" if trained and self._bn == "train" else "kept"
        return None

    def _tooltip(self, node: LayerNode, column: int, trained: bool | None) -> str:
        where = {"group": plural(len(node.stages), "stage"), "stage": f"stage '{node.stage}'",
                 "module": f"{node.key}, in stage '{node.stage}'",
                 "parameter": f"the tensor {node.key}, in stage '{node.stage}'"}[node.kind]
        if column == RETRAIN:
            if node.kind == "group":
                return (f"Ticks or clears all {plural(len(node.stages), 'stage')} of this group. Retrain: their "
                        "weights "
                        "change during training; Keep as is: they stay as pretrained (frozen).")
            if node.kind == "stage":
                return ("Retrain: this stage's weights change during training (trainable). Keep as is: they stay "
                        "exactly as pretrained (frozen). Freeze more with few pictures, retrain more with many.")
            return (f"Retraining is chosen per stage: this row follows stage '{node.stage}', and ticking or "
                    "clearing it ticks or clears the whole stage.")
        if column == LR:
            if node.kind in ("module", "parameter"):
                return f"Set on stage '{node.stage}': every layer of a stage learns at the same rate."
            return ("How fast this part learns, as a multiple of the phase's learning rate (the head usually 1). "
                    "Smaller values change pretrained layers more gently. A stage ticked by hand starts at the "
                    "layer-wise decay of its depth, as in deep fine-tuning.")
        if column == BN:
            if not node.batchnorms:
                return "No BatchNorm layers here."
            return (f"{node.batchnorms} BatchNorm layer{'s' if node.batchnorms > 1 else ''}. Kept: they use the "
                    "statistics learnt in pretraining (always so in frozen stages). Updated: they adapt to your "
                    "pictures while the stage retrains; choose this under the phase list.")
        if node.kind in ("stage", "group") and self.plain_name(node):
            name = self._head_label if node.kind == "stage" and node.stage == HEAD else node.name
            return (f"{self.plain_name(node)} ({name} in the model): {node.params:,} parameters ({where}). "
                    + STAGE_HINT)
        return f"{node.name}: {node.type}, {node.params:,} parameters ({where})."

    def flags(self, index: QModelIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        node: LayerNode = index.internalPointer().node
        if index.column() == RETRAIN:
            flags |= Qt.ItemFlag.ItemIsUserCheckable
        if index.column() == LR and node.kind in ("group", "stage") and self._trained(node) is not False:
            flags |= Qt.ItemFlag.ItemIsEditable
        return flags

    def setData(self, index: QModelIndex, value, role: int = Qt.ItemDataRole.EditRole) -> bool:
        if not index.isValid() or self.tree is None:
            return False
        node: LayerNode = index.internalPointer().node
        if role == Qt.ItemDataRole.CheckStateRole and index.column() == RETRAIN:
            state = Qt.CheckState(value) if not isinstance(value, Qt.CheckState) else value
            self.set_trained(node.stages, state != Qt.CheckState.Unchecked)
            return True
        if role == Qt.ItemDataRole.EditRole and index.column() == LR:
            try:
                multiplier = float(value)
            except (TypeError, ValueError):
                return False
            if not multiplier > 0 or not math.isfinite(multiplier):
                return False
            trained = [s for s in node.stages if s in self._stages]
            if not trained:
                return False
            for stage in trained:
                self._stages[stage] = multiplier
            self._refresh()
            self.edited.emit()
            return True
        return False

    def set_trained(self, stages, trained: bool) -> None:
        """Retrain (or keep as is) these stages, as a click on their checkbox does."""
        tree = self.tree
        changed = False
        for stage in stages:
            if trained and stage not in self._stages:
                self._stages[stage] = self._memory.get(stage, self._default_multiplier(stage, tree))
                changed = True
            elif not trained and stage in self._stages:
                self._memory[stage] = self._stages.pop(stage)
                changed = True
        if changed:
            # Keep the engine's order (input first, head last), as the presets write it.
            self._stages = {n: self._stages[n] for n in tree.names if n in self._stages}
            self._refresh()
            self.edited.emit()

    def _default_multiplier(self, stage: str, tree: LayerTree) -> float:
        """A stage ticked by hand learns at the layer-wise decay of its depth: layer_decay ** (stages from the
        head), the rule of deep fine-tuning (engine.train.strategies.decayed)."""
        depth = len(tree.names) - 1 - tree.names.index(stage)
        return round(self._decay ** depth, 6)

    def _refresh(self) -> None:
        """Tell the views that every loaded row's plan columns may have changed (one signal per opened level)."""
        def walk(parent: QModelIndex, rows: list[_Row] | None) -> None:
            if not rows:
                return
            self.dataChanged.emit(self.index(0, NAME, parent), self.index(len(rows) - 1, BN, parent))
            for row in rows:
                if row.children:
                    walk(self.createIndex(row.row, 0, row), row.children)

        walk(QModelIndex(), self._roots)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            return ("", "The kind of layer.", "How many numbers (weights) this part holds.",
                    "Retrain (trainable) or keep as is (frozen).",
                    "Learning-rate multiplier: how fast this part learns relative to the phase's rate.",
                    "What happens to the BatchNorm layers' statistics in this part.")[section]
        return None


class _NumberDelegate(QStyledItemDelegate):
    """A spin box editor with the range and decimals a value needs (Qt's default shows 2 decimals, too few for
    multipliers such as 0.0563 or learning rates such as 0.0003)."""

    def __init__(self, parent, low: float, high: float, decimals: int | None = None, step: float = 1) -> None:
        super().__init__(parent)
        self.low, self.high, self.decimals, self.step = low, high, decimals, step

    def createEditor(self, parent, option, index):
        if self.decimals is None:
            editor = QSpinBox(parent)
            editor.setRange(int(self.low), int(self.high))
        else:
            editor = QDoubleSpinBox(parent)
            editor.setDecimals(self.decimals)
            editor.setRange(self.low, self.high)
            editor.setSingleStep(self.step)
        return editor


# --- the depth strip --------------------------------------------------------------------------------------------


class DepthStrip(QWidget):
    """The stages from the input (left) to the head (right), orange where they retrain (stronger for a higher
    learning rate), blue where they are kept as they are."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._segments: list[tuple[str, int, float | None]] = []  # name, parameters, multiplier (None: frozen)
        self.setMinimumHeight(34)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMouseTracking(True)

    def set_segments(self, segments: list[tuple[str, int, float | None]]) -> None:
        self._segments = segments
        self.update()

    def segments(self) -> list[tuple[str, int, float | None]]:
        return list(self._segments)

    def sizeHint(self) -> QSize:
        return QSize(400, 34)

    def _bar(self) -> QRectF:
        return QRectF(0.5, 0.5, self.width() - 1.0, 18.0)

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        bar = self._bar()
        n = len(self._segments)
        if n:
            width = bar.width() / n
            strongest = max((m for _, _, m in self._segments if m is not None), default=1.0) or 1.0
            for i, (_, _, multiplier) in enumerate(self._segments):
                rect = QRectF(bar.left() + i * width, bar.top(), width, bar.height())
                if multiplier is None:
                    painter.fillRect(rect, FROZEN_COLOUR)
                else:
                    colour = QColor(TRAIN_COLOUR)
                    colour.setAlphaF(0.45 + 0.55 * min(1.0, multiplier / strongest))
                    painter.fillRect(rect, self.palette().color(QPalette.ColorRole.Base))
                    painter.fillRect(rect, colour)
            separator = QPen(self.palette().color(QPalette.ColorRole.Base))
            separator.setWidthF(1.0)
            painter.setPen(separator)
            if width >= 4:
                for i in range(1, n):
                    x = bar.left() + i * width
                    painter.drawLine(int(x), int(bar.top()), int(x), int(bar.bottom()))
        painter.setPen(self.palette().color(QPalette.ColorRole.Mid))
        painter.drawRect(bar)
        painter.setPen(self.palette().color(QPalette.ColorRole.PlaceholderText))
        font = painter.font()
        font.setPointSizeF(font.pointSizeF() * 0.85)
        painter.setFont(font)
        text_rect = QRectF(0, bar.bottom() + 1, self.width(), self.height() - bar.bottom() - 1)
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, "input")
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignVCenter,
                         "depth of the network \u2192")
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, "head")
        painter.end()

    def event(self, event) -> bool:
        if event.type() == QEvent.Type.ToolTip and self._segments:
            bar = self._bar()
            i = int((event.position().x() - bar.left()) / max(bar.width() / len(self._segments), 1e-9))
            if 0 <= i < len(self._segments):
                name, params, multiplier = self._segments[i]
                state = "kept as is (frozen)" if multiplier is None else \
                    f"retrained at {format_multiplier(multiplier)}\u00d7 the learning rate"
                QToolTip.showText(event.globalPosition().toPoint(), f"{name}: {format_count(params)} parameters, "
                                  f"{state}", self)
                return True
        return super().event(event)


# --- the editor -------------------------------------------------------------------------------------------------


class LayerEditor(QWidget):
    """The layer-tree freeze editor.

    - ``set_config(config)``: the run's settings (epochs, learning rate, layer decay) and its saved plan
      (``strategy``, and ``phases`` for a custom plan). Call it again whenever those settings change.
    - ``set_model(tree, modules, title="", name=..., num_classes=...)`` with an ``engine.models.layers.LayerTree``
      and ``ModuleTree`` built off the GUI thread (the catalogue name and the number of classes let the title compare
      the size with the catalogue's); or ``open_model(name, weights, num_classes)``, which builds them on a
      background thread while the editor shows progress; or ``set_build_result(result)`` with a
      ``gui.support.model_builder.BuildResult``.
      The build is a job of ``jobs`` (the window's job service), or of a service of the editor's own.
    - ``planChanged(phases, strategy)`` after every change; ``phases()``, ``strategy()``, ``problem()`` (a
      sentence when the plan cannot train, else None) and ``apply_to(config) -> RunConfig``.
    """

    planChanged = Signal(tuple, str)

    def __init__(self, parent=None, jobs=None) -> None:
        super().__init__(parent)
        self._jobs = jobs  # a gui.support.jobs.Jobs, or None
        self._config = RunConfig()
        self._tree: LayerTree | None = None
        self._modules: ModuleTree | None = None
        self._strategy = self._config.strategy
        self._phases: list[Phase] = []
        self._current = 0
        self._saved: tuple[Phase, ...] = ()  # phases from set_config, not yet checked against a model
        self._announced: tuple = ((), "")  # the plan last sent with planChanged
        self._builder = None
        self._updating = False

        self.stack = QStackedWidget(self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.stack)

        # Empty and busy states
        self.empty_label = QLabel("Choose a model in the Model step first: its layers appear here.")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)
        self.stack.addWidget(self.empty_label)
        busy = QWidget()
        busy_layout = QVBoxLayout(busy)
        busy_layout.addStretch()
        self.busy_label = QLabel("Building the model ...")
        self.busy_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.busy_label.setWordWrap(True)
        self.busy_bar = QProgressBar()
        self.busy_bar.setRange(0, 0)
        self.busy_bar.setMaximumWidth(360)
        busy_layout.addWidget(self.busy_label)
        busy_layout.addWidget(self.busy_bar, 0, Qt.AlignmentFlag.AlignHCenter)
        busy_layout.addStretch()
        self.stack.addWidget(busy)

        # The editor proper
        page = QWidget()
        self.stack.addWidget(page)
        outer = QVBoxLayout(page)
        self.title_label = QLabel()
        self.title_label.setWordWrap(True)
        outer.addWidget(self.title_label)

        presets = QGridLayout()
        presets.setHorizontalSpacing(10)
        presets.setVerticalSpacing(2)
        self.preset_group = QButtonGroup(self)
        self.preset_group.setExclusive(True)
        self.preset_buttons: dict[str, QPushButton] = {}
        for column, (strategy, label, when) in enumerate(PRESETS):
            button = QPushButton(label)
            button.setCheckable(True)
            button.setToolTip(when)
            button.clicked.connect(lambda _=False, s=strategy: self.apply_preset(s))
            self.preset_group.addButton(button)
            self.preset_buttons[strategy] = button
            caption = QLabel(when)
            caption.setWordWrap(True)
            caption.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
            caption.setForegroundRole(QPalette.ColorRole.PlaceholderText)
            small = caption.font()
            small.setPointSizeF(small.pointSizeF() * 0.9)
            caption.setFont(small)
            presets.addWidget(button, 0, column)
            presets.addWidget(caption, 1, column)
            presets.setColumnStretch(column, 1)
        outer.addLayout(presets)
        self.custom_label = QLabel()
        self.custom_label.setWordWrap(True)
        outer.addWidget(self.custom_label)
        from gui.widgets.lora_controls import LoraControls  # the lora preset's rank and alpha (issue #17)

        self.lora_controls = LoraControls()
        self.lora_controls.changed.connect(self._lora_edited)
        self.lora_controls.hide()
        outer.addWidget(self.lora_controls)

        self.model = LayerTreeModel(self)
        self.model.edited.connect(self._tree_edited)
        self.view = QTreeView()
        self.view.setModel(self.model)
        self.view.setUniformRowHeights(True)
        self.view.setAlternatingRowColors(True)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked
                                  | QAbstractItemView.EditTrigger.EditKeyPressed
                                  | QAbstractItemView.EditTrigger.SelectedClicked)
        self.view.setItemDelegateForColumn(LR, _NumberDelegate(self.view, 0.0001, 100.0, decimals=4, step=0.05))
        header = self.view.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(NAME, QHeaderView.ResizeMode.Stretch)
        for column, width in ((TYPE, 130), (PARAMS, 90), (RETRAIN, 110), (LR, 120), (BN, 150)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(column, width)

        self.strip = DepthStrip()
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        legend = QLabel(f"<span style='color:{TRAIN_COLOUR.name()}'>\u25a0</span> Retrain &nbsp; "
                        f"<span style='color:{FROZEN_COLOUR.name()}'>\u25a0</span> Keep as is (frozen)")
        self.warning_label = QLabel()
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet("color: #D55E00;")  # Okabe-Ito vermillion

        tree_box = QWidget()
        tree_layout = QVBoxLayout(tree_box)
        tree_layout.setContentsMargins(0, 0, 0, 0)
        tree_layout.addWidget(self.view, 1)
        tree_layout.addWidget(self.strip)
        summary_row = QHBoxLayout()
        summary_row.addWidget(self.summary_label, 1)
        summary_row.addWidget(legend)
        tree_layout.addLayout(summary_row)
        tree_layout.addWidget(self.warning_label)
        from gui.widgets.advice import StageAdvice

        self.advice = StageAdvice(self, jobs=jobs)  # per-stage scores and the suggested freeze point (issue 13)
        self.advice.applyFreeze.connect(self.retrain_after)
        tree_layout.addWidget(self.advice)

        phase_box = QWidget()
        phase_layout = QVBoxLayout(phase_box)
        phase_layout.setContentsMargins(0, 0, 0, 0)
        phase_head = QHBoxLayout()
        phase_title = QLabel("<b>Phases</b> \u2014 training runs them in order; select one to see and edit its plan")
        phase_head.addWidget(phase_title, 1)
        self.add_phase_button = QPushButton("Add phase")
        self.add_phase_button.setToolTip("Add a phase after the selected one, starting from its plan "
                                         "(the plan becomes custom).")
        self.add_phase_button.clicked.connect(self.add_phase)
        self.remove_phase_button = QPushButton("Remove phase")
        self.remove_phase_button.setToolTip("Remove the selected phase (the plan becomes custom).")
        self.remove_phase_button.clicked.connect(self.remove_phase)
        phase_head.addWidget(self.add_phase_button)
        phase_head.addWidget(self.remove_phase_button)
        phase_layout.addLayout(phase_head)
        self.phase_table = QTableWidget(0, 5)
        self.phase_table.setHorizontalHeaderLabels(["Phase", "Epochs", "Learning rate", "Retrains", "BatchNorm"])
        self.phase_table.verticalHeader().setVisible(False)
        self.phase_table.verticalHeader().setDefaultSectionSize(self.phase_table.fontMetrics().height() + 8)
        self.phase_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.phase_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.phase_table.setItemDelegateForColumn(1, _NumberDelegate(self.phase_table, 1, 10000))
        self.phase_table.setItemDelegateForColumn(2, _NumberDelegate(self.phase_table, 1e-6, 10.0, decimals=6,
                                                                     step=0.0001))
        phase_header = self.phase_table.horizontalHeader()
        phase_header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        for column, width in ((0, 150), (1, 70), (2, 110), (4, 170)):
            phase_header.resizeSection(column, width)
        self.phase_table.itemSelectionChanged.connect(self._phase_selected)
        self.phase_table.itemChanged.connect(self._phase_item_changed)
        phase_layout.addWidget(self.phase_table, 1)
        bn_row = QHBoxLayout()
        bn_row.addWidget(QLabel("BatchNorm statistics in the stages this phase retrains:"))
        self.bn_combo = QComboBox()
        for value, text in BN_CHOICES:
            self.bn_combo.addItem(text, value)
        self.bn_combo.setToolTip("Keep: BatchNorm layers use the statistics learnt in pretraining (steadier with "
                                 "few pictures). Update: they adapt to your pictures while their stage retrains. "
                                 "Frozen stages always keep theirs.")
        self.bn_combo.currentIndexChanged.connect(self._bn_changed)
        bn_row.addWidget(self.bn_combo)
        bn_row.addStretch()
        phase_layout.addLayout(bn_row)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(tree_box)
        splitter.addWidget(phase_box)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        splitter.setChildrenCollapsible(False)
        splitter.setSizes([460, 210])
        self.splitter = splitter
        outer.addWidget(splitter, 1)

    # -- public API

    def set_config(self, config: RunConfig) -> None:
        """Take the run's settings and its saved plan; a preset is resolved again for the new settings."""
        self._config = config
        self.lora_controls.set_settings(config.lora)
        self.advice.set_target(config.data.source, config.model.name, config.model.weights)
        self.model.set_layer_decay(config.train.layer_decay)
        self._strategy = config.strategy if config.strategy in PRESET_NAMES else CUSTOM
        self._saved = tuple(config.phases)  # adopted by _replan once the model's stages are known
        self._phases = []
        self._replan(announce=False)  # the selected phase stays selected when the plan comes back unchanged

    def set_model(self, tree: LayerTree, modules: ModuleTree, title: str = "", *, name: str = "",
                  num_classes: int | None = None) -> None:
        """Show this model's layers; the plan is kept when it fits the new model (same stages). With the catalogue
        ``name`` and ``num_classes``, the title also gives the size of the model as published (with its original
        head), which is what the Model step's catalogue shows."""
        self._tree, self._modules = tree, modules
        self.model.set_tree(modules, head_label=tree.head_module)
        size = html.escape(size_sentence(tree, name, num_classes), quote=False)
        self.title_label.setText(
            f"<b>{html.escape(title or 'Layers')}</b> \u2014 {size}, in {plural(len(tree.names), 'stage')} from the "
            "input to the new head. Tick what to retrain; open a row to look inside.")
        self.stack.setCurrentIndex(2)
        self._replan(announce=False)

    def set_build_result(self, result) -> None:
        from engine.train.lora import adapter_sizes  # what each LoRA rank costs, stage by stage
        from gui.widgets.task_heads import with_task_heads  # several tasks: one head each (issue #17)

        from gui.widgets.task_heads import task_words

        result = with_task_heads(result, self._config)
        self.lora_controls.set_sizes(adapter_sizes(result.built.model, result.tree), result.tree.stage(HEAD).params)
        self.set_model(result.tree, result.modules, result.name.split(":", 1)[-1], name=result.name,
                       num_classes=task_words(self._config) or result.num_classes)

    def open_model(self, name: str, weights: str, num_classes: int) -> None:
        """Build ``name`` on a background thread (the window stays responsive), then show its layers."""
        from gui.support.model_builder import ModelBuilder

        if self._builder is None:
            self._builder = ModelBuilder(self, jobs=self._jobs)
            self._builder.progress.connect(self._build_progress)
            self._builder.built.connect(self.set_build_result)
            self._builder.failed.connect(self._build_failed)
        self.busy_label.setText(f"Building {name.split(':', 1)[-1]} ...")
        self.busy_bar.setRange(0, 0)
        self.stack.setCurrentIndex(1)
        self._builder.build(name, weights, num_classes)

    @property
    def builder(self):
        return self._builder

    def phases(self) -> tuple[Phase, ...]:
        return tuple(self._phases)

    def strategy(self) -> str:
        return self._strategy

    def current_phase(self) -> int:
        return self._current

    def apply_to(self, config: RunConfig) -> RunConfig:
        """``config`` with this plan: a preset by name (the engine resolves it from the config's epochs and
        learning rate, exactly as shown here after ``set_config``), a custom plan as its phases."""
        if self._strategy == CUSTOM:
            return dataclasses.replace(config, strategy=CUSTOM, phases=tuple(self._phases))
        if self._strategy == "lora":  # with its rank, alpha and stages
            return dataclasses.replace(config, strategy="lora", phases=(), lora=self._config.lora)
        return dataclasses.replace(config, strategy=self._strategy, phases=())

    def problem(self) -> str | None:
        """A sentence when the plan cannot train as it is, else None."""
        for phase in self._phases:
            if not phase.stages:
                return f"Phase '{phase.name}' retrains nothing: tick at least the head."
        return None

    def apply_preset(self, strategy: str) -> None:
        self._strategy, self._phases, self._saved = strategy, [], ()
        self._current = 0
        self._replan()

    def retrain_after(self, stage: str) -> None:
        """The advice's one click: the current phase keeps the stages up to ``stage`` as they are and retrains the
        ones after it and the head (a custom plan)."""
        if self._tree is None or stage not in self._tree.names:
            return
        names = self._tree.names
        cut = names.index(stage) + 1
        if names[cut:] == [HEAD]:  # keep the whole body: that is the feature-extraction preset
            self.apply_preset("feature-extraction")
            return
        self.model.set_trained(names[cut:], True)
        self.model.set_trained(names[:cut], False)

    def select_phase(self, index: int) -> None:
        self.phase_table.selectRow(index)

    def add_phase(self) -> None:
        if not self._phases:
            return
        base = self._phases[self._current]
        new = dataclasses.replace(base, name=f"phase {len(self._phases) + 1}", stages=dict(base.stages))
        self._phases.insert(self._current + 1, new)
        self._current += 1
        self._became_custom()

    def remove_phase(self) -> None:
        if len(self._phases) <= 1:
            return
        del self._phases[self._current]
        self._current = min(self._current, len(self._phases) - 1)
        self._became_custom()

    # -- internals

    def _resolve(self, strategy: str) -> tuple[Phase, ...]:
        return resolve_phases(dataclasses.replace(self._config, strategy=strategy, phases=()), self._tree)

    def _replan(self, announce: bool = True) -> None:
        """Resolve a preset (or check a custom plan) against the model, then show it. ``planChanged`` follows a
        user's action always, and a new config or model only when the plan differs (so that a window that writes
        the plan into its config and hands the config back does not go round in circles)."""
        if self._tree is None:
            self._show()
            return
        notice = ""
        saved, self._saved = self._saved, ()
        if self._strategy != CUSTOM:
            resolved = self._resolve(self._strategy)
            # A run folder's config names its preset and also lists the phases it resolved to: phases that
            # differ from what the preset gives now were edited, and are kept as a custom plan.
            if saved and saved != resolved:
                self._strategy, self._phases = CUSTOM, list(saved)
            else:
                self._phases = list(resolved)
        elif saved:
            self._phases = list(saved)
        if self._strategy == CUSTOM:
            try:
                for phase in self._phases:
                    check_phase(phase, self._tree)
            except ConfigError as exc:  # the custom plan was made for another model
                notice = f"{exc} The plan was reset to feature extraction."
                self._strategy, self._phases = "feature-extraction", list(self._resolve("feature-extraction"))
            if not self._phases:
                self._strategy, self._phases = "feature-extraction", list(self._resolve("feature-extraction"))
        self._current = min(self._current, len(self._phases) - 1)
        self._show(notice)
        self._announce(always=announce)

    def _became_custom(self) -> None:
        self._strategy = CUSTOM
        self._show()
        self._announce(always=True)

    def _announce(self, always: bool) -> None:
        plan = (tuple(self._phases), self._strategy)
        if always or plan != self._announced:
            self._announced = plan
            self.planChanged.emit(*plan)

    def _show(self, notice: str = "") -> None:
        self._updating = True
        try:
            # Presets: the pressed button, or none for a custom plan
            self.preset_group.setExclusive(False)
            for strategy, button in self.preset_buttons.items():
                button.setChecked(strategy == self._strategy)
                font = button.font()
                font.setBold(strategy == self._strategy)
                button.setFont(font)
            self.preset_group.setExclusive(True)
            if self._strategy == CUSTOM:
                self.custom_label.setText("<b>Custom plan</b> \u2014 edited by hand. Choose a preset to start again "
                                          "from it.")
            else:
                self.custom_label.setText(f"Preset: <b>{PRESET_NAMES[self._strategy]}</b>. "
                                          "Any change below turns it into a custom plan.")
            if notice:
                self.custom_label.setText(self.custom_label.text() + "<br><span style='color:#D55E00'>"
                                          f"{html.escape(notice)}</span>")
            if self._tree is None:
                return
            phase = self._phases[self._current]
            self.lora_controls.setVisible(self._strategy == "lora")
            self.lora_controls.set_stages([st for st in phase.stages if st != HEAD])
            self.model.set_plan(phase.stages, phase.bn)
            self._fill_phase_table()
            self.bn_combo.setCurrentIndex(0 if phase.bn == "frozen" else 1)
            self.remove_phase_button.setEnabled(len(self._phases) > 1)
            self._show_summary(phase)
        finally:
            self._updating = False

    def _fill_phase_table(self) -> None:
        table = self.phase_table
        table.blockSignals(True)
        table.setRowCount(len(self._phases))
        for row, phase in enumerate(self._phases):
            values = (phase.name, phase.epochs, phase.lr, stage_list(phase.stages, self._tree),
                      "updated" if phase.bn == "train" else "kept")
            for column, value in enumerate(values):
                item = QTableWidgetItem()
                item.setData(Qt.ItemDataRole.EditRole, value)
                editable = column in (0, 1, 2)
                flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
                item.setFlags(flags | Qt.ItemFlag.ItemIsEditable if editable else flags)
                item.setToolTip({0: "The phase's name (double-click to edit).",
                                 1: "How many passes over your pictures this phase trains (double-click to edit).",
                                 2: "The phase's learning rate; each stage learns at this times its multiplier.",
                                 3: "The stages this phase retrains.",
                                 4: "BatchNorm statistics in the retrained stages."}[column])
                table.setItem(row, column, item)
        table.selectRow(self._current)
        table.blockSignals(False)

    def _show_summary(self, phase: Phase) -> None:
        tree = self._tree
        trained = sum(tree.stage(s).params for s in phase.stages)
        if self._strategy == "lora" and self.lora_controls.trainable() is not None:  # adapters, not whole stages
            trained = self.lora_controls.trainable()
        total = tree.total_params
        prefix = ""
        if len(self._phases) > 1:
            prefix = (f"Phase {self._current + 1} of {len(self._phases)} ({phase.name}, {phase.epochs} "
                      f"epoch{'s' if phase.epochs != 1 else ''}): ")
        self.summary_label.setText(html.escape(prefix) + f"<b>{format_count(trained)} of {format_count(total)} "
                                   f"parameters will train ({html.escape(format_share(trained, total))})</b>")
        plain = plain_stage_names(tree.names)
        self.strip.set_segments([(f"{plain[s.name]} ({s.name})" if s.name in plain else s.name, s.params,
                                  phase.stages.get(s.name)) for s in tree.stages])
        warnings = []
        problem = self.problem()
        if problem:
            warnings.append(problem)
        elif HEAD not in phase.stages:
            warnings.append(f"Phase '{phase.name}' keeps the new head as is: it starts from random weights, so it "
                            "should normally be retrained.")
        self.warning_label.setText(" ".join(warnings))
        self.warning_label.setVisible(bool(warnings))

    def _tree_edited(self) -> None:
        if self._updating or not self._phases:
            return
        stages, bn = self.model.plan()
        if self._strategy == "lora":  # a tick says which stages get adapters; no adapter at all: feature extraction
            body = tuple(s for s in stages if s != HEAD)
            if not body:
                self.apply_preset("feature-extraction")
                return
            self._lora_edited(dataclasses.replace(self._config.lora, stages=body))
            return
        self._phases[self._current] = dataclasses.replace(self._phases[self._current], stages=stages, bn=bn)
        self._became_custom()

    def _lora_edited(self, settings) -> None:
        self._config = dataclasses.replace(self._config, lora=settings)
        self.lora_controls.set_settings(settings)
        if self._strategy == "lora":
            self._replan()

    def _bn_changed(self, index: int) -> None:
        if self._updating or not self._phases:
            return
        bn = self.bn_combo.itemData(index)
        if self._phases[self._current].bn != bn:
            self._phases[self._current] = dataclasses.replace(self._phases[self._current], bn=bn)
            self._became_custom()

    def _phase_selected(self) -> None:
        if self._updating:
            return
        rows = {i.row() for i in self.phase_table.selectedIndexes()}
        if rows and min(rows) != self._current:
            self._current = min(rows)
            self._show()

    def _phase_item_changed(self, item: QTableWidgetItem) -> None:
        if self._updating:
            return
        row, column = item.row(), item.column()
        phase = self._phases[row]
        value = item.data(Qt.ItemDataRole.EditRole)
        try:
            if column == 0:
                changed = dataclasses.replace(phase, name=str(value).strip() or phase.name)
            elif column == 1:
                changed = dataclasses.replace(phase, epochs=max(1, int(value)))
            elif column == 2:
                lr = float(value)
                changed = dataclasses.replace(phase, lr=lr) if lr > 0 and math.isfinite(lr) else phase
            else:
                return
        except (TypeError, ValueError):
            changed = phase
        if changed != phase:
            self._phases[row] = changed
            self._current = row
            self._became_custom()
        else:
            self._show()

    def _build_progress(self, text: str, done: int, total: int) -> None:
        self.busy_label.setText(text)
        if total:
            self.busy_bar.setRange(0, 1000)
            self.busy_bar.setValue(int(1000 * done / total))
        else:
            self.busy_bar.setRange(0, 0)

    def _build_failed(self, message: str) -> None:
        self.empty_label.setText(message)
        self.stack.setCurrentIndex(0)
