"""Plumbing for the window: Qt compatibility fixes, the garbage-collection guard, the one job service for
background work (``jobs``) and the model builder and catalogue that run on it."""
