"""Model names, the catalogue, building models with a new head, weight files (safe loading), offline pretrained
weights, and the layer tree built on top of the models."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

import engine.models.build as models
from engine.errors import ModelError, UserError
from engine.models.layers import HEAD, build_layer_tree
from engine.models.build import build_model, check_name, split_name
from engine.models.catalogue import names as catalogue
from engine.models.weights import read_weight_file

NOT_ON_THIS_COMPUTER = "not on this computer"


def _message(info: pytest.ExceptionInfo) -> str:
    """The text a user sees: one sentence, no traceback, no chained Python exception."""
    exc = info.value
    assert isinstance(exc, UserError)
    text = str(exc)
    assert text and "Traceback" not in text and "\n" not in text
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
    return text


def _head_output(built, size: int = 64) -> torch.Size:
    built.model.eval()
    with torch.no_grad():
        return built.model(torch.zeros(1, 3, size, size)).shape


# --- weight files, generated once ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mobilenet_state() -> dict[str, torch.Tensor]:
    """torchvision's mobilenet_v2 with its 1000-class ImageNet head and random weights."""
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.mobilenet_v2().state_dict()


@pytest.fixture(scope="module")
def mobilenet_file(tmp_path_factory, mobilenet_state) -> Path:
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_1000.safetensors"
    save_file(mobilenet_state, str(path))
    return path


@pytest.fixture(scope="module")
def mobilenet_pth(tmp_path_factory, mobilenet_state) -> Path:
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_1000.pth"
    torch.save(mobilenet_state, path)
    return path


def _assert_body_equal(model: nn.Module, state: dict[str, torch.Tensor], head: str) -> int:
    own = model.state_dict()
    body = [k for k in own if not k.startswith(head + ".")]
    for key in body:
        assert torch.equal(own[key], state[key]), key
    return len(body)


# --- names and the catalogue ---------------------------------------------------------------------------------------


def test_split_name():
    assert split_name("timm:resnet18") == ("timm", "resnet18")
    assert split_name("torchvision:vit_b_16") == ("torchvision", "vit_b_16")


@pytest.mark.parametrize("name", ["resnet18", "timm:", "keras:resnet50", "", ":resnet18"])
def test_malformed_names_explain_the_format(name):
    with pytest.raises(ModelError) as info:
        split_name(name)
    text = _message(info)
    assert "is not a model name" in text and "timm:<name>" in text and "torchvision:<name>" in text


def test_build_model_with_a_name_without_prefix():
    with pytest.raises(ModelError) as info:
        build_model("resnet18", "none", 3)
    assert "'resnet18' is not a model name" in _message(info)


@pytest.mark.parametrize("name, source, arch", [
    ("timm:resnet_does_not_exist", "timm", "resnet_does_not_exist"),
    ("torchvision:resnet1800", "torchvision", "resnet1800"),
    # torchvision knows this one, but it detects objects: it is not a classification model.
    ("torchvision:fasterrcnn_resnet50_fpn", "torchvision", "fasterrcnn_resnet50_fpn"),
])
def test_unknown_model_names(name, source, arch):
    with pytest.raises(ModelError) as info:
        check_name(name)
    text = _message(info)
    assert f"no {source} model called '{arch}'" in text
    with pytest.raises(ModelError) as info:
        build_model(name, "none", 3)
    assert arch in _message(info)


@pytest.mark.parametrize("name", ["timm:resnet18", "timm:resnet18.a1_in1k", "torchvision:mobilenet_v2"])
def test_known_names_pass_the_check(name):
    check_name(name)


def test_catalogue_substring():
    names = catalogue("resnet18")
    assert "timm:resnet18" in names and "torchvision:resnet18" in names
    assert all("resnet18" in n for n in names)
    # timm's models come first, then torchvision's.
    sources = [n.split(":")[0] for n in names]
    assert sources == sorted(sources)


def test_catalogue_glob_pattern():
    names = catalogue("*vit_b*")
    assert {"torchvision:vit_b_16", "torchvision:vit_b_32", "timm:vit_base_patch16_224"} <= set(names)
    assert all("vit_b" in n for n in names)
    assert "timm:resnet18" not in names and "timm:deit_base_patch16_224" not in names


