"""The Data step's counts for a multi-task dataset: one bar per task and class, and per task the pictures without a
label (engine.train.multitask.MultiTaskIndex.task_counts), instead of one bar per combination of labels.

``chart_counts(index)`` gives what the class chart takes, ``(names, {split: {name: pictures}}, {split: pictures})``:
the last the legend's totals (each picture once, although it is in one bar per task); the dataset's own classes and
counts, and None, for a single-task dataset.
"""

from __future__ import annotations


def chart_counts(index):
    from engine.train.multitask import MultiTaskIndex

    if not isinstance(index, MultiTaskIndex):
        return index.classes, index.counts(), None
    names: list[str] = []
    counts: dict[str, dict[str, int]] = {}
    for task, per_split in index.task_counts().items():
        for split, row in per_split.items():
            target = counts.setdefault(split, {})
            for cls, n in row.items():
                if cls or n:  # the unlabelled pictures only when there are some
                    target[f"{task}: {cls or '(no label)'}"] = n
        for cls in next(iter(per_split.values())):
            name = f"{task}: {cls or '(no label)'}"
            if name not in names and any(name in row for row in counts.values()):
                names.append(name)
    pictures = {split: len(index.split(split)) for split in counts}  # each picture once, not once per task
    return names, {split: {n: row.get(n, 0) for n in names} for split, row in counts.items()}, pictures
