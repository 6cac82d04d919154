"""The frozen-prefix cache: compute the frozen part of a model once and train only the rest on its outputs.

When every stage below some stage is frozen -- and a frozen stage is always in eval mode, so its BatchNorm layers
use their stored statistics and its dropout is off (see engine.train.strategies) -- the frozen part computes the same
output for the same picture in every epoch. This module splits a model into

- a *prefix*: the frozen stages, run once per picture (in eval mode, without gradients) before a phase trains, and
- a *suffix*: everything from the first stage that trains up to the head, trained on the prefix's outputs.

Two ways to split, tried in this order:

1. Only the head trains (feature extraction, linear probing): the prefix is the model without its classifier --
   timm's ``forward_features`` + ``forward_head(pre_logits=True)``, or, for other models such as torchvision's, the
   model with its head module replaced by ``Identity`` (MobileNetV2: ``features`` + pooling; ``classifier`` is the
   head). Dropout that the uncached model applies to the features in training (timm's ``drop_rate``, a dropout
   module just before the head) is moved in front of the head, so training sees the same dropout.
2. Deeper prefixes: the model is traced with ``torch.fx`` (with timm's leaf modules) and cut just before the first
   layer that trains, when exactly one tensor crosses the cut (true for chains of blocks: ResNet's ``layerN``,
   MobileNet's ``features.N``...). The suffix is traced twice, in the training and the evaluation state, because
   tracing fixes Python-level ``if self.training`` branches.

Every split is *verified* on a probe batch before it is used: in eval mode, ``suffix(prefix(x))`` must equal
``model(x)``; in the phase's training state (frozen stages in eval mode, dropout drawn from the same random state),
the training suffix must equal the training model. A model that cannot be split, or fails the check, trains the
normal way, and the run's log says which path it takes.

With augmentation, each training picture gets a chosen number of augmented *views*, each passed once through the
prefix; each epoch draws one of them per picture. Validation pictures use the evaluation transform, once.

This module holds the mechanics; engine.train.prefix decides for each phase whether to take this path (the memory the
outputs need, the number of views) and computes the outputs.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Sampler

from engine.config import Phase
from engine.models.layers import HEAD, LayerTree

__all__ = ["AUTO_VIEWS", "FastPath", "FeatureSet", "Split", "as_is", "auto_views", "compute_features", "feature_loader",
           "split_model"]

# Augmented views per training picture when TrainConfig.feature_views is 0 (auto), at most the epochs. Measured on
# the ants/bees pictures, MobileNetV2 feature extraction, 10 epochs, mean validation accuracy of 5 seeds: 2 views
# 95.0 %, 3 views 95.4 %, 4 views 95.4 % (the PyTorch tutorial, fresh crops every epoch: 95.8 %); each view costs
# one pass of the frozen layers over the training pictures.
AUTO_VIEWS = 3
MEMORY_SHARE = 0.5  # cached outputs may take at most this share of the memory available when the phase starts
PROBE_BATCH = 2


@dataclass
class Split:
    """A model cut into a frozen prefix and a trained suffix that share the model's parameters."""

    prefix: nn.Module  # frozen part: call in eval mode, without gradients
    train_suffix: nn.Module  # the rest, for training steps (the model's own layers)
    eval_suffix: nn.Module  # the rest, for evaluation (the same layers; may be the same object)
    kind: str  # "head" (only the head trains) or "graph" (a deeper prefix cut from the traced graph)
    frozen: tuple[str, ...]  # the frozen stages the prefix holds
    output_shape: tuple[int, ...]  # one picture's prefix output
    output_dtype: torch.dtype
    probe: torch.Tensor | None = None  # the prefix's output for the probe batch the split was verified on
    extra: tuple[nn.Module, ...] = ()  # layers of the suffix that are not the model's own (a moved dropout)

    def train_extra(self) -> None:
        """Training mode for the suffix's own added layers (the model's layers follow engine.train.strategies); call
        after ``set_train_mode`` at the start of each epoch."""
        for module in self.extra:
            module.train()

    def describe(self) -> str:
        """What runs once, in words: 'the layers below the head', 'the frozen stages stem to layer2'."""
        if self.kind == "head":
            return "the layers below the head"
        first, last = self.frozen[0], self.frozen[-1]
        return f"the frozen stages {first} to {last}" if first != last else f"the frozen stage {first}"


