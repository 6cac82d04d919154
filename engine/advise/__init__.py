"""Advice measured on the user's own pictures: the data doctor (likely wrong labels, duplicates and leakage,
suspicious pictures) and the tools it is built from."""

from engine.advise.doctor import DoctorReport, Duplicate, LabelIssue, Suspicious, diagnose
from engine.advise.logme import logme
from engine.advise.transfer import Advice, Candidate, advise, candidates

__all__ = ["DoctorReport", "Duplicate", "LabelIssue", "Suspicious", "diagnose",
           "Advice", "Candidate", "advise", "candidates", "logme"]
