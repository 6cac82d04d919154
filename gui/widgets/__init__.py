"""Widgets shared by several steps: thumbnails, picture panels and galleries, the picture preview, live plots."""
