"""Adapters: LoRA (low-rank adaptation, Hu et al. 2021) on a frozen model, built on peft.

A LoRA adapter leaves a layer's pretrained weight ``W`` as it is and learns a small correction ``B @ A`` beside it
(``A``: rank x inputs, ``B``: outputs x rank, ``B`` starting at zero so that the model starts exactly as it was); the
layer computes ``W x + (alpha / rank) * B A x``. Only ``A`` and ``B`` train (and the new head, fully), so a run trains
and stores a few per cent of the parameters.

In plain words: the **rank** is how many independent directions each adapted layer may change in (4 to 16 is usual;
higher learns more and stores more), and **alpha** the adapters' strength (their output is scaled by alpha / rank;
twice the rank is the common choice).

Targets: in the chosen stages, every ``nn.Linear`` (a transformer's attention and MLP projections: ``qkv``, ``proj``,
``fc1``, ``fc2``) and every convolution peft supports and can merge (``nn.Conv1d``/``Conv2d``/``Conv3d`` with
``groups == 1``: a CNN's full and pointwise convolutions; peft cannot merge adapters into grouped or depthwise
convolutions, so those stay frozen). The head is never adapted: it trains fully.

peft is imported inside the functions: its import pulls in transformers (seconds), which the app's start-up and the
runs that use no adapter must not pay.

Files: ``best.safetensors`` holds the merged weights (``W + (alpha / rank) B A``), so that evaluation, prediction and
every export load a plain model; ``adapter.safetensors`` beside it holds only the adapters and the head (kilobytes to
a few megabytes), with the rank, alpha and targets in its metadata: ``apply_adapter_file`` puts them back onto the
starting model. ``checkpoint.pt`` holds the model with its adapters unmerged, so a stopped LoRA run resumes exactly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from engine.models.layers import HEAD, LayerTree, Stage

ADAPTER_FILE = "adapter.safetensors"
ADAPTER_NAME = "default"  # peft's adapter name: part of the parameters' names (lora_A.default.weight)
MARK = "transfer_studio_lora"  # the attribute on a model that carries adapters: its LoraInfo
DEFAULT_RANK = 8
DEFAULT_ALPHA = 16.0
_LORA_PART = re.compile(r"\.lora_[A-Za-z_]+\.")  # lora_A., lora_B., lora_embedding_A., lora_magnitude_vector.
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class LoraInfo:
    rank: int
    alpha: float
    stages: tuple[str, ...]  # the stages that carry adapters
    targets: tuple[str, ...]  # the adapted modules' names
    head_module: str  # the head's module name: the head trains fully and goes into the adapter file

    def to_dict(self) -> dict:
        return {"rank": self.rank, "alpha": self.alpha, "stages": list(self.stages), "targets": list(self.targets),
                "head_module": self.head_module}


def is_adapter_param(name: str) -> bool:
    """Whether a parameter belongs to an adapter (``...qkv.lora_A.default.weight``)."""
    return _LORA_PART.search(name) is not None


def info_of(model: nn.Module) -> LoraInfo | None:
    """The adapters a model carries (None: a plain model). Cheap: no peft import."""
    return getattr(model, MARK, None)


def supported(module: nn.Module) -> bool:
    """A layer LoRA can adapt and merge back: a linear layer, or a convolution without groups."""
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, _CONVS) and module.groups == 1


def targets_by_stage(model: nn.Module, tree: LayerTree) -> dict[str, list[str]]:
    """For each body stage, the names of the layers an adapter can go into (the head is left out: it trains fully)."""
    stages = tree.module_stages(model)
    found: dict[str, list[str]] = {s.name: [] for s in tree.body}
    for name, module in model.named_modules():
        stage = stages.get(name)
        if name and stage in found and supported(module):
            found[stage].append(name)
    return found


def adaptable_stages(model: nn.Module, tree: LayerTree) -> list[str]:
    """The body stages holding at least one layer LoRA can adapt, from the input onwards."""
    return [stage for stage, names in targets_by_stage(model, tree).items() if names]


def attach(model: nn.Module, tree: LayerTree, stages, rank: int = DEFAULT_RANK,
           alpha: float = DEFAULT_ALPHA) -> LayerTree:
    """Insert LoRA adapters (peft) into every adaptable layer of ``stages``, in place; returns the layer tree of
    the adapted model (same stages, the adapters' parameters in the stage of the layer they adapt).

    ``stages`` empty means every adaptable stage. A stage without an adaptable layer raises ConfigError."""
    from engine.errors import ConfigError

    by_stage = targets_by_stage(model, tree)
    unknown = [s for s in stages if s not in by_stage]
    if unknown:
        raise ConfigError(f"LoRA: this model has no stage '{unknown[0]}' to adapt; its stages are: "
                          f"{', '.join(by_stage)}.")
    chosen = [s for s in by_stage if s in stages] if stages else [s for s, names in by_stage.items() if names]
    empty = [s for s in chosen if not by_stage[s]]
    if empty:
        raise ConfigError(f"LoRA: the stage '{empty[0]}' has no layer an adapter can go into (only linear layers "
                          "and convolutions without groups can be adapted): leave it out.")
    targets = [name for s in chosen for name in by_stage[s]]
    if not targets:
        raise ConfigError("LoRA: this model has no layer an adapter can go into (linear layers or convolutions "
                          "without groups): choose another strategy.")
    from peft import LoraConfig, inject_adapter_in_model

    # target_modules as a regular expression that matches the full names exactly (a list would also match any
    # module whose name merely ends with one of them).
    pattern = "^(" + "|".join(re.escape(t) for t in targets) + ")$"
    config = LoraConfig(r=int(rank), lora_alpha=float(alpha), target_modules=pattern, lora_dropout=0.0,
                        bias="none")
    inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    setattr(model, MARK, LoraInfo(int(rank), float(alpha), tuple(chosen), tuple(targets), tree.head_module))
    return adapted_tree(model, tree)


def original_name(name: str) -> str:
    """The plain model's name of an adapted model's parameter: ``x.base_layer.weight`` -> ``x.weight``; an
    adapter's own parameter maps to its layer's weight (``x.lora_A.default.weight`` -> ``x.weight``)."""
    m = _LORA_PART.search(name)
    if m is not None:
        return name[:m.start()] + ".weight"
    return name.replace(".base_layer.", ".")


def adapted_tree(model: nn.Module, tree: LayerTree) -> LayerTree:
    """``tree`` for the adapted model: each parameter in the stage of the plain model's parameter it adapts."""
    params = dict(model.named_parameters())
    by_stage: dict[str, list[str]] = {s.name: [] for s in tree.stages}
    for name in params:
        by_stage[tree.stage_of_param(original_name(name))].append(name)
    stages = [Stage(s.name, sum(params[n].numel() for n in by_stage[s.name]), tuple(by_stage[s.name]), s.is_head)
              for s in tree.stages]
    return LayerTree(stages, tree.head_module, tree.source)


def trains(name: str, stage: str, model: nn.Module) -> bool:
    """Within a trained stage of a model with adapters: only the adapters train, and the head fully."""
    return stage == HEAD or info_of(model) is None or is_adapter_param(name)


def _lora_layers(model: nn.Module):
    from peft.tuners.lora import LoraLayer

    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            yield name, module


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The plain model's state dict: each adapted weight with its adapter merged in (``W + scale * B A``, peft's
    own ``get_delta_weight``), the adapters left out, the names those of the model without adapters."""
    state = {k: v.detach() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for name, layer in _lora_layers(model):
            if ADAPTER_NAME not in layer.lora_A:
                continue
            key = f"{name}.base_layer.weight"
            delta = layer.get_delta_weight(ADAPTER_NAME)
            state[key] = (state[key].float() + delta.float()).to(state[key].dtype)
    return {original_name(k): v for k, v in state.items() if not is_adapter_param(k)}


def load_plain_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a plain model's weights (best.safetensors) into ``model``; into a model with adapters, the merged
    weights go into its frozen layers and the adapters are zeroed (``B = 0``), so it computes the same."""
    if info_of(model) is None:
        model.load_state_dict(state)
        return
    own = model.state_dict()
    plain = {k: original_name(k) for k in own if not is_adapter_param(k)}
    missing = [p for p in plain.values() if p not in state]
    if missing or len(state) != len(plain):
        raise RuntimeError(f"the weights do not fit the model (missing {missing[:1]})")
    with torch.no_grad():
        for name, param in model.state_dict(keep_vars=True).items():
            if is_adapter_param(name):
                if ".lora_B." in name:
                    param.zero_()
            else:
                param.copy_(state[plain[name]])


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """What the adapter file holds: the adapters and the head (under the adapted model's names)."""
    head = info_of(model).head_module + "."
    return {k: v.detach() for k, v in model.state_dict().items() if is_adapter_param(k) or k.startswith(head)}