def test_catalogue_filters():
    everything = catalogue()
    assert len(everything) > 500 and len(everything) == len(set(everything))
    assert all(n.startswith(("timm:", "torchvision:")) for n in everything)
    torchvision_only = catalogue("torchvision:*")
    assert torchvision_only and all(n.startswith("torchvision:") for n in torchvision_only)
    assert "torchvision:fasterrcnn_resnet50_fpn" not in everything  # classification models only
    assert catalogue("no_such_model_anywhere") == []


# --- building with weights "none" ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mobilenet():
    return build_model("torchvision:mobilenet_v2", "none", 3)


@pytest.fixture(scope="module")
def resnet():
    return build_model("timm:resnet18", "none", 3)


@pytest.fixture(scope="module")
def vit():
    return build_model("timm:vit_tiny_patch16_224", "none", 2)


@pytest.mark.parametrize("fixture, head, num_classes", [("resnet", "fc", 3), ("mobilenet", "classifier", 3)])
def test_build_without_weights(request, fixture, head, num_classes):
    built = request.getfixturevalue(fixture)  # build_model(name, "none", num_classes), shared with the layer tests
    assert built.head == head
    assert _head_output(built) == (1, num_classes)
    config = built.data_config
    assert set(config) == {"input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode"}
    assert config["input_size"] == (3, 224, 224)
    assert all(isinstance(v, float) for v in config["mean"] + config["std"]) and len(config["mean"]) == 3
    assert config["interpolation"] in ("bilinear", "bicubic") and 0 < config["crop_pct"] <= 1
    assert "Random weights" in built.weights_note


def test_timm_data_config_follows_the_architecture(vit):
    # A ViT's own preprocessing (mean and std of 0.5), not ImageNet's table.
    built = vit
    assert built.data_config["mean"] == (0.5, 0.5, 0.5) and built.data_config["std"] == (0.5, 0.5, 0.5)
    assert built.head == "head"
    assert built.model.get_submodule(built.head).out_features == 2


# --- local weight files --------------------------------------------------------------------------------------------


def test_safetensors_for_1000_classes_into_a_3_class_model(mobilenet_file, mobilenet_state):
    built = build_model("torchvision:mobilenet_v2", str(mobilenet_file), 3)
    assert _assert_body_equal(built.model, mobilenet_state, built.head) > 300
    own = built.model.state_dict()
    assert own["classifier.1.weight"].shape == (3, 1280)
    assert _head_output(built) == (1, 3)
    assert "new head" in built.weights_note and mobilenet_file.name in built.weights_note


def test_a_file_with_the_same_classes_loads_the_head_too(mobilenet_file, mobilenet_state):
    built = build_model("torchvision:mobilenet_v2", str(mobilenet_file), 1000)
    own = built.model.state_dict()
    for key in own:
        assert torch.equal(own[key], mobilenet_state[key]), key
    assert "with its head" in built.weights_note and "new head" not in built.weights_note


