"""Files from someone else cannot make the app run code or write outside its folders.

- No pickle ever runs: a run folder or an exported model whose weights were replaced by a pickle that would create a
  file when unpickled, the same pickle given as a weight file, or imported into the model library: each is refused
  with a sentence, and the file it would create never appears.
- Paths inside files: a run name with path separators, a project whose ``out`` or run name climbs out of its folder,
  and a model-library entry naming a file elsewhere never make the app write (or delete) outside its folders.
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import pytest
import torch

from engine.project import runs
from engine.config import RunConfig
from engine.errors import ModelError, UserError
from engine.project.library import ImportedWeights, ModelLibrary
from engine.models.build import build_model
from engine.models.weights import read_weight_file
from engine.results.predict import load_run_model
from engine.project.project import Project, open_project, safe_file_stem, save_project

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _CreatesAFile:
    """Unpickling this calls open(marker, "w"): it would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def write_malicious_pickle(path: Path, marker: Path, writer: str) -> None:
    contents = {"fc.weight": torch.zeros(2, 2), "trap": _CreatesAFile(marker)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if writer == "torch.save":
            torch.save(contents, path)
        else:
            path.write_bytes(pickle.dumps(contents))
    assert not marker.exists()  # writing it did not run the payload


def plain_sentence(exc: BaseException) -> str:
    text = str(exc)
    assert isinstance(exc, UserError) and text and "\n" not in text and "Traceback" not in text
    return text


# --- no pickle ever runs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_run_whose_best_weights_were_replaced_by_a_malicious_pickle(tiny_run, tmp_path, writer):
    marker = tmp_path / "pwned"
    best = tiny_run / runs.BEST
    original = best.read_bytes()
    try:
        write_malicious_pickle(best, marker, writer)
        with pytest.raises(ModelError) as info:  # predict, the Predict step, evaluate and export load it this way
            load_run_model(tiny_run, device="cpu")
        assert "best.safetensors is not a safetensors file" in plain_sentence(info.value)
        assert not marker.exists()
        with pytest.raises(ModelError, match="not a safetensors file"):  # the run's weights given as --weights
            build_model("timm:test_resnet", str(best), 3)
        assert not marker.exists()
        with pytest.raises(ModelError, match="not a safetensors file"):  # the Model step's library import
            ModelLibrary(tmp_path / "library").import_file(best)
        assert not marker.exists() and not (tmp_path / "library").exists()
    finally:
        best.write_bytes(original)
    assert load_run_model(tiny_run, device="cpu").classes == ("blue", "green", "red")  # the real file still loads


def test_an_exported_model_whose_weights_are_a_malicious_pickle(tiny_run, tmp_path):
    info = json.loads((tiny_run / runs.MODEL).read_text(encoding="utf-8"))
    bundle = tmp_path / "export"
    bundle.mkdir()
    (bundle / runs.MODEL).write_text(json.dumps({"architecture": info["model"], "classes": ["a", "b", "c"],
                                                 "data_config": info["data_config"]}), encoding="utf-8")
    marker = tmp_path / "pwned"
    write_malicious_pickle(bundle / "model.safetensors", marker, "torch.save")
    with pytest.raises(ModelError) as caught:
        load_run_model(bundle, device="cpu")
    assert "model.safetensors is not a safetensors file" in plain_sentence(caught.value)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin"])
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_malicious_pickle_imported_into_the_model_library_runs_nothing(tmp_path, suffix, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / f"downloaded{suffix}"
    write_malicious_pickle(path, marker, writer)
    library = ModelLibrary(tmp_path / "library")
    with pytest.raises(ModelError) as info:
        library.import_file(path, "timm:test_resnet")
    text = plain_sentence(info.value)
    assert "was refused" in text and "run code" in text
    assert not marker.exists()
    assert library.imported() == [] and not library.root.exists()


def test_a_safetensors_header_is_never_taken_for_a_pickle(tmp_path):
    """A real .safetensors file whose header length starts with the byte a pickle starts with (0x80) still loads."""
    from safetensors.torch import save_file

    for n in range(1, 200):  # find tensor names that give a header of exactly 0x80 + 256 * k bytes
        path = tmp_path / f"w{n}.safetensors"
        save_file({"w" * n: torch.zeros(1)}, str(path))
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.skip("no header of that length was made")
    assert torch.equal(read_weight_file(path)["w" * n], torch.zeros(1))


# --- paths inside files --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../escape", "/etc/passwd", "..\\..\\windows", "..", "a/../../b", "~/x", ""])
def test_a_run_name_with_path_separators_stays_inside_the_output_folder(tmp_path, name):
    out = tmp_path / "project" / "runs"
    made = runs.create_run_dir(out, "timm:test_resnet", "feature-extraction", name)
    assert made.parent == out and made.is_dir()
    assert "/" not in made.name and "\\" not in made.name and made.name not in (".", "..")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]  # nothing written beside the project


def test_a_project_naming_its_runs_outside_its_folder_runs_inside_it(tmp_path):
    folder = tmp_path / "shared" / "project"
    folder.mkdir(parents=True)
    path = folder / "hostile.tsproj"
    path.write_text('[project]\nformat = "transfer-studio-project"\nversion = 1\nname = "../../../escape"\n'
                    '[config]\nout = "../../outside"\nname = "../../escape"\n', encoding="utf-8")
    opened = open_project(path, data_dir=tmp_path / "app-data")
    config = opened.project.config
    assert config.out == str(folder / "runs")
    assert opened.notes and "outside the project's folder" in opened.notes[0]
    # Where a run of this project is created (engine.train.trainer does exactly this with the project's settings).
    made = runs.create_run_dir(config.out, config.model.name, config.strategy, config.name)
    assert made.parent == folder / "runs"
    # The project's name only names files through safe_file_stem (the Save As suggestion): no folders in it.
    stem = safe_file_stem(opened.project.name)
    assert "/" not in stem and "\\" not in stem and stem not in (".", "..")
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["shared", "project", "hostile.tsproj", "runs", made.name, runs.METRICS])


