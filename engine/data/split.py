"""Re-split a scanned dataset with other fractions or another seed, without decoding a single picture again.

The result is exactly what ``engine.data.scan.scan`` gives for the same folder and settings (a test checks it), so what
the browser shows is what training will use.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from engine.data.scan import (SPLIT_FOLDER_NAMES, DatasetIndex, Sample, class_advice, count_samples, scan,
                               stratified_split)

# Advice that depends on the split; any other advice (unreadable files, empty classes, ...) is kept as it was.
SPLIT_ADVICE = frozenset({"few-images", "missing-in-train", "imbalance", "no-validation", "missing-in-val"})


def resplit(index: DatasetIndex, val_fraction: float, test_fraction: float, seed: int,
            split: str = "auto") -> DatasetIndex:
    """``index`` split again with these settings: ``split="auto"`` keeps the data's own split when it has one,
    ``"random"`` pools every picture and draws the split class by class."""
    if index.layout == "csv":
        # The CSV's own split column cannot be told from the paths: list the file again (reading it, not the
        # pictures) and leave out the pictures the first scan found unreadable.
        listed = scan(index.root, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, split=split,
                      verify=False)
        bad = {p.path for p in index.health.unreadable}
        samples = [s for s in listed.samples if s.path not in bad and listed.classes[s.label] in index.classes]
        samples = [Sample(s.path, index.classes.index(listed.classes[s.label]), s.split) for s in samples]
        source = listed.split_source
    else:
        samples, source = _resplit_folders(index, val_fraction, test_fraction, seed, split)
    advice = [a for a in index.health.advice if a.kind not in SPLIT_ADVICE]
    advice = class_advice(count_samples(samples, index.classes), source) + advice
    health = dataclasses.replace(index.health, advice=advice)
    return dataclasses.replace(index, samples=samples, health=health, split_source=source)


def _given(index: DatasetIndex, sample: Sample) -> str | None:
    """The split a picture's folder gives it (train/, val/, test/), None in a plain class-folder layout."""
    if index.layout != "split-folders":
        return None
    first = Path(sample.path).relative_to(Path(index.root)).parts[0].lower()
    return SPLIT_FOLDER_NAMES.get(first, "train")


def _resplit_folders(index: DatasetIndex, val_fraction: float, test_fraction: float, seed: int,
                     split: str) -> tuple[list[Sample], str]:
    given = [None if split == "random" else _given(index, sample) for sample in index.samples]
    if "val" in given:
        return [Sample(s.path, s.label, g or "train") for s, g in zip(index.samples, given)], "folders"
    # scan() sorts the pictures by path before drawing the split: do the same so that the draw is identical. A file
    # that gives several pictures (a slide's tiles, a DICOM's frames: engine.data.formats) is drawn once, as there.
    from engine.data.formats import real_path

    file_of = [real_path(s.path) for s in index.samples]
    order = sorted(range(len(index.samples)), key=lambda i: (file_of[i], index.samples[i].path))
    seen: set[str] = set()
    pool = [i for i in order if given[i] in (None, "train") and not (file_of[i] in seen or seen.add(file_of[i]))]
    has_test = "test" in given
    drawn = stratified_split([index.samples[i].label for i in pool], val_fraction,
                             0.0 if has_test else test_fraction, seed)
    split_of = {file_of[i]: d for i, d in zip(pool, drawn, strict=True)}
    samples = [Sample(s.path, s.label, split_of.get(file_of[i], given[i] or "train") if given[i] in (None, "train")
                      else given[i]) for i, s in enumerate(index.samples)]
    return samples, "random"
