"""The frozen-prefix cache: a split model computes what the whole model computes, and its suffix is the model's own."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from engine.train import fastpath as F
from engine.config import Phase, RunConfig
from engine.train.strategies import apply_phase, resolve_phases, set_train_mode
from engine.models.layers import HEAD, build_layer_tree
from engine.models.build import build_model


SIDE = 64


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors: one thread is as fast, and far faster when other processes load the machine's cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def prepared(name: str, strategy: str, **model_kwargs):
    torch.manual_seed(0)
    built = build_model(name, "none", 3)
    model = built.model
    for key, value in model_kwargs.items():
        setattr(model, key, value)
    tree = build_layer_tree(model, built.head)
    phase = resolve_phases(RunConfig(strategy=strategy, epochs=2), tree)[0]
    apply_phase(model, tree, phase)
    stages = tree.module_stages(model)
    train_mode = lambda: set_train_mode(model, tree, phase, stages)  # noqa: E731
    # Small pictures keep the tests fast; these convolutional models take any size, and a split does not depend on it.
    example = torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    return built, model, tree, phase, train_mode, example


@pytest.mark.parametrize("name", ["timm:resnet18", "torchvision:mobilenet_v2"])
@pytest.mark.parametrize("strategy,kind", [("feature-extraction", "head"), ("fine-tune-shallow", "graph")])
def test_split_model_computes_the_same_outputs(name, strategy, kind):
    built, model, tree, phase, train_mode, example = prepared(name, strategy)
    split = F.split_model(model, tree, phase, built.head, example, train_mode)
    assert split.kind == kind
    x = torch.randn(3, 3, SIDE, SIDE)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(split.eval_suffix(split.prefix(x)), model(x), atol=1e-5)
        for onnx, how in ((False, "fused"), (True, "onnx")):
            fast, used = F.fast_prefix(split, example, onnx=onnx)
            assert used == how
            assert torch.allclose(fast(x), split.prefix(x), rtol=1e-4, atol=1e-4)
    # In training, the suffix is the model's own layers: a step on it moves the model's parameters.
    train_mode()
    trained = [p for p in split.train_suffix.parameters() if p.requires_grad]
    own = {id(p) for p in model.parameters()}
    assert trained and all(id(p) in own for p in trained)
    before = [p.detach().clone() for p in trained]
    with torch.no_grad():
        features = split.prefix(x)
    split.train_suffix(features).sum().backward()
    torch.optim.SGD(trained, lr=0.1).step()
    assert any(not torch.equal(b, p) for b, p in zip(before, trained))


def test_the_training_suffix_uses_batch_statistics_where_batchnorm_trains():
    built, model, tree, phase, train_mode, example = prepared("timm:resnet18", "fine-tune-shallow")
    assert phase.bn == "train"
    split = F.split_model(model, tree, phase, built.head, example, train_mode)
    x = torch.randn(4, 3, SIDE, SIDE)
    train_mode()
    reference = model(x)
    with torch.no_grad():
        features = split.prefix(x)
    train_mode()
    assert torch.allclose(split.train_suffix(features), reference, atol=1e-5)
    # The prefix's BatchNorm statistics stay as they were (frozen stages), the suffix's moved.
    assert torch.equal(model.layer1[0].bn1.running_var, torch.ones_like(model.layer1[0].bn1.running_var))
    assert not torch.equal(model.layer4[0].bn1.running_var, torch.ones_like(model.layer4[0].bn1.running_var))


def test_splitting_leaves_the_model_as_it_was():
    built, model, tree, phase, train_mode, example = prepared("timm:resnet18", "fine-tune-shallow")
    train_mode()
    modes = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    F.split_model(model, tree, phase, built.head, example, train_mode)
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert type(model.get_submodule(built.head)) is nn.Linear  # the head was replaced in a copy only


def test_dropout_before_the_head_moves_into_the_trained_part():
    built, model, tree, phase, train_mode, example = prepared("timm:resnet18", "feature-extraction", drop_rate=0.5)
    split = F.split_model(model, tree, phase, built.head, example, train_mode)
    assert any(isinstance(m, nn.Dropout) and m.p == 0.5 for m in split.train_suffix.modules())
    train_mode()
    split.train_extra()
    x = torch.randn(4, 3, SIDE, SIDE)
    torch.manual_seed(3)
    reference = model(x)  # dropout active on the features, as in the normal path
    model.eval()  # the prefix always runs in eval mode
    with torch.no_grad():
        features = split.prefix(x)
    train_mode()
    split.train_extra()
    torch.manual_seed(3)
    assert torch.allclose(split.train_suffix(features), reference, atol=1e-5)


class Branchy(nn.Module):
    """Two values flow from the frozen layers to the trained ones: no single tensor to cache."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.more = nn.Conv2d(4, 4, 3, padding=1)
        self.body = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        a = self.stem(x)
        b = self.more(torch.relu(a))
        c = self.body(b)
        return self.fc(torch.cat([a.mean((2, 3)), c.mean((2, 3))], 1))


