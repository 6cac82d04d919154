"""The data doctor on generated pictures: each kind of finding, the review's overrides in scans and training,
*Apply to folders* and its undo, and the JSON of ``main.py doctor``."""

from __future__ import annotations

import io
import json
import random
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from engine.advise.doctor import diagnose
from engine.advise.folders import EXCLUDED_FOLDER, apply_to_folders, undo_last, undo_logs
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.data.scan import scan
from engine.errors import UserError

MODEL = "timm:test_resnet"
TINTS = {"red": (200, 50, 40), "blue": (40, 70, 210)}


def picture(rng: random.Random, tint, size=(72, 64)) -> Image.Image:
    """A tinted picture with a few random shapes: every one looks different to a perceptual hash."""
    image = Image.new("RGB", size, tint)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randint(0, size[0] - 10), rng.randint(0, size[1] - 10)
        w, h = rng.randint(6, 30), rng.randint(6, 30)
        shade = tuple(max(0, min(255, c + rng.randint(-90, 90))) for c in tint)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x, y, x + w, y + h], fill=shade)
    return image


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict:
    """train/ and val/ folders of red and blue pictures, with one mistake of each kind planted."""
    root = tmp_path_factory.mktemp("doctor") / "pictures"
    rng = random.Random(3)
    for split, n in (("train", 14), ("val", 5)):
        for name, tint in TINTS.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                picture(rng, tint).save(root / split / name / f"{name}-{i:02d}.png")
    mistakes = {}
    # a red picture filed as blue
    picture(rng, TINTS["red"]).save(root / "train" / "blue" / "really-red.png")
    mistakes["wrong"] = root / "train" / "blue" / "really-red.png"
    # a validation picture copied into training: smaller, mirrored, saved again as JPEG
    original = root / "val" / "red" / "red-02.png"
    with Image.open(original) as img:
        img.convert("RGB").resize((54, 48)).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
            root / "train" / "red" / "copy-of-val.jpg", quality=60)
    mistakes["leak"] = (root / "train" / "red" / "copy-of-val.jpg", original)
    # the same file twice in training, once under each class: an exact copy and a conflict
    shutil.copy(root / "train" / "red" / "red-05.png", root / "train" / "blue" / "red-05-again.png")
    mistakes["conflict"] = (root / "train" / "red" / "red-05.png", root / "train" / "blue" / "red-05-again.png")
    # suspicious pictures
    Image.new("RGB", (1, 1), (255, 255, 255)).save(root / "train" / "red" / "pixel.png")
    Image.new("RGB", (80, 80), (128, 128, 128)).save(root / "train" / "blue" / "blank.png")
    picture(rng, TINTS["red"], size=(400, 40)).save(root / "train" / "red" / "strip.png")
    picture(rng, TINTS["blue"]).convert("L").save(root / "train" / "blue" / "grey.png")
    return {"root": root, **mistakes}


@pytest.fixture(scope="module", autouse=True)
def _feature_cache(tmp_path_factory):
    """The features the tests compute are kept in a folder of this module's own, never the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRANSFER_STUDIO_FEATURES", str(tmp_path_factory.mktemp("features")))
        yield


@pytest.fixture(scope="module")
def report(planted):
    return diagnose(scan(planted["root"]), model=MODEL, weights="none")


def test_a_picture_filed_under_the_wrong_class_is_a_label_issue(report, planted):
    issues = {x.path: x for x in report.label_issues}
    wrong = issues[str(planted["wrong"])]
    assert (wrong.given, wrong.suggested) == ("blue", "red")
    assert 0.5 < wrong.score <= 1
    # sorted by score, the likeliest first
    assert [x.score for x in report.label_issues] == sorted((x.score for x in report.label_issues), reverse=True)


def test_an_altered_copy_of_a_validation_picture_in_training_is_leakage(report, planted):
    copy, original = map(str, planted["leak"])
    group = next(d for d in report.duplicates if copy in d.paths)
    assert original in group.paths
    assert group.kind == "near" and group.leakage and not group.conflict
    assert dict(zip(group.paths, group.splits)) == {copy: "train", original: "val"}
    assert report.leaked_pictures() == [original]
    assert any("1 validation or test picture has a copy in training" in line for line in report.summary())


def test_the_same_file_under_two_classes_is_an_exact_conflict(report, planted):
    a, b = map(str, planted["conflict"])
    group = next(d for d in report.duplicates if a in d.paths)
    assert sorted(group.paths) == sorted([a, b])
    assert group.kind == "exact" and group.conflict and sorted(group.labels) == ["blue", "red"]
    assert group.score == 1.0


def test_no_other_pictures_are_called_copies(report, planted):
    a, b = map(str, planted["conflict"])
    copy, original = map(str, planted["leak"])
    assert sorted(sorted(d.paths) for d in report.duplicates) == sorted([sorted([a, b]), sorted([copy, original])])


def test_suspicious_pictures_that_decode_fine(report, planted):
    root = planted["root"]
    kinds = {(Path(x.path).name, x.kind) for x in report.suspicious}
    assert {("pixel.png", "tiny"), ("pixel.png", "blank"), ("blank.png", "blank"), ("strip.png", "aspect"),
            ("grey.png", "greyscale")} <= kinds
    normal = {Path(x.path).name for x in report.suspicious} - {"pixel.png", "blank.png", "strip.png", "grey.png"}
    assert not {n for n in normal if n.startswith(("red-", "blue-"))}, normal
    tiny = next(x for x in report.suspicious if x.kind == "tiny")
    assert "1\u00d71 pixels" in tiny.reason and tiny.path == str(root / "train" / "red" / "pixel.png")


def test_an_outlier_far_from_every_class():
    """Outliers are judged on the model's features; given here: two tight classes and one picture far from both."""
    from engine.data.scan import DatasetIndex, HealthReport, Sample

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (2, 32))
    samples = [Sample(f"/data/{c}/{i}.png", c, "train") for c in (0, 1) for i in range(20)]
    features = np.stack([centres[s.label] + rng.normal(0, 0.2, 32) for s in samples] + [rng.normal(0, 1, 32)])
    samples.append(Sample("/data/0/odd.png", 0, "train"))
    index = DatasetIndex("/data", "class-folders", ["a", "b"], samples, HealthReport(), "random")
    found = diagnose(index, features=features)  # the files do not exist: hashes fail, features decide
    assert [(x.path, x.kind) for x in found.suspicious] == [("/data/0/odd.png", "outlier")]


