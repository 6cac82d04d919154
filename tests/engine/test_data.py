"""Dataset scanning: layouts, splits, skipped and unreadable files, health advice and errors."""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from engine.data.scan import DataError, DatasetIndex, HealthReport, Problem, scan, stratified_split

HYMENOPTERA = Path(__file__).parents[3] / "shared" / "datasets" / "hymenoptera"


def _picture(path: Path, shade: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade, 255 - shade, 90)).save(path)
    return path


def _classes(root: Path, sizes: dict[str, int]) -> Path:
    for name, n in sizes.items():
        for i in range(n):
            _picture(root / name / f"{name}_{i:03d}.png", shade=i % 256)
    return root


def _advice_kinds(index: DatasetIndex) -> list[str]:
    return [item.kind for item in index.health.advice]


def _splits_by_name(index: DatasetIndex) -> dict[str, str]:
    return {Path(s.path).relative_to(index.root).as_posix(): s.split for s in index.samples}


# --- layouts -----------------------------------------------------------------------------------------------------


def test_class_folders(tmp_path: Path) -> None:
    _classes(tmp_path, {"dog": 12, "cat": 15})
    _picture(tmp_path / "dog" / "puppies" / "deep" / "nested.png")  # nested folders count for their class
    index = scan(tmp_path, val_fraction=0.2)
    assert index.layout == "class-folders"
    assert index.split_source == "random"
    assert index.root == str(tmp_path)
    assert index.classes == ["cat", "dog"]
    assert len(index.samples) == 28
    assert [s.path for s in index.samples] == sorted(s.path for s in index.samples)
    assert all(os.path.isabs(s.path) for s in index.samples)
    assert any(s.path.endswith("nested.png") and index.classes[s.label] == "dog" for s in index.samples)
    assert index.counts() == {
        "train": {"cat": 12, "dog": 10},
        "val": {"cat": 3, "dog": 3},
        "test": {"cat": 0, "dog": 0},
    }
    assert index.split("val") == [s for s in index.samples if s.split == "val"]
    assert index.health.unreadable == [] and index.health.advice == []
    assert index.health.lines() == ["No problems found."]


def test_split_folders(tmp_path: Path) -> None:
    _classes(tmp_path / "train", {"ant": 12, "bee": 11})
    _classes(tmp_path / "valid", {"ant": 3, "bee": 4, "wasp": 2})  # "valid" is accepted for "val"
    _classes(tmp_path / "test", {"ant": 2, "bee": 2})
    index = scan(tmp_path, test_fraction=0.3)  # the data gives its own test split: the fraction is unused
    assert index.layout == "split-folders"
    assert index.split_source == "folders"
    assert index.classes == ["ant", "bee", "wasp"]  # union over the splits
    assert index.counts() == {
        "train": {"ant": 12, "bee": 11, "wasp": 0},
        "val": {"ant": 3, "bee": 4, "wasp": 2},
        "test": {"ant": 2, "bee": 2, "wasp": 0},
    }
    assert _advice_kinds(index) == ["missing-in-train"]
    assert "'wasp'" in index.health.advice[0].message


def test_split_folders_can_be_pooled_and_split_at_random(tmp_path: Path) -> None:
    _classes(tmp_path / "train", {"ant": 12, "bee": 12})
    _classes(tmp_path / "val", {"ant": 4, "bee": 4})
    _classes(tmp_path / "test", {"ant": 4, "bee": 4})
    index = scan(tmp_path, val_fraction=0.25, test_fraction=0.25, seed=3, split="random")
    assert index.split_source == "random" and index.own_split  # the val folder is there, set aside on request
    # All 20 pictures of each class are pooled, whatever folder they are in, and a quarter drawn for each split.
    assert index.counts() == {"train": {"ant": 10, "bee": 10}, "val": {"ant": 5, "bee": 5},
                              "test": {"ant": 5, "bee": 5}}
    folders = {Path(s.path).parent.parent.name for s in index.samples if s.split == "val"}
    assert len(folders) > 1  # drawn from several folders, not the val folder renamed
    assert index.samples == scan(tmp_path, val_fraction=0.25, test_fraction=0.25, seed=3, split="random").samples
    assert scan(tmp_path, split="auto").split_source == "folders"
    assert not scan(tmp_path / "train").own_split  # plain class folders bring no split of their own
    with pytest.raises(DataError, match="Unknown split 'sideways'"):
        scan(tmp_path, split="sideways")


