"""The model library: imported weight files (checked, stored as .safetensors with a note of their architecture),
and the models of earlier runs."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine import files
from engine.project import runs
from engine.errors import ModelError
from engine.project.library import ModelLibrary, default_library_dir, trained_models
from engine.models.build import build_model


@pytest.fixture(scope="module")
def mobilenet_state():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.mobilenet_v2().state_dict()


@pytest.fixture
def library(tmp_path) -> ModelLibrary:
    return ModelLibrary(tmp_path / "library")


def stored_files(library: ModelLibrary) -> list[str]:
    return sorted(p.name for p in library.root.iterdir()) if library.root.exists() else []


def test_the_library_lives_in_the_users_data_folder():
    path = default_library_dir()
    assert path.name == "models" and path.parent.name == "Transfer Studio"


def test_a_pth_file_is_imported_as_safetensors_and_trains(library, tmp_path, mobilenet_state):
    source = tmp_path / "downloads" / "my mobilenet.pth"
    source.parent.mkdir()
    torch.save({"state_dict": mobilenet_state}, source)  # as many training scripts save it
    entry = library.import_file(source, "torchvision:mobilenet_v2")
    stored = Path(entry.path)
    assert stored.parent == library.root and stored.suffix == ".safetensors"
    assert entry.architecture == "torchvision:mobilenet_v2" and entry.label == "my mobilenet.pth"
    assert entry.tensors == len(mobilenet_state)
    assert entry.params == sum(t.numel() for t in mobilenet_state.values())
    note = json.loads(stored.with_suffix(".json").read_text())
    assert note["architecture"] == "torchvision:mobilenet_v2" and note["source"] == str(source.resolve())
    loaded = load_file(str(stored))
    assert set(loaded) == set(mobilenet_state)
    assert all(torch.equal(loaded[k], mobilenet_state[k]) for k in loaded)
    assert library.imported() == [entry] and library.for_architecture("torchvision:mobilenet_v2") == [entry]
    assert not [p for p in library.root.iterdir() if p.name.endswith(".tmp")]  # written atomically
    # The engine trains from the stored file: the body is the imported weights, the head is new.
    built = build_model("torchvision:mobilenet_v2", entry.path, 3)
    assert torch.equal(built.model.state_dict()["features.0.0.weight"], mobilenet_state["features.0.0.weight"])


def test_importing_the_same_file_twice_keeps_one_copy(library, tmp_path, mobilenet_state):
    source = tmp_path / "w.safetensors"
    save_file(mobilenet_state, str(source))
    first = library.import_file(source)
    assert first.architecture is None
    again = library.import_file(source, "torchvision:mobilenet_v2")  # now with its architecture known
    assert again.path == first.path and again.architecture == "torchvision:mobilenet_v2"
    assert len(library.imported()) == 1 and library.imported()[0].architecture == "torchvision:mobilenet_v2"


def test_weights_for_another_architecture_are_refused(library, tmp_path, mobilenet_state):
    source = tmp_path / "mobilenet.safetensors"
    save_file(mobilenet_state, str(source))
    with pytest.raises(ModelError) as info:
        library.import_file(source, "timm:resnet18")
    assert "do not fit" in str(info.value) and "choose the matching model" in str(info.value)
    assert stored_files(library) == []


def test_an_unsafe_or_damaged_file_is_refused_and_nothing_is_stored(library, tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this would run",))

    unsafe = tmp_path / "unsafe.pt"
    unsafe.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ModelError) as info:
        library.import_file(unsafe)
    assert "refused" in str(info.value)
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"\x00" * 40)
    with pytest.raises(ModelError):
        library.import_file(damaged)
    assert stored_files(library) == []


def test_tied_weights_are_stored(library, tmp_path):
    shared = torch.randn(4, 4)
    source = tmp_path / "tied.pt"
    torch.save({"embed.weight": shared, "head.weight": shared, "row": shared[0]}, source)
    entry = library.import_file(source)
    loaded = load_file(entry.path)
    assert torch.equal(loaded["embed.weight"], shared) and torch.equal(loaded["row"], shared[0])


def make_run(out: Path, name: str, model: str, classes: list[str], state: dict | None, acc: float | None) -> Path:
    run = out / name
    run.mkdir(parents=True)
    (run / runs.CONFIG).write_text(f'version = 1\n[model]\nname = "{model}"\n')
    files.atomic_write_json(run / runs.MODEL, {"model": model, "weights": "none", "head": "classifier"})
    files.atomic_write_json(run / runs.LABELS, classes)
    files.atomic_write_json(run / runs.SUMMARY, {"status": "completed", "best_val_acc": acc, "strategy": "lp-ft"})
    if state is not None:
        save_file(state, str(run / runs.BEST))
    return run


def test_earlier_runs_that_left_weights_are_listed(tmp_path, mobilenet_state):
    out = tmp_path / "runs"
    make_run(out, "20250101-100000-mobilenet_v2-lp-ft", "torchvision:mobilenet_v2", ["ant", "bee"],
             mobilenet_state, 0.93)
    make_run(out, "20250102-100000-resnet18-stopped", "timm:resnet18", ["a", "b"], None, None)  # no weights
    broken = make_run(out, "20250103-100000-broken", "timm:resnet18", ["a"], mobilenet_state, 0.5)
    (broken / runs.MODEL).write_text("{damaged")
    (found,) = trained_models(out)
    assert found.architecture == "torchvision:mobilenet_v2" and found.classes == ("ant", "bee")
    assert found.path.endswith(runs.BEST) and found.best_val_acc == 0.93 and found.strategy == "lp-ft"
    assert "2 classes" in found.label and "93%" in found.label
    assert trained_models(tmp_path / "nowhere") == []


def test_a_runs_weights_import_with_their_architecture(library, tmp_path, mobilenet_state):
    run = make_run(tmp_path / "runs", "20250101-100000-x", "torchvision:mobilenet_v2", ["a", "b"],
                   mobilenet_state, 0.9)
    entry = library.import_file(run / runs.BEST)
    assert entry.architecture == "torchvision:mobilenet_v2"  # read from the run's model.json
