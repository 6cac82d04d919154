"""Plumbing for the window: Qt compatibility fixes, the garbage-collection guard, background jobs."""