def test_split_folders_with_only_train_are_split_randomly(tmp_path: Path) -> None:
    _classes(tmp_path / "train", {"ant": 10, "bee": 10})
    index = scan(tmp_path, val_fraction=0.2, test_fraction=0.1)
    assert index.layout == "split-folders"
    assert index.split_source == "random"
    assert index.counts() == {
        "train": {"ant": 7, "bee": 7},
        "val": {"ant": 2, "bee": 2},
        "test": {"ant": 1, "bee": 1},
    }


def test_csv_with_split_column(tmp_path: Path) -> None:
    for i in range(4):
        _picture(tmp_path / "img" / f"r{i}.png")
    outside = _picture(tmp_path / "elsewhere" / "abs.png")
    csv_path = tmp_path / "img" / "labels.csv"
    csv_path.write_text(
        "Path,Label,Split\n"
        "r0.png,red,train\n"
        "r1.png,red,val\n"
        f"{outside},blue,train\n"
        "r2.png,blue,validation\n"
        "r3.png,blue,test\n"
        "gone.png,blue,train\n"
        "\n",
        encoding="utf-8",
    )
    index = scan(csv_path)
    assert index.layout == "csv"
    assert index.split_source == "folders"
    assert index.root == str(csv_path)
    assert index.classes == ["blue", "red"]
    assert index.counts() == {
        "train": {"blue": 1, "red": 1},
        "val": {"blue": 1, "red": 1},
        "test": {"blue": 1, "red": 0},
    }
    assert str(outside) in {s.path for s in index.samples}
    assert index.health.unreadable == [Problem(str(tmp_path / "img" / "gone.png"), "The file does not exist.")]
    assert "unreadable" in _advice_kinds(index)


