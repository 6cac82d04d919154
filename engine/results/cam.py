"""Class-activation maps (Grad-CAM): which parts of a picture made the model choose a class.

Grad-CAM (Selvaraju et al., 2017) weighs each channel of a late feature map by the mean gradient of the class score
with respect to it, sums the channels and keeps the positive part: that is the map for convolutional networks (made
from the last layer whose output is still a spatial map). For vision transformers the map is made from the patch
tokens entering the last block (without the class and register tokens, laid back onto their grid), each weighted by
|gradient . activation| (see ``grad_cam``).

Written here rather than taken from ``pytorch-grad-cam``: that package is not among the project's dependencies, and
the part needed (two hooks, a weighted sum and the mapping back through the centre crop) is short.

The map is returned at the size of the original picture, as float32 values in [0, 1]; parts of the picture that the
model never sees (cut off by the centre crop of its preprocessing) are 0. ``overlay`` colours it with viridis.
"""

from __future__ import annotations

import math
import os
import weakref
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from engine.errors import UserError

__all__ = ["VIRIDIS", "TargetLayer", "class_activation_map", "crop_box", "explain", "find_target_layer", "grad_cam",
           "overlay", "to_picture", "viridis"]

# viridis (matplotlib's colour map by Smith, van der Walt and Firing, CC0), 17 evenly spaced entries of its
# 256-entry table; interpolated linearly between them, which is indistinguishable from the full table. Hard-coded
# because matplotlib is not a dependency and the engine may not import pyqtgraph (which has the table).
_VIRIDIS_ANCHORS = np.array([
    (68, 1, 84), (72, 24, 106), (71, 45, 123), (66, 64, 134), (59, 82, 139), (51, 99, 141), (44, 114, 142),
    (38, 130, 142), (33, 145, 140), (31, 159, 136), (39, 173, 129), (61, 188, 116), (92, 200, 99), (129, 211, 77),
    (170, 220, 50), (213, 226, 26), (253, 231, 37)], dtype=np.float64)


def _viridis_lut() -> np.ndarray:
    x = np.linspace(0.0, 1.0, len(_VIRIDIS_ANCHORS))
    t = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(t, x, _VIRIDIS_ANCHORS[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


VIRIDIS = _viridis_lut()  # (256, 3) uint8


@dataclass(frozen=True)
class TargetLayer:
    """The layer whose output a map is made from."""

    name: str  # qualified module name
    kind: str  # "spatial" (N, C, H, W), "spatial-last" (N, H, W, C) or "tokens" (N, T, D)
    prefix_tokens: int = 0  # class / register tokens before the patch tokens ("tokens" only)
    patch_size: tuple[int, int] | None = None  # ("tokens" only)


_CACHE: "weakref.WeakKeyDictionary[nn.Module, TargetLayer]" = weakref.WeakKeyDictionary()


def find_target_layer(model: nn.Module, input_size=(3, 224, 224), head: str | None = None) -> TargetLayer:
    """Choose the layer to explain from the model's type: a vision transformer's last block (its first norm, whose
    output still reaches the class token through attention), else the last layer, in the order the forward pass runs,
    whose output is still a spatial map (outside the classifier ``head``)."""
    cached = _CACHE.get(model)
    if cached is not None:
        return cached
    target = _transformer_target(model) or _spatial_target(model, input_size, head)
    if target is None:
        raise UserError(f"Heat maps are not available for this kind of model ({type(model).__name__}): it has no "
                        "layer that keeps the picture's layout.")
    _CACHE[model] = target
    return target


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


def _transformer_target(model: nn.Module) -> TargetLayer | None:
    names = {m: n for n, m in model.named_modules()}
    # timm's VisionTransformer family (ViT, DeiT, BEiT, EVA, ...): blocks + patch_embed + num_prefix_tokens.
    blocks = getattr(model, "blocks", None)
    patch_embed = getattr(model, "patch_embed", None)
    if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks) and patch_embed is not None \
            and hasattr(model, "num_prefix_tokens") and hasattr(patch_embed, "patch_size"):
        last = blocks[-1]
        layer = last.norm1 if isinstance(getattr(last, "norm1", None), nn.Module) else last
        return TargetLayer(names[layer], "tokens", int(model.num_prefix_tokens), _pair(patch_embed.patch_size))
    # torchvision's VisionTransformer: encoder.layers[-1].ln_1, one class token.
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layers", None)
    if isinstance(layers, (nn.Sequential, nn.ModuleList)) and len(layers) and hasattr(model, "patch_size") \
            and hasattr(model, "class_token"):
        last = layers[-1]
        layer = last.ln_1 if isinstance(getattr(last, "ln_1", None), nn.Module) else last
        return TargetLayer(names[layer], "tokens", 1, _pair(model.patch_size))
    return None


def _spatial_target(model: nn.Module, input_size, head: str | None) -> TargetLayer | None:
    fired: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for name, module in model.named_modules():
        if not name or (head and (name == head or name.startswith(head + "."))):
            continue
        handles.append(module.register_forward_hook(
            lambda m, i, out, name=name: fired.append((name, tuple(out.shape)))
            if isinstance(out, torch.Tensor) and out.dim() == 4 else None))
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros((1, *input_size), device=device))
    except Exception as exc:  # a model that refuses its own input size: no map rather than a crash
        raise UserError(f"Heat maps are not available for this model ({exc.__class__.__name__} while looking "
                        "for its last feature map).") from None
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    channels = _last_feature_channels(model)
    for name, shape in reversed(fired):
        channel_first = shape[2] > 1 or shape[3] > 1
        channel_last = shape[1] > 1 or shape[2] > 1
        # NHWC maps (Swin, MambaOut in timm) are told apart by the channel count timm records for the last stage.
        if channels is not None and shape[3] == channels and shape[1] != channels and channel_last:
            return TargetLayer(name, "spatial-last")
        if channel_first:
            return TargetLayer(name, "spatial")
    return None


