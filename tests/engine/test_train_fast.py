"""fit() with the speed features: the cached paths train the same model as the normal path, notice changed pictures,
say what they do, stop when asked, and survive running out of memory."""

from __future__ import annotations

import json
import shutil
import threading

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import engine.train.fastpath
import engine.train.trainer
from engine import events as ev
from engine.project import runs
from engine.data.cache import CACHE_ENV
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.data.loaders import auto_workers
from engine.train.trainer import fit

MODEL = "timm:test_resnet"  # a ResNet of 0.4 M parameters: the same code paths as resnet18, in a fraction of the time


pytestmark = pytest.mark.usefixtures("quick_training")


def config_for(data, out, strategy="feature-extraction", epochs=2, **train) -> RunConfig:
    # fp32: these tests compare paths number by number, and bf16 steps (automatic on some CPUs) round differently.
    # fit_head off: fitting the head to convergence first is what the stored-outputs path adds on purpose (a
    # pass through the network cannot afford it), so it would be the one difference between the two paths.
    train = TrainConfig(**{"batch_size": 8, "workers": 0, "warmup_epochs": 0.0, "augment": "none", "precision": "fp32",
                           "label_smoothing": 0.0, "fit_head": False, **train})
    return RunConfig(data=DataConfig(source=str(data), val_fraction=0.25), model=ModelConfig(MODEL, "none"),
                     strategy=strategy, epochs=epochs, lr=0.01, train=train, out=str(out))


class Recorder:
    def __init__(self, stop_when=None):
        self.events = []
        self.stop = threading.Event()
        self.stop_when = stop_when

    def __call__(self, event):
        self.events.append(event)
        if self.stop_when and self.stop_when(event):
            self.stop.set()

    def logs(self) -> str:
        return "\n".join(e.message for e in self.events if isinstance(e, ev.Log))


def metrics(result) -> list[dict]:
    assert result.status == "completed", result.error
    return [json.loads(line) for line in (runs.Path(result.run_dir) / runs.METRICS).read_text().splitlines()]


def assert_same_training(a, b) -> None:
    """Same losses and accuracies every epoch, and the same best weights, up to rounding."""
    ma, mb = metrics(a), metrics(b)
    assert len(ma) == len(mb)
    for ra, rb in zip(ma, mb):
        for key in ("train_loss", "val_loss", "train_acc", "val_acc"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-5), key
    wa, wb = (load_file(runs.Path(r.run_dir) / runs.BEST) for r in (a, b))
    for key in wa:
        assert torch.allclose(wa[key].float(), wb[key].float(), rtol=1e-4, atol=1e-5), key


@pytest.mark.parametrize("strategy,cut", [("feature-extraction", "the layers below the head"),
                                          ("fine-tune-shallow", "the frozen stages")])
def test_the_cached_path_trains_the_same_model_as_the_normal_path(tiny_dataset, tmp_path, strategy, cut):
    rec = Recorder()
    cached = fit(config_for(tiny_dataset, tmp_path, strategy), rec)
    plain = fit(config_for(tiny_dataset, tmp_path, strategy, cache_features=False, cache_images=False))
    assert_same_training(cached, plain)
    assert f"{cut}" in rec.logs() and "run once per picture" in rec.logs()


def test_a_changed_picture_is_used_by_the_next_run(tiny_dataset, tmp_path, monkeypatch):
    data = shutil.copytree(tiny_dataset, tmp_path / "data")
    config = config_for(data, tmp_path / "runs")
    first = fit(config)
    for path in sorted((data / "red").iterdir())[:4]:  # red pictures painted blue, same names
        Image.new("RGB", (40, 32), (40, 60, 200)).save(path)
    rec = Recorder()
    second = fit(config, rec)
    assert "20 of 24 are there already" in rec.logs()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "fresh-cache"))
    fresh = fit(config)
    assert_same_training(second, fresh)
    assert metrics(second) != metrics(first)


@pytest.mark.parametrize("strategy", ["fine-tune-deep", "feature-extraction"])  # normal path; stored outputs
def test_a_run_repeated_once_its_pictures_are_cached_gives_the_same_results(tmp_path, monkeypatch, strategy):
    """The loaders draw the augmentation's random numbers, so the automatic number of loader processes must not change
    once the picture cache is filled: repeating a run's settings repeats its results."""
    import engine.data.loaders
    from conftest import make_class_folders

    data = make_class_folders(tmp_path / "data", per_class=30)  # 90 pictures: enough for loader processes
    monkeypatch.setattr(engine.data.loaders, "available_cores", lambda: 4)
    config = config_for(data, tmp_path / "runs", strategy=strategy, epochs=2, augment="light", workers=-1)
    cold, warm = Recorder(), Recorder()
    first, again = fit(config, cold), fit(config, warm)
    assert "0 of 90 are there already" in cold.logs() and "90 of 90 are there already" in warm.logs()
    assert_same_training(first, again)


