"""The learning-rate finder (Smith's range test), ``train --lr auto``, and the head solved on stored outputs."""

from __future__ import annotations

import pytest
import torch

from conftest import make_class_folders
from engine.advise.lr_finder import find_lr, suggest, with_lr
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig, load

pytestmark = pytest.mark.usefixtures("quick_training")


def _config(data, strategy, out):
    return RunConfig(data=DataConfig(source=str(data)), model=ModelConfig("timm:test_resnet", "none"),
                     strategy=strategy, epochs=2, lr=0.01,
                     train=TrainConfig(batch_size=8, workers=0, augment="none"), out=str(out))


@pytest.mark.parametrize("strategy, frozen", [("feature-extraction", True), ("fine-tune-deep", False)])
def test_the_finder_suggests_a_rate_inside_its_sweep(tiny_dataset, tmp_path, strategy, frozen):
    finding = find_lr(_config(tiny_dataset, strategy, tmp_path), steps=40)
    assert finding.frozen_outputs is frozen  # frozen layers run once; a model that trains whole runs every step
    assert finding.lrs[0] <= finding.suggestion <= finding.lrs[-1]
    assert len(finding.lrs) == len(finding.losses) >= 5
    assert list(finding.lrs) == sorted(finding.lrs)


def test_the_suggestion_is_where_the_loss_falls_fastest():
    import numpy as np

    lrs = np.logspace(-6, 0, 61)
    # Flat, then a fall centred on 1e-3, then divergence.
    losses = 2.0 - 1.5 / (1 + np.exp(-(np.log10(lrs) + 3) * 4)) + np.where(lrs > 0.1, (lrs - 0.1) * 30, 0)
    assert 5e-4 < suggest(lrs, losses) < 2e-3


def test_with_lr_resolves_the_phases_again():
    config = RunConfig(strategy="lp-ft", epochs=4, lr=0.001)
    assert with_lr(config, 0.0123456).lr == 0.012


def test_train_lr_auto_records_the_chosen_rate_in_config_toml(tmp_path, capsys):
    import main

    data = make_class_folders(tmp_path / "colours", per_class=10)
    code = main.main(["train", "--data", str(data), "--model", "timm:test_resnet", "--weights", "none",
                      "--strategy", "feature-extraction", "--epochs", "1", "--lr", "auto", "--batch-size", "8",
                      "--workers", "0", "--augment", "none", "--out", str(tmp_path / "runs")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Suggested learning rate" in err
    chosen = float(err.split("Suggested learning rate ")[1].split(":")[0])
    runs = list((tmp_path / "runs").iterdir())
    config = load(runs[0] / "config.toml")
    assert config.lr == pytest.approx(chosen) and config.lr != 0.001
    assert config.phases[0].lr == pytest.approx(chosen)
    assert "advice:" in out  # the training doctor speaks: ten pictures a class are too few


def test_lr_must_be_a_number_or_auto(capsys):
    import main

    with pytest.raises(SystemExit):
        main.main(["train", "--data", "x", "--model", "timm:test_resnet", "--lr", "fast"])
    assert "not a learning rate" in capsys.readouterr().err


def test_the_head_is_solved_to_convergence_on_stored_features():
    from engine.train.headfit import fit_head

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 32, generator=g) * 1.2
    y = torch.randint(5, (400,), generator=g)
    x = centres[y] + torch.randn(400, 32, generator=g)
    vy = torch.randint(5, (200,), generator=g)
    vx = centres[vy] + torch.randn(200, 32, generator=g)
    head = torch.nn.Linear(32, 5)
    with torch.no_grad():
        before = float((head(vx).argmax(1) == vy).float().mean())
    fit = fit_head(head, x, y, vx, vy)
    with torch.no_grad():
        after = float((head(vx).argmax(1) == vy).float().mean())
    assert fit is not None and after == pytest.approx(fit.val_acc) and after > before + 0.3
    assert fit.l2 in [t[0] for t in fit.tried] and len(fit.tried) == 4


def test_a_feature_extraction_run_says_which_head_it_chose(tiny_dataset, tmp_path):
    from engine import events as ev
    from engine.train.trainer import fit

    logs = []
    result = fit(_config(tiny_dataset, "feature-extraction", tmp_path), lambda e: isinstance(e, ev.Log) and
                 logs.append(e.message))
    assert result.status == "completed", result.error
    assert any("fitted to convergence" in m and "was best on the validation pictures" in m for m in logs)
