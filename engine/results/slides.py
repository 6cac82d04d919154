"""One answer per whole slide: prediction cuts a slide into the tiles the model was trained on (its data settings:
tile size, magnification, tissue test), predicts every tile, and answers for the slide with the mean of its tiles'
probabilities (engine.results.slide_maps draws the heat map of a slide from its tiles' scores).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from engine.data import formats as _formats

__all__ = ["expand_slides", "is_slide_path", "slide_answers"]


def is_slide_path(path: str | os.PathLike) -> bool:
    """A file that prediction cuts into tiles (a vendor slide, or a pyramidal TIFF)."""
    kind = _formats.kind_of(path)
    if kind == "slide" and _formats.split_path(path)[1] is None:
        return True
    if kind == "tiff":
        from engine.data.formats.slide import is_slide
        from engine.data.formats.tiff import describe_tiff
        from engine.data.images import MAX_PIXELS

        try:
            info = describe_tiff(path)
        except Exception:
            return False
        return (info.levels > 1 or info.pixels > MAX_PIXELS) and is_slide(path, info.pixels, info.levels, MAX_PIXELS)
    return False


def expand_slides(items: list[tuple[str, str | None]], settings) -> list[tuple[str, str | None]]:
    """``items`` (path, error) with each slide replaced by its tissue tiles (or kept, with the reason it gives none)."""
    out: list[tuple[str, str | None]] = []
    for path, error in items:
        if error is None and is_slide_path(path):
            parts, reason = _formats.expand(path, settings)
            if reason is not None or not parts:
                out.append((path, reason or "The slide gives no tile with tissue."))
            else:
                out.extend((part, None) for part in parts)
        else:
            out.append((path, error))
    return out


def slide_answers(rows: list, probs: np.ndarray, paths: Sequence[str], classes: Sequence[str], top_k: int) -> list:
    """The rows with every slide's tile rows replaced by one row for the slide (mean of its tiles' probabilities;
    its true class is its tiles'). ``probs`` are the readable pictures' probabilities, in the order of ``paths``."""
    by_path = {p: probs[i] for i, p in enumerate(paths) if np.isfinite(probs[i]).all()}
    out: list = []
    groups: dict[str, list] = {}
    for row in rows:
        real, part = _formats.split_path(row.path)
        if part is None or not part.startswith("tile-"):
            out.append(row)
            continue
        if real not in groups:
            groups[real] = []
            out.append(real)  # the slide's place: its first tile's
        groups[real].append(row)
    final = []
    for item in out:
        if not isinstance(item, str):
            final.append(item)
            continue
        tiles = groups[item]
        good = [by_path[t.path] for t in tiles if t.error is None and t.path in by_path]
        truth = tiles[0].true_class
        if not good:
            final.append(dataclasses.replace(tiles[0], path=item, error=tiles[0].error or "No tile of the slide "
                                             "could be read.", true_class=truth))
            continue
        mean = np.mean(np.stack(good), axis=0)
        order = np.argsort(-mean, kind="stable")[:min(top_k, len(classes))]
        top = tuple((classes[j], float(mean[j])) for j in order)
        final.append(type(tiles[0])(item, top[0][0], int(order[0]), top[0][1], top, true_class=truth,
                                    **_slide_domain(tiles)))
    return final


def _slide_domain(tiles: list) -> dict:
    """A slide's out-of-distribution fields from its tiles' (engine.shift.ood): the mean score, and in the domain
    when most of its scored tiles are; nothing when the tiles were not scored."""
    scored = [t for t in tiles if t.error is None and getattr(t, "ood_score", None) is not None]
    if not scored:
        return {}
    inside = sum(bool(t.in_domain) for t in scored)
    return {"ood_score": float(np.mean([t.ood_score for t in scored])), "in_domain": inside * 2 > len(scored)}


