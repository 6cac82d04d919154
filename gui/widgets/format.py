"""Numbers in words people read, shared by the steps (steps do not import each other)."""

from __future__ import annotations

# plural(n, noun, many=''): '1 run', '2 runs', '1,000 pictures', plural(n, 'class', 'classes'). The engine's, so
# that the window's sentences and the command line's agree.
from engine.words import plural

__all__ = ["format_count", "plural"]


def format_count(n: int) -> str:
    """Parameter counts as people read them: 512, 0.9 K, 1.2 M, 1.1 G."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= size * 0.95 or (unit == "K" and n >= 1000):
            return f"{n / size:.1f} {unit}"
    return str(n)

