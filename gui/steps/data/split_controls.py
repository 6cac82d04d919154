"""How the pictures are divided into training, validation and test: the folders' own split, or a seeded random
split with chosen shares (drawn per class, so each class keeps its proportions)."""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QButtonGroup, QHBoxLayout, QLabel, QRadioButton, QSpinBox, QVBoxLayout, QWidget

from engine.config import DataConfig
from engine.data.scan import DatasetIndex


class SplitControls(QWidget):
    """Emits ``split_changed(val_fraction, test_fraction, seed)`` when the user changes the split; ``mode()`` says
    which: "auto" (the folders' own split when the data has one) or "random"."""

    split_changed = Signal(float, float, int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.use_folders = QRadioButton("Use the folders' own split")
        self.use_folders.setToolTip("Your folder has train and val folders: those pictures are used exactly as you "
                                    "sorted them.")
        self.use_random = QRadioButton("Split at random, class by class")
        self._random_tip = ("Set aside a share of each class's pictures for validation (and test). The same seed "
                            "always gives the same split.")
        self.use_random.setToolTip(self._random_tip)
        group = QButtonGroup(self)
        group.addButton(self.use_folders)
        group.addButton(self.use_random)
        # clicked, not toggled: it comes once the group has settled, and only from the user.
        group.buttonClicked.connect(self._mode_clicked)

        self.val = QSpinBox()
        self.val.setRange(0, 90)
        self.val.setSuffix(" %")
        self.val.setToolTip("Share of each class used to measure accuracy during training (20 % is usual). "
                            "0 % means accuracy cannot be measured.")
        self.test = QSpinBox()
        self.test.setRange(0, 90)
        self.test.setSuffix(" %")
        self.test.setToolTip("Share of each class kept aside for a final check after training (0 % to use more "
                             "pictures for training).")
        self.seed = QSpinBox()
        self.seed.setRange(0, 999_999)
        self.seed.setToolTip("Which random split to draw. Change it to draw another one; keep it to repeat a run "
                             "exactly.")
        self.random_box = QWidget()
        inline = QHBoxLayout(self.random_box)
        inline.setContentsMargins(24, 0, 0, 0)
        for text, box in (("Validation", self.val), ("Test", self.test), ("Seed", self.seed)):
            label = QLabel(text)
            label.setBuddy(box)
            label.setToolTip(box.toolTip())
            inline.addWidget(label)
            inline.addWidget(box)
            inline.addSpacing(8)
        inline.addStretch(1)

        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setEnabled(False)  # greyed: an explanation, not a control

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.use_folders)
        layout.addWidget(self.use_random)
        layout.addWidget(self.random_box)
        layout.addWidget(self.note)

        for box in (self.val, self.test, self.seed):
            box.valueChanged.connect(self._changed)
        self._updating = False
        self.set_state(None, DataConfig())

    def set_state(self, index: DatasetIndex | None, data: DataConfig) -> None:
        """Show the split of ``index`` made with the settings ``data``."""
        self._updating = True
        try:
            own = index is not None and index.own_split
            folders = own and data.split == "auto"
            self.use_folders.setChecked(folders)
            self.use_random.setChecked(not folders)
            self.use_folders.setEnabled(own)
            self.use_random.setEnabled(index is not None)
            self.random_box.setEnabled(index is not None and not folders)
            self.val.setValue(round(data.val_fraction * 100))
            self.test.setValue(round(data.test_fraction * 100))
            self.seed.setValue(data.split_seed)
            if index is None:
                self.note.setText("Open a folder of pictures to choose how it is split.")
            elif folders:
                self.note.setText("The train and val folders decide which pictures are used for what. Choose "
                                  "\u201cSplit at random\u201d to pool all of them and draw the split instead.")
            elif own:
                self.note.setText("All pictures, whatever folder they are in, are pooled and split at random.")
            else:
                self.note.setText("Your folder has no val folder, so Transfer Studio sets pictures aside at random.")
            self.use_folders.setToolTip(
                "Your folder has train and val folders: those pictures are used exactly as you sorted them." if own
                else "Not available: your folder has no train and val folders.")
        finally:
            self._updating = False

    def mode(self) -> str:
        """ "random" when the user chose to split at random although the data has its own split, else "auto"."""
        return "random" if self.use_random.isChecked() and self.use_folders.isEnabled() else "auto"

    def _mode_clicked(self, _button) -> None:
        self.random_box.setEnabled(self.use_random.isChecked())
        self._changed()

    def values(self) -> tuple[float, float, int]:
        return self.val.value() / 100, self.test.value() / 100, self.seed.value()

    def _changed(self) -> None:
        if self._updating:
            return
        val, test, seed = self.values()
        if val + test >= 0.95:  # keep at least some pictures for training
            sender = self.sender()
            other = self.test if sender is self.val else self.val
            self._updating = True
            other.setValue(max(0, 90 - (sender.value() if sender is not None else 0)))
            self._updating = False
            val, test, seed = self.values()
        self.split_changed.emit(val, test, seed)