def test_without_a_model_the_other_checks_still_run(planted, monkeypatch):
    from engine.advise import features as features_module
    from engine.errors import ModelError

    def no_model(*args, **kwargs):
        raise ModelError("The pretrained weights of timm:resnet18 are not on this computer.")

    monkeypatch.setattr(features_module, "build_model", no_model)
    found = diagnose(scan(planted["root"]), model="timm:resnet18", weights="pretrained")
    assert found.label_issues == []
    assert "could not be computed: The pretrained weights of timm:resnet18 are not on this computer." in found.notes[0]
    a, b = map(str, planted["conflict"])
    assert any(sorted(d.paths) == sorted([a, b]) for d in found.duplicates)  # the content hash needs no model
    assert {x.kind for x in found.suspicious} >= {"tiny", "blank", "aspect", "greyscale"}


def test_doctor_json_has_the_keys_scripts_rely_on(planted, capsys):
    import main

    assert main.main(["doctor", str(planted["root"]), "--json", "--model", MODEL, "--weights", "none"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= {"label_issues", "duplicates", "suspicious"}
    assert all(set(x) >= {"path", "given", "suggested", "score"} for x in data["label_issues"])
    assert all(set(x) >= {"paths", "splits", "kind", "labels"} for x in data["duplicates"])
    assert all(x["kind"] in ("exact", "near") for x in data["duplicates"])
    assert all(set(x) >= {"path", "reason"} for x in data["suspicious"])
    assert str(planted["wrong"]) in [x["path"] for x in data["label_issues"]]


def test_doctor_text_output_and_a_missing_folder(planted, capsys, tmp_path):
    import main

    assert main.main(["doctor", str(planted["root"]), "--model", MODEL, "--weights", "none"]) == 0
    out = capsys.readouterr().out
    assert "Likely wrong labels" in out and "really-red.png" in out and "leakage" in out
    assert main.main(["doctor", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- overrides ------------------------------------------------------------------------------------------------


def test_overrides_leave_out_and_relabel_without_moving_other_pictures(planted):
    root = planted["root"]
    plain = scan(root)
    index = scan(root, exclude=["train/red/pixel.png"], relabel={"train/blue/really-red.png": "red"})
    paths = {s.path: s for s in index.samples}
    assert str(root / "train" / "red" / "pixel.png") not in paths
    moved = paths[str(planted["wrong"])]
    assert index.classes[moved.label] == "red" and moved.split == "train"
    # every other picture keeps its split and its label
    others = {s.path: (s.label, s.split) for s in plain.samples
              if s.path not in (str(root / "train" / "red" / "pixel.png"), str(planted["wrong"]))}
    assert others == {p: (s.label, s.split) for p, s in paths.items() if p != str(planted["wrong"])}
    assert index.health.overrides == {"excluded": [str(root / "train" / "red" / "pixel.png")],
                                      "relabelled": {str(planted["wrong"]): "red"}}
    assert any(a.kind == "overrides" for a in index.health.advice)
    assert index.counts()["train"]["red"] == plain.counts()["train"]["red"]  # one out, one in


def test_overrides_of_a_random_split_keep_the_validation_pictures(tmp_path):
    from tests.conftest import make_class_folders

    root = make_class_folders(tmp_path / "colours", per_class=10)
    plain = scan(root, val_fraction=0.3)
    first_train = next(s for s in plain.samples if s.split == "train")
    index = scan(root, val_fraction=0.3, exclude=[first_train.path])
    assert [s.path for s in index.split("val")] == [s.path for s in plain.split("val")]


def test_a_relabelling_to_an_unknown_class_is_ignored_with_advice(planted):
    index = scan(planted["root"], relabel={"train/blue/really-red.png": "green"})
    sample = next(s for s in index.samples if s.path == str(planted["wrong"]))
    assert index.classes[sample.label] == "blue"
    advice = next(a for a in index.health.advice if a.kind == "override-unknown-class")
    assert "'green'" in advice.message and "no such class" in advice.message


@pytest.mark.usefixtures("quick_training")
def test_training_honours_the_overrides(planted, tmp_path, monkeypatch):
    from engine.train import trainer as trainer_module

    seen: list[tuple[str, int]] = []
    real = trainer_module.ImageDataset

    class Recording(real):
        def __init__(self, paths, labels, *args, **kwargs):
            seen.extend(zip(paths, labels))
            super().__init__(paths, labels, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "ImageDataset", Recording)
    excluded = planted["root"] / "train" / "red" / "pixel.png"
    config = RunConfig(data=DataConfig(source=str(planted["root"]), exclude=("train/red/pixel.png",),
                                       relabel={"train/blue/really-red.png": "red"}),
                       model=ModelConfig(MODEL, "none"), epochs=1,
                       train=TrainConfig(batch_size=8, workers=0, warmup_epochs=0.0, cache_features=False), out=str(tmp_path))
    result = trainer_module.fit(config)
    assert result.status == "completed", result.error
    classes = json.loads((Path(result.run_dir) / "labels.json").read_text())
    assert str(excluded) not in {p for p, _ in seen}  # in no loader
    assert {classes[label] for p, label in seen if p == str(planted["wrong"])} == {"red"}
    dataset = json.loads((Path(result.run_dir) / "dataset.json").read_text())
    assert str(excluded) not in {s["path"] for s in dataset["samples"]}
    assert dataset["health"]["overrides"] == {"excluded": [str(excluded)],
                                              "relabelled": {str(planted["wrong"]): "red"}}


# --- apply to folders -----------------------------------------------------------------------------------------


def test_apply_to_folders_moves_the_files_and_undo_moves_them_back(planted, tmp_path):
    root = tmp_path / "pictures"
    shutil.copytree(planted["root"], root)
    before = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    index = scan(root)
    applied = apply_to_folders(index, ["train/red/pixel.png"], {"train/blue/really-red.png": "red"})
    assert sorted(applied.excluded) == ["train/red/pixel.png"]
    assert applied.relabelled == ["train/blue/really-red.png"]
    assert (root / EXCLUDED_FOLDER / "train" / "red" / "pixel.png").is_file()
    assert (root / "train" / "red" / "really-red.png").is_file()
    assert not (root / "train" / "blue" / "really-red.png").exists()
    assert len(undo_logs(root)) == 1
    rescanned = scan(root)  # the excluded picture is out of the dataset; the relabelled one is red now
    by_path = {s.path: rescanned.classes[s.label] for s in rescanned.samples}
    assert str(root / "train" / "red" / "pixel.png") not in by_path
    assert by_path[str(root / "train" / "red" / "really-red.png")] == "red"

    undone = undo_last(root)
    assert len(undone.moves) == 2 and not undone.skipped
    assert sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file()) == before
    assert not (root / EXCLUDED_FOLDER).exists() and undo_logs(root) == []
    with pytest.raises(UserError, match="nothing to undo"):
        undo_last(root)


def test_apply_to_folders_never_overwrites_and_refuses_a_csv(planted, tmp_path):
    root = tmp_path / "pictures"
    shutil.copytree(planted["root"], root)
    shutil.copy(root / "train" / "blue" / "blue-00.png", root / "train" / "red" / "blue-00.png")
    index = scan(root)
    applied = apply_to_folders(index, (), {"train/blue/blue-00.png": "red"})
    assert (root / "train" / "red" / "blue-00 (2).png").is_file() and (root / "train" / "red" / "blue-00.png").is_file()
    assert len(applied.moves) == 1
    csv = tmp_path / "list.csv"
    csv.write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in (root / "train").rglob("*.png")))
    with pytest.raises(UserError, match="CSV file"):
        apply_to_folders(scan(csv), ["x.png"])
