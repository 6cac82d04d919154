"""The Layers step's view of a multi-task run: the model with one head per task, as the engine will train it.

``with_task_heads(result, config)`` takes the Model step's build (gui.support.model_builder.BuildResult) and, when the
config's data is a CSV of several tasks (engine.train.multitask.read_tasks), returns a copy whose classifier is the
engine's MultiTaskHead -- one linear head per task, named after it -- with its layer trees rebuilt; otherwise the
build itself. The build's own model is not changed (the Model step and the advice keep using it).
"""

from __future__ import annotations

import copy
import dataclasses


def with_task_heads(result, config):
    from engine.models.layers import ModuleTree, build_layer_tree
    from engine.train.multitask import install_head, read_tasks

    tasks = read_tasks(config.data.source, config.data.tasks) if config.data.source else None
    built = result.built
    if not tasks or built is None:
        return result
    model = copy.deepcopy(built.model)
    try:
        install_head(model, built.head, tasks, config.train.task_weighting == "uncertainty")
    except Exception:  # a classifier that is not one linear layer: the engine says so when the run starts
        return result
    tree = build_layer_tree(model, built.head)
    return dataclasses.replace(result, built=dataclasses.replace(built, model=model), tree=tree,
                               modules=ModuleTree(model, tree))


def task_words(config) -> str | None:
    """'2 tasks: species (2 classes), stage (3 classes)' when the config's data is a CSV of several tasks, else None:
    the Layers step's title counts tasks and their classes, not the combinations of labels."""
    from engine.train.multitask import read_tasks, task_words as words

    tasks = read_tasks(config.data.source, config.data.tasks) if config is not None and config.data.source else None
    return words(tasks) if tasks else None


def class_words(index) -> str:
    """'16 classes', or for a dataset of several tasks '2 tasks: pattern (3 classes), tint (3 classes)': what the
    window's summaries say about a dataset (a multi-task dataset's ``classes`` are its combinations of labels)."""
    from engine.train.multitask import MultiTaskIndex, task_words as words
    from gui.widgets.format import plural

    if isinstance(index, MultiTaskIndex) and index.tasks:
        return words(index.tasks)
    return plural(len(index.classes), "class", "classes")
