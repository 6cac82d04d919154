"""The model catalogue (timm and torchvision), model creation, weight sources and preprocessing.

Every model is built with a head for the dataset's classes; weights are loaded into it from one source:
``pretrained`` (timm's hub or the local Hugging Face cache; torchvision's default weights or the torch hub cache),
a local file (``.safetensors``, ``.pth``, ``.pt``, ``.bin``) or ``none``. Weights for another number of classes keep
everything but the head. Pickled files are loaded with ``weights_only=True``: nothing in them can run code.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn

from engine.data.loaders import IMAGENET_DEFAULTS, IMAGENET_MEAN, IMAGENET_STD  # noqa: F401  (used by callers)
from engine.errors import ModelError
from engine.models.weights import TORCH_BUILD_LOCK, load_weights, read_weight_file

# torchvision's classification models name their classifier one of these (checked in this order).
TORCHVISION_HEADS = ("fc", "classifier", "heads", "head")


@dataclass
class BuiltModel:
    model: nn.Module
    head: str  # qualified name of the classifier module
    data_config: dict  # input_size, interpolation, mean, std, crop_pct, crop_mode (timm's data-config keys)
    weights_note: str  # a sentence saying where the weights came from
    license: str | None = None


# --- catalogue ------------------------------------------------------------------------------------------------


def split_name(name: str) -> tuple[str, str]:
    source, _, arch = name.partition(":")
    if source not in ("timm", "torchvision") or not arch:
        raise ModelError(f"'{name}' is not a model name: write timm:<name> or torchvision:<name> "
                         "(python main.py models lists them).")
    return source, arch


def _torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return tvm.list_models(module=tvm)  # the classification models only


def check_name(name: str) -> None:
    source, arch = split_name(name)
    import timm

    known = timm.is_model(arch) if source == "timm" else arch in _torchvision_names()  # a timm name may carry a tag
    if not known:
        names = timm.list_models() if source == "timm" else _torchvision_names()
        raise ModelError(f"There is no {source} model called '{arch}'{_did_you_mean(arch, names)} "
                         f"(python main.py models {arch[:4]} lists similar names).")


def _did_you_mean(arch: str, names: list[str]) -> str:
    """', did you mean mobilenet_v2?' for a near miss such as mobilenetv2 or mobilenet-v2 ('' when nothing is near).
    Names are compared with their separators removed first, since those are the usual slip."""
    import difflib

    def bare(name: str) -> str:
        return name.lower().replace("_", "").replace("-", "").replace(".", "")

    exact = [n for n in names if bare(n) == bare(arch)]
    close = exact or difflib.get_close_matches(arch.lower(), names, n=3, cutoff=0.8)
    return f": did you mean {' or '.join(close)}?" if close else ""


# --- building -------------------------------------------------------------------------------------------------


# The offline switch and its socket-level guard live in engine.offline; named here too for the callers.
from engine.offline import OFFLINE_ENV, no_network, offline_mode  # noqa: E402,F401


def _online(host: str) -> bool:
    if offline_mode():
        return False
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _hf_offline(offline: bool) -> Iterator[None]:
    """Make huggingface_hub use only its local cache (it otherwise retries for a minute without a network)."""
    import huggingface_hub.constants as hf

    saved = hf.HF_HUB_OFFLINE
    hf.HF_HUB_OFFLINE = offline or saved
    try:
        yield
    finally:
        hf.HF_HUB_OFFLINE = saved


def _no_download_message(name: str) -> str:
    if offline_mode():
        return (f"The pretrained weights of {name} are not on this computer, and offline mode is on, so nothing is "
                f"downloaded: switch it off ({OFFLINE_ENV}=0) to download them, or choose a weight file or 'none'.")
    return (f"The pretrained weights of {name} are not on this computer and cannot be downloaded now (no internet "
            "connection?). Connect once to download them, or choose a weight file or 'none'.")


def _find_head(model: nn.Module, source: str) -> str:
    modules = dict(model.named_modules())
    if source == "timm" and hasattr(model, "get_classifier"):
        classifier = model.get_classifier()
        for name, module in modules.items():
            if module is classifier and name:
                return name
    for name in TORCHVISION_HEADS:
        if name in modules:
            return name
    last_linear = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    if last_linear:
        return last_linear[-1]
    raise ModelError("This model has no classification head that Transfer Studio can replace.")


def build_model(name: str, weights: str, num_classes: int, *, allow_download: bool = True) -> BuiltModel:
    """Create ``name`` with a new head of ``num_classes`` outputs and load ``weights`` into it."""
    source, arch = split_name(name)
    check_name(name)
    if source == "timm":
        return _build_timm(name, arch, weights, num_classes, allow_download)
    return _build_torchvision(name, arch, weights, num_classes, allow_download)


def _build_timm(name: str, arch: str, weights: str, num_classes: int, allow_download: bool) -> BuiltModel:
    import timm

    pretrained = weights == "pretrained"
    try:
        if pretrained:
            try:
                # What is on this computer only: the hub's offline flag, and no connection at all for the weights
                # that timm fetches from a plain URL (gcvit_tiny.in1k ...), which that flag does not cover.
                with _hf_offline(True), no_network():
                    model = timm.create_model(arch, pretrained=True, num_classes=num_classes)
            except (OSError, RuntimeError, ValueError):
                if not (allow_download and _online("huggingface.co")):
                    raise ModelError(_no_download_message(name)) from None
                with _hf_offline(offline_mode()):  # the guard refuses any connection if offline was switched on
                    model = timm.create_model(arch, pretrained=True, num_classes=num_classes)
        else:
            model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"The model {name} could not be created ({exc.__class__.__name__}: {exc}).") from None
    head = _find_head(model, "timm")
    # The architecture's own pretrained config also fits a local file made for it (a ViT's mean/std of 0.5 ...).
    data_config = timm.data.resolve_data_config({}, model=model)
    license = model.pretrained_cfg.get("license") if pretrained and getattr(model, "pretrained_cfg", None) else None
    note = "Pretrained weights from timm." if pretrained else "Random weights (no pretraining)."
    if weights not in ("pretrained", "none"):
        note = load_weights(model, read_weight_file(weights), head, Path(weights).name)
        license = None  # a user's file: its terms are the user's to know
    return BuiltModel(model, head, _plain(data_config), note, license)


def _build_torchvision(name: str, arch: str, weights: str, num_classes: int, allow_download: bool) -> BuiltModel:
    import torchvision.models as tvm

    try:
        model = tvm.get_model(arch, weights=None, num_classes=num_classes)
    except Exception as exc:
        raise ModelError(f"The model {name} could not be created ({exc.__class__.__name__}: {exc}).") from None
    head = _find_head(model, "torchvision")
    data_config = dict(IMAGENET_DEFAULTS)
    license = None
    note = "Random weights (no pretraining)."
    if weights == "pretrained":
        enum = tvm.get_model_weights(arch).DEFAULT
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
        if not cached.exists() and not (allow_download and _online("download.pytorch.org")):
            raise ModelError(_no_download_message(name))
        try:
            with no_network() if cached.exists() or not allow_download else contextlib.nullcontext():
                state = enum.get_state_dict(progress=False, check_hash=True)
        except Exception:
            raise ModelError(_no_download_message(name)) from None
        note = load_weights(model, state, head, f"torchvision's {enum}")
        data_config = _torchvision_data_config(enum)
        license = "BSD-3-Clause (torchvision); see the weights' own terms"
    elif weights != "none":
        note = load_weights(model, read_weight_file(weights), head, Path(weights).name)
    return BuiltModel(model, head, data_config, note, license)


def _torchvision_data_config(enum) -> dict:
    t = enum.transforms()
    crop = int(t.crop_size[0])
    return {"input_size": (3, crop, crop), "interpolation": t.interpolation.value, "mean": tuple(t.mean),
            "std": tuple(t.std), "crop_pct": crop / int(t.resize_size[0]), "crop_mode": "center"}


def _plain(data_config: dict) -> dict:
    """timm's data config with plain Python values (tuples of floats), as stored in a run folder."""
    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    out = {k: data_config[k] for k in keys if k in data_config}
    out["input_size"] = tuple(int(v) for v in out["input_size"])
    out["mean"] = tuple(float(v) for v in out["mean"])
    out["std"] = tuple(float(v) for v in out["std"])
    out["crop_pct"] = float(out.get("crop_pct", 0.875))
    out.setdefault("crop_mode", "center")
    return out


