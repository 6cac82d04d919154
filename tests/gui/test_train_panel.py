"""Training from the window: a real short run, Stop mid-epoch, closing the window mid-run, pause."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QMainWindow

from engine import events as ev
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gui.steps.train.panel import TrainPanel
from gui.steps.train.worker import TrainWorker

RUN_FILES = ("config.toml", "labels.json", "metrics.jsonl", "summary.json", "model.json", "dataset.json")


def tiny_config(data, out, epochs=2) -> RunConfig:
    return RunConfig(data=DataConfig(source=str(data), val_fraction=0.25), model=ModelConfig("timm:resnet18", "none"),
                     strategy="fine-tune-shallow", epochs=epochs, lr=0.01, out=str(out),
                     train=TrainConfig(batch_size=8, workers=0, warmup_epochs=0.0))


class StallMeter:
    """A 10 ms timer in the GUI thread that records how late it fires: the longest event-loop stall."""

    def __init__(self):
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)
        self.last = None
        self.worst = 0.0

    def _tick(self):
        now = time.perf_counter()
        if self.last is not None:
            self.worst = max(self.worst, now - self.last - 0.010)
        self.last = now

    def start(self):
        self.timer.start()

    def stop(self):
        self.timer.stop()


@pytest.fixture
def panel(qtbot, tiny_dataset, tmp_path):
    panel = TrainPanel()
    qtbot.addWidget(panel)
    panel.set_config(tiny_config(tiny_dataset, tmp_path / "runs"))
    panel.resize(1200, 760)
    panel.show()
    yield panel
    panel.shutdown()


def test_a_short_run_from_the_train_step(qtbot, panel, capsys):
    meter = StallMeter()
    meter.start()
    with qtbot.waitSignal(panel.runFinished, timeout=180_000) as finished:
        qtbot.mouseClick(panel.start_button, qtbot_button())
        assert not panel.start_button.isEnabled() and panel.stop_button.isEnabled()
    meter.stop()
    result = finished.args[0]
    assert result.status == "completed", result.error
    run_dir = Path(result.run_dir)
    for name in RUN_FILES + ("best.safetensors",):
        assert (run_dir / name).is_file(), name
    plots = panel.plots
    assert plots.series["step_loss"].n == 2 * 2  # 18 training pictures in batches of 8: 2 steps an epoch
    assert plots.series["val_acc"].n == 2
    assert plots.series["lr"].n == 4
    assert panel.run_bar.value() == 2
    assert "Finished" in panel.status.text()
    assert panel.history.table.rowCount() == 1
    assert panel.start_button.isEnabled()
    with capsys.disabled():
        print(f"\n[stall] longest GUI event-loop stall during a training run: {meter.worst * 1000:.0f} ms")


def qtbot_button():
    from PySide6.QtCore import Qt

    return Qt.MouseButton.LeftButton


def test_stop_mid_epoch_ends_the_run_stopped_with_its_files(qtbot, panel):
    with qtbot.waitSignal(panel.controller.event, timeout=120_000,
                          check_params_cb=lambda e: isinstance(e, ev.StepEnded)):
        panel.start()
    with qtbot.waitSignal(panel.runFinished, timeout=120_000) as finished:
        qtbot.mouseClick(panel.stop_button, qtbot_button())
    result = finished.args[0]
    assert result.status == "stopped"
    summary = json.loads((Path(result.run_dir) / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["error"] is None
    for name in RUN_FILES:
        assert (Path(result.run_dir) / name).is_file(), name
    assert "Stopped" in panel.status.text()
    assert panel.history.table.rowCount() == 1


class Host(QMainWindow):
    """Stands in for the main window: its close path is the panel's shutdown."""

    def __init__(self, panel):
        super().__init__()
        self.panel = panel
        self.setCentralWidget(panel)

    def closeEvent(self, event):
        self.panel.shutdown()
        event.accept()