class NoSplit(Exception):
    """The model cannot be split for this phase; ``str()`` says why (for the user, in plain words)."""


# --- splitting ------------------------------------------------------------------------------------------------


def frozen_prefix_stages(tree: LayerTree, phase: Phase) -> list[str]:
    """The stages below the first stage that trains, in input order."""
    names = []
    for stage in tree.stages:
        if stage.name in phase.stages:
            break
        names.append(stage.name)
    return names


def split_model(model: nn.Module, tree: LayerTree, phase: Phase, head: str, example: torch.Tensor,
                set_phase_train_mode: Callable[[], None]) -> Split:
    """Split ``model`` for ``phase`` and verify the split on ``example`` (a batch of inputs on the model's device).

    ``set_phase_train_mode()`` puts the model in the phase's training state (engine.train.strategies.set_train_mode).
    Raises NoSplit with the reason when the model trains the normal way. The model's modes, buffers and random
    state are left as they were."""
    frozen = frozen_prefix_stages(tree, phase)
    if not frozen or frozen == [HEAD]:
        raise NoSplit("the first stage of the model trains, so nothing below it can be computed once")
    with _preserved(model):
        if set(phase.stages) == {HEAD}:
            reasons = []
            for build in (_timm_pre_logits, _without_head):
                try:
                    split = build(model, head, tree, frozen, example, set_phase_train_mode)
                except NoSplit as exc:
                    reasons.append(str(exc))
                    continue
                return split
            raise NoSplit(reasons[-1])
        return _graph_split(model, tree, phase, frozen, example, set_phase_train_mode)


class _PreLogits(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def _timm_pre_logits(model, head, tree, frozen, example, set_phase_train_mode) -> Split:
    if not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
        raise NoSplit("the model has no forward_features/forward_head")
    return _head_split(model, _PreLogits(model), head, frozen, example, set_phase_train_mode)


def _without_head(model, head, tree, frozen, example, set_phase_train_mode) -> Split:
    return _head_split(model, _replace_module(model, head, nn.Identity()), head, frozen, example,
                       set_phase_train_mode)


def _replace_module(model: nn.Module, qualname: str, replacement: nn.Module) -> nn.Module:
    """A shallow copy of ``model`` with one submodule replaced; the model itself and all other modules are shared."""
    clone = copy.copy(model)
    clone._modules = dict(model._modules)
    parent = clone
    parts = qualname.split(".")
    for part in parts[:-1]:
        child = copy.copy(parent._modules[part])
        child._modules = dict(child._modules)
        parent._modules[part] = child
        parent = child
    parent._modules[parts[-1]] = replacement
    return clone


def _is_stochastic(module: nn.Module) -> bool:
    name = type(module).__name__
    return isinstance(module, nn.modules.dropout._DropoutNd) or "DropPath" in name or "StochasticDepth" in name \
        or "DropBlock" in name


def _head_split(model, prefix, head, frozen, example, set_phase_train_mode) -> Split:
    head_module = model.get_submodule(head)
    # Dropout that runs in the prefix but is active in training (it belongs to no frozen stage) moves in front of
    # the head: it acts on the features element by element, so the head sees the same thing.
    set_phase_train_mode()
    active = {id(m): m for m in model.modules()
              if _is_stochastic(m) and m.training and getattr(m, "p", getattr(m, "drop_prob", 0.0))}
    head_ids = {id(m) for m in head_module.modules()}
    ran: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: ran.append(mod)) for k, m in active.items()
             if k not in head_ids]
    try:
        with torch.no_grad(), _eval(model):
            features = prefix(example)
    except Exception as exc:  # a model whose parts do not run on their own
        raise NoSplit(f"the model cannot run without its head ({exc.__class__.__name__})") from None
    finally:
        for h in hooks:
            h.remove()
    moved = [m for m in dict.fromkeys(ran) if isinstance(m, nn.Dropout)]
    if len(moved) != len(set(map(id, ran))):
        raise NoSplit("random layers (drop-path) below the head are active during training")
    extra: tuple[nn.Module, ...] = ()
    if not moved and float(getattr(model, "drop_rate", 0.0) or 0.0) > 0 and hasattr(model, "forward_head"):
        moved = [nn.Dropout(float(model.drop_rate))]  # timm's functional dropout in forward_head
        extra = tuple(moved)
    suffix = nn.Sequential(*moved, head_module) if moved else head_module
    if not isinstance(features, torch.Tensor):
        raise NoSplit("the features below the head are not a single tensor")
    split = Split(prefix, suffix, suffix, "head", tuple(frozen), tuple(features.shape[1:]), features.dtype, features,
                  extra)
    _verify(model, split, example, set_phase_train_mode)
    return split


