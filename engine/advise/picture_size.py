"""Pictures far smaller than the chosen model's input (issue #23 item 7), for the Data step's health report.

engine.data.scan.small_pictures_advice judges the pictures against an input size; this module finds that size for a
model name from the catalogue (timm's pretrained configuration, torchvision's weights' transforms), without building
the model, so that the Data step can say it as soon as the pictures are scanned, before any training. Training says
the same in its log (engine.train.trainer), from the built model.
"""

from __future__ import annotations

from engine.data.scan import Advice, DatasetIndex, small_pictures_advice


def input_side(model: str) -> int | None:
    """The longer side of ``model``'s input ("timm:resnet18" -> 224), or None when the catalogue does not know the
    model or its input size (a model of an imported file, say)."""
    if not model:
        return None
    from engine.models import catalogue

    try:
        size = catalogue.info(model).input_size
    except Exception:  # not in the catalogue (unknown name, a library missing): no advice rather than a wrong one
        return None
    return int(max(size[-2:])) if size else None


def small_pictures_for(index: DatasetIndex | None, model: str) -> Advice | None:
    """The ``small-pictures`` advice for the pictures of ``index`` (its training pictures, else all of them) fed
    to ``model``, or None when they are large enough or the model's input size is unknown. Reads the headers of at
    most a few hundred pictures."""
    side = input_side(model)
    if index is None or side is None:
        return None
    paths = [s.path for s in index.split("train")] or [s.path for s in index.samples]
    return small_pictures_advice(paths, side)
