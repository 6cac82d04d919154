"""The layer tree: a model's stages as named groups of parameters, from the input to the new head.

timm models group themselves (``model.group_matcher(coarse=True)``: stem, each block or stage, ...). Other models
(torchvision's) are grouped by their module hierarchy: plain containers (``Sequential``, ``ModuleList``) and any
module holding most of the network are opened up, so that torchvision's ``mobilenet_v2`` shows its 19 feature blocks
instead of one ``features`` lump. The classifier is always the last stage, called ``head``.
"""

from __future__ import annotations

import re
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


# --- the module tree shown by the layer editor -----------------------------------------------------------------
#
# The editor shows stages (grouped when many look alike), then the modules of each stage, then their sub-modules.
# Everything here is plain data gathered once from the model (one pass over its modules), so that the window can
# hold it without touching the model; the nodes themselves are made only when a row is expanded.

STAGE_GROUP_MIN = 4  # this many consecutive stages named '<prefix>.<n>' (blocks.0, blocks.1, ...) share a group row
_NUMBERED = re.compile(r"^(?P<prefix>.+?)\.(?P<number>\d+)(?:\W.*)?$")


@dataclass(frozen=True)
class LayerNode:
    """One row of the layer tree.

    ``kind`` is "group" (consecutive similar stages), "stage", "module" or "parameter" (a tensor held directly by a
    module that has sub-modules, such as a ViT's ``cls_token``). ``stages`` are the stages the row's parameters
    belong to: one for a stage and everything below it, several for a group. ``batchnorms`` counts the BatchNorm
    layers inside the row (the row itself included).
    """

    key: str  # unique within the tree: "group:<label>", "stage:<name>", or a module's or parameter's qualified name
    name: str
    kind: str
    type: str
    params: int
    stages: tuple[str, ...]
    batchnorms: int
    has_children: bool

    @property
    def stage(self) -> str | None:
        """The one stage this row belongs to (``None`` for a group)."""
        return self.stages[0] if self.kind != "group" else None


def stage_groups(names: list[str], min_run: int = STAGE_GROUP_MIN) -> list[tuple[str | None, list[str]]]:
    """Consecutive stages named ``<prefix>.<number>`` with the same prefix, as ``(label, names)``: ``("blocks 0-11",
    [...])`` for a run of at least ``min_run``, ``(None, [name])`` for a stage on its own. The head is never grouped."""
    runs: list[tuple[str | None, list[str]]] = []
    for name in names:
        match = _NUMBERED.match(name) if name != HEAD else None
        prefix = match["prefix"] if match else None
        last = runs[-1] if runs else None
        if prefix is not None and last and last[0] == prefix:
            last[1].append(name)
        else:
            runs.append((prefix, [name]))
    result: list[tuple[str | None, list[str]]] = []
    for prefix, members in runs:
        if prefix is not None and len(members) >= min_run:
            first, last = (_NUMBERED.match(m)["number"] for m in (members[0], members[-1]))
            result.append((f"{prefix} {first}\u2013{last}", members))
        else:
            result.extend((None, [m]) for m in members)
    return result


