"""Counts in words, for the command line's and the window's sentences alike (no heavy imports: the command line
uses it before torch is loaded)."""

from __future__ import annotations

__all__ = ["plural"]


def plural(n: int, noun: str, many: str = "") -> str:
    """'1 picture', '2 pictures', '1,000 pictures'; plural(n, 'class', 'classes')."""
    return f"1 {noun}" if n == 1 else f"{n:,} {many or noun + 's'}"
