"""The model a new project starts with: one that can start on this computer now.

The catalogue's first choice (``ModelConfig()``'s default) needs its pretrained weights, which an offline computer
may not have. A newcomer who opens a folder should not meet a Model step that "needs attention" when weights that
work are already here, so a new project starts with, in this order: the default when its weights are here; the
first recommended model whose pretrained weights are in a local cache; the newest imported weight file whose model
is known; and only then the default (the Model step then says what is missing and what to do).
"""

from __future__ import annotations

import os

from engine.config import ModelConfig
from engine.errors import ModelError
from engine.models import catalogue
from engine.project.library import ModelLibrary


def starting_model(library_dir: str | os.PathLike | None = None) -> ModelConfig:
    default = ModelConfig()
    try:
        if catalogue.weights_problem(default.name, default.weights) is None:
            return default
        index = catalogue.OfflineIndex()
        for name, _why in catalogue.RECOMMENDED:
            if index.pretrained(catalogue.info(name)):
                return ModelConfig(name=name, weights="pretrained")
    except (ModelError, OSError):
        pass  # a catalogue or cache that cannot be read: the imported files and the default remain
    for entry in ModelLibrary(library_dir).imported():  # newest first
        if entry.architecture:
            return ModelConfig(name=entry.architecture, weights=entry.path)
    return default
