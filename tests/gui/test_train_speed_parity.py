"""The window's run does the same work as the command line's run of the same configuration (issue #23: "the
window's run is 7x slower than the command line's"). No timing: what is compared is what makes the time -- the
picture loaders each run makes (batch, loader processes, pinned memory) and the compute threads torch has when it
makes them, the settings the run folder records, and that no background job of the window (thumbnails, health
checks, scores) runs while the window's run trains.

The 7x itself came from the benchmark's script, which drove the window with ``processEvents`` in a loop: that call
returns at once when nothing is pending, so the window's thread spun on a whole core beside the run (see
bench/bench_long.py's ``window_child``); the app's own event loop sleeps between events.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch
from PySide6.QtCore import Qt
from torch.utils.data import DataLoader

from engine import events as ev
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tests.gui.test_main_window import make_window, wait_scanned

pytestmark = pytest.mark.usefixtures("quick_training")


def same_config(data: Path, out: Path) -> RunConfig:
    """The benchmark's run, small: feature extraction of a tiny model, automatic loader processes and batch."""
    return RunConfig(data=DataConfig(source=str(data), val_fraction=0.25),
                     model=ModelConfig("timm:test_resnet", "none"), strategy="feature-extraction", epochs=1,
                     out=str(out), train=TrainConfig(augment="none", workers=-1))


@pytest.fixture
def loaders(monkeypatch) -> list[tuple]:
    """Every DataLoader made, as (batch size, loader processes, pinned memory, kept processes, items, torch's
    compute threads at that moment)."""
    made: list[tuple] = []
    original = DataLoader.__init__

    def recording(self, dataset, batch_size=1, *args, **kwargs):
        original(self, dataset, batch_size, *args, **kwargs)
        made.append((self.batch_size, self.num_workers, self.pin_memory, self.persistent_workers, len(dataset),
                     torch.get_num_threads()))

    monkeypatch.setattr(DataLoader, "__init__", recording)
    return made


def recorded_settings(run_dir: str) -> dict:
    settings = tomllib.loads((Path(run_dir) / "config.toml").read_text(encoding="utf-8"))
    settings.pop("name", None)  # each run folder has its own name
    return settings


def test_the_windows_run_does_the_work_of_the_command_lines(qtbot, tmp_path, tiny_dataset, loaders, monkeypatch):
    import main
    from engine.config import save

    config = same_config(tiny_dataset, tmp_path / "runs")
    config_file = tmp_path / "run.toml"
    save(config, config_file)

    # The command line: `main.py train run.toml`. Each run has an empty picture cache and frozen-output store of
    # its own: the second would otherwise read back what the first computed, and do less.
    monkeypatch.setenv("TRANSFER_STUDIO_CACHE", str(tmp_path / "cache-command-line"))
    assert main.main(["train", str(config_file)]) == 0
    cli_loaders = list(loaders)
    (cli_run,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    loaders.clear()

    monkeypatch.setenv("TRANSFER_STUDIO_CACHE", str(tmp_path / "cache-window"))
    # The window: open the folder (the Data step scans it), the same configuration, the Train step's Start.
    window = make_window(qtbot, tmp_path / "home")
    try:
        assert window.open_folder(tiny_dataset)
        wait_scanned(qtbot, window)
        window.project.set_config(config)
        panel = window.training.train
        window.steps.go_to("train")
        busy_while_training: list[str] = []

        def watch(event) -> None:  # the window's own background work while the run's epochs train
            if isinstance(event, (ev.StepEnded, ev.EpochEnded)) and window.jobs.busy:
                busy_while_training.append(type(event).__name__)

        panel.controller.event.connect(watch)
        with qtbot.waitSignal(panel.runFinished, timeout=300_000) as finished:
            qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
        result = finished.args[0]
        assert result.status == "completed", result.error
        assert window.errors == []
    finally:
        window.shutdown()

    assert cli_loaders, "the command line's run made no picture loader"
    assert loaders == cli_loaders  # the same loaders, made with the same compute threads, in the same order
    assert recorded_settings(result.run_dir) == recorded_settings(str(cli_run))
    assert busy_while_training == []