class DataDependent(nn.Module):
    """A model whose forward depends on the values of the input: it cannot be traced into a graph."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3)
        self.body = nn.Conv2d(4, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.stem(x)
        if x.mean() > 0:
            x = x * 2
        return self.fc(self.body(x).mean((2, 3)))


@pytest.mark.parametrize("model_class,reason", [(Branchy, "more than one value"), (DataDependent, "traced")])
def test_a_model_that_cannot_be_split_says_why(model_class, reason):
    model = model_class()
    tree = build_layer_tree(model, "fc")
    phase = Phase("p", 1, 0.1, {"body": 1.0, HEAD: 1.0}, bn="train")
    apply_phase(model, tree, phase)
    stages = tree.module_stages(model)
    with pytest.raises(F.NoSplit, match=reason):
        F.split_model(model, tree, phase, "fc", torch.randn(2, 3, 16, 16),
                      lambda: set_train_mode(model, tree, phase, stages))


def test_nothing_is_cached_when_the_first_stage_trains():
    built, model, tree, phase, train_mode, example = prepared("timm:resnet18", "fine-tune-deep")
    with pytest.raises(F.NoSplit, match="first stage"):
        F.split_model(model, tree, phase, built.head, example, train_mode)


def test_each_epoch_draws_one_view_per_picture_repeatably():
    outputs = torch.arange(3 * 10, dtype=torch.float32).reshape(3, 10, 1)  # view v of picture i = 10 v + i
    labels = torch.arange(10).repeat(3, 1)
    views = F.FeatureSet(outputs, labels, seed=5)
    again = F.FeatureSet(outputs, labels, seed=5)
    seen = set()
    for epoch in range(1, 6):
        views.set_epoch(epoch)
        again.set_epoch(epoch)
        x, y = views.__getitems__(list(range(10)))
        assert torch.equal(y, torch.arange(10)) and torch.equal(x.flatten() % 10, torch.arange(10.0))
        assert torch.equal(x, again.__getitems__(list(range(10)))[0])
        seen |= {int(v) // 10 for v in x.flatten()}
    assert seen == {0, 1, 2}


def test_cached_batches_come_in_the_order_of_the_picture_loader():
    from engine.data.loaders import make_loader

    class Indices(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return torch.tensor([float(i)]), i

    pictures = make_loader(Indices(), 4, shuffle=True, workers=0, seed=3, drop_last=True)
    cached = F.feature_loader(F.FeatureSet(torch.arange(10.0).reshape(1, 10, 1), torch.arange(10)[None]), 4,
                              shuffle=True, seed=3, drop_last=True)
    for _ in range(3):  # several epochs
        assert [y.tolist() for _, y in pictures] == [y.tolist() for _, y in cached]


def test_views_and_memory_rules():
    assert F.auto_views(0, "none", 10) == 1
    assert F.auto_views(0, "light", 10) == F.AUTO_VIEWS
    assert F.auto_views(0, "light", 1) == 1
    assert F.auto_views(5, "strong", 2) == 5
    split = F.Split(nn.Identity(), nn.Identity(), nn.Identity(), "head", ("stem",), (1280,), torch.float32)
    assert F.bytes_needed(split, 100, 50, 2) == 1280 * 4 * 250
