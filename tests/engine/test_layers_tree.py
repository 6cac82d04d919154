"""The module tree the layer editor shows: stages (grouped when many look alike), then their modules, then
sub-modules; every row with its type, its parameter count, its stage and its BatchNorm layers."""

from __future__ import annotations

import pytest
import torch.nn as nn

from engine.models.layers import HEAD, LayerNode, ModuleTree, build_layer_tree, stage_groups
from engine.models.build import build_model


@pytest.fixture(scope="module")
def resnet():
    built = build_model("timm:resnet18", "none", 3)
    tree = build_layer_tree(built.model, built.head)
    return built.model, tree, ModuleTree(built.model, tree)


@pytest.fixture(scope="module")
def vit():
    built = build_model("timm:vit_tiny_patch16_224", "none", 3)
    tree = build_layer_tree(built.model, built.head)
    return built.model, tree, ModuleTree(built.model, tree)


@pytest.fixture(scope="module")
def mobilenet():
    built = build_model("torchvision:mobilenet_v2", "none", 3)
    tree = build_layer_tree(built.model, built.head)
    return built.model, tree, ModuleTree(built.model, tree)


def walk(modules: ModuleTree, nodes=None, parent: LayerNode | None = None):
    """Every row of the tree with its parent row, opening everything."""
    for node in modules.roots() if nodes is None else nodes:
        yield node, parent
        yield from walk(modules, modules.children(node), node)


def test_stage_groups_gather_runs_of_numbered_stages():
    names = ["stem"] + [f"blocks.{i}" for i in range(11)] + ["blocks.11+norm", HEAD]
    assert stage_groups(names) == [(None, ["stem"]), ("blocks 0\u201311", names[1:13]), (None, [HEAD])]
    # Short runs, different prefixes and the head stay on their own.
    assert stage_groups(["stem", "stages.0", "stages.1", "layer1", HEAD]) == [
        (None, ["stem"]), (None, ["stages.0"]), (None, ["stages.1"]), (None, ["layer1"]), (None, [HEAD])]
    assert stage_groups([f"features.{i}" for i in range(4)] + [HEAD], min_run=5) == [
        (None, [f"features.{i}"]) for i in range(4)] + [(None, [HEAD])]


def test_resnet_rows_stages_then_blocks_then_layers(resnet):
    model, tree, modules = resnet
    roots = modules.roots()
    assert [n.name for n in roots] == tree.names == ["stem", "layer1", "layer2", "layer3", "layer4", HEAD]
    assert all(n.kind == "stage" and n.type == "Stage" for n in roots)
    assert [n.params for n in roots] == [s.params for s in tree.stages]
    stem = modules.children(roots[0])
    assert [(n.key, n.type, n.batchnorms) for n in stem] == [("conv1", "Conv2d", 0), ("bn1", "BatchNorm2d", 1)]
    # A stage that is one container shows its blocks directly, not the container again.
    layer1 = modules.children(roots[1])
    assert [(n.name, n.type) for n in layer1] == [("layer1.0", "BasicBlock"), ("layer1.1", "BasicBlock")]
    block = modules.children(layer1[0])
    assert [n.name for n in block][:2] == ["conv1", "bn1"]
    assert all(n.stage == "layer1" for n in block)
    head = modules.children(roots[-1])
    assert [(n.key, n.type, n.params, n.has_children) for n in head] == [("fc", "Linear", 512 * 3 + 3, False)]


def test_every_row_tells_the_truth_about_the_model(resnet, vit, mobilenet):
    for model, tree, modules in (resnet, vit, mobilenet):
        module_of = dict(model.named_modules())
        params = dict(model.named_parameters())
        stage_of_module = tree.module_stages(model)
        leaves = 0
        for node, parent in walk(modules):
            if node.kind == "module":
                module = module_of[node.key]
                assert node.type == type(module).__name__
                assert node.params == sum(p.numel() for p in module.parameters())
                assert node.stage == stage_of_module[node.key]
                bns = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
                assert node.batchnorms == bns
            elif node.kind == "parameter":
                assert node.params == params[node.key].numel()
                assert node.stage == tree.stage_of_param(node.key)
            if parent is not None and parent.kind != "group":
                assert node.stage == parent.stage  # rows below a stage belong to it
            children = modules.children(node)
            assert node.has_children == bool(children)
            if children and node.kind in ("group", "stage"):
                assert sum(c.params for c in children) == node.params
            if not children:
                leaves += node.params
        assert leaves == tree.total_params == sum(p.numel() for p in model.parameters())


def test_vit_groups_its_blocks_and_shows_loose_tensors(vit):
    _, tree, modules = vit
    roots = modules.roots()
    assert [(n.kind, n.name) for n in roots] == [("stage", "stem"), ("group", "blocks 0\u201311"), ("stage", HEAD)]
    group = roots[1]
    assert group.stage is None and group.stages == tuple(tree.names[1:13])
    assert group.params == sum(tree.stage(s).params for s in group.stages)
    assert [n.name for n in modules.children(group)] == list(group.stages)
    stem = {n.name: n for n in modules.children(roots[0])}
    assert stem["cls_token"].kind == "parameter" and stem["cls_token"].params == 192
    assert stem["pos_embed"].kind == "parameter"
    assert stem["patch_embed"].type == "PatchEmbed"
    block = modules.children(modules.children(group)[0])
    assert {"norm1", "attn", "mlp"} <= {n.name for n in block}


def test_batchnorm_counts_per_stage(mobilenet):
    model, tree, modules = mobilenet
    (features, head) = modules.roots()
    assert features.kind == "group" and features.name == "features 0\u201318"
    assert features.batchnorms == 52
    stage_of_module = tree.module_stages(model)
    for stage in modules.children(features):
        expected = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) and stage_of_module[n] == stage.stage
                       for n, m in model.named_modules())
        assert stage.batchnorms == expected > 0
    assert head.batchnorms == 0
