"""A weight file made for another model says which catalogue model it fits: its tensors' names and shapes are
compared with every catalogue model's (the head left out), from the table shipped for the pinned timm and torchvision,
or from models built on the meta device when that table does not fit the installed versions."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from engine.errors import ModelError
from engine.models import identify
from engine.models.build import build_model
from engine.models.catalogue import _versions_key, all_models
from engine.project.library import ModelLibrary


@pytest.fixture(scope="module")
def resnet18_state() -> dict[str, torch.Tensor]:
    """torchvision's resnet18 with ImageNet's 1000-class head and random weights (nothing downloaded)."""
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18().state_dict()


@pytest.fixture(scope="module")
def mobilenet_state() -> dict[str, torch.Tensor]:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.mobilenet_v2().state_dict()


def test_a_resnet18_file_given_to_mobilenet_v2_says_which_model_it_fits(tmp_path, resnet18_state):
    path = tmp_path / "resnet18.safetensors"
    save_file(resnet18_state, str(path))
    with pytest.raises(ModelError) as info:
        build_model("torchvision:mobilenet_v2", str(path), 3)
    text = str(info.value)
    # What it said before stays: the file, and what is missing or unexpected.
    assert "The weights in resnet18.safetensors do not fit this model" in text
    assert "missing (" in text and "unexpected (" in text
    # ... and now which model the file is for, and which it is not for.
    assert "This file holds weights for resnet18 (timm:resnet18 / torchvision:resnet18" in text
    assert "not for mobilenet_v2: choose the matching model." in text
    assert "probably made for another architecture" not in text and "\n" not in text


def test_importing_a_file_for_the_wrong_model_names_the_right_one(tmp_path, mobilenet_state):
    source = tmp_path / "mobilenet.pth"
    torch.save(mobilenet_state, source)
    library = ModelLibrary(tmp_path / "library")
    with pytest.raises(ModelError) as info:
        library.import_file(source, "timm:resnet18.a1_in1k")  # a weight set's tag is not part of the model's name
    text = str(info.value)
    assert "do not fit" in text and "choose the matching model" in text
    assert "This file holds weights for mobilenet_v2 (torchvision:mobilenet_v2), not for resnet18:" in text
    assert library.imported() == []


def test_the_head_is_left_out_of_the_comparison(resnet18_state):
    import torchvision

    assert {"timm:resnet18", "torchvision:resnet18"} <= set(identify.identify(resnet18_state))
    two_classes = torchvision.models.resnet18(num_classes=2).state_dict()  # a model trained for 2 classes
    assert identify.identify(two_classes) == identify.identify(resnet18_state)
    no_counter = {k: v for k, v in resnet18_state.items() if not k.endswith("num_batches_tracked")}
    assert identify.identify(no_counter) == identify.identify(resnet18_state)  # files often lack BatchNorm's counter
    assert identify.identify(resnet18_state)[0] == "timm:resnet18"  # a recommended model first


def test_only_exact_names_and_shapes_identify_a_model(resnet18_state):
    missing_one = {k: v for k, v in resnet18_state.items() if k != "layer4.1.conv2.weight"}
    assert identify.identify(missing_one) == []
    reshaped = dict(resnet18_state, **{"conv1.weight": torch.zeros(64, 3, 5, 5)})
    assert identify.identify(reshaped) == []
    renamed = {f"backbone.{k}": v for k, v in resnet18_state.items()}
    assert identify.identify(renamed) == []
    assert identify.identify({}) == []


def test_a_file_that_fits_no_catalogue_model_keeps_the_general_advice(tmp_path, resnet18_state):
    odd = {k: v for k, v in resnet18_state.items() if not k.startswith("layer4.1.")}  # a cut-down network
    path = tmp_path / "odd.safetensors"
    save_file(odd, str(path))
    with pytest.raises(ModelError) as info:
        build_model("torchvision:mobilenet_v2", str(path), 3)
    text = str(info.value)
    assert "do not fit this model" in text and "missing (" in text
    assert "They were probably made for another architecture: choose the matching model." in text
    assert "This file holds" not in text


def test_the_shipped_table_describes_the_pinned_libraries(resnet18_state):
    shipped = json.loads(identify.SHIPPED_SIGNATURES.read_text(encoding="utf-8"))
    assert shipped["versions"] == _versions_key(), "regenerate: python -m engine.models.identify"
    assert set(shipped["models"]) == {m.name for m in all_models()}
    table = identify.read_table()
    described = [n for n in shipped["models"] if n in table]
    assert len(described) > 0.95 * len(shipped["models"])  # all but models that cannot be built on the meta device
    # The table was made by the same rules the app uses now.
    for name in ("timm:resnet18", "torchvision:mobilenet_v2", "timm:vit_tiny_patch16_224"):
        assert table[name] == identify.model_signature(name), name


def test_without_a_table_for_these_versions_the_models_are_built_on_the_meta_device(monkeypatch, resnet18_state,
                                                                                    mobilenet_state):
    monkeypatch.setattr(identify, "read_table", lambda *args, **kwargs: None)  # as with other timm/torchvision
    identify._shipped_index.cache_clear()
    try:
        found = identify.identify(resnet18_state)
        assert {"timm:resnet18", "torchvision:resnet18"} <= set(found)
        assert identify.identify(mobilenet_state) == ["torchvision:mobilenet_v2"]
        advice = identify.mismatch_advice(resnet18_state, mobilenet_state, "classifier")
        assert advice.startswith("This file holds weights for resnet18 (") and "not for mobilenet_v2" in advice
    finally:
        identify._shipped_index.cache_clear()