def adapt_to_data(built: BuiltModel, dataset) -> BuiltModel:
    """The model made ready for the dataset's pictures: when they were read with lab-picture settings (DICOM,
    16-bit or float TIFF, many channels, slides: engine.data.formats), those settings -- the dataset's contrast
    range resolved -- join its preprocessing (``data_config["formats"]``), so that evaluation, prediction and exported
    bundles read new pictures exactly as training did; with every channel into the model (channels = "all"), its
    first convolution takes the dataset's number of channels (``adapt_input``). Ordinary datasets leave the model
    unchanged. ``dataset`` None (a resumed run): the model is adapted to its own ``data_config``."""
    import dataclasses

    if dataset is None:
        return adapt_input(built, built.data_config)
    info = getattr(dataset, "formats", None) or {}
    settings = info.get("settings")
    if not settings:
        return built
    data_config = {**built.data_config, "formats": dict(settings)}
    channels = info.get("channels")
    if str(settings.get("channels", "")).strip().lower() == "all" and channels:
        n = int(channels)
        mean, std = tuple(built.data_config["mean"]), tuple(built.data_config["std"])
        if n == 1:  # timm's adapt_input_conv sums the RGB filters: a grey channel is their average
            mean, std = (sum(mean) / 3,), (sum(std) / 3,)
        else:  # ... and repeats them over more channels
            mean, std = tuple(mean[i % 3] for i in range(n)), tuple(std[i % 3] for i in range(n))
        data_config.update(input_size=(n, *tuple(built.data_config["input_size"])[1:]), mean=mean, std=std)
    return adapt_input(dataclasses.replace(built, data_config=data_config), data_config)


def adapt_input(built: BuiltModel, data_config: dict) -> BuiltModel:
    """The model with its first convolution taking ``data_config["input_size"][0]`` channels, its pretrained RGB
    filters adapted by timm's ``adapt_input_conv`` (summed for one channel, repeated and rescaled for more). A model
    that already takes that many is returned as it is."""
    import dataclasses

    n = int(tuple(data_config.get("input_size", (3,)))[0])
    first = next(((name, m) for name, m in built.model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first[1].in_channels == n:
        return built if first is None or data_config is built.data_config else dataclasses.replace(
            built, data_config=data_config)
    from timm.models import adapt_input_conv

    name, old = first
    new = nn.Conv2d(n, old.out_channels, old.kernel_size, old.stride, old.padding, old.dilation, old.groups,
                    old.bias is not None, old.padding_mode)
    with torch.no_grad():
        new.weight.copy_(adapt_input_conv(n, old.weight.detach().clone()))
        if old.bias is not None:
            new.bias.copy_(old.bias)
    parent_name, _, child = name.rpartition(".")
    parent = built.model.get_submodule(parent_name) if parent_name else built.model
    setattr(parent, child, new)
    return dataclasses.replace(built, data_config=data_config)