def test_csv_without_split_column_is_split_randomly(tmp_path: Path) -> None:
    rows = []
    for label in ("a", "b"):
        for i in range(5):
            _picture(tmp_path / f"{label}{i}.jpg")
            rows.append(f"{label}{i}.jpg,{label}")
    (tmp_path / "data.csv").write_text("path,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    index = scan(tmp_path / "data.csv", val_fraction=0.2)
    assert index.split_source == "random"
    assert index.counts()["val"] == {"a": 1, "b": 1}


def test_csv_row_problems_are_reported(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        _picture(tmp_path / name)
    (tmp_path / "data.csv").write_text(
        "path,label,split\na.png,x,train\nb.png,y,val\nc.png,,train\nc.png,y,holdout\na.png,x,train\n",
        encoding="utf-8",
    )
    index = scan(tmp_path / "data.csv")
    reasons = [problem.reason for problem in index.health.unreadable]
    assert reasons == [
        "Line 4 of the CSV file has no label.",
        "Line 5 of the CSV file has the split 'holdout': use train, val or test.",
    ]
    assert "duplicate-path" in _advice_kinds(index)


# --- splits --------------------------------------------------------------------------------------------------------


def test_stratified_split_is_stratified_and_seeded() -> None:
    labels = [0] * 50 + [1] * 30 + [2] * 2 + [3]
    split = stratified_split(labels, 0.2, 0.1, seed=7)
    per_class = {label: Counter(s for s, lab in zip(split, labels, strict=True) if lab == label) for label in range(4)}
    assert per_class[0] == {"train": 35, "val": 10, "test": 5}
    assert per_class[1] == {"train": 21, "val": 6, "test": 3}
    assert per_class[2] == {"train": 1, "val": 1}  # at least one validation picture, one kept for training
    assert per_class[3] == {"train": 1}
    assert stratified_split(labels, 0.2, 0.1, seed=7) == split
    assert stratified_split(labels, 0.2, 0.1, seed=8) != split
    assert stratified_split(labels, 0.0, 0.0, seed=7) == ["train"] * len(labels)
    with pytest.raises(ValueError):
        stratified_split(labels, 0.7, 0.3, seed=0)


def test_scan_split_does_not_depend_on_creation_order(tmp_path: Path) -> None:
    names = [f"{i:02d}.png" for i in range(20)]
    for root, order in ((tmp_path / "a", names), (tmp_path / "b", names[::-1])):
        for cls in ("x", "y"):
            for name in order:
                _picture(root / cls / name)
    first = scan(tmp_path / "a", seed=3)
    assert _splits_by_name(first) == _splits_by_name(scan(tmp_path / "b", seed=3))
    assert _splits_by_name(first) == _splits_by_name(scan(tmp_path / "a", seed=3, workers=1))
    assert _splits_by_name(first) != _splits_by_name(scan(tmp_path / "a", seed=4))


# --- skipped and unreadable files ----------------------------------------------------------------------------------


def test_hidden_and_other_files_are_ignored(tmp_path: Path) -> None:
    _classes(tmp_path, {"a": 10, "b": 10})
    (tmp_path / "a" / "notes.txt").write_text("not a picture")
    _picture(tmp_path / "a" / ".hidden.png")
    _picture(tmp_path / ".thumbnails" / "t.png")  # a hidden folder is skipped, not taken for a class
    _picture(tmp_path / "b" / ".cache" / "c.png")
    (tmp_path / "README.md").write_text("about")
    index = scan(tmp_path)
    assert index.classes == ["a", "b"]
    assert len(index.samples) == 20
    assert index.health.ignored == 5
    assert index.health.unreadable == []


def test_unreadable_pictures_are_left_out(tmp_path: Path) -> None:
    _classes(tmp_path, {"a": 12, "b": 12})
    (tmp_path / "a" / "empty.jpg").write_bytes(b"")
    (tmp_path / "a" / "text.jpg").write_text("I am text")
    whole = tmp_path / "whole.jpg"
    Image.effect_noise((64, 64), 60).convert("RGB").save(whole)
    (tmp_path / "b" / "cut.jpg").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    progress: list[tuple[int, int]] = []
    index = scan(tmp_path, on_progress=lambda done, total: progress.append((done, total)))
    reasons = {Path(p.path).name: p.reason for p in index.health.unreadable}
    assert reasons == {
        "cut.jpg": "The picture is cut short (the file is truncated or damaged).",
        "empty.jpg": "The file is empty.",
        "text.jpg": "The file is not a picture (it could not be recognised as a JPEG, PNG, BMP, GIF, TIFF or WebP "
        "image).",
    }
    assert len(index.samples) == 24
    assert not {Path(s.path).name for s in index.samples} & set(reasons)
    assert progress[0] == (0, 27) and progress[-1] == (27, 27)
    assert _advice_kinds(index) == ["unreadable"]
    assert index.health.advice[0].message.startswith("3 files could not be used and were left out")
    assert any("cut.jpg: The picture is cut short" in line for line in index.health.lines())

    unchecked = scan(tmp_path, verify=False)  # no decoding: the damaged files are not detected
    assert len(unchecked.samples) == 27


def test_symlink_loop_does_not_hang(tmp_path: Path) -> None:
    _classes(tmp_path, {"a": 3, "b": 3})
    try:
        (tmp_path / "a" / "loop").symlink_to(tmp_path / "a", target_is_directory=True)
        (tmp_path / "b" / "up").symlink_to(tmp_path, target_is_directory=True)
    except OSError:
        pytest.skip("symbolic links are not available here")
    result: list[DatasetIndex] = []
    worker = threading.Thread(target=lambda: result.append(scan(tmp_path, verify=False)), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert result, "the scan did not finish"
    counts = result[0].counts()
    assert sum(counts["train"].values()) + sum(counts["val"].values()) >= 6


def test_class_and_file_names_with_spaces_and_non_ascii_letters(tmp_path: Path) -> None:
    for name in ("Bäume & Sträucher", "日本 の 花"):
        for i in range(3):
            _picture(tmp_path / name / f"été à Zürich {i}.png", shade=40 * i)
    index = scan(tmp_path)
    assert index.classes == ["Bäume & Sträucher", "日本 の 花"]
    assert len(index.samples) == 6 and index.health.unreadable == []
    assert json.loads(json.dumps(index.to_dict(with_samples=True), ensure_ascii=False))["classes"] == index.classes


def test_a_folder_that_cannot_be_read_is_reported_and_the_rest_is_used(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _classes(tmp_path, {"a": 3, "b": 3})
    locked = tmp_path / "a" / "locked"
    _picture(locked / "hidden-from-us.png")
    real_scandir = os.scandir

    def scandir(path=".") -> object:  # chmod 000 on a folder stops everyone but root: refuse it here instead
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(locked))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    index = scan(tmp_path)
    assert index.health.unreadable == [Problem(str(locked), "The folder cannot be read (permission denied).")]
    assert len(index.samples) == 6


# --- errors --------------------------------------------------------------------------------------------------------


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^The folder .*nowhere does not exist\.$"):
        scan(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"^No pictures were found in .*: put one sub-folder per class"):
        scan(tmp_path)
    _picture(tmp_path / "loose.png")
    with pytest.raises(DataError, match="not sorted into classes"):
        scan(tmp_path)
    _classes(tmp_path / "validation", {"a": 2, "b": 2})
    with pytest.raises(DataError, match="has a 'validation' folder but no 'train' folder"):
        scan(tmp_path)


def test_single_class_is_refused(tmp_path: Path) -> None:
    _classes(tmp_path / "only", {"cats": 5})
    with pytest.raises(DataError, match=r"Only one class \('cats'\).*at least two classes"):
        scan(tmp_path / "only")


def test_no_readable_picture_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"None of the 1 picture .*The file is empty"):
        scan(tmp_path)


def test_bad_csv(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"must have the columns path,label \(found: a,b\)\.$"):
        scan(bad)
    bad.write_bytes(b"path,label\n\xff\xfe,\x80\n")
    with pytest.raises(DataError, match="save it as UTF-8 text"):
        scan(bad)
    with pytest.raises(DataError, match=r"^The file .*missing\.csv does not exist\.$"):
        scan(tmp_path / "missing.csv")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="is not a folder or a CSV file"):
        scan(tmp_path / "notes.txt")


def test_cancel_and_bad_fractions(tmp_path: Path) -> None:
    _classes(tmp_path, {"a": 2, "b": 2})
    stop = threading.Event()
    stop.set()
    with pytest.raises(DataError, match=r"^The scan was cancelled\.$"):
        scan(tmp_path, stop=stop)
    with pytest.raises(DataError, match="fractions"):
        scan(tmp_path, val_fraction=0.6, test_fraction=0.5)


# --- health --------------------------------------------------------------------------------------------------------


def test_few_images_and_imbalance_advice(tmp_path: Path) -> None:
    _classes(tmp_path, {"big": 60, "small": 4, "mid": 12})
    index = scan(tmp_path, val_fraction=0.25, verify=False)
    advice = {item.kind: item.message for item in index.health.advice}
    assert set(advice) == {"few-images", "imbalance"}
    assert advice["few-images"] == (
        "Class 'small' has only 3 training pictures: add more (at least 20 is a good start) "
        "or merge it with a similar class."
    )
    assert advice["imbalance"].startswith("The classes are unbalanced: 'big' has 45 training pictures but 'small'")


def test_missing_validation_advice(tmp_path: Path) -> None:
    _classes(tmp_path / "train", {"a": 10, "b": 10})
    _classes(tmp_path / "val", {"a": 2})
    assert "missing-in-val" in _advice_kinds(scan(tmp_path, verify=False))
    assert _advice_kinds(scan(tmp_path / "train", val_fraction=0.0, verify=False)) == ["no-validation"]


def test_to_dict_is_json(tmp_path: Path) -> None:
    _classes(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "b" / "bad.png").write_bytes(b"")
    index = scan(tmp_path)
    summary = json.loads(json.dumps(index.to_dict(with_samples=True)))
    assert summary["layout"] == "class-folders"
    assert summary["classes"] == ["a", "b"]
    assert summary["totals"] == {"train": 4, "val": 2, "test": 0}
    assert summary["health"]["unreadable"][0]["reason"] == "The file is empty."
    assert {"path", "label", "class", "split"} == set(summary["samples"][0])
    assert "samples" not in index.to_dict()
    assert HealthReport().to_dict() == {"unreadable": [], "ignored": 0, "advice": []}


# --- a real dataset ------------------------------------------------------------------------------------------------


@pytest.mark.shared
@pytest.mark.skipif(not HYMENOPTERA.is_dir(), reason="shared hymenoptera dataset not present")
def test_hymenoptera() -> None:
    index = scan(HYMENOPTERA)
    assert index.layout == "split-folders"
    assert index.split_source == "folders"
    assert index.classes == ["ants", "bees"]
    assert index.counts() == {
        "train": {"ants": 124, "bees": 121},  # imageNotFound.gif among the ants is a real, decodable GIF
        "val": {"ants": 70, "bees": 83},
        "test": {"ants": 0, "bees": 0},
    }
    assert index.health.unreadable == []
