"""Automatic precision on the CPU: bf16 training steps where the CPU computes bf16 natively and the batch is large
enough for it to pay; full precision for validation, for heads trained on stored outputs, and wherever it does not
pay."""

from __future__ import annotations

import pytest
import torch

import engine.train.runtime
import engine.train.trainer
from engine import events as ev
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.train.runtime import auto_batch_size, cpu_bf16_pays
from engine.train.trainer import fit

pytestmark = pytest.mark.usefixtures("quick_training")

MODEL = "timm:test_resnet"
LOG = "Training steps use bfloat16 mixed precision"


def config_for(data, out, strategy, batch_size=8, **train) -> RunConfig:
    train = TrainConfig(**{"batch_size": batch_size, "workers": 0, "warmup_epochs": 0.0, "augment": "none",
                           "device": "cpu", **train})
    return RunConfig(data=DataConfig(source=str(data), val_fraction=0.25), model=ModelConfig(MODEL, "none"),
                     strategy=strategy, epochs=1, lr=0.01, train=train, out=str(out))


def run_recording(config, monkeypatch, native: bool):
    """Runs ``config`` on a CPU said to have (or not) native bf16; returns the autocast dtype (None: off) of each
    forward pass through the head, as (training step?, dtype), and the run's log."""
    monkeypatch.setattr(engine.train.runtime, "cpu_has_native_bf16", lambda: native)
    passes: list[tuple[bool, torch.dtype | None]] = []
    real_build = engine.train.trainer.build_model

    def build(*args, **kwargs):
        built = real_build(*args, **kwargs)

        def hook(module, inputs, output):
            on = torch.is_autocast_enabled("cpu")
            passes.append((torch.is_grad_enabled(), torch.get_autocast_dtype("cpu") if on else None))

        built.model.get_submodule(built.head).register_forward_hook(hook)
        return built

    monkeypatch.setattr(engine.train.trainer, "build_model", build)
    logs: list[str] = []
    result = fit(config, lambda e: logs.append(e.message) if isinstance(e, ev.Log) else None)
    assert result.status == "completed", result.error
    steps = {dtype for training, dtype in passes if training}
    validation = {dtype for training, dtype in passes if not training}
    return steps, validation, "\n".join(logs)


def test_bf16_training_steps_on_a_cpu_with_native_bf16(tiny_dataset, tmp_path, monkeypatch):
    steps, validation, log = run_recording(config_for(tiny_dataset, tmp_path, "fine-tune-deep"), monkeypatch, True)
    assert steps == {torch.bfloat16}  # every training step
    assert validation == {None}  # validation in full precision: the figures a user gets later from the saved model
    assert LOG in log


@pytest.mark.parametrize("why,strategy,native,train", [
    ("no native bf16", "fine-tune-deep", False, {}),
    ("full precision chosen", "fine-tune-deep", True, {"precision": "fp32"}),
    ("batches too small for bf16 to pay", "fine-tune-deep", True, {"batch_size": 2}),
    ("only a head trains, on stored outputs", "feature-extraction", True, {}),
])
def test_full_precision_where_bf16_does_not_pay(tiny_dataset, tmp_path, monkeypatch, why, strategy, native, train):
    steps, validation, log = run_recording(config_for(tiny_dataset, tmp_path, strategy, **train), monkeypatch, native)
    assert steps == {None} and validation == {None}, why
    assert LOG not in log


def test_bf16_pays_from_batches_of_4_on_native_hardware_only(monkeypatch):
    monkeypatch.setattr(engine.train.runtime, "cpu_has_native_bf16", lambda: True)
    assert cpu_bf16_pays(4) and cpu_bf16_pays(16) and not cpu_bf16_pays(2)
    monkeypatch.setattr(engine.train.runtime, "cpu_has_native_bf16", lambda: False)
    assert not cpu_bf16_pays(16)
    assert auto_batch_size("cpu", 10_000) == 16  # the CPU's fastest batch in fp32 and in bf16


def test_strided_depthwise_convolutions_stay_in_fp32_during_bf16_steps(tiny_dataset, tmp_path, monkeypatch):
    """oneDNN's bf16 kernels train strided depthwise convolutions several times slower than its fp32 ones: those
    compute in fp32, every other convolution in bf16; afterwards the modules are as they were."""
    monkeypatch.setattr(engine.train.runtime, "cpu_has_native_bf16", lambda: True)
    outputs: dict[str, set] = {"depthwise, stride 2": set(), "pointwise": set()}
    built_model = []
    real_build = engine.train.trainer.build_model

    def build(*args, **kwargs):
        built = real_build(*args, **kwargs)
        model = built.model
        for name, key in (("blocks.3.0.conv_dw", "depthwise, stride 2"), ("blocks.3.0.conv_pw", "pointwise")):
            model.get_submodule(name).register_forward_hook(
                lambda m, i, o, key=key: outputs[key].add(o.dtype) if torch.is_grad_enabled() else None)
        built_model.append(model)
        return built

    monkeypatch.setattr(engine.train.trainer, "build_model", build)
    config = config_for(tiny_dataset, tmp_path, "fine-tune-deep")
    config = RunConfig(data=config.data, model=ModelConfig("timm:test_efficientnet", "none"), strategy=config.strategy,
                       epochs=1, lr=config.lr, train=config.train, out=config.out)
    result = fit(config)
    assert result.status == "completed", result.error
    assert outputs == {"depthwise, stride 2": {torch.float32}, "pointwise": {torch.bfloat16}}
    conv = built_model[0].get_submodule("blocks.3.0.conv_dw")
    assert "forward" not in vars(conv)  # the module's own forward again
