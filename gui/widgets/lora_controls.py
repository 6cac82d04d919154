"""The Layers step's LoRA settings: rank and strength in plain words, and what they cost before training.

Shown while the "LoRA adapters" preset is chosen; the layer tree's ticks then say which stages get adapters (the head
always trains fully). ``set_sizes(per_rank, head)`` takes engine.train.lora.adapter_sizes (adapter parameters per
unit of rank, stage by stage) and the head's parameters, so the summary can say how many parameters will train.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QDoubleSpinBox, QGridLayout, QLabel, QSpinBox, QWidget

from engine.config import LoraSettings
from gui.widgets.format import format_count


class LoraControls(QWidget):
    """Rank and alpha for the ``lora`` strategy; ``changed(LoraSettings)`` after an edit (stages as given)."""

    changed = Signal(object)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._settings = LoraSettings()
        self._per_rank: dict[str, int] = {}
        self._head = 0
        self._stages: tuple[str, ...] = ()
        self._updating = False
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(8)
        self.rank = QSpinBox()
        self.rank.setRange(1, 256)
        self.rank.setToolTip("LoRA rank: how many independent directions each adapted layer may change in. 8 is a "
                             "good start; raise it (16, 32) when the pictures differ a lot from the model's own, lower "
                             "it (4) to store less. Each step up adds parameters in proportion.")
        self.alpha = QDoubleSpinBox()
        self.alpha.setRange(0.1, 1024.0)
        self.alpha.setDecimals(1)
        self.alpha.setToolTip("LoRA alpha: the adapters' strength; their output is scaled by alpha / rank. Twice the "
                              "rank is the usual choice; a larger value lets the adapters change the model faster "
                              "(like a larger learning rate for them).")
        grid.addWidget(QLabel("Adapter size (rank):"), 0, 0)
        grid.addWidget(self.rank, 0, 1)
        self.rank_hint = QLabel("how many directions each adapted layer may change in (8 is usual)")
        grid.addWidget(self.rank_hint, 0, 2)
        grid.addWidget(QLabel("Strength (alpha):"), 1, 0)
        grid.addWidget(self.alpha, 1, 1)
        grid.addWidget(QLabel("scales the adapters by alpha \u00f7 rank (twice the rank is usual)"), 1, 2)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        grid.addWidget(self.summary, 2, 0, 1, 3)
        grid.setColumnStretch(2, 1)
        self.rank.valueChanged.connect(self._edited)
        self.alpha.valueChanged.connect(self._edited)
        self.set_settings(self._settings)

    def settings(self) -> LoraSettings:
        return self._settings

    def set_settings(self, settings: LoraSettings) -> None:
        self._settings = settings
        self._updating = True
        try:
            self.rank.setValue(settings.rank)
            self.alpha.setValue(settings.alpha)
        finally:
            self._updating = False
        self._update_summary()

    def set_sizes(self, per_rank: dict[str, int], head_params: int) -> None:
        self._per_rank, self._head = dict(per_rank), int(head_params)
        self._update_summary()

    def set_stages(self, stages) -> None:
        """The stages that get adapters (as the plan ticks them)."""
        self._stages = tuple(stages)
        self._update_summary()

    def trainable(self) -> int | None:
        """Adapters and head, or None before the model's sizes are known."""
        if not self._per_rank:
            return None
        return self._settings.rank * sum(self._per_rank.get(s, 0) for s in self._stages) + self._head

    def _edited(self) -> None:
        if self._updating:
            return
        self._settings = LoraSettings(self.rank.value(), float(self.alpha.value()), self._settings.stages)
        self._update_summary()
        self.changed.emit(self._settings)

    def _update_summary(self) -> None:
        count = self.trainable()
        without = [s for s in self._stages if s in self._per_rank and not self._per_rank[s]]
        text = ("Tick the stages that get adapters: their own weights stay as they are, and small adapters (LoRA) "
                "learn beside them; the head trains fully.")
        if count is not None:
            text += (f" <b>{format_count(count)} parameters will train</b> (adapters "
                     f"{format_count(count - self._head)} + head {format_count(self._head)}); the run also saves "
                     "them alone in adapter.safetensors.")
        if without:
            text += (f" <span style='color:#D55E00'>{', '.join(without)} has no layer an adapter can go into "
                     "(only linear layers and convolutions without groups): untick it.</span>")
        self.summary.setText(text)
