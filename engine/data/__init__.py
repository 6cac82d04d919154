"""Pictures in: scanning a folder or CSV into a ``DatasetIndex`` with its health report (``scan``), splitting
(``stratified_split``, ``resplit``), safe decoding (``images``), the decoded-picture cache (``cache``), transforms and
loaders (``loaders``) and the augmentation preview (``preview``)."""

from engine.data.scan import SPLITS, DatasetIndex, HealthReport, Sample, scan, stratified_split
from engine.data.split import resplit

__all__ = ["SPLITS", "DatasetIndex", "HealthReport", "Sample", "resplit", "scan", "stratified_split"]
