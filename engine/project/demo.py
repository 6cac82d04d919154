"""The demo project: a small dataset of synthetic pictures made on first use, and a configuration that trains on it
from random weights, on a CPU, in well under a minute, without downloading anything.

The pictures are patterns (checks, dots, stripes) in random colours, scales, angles and positions on random
backgrounds, so the model has to learn the pattern rather than a colour. They are drawn with Pillow from a seeded
random generator: the same recipe gives the same pictures on every machine.

Why patterns and not shapes: a network starting from random weights needs many pictures to tell a circle from a
square or a triangle (in our trials a small model stayed near 55 % after twelve epochs on 40 pictures per class),
while a texture is learnt in a few epochs: the demo is there to show the workflow in a minute, not to be hard.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.errors import UserError
from engine.paths import user_data_dir

__all__ = [
    "DEMO_CLASSES",
    "DEMO_NAME",
    "DEMO_PER_CLASS",
    "DemoError",
    "demo_config",
    "demo_folder",
    "open_demo_project",
    "ensure_demo_dataset",
    "make_patterns_dataset",
]

DEMO_NAME = "Patterns demo"
DEMO_CLASSES = ("checks", "dots", "stripes")
DEMO_PER_CLASS = 60
DEMO_EPOCHS = 12
DEMO_SIZE = 64  # pixels; the model resizes them to its own input size
RECIPE_VERSION = 1  # bump when the drawing changes, so that an old demo folder is made again
PICTURES = "patterns"  # the pictures' folder inside the demo folder
_MARKER = "patterns.version"  # beside the pictures' folder, written after it is complete

# The demo model: timm's smallest ResNet (370 thousand parameters, 160 x 160 input), fast on a CPU and needing no
# download (random weights); trained whole, since there is nothing pretrained to keep.
DEMO_MODEL = "timm:test_resnet"


class DemoError(UserError):
    """The demo dataset cannot be made."""


def demo_folder(data_dir: str | os.PathLike | None = None) -> Path:
    """Where the demo project lives: its pictures in ``patterns/``, its runs in ``runs/``."""
    return Path(data_dir) / "demo" if data_dir is not None else user_data_dir() / "demo"


def ensure_demo_dataset(
    data_dir: str | os.PathLike | None = None,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> Path:
    """The demo pictures' folder, made first if it is missing, incomplete or from an older recipe."""
    target = demo_folder(data_dir) / PICTURES
    marker = target.parent / _MARKER
    if marker.is_file() and marker.read_text(encoding="utf-8").strip() == str(RECIPE_VERSION):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Draw into a temporary folder beside the target and rename it into place: an interrupted run leaves no
        # half-made demo behind.
        tmp = Path(tempfile.mkdtemp(prefix=f".{PICTURES}-", dir=target.parent))
        try:
            make_patterns_dataset(tmp, on_progress=on_progress, stop=stop)
            marker.unlink(missing_ok=True)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
            marker.write_text(f"{RECIPE_VERSION}\n", encoding="utf-8")
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        raise DemoError(f"The demo pictures could not be made in {target.parent} ({exc.strerror or exc}): "
                        "free some disk space or check that the folder can be written.") from None
    return target


def make_patterns_dataset(
    root: str | os.PathLike,
    per_class: int = DEMO_PER_CLASS,
    size: int = DEMO_SIZE,
    seed: int = 0,
    *,
    classes: tuple[str, ...] = DEMO_CLASSES,
    on_progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> Path:
    """Write ``per_class`` PNG pictures of each of ``classes`` into ``root/<class>/``."""
    root = Path(root)
    rng = random.Random(f"transfer-studio-demo/{seed}")
    total = per_class * len(classes)
    done = 0
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i in range(per_class):  # class by class within each index: every class gets the same random budget
        for name in classes:
            if stop is not None and stop.is_set():
                raise DemoError("Making the demo pictures was cancelled.")
            draw_pattern(name, size, rng).save(root / name / f"{name}_{i:03d}.png", optimize=False)
            done += 1
            if on_progress is not None:
                on_progress(done, total)
    return root


def draw_pattern(kind: str, size: int, rng: random.Random):
    """One picture of ``kind`` (a PIL image): a random background and a contrasting pattern drawn over it."""
    from PIL import Image, ImageDraw, ImageFilter

    background, foreground = _colour_pair(rng)
    # Drawn at 4x and shrunk: smooth edges, as in a photograph.
    scale = 4
    big = size * scale
    image = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(image)
    _add_specks(draw, big, background, rng)
    if kind == "stripes":
        _draw_stripes(draw, big, foreground, rng.uniform(0, math.pi), rng)
    elif kind == "checks":
        _draw_checks(draw, big, foreground, rng)
    elif kind == "dots":
        r = rng.uniform(0.04, 0.07) * big
        for _ in range(rng.randint(6, 14)):
            x, y = rng.uniform(r, big - r), rng.uniform(r, big - r)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=foreground)
    else:
        raise ValueError(f"unknown pattern {kind!r}")
    image = image.resize((size, size), Image.Resampling.LANCZOS)
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.6)))