def _last_feature_channels(model: nn.Module) -> int | None:
    info = getattr(model, "feature_info", None)
    try:
        return int(info[-1]["num_chs"]) if info else None
    except (TypeError, KeyError, IndexError):
        return None


def _to_channel_first(t: torch.Tensor, target: TargetLayer, input_hw: tuple[int, int]) -> torch.Tensor:
    """The layer's output as (N, C, h, w)."""
    if target.kind == "spatial":
        return t
    if target.kind == "spatial-last":
        return t.permute(0, 3, 1, 2)
    tokens = t[:, target.prefix_tokens:, :]
    n = tokens.shape[1]
    gh, gw = (input_hw[0] // target.patch_size[0], input_hw[1] // target.patch_size[1]) \
        if target.patch_size else (0, 0)
    if gh * gw != n:  # a pooled or resampled token grid: assume a square one
        gh = gw = int(round(math.sqrt(n)))
        if gh * gw != n:
            raise UserError("Heat maps are not available for this model: its tokens do not form a grid.")
    return tokens.reshape(tokens.shape[0], gh, gw, tokens.shape[2]).permute(0, 3, 1, 2)


def grad_cam(model: nn.Module, x: torch.Tensor, target_class: int | None = None,
             layer: TargetLayer | None = None, head: str | None = None) -> tuple[np.ndarray, int, np.ndarray]:
    """Grad-CAM for one preprocessed picture ``x`` (1, 3, H, W) at the network's input size.

    Returns (map (H, W) float32 in [0, 1], the class explained, the class probabilities)."""
    layer = layer or find_target_layer(model, tuple(x.shape[1:]), head)
    module = dict(model.named_modules())[layer.name]
    saved: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, i, out: saved.append(out))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)  # a graph even when every parameter is frozen
            logits = model(x)
            probs = logits.detach().float().softmax(1)[0].cpu().numpy()
            target = int(probs.argmax()) if target_class is None else int(target_class)
            if not 0 <= target < logits.shape[1]:
                raise UserError(f"There is no class number {target} in this model.")
            activation = saved[-1]
            (grads,) = torch.autograd.grad(logits[0, target], activation)
    finally:
        handle.remove()
        model.train(was_training)
    acts = _to_channel_first(activation.detach().float(), layer, tuple(x.shape[2:]))
    grads = _to_channel_first(grads.float(), layer, tuple(x.shape[2:]))
    if layer.kind == "tokens":
        # Per token, |gradient . activation|: how much the class score moves with each patch. Grad-CAM's
        # channel-averaged weights often cancel in a vision transformer, where a class can be decided by what is
        # absent, and then leave an empty map; the token-wise product keeps the patches the decision depends on.
        cam = (grads * acts).sum(dim=1, keepdim=True).abs()
    else:
        weights = grads.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * acts).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)[0, 0]
    top = cam.max()
    cam = cam / top if top > 0 else torch.zeros_like(cam)
    return cam.clamp(0, 1).cpu().numpy().astype(np.float32), target, probs