class ModuleTree:
    """The layer tree of one model for the editor: ``roots()`` then ``children(node)``, down to single layers."""

    def __init__(self, model: nn.Module, tree: LayerTree, min_group: int = STAGE_GROUP_MIN) -> None:
        self.tree = tree
        self.min_group = min_group
        module_stages = tree.module_stages(model)
        modules = dict(model.named_modules())
        # Sizes and BatchNorm counts in one pass: each tensor (each BatchNorm) counts for its module and all above.
        counts: dict[str, int] = dict.fromkeys(modules, 0)
        for pname, param in model.named_parameters():
            for owner in _self_and_above(pname.rpartition(".")[0]):
                counts[owner] += param.numel()
        batchnorms: dict[str, int] = dict.fromkeys(modules, 0)
        for mname, module in modules.items():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                for owner in _self_and_above(mname):
                    batchnorms[owner] += 1
        # Per module: (type, child names, own parameters as (name, size)), kept as plain data.
        self._info: dict[str, tuple[str, tuple[str, ...], tuple[tuple[str, int], ...]]] = {}
        for mname, module in modules.items():
            children = tuple(f"{mname}.{c}" if mname else c for c, _ in module.named_children())
            own = tuple((f"{mname}.{p}" if mname else p, t.numel()) for p, t in module.named_parameters(recurse=False))
            self._info[mname] = (type(module).__name__, children, own)
        self._counts, self._batchnorms = counts, batchnorms
        # The rows right under each stage: the largest modules wholly inside it, then loose tensors of the stage
        # held by a module that spans several stages.
        self._stage_rows: dict[str, list[str]] = {s.name: [] for s in tree.stages}
        for mname in modules:
            stage = module_stages.get(mname)
            parent = mname.rpartition(".")[0]
            if mname and stage is not None and module_stages.get(parent) != stage:
                self._stage_rows[stage].append(mname)
        self._loose: dict[str, list[tuple[str, int]]] = {s.name: [] for s in tree.stages}
        for mname, (_, _, own) in self._info.items():
            if module_stages.get(mname) is None:
                for pname, size in own:
                    self._loose[tree.stage_of_param(pname)].append((pname, size))

    def roots(self) -> list[LayerNode]:
        nodes = []
        for label, names in stage_groups(self.tree.names, self.min_group):
            if label is None:
                nodes.append(self._stage_node(names[0]))
            else:
                nodes.append(LayerNode(
                    f"group:{label}", label, "group", f"{len(names)} stages",
                    sum(self.tree.stage(n).params for n in names), tuple(names),
                    sum(self._stage_batchnorms(n) for n in names), True))
        return nodes

    def children(self, node: LayerNode) -> list[LayerNode]:
        if node.kind == "group":
            return [self._stage_node(name) for name in node.stages]
        if node.kind == "stage":
            stage = node.stages[0]
            rows, loose = self._stage_rows[stage], self._loose[stage]
            if len(rows) == 1 and not loose and self._info[rows[0]][1]:
                # A stage that is one container ('layer1', 'blocks.3'): show its parts, not the container again.
                return self.children(self._module_node(rows[0], rows[0], stage))
            return ([self._module_node(m, m, stage) for m in rows]
                    + [self._param_node(p, size, stage) for p, size in loose])
        if node.kind == "module":
            _, children, own = self._info[node.key]
            if not children:
                return []
            stage = node.stages[0]
            return ([self._module_node(c, _short_name(c), stage) for c in children]
                    + [self._param_node(p, size, stage) for p, size in own])
        return []

    def _stage_batchnorms(self, stage: str) -> int:
        return sum(self._batchnorms[m] for m in self._stage_rows[stage])

    def _stage_node(self, name: str) -> LayerNode:
        stage = self.tree.stage(name)
        has_rows = bool(self._stage_rows[name] or self._loose[name])
        return LayerNode(f"stage:{name}", name, "stage", "Stage", stage.params, (name,),
                         self._stage_batchnorms(name), has_rows)

    def _module_node(self, mname: str, label: str, stage: str) -> LayerNode:
        type_name, children, _ = self._info[mname]
        return LayerNode(mname, label, "module", type_name, self._counts[mname], (stage,), self._batchnorms[mname],
                         bool(children))

    def _param_node(self, pname: str, size: int, stage: str) -> LayerNode:
        return LayerNode(pname, pname.rpartition(".")[2], "parameter", "Parameter", size, (stage,), 0, False)


def _short_name(qualified: str) -> str:
    """The last part of a module's name; with its parent's for a numbered one ('layer1.0', not '0')."""
    parts = qualified.split(".")
    return ".".join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 1 else parts[-1]


def _self_and_above(module: str):
    """A module's qualified name, then each module above it up to the model itself ('')."""
    while True:
        yield module
        if not module:
            return
        module = module.rpartition(".")[0]