def save_adapter(model: nn.Module, path: Path) -> None:
    """``adapter.safetensors``: the adapters and the head only, with rank, alpha, stages and targets as metadata."""
    from safetensors.torch import save_file

    from engine import files

    info = info_of(model)
    state = {k: v.to("cpu").contiguous().clone() for k, v in adapter_state_dict(model).items()}
    metadata = {"format": "transfer-studio-lora", "lora": json.dumps(info.to_dict())}
    files.atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))


def read_adapter_info(path: Path) -> LoraInfo:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    d = json.loads(meta["lora"])
    return LoraInfo(int(d["rank"]), float(d["alpha"]), tuple(d["stages"]), tuple(d["targets"]), d["head_module"])


def apply_adapter_file(model: nn.Module, tree: LayerTree, path: Path) -> LayerTree:
    """Put an adapter file back onto the model it was trained from (the same starting weights): adapters inserted
    with the file's rank, alpha and stages, then the adapters and the head loaded. Returns the adapted tree."""
    from safetensors.torch import load_file

    from engine.errors import ModelError

    try:
        info = read_adapter_info(path)
        state = load_file(str(path))
    except Exception as exc:  # not a safetensors file, no metadata, ...
        raise ModelError(f"The adapter file {path} cannot be read ({exc.__class__.__name__}): choose the "
                         f"{ADAPTER_FILE} of a LoRA run.") from None
    adapted = attach(model, tree, info.stages, info.rank, info.alpha)
    missing = [k for k in adapter_state_dict(model) if k not in state]
    if missing:
        raise ModelError(f"The adapter file {path} does not fit this model (it lacks {missing[0]}).")
    model.load_state_dict(state, strict=False)
    return adapted