def _tracer_class():
    import torch.fx as fx

    try:
        from timm.layers._fx import get_notrace_functions, get_notrace_modules

        leaves = tuple(get_notrace_modules())
        functions = tuple(f for f in get_notrace_functions() if callable(f))
    except ImportError:
        leaves, functions = (), ()

    class Tracer(fx.Tracer):
        def __init__(self):
            super().__init__(autowrap_functions=functions)

        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return (bool(leaves) and isinstance(m, leaves)) or super().is_leaf_module(m, qualname)

    return Tracer


def trace(module: nn.Module):
    """``torch.fx`` graph of ``module`` in its current training state (timm's non-traceable layers stay whole)."""
    import torch.fx as fx

    graph = _tracer_class()().trace(module)
    return fx.GraphModule(module, graph)


def _node_state(node, module_stages: dict[str, str | None], param_stage: dict[str, str], trained: set[str],
                modules: dict[str, nn.Module]) -> str:
    """'frozen', 'trained' or 'neutral' (no parameters or buffers of its own)."""
    if node.op == "call_module":
        module = modules[node.target]
        if not any(True for _ in module.parameters()) and not any(True for _ in module.buffers()):
            return "neutral"
        stage = module_stages.get(node.target)
    elif node.op == "get_attr":
        stage = param_stage.get(node.target) or module_stages.get(node.target.rpartition(".")[0])
    else:
        return "neutral"
    return "frozen" if stage is not None and stage not in trained else "trained"


def _cut(gm, tree: LayerTree, phase: Phase, module_stages):
    """(prefix nodes, the one node crossing the cut, suffix nodes) for the graph ``gm``; NoSplit otherwise."""
    nodes = list(gm.graph.nodes)
    modules = dict(gm.named_modules())
    param_stage = {p: tree.stage_of_param(p) for p, _ in gm.named_parameters()
                   if p in tree._param_stage}  # noqa: SLF001
    states = [_node_state(n, module_stages, param_stage, set(phase.stages), modules) for n in nodes]
    first_trained = next((i for i, s in enumerate(states) if s == "trained"), None)
    if first_trained is None:
        raise NoSplit("no trained layer was found in the traced model")
    frozen_before = [i for i in range(first_trained) if states[i] == "frozen"]
    if not frozen_before:
        raise NoSplit("no frozen layer runs before the first trained one")
    for cut in range(first_trained, frozen_before[-1], -1):
        prefix = nodes[:cut]
        inside = set(prefix)
        crossing = [n for n in prefix if n.op != "get_attr" and any(u not in inside for u in n.users)]
        if len(crossing) == 1 and crossing[0].op != "placeholder":
            return prefix, crossing[0], nodes[cut:]
    raise NoSplit("more than one value flows from the frozen layers to the trained ones")


