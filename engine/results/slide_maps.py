"""The heat map of a whole slide: each tissue tile's probability of the slide's class, on the slide's tile grid
(viridis; background tiles light grey), for the command line's ``predict --heatmaps`` and the Predict step."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data import formats as _formats

__all__ = ["SlideHeatMap", "slide_heat_map"]


@dataclass(frozen=True)
class SlideHeatMap:
    scores: np.ndarray  # rows x columns float32: each tile's probability of ``class_name``; NaN: background
    class_name: str
    class_index: int
    probability: float  # the slide's (mean of its tiles)
    tiles: int

    def picture(self, cell: int = 16):
        """The heat map as a PIL picture (viridis; background tiles light grey)."""
        from engine.data.formats.slide import heat_map_picture

        return heat_map_picture(self.scores, cell)


def slide_heat_map(bundle, slide: str | os.PathLike, class_index: int | None = None) -> SlideHeatMap:
    """The slide's tiles predicted, and each tile's probability of ``class_index`` (default: the slide's answer)
    on the slide's tile grid."""
    from engine.data.formats.slide import score_grid
    from engine.errors import UserError
    from engine.results.predict import infer

    settings = getattr(bundle, "formats", None) or _formats.active()
    parts, reason = _formats.expand(os.fspath(slide), settings)
    if reason is not None or not parts:
        raise UserError(f"{Path(slide).name}: {reason or 'the slide gives no tile with tissue.'}")
    probs, _ = infer(bundle, parts)
    good = np.isfinite(probs).all(axis=1)
    if not good.any():
        raise UserError(f"{Path(slide).name}: no tile of the slide could be read.")
    mean = probs[good].mean(axis=0)
    target = int(np.argmax(mean)) if class_index is None else int(class_index)
    tiles = []
    for part, p, ok in zip(parts, probs, good):
        if ok:
            x, y = (int(v) for v in _formats.split_path(part)[1].removeprefix("tile-").split("-"))
            tiles.append((x, y, float(p[target])))
    scores = score_grid(_formats.real_path(parts[0]), tiles, settings)
    return SlideHeatMap(scores, bundle.classes[target], target, float(mean[target]), int(good.sum()))