def test_closing_the_window_mid_run_stops_and_saves(qtbot, tiny_dataset, tmp_path, qtlog):
    panel = TrainPanel()
    panel.set_config(tiny_config(tiny_dataset, tmp_path / "runs", epochs=5))
    host = Host(panel)
    qtbot.addWidget(host)
    host.show()
    with qtbot.waitSignal(panel.controller.event, timeout=120_000,
                          check_params_cb=lambda e: isinstance(e, ev.StepEnded)):
        panel.start()
    thread = panel.controller._thread
    host.close()
    assert not panel.controller.running and thread.isFinished()
    (run_dir,) = list((tmp_path / "runs").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped"
    assert not any("Destroyed while thread" in r.message for r in qtlog.records)


def test_pause_holds_the_engine_between_batches_until_resume():
    worker = TrainWorker(RunConfig())
    worker.pause()
    returned = threading.Event()

    def engine_step():
        worker._on_event(ev.Log("info", "a batch ended"))
        returned.set()

    thread = threading.Thread(target=engine_step, daemon=True)
    thread.start()
    assert not returned.wait(0.5)  # held while paused
    worker.resume()
    assert returned.wait(10)


def test_stop_releases_a_paused_run():
    worker = TrainWorker(RunConfig())
    worker.pause()
    returned = threading.Event()
    thread = threading.Thread(target=lambda: (worker._on_event(ev.Log("info", "x")), returned.set()), daemon=True)
    thread.start()
    worker.stop()
    assert returned.wait(10)
    assert not worker.paused


def test_a_stopped_run_is_resumed_from_the_run_history(qtbot, panel, tiny_dataset, tmp_path):
    panel.set_config(tiny_config(tiny_dataset, tmp_path / "runs", epochs=4))  # time to stop it after epoch 1
    with qtbot.waitSignal(panel.controller.event, timeout=120_000,
                          check_params_cb=lambda e: isinstance(e, ev.EpochEnded)):
        panel.start()  # stopped after its first epoch: a checkpoint to resume from
    with qtbot.waitSignal(panel.runFinished, timeout=120_000) as stopped:
        qtbot.mouseClick(panel.stop_button, qtbot_button())
    run_dir = Path(stopped.args[0].run_dir)
    assert stopped.args[0].status == "stopped" and (run_dir / "checkpoint.pt").is_file()

    history = panel.history
    assert not history.resume_button.isEnabled()  # nothing selected yet
    history.select([0])
    assert history.resume_button.isEnabled()
    with qtbot.waitSignal(panel.runFinished, timeout=120_000) as resumed:
        qtbot.mouseClick(history.resume_button, qtbot_button())
    result = resumed.args[0]
    assert result.status == "completed" and Path(result.run_dir) == run_dir
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, panel.config().total_epochs + 1))  # each epoch once
    assert "Resuming" in panel.log.toPlainText()
    history.select([0])
    assert not history.resume_button.isEnabled()  # a completed run has nothing left to resume
    assert "already completed" in history.resume_button.toolTip()


