"""The layer tree: a model's stages as named groups of parameters, from the input to the new head.

timm models group themselves (``model.group_matcher(coarse=True)``: stem, each block or stage, ...). Other models
(torchvision's) are grouped by their module hierarchy: plain containers (``Sequential``, ``ModuleList``) and any
module holding most of the network are opened up, so that torchvision's ``mobilenet_v2`` shows its 19 feature blocks
instead of one ``features`` lump. The classifier is always the last stage, called ``head``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn

HEAD = "head"
# Fallback grouping: a module holding more than this share of the body's parameters is opened up, so that no single
# stage swallows the network; opening stops at this depth.
BIG_MODULE_SHARE = 0.5
MAX_OPEN_DEPTH = 4


@dataclass(frozen=True)
class Stage:
    name: str
    params: int
    param_names: tuple[str, ...]
    is_head: bool = False


@dataclass
class LayerTree:
    stages: list[Stage]
    head_module: str
    source: str  # "timm-groups" or "modules"
    _param_stage: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._param_stage = {p: s.name for s in self.stages for p in s.param_names}

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    @property
    def body(self) -> list[Stage]:
        """Every stage but the head, from the input onwards."""
        return [s for s in self.stages if not s.is_head]

    @property
    def total_params(self) -> int:
        return sum(s.params for s in self.stages)

    def stage_of_param(self, name: str) -> str:
        return self._param_stage[name]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def module_stages(self, model: nn.Module) -> dict[str, str | None]:
        """For each module, the one stage all its parameters belong to; ``None`` for a module spanning several
        stages. A module without parameters (activation, dropout) takes its parent's stage."""
        result: dict[str, str | None] = {}
        for name, module in model.named_modules():
            stages = {self._param_stage[p] for p, _ in module.named_parameters(prefix=name) if p in self._param_stage}
            if len(stages) == 1:
                result[name] = stages.pop()
            elif stages:
                result[name] = None
            else:
                parent = name.rpartition(".")[0] if "." in name else ""
                result[name] = result.get(parent) if name else None
        return result


def _count(params) -> int:
    return sum(p.numel() for p in params)


def build_layer_tree(model: nn.Module, head_module: str) -> LayerTree:
    params = dict(model.named_parameters())
    head_params = tuple(n for n in params if n.startswith(head_module + "."))
    timm_groups = _timm_groups(model)
    if timm_groups is not None and len(timm_groups) >= 2:
        groups = [(_group_name(names, i), names) for i, names in enumerate(timm_groups)]
        source = "timm-groups"
    else:
        groups, source = _module_groups(model, head_module), "modules"
    stages = []
    used: set[str] = set()
    for index, (label, names) in enumerate(groups):
        names = [n for n in names if n not in head_params]
        if not names:
            continue
        if label in used or label == HEAD:
            label = f"{label}#{index}"
        used.add(label)
        stages.append(Stage(label, _count(params[n] for n in names), tuple(names)))
    stages.append(Stage(HEAD, _count(params[n] for n in head_params), head_params, is_head=True))
    return LayerTree(stages, head_module, source)


def _timm_groups(model: nn.Module) -> list[list[str]] | None:
    if not hasattr(model, "group_matcher"):
        return None
    from timm.models._manipulate import group_parameters

    try:
        grouped = group_parameters(model, model.group_matcher(coarse=True))
    except (NotImplementedError, AttributeError, TypeError):
        return None
    return [list(grouped[k]) for k in sorted(grouped)]


def _module_groups(model: nn.Module, head_module: str) -> list[tuple[str, list[str]]]:
    body_total = _count(p for n, p in model.named_parameters() if not n.startswith(head_module + "."))
    groups: list[tuple[str, list[str]]] = []
    pending: list[str] = []  # parameters held directly by an opened module: they join the next stage

    def visit(name: str, module: nn.Module, depth: int) -> None:
        own = [f"{name}.{n}" if name else n for n, _ in module.named_parameters(recurse=False)]
        children = [(f"{name}.{n}" if name else n, m) for n, m in module.named_children()
                    if any(True for _ in m.parameters())]
        # Exact types: a subclass such as torchvision's Conv2dNormActivation is one layer, not a container.
        plain = type(module) in (nn.Sequential, nn.ModuleList, nn.ModuleDict)
        big = _count(module.parameters()) > BIG_MODULE_SHARE * body_total
        if name == "" or (name != head_module and depth < MAX_OPEN_DEPTH and len(children) > 1 and (plain or big)):
            pending.extend(own)
            for child_name, child in children:
                visit(child_name, child, depth + 1)
        else:
            groups.append((name, pending + [n for n, _ in module.named_parameters(prefix=name)]))
            pending.clear()

    visit("", model, 0)
    if pending and groups:
        groups[-1][1].extend(pending)
    return groups


def _group_name(param_names: list[str], index: int) -> str:
    """A readable name for a group: the common module path of its parameters ('layer1', 'blocks.3'), several joined
    with '+' when it spans more than one top-level module; the first such mixed group is the 'stem'."""
    by_top: dict[str, list[list[str]]] = {}
    for n in param_names:
        parts = n.split(".")[:-1] or n.split(".")
        by_top.setdefault(parts[0], []).append(parts)
    prefixes = []
    for paths in by_top.values():
        common = paths[0]
        for p in paths[1:]:
            i = 0
            while i < min(len(common), len(p)) and common[i] == p[i]:
                i += 1
            common = common[:i]
        prefixes.append(".".join(common))
    if len(prefixes) > 1 and index == 0:
        return "stem"
    return "+".join(prefixes)