def _graph_halves(gm, prefix_nodes, crossing, suffix_nodes):
    """Two GraphModules made from ``gm``'s nodes: prefix (input -> crossing value) and suffix (crossing -> output).

    Written by hand (a dozen lines) rather than with torch.fx.passes.split_module, which needs a partition of every
    node and gives a wrapper module whose inputs and outputs would have to be unpicked again."""
    import torch.fx as fx

    head_graph = fx.Graph()
    env: dict = {}
    for node in prefix_nodes:
        env[node] = head_graph.node_copy(node, lambda n: env[n])
    head_graph.output(env[crossing])
    tail_graph = fx.Graph()
    env2: dict = {crossing: tail_graph.placeholder("features")}

    def arg(n):
        if n not in env2:  # a parameter read in the prefix and used again after the cut
            env2[n] = tail_graph.node_copy(n, lambda m: env2[m])
        return env2[n]

    for node in suffix_nodes:
        env2[node] = tail_graph.node_copy(node, arg)
    return fx.GraphModule(gm, head_graph), fx.GraphModule(gm, tail_graph)


def _graph_split(model, tree, phase, frozen, example, set_phase_train_mode) -> Split:
    module_stages = tree.module_stages(model)
    try:
        with _eval(model):
            eval_gm = trace(model)
        set_phase_train_mode()
        train_gm = trace(model)
    except Exception as exc:  # symbolic tracing fails on data-dependent Python control flow
        raise NoSplit(f"the model cannot be traced into a graph ({exc.__class__.__name__})") from None
    prefix, eval_suffix = _graph_halves(eval_gm, *_cut(eval_gm, tree, phase, module_stages))
    _, train_suffix = _graph_halves(train_gm, *_cut(train_gm, tree, phase, module_stages))
    with torch.no_grad(), _eval(model):
        features = prefix(example)
    if not isinstance(features, torch.Tensor):
        raise NoSplit("the frozen layers' output is not a single tensor")
    split = Split(prefix, train_suffix, eval_suffix, "graph", tuple(frozen), tuple(features.shape[1:]),
                  features.dtype, features)
    _verify(model, split, example, set_phase_train_mode)
    return split


def _close(a, b) -> bool:
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
        return False
    a, b = a.float(), b.float()
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5 + 1e-4 * float(b.abs().max())))


def _verify(model, split: Split, example, set_phase_train_mode) -> None:
    """The split must compute what the model computes, in eval mode and in the phase's training state."""
    features = split.probe
    with torch.no_grad():
        with _eval(model), _eval(split.eval_suffix):
            reference = model(example)
            if not _close(split.eval_suffix(features), reference):
                raise NoSplit("the split model does not compute the same outputs as the whole model")
        set_phase_train_mode()
        with torch.random.fork_rng(devices=_rng_devices(example)):
            torch.manual_seed(12345)
            reference = model(example)
        set_phase_train_mode()
        split.train_extra()
        with torch.random.fork_rng(devices=_rng_devices(example)):
            torch.manual_seed(12345)
            trained = split.train_suffix(features)
        if not _close(trained, reference):
            raise NoSplit("the frozen layers do not compute the same outputs in training and in evaluation")


def _rng_devices(example: torch.Tensor) -> list:
    return [example.device.index or 0] if example.device.type == "cuda" else []


@contextlib.contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    """Eval mode for every module inside the block, the previous modes restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def _preserved(model: nn.Module) -> Iterator[None]:
    """Modes and buffers (BatchNorm statistics) as they were, whatever probe batches ran inside the block."""
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)


def fast_inference(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, str]:
    """A faster module computing what the whole ``model`` computes in eval mode (evaluation and prediction), and how:
    the frozen pass's own machinery (fast_prefix), ONNX Runtime on a CPU, checked against the model on ``example``."""
    with torch.no_grad(), _eval(model):
        probe = model(example)
    whole = Split(model, model, model, "head", (), tuple(probe.shape[1:]), probe.dtype, probe)
    return fast_prefix(whole, example, onnx=example.device.type == "cpu")


