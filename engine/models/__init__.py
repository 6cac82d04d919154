"""Models: the one catalogue of timm and torchvision models (``catalogue``), building a model with a head for the
user's classes from a weight source (``build``), reading weight files safely (``weights``) and the layer tree that
the Layers step and the strategies work on (``layers``)."""

from engine.models.build import BuiltModel, build_model, check_name, split_name
from engine.models.weights import load_weights, read_weight_file
from engine.models import identify  # noqa: F401  (registers itself: a weight file that does not fit names its model)

__all__ = ["BuiltModel", "build_model", "check_name", "load_weights", "read_weight_file", "split_name"]
