"""The Label step: an active-learning queue, fast labelling, and retraining in seconds (see page.py)."""

from gui.steps.label.page import LabelPage

__all__ = ["LabelPage"]