def fast_prefix(split: Split, example: torch.Tensor, *, onnx: bool = False) -> tuple[nn.Module, str]:
    """A faster module computing the same prefix, and how: "onnx" (ONNX Runtime, CPU only: about 1.5 times the
    speed of the folded graph for MobileNetV2), "fused" (each BatchNorm folded into the convolution before it,
    torch.fx's inference fusion: about twice the eager speed on a CPU) or "exact" (the prefix itself). Each candidate
    must reproduce the verified prefix's outputs up to rounding, or the next one is used."""
    if onnx and example.device.type == "cpu":
        session = _onnx_prefix(split, example)
        if session is not None:
            return session, "onnx"
    from torch.fx.experimental.optimization import fuse

    try:
        with _eval(split.prefix):
            # Tracing fixes `self.training` branches: trace in eval mode, the mode the prefix always runs in.
            gm = split.prefix if hasattr(split.prefix, "graph") else trace(split.prefix)
            fused = fuse(gm, no_trace=True).eval()  # folds copies: the model's own layers stay as they are
        with torch.no_grad():
            if _close(fused(example), split.probe):
                return fused, "fused"
    except Exception:  # any tracing or folding problem: the exact prefix is always correct
        pass
    return split.prefix, "exact"


class _OnnxPrefix(nn.Module):
    """The prefix exported to ONNX and run by ONNX Runtime (already a dependency, for checking exports)."""

    def __init__(self, session):
        super().__init__()
        self.session = session
        self.input = session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input: pixels})[0])


