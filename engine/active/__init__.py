"""Active learning: label the right pictures next.

- ``pool``: the folder of unlabelled pictures, scanned with the same checks as the labelled data;
- ``labels``: the user's answers (a class, or "none of these") in a CSV beside the project;
- ``ranking``: which pictures to label next, by uncertainty balanced with diversity, reproducible for a seed;
- ``mapping``: a 2-D map of the pictures (PCA of the model's features);
- ``join``: labelled pictures join training, a retrain, and the rounds' accuracy against pictures labelled;
- ``refit``: a retrain in seconds, the head alone refitted on the frozen layers' stored outputs (feature extraction);
- ``relocate``: saving a project brings its labels CSV and rounds folder beside the project file.
"""

from engine.active.join import (JoinSummary, Retrained, Round, joined_config, project_config, read_rounds,
                                record_round, retrain, run_round, with_labelled_pool)
from engine.active.labels import NONE_OF_THESE, Labels, copy_into_class_folders, labels_path_for, read_labels
from engine.active.mapping import pca_map
from engine.active.pool import Pool, scan_pool
from engine.active.ranking import PoolOutputs, Suggestion, pool_outputs, select, suggest, uncertainty

__all__ = ["NONE_OF_THESE", "JoinSummary", "Labels", "Retrained", "Pool", "PoolOutputs", "Round", "Suggestion",
           "copy_into_class_folders", "joined_config", "labels_path_for", "pca_map", "pool_outputs", "project_config",
           "read_labels", "read_rounds",
           "record_round", "retrain", "run_round", "scan_pool", "select", "suggest", "uncertainty",
           "with_labelled_pool"]