def _colour_pair(rng: random.Random) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A background and a foreground colour that stand apart in brightness."""
    import colorsys

    while True:
        bg = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.6), rng.uniform(0.15, 0.95))
        fg = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.3, 1.0), rng.uniform(0.15, 1.0))
        if abs(_luma(bg) - _luma(fg)) > 0.3:
            return _rgb255(bg), _rgb255(fg)


def _luma(rgb: tuple[float, float, float]) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _rgb255(rgb: tuple[float, float, float]) -> tuple[int, int, int]:
    return tuple(int(round(c * 255)) for c in rgb)  # type: ignore[return-value]


def _add_specks(draw, big: int, background: tuple[int, int, int], rng: random.Random) -> None:
    """A few faint specks so that the backgrounds are not perfectly flat."""
    for _ in range(rng.randint(0, 6)):
        r = rng.uniform(0.01, 0.04) * big
        x, y = rng.uniform(0, big), rng.uniform(0, big)
        tint = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in background)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tint)


def _draw_stripes(draw, big: int, colour: tuple[int, int, int], angle: float, rng: random.Random) -> None:
    """Parallel bands across the whole picture at ``angle``."""
    period = rng.uniform(0.12, 0.25) * big
    width = period * rng.uniform(0.35, 0.6)
    dx, dy = math.cos(angle), math.sin(angle)  # across the bands
    px, py = -dy, dx  # along the bands
    centre = big / 2
    reach = big  # long enough to cross the picture at any angle
    offset = rng.uniform(0, period)
    k = -math.ceil(reach / period) - 1
    while k * period < reach:
        d = k * period + offset
        ax, ay = centre + dx * d, centre + dy * d
        bx, by = ax + dx * width, ay + dy * width
        draw.polygon([(ax - px * reach, ay - py * reach), (ax + px * reach, ay + py * reach),
                      (bx + px * reach, by + py * reach), (bx - px * reach, by - py * reach)], fill=colour)
        k += 1


def _draw_checks(draw, big: int, colour: tuple[int, int, int], rng: random.Random) -> None:
    """A chequerboard of random cell size, turned a little."""
    cell = rng.uniform(0.08, 0.16) * big
    angle = rng.uniform(-0.3, 0.3)
    c, s = math.cos(angle), math.sin(angle)
    n = int(big * 1.5 / cell) + 2
    for i in range(-n, n):
        for j in range(-n, n):
            if (i + j) % 2:
                continue
            corners = ((i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1))
            draw.polygon([(big / 2 + (u * c - v * s) * cell, big / 2 + (u * s + v * c) * cell) for u, v in corners],
                         fill=colour)


def demo_config(dataset: str | os.PathLike, out: str | os.PathLike) -> RunConfig:
    """The demo's settings: a small model from random weights (nothing to download), trained whole.

    With random weights there is nothing worth keeping, so every stage trains at the same rate (``fine-tune-deep``
    with a layer decay of 1) and BatchNorm learns its statistics; "feature extraction" would train a head on random
    features.
    """
    return RunConfig(
        data=DataConfig(source=str(dataset), val_fraction=0.2, split_seed=0),
        model=ModelConfig(name=DEMO_MODEL, weights="none"),
        strategy="fine-tune-deep",
        epochs=DEMO_EPOCHS,
        lr=1e-2,
        train=TrainConfig(batch_size=16, weight_decay=0.01, schedule="onecycle",
                          augment="none", label_smoothing=0.0, layer_decay=1.0, workers=0, seed=0),
        out=str(out),
        name="demo",
    ).validate()


def open_demo_project(
    data_dir: str | os.PathLike | None = None,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
):
    """The demo project (an ``engine.project.project.Project`` saved in the demo folder), its pictures made if needed.

    A demo project saved earlier is opened as it was left; otherwise (or when it cannot be read) a fresh one is
    written.
    """
    from engine.errors import ConfigError
    from engine.project.project import PROJECT_SUFFIX, Project, open_project, save_project

    folder = demo_folder(data_dir)
    pictures = ensure_demo_dataset(data_dir, on_progress=on_progress, stop=stop)
    path = folder / (DEMO_NAME + PROJECT_SUFFIX)
    if path.is_file():
        try:
            opened = open_project(path, data_dir=data_dir)
            if Path(opened.project.dataset) == pictures and not opened.notes:
                return opened.project
        except ConfigError:
            pass  # damaged or from an incompatible version: write a fresh one
    project = Project(name=DEMO_NAME, config=demo_config(pictures, folder / "runs"))
    return save_project(project, path, data_dir=data_dir)
