"""A folder that mixes every kind of bad picture with good and odd ones: the scan reports each bad picture with the
sentence a user reads, keeps the odd ones, and a real (short) training run completes on the good ones and records the
bad ones in its dataset.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bad_pictures import LOCKED, good_classes, make_bad_pictures, unreadable
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.data.scan import scan
from engine.train.trainer import fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NOT_A_PICTURE = ("The file is not a picture (it could not be recognised as a JPEG, PNG, BMP, GIF, TIFF or WebP "
                 "image).")
LOOP = "The file is a link that leads back to itself (a loop of symbolic links): remove the link."


def expected_reasons(folder: Path) -> dict[str, str]:
    """The sentence the health report gives for each bad picture (garbage.webp: checked apart, see below)."""
    return {
        "empty.jpg": "The file is empty.",
        "truncated.jpg": "The picture is cut short (the file is truncated or damaged).",
        "notes.jpg": NOT_A_PICTURE,
        "download.png": NOT_A_PICTURE,
        "bomb.png": "The picture is too large (1,600 million pixels; the limit is 64 million pixels).",
        "bomb-real.png": "The picture is too large (9000 x 9000 pixels; the limit is 64 million pixels).",
        "bomb.jpg": "The picture is too large (3,600 million pixels; the limit is 64 million pixels).",
        "loop-a.jpg": LOOP,
        "loop-b.jpg": LOOP,
        "moved.jpg": f"The file is a link to {folder / 'gone' / 'x.jpg'}, which does not exist: put the picture back "
                     "or remove the link.",
        LOCKED: "The file cannot be read (permission denied).",
    }


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> tuple[Path, list, list]:
    """Two classes of 12 good pictures; the bad and odd pictures among the cats; a folder link looping back."""
    root = good_classes(tmp_path_factory.mktemp("bad-inputs") / "pets")
    try:
        bad, odd = make_bad_pictures(root / "cats")
        (root / "dogs" / "loop").symlink_to(root / "dogs", target_is_directory=True)
    except OSError:
        pytest.skip("symbolic links are not available here")
    return root, bad, odd


def test_scan_reports_each_bad_picture_with_its_reason_and_keeps_the_odd_ones(mixed):
    root, bad, odd = mixed
    with unreadable(root / "cats"):  # chmod 000, or a refused open where chmod does not stop reading (root)
        index = scan(root)
    reasons = {Path(p.path).name: p.reason for p in index.health.unreadable}
    assert set(reasons) == {name for _, name in bad}
    webp = reasons.pop("garbage.webp")
    assert webp == "The picture is damaged and cannot be decoded."
    assert reasons == expected_reasons(root / "cats")
    for reason in index.health.unreadable:  # one plain sentence each, never a traceback
        assert reason.reason.endswith(".") and "\n" not in reason.reason and "Error" not in reason.reason

    kept = {Path(s.path).name for s in index.samples}
    assert {name for _, name in odd} <= kept  # odd but usable: CMYK, 16-bit, 1 x 1, non-ASCII name, ...
    assert not kept & {name for _, name in bad}
    assert index.classes == ["cats", "dogs"]
    assert sum(1 for s in index.samples if Path(s.path).parent.name == "dogs") == 12  # the looping link adds none
    summary = [a.message for a in index.health.advice if a.kind == "unreadable"]
    assert summary == [f"{len(bad)} files could not be used and were left out: fix or remove them (the list says "
                       "what is wrong with each)."]
    shown = "\n".join(index.health.lines())  # what `python main.py scan` prints
    assert all(f"{p.path}: {p.reason}" in shown for p in index.health.unreadable)


def test_training_on_the_mixed_folder_uses_the_good_pictures_and_lists_the_bad_ones(mixed, tmp_path):
    root, bad, odd = mixed
    config = RunConfig(data=DataConfig(source=str(root), val_fraction=0.25),
                       model=ModelConfig("timm:test_resnet", "none"), strategy="fine-tune-deep", epochs=1, lr=0.01,
                       train=TrainConfig(batch_size=8, workers=0, warmup_epochs=0.0, augment="light"),
                       out=str(tmp_path / "runs"))
    with unreadable(root / "cats"):
        result = fit(config)
    assert result.status == "completed", result.error
    run = Path(result.run_dir)

    dataset = json.loads((run / "dataset.json").read_text(encoding="utf-8"))
    left_out = {Path(p["path"]).name: p["reason"] for p in dataset["health"]["unreadable"]}
    assert set(left_out) == {name for _, name in bad}
    assert {k: v for k, v in left_out.items() if k != "garbage.webp"} == expected_reasons(root / "cats")
    trained = {Path(s["path"]).name for s in dataset["samples"]}
    assert {name for _, name in odd} <= trained
    assert not trained & set(left_out)
    assert len(dataset["samples"]) == 24 + len(odd)

    (epoch,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(epoch["train_loss"]) and math.isfinite(epoch["val_loss"])
    assert (run / "best.safetensors").is_file()