def crop_box(transform, picture_size: tuple[int, int]) -> tuple[float, float, float, float] | None:
    """Where the network's input lies in the original picture: (left, top, width, height) in picture pixels, for a
    transform made of torchvision Resize and CenterCrop steps (timm's evaluation transform); ``None`` when the
    transform has other geometric steps (the map then spans the whole picture)."""
    from torchvision import transforms as T

    steps = getattr(transform, "transforms", [transform])
    # The current image in picture coordinates: u = x * sx - ox; its size (cw, ch) in its own pixels.
    cw, ch = float(picture_size[0]), float(picture_size[1])
    sx = sy = 1.0
    ox = oy = 0.0
    for step in steps:
        if isinstance(step, T.Resize):
            size = [step.size] if isinstance(step.size, int) else list(step.size)
            if len(size) == 1:  # the shorter side becomes size (torchvision's rule, rounding down the longer one)
                if cw <= ch:
                    nw, nh = size[0], int(size[0] * ch / cw)
                else:
                    nw, nh = int(size[0] * cw / ch), size[0]
            else:
                nh, nw = size
            fx, fy = nw / cw, nh / ch
            sx, sy, ox, oy, cw, ch = sx * fx, sy * fy, ox * fx, oy * fy, float(nw), float(nh)
        elif isinstance(step, T.CenterCrop):
            th, tw = _pair(step.size)
            ox += int(round((cw - tw) / 2.0))
            oy += int(round((ch - th) / 2.0))
            cw, ch = float(tw), float(th)
        elif type(step).__name__ in ("MaybeToTensor", "ToTensor", "Normalize", "PILToTensor", "ConvertImageDtype",
                                     "MaybePILToTensor"):
            continue
        else:
            return None
    return ox / sx, oy / sy, cw / sx, ch / sy


def to_picture(cam: np.ndarray, picture_size: tuple[int, int], box) -> np.ndarray:
    """Place a map made at the network's input size onto the original picture (width, height): stretched over the
    crop ``box``, 0 outside it."""
    width, height = picture_size
    if box is None:
        return np.asarray(Image.fromarray(cam, mode="F").resize((width, height), Image.BILINEAR), dtype=np.float32)
    left, top, bw, bh = box
    resized = Image.fromarray(cam, mode="F").resize((max(1, round(bw)), max(1, round(bh))), Image.BILINEAR)
    canvas = Image.new("F", (width, height), 0.0)
    canvas.paste(resized, (int(round(left)), int(round(top))))
    return np.clip(np.asarray(canvas, dtype=np.float32), 0.0, 1.0)


def class_activation_map(model: nn.Module, image: Image.Image | str | os.PathLike, data_config: dict,
                         target_class: int | None = None, *, head: str | None = None,
                         layer: TargetLayer | None = None) -> np.ndarray:
    """The class-activation map of ``image`` for ``target_class`` (default: the predicted class), as a float32
    (height, width) array in [0, 1] at the picture's own size."""
    return explain(model, image, data_config, target_class, head=head, layer=layer)[0]


def explain(model: nn.Module, image: Image.Image | str | os.PathLike, data_config: dict,
            target_class: int | None = None, *, head: str | None = None, layer: TargetLayer | None = None
            ) -> tuple[np.ndarray, int, np.ndarray]:
    """(map at the picture's size, the class explained, class probabilities) for one picture."""
    from engine.data.images import ImageError, load_rgb
    from engine.data.loaders import build_transforms

    if not isinstance(image, Image.Image):
        try:
            image = load_rgb(image)
        except ImageError as exc:
            raise UserError(f"{os.fspath(image)} cannot be shown: {exc}") from None
    image = image.convert("RGB")
    transform = build_transforms(data_config, "none")[1]
    param = next(model.parameters(), None)
    x = transform(image).unsqueeze(0)
    if param is not None:
        x = x.to(param.device)
    cam, target, probs = grad_cam(model, x, target_class, layer, head)
    return to_picture(cam, image.size, crop_box(transform, image.size)), target, probs


def viridis(values: np.ndarray) -> np.ndarray:
    """Colour values in [0, 1] with viridis: (..., 3) uint8."""
    index = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return VIRIDIS[index]


def overlay(image: Image.Image | np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The picture with its map laid over it in viridis: the map's weight grows with its value (up to ``alpha``),
    so the picture stays visible where the model did not look. Returns an RGB PIL image at the picture's size."""
    base = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32)
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != base.shape[:2]:
        cam = np.asarray(Image.fromarray(cam, mode="F").resize((base.shape[1], base.shape[0]), Image.BILINEAR))
    weight = (alpha * (0.35 + 0.65 * np.clip(cam, 0, 1)))[..., None]
    mixed = base * (1 - weight) + viridis(cam).astype(np.float32) * weight
    return Image.fromarray(np.clip(mixed + 0.5, 0, 255).astype(np.uint8), mode="RGB")