def test_a_project_cannot_send_its_runs_out_through_a_link(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    try:
        (folder / "runs-link").symlink_to(elsewhere, target_is_directory=True)
    except OSError:
        pytest.skip("symbolic links are not available here")
    saved = save_project(Project("L", RunConfig()), folder / "l.tsproj")
    text = Path(saved.path).read_text(encoding="utf-8")
    Path(saved.path).write_text(text.replace('out = "runs"', 'out = "runs-link"'), encoding="utf-8")
    opened = open_project(saved.path, data_dir=tmp_path / "app-data")
    assert opened.project.config.out == str(folder / "runs")
    assert str(elsewhere) in opened.notes[0]


def test_a_library_entry_naming_a_file_elsewhere_is_never_used_or_deleted(tmp_path):
    victim = tmp_path / "documents" / "thesis.safetensors"
    victim.parent.mkdir()
    victim.write_bytes(b"precious")
    library = ModelLibrary(tmp_path / "library")
    library.root.mkdir()
    entry = {"path": str(victim), "label": "thesis.safetensors", "architecture": "timm:resnet18",
             "source": str(victim), "imported": "2026-01-01T00:00:00", "tensors": 1, "params": 1, "sha256": "0" * 64}
    (library.root / "planted.json").write_text(json.dumps(entry), encoding="utf-8")
    assert library.imported() == []  # not offered in the Model step
    with pytest.raises(ModelError, match="not stored in the model library"):
        library.remove(ImportedWeights(**entry))
    assert victim.read_bytes() == b"precious"


def test_a_very_long_run_name_still_makes_a_run_folder(tmp_path):
    from engine.project.runs import create_run_dir

    run = create_run_dir(tmp_path, "timm:resnet18", "feature-extraction", name="leaf spots " * 60)
    assert run.is_dir() and run.parent == tmp_path and len(run.name) < 130
