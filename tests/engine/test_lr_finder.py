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


def _smoothed(losses):
    """The finder's curve: an exponential moving average of the step losses, bias-corrected (as find_lr draws it)."""
    from engine.advise.lr_finder import SMOOTHING

    average, out = 0.0, []
    for i, value in enumerate(losses):
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        out.append(average / (1 - SMOOTHING ** (i + 1)))
    return out


def test_the_suggestion_is_the_end_of_the_descent_not_its_steepest_point():
    import numpy as np

    lrs = 1e-7 * (1e7) ** (np.arange(100) / 99)  # the finder's own 100 rates
    x = np.log10(lrs)
    # A long, slow descent (steepest around 3e-5), lowest at 3e-3, then a fast rise: what fine-tuning curves look like.
    raw = 2.0 - 1.2 / (1 + np.exp(-(x + 4.5) * 1.5)) + np.where(x > np.log10(3e-3), (x - np.log10(3e-3)) ** 2 * 8, 0)
    raw -= np.where(x <= np.log10(3e-3), 0.1 * np.exp(-((x - np.log10(3e-3)) ** 2) * 2), 0.1)
    curve = _smoothed(raw)
    low = lrs[int(np.argmin(curve))]
    assert low > 3e-3  # the smoothing's delay drags the curve's lowest point to the right
    lr = suggest(lrs, curve)
    # The last stretch of the descent, at most a few times below the loss's lowest point; well above the steepest
    # fall of the smoothed curve (1.1e-4: fastai's "steep" rule, the finder's old one), which leaves progress unused.
    assert 3e-3 / 4 < lr <= 3e-3 and lr < low


def test_a_short_descent_never_suggests_a_rate_below_the_steepest_fall():
    import numpy as np

    lrs = np.logspace(-7, 0, 100)
    x = np.log10(lrs)
    # Flat until 1e-3, a steep fall around 3e-3, then divergence a few steps later.
    raw = 2.0 - 1.5 / (1 + np.exp(-(x - np.log10(3e-3)) * 12)) + np.where(x > -2, (x + 2) * 6, 0)
    curve = np.array(_smoothed(raw))
    start, low = 10, int(np.argmin(curve))
    steepest = start + int(np.argmin(np.gradient(curve[start:low + 1], np.log(lrs[start:low + 1]))))
    assert suggest(lrs, curve) == lrs[steepest]


def test_a_curve_that_never_falls_gives_a_tenth_of_its_lowest_point():
    import numpy as np

    lrs = np.logspace(-7, 0, 50)
    assert suggest(lrs, np.linspace(1.0, 3.0, 50)) == pytest.approx(lrs[0] / 10)


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
