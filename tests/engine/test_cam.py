"""Class-activation maps: they point at the object that decides the class, for a CNN and a vision transformer, at the
picture's own size, through the centre crop; the layer is chosen from the model's type; the overlay is viridis."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from engine.results.cam import VIRIDIS, class_activation_map, crop_box, find_target_layer, overlay, viridis
from engine.errors import UserError
from engine.data.loaders import build_transforms
from engine.data.loaders import IMAGENET_DEFAULTS
from engine.models.build import build_model

SIDE = 32  # the network's input
SQUARE = 8  # the object's side
# Preprocessing that resizes the shorter side to 32 and centre-crops 32 x 32: a 48 x 32 picture loses 8 columns on
# each side, which the map must leave at 0.
CONFIG = {"input_size": (3, SIDE, SIDE), "interpolation": "bilinear", "mean": (0.5,) * 3, "std": (0.5,) * 3,
          "crop_pct": 1.0, "crop_mode": "center"}
COLOURS = [(220, 40, 40), (40, 60, 220)]  # class 0: a red square, class 1: a blue square


def square_picture(cls: int, x: int, y: int, size=(SIDE, SIDE), seed: int = 0) -> Image.Image:
    """A grey noisy picture with one coloured square at (x, y): its colour decides the class, its place is known."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(90, 150, size=(size[1], size[0], 3)).astype(np.uint8)
    pixels[y:y + SQUARE, x:x + SQUARE] = COLOURS[cls]
    return Image.fromarray(pixels)


def train(model: nn.Module, steps: int, lr: float) -> nn.Module:
    """A few seconds of training on generated squares anywhere in the picture, deterministic."""
    torch.manual_seed(0)
    transform = build_transforms(CONFIG, "none")[1]
    rng = np.random.default_rng(1)
    images, labels = [], []
    for i in range(128):
        x, y = rng.integers(0, SIDE - SQUARE + 1, 2).tolist()
        images.append(transform(square_picture(i % 2, x, y, seed=i)))
        labels.append(i % 2)
    images, labels = torch.stack(images), torch.tensor(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = torch.randint(0, len(images), (32,), generator=generator)
        loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        assert (model(images).argmax(1) == labels).float().mean().item() == 1.0  # it learnt the task
    return model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models run fastest on one thread, and far faster on a machine whose cores are busy with other work.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cnn():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2))
    return train(model, steps=40, lr=1e-2)


@pytest.fixture(scope="module")
def vit():
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=SIDE, patch_size=4, embed_dim=32, depth=1, num_heads=2, mlp_ratio=2,
                              num_classes=2)
    return train(model, steps=80, lr=2e-3)


def places(grid: int):
    """(class, x, y) of squares in a 48 x 32 picture, inside the 32 columns the centre crop keeps (8 to 40), on a
    ``grid`` (a transformer's map has one value per 4 x 4 patch: squares on its grid have a well-defined place)."""
    rng = np.random.default_rng(5)
    for k in range(8):
        x = 8 + int(rng.integers(0, (SIDE - SQUARE) // grid + 1)) * grid
        y = int(rng.integers(0, (SIDE - SQUARE) // grid + 1)) * grid
        yield k % 2, x, y


@pytest.mark.parametrize("which, grid", [("cnn", 1), ("vit", 4)])
def test_the_map_peaks_on_the_object_that_decides_the_class(which, grid, request):
    model = request.getfixturevalue(which)
    for k, (cls, x, y) in enumerate(places(grid)):
        picture = square_picture(cls, x, y, size=(48, 32), seed=100 + k)
        cam = class_activation_map(model, picture, CONFIG)
        assert cam.shape == (32, 48) and cam.dtype == np.float32
        assert cam.min() >= 0.0 and cam.max() == pytest.approx(1.0, abs=0.02)
        peak_y, peak_x = np.unravel_index(cam.argmax(), cam.shape)
        assert x <= peak_x < x + SQUARE and y <= peak_y < y + SQUARE, (which, cls, (x, y), (peak_x, peak_y))
        inside = np.zeros(cam.shape, bool)
        inside[y:y + SQUARE, x:x + SQUARE] = True
        assert cam[inside].mean() > 3 * cam[~inside].mean()
        # The columns cut off by the centre crop were never seen by the model.
        assert cam[:, :8].max() == 0.0 and cam[:, 40:].max() == 0.0


def test_another_class_can_be_explained(cnn):
    picture = square_picture(0, 20, 10, size=(48, 32))
    for target in (0, 1):
        cam = class_activation_map(cnn, picture, CONFIG, target_class=target)
        assert cam.shape == (32, 48) and np.isfinite(cam).all() and 0.0 <= cam.min() <= cam.max() <= 1.0
    with pytest.raises(UserError, match="no class number 5"):
        class_activation_map(cnn, picture, CONFIG, target_class=5)


@pytest.mark.parametrize("name, layer, kind", [
    ("timm:test_resnet", "layer4", "spatial"),
    ("torchvision:mobilenet_v2", "features", "spatial"),
    ("timm:test_vit", "blocks.5.norm1", "tokens"),
])
def test_the_layer_is_chosen_from_the_model_type(name, layer, kind):
    built = build_model(name, "none", 3)
    size = built.data_config["input_size"]
    target = find_target_layer(built.model.eval(), size, built.head)
    assert (target.name, target.kind) == (layer, kind)
    if kind == "tokens":
        assert target.prefix_tokens == built.model.num_prefix_tokens == 1
    picture = square_picture(1, 10, 5, size=(50, 37))  # odd sizes: the map still matches the picture
    cam = class_activation_map(built.model, picture, built.data_config, head=built.head)
    assert cam.shape == (37, 50) and cam.dtype == np.float32
    assert np.isfinite(cam).all() and 0.0 <= cam.min() and cam.max() <= 1.0


def test_crop_box_follows_the_centre_crop():
    # ImageNet's recipe on a 500 x 375 picture: the shorter side 375 -> 256 (so 500 -> 341), crop 224 x 224 at
    # (58, 16): in picture pixels the crop starts at 58 * 500/341 and 16 * 375/256 and spans 224 * 375/256 rows.
    transform = build_transforms(IMAGENET_DEFAULTS, "none")[1]
    left, top, width, height = crop_box(transform, (500, 375))
    assert left == pytest.approx(58 * 500 / 341)
    assert top == pytest.approx(16 * 375 / 256)
    assert width == pytest.approx(224 * 500 / 341)
    assert height == pytest.approx(224 * 375 / 256)


def test_overlay_is_viridis_over_the_picture():
    assert tuple(viridis(np.array(0.0))) == (68, 1, 84) and tuple(viridis(np.array(1.0))) == (253, 231, 37)
    assert VIRIDIS.shape == (256, 3)
    luminance = VIRIDIS @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(luminance) > -1.0)  # viridis grows lighter from dark to light (within rounding)
    picture = Image.new("RGB", (40, 20), (128, 128, 128))
    cam = np.zeros((20, 40), np.float32)
    cam[:, 20:] = 1.0
    out = overlay(picture, cam, alpha=0.5)
    assert out.mode == "RGB" and out.size == (40, 20)
    pixels = np.asarray(out).astype(int)
    cold, hot = pixels[10, 5], pixels[10, 35]
    assert np.abs(cold - 128).max() < 40  # where the model did not look, the picture shows through
    assert hot[0] > 180 and hot[1] > 170 and hot[2] < 90  # where it looked: viridis yellow over grey
