"""The training doctor's verdicts after a run: each in plain words, with its evidence and one button that applies the
next step (engine.advise.training_doctor gives them)."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QScrollArea, QVBoxLayout, QWidget

TITLES = {"overfitting": "Over-fitting", "underfitting": "Under-fitting", "not_converged": "Not finished learning",
          "unstable": "Unstable training", "few_pictures": "Too few pictures", "imbalance": "Unbalanced classes",
          "overconfident": "Over-confident", "underconfident": "Under-confident"}
NO_RUN = "After a run, the training doctor says here what its curves and results show, with one next step each."
HEALTHY = "The training doctor found nothing to worry about in this run: its curves and per-class results look sound."


class DoctorPanel(QWidget):
    """``show_verdicts(verdicts, run_name)``; ``actionRequested(action)`` when a verdict's button is pressed."""

    actionRequested = Signal(object)  # the verdict's action dict

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.heading = QLabel(NO_RUN)
        self.heading.setWordWrap(True)
        self.body = QWidget()
        self.rows = QVBoxLayout(self.body)
        self.rows.setContentsMargins(0, 0, 0, 0)
        self.rows.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self.body)
        layout = QVBoxLayout(self)
        layout.addWidget(self.heading)
        layout.addWidget(scroll, 1)
        self.buttons: list[QPushButton] = []

    def clear(self, text: str = NO_RUN) -> None:
        while self.rows.count() > 1:
            item = self.rows.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.buttons = []
        self.heading.setText(text)

    def show_verdicts(self, verdicts, run_name: str = "") -> None:
        self.clear()
        where = f" for {run_name}" if run_name else ""
        if not verdicts:
            self.heading.setText(HEALTHY)
            return
        self.heading.setText(f"The training doctor's advice{where}: {len(verdicts)} "
                             f"{'finding' if len(verdicts) == 1 else 'findings'}, each with a next step.")
        for verdict in verdicts:
            self.rows.insertWidget(self.rows.count() - 1, self._card(verdict))

    def _card(self, verdict) -> QWidget:
        card = QFrame()
        card.setFrameShape(QFrame.Shape.StyledPanel)
        text = QLabel(f"<b>{html.escape(TITLES.get(verdict.kind, verdict.kind))}.</b> {html.escape(verdict.sentence)}"
                      f"<br><span style='color:#555555'><small>Evidence: {html.escape(verdict.evidence)}"
                      "</small></span>")
        text.setWordWrap(True)
        text.setTextFormat(Qt.TextFormat.RichText)
        row = QHBoxLayout(card)
        row.addWidget(text, 1)
        label = verdict.action.get("label")
        if label:
            button = QPushButton(label)
            button.setToolTip("Change the settings of the next run accordingly (the Start button then trains it)."
                              if verdict.action.get("settings") else "Go to that step.")
            button.clicked.connect(lambda _=False, a=dict(verdict.action): self.actionRequested.emit(a))
            row.addWidget(button, 0, Qt.AlignmentFlag.AlignVCenter)
            self.buttons.append(button)
        return card