def test_views_of_augmented_pictures_are_stated_and_repeatable(tiny_dataset, tmp_path):
    rec = Recorder()
    config = config_for(tiny_dataset, tmp_path, augment="light", feature_views=3)
    first = fit(config, rec)
    assert "3 augmented views of each of the 18 training pictures" in rec.logs()
    again = fit(config)
    assert metrics(first) == [dict(r, seconds=m["seconds"]) for r, m in zip(metrics(again), metrics(first))]


def test_stopping_while_the_frozen_outputs_are_computed(tiny_dataset, tmp_path):
    rec = Recorder(stop_when=lambda e: isinstance(e, ev.Log) and "run once per picture" in e.message)
    result = fit(config_for(tiny_dataset, tmp_path), rec, rec.stop)
    assert result.status == "stopped" and result.epochs_completed == 0
    assert not [e for e in rec.events if isinstance(e, ev.StepEnded)]


def test_the_caches_can_be_turned_off(tiny_dataset, tmp_path):
    rec = Recorder()
    result = fit(config_for(tiny_dataset, tmp_path, cache_images=False, cache_features=False), rec)
    assert result.status == "completed"
    assert "Decoded pictures are kept" not in rec.logs()
    assert "trains the normal way" in rec.logs() and "turned off" in rec.logs()
    assert not (tmp_path / "picture-cache").exists()


class RunsOutOnce:
    """Raises torch.OutOfMemoryError the first time it sees a batch larger than ``limit`` pictures."""

    def __init__(self, limit: int):
        self.limit = limit
        self.raised = 0

    def wrap(self, built):
        model = built.model
        for name in ("forward", "forward_features"):  # the whole model, and the layers below the head
            setattr(model, name, self.limited(getattr(model, name)))
        return built

    def limited(self, forward):
        def run(x):
            if x.shape[0] > self.limit and not self.raised:
                self.raised += 1
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return forward(x)

        return run


@pytest.mark.parametrize("cache_features", [False, True])  # the failing batch: a training step, or frozen outputs
def test_running_out_of_memory_continues_with_smaller_pieces(tiny_dataset, tmp_path, monkeypatch, cache_features):
    config = config_for(tiny_dataset, tmp_path, cache_features=cache_features)
    normal = fit(config)
    limit = RunsOutOnce(4)
    build = engine.train.trainer.build_model
    monkeypatch.setattr(engine.train.trainer, "build_model", lambda *a, **k: limit.wrap(build(*a, **k)))
    # The simulated error comes from the model's own forward: run the frozen part as the model itself (not as its
    # ONNX or BatchNorm-folded copy).
    monkeypatch.setattr(engine.train.fastpath, "fast_prefix", lambda split, *a, **k: (split.prefix, "exact"))
    rec = Recorder()
    squeezed = fit(config, rec)
    assert limit.raised == 1
    assert "ran out of memory with" in rec.logs() and "at a time" in rec.logs()
    assert_same_training(squeezed, normal)  # frozen BatchNorm: pieces add up to the whole batch exactly


def test_a_failing_compiler_falls_back_to_the_plain_model(tiny_dataset, tmp_path, monkeypatch):
    def broken_compile(module, *args, **kwargs):
        def run(*a, **k):
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    rec = Recorder()
    result = fit(config_for(tiny_dataset, tmp_path, epochs=1, compile=True, cache_features=False), rec)
    assert result.status == "completed", result.error
    assert "torch.compile could not compile the model" in rec.logs()


def test_a_negative_number_of_views_is_refused(tiny_dataset, tmp_path):
    result = fit(config_for(tiny_dataset, tmp_path, feature_views=-1))
    assert result.status == "failed" and "views" in result.error


def test_loader_processes_follow_the_cores(monkeypatch):
    import engine.data.loaders

    monkeypatch.setattr(engine.data.loaders, "available_cores", lambda: 2)
    assert auto_workers(-1, 1000) == 1  # one core left for training
    assert auto_workers(-1, 30) == 0  # tiny datasets: no processes to start
    assert auto_workers(3, 30) == 3  # a number the user chose
    monkeypatch.setattr(engine.data.loaders, "available_cores", lambda: 16)
    assert auto_workers(-1, 1000) == 4  # decoding files
    # Pictures from the cache: a GPU gets 2 loaders; on the CPU they would take cores from training.
    assert auto_workers(-1, 1000, cached=True, device="cuda") == 2
    assert auto_workers(-1, 1000, cached=True, device="cpu") == 0
