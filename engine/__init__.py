"""Transfer Studio's engine: all the machine learning, plain Python (never Qt), by capability:

- ``engine.config``, ``engine.events``, ``engine.errors``, ``engine.paths``, ``engine.files``: the run configuration,
  the events a run reports, the errors that are sentences, the app's folders, atomic writes;
- ``engine.data``: scanning folders and CSV files, splits, safe picture decoding, the picture cache, loaders;
- ``engine.models``: the catalogue (timm and torchvision), building models, weight files, the layer tree;
- ``engine.project``: projects, run folders, the model library, the demo;
- ``engine.train``: the trainer and its parts (loop, checkpoints, runtime, strategies, the frozen-prefix fast path);
- ``engine.results``: evaluation, prediction, heat maps, export and the model card.

Each package's ``__init__`` names what the rest of the code uses; lower packages never import higher ones
(import-linter contracts in pyproject.toml, checked by tests/test_boundary.py).
"""