def test_a_file_without_batch_counters_loads(tmp_path, mobilenet_state):
    state = {k: v for k, v in mobilenet_state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "lean.safetensors"
    save_file(state, str(path))
    built = build_model("torchvision:mobilenet_v2", str(path), 3)
    for key, value in state.items():
        if not key.startswith("classifier."):
            assert torch.equal(built.model.state_dict()[key], value), key


@pytest.mark.parametrize("suffix, wrapper, prefix", [
    (".pth", "state_dict", "module."),
    (".pt", "model", ""),
    (".bin", None, "module."),
])
def test_pickled_checkpoints_are_unwrapped(tmp_path, mobilenet_state, suffix, wrapper, prefix):
    state = {prefix + k: v for k, v in mobilenet_state.items()}
    path = tmp_path / f"checkpoint{suffix}"
    torch.save({wrapper: state, "epoch": 12} if wrapper else state, path)
    assert set(read_weight_file(path)) == set(mobilenet_state)
    built = build_model("torchvision:mobilenet_v2", str(path), 3)
    _assert_body_equal(built.model, mobilenet_state, built.head)
    assert "new head" in built.weights_note


def test_timm_model_from_a_local_file(tmp_path):
    import timm

    torch.manual_seed(1)
    state = timm.create_model("resnet18", pretrained=False).state_dict()  # 1000 classes
    path = tmp_path / "resnet18.pt"
    torch.save(state, path)
    built = build_model("timm:resnet18", str(path), 4)
    _assert_body_equal(built.model, state, "fc")
    assert built.model.fc.out_features == 4
    assert "new head" in built.weights_note
    assert built.license is None  # a user's file: no licence claimed for it


def test_weights_of_another_architecture(tmp_path):
    import torchvision

    path = tmp_path / "resnet18.safetensors"
    save_file(torchvision.models.resnet18().state_dict(), str(path))
    with pytest.raises(ModelError) as info:
        build_model("torchvision:mobilenet_v2", str(path), 3)
    text = _message(info)
    assert "do not fit this model" in text and "missing" in text and "unexpected" in text
    assert "resnet18.safetensors" in text


def test_one_tensor_of_the_wrong_shape(tmp_path, mobilenet_state):
    state = dict(mobilenet_state)
    state["features.0.0.weight"] = torch.zeros(32, 3, 5, 5)
    path = tmp_path / "reshaped.safetensors"
    save_file(state, str(path))
    with pytest.raises(ModelError) as info:
        build_model("torchvision:mobilenet_v2", str(path), 3)
    text = _message(info)
    assert "wrong shape" in text and "features.0.0.weight" in text
    assert "missing" not in text and "unexpected" not in text


@pytest.mark.parametrize("good", ["mobilenet_file", "mobilenet_pth"])
def test_truncated_files(tmp_path, request, good):
    source: Path = request.getfixturevalue(good)
    path = tmp_path / f"cut{source.suffix}"
    path.write_bytes(source.read_bytes()[:1000])
    with pytest.raises(ModelError) as info:
        read_weight_file(path)
    text = _message(info)
    assert "damaged or truncated" in text and path.name in text
    with pytest.raises(ModelError, match="damaged or truncated"):
        build_model("torchvision:mobilenet_v2", str(path), 3)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_an_empty_file(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    with pytest.raises(ModelError) as info:
        read_weight_file(path)
    assert _message(info) == (f"empty{suffix} is empty (0 bytes), so it holds no weights: copy or download it again, "
                              "or choose another file.")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("content", [
    b"\x00" * 64,  # safetensors' reader: an impossible header
    b"PK\x03\x04" + b"\x00" * 60,  # torch's zip reader: a broken archive
    b"\x80\x02" + b"\x00" * 10,  # a pickle that breaks off: damaged, not unsafe
    pickle.dumps({"conv.weight": [0.0] * 50})[:40],  # a plain pickle cut short
], ids=["safetensors", "zip", "pickle-garbage", "pickle-cut"])
def test_damaged_files_are_called_damaged_in_plain_words(tmp_path, content):
    path = tmp_path / "damaged.pth"
    path.write_bytes(content)
    with pytest.raises(ModelError) as info:
        read_weight_file(path)
    text = _message(info)
    assert text.startswith("damaged.pth cannot be read as a weight file: it is damaged or truncated")
    assert text.endswith("Copy or download it again, or choose another file.") and "refused" not in text
    renamed = tmp_path / "damaged.safetensors"  # never unpickled under this name, whatever it holds
    renamed.write_bytes(content)
    with pytest.raises(ModelError) as info:
        read_weight_file(renamed)
    text = _message(info)
    assert "Error" not in text and ("damaged or truncated" in text or "is not a safetensors file" in text)


def test_a_file_without_tensors(tmp_path):
    path = tmp_path / "notes.pth"
    torch.save({"epoch": 3, "accuracy": 0.9}, path)
    with pytest.raises(ModelError) as info:
        read_weight_file(path)
    assert "does not hold model weights" in _message(info)


def test_a_missing_weight_file(tmp_path):
    path = tmp_path / "nowhere.safetensors"
    with pytest.raises(ModelError) as info:
        build_model("torchvision:mobilenet_v2", str(path), 3)
    text = _message(info)
    assert "does not exist" in text and "nowhere.safetensors" in text


def test_a_folder_instead_of_a_weight_file(tmp_path):
    folder = tmp_path / "weights.pth"
    folder.mkdir()
    with pytest.raises(ModelError) as info:
        read_weight_file(folder)
    assert "is a folder" in _message(info)


def test_a_file_with_another_suffix(tmp_path, mobilenet_file):
    path = tmp_path / "weights.txt"
    path.write_bytes(mobilenet_file.read_bytes())  # even good content is refused by name
    with pytest.raises(ModelError) as info:
        read_weight_file(path)
    text = _message(info)
    assert "weights.txt is not a weight file" in text and ".safetensors" in text


class _CreatesAFile:
    """Unpickling this calls open(marker, "w"): it would create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


class _RunsAShellCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch '{self.marker}'",)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("payload", [_CreatesAFile, _RunsAShellCommand])
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_malicious_pickle_is_refused(tmp_path, payload, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pth"
    contents = {"conv.weight": torch.zeros(2, 2), "trap": payload(marker)}
    if writer == "torch.save":
        torch.save(contents, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(contents, f)
    assert not marker.exists()  # saving did not run the payload
    with pytest.raises(ModelError) as info:
        read_weight_file(path)
    text = _message(info)
    assert "refused" in text and "weights.pth" in text
    assert not marker.exists()
    with pytest.raises(ModelError, match="refused"):
        build_model("torchvision:mobilenet_v2", str(path), 3)
    assert not marker.exists()


def test_a_file_that_is_not_a_pickle_is_not_called_unsafe(tmp_path):
    path = tmp_path / "downloaded.pth"
    path.write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>\n", encoding="utf-8")
    with pytest.raises(ModelError) as info:
        read_weight_file(path)
    text = _message(info)
    assert "refused" not in text and "run code" not in text


# --- pretrained weights, offline -----------------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and empty caches: torch hub's folder and the Hugging Face cache point into tmp_path."""
    import huggingface_hub.constants

    hub = tmp_path / "torch-hub"
    hf = tmp_path / "hf-cache"
    hub.mkdir()
    hf.mkdir()
    monkeypatch.setattr(models, "_online", lambda host: False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setenv("TORCH_HOME", str(hub))
    monkeypatch.setenv("HF_HOME", str(hf))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf))
    return tmp_path


@pytest.mark.parametrize("name", ["torchvision:resnet18", "timm:resnet18"])
def test_pretrained_weights_offline_and_not_cached(offline, name):
    import huggingface_hub.constants

    offline_switch = huggingface_hub.constants.HF_HUB_OFFLINE
    with pytest.raises(ModelError) as info:
        build_model(name, "pretrained", 3)
    text = _message(info)
    assert NOT_ON_THIS_COMPUTER in text and name in text
    assert "'none'" in text  # says what to do instead
    # Nothing was written into the caches, and Hugging Face's offline switch is put back as it was.
    assert not any(p.is_file() for p in offline.rglob("*"))
    assert huggingface_hub.constants.HF_HUB_OFFLINE == offline_switch


@pytest.mark.parametrize("name", ["torchvision:resnet18", "timm:resnet18"])
def test_pretrained_without_permission_to_download_never_asks_the_network(offline, monkeypatch, name):
    def no_network(host):
        raise AssertionError(f"asked the network ({host}) although downloads are not allowed")

    monkeypatch.setattr(models, "_online", no_network)
    with pytest.raises(ModelError) as info:
        build_model(name, "pretrained", 3, allow_download=False)
    assert NOT_ON_THIS_COMPUTER in _message(info)


# --- the layer tree ------------------------------------------------------------------------------------------------


def _assert_partition(built, tree) -> None:
    """Every parameter belongs to exactly one stage, and the counts add up to the model's."""
    names = [n for n, _ in built.model.named_parameters()]
    counted = Counter(p for s in tree.stages for p in s.param_names)
    assert set(counted) == set(names)
    assert max(counted.values()) == 1
    assert tree.total_params == sum(s.params for s in tree.stages)
    assert tree.total_params == sum(p.numel() for p in built.model.parameters())
    params = dict(built.model.named_parameters())
    for stage in tree.stages:
        assert stage.params == sum(params[n].numel() for n in stage.param_names) > 0, stage.name
        for n in stage.param_names:
            assert tree.stage_of_param(n) == stage.name
    head = tree.stages[-1]
    assert head.name == HEAD and head.is_head and tree.names.count(HEAD) == 1
    assert set(head.param_names) == {n for n in names if n.startswith(built.head + ".")}
    assert tree.body == tree.stages[:-1]
    assert len(set(tree.names)) == len(tree.names)


def _assert_batchnorm_mapped(built, tree) -> int:
    stages = tree.module_stages(built.model)
    norms = [n for n, m in built.model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for name in norms:
        assert stages[name] is not None, name
        assert stages[name] == tree.stage_of_param(f"{name}.weight"), name
    return len(norms)


def test_layer_tree_torchvision_mobilenet_v2(mobilenet):
    tree = build_layer_tree(mobilenet.model, mobilenet.head)
    assert tree.source == "modules"
    assert tree.names == [f"features.{i}" for i in range(19)] + [HEAD]
    assert len(tree.stages) == 20
    for stage in tree.body:  # each stage is exactly one feature block
        block = mobilenet.model.get_submodule(stage.name)
        assert stage.params == sum(p.numel() for p in block.parameters())
    assert tree.stage(HEAD).params == 1280 * 3 + 3
    _assert_partition(mobilenet, tree)
    assert _assert_batchnorm_mapped(mobilenet, tree) == 52
    stages = tree.module_stages(mobilenet.model)
    assert stages["classifier"] == HEAD and stages["features.3.conv.1"] == "features.3"
    assert stages[""] is None  # the whole model spans every stage


def test_layer_tree_timm_resnet18(resnet):
    tree = build_layer_tree(resnet.model, resnet.head)
    assert tree.source == "timm-groups"
    assert tree.names == ["stem", "layer1", "layer2", "layer3", "layer4", HEAD]
    assert set(tree.stage("stem").param_names) == {"conv1.weight", "bn1.weight", "bn1.bias"}
    for i in range(1, 5):
        layer = resnet.model.get_submodule(f"layer{i}")
        assert tree.stage(f"layer{i}").params == sum(p.numel() for p in layer.parameters())
    assert tree.stage(HEAD).params == 512 * 3 + 3
    _assert_partition(resnet, tree)
    assert _assert_batchnorm_mapped(resnet, tree) == 20
    assert tree.module_stages(resnet.model)["bn1"] == "stem"


def test_layer_tree_timm_vit_tiny(vit):
    tree = build_layer_tree(vit.model, vit.head)
    assert tree.source == "timm-groups"
    assert tree.names[0] == "stem"
    assert tree.names[1:12] == [f"blocks.{i}" for i in range(11)]
    assert tree.names[-1] == HEAD and len(tree.names) == 14
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight"} <= set(tree.stage("stem").param_names)
    last = tree.body[-1]
    assert last.name.startswith("blocks.11")  # timm puts the final norm with the last block
    assert tree.stage_of_param("blocks.11.mlp.fc2.weight") == last.name
    assert tree.stage_of_param("norm.weight") == last.name
    assert tree.stage(HEAD).params == 192 * 2 + 2
    _assert_partition(vit, tree)
    stages = tree.module_stages(vit.model)
    assert stages["blocks.4.norm1"] == "blocks.4" and stages["head"] == HEAD


def test_offline_switch_opens_no_connection(monkeypatch, tmp_path):
    import socket

    import engine.models.build as models

    monkeypatch.setenv(models.OFFLINE_ENV, "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted in offline mode")

    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(ModelError, match="offline mode is on"):
        build_model("torchvision:resnet18", "pretrained", 3)