def attach_for_run(model: nn.Module, tree: LayerTree, settings, log) -> LayerTree:
    """The ``lora`` strategy's adapters (``settings``: the config's LoraSettings), with a log line; returns the
    adapted tree."""
    adapted = attach(model, tree, settings.stages, settings.rank, settings.alpha)
    log(sentence(model, adapted))
    return adapted


def adapted_stages(tree: LayerTree) -> list[str]:
    """The body stages of an adapted tree that carry adapters."""
    return [s.name for s in tree.body if any(is_adapter_param(n) for n in s.param_names)]


def summary(model: nn.Module, tree: LayerTree) -> dict:
    """Plain numbers for the run's summary and log: trainable parameters (adapters + head) against the total."""
    info = info_of(model)
    params = dict(model.named_parameters())
    adapters = sum(p.numel() for n, p in params.items() if is_adapter_param(n))
    head = sum(params[n].numel() for n in tree.stage(HEAD).param_names)
    total = sum(p.numel() for n, p in params.items() if not is_adapter_param(n))
    return {"rank": info.rank, "alpha": info.alpha, "stages": list(info.stages), "adapted_layers": len(info.targets),
            "adapter_params": adapters, "head_params": head, "trainable_params": adapters + head,
            "model_params": total}


def sentence(model: nn.Module, tree: LayerTree) -> str:
    s = summary(model, tree)
    share = s["trainable_params"] / max(s["model_params"], 1)
    return (f"LoRA adapters (rank {s['rank']}, alpha {s['alpha']:g}) in {s['adapted_layers']} layers of "
            f"{len(s['stages'])} stages: {s['trainable_params']:,} trainable parameters (adapters "
            f"{s['adapter_params']:,} + head {s['head_params']:,}), {share:.1%} of the model's {s['model_params']:,}.")


def adapter_sizes(model: nn.Module, tree: LayerTree) -> dict[str, int]:
    """For each body stage, the adapter parameters it would get per unit of rank (a linear layer: inputs + outputs;
    a convolution: inputs x kernel area + outputs) -- so that the window can say what a rank costs before training."""
    modules = dict(model.named_modules())
    sizes: dict[str, int] = {}
    for stage, names in targets_by_stage(model, tree).items():
        total = 0
        for name in names:
            m = modules[name]
            if isinstance(m, nn.Linear):
                total += m.in_features + m.out_features
            else:
                area = 1
                for k in m.kernel_size:
                    area *= k
                total += m.in_channels * area + m.out_channels
        sizes[stage] = total
    return sizes