def _onnx_prefix(split: Split, example: torch.Tensor) -> nn.Module | None:
    import io
    import warnings

    try:
        import onnxruntime as ort

        buffer = io.BytesIO()
        with _eval(split.prefix), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings
            torch.onnx.export(split.prefix, (example[:1].contiguous(),), buffer, dynamo=False, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        # No busy-waiting between operators: the picture-loading processes need the same cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        module = _OnnxPrefix(ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"]))
        module.onnx_bytes = buffer.getvalue()  # kept: the int8 prefix is quantised from it (int8_prefix)
        with torch.no_grad():
            if _close(module(example), split.probe):
                return module
    except Exception:  # no exporter for some layer, no ONNX Runtime, ...: the torch paths remain
        pass
    return None


def int8_prefix(prefix: nn.Module, calibration: torch.Tensor, cache: Path | None = None) -> nn.Module | None:
    """The ONNX prefix (``fast_prefix``'s "onnx") quantised to int8 by ONNX Runtime's static quantisation -- the
    same as the int8 export (engine.models.quantize), with one scale per weight tensor and min-max activation ranges
    (faster to run and to calibrate) -- calibrated on ``calibration`` (a few training pictures, normalised), and kept
    in ``cache`` for the next run with the same frozen layers and pictures (``from_cache`` says whether it came from
    there); None when the prefix is not an ONNX one or the quantiser fails. Whether its outputs are good enough is
    for the caller to measure (engine.train.prefix)."""
    source = getattr(prefix, "onnx_bytes", None)
    if source is None:
        return None
    try:
        import onnxruntime as ort

        from engine.models.quantize import quantized_onnx

        quantized, cached = quantized_onnx(source, calibration.detach().float().cpu().contiguous().numpy(), "x",
                                           per_channel=False, method="minmax", cache=cache)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        module = _OnnxPrefix(ort.InferenceSession(quantized, options, providers=["CPUExecutionProvider"]))
        module.from_cache = cached
        return module
    except Exception:  # the quantiser cannot handle some layer: the fp32 prefix remains
        return None


# --- views and memory -----------------------------------------------------------------------------------------


def auto_views(requested: int, augment: str, epochs: int) -> int:
    """Augmented views per training picture: 1 without augmentation; else the requested number, or AUTO_VIEWS
    (at most one per epoch)."""
    if augment == "none":
        return 1
    if requested > 0:
        return requested
    return max(1, min(AUTO_VIEWS, epochs))


def memory_budget(device: torch.device) -> int:
    """Bytes the cached outputs may take: a share of the free memory where they are kept."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * MEMORY_SHARE * 0.5)
    import psutil

    return int(psutil.virtual_memory().available * MEMORY_SHARE)


def bytes_needed(split: Split, train_pictures: int, val_pictures: int, views: int) -> int:
    each = math.prod(split.output_shape) * torch.empty((), dtype=split.output_dtype).element_size()
    return each * (train_pictures * views + val_pictures)


# --- computing and serving the cached outputs ------------------------------------------------------------------


def compute_features(prefix: nn.Module, loader, run_batch: Callable[[nn.Module, torch.Tensor], torch.Tensor],
                     check_stop: Callable[[], None], keep_on: torch.device, out_like: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``prefix`` (in eval mode) over every batch of ``loader``; ``run_batch(prefix, images)`` moves a batch to
    the device and runs it without gradients. Returns (outputs, labels), the outputs on ``keep_on`` -- written into
    ``out_like`` when given (pictures x ...), which avoids holding the outputs twice."""
    outputs, labels = [], []
    filled = 0
    with _eval(prefix):
        for images, batch_labels in loader:
            check_stop()
            out = run_batch(prefix, images)
            if out_like is not None:
                out_like[filled:filled + out.shape[0]].copy_(out)
                filled += out.shape[0]
            else:
                outputs.append(out.to(keep_on))
            labels.append(batch_labels)
    labels = torch.cat(labels)
    return (out_like if out_like is not None else torch.cat(outputs)), labels


class FeatureSet(Dataset):
    """Cached prefix outputs: ``views`` x pictures. Each epoch (``set_epoch``) draws one view per picture."""

    def __init__(self, outputs: torch.Tensor, labels: torch.Tensor, seed: int = 0):
        if outputs.dim() < 2 or labels.dim() != 2:
            raise ValueError("outputs must be views x pictures x ..., labels views x pictures")
        self.outputs = outputs
        self.labels = labels
        self.seed = seed
        self.view_of = torch.zeros(outputs.shape[1], dtype=torch.long)

    @property
    def views(self) -> int:
        return self.outputs.shape[0]

    def set_epoch(self, epoch: int) -> None:
        if self.views > 1:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self.view_of = torch.randint(self.views, (len(self),), generator=generator)

    def __len__(self) -> int:
        return self.outputs.shape[1]

    def __getitem__(self, index: int):
        view = int(self.view_of[index])
        return self.outputs[view, index], self.labels[view, index]

    def __getitems__(self, indices: list[int]):
        # One indexing operation per batch instead of one per picture, then no collation (see as_is).
        index = torch.as_tensor(indices, dtype=torch.long)
        view = self.view_of[index]
        where = self.outputs.device
        return self.outputs[view.to(where), index.to(where)], self.labels[view, index]


def as_is(batch):
    """The collate function of batches that FeatureSet.__getitems__ made already."""
    return batch


def feature_loader(features: FeatureSet, batch_size: int, *, shuffle: bool, seed: int = 0, drop_last: bool = False,
                   pin_memory: bool = False) -> DataLoader:
    """Batches of cached outputs, shuffled exactly like engine.data.loaders.make_loader shuffles pictures (the same
    generator and sampler), so that without augmentation both paths see the same batches in the same order."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(features, batch_size=batch_size, shuffle=shuffle, num_workers=0, generator=generator,
                      drop_last=drop_last, collate_fn=as_is, pin_memory=pin_memory)


@dataclass
class FastPath:
    """A phase trained on its frozen prefix's outputs, computed once (engine.train.prefix.fast_path makes it)."""

    split: Split
    train_set: FeatureSet  # the training pictures' outputs, one or more augmented views each
    train_loader: DataLoader
    val_loader: DataLoader
    order: Sampler  # the training outputs' shuffled order, with its resumable position (engine.train.loop.Order)

    def begin_epoch(self, epoch: int) -> None:
        """Call after ``set_train_mode`` at the start of each epoch: the suffix's own added layers train, and the
        epoch draws its view of each picture."""
        self.split.train_extra()
        self.train_set.set_epoch(epoch)
