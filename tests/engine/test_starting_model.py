"""A new project starts with a model that can start on this computer now: the default when its pretrained weights
are here, else a recommended model whose pretrained weights are cached, else the newest imported weight file, and
only then the default (whose Model step then says what is missing)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import engine.models.build as models
from engine.models import catalogue
from engine.project.library import ModelLibrary
from engine.project.project import new_project
from engine.project.starting import starting_model


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Offline, with empty Hugging Face and torch hub caches for this test only."""
    import huggingface_hub.constants as hf

    monkeypatch.setenv(models.OFFLINE_ENV, "1")
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    saved = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torchhub"))
    yield tmp_path / "torchhub"
    torch.hub.set_dir(saved)


def test_with_nothing_here_a_new_project_keeps_the_default(empty_caches, tmp_path):
    model = starting_model(tmp_path / "library")
    assert (model.name, model.weights) == ("timm:resnet18", "pretrained")


def test_an_imported_weight_file_is_where_a_new_project_starts(empty_caches, tmp_path):
    import timm

    source = tmp_path / "from-a-colleague.safetensors"
    save_file(timm.create_model("mobilenetv3_small_100").state_dict(), str(source))
    entry = ModelLibrary(tmp_path / "library").import_file(source, "timm:mobilenetv3_small_100")
    model = starting_model(tmp_path / "library")
    assert (model.name, model.weights) == ("timm:mobilenetv3_small_100", entry.path)
    assert catalogue.weights_problem(model.name, model.weights) is None  # the Model step will say "done"


def test_a_cached_recommended_model_comes_before_an_imported_file(empty_caches, tmp_path, monkeypatch):
    import timm

    source = tmp_path / "resnet.safetensors"
    save_file(timm.create_model("resnet18").state_dict(), str(source))
    ModelLibrary(tmp_path / "library").import_file(source, "timm:resnet18")
    # torchvision's MobileNetV2 weights in the torch hub cache, under the file name torchvision downloads them to.
    kind, url, _ = catalogue._weight_source("torchvision:mobilenet_v2")
    assert kind == "url"
    checkpoint = catalogue._hub_checkpoint(url)
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights")
    model = starting_model(tmp_path / "library")
    assert (model.name, model.weights) == ("torchvision:mobilenet_v2", "pretrained")


def test_new_project_uses_the_starting_model(empty_caches, tmp_path, monkeypatch):
    monkeypatch.setattr("engine.project.project.starting_model",
                        lambda: starting_model(tmp_path / "library"))
    import timm

    source = tmp_path / "w.safetensors"
    save_file(timm.create_model("mobilenetv3_small_100").state_dict(), str(source))
    ModelLibrary(tmp_path / "library").import_file(source, "timm:mobilenetv3_small_100")
    project = new_project(tmp_path / "pictures", data_dir=tmp_path / "data")
    assert project.config.model.name == "timm:mobilenetv3_small_100"
