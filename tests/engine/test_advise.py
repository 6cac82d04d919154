"""Transferability scores (engine.advise.transfer), ``main.py advise`` and the comparison with training from scratch
(engine.advise.scratch), on tiny generated pictures and timm's test_resnet: no downloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import HYMENOPTERA, MOBILENET_WEIGHTS, make_class_folders, require_shared
from engine.advise import scratch
from engine.advise.transfer import Candidate, advise, stratified_sample, suggest_freeze, StageScore
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.data.scan import Sample, scan
from engine.project import runs
from engine.train.trainer import fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_class_folders(tmp_path_factory.mktemp("advise") / "colours", per_class=12)


@pytest.fixture(scope="module")
def random_file(tmp_path_factory) -> Path:
    """A weight file holding nothing but random weights (seed 123): "pretrained" on nothing."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(123)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    path = tmp_path_factory.mktemp("weights") / "random.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def trained_run(data, random_file, tmp_path_factory) -> Path:
    """A run that starts from the weight file and fine-tunes every layer on the pictures: its best weights carry
    the classes."""
    config = RunConfig(data=DataConfig(source=str(data), val_fraction=0.25),
                       model=ModelConfig("timm:test_resnet", str(random_file)), strategy="fine-tune-deep",
                       epochs=3, lr=0.02,
                       train=TrainConfig(batch_size=8, workers=0, warmup_epochs=0.0, augment="none"),
                       out=str(tmp_path_factory.mktemp("advise-runs")))
    result = fit(config)
    assert result.status == "completed", result.error
    return Path(result.run_dir)


def test_stratified_sample_keeps_every_class_share():
    samples = [Sample(f"/p/{i}.png", 0 if i < 900 else 1, "train") for i in range(1000)]
    chosen = stratified_sample(samples, limit=100, seed=0)
    assert len(chosen) == 100
    assert sum(s.label == 1 for s in chosen) == 10  # 10 % of the pictures, 10 % of the sample
    assert stratified_sample(samples, limit=100, seed=0) == chosen  # the same draw every time


def test_freeze_point_is_where_the_scores_stop_rising():
    rising = [StageScore(f"s{i}", v, 8) for i, v in enumerate([0.1, 0.3, 0.5, 0.7])]
    assert suggest_freeze(rising)[0] == "s3"  # best at the top: feature extraction
    assert "feature extraction" in suggest_freeze(rising)[1]
    peaked = [StageScore(f"s{i}", v, 8) for i, v in enumerate([0.1, 0.6, 0.7, 0.4, 0.2])]
    name, sentence = suggest_freeze(peaked)
    assert name == "s2" and "2 stages after it" in sentence


def test_advise_json_keeps_its_contract(data, random_file, trained_run, capsys):
    import main

    code = main.main(["advise", "--data", str(data), "--model", "timm:test_resnet", "--weights", "none",
                      "--model", "timm:test_resnet", "--weights", str(trained_run / runs.BEST), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert {"models", "stages", "suggested_freeze"} <= out.keys()
    assert [set(m) >= {"model", "weights", "score"} for m in out["models"]] == [True, True]
    scores = [m["score"] for m in out["models"]]
    assert scores == sorted(scores, reverse=True)  # best first
    # The fine-tuned weights carry the classes: they rank above random weights.
    assert out["models"][0]["weights"] == str(trained_run / runs.BEST)
    # Stages: the first model's (random weights), from the input to the last stage before the head.
    assert [s["stage"] for s in out["stages"]] == ["stem", "layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    assert out["suggested_freeze"] in [s["stage"] for s in out["stages"]]
    assert out["transfer"] is None  # random weights have nothing to check against


def test_negative_transfer_check_tells_trained_weights_from_random_ones(data, random_file, trained_run):
    dataset = scan(data)
    trained = advise(dataset, [Candidate("timm:test_resnet", str(trained_run / runs.BEST))])
    assert trained.transfer is not None and trained.transfer.clearly_better
    assert trained.transfer.sentence.startswith("Transfer helps")
    # A "pretrained" file of random weights is not clearly better than other random weights: the advice says so.
    fake = advise(dataset, [Candidate("timm:test_resnet", str(random_file))])
    assert fake.transfer is not None and not fake.transfer.clearly_better
    assert "another source model" in fake.transfer.sentence


def test_advise_without_a_usable_model_is_a_sentence(data, tmp_path, capsys):
    import main

    code = main.main(["advise", "--data", str(data), "--model", "timm:test_resnet", "--weights",
                      str(tmp_path / "gone.safetensors")])
    assert code == main.EXIT_USER_ERROR
    assert "gone.safetensors" in capsys.readouterr().err


def test_scratch_comparison_has_the_runs_budget_and_states_the_gain(trained_run):
    from engine.config import load

    run_config = load(trained_run / runs.CONFIG)
    config = scratch.scratch_config(trained_run)
    assert config.model.weights == "none"
    assert config.model.name == run_config.model.name
    # The same budget: phases with the same epochs and learning rates, the same batch size, pictures and seed.
    assert [(p.epochs, p.lr) for p in config.phases] == [(p.epochs, p.lr) for p in run_config.phases]
    assert config.total_epochs == run_config.total_epochs
    assert config.train == run_config.train
    assert config.data == run_config.data
    assert config.out == str(trained_run.parent)
    # From scratch: every stage retrains.
    stages = [s["name"] for s in json.loads((trained_run / runs.MODEL).read_text())["stages"]]
    assert all(set(p.stages) == set(stages) for p in config.phases)

    result = fit(config)
    assert result.status == "completed", result.error
    comparison = scratch.record_comparison(trained_run, result.run_dir)
    summary = runs.read_summary(trained_run)
    assert summary["scratch_comparison"] == comparison
    expected = round(100 * (summary["best_val_acc"] - result.best_val_acc), 2)
    assert comparison["points"] == expected
    assert comparison["epochs"] == run_config.total_epochs
    assert ("Transfer gained" in comparison["sentence"] or "Training from scratch did" in comparison["sentence"])
    assert summary["status"] == "completed"  # the rest of the summary is kept
    # The scratch run is marked, and cannot itself be compared again.
    assert scratch.comparison_problem(result.run_dir) == "This run is itself a training from scratch."


def test_a_stopped_scratch_run_claims_nothing(trained_run, tmp_path):
    fake = tmp_path / "stopped-scratch"
    fake.mkdir()
    (fake / runs.SUMMARY).write_text(json.dumps({"status": "stopped", "best_val_acc": 0.9}))
    before = runs.read_summary(trained_run)
    assert scratch.record_comparison(trained_run, fake) is None
    assert runs.read_summary(trained_run) == before


@pytest.mark.shared
def test_mobilenet_pretrained_features_beat_random_ones_on_ants_and_bees():
    require_shared(HYMENOPTERA, MOBILENET_WEIGHTS)
    dataset = scan(HYMENOPTERA, verify=False)
    result = advise(dataset, [Candidate("torchvision:mobilenet_v2", str(MOBILENET_WEIGHTS))], sample=120)
    assert result.transfer.clearly_better
    assert len(result.stages) >= 6
