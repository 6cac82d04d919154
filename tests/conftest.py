"""Shared fixtures: small generated datasets, and the ../shared folder (present on the project's own machines only)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# The decoded-image cache of the runs the tests start (and of the command-line runs in subprocesses): a folder of
# this test session, never the user's own cache.
if "TRANSFER_STUDIO_CACHE" not in os.environ:
    import tempfile

    os.environ["TRANSFER_STUDIO_CACHE"] = tempfile.mkdtemp(prefix="ts-test-cache-")
# The app's data folder (model library, drafts, logs, runs of unsaved projects): a folder of this test session too, so
# that a test importing a weight file or saving a draft never writes into the user's own (platformdirs reads it).
import tempfile  # noqa: E402

os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="ts-test-data-")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
HYMENOPTERA = SHARED / "datasets" / "hymenoptera"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_v2_in1k.safetensors"

COLOURS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 60, 200)}


def make_class_folders(root: Path, per_class: int = 8, classes=("red", "green", "blue"), size=(40, 32),
                       seed: int = 0) -> Path:
    """A folder with one sub-folder per class of small pictures: a tinted background with a light blob."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    for name in classes:
        base = COLOURS[name]
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            colour = tuple(max(0, min(255, c + rng.randint(-30, 30))) for c in base)
            image = Image.new("RGB", size, colour)
            x, y = rng.randint(0, size[0] // 2), rng.randint(0, size[1] // 2)
            ImageDraw.Draw(image).ellipse([x, y, x + 12, y + 12], fill=(240, 240, 240))
            image.save(root / name / f"{name}_{i:02d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Three classes of eight 40x32 pictures (read-only by convention: copy it before changing it)."""
    return make_class_folders(tmp_path_factory.mktemp("tiny") / "colours")


def require_shared(*paths: Path) -> None:
    missing = [p for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"needs {missing[0]} (only on the project's own machines)")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread, and far faster on a machine whose cores are busy with other work.
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def _tiny_run_template(tmp_path_factory) -> Path:
    """One short real run, trained once per test session: timm's test_resnet from random weights, one epoch, on
    three colour classes of 8 pictures with validation and test pictures (so it makes a few mistakes)."""
    import torch

    from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from engine.train.trainer import fit

    data = make_class_folders(tmp_path_factory.mktemp("tiny-run-data") / "colours", per_class=8)
    config = RunConfig(data=DataConfig(source=str(data), val_fraction=0.25, test_fraction=0.25),
                       model=ModelConfig("timm:test_resnet", "none"), strategy="fine-tune-deep", epochs=1, lr=0.01,
                       train=TrainConfig(batch_size=8, workers=0, warmup_epochs=0.0, augment="none"),
                       out=str(tmp_path_factory.mktemp("tiny-runs")))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = fit(config)
    finally:
        torch.set_num_threads(before)
    assert result.status == "completed", result.error
    return Path(result.run_dir)


@pytest.fixture(scope="module")
def tiny_run(_tiny_run_template, tmp_path_factory) -> Path:
    """A copy of the session's tiny run folder for this test module, which may write into it (evaluation.json,
    exports) or break it."""
    import shutil

    target = tmp_path_factory.mktemp("tiny-run-copy") / _tiny_run_template.name
    shutil.copytree(_tiny_run_template, target)
    return target


@pytest.fixture(scope="module")
def tiny_run_data(_tiny_run_template) -> Path:
    """The pictures the tiny run was trained on (read-only by convention)."""
    from engine.config import load

    return Path(load(_tiny_run_template / "config.toml").data.source)


@pytest.fixture(autouse=True)
def _own_model_library(tmp_path_factory, monkeypatch):
    """Each test starts with an empty model library of its own: a file one test imports would otherwise become the
    model a later test's new project starts with (engine.project.starting)."""
    import engine.project.library as library

    folder = tmp_path_factory.mktemp("model-library")
    monkeypatch.setattr(library, "default_library_dir", lambda: folder)
    yield


@pytest.fixture(autouse=True)
def _collect_garbage_on_the_gui_thread(request):
    """GUI tests: garbage is collected on the GUI thread only, as in the app (gui.support.gc_guard), from the first GUI test
    on, whichever widget it starts with."""
    if "gui" in request.node.path.parent.parts[-1:]:
        request.getfixturevalue("qapp")
        from gui.support import gc_guard

        gc_guard.install()
    yield


@pytest.fixture
def quick_training(tmp_path, monkeypatch):
    """For tests that train: a picture cache of the test's own (it starts empty), and one torch thread (tiny pictures
    and models run as fast on one, and far faster when other processes load the cores). Use with
    ``pytestmark = pytest.mark.usefixtures("quick_training")``."""
    import torch

    monkeypatch.setenv("TRANSFER_STUDIO_CACHE", str(tmp_path / "picture-cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
