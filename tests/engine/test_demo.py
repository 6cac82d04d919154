"""The demo: its pictures are made once, in the data folder, the same on every machine; its settings need no
download and train the whole network; a short run completes offline."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from engine.data.scan import scan
from engine.project.demo import (DEMO_CLASSES, DEMO_PER_CLASS, demo_config, demo_folder, ensure_demo_dataset,
                         make_patterns_dataset, open_demo_project)
from engine.errors import UserError
from engine.project.project import open_project


def _digest(folder) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.png")):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_the_demo_pictures_are_made_once_in_the_data_folder(tmp_path):
    pictures = ensure_demo_dataset(tmp_path)
    assert pictures == demo_folder(tmp_path) / "patterns"
    assert sorted(p.name for p in pictures.iterdir()) == sorted(DEMO_CLASSES)
    assert all(len(list((pictures / c).glob("*.png"))) == DEMO_PER_CLASS for c in DEMO_CLASSES)

    stamp = (pictures / "dots" / "dots_000.png").stat().st_mtime_ns
    assert ensure_demo_dataset(tmp_path) == pictures
    assert (pictures / "dots" / "dots_000.png").stat().st_mtime_ns == stamp  # not made again


def test_an_interrupted_demo_is_made_again(tmp_path):
    pictures = ensure_demo_dataset(tmp_path)
    (demo_folder(tmp_path) / "patterns.version").unlink()  # as if the app died before finishing
    (pictures / "checks" / "checks_003.png").unlink()
    ensure_demo_dataset(tmp_path)
    assert (pictures / "checks" / "checks_003.png").is_file()


def test_the_demo_pictures_are_the_same_on_every_machine(tmp_path):
    a = make_patterns_dataset(tmp_path / "a", per_class=5)
    b = make_patterns_dataset(tmp_path / "b", per_class=5)
    c = make_patterns_dataset(tmp_path / "c", per_class=5, seed=1)
    assert _digest(a) == _digest(b) != _digest(c)


def test_cancelling_leaves_no_half_made_demo(tmp_path):
    import threading

    stop = threading.Event()
    calls = []

    def progress(done, total):
        calls.append(done)
        if done == 10:  # (of 180)
            stop.set()

    with pytest.raises(UserError, match="cancelled"):
        ensure_demo_dataset(tmp_path, on_progress=progress, stop=stop)
    assert not (demo_folder(tmp_path) / "patterns").exists()
    assert [p.name for p in demo_folder(tmp_path).iterdir()] == []  # the temporary folder is gone too


def test_the_demo_dataset_is_healthy_and_balanced(tmp_path):
    index = scan(ensure_demo_dataset(tmp_path))
    assert index.classes == sorted(DEMO_CLASSES)
    counts = index.counts()
    assert all(counts["train"][c] == 48 and counts["val"][c] == 12 for c in DEMO_CLASSES)
    assert index.health.unreadable == [] and index.health.advice == [] and index.health.ignored == 0


def test_the_demo_settings_need_no_download_and_train_the_whole_network(tmp_path):
    from engine.train.strategies import resolve_phases
    from engine.models.layers import build_layer_tree
    from engine.models.build import build_model

    config = demo_config(tmp_path / "patterns", tmp_path / "runs")
    assert config.model.weights == "none"
    built = build_model(config.model.name, config.model.weights, len(DEMO_CLASSES), allow_download=False)
    tree = build_layer_tree(built.model, built.head)
    (phase,) = resolve_phases(config, tree)
    assert set(phase.stages) == set(tree.names)  # every stage trains ...
    assert set(phase.stages.values()) == {1.0}  # ... at the full rate: there is nothing pretrained to protect
    assert phase.bn == "train"


def test_the_demo_project_is_saved_in_the_data_folder_and_reopened(tmp_path):
    project = open_demo_project(tmp_path)
    assert project.path == str(demo_folder(tmp_path) / "Patterns demo.tsproj")
    assert project.dataset == str(demo_folder(tmp_path) / "patterns")
    assert project.config.out == str(demo_folder(tmp_path) / "runs")
    assert open_project(project.path, data_dir=tmp_path).project == project

    # A demo project the user changed and saved is opened as it was left.
    from engine.project.project import save_project

    save_project(project.with_config(dataclasses.replace(project.config, epochs=2)), project.path, data_dir=tmp_path)
    assert open_demo_project(tmp_path).config.epochs == 2


def test_a_short_demo_run_completes_offline(tmp_path):
    from engine.train.trainer import fit

    pictures = make_patterns_dataset(tmp_path / "patterns", per_class=8)
    config = demo_config(pictures, tmp_path / "runs")
    config = dataclasses.replace(config, epochs=1, train=dataclasses.replace(config.train, batch_size=8))
    result = fit(config)
    assert result.status == "completed", result.error
    assert result.best_val_acc is not None
