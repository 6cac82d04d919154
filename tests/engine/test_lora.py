"""LoRA adapters (issue #17): only the adapters (and the head) train, best.safetensors holds the merged weights so that
every export is a plain model, adapter.safetensors holds the adapters alone, and a stopped LoRA run resumes exactly."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine import events as ev
from engine.config import DataConfig, LoraSettings, ModelConfig, RunConfig, TrainConfig, dumps, loads
from engine.errors import ConfigError
from engine.models.build import build_model
from engine.models.layers import HEAD, build_layer_tree
from engine.train import lora
from engine.train.checkpoint import save_weights
from engine.train.strategies import apply_phase, resolve_phases
from engine.train.trainer import fit, resume

pytestmark = pytest.mark.usefixtures("quick_training")

VIT = "timm:test_vit"  # a ViT of 0.3 M parameters: attention and MLP projections, a convolutional patch embedding


def lora_config(data, out, weights="none", epochs=2, stages=(), **train) -> RunConfig:
    train = TrainConfig(**{"batch_size": 4, "workers": 0, "augment": "none", "label_smoothing": 0.0,
                           "precision": "fp32", **train})
    return RunConfig(data=DataConfig(source=str(data), val_fraction=0.25), model=ModelConfig(VIT, weights),
                     strategy="lora", epochs=epochs, lr=0.02, train=train, out=str(out),
                     lora=LoraSettings(rank=4, alpha=8.0, stages=tuple(stages)))


@pytest.fixture(scope="module")
def start_weights(tmp_path_factory):
    """A weight file for the ViT (random, fixed), so that the starting model can be rebuilt exactly."""
    path = tmp_path_factory.mktemp("weights") / "vit.safetensors"
    torch.manual_seed(1)
    save_weights(build_model(VIT, "none", 1000).model, path)
    return path


@pytest.fixture(scope="module")
def lora_run(tiny_dataset, start_weights, tmp_path_factory):
    result = fit(lora_config(tiny_dataset, tmp_path_factory.mktemp("runs"), str(start_weights),
                             stages=("blocks.4", "blocks.5+norm")))
    assert result.status == "completed", result.error
    return result


def test_only_adapters_train_in_their_stages_and_the_head_trains_fully():
    built = build_model(VIT, "none", 3)
    tree = build_layer_tree(built.model, built.head)
    adapted = lora.attach(built.model, tree, ["blocks.1", "blocks.2"], rank=4, alpha=8)
    config = RunConfig(strategy="lora", lora=LoraSettings(rank=4, alpha=8.0, stages=("blocks.1", "blocks.2")))
    (phase,) = resolve_phases(config, adapted)
    assert set(phase.stages) == {"blocks.1", "blocks.2", HEAD} and phase.bn == "frozen"
    apply_phase(built.model, adapted, phase)
    trainable = {n for n, p in built.model.named_parameters() if p.requires_grad}
    for name, _ in built.model.named_parameters():
        stage = adapted.stage_of_param(name)
        expected = stage == HEAD or (stage in ("blocks.1", "blocks.2") and lora.is_adapter_param(name))
        assert (name in trainable) == expected, name
    # The adapters sit in the attention and MLP projections of the chosen blocks, and nowhere else.
    assert {n.rsplit(".", 1)[-1] for n in lora.info_of(built.model).targets} == {"qkv", "proj", "fc1", "fc2"}
    assert all(t.startswith(("blocks.1.", "blocks.2.")) for t in lora.info_of(built.model).targets)


def test_grouped_convolutions_are_left_alone_and_a_stage_without_targets_is_refused():
    depthwise = torch.nn.Conv2d(8, 8, 3, groups=8)
    assert lora.supported(torch.nn.Conv2d(8, 8, 1)) and lora.supported(torch.nn.Linear(4, 4))
    assert not lora.supported(depthwise) and not lora.supported(torch.nn.BatchNorm2d(8))
    built = build_model(VIT, "none", 3)
    tree = build_layer_tree(built.model, built.head)
    with pytest.raises(ConfigError, match="no stage 'blocks.9'"):
        lora.attach(built.model, tree, ["blocks.9"])


def test_the_run_reports_trainable_parameters_and_writes_a_small_adapter_file(lora_run, start_weights):
    run = Path(lora_run.run_dir)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    info = summary["lora"]
    assert info["rank"] == 4 and info["stages"] == ["blocks.4", "blocks.5+norm"]
    assert info["trainable_params"] == info["adapter_params"] + info["head_params"]
    assert 0 < info["trainable_params"] < 0.2 * info["model_params"]
    adapter = load_file(f"{run}/adapter.safetensors")
    assert sum(t.numel() for t in adapter.values()) == info["trainable_params"]
    best = load_file(f"{run}/best.safetensors")
    assert not any(lora.is_adapter_param(k) or ".base_layer." in k for k in best)  # a plain model's weights
    # Frozen stages kept the starting weights; the adapted layers' merged weights moved.
    start = load_file(str(start_weights))
    assert torch.equal(best["blocks.0.attn.qkv.weight"], start["blocks.0.attn.qkv.weight"])
    assert not torch.allclose(best["blocks.4.attn.qkv.weight"], start["blocks.4.attn.qkv.weight"])


def test_merged_export_equals_the_unmerged_model(lora_run, start_weights, tiny_dataset):
    import onnxruntime as ort

    from engine.results.export import export_run
    from engine.results.predict import load_run_model

    run = lora_run.run_dir
    plain = load_run_model(run, device="cpu")  # best.safetensors: the merged weights, no peft involved
    assert lora.info_of(plain.model) is None
    # The un-merged model: the starting weights with the adapter file put back on.
    built = build_model(VIT, str(start_weights), 3)
    tree = build_layer_tree(built.model, built.head)
    lora.apply_adapter_file(built.model, tree, Path(run) / lora.ADAPTER_FILE)
    unmerged = built.model.eval()
    assert any(lora.is_adapter_param(n) for n, _ in unmerged.named_parameters())
    pictures = sorted(str(p) for p in tiny_dataset.rglob("*.png"))[:6]
    x = torch.stack([plain.preprocess(p) for p in pictures])
    with torch.inference_mode():
        want, got = unmerged(x), plain.model(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    result = export_run(run, "onnx", pictures=4)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(onnx_out, (want / plain.temperature).numpy(), rtol=1e-3, atol=1e-3)
    import onnx

    assert not any("lora" in t.name for t in onnx.load(str(result.path)).graph.initializer)  # a plain model


def test_a_stopped_lora_run_resumes_to_the_uninterrupted_result(tiny_dataset, tmp_path):
    whole = fit(lora_config(tiny_dataset, tmp_path / "whole", epochs=3))
    assert whole.status == "completed", whole.error
    stop = threading.Event()

    def stop_after_first_epoch(event):
        if isinstance(event, ev.EpochEnded) and event.epoch == 1:
            stop.set()

    cut = fit(lora_config(tiny_dataset, tmp_path / "cut", epochs=3), stop_after_first_epoch, stop)
    assert cut.status == "stopped" and cut.epochs_completed == 1
    again = resume(cut.run_dir)
    assert again.status == "completed", again.error
    a, b = load_file(f"{whole.run_dir}/best.safetensors"), load_file(f"{again.run_dir}/best.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    assert load_file(f"{again.run_dir}/adapter.safetensors").keys() == load_file(
        f"{whole.run_dir}/adapter.safetensors").keys()


def test_config_round_trip_and_command_line_options():
    import main

    config = RunConfig(strategy="lora", lora=LoraSettings(rank=16, alpha=32.0, stages=("blocks.3",)))
    assert loads(dumps(config)) == config
    assert "[lora]" not in dumps(RunConfig())  # an ordinary run's config.toml has no [lora] table
    with pytest.raises(ConfigError, match="rank"):
        dataclasses.replace(config, lora=LoraSettings(rank=0)).validate()
    args = main.build_parser().parse_args(["train", "--data", "x", "--model", VIT, "--strategy", "lora",
                                           "--lora-rank", "4", "--lora-alpha", "4", "--lora-stages", "blocks.4,blocks.5"])
    built = main.config_from_args(args)
    assert built.strategy == "lora" and built.lora == LoraSettings(4, 4.0, ("blocks.4", "blocks.5"))