def test_the_augmentation_preview_shows_eight_views_of_a_training_picture(qtbot, panel):
    from PySide6.QtWidgets import QLabel

    from gui.steps.train.panel import AugmentPreview

    panel.settings.augment.setCurrentIndex(panel.settings.augment.findData("light"))
    qtbot.mouseClick(panel.settings.preview, qtbot_button())
    (dialog,) = panel.findChildren(AugmentPreview)
    qtbot.waitExposed(dialog)
    pictures = [label.pixmap() for label in dialog.findChildren(QLabel) if not label.pixmap().isNull()]
    assert len(pictures) == 8
    assert all(max(p.width(), p.height()) == 160 for p in pictures)
    images = [p.toImage() for p in pictures]
    assert len({bytes(image.constBits()) for image in images}) > 1  # random crops and mirrors: not one picture
    centre = images[0].pixelColor(images[0].width() // 2, images[0].height() // 2)
    assert max(centre.red(), centre.green(), centre.blue()) > 100  # the picture itself, not a black square
    dialog.close()


class FakeClock:
    """A clock that moves 1 ms at each reading, whatever the real time: two runs that read it the same number of
    times read the same times."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        self.now += 0.001
        return self.now


def test_pictures_per_second_leave_out_the_time_the_run_was_paused(tiny_dataset, tmp_path, monkeypatch):
    """The window's Pause holds the engine in its event callback; the speed after it is the speed without it (it read
    0.1 pictures/s after a few minutes' pause)."""
    from engine.train import fit

    def speeds(pause_at_step: int | None) -> list[float]:
        monotonic = FakeClock()
        monkeypatch.setattr(time, "monotonic", monotonic)
        monkeypatch.setattr(time, "perf_counter", FakeClock())  # what the stage-activity reports are timed with
        seen = []

        def listener(event):
            if isinstance(event, ev.StepEnded):
                seen.append(event.images_per_s)
                if event.step == pause_at_step:
                    monotonic.now += 200.0  # paused for 200 s after this step

        result = fit(tiny_config(tiny_dataset, tmp_path / f"runs-{pause_at_step}", epochs=1), listener)
        monkeypatch.undo()
        assert result.status == "completed", result.error
        return seen

    plain, paused = speeds(None), speeds(1)
    assert len(plain) == len(paused) >= 2
    assert paused == pytest.approx(plain, rel=1e-6)


def test_another_project_shows_none_of_the_previous_projects_run(qtbot, tmp_path, tiny_dataset):
    from engine.train.trainer import RunResult
    from gui.main_window import MainWindow
    from gui.settings import file_settings
    from gui.sidebar import StepState

    window = MainWindow(settings=file_settings(tmp_path / "settings.ini"), data_dir=tmp_path / "data")
    window.ask_unsaved = lambda: "discard"
    qtbot.addWidget(window)
    window.open_folder(tiny_dataset)
    qtbot.waitUntil(lambda: window.project.dataset is not None and not window.data_page.scanning, timeout=30_000)
    train = window.training.train
    # The end of a run of this project, as the Train step saw it.
    for event in (ev.RunStarted(str(tmp_path / "run"), ("blue", "green", "red"), 18, 6, "CPU", 2, 1000),
                  ev.StepEnded(0, 1, 1, 2, 1.2, 0.01, 40.0), ev.StepEnded(0, 1, 2, 2, 1.0, 0.01, 40.0),
                  ev.EpochEnded(0, "head", 1, 2, 1.0, 0.5, 0.9, 0.6, 0.01, 1.0, True)):
        train.on_event(event)
    train.on_finished(RunResult("completed", str(tmp_path / "run"), 0.6, 1, 1, None))
    train.plots.redraw()
    assert train.plots.smooth_loss.getData()[0] is not None and "Finished" in train.status.text()
    from engine.advise.training_doctor import Verdict

    train.doctor.show_verdicts([Verdict("overfitting", "It learnt the training pictures by heart.", "gap 30 points",
                                        {"label": "Add augmentation", "settings": {"augment": "strong"}})], "run")
    train.tabs.setTabText(train.tabs.indexOf(train.doctor), "Advice (1)")

    other = tmp_path / "other"
    other.mkdir()
    for name in ("blue", "red"):
        (other / name).symlink_to(tiny_dataset / name, target_is_directory=True)
    window.open_folder(other)
    qtbot.waitUntil(lambda: window.project.dataset is not None and not window.data_page.scanning, timeout=30_000)
    for curve in (train.plots.step_loss, train.plots.smooth_loss, train.plots.val_acc, train.plots.speed_curve):
        x, _ = curve.getData()
        assert x is None or len(x) == 0
    assert train.log.toPlainText() == "" and train.run_bar.value() == 0
    assert train.last_result is None and "Finished" not in train.status.text()
    assert train.doctor.buttons == [] and train.tabs.tabText(train.tabs.indexOf(train.doctor)) == "Advice"
    assert window.steps.state("train")[0] is not StepState.DONE  # "A run has finished" was the other project's
    window.shutdown()
