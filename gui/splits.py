"""Re-split a scanned dataset with other fractions or another seed, without decoding a single picture again.

The result is exactly what ``engine.data.scan`` gives for the same folder and settings (a test checks it), so what
the browser shows is what training will use. Plain Python (no Qt): it belongs next to ``engine.data.scan`` and can
move there once that module offers a public re-split; until then it uses two of its private helpers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from engine.data import DatasetIndex, Sample, scan, stratified_split
from engine.data import _class_advice as class_advice  # noqa: PLC2701  (see the module docstring)
from engine.data import _count as count_samples  # noqa: PLC2701

# Advice that depends on the split; any other advice (unreadable files, empty classes, ...) is kept as it was.
SPLIT_ADVICE = frozenset({"few-images", "missing-in-train", "imbalance", "no-validation", "missing-in-val"})


def can_resplit(index: DatasetIndex) -> bool:
    """False when the data brings its own validation pictures (the folders' split is always used then)."""
    return index.split_source == "random"


def resplit(index: DatasetIndex, val_fraction: float, test_fraction: float, seed: int) -> DatasetIndex:
    """``index`` with its random split drawn again; an index with the folders' own split is returned unchanged."""
    if not can_resplit(index):
        return index
    if index.layout == "csv":
        # The CSV's own split column cannot be told from the paths: list the file again (reading it, not the
        # pictures) and leave out the pictures the first scan found unreadable.
        listed = scan(index.root, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, verify=False)
        bad = {p.path for p in index.health.unreadable}
        samples = [s for s in listed.samples if s.path not in bad and listed.classes[s.label] in index.classes]
        samples = [Sample(s.path, index.classes.index(listed.classes[s.label]), s.split) for s in samples]
    else:
        samples = _resplit_folders(index, val_fraction, test_fraction, seed)
    advice = [a for a in index.health.advice if a.kind not in SPLIT_ADVICE]
    advice = class_advice(count_samples(samples, index.classes), index.split_source) + advice
    health = dataclasses.replace(index.health, advice=advice)
    return dataclasses.replace(index, samples=samples, health=health)


def _resplit_folders(index: DatasetIndex, val_fraction: float, test_fraction: float, seed: int) -> list[Sample]:
    root = Path(index.root)
    given: list[str | None] = []
    for sample in index.samples:
        if index.layout == "split-folders":
            first = Path(sample.path).relative_to(root).parts[0].lower()
            given.append("test" if first == "test" else "train")
        else:
            given.append(None)
    # scan() sorts the pictures by path before drawing the split: do the same so that the draw is identical.
    order = sorted(range(len(index.samples)), key=lambda i: index.samples[i].path)
    pool = [i for i in order if given[i] in (None, "train")]
    has_test = "test" in given
    drawn = stratified_split([index.samples[i].label for i in pool], val_fraction,
                             0.0 if has_test else test_fraction, seed)
    split_of = dict(zip(pool, drawn, strict=True))
    return [Sample(s.path, s.label, split_of.get(i, given[i] or "train")) for i, s in enumerate(index.samples)]
