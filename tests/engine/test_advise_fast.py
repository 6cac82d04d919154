"""The fast path of the advisor's feature extraction (engine.advise.transfer): BatchNorms folded into their
convolutions and 8-bit pictures normalised a batch at a time give the same features, and so the same scores, as the
plain path (issue #13, item e: ``advise`` under a minute on 2,000 pictures)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision

from conftest import make_class_folders
from engine.advise.transfer import extract_features, fold_batchnorm, stratified_sample
from engine.data.scan import scan
from engine.models.build import build_model
from engine.models.layers import build_layer_tree

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _with_running_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Running means and variances that are not the identity (a fresh BatchNorm's would fold into nothing)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def test_folding_the_batchnorms_keeps_the_outputs():
    torch.manual_seed(0)
    model = _with_running_statistics(torchvision.models.mobilenet_v2(num_classes=5))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        before = model(x)
        folded = fold_batchnorm(model)
        after = model(x)
    assert folded == sum(1 for m in model.modules() if type(m) is nn.Conv2d)  # every conv of MobileNetV2 has one
    assert not any(type(m) is nn.BatchNorm2d for m in model.modules())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_a_training_model_is_never_folded():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    assert fold_batchnorm(model) == 0 and isinstance(model[1], nn.BatchNorm2d)


def test_the_fast_path_gives_the_plain_paths_features(tmp_path):
    data = make_class_folders(tmp_path / "colours", per_class=6)
    samples = stratified_sample(scan(data, verify=False).samples, 18)
    results = []
    for fast in (False, True):
        torch.manual_seed(0)
        built = build_model("timm:test_resnet", "none", 3)
        _with_running_statistics(built.model)
        tree = build_layer_tree(built.model, built.head)
        results.append(extract_features(built, tree, samples, device="cpu", cache=False, fast=fast))
    plain, fast = results
    assert set(fast.stages) == set(plain.stages) and len(plain.stages) >= 3
    for stage in plain.stages:
        np.testing.assert_allclose(fast.stages[stage], plain.stages[stage], rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(fast.head, plain.head, rtol=2e-3, atol=2e-3)
