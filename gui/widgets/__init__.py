"""Widgets shared by several steps: thumbnails, picture panels and galleries, the picture preview, the run chooser,
live plots, numbers in words."""
