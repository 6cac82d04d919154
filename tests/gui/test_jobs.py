"""The one job service for the window's background work (gui.support.jobs): what a job reports arrives in order on
the GUI thread, a newer job of a kind replaces the older one, failures are sentences, and closing the window stops
every job of every step and waits for it. Also the parts ported to it: the model picker after a download, the
picture preview when a decoder fails, and the run chooser the Evaluate and Predict & Export steps share."""

from __future__ import annotations

import logging
import threading

import pytest
import torch
from PySide6.QtCore import Qt

import engine.models.build as models
from engine import files
from engine.errors import UserError
from engine.project import runs
from engine.project.library import ModelLibrary
from gui.main_window import MainWindow
from gui.settings import file_settings
from gui.steps.model import ModelPicker
from gui.support.jobs import Jobs
from gui.widgets.preview import PreviewDialog
from gui.widgets.run_chooser import RunChooser

LOAD_TIMEOUT = 120_000  # ms: the first import of timm is slow on a busy machine


def until_stopped(progress, stop):
    """A job that runs until it is told to stop (as the engine does, checking its token)."""
    progress(0, 0)
    while not stop.wait(0.005):
        pass
    raise UserError("Stopped.")


def record(seen: list, name: str):
    return lambda *args: seen.append((name, *args))


@pytest.fixture
def jobs(qtbot):
    service = Jobs()
    yield service
    service.shutdown()


def test_a_job_says_what_it_does_counts_and_sends_parts_before_its_result(qtbot, jobs):
    seen = []

    def work(progress, stop):
        progress.say("Counting ...")
        progress(0, 3)
        for i in range(3):
            progress.send(i)
        progress(3, 3)
        return "all three"

    job = jobs.start("count", work, record(seen, "done"), on_error=record(seen, "error"),
                     on_progress=record(seen, "progress"), on_phase=record(seen, "phase"), on_item=record(seen, "item"),
                     on_cancel=record(seen, "cancel"))
    assert jobs.busy and jobs.running("count") and jobs.current("count") is job
    qtbot.waitUntil(jobs.idle)
    assert seen == [("phase", "Counting ..."), ("progress", 0, 3), ("item", 0), ("item", 1), ("item", 2),
                    ("progress", 3, 3), ("done", "all three")]
    assert not jobs.busy and not jobs.running("count") and job.ended.is_set()


def test_a_newer_job_of_a_kind_replaces_the_older_and_cancel_says_so_at_once(qtbot, jobs):
    older_seen, newer_seen = [], []
    older = jobs.start("heat map", until_stopped, record(older_seen, "done"), on_error=record(older_seen, "error"),
                       on_progress=record(older_seen, "progress"), on_cancel=record(older_seen, "cancel"))
    newer = jobs.start("heat map", until_stopped, record(newer_seen, "done"), on_error=record(newer_seen, "error"),
                       on_cancel=record(newer_seen, "cancel"))
    assert older.stop.is_set() and not newer.stop.is_set()
    assert jobs.current("heat map") is newer
    jobs.cancel("heat map")
    assert newer_seen == [("cancel",)]  # at once, not when the thread notices
    qtbot.waitUntil(jobs.idle)
    assert older_seen == [] and newer_seen == [("cancel",)]  # nothing of a replaced or cancelled job arrives
    assert older.ended.is_set() and newer.ended.is_set()


def test_failures_reach_the_window_as_sentences_and_bugs_are_logged(qtbot, jobs, caplog):
    sentences = []

    def fails(exc):
        def work(progress, stop):
            raise exc
        return work

    jobs.start("a", fails(UserError("The folder is empty: add pictures.")), print, on_error=sentences.append)
    qtbot.waitUntil(jobs.idle)
    with caplog.at_level(logging.ERROR, logger="gui.support.jobs"):
        jobs.start("b", fails(RuntimeError("no weights\nin the second line, more")), print, on_error=sentences.append,
                   what="Building the model")
        qtbot.waitUntil(jobs.idle)
    jobs.start("c", fails(MemoryError()), print, on_error=sentences.append, what="The evaluation")
    qtbot.waitUntil(jobs.idle)
    assert sentences == [
        "The folder is empty: add pictures.",
        "Building the model failed because of an unexpected problem (RuntimeError: no weights).",
        "The evaluation ran out of memory: close other programs, or use fewer or smaller pictures."]
    (logged,) = [r for r in caplog.records if r.name == "gui.support.jobs"]
    assert logged.exc_info is not None and logged.exc_info[0] is RuntimeError  # the traceback is kept for whoever helps


def test_shutdown_stops_every_lane_and_waits_for_its_threads(qtbot):
    service = Jobs()
    lane = Jobs(service=service)
    inner = Jobs(lane, threads=1, service=lane)
    started = [jobs.start(kind, until_stopped, print) for jobs, kind in ((service, "a"), (lane, "b"), (inner, "c"))]
    started.append(inner.start(None, until_stopped, print))  # waits for inner's one thread
    service.shutdown()
    assert all(job.stop.is_set() and job.ended.is_set() for job in started)
    assert service.idle() and lane.idle() and inner.idle()
    assert all(jobs.closed for jobs in (service, lane, inner))
    assert lane.start("late", until_stopped, print) is None  # nothing starts once the window is closing
    assert Jobs(service=service).closed  # nor in a lane made afterwards


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf

    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(cache))
    saved = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torchhub"))
    yield cache
    torch.hub.set_dir(saved)


def endless_download(monkeypatch):
    """Downloads that never end by themselves (of a 5 GB file: more bytes than a 32-bit count holds): only their
    stop token ends them."""
    import huggingface_hub

    def download(repo_id, filename, *, revision=None, tqdm_class=None, **_):
        bar = tqdm_class(total=5 * 2**30, unit="B")
        bar.update(2**31)
        while True:
            bar.update(1000)  # raises DownloadCancelled once the job's stop token is set
            threading.Event().wait(0.005)

    monkeypatch.setattr(models, "_online", lambda host: True)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)


def test_closing_the_window_stops_a_download_and_a_scan_and_waits_for_them(qtbot, tmp_path, tiny_dataset, hf_cache,
                                                                           monkeypatch):
    endless_download(monkeypatch)
    window = MainWindow(settings=file_settings(tmp_path / "s.ini"), data_dir=tmp_path / "data")
    window.ask_unsaved = lambda: "discard"
    qtbot.addWidget(window)
    window.show()
    window.open_folder(tiny_dataset)
    builder = window.training.picker.builder
    progress = []
    builder.progress.connect(lambda text, done, total: progress.append(done))
    builder.download("timm:resnet18")
    qtbot.waitUntil(lambda: any(progress), timeout=60_000)  # the download is under way
    assert max(progress) >= 2**31

    def prepare(on_progress, stop):
        while not stop.wait(0.005):
            pass
        raise UserError("Stopped.")

    window.data_page.start_scan(prepare)
    download, scan = builder.jobs.current("build"), window.data_page.scanner.jobs.current("scan")
    assert download is not None and scan is not None and not download.ended.is_set()
    assert window.close()
    assert download.ended.is_set() and scan.ended.is_set()  # both stopped, and their threads were waited for
    assert builder.jobs.closed and window.data_page.browser.loader.jobs.closed and window.results.evaluate.jobs.closed


def test_after_a_download_the_model_step_is_ready_again(qtbot, tmp_path, hf_cache, monkeypatch):
    """Download now, then the bar and Stop go away and the model can be used (they stayed, greyed out, before)."""
    import huggingface_hub

    def download(repo_id, filename, *, revision=None, tqdm_class=None, **_):
        bar = tqdm_class(total=4, unit="B")
        bar.update(4)
        snapshot = hf_cache / ("models--" + repo_id.replace("/", "--")) / "snapshots" / "abc"
        snapshot.mkdir(parents=True)
        (snapshot.parent.parent / "refs").mkdir()
        (snapshot.parent.parent / "refs" / "main").write_text("abc")
        from safetensors.torch import save_file
        import timm

        save_file(timm.create_model("resnet18").state_dict(), str(snapshot / "model.safetensors"))
        return str(snapshot / "model.safetensors")

    monkeypatch.setattr(models, "_online", lambda host: True)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    picker = ModelPicker(runs_folder=tmp_path / "runs", library=ModelLibrary(tmp_path / "library"),
                         cache_dir=tmp_path / "counts")
    qtbot.addWidget(picker)
    with qtbot.waitSignal(picker.catalogueLoaded, timeout=LOAD_TIMEOUT):
        picker.show()
    picker.select("timm:resnet18")
    assert picker.download_button.isVisible()
    with qtbot.waitSignal(picker.builder.downloaded, timeout=60_000):
        qtbot.mouseClick(picker.download_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not picker.progress.isVisible(), timeout=10_000)
    assert not picker.cancel_button.isVisible() and not picker.builder.is_busy()
    assert picker.use_button.isEnabled() and picker.use_button.text() == "Use this model"
    assert "now on this computer" in picker.message_label.text()
    picker.jobs.shutdown()


def test_a_decoder_that_fails_unexpectedly_is_a_sentence_in_the_preview(qtbot, tiny_dataset, monkeypatch):
    import gui.widgets.preview as preview

    def broken(*args, **kwargs):
        raise ValueError("decoder exploded")

    monkeypatch.setattr(preview, "load_rgb", broken)
    dialog = PreviewDialog()
    qtbot.addWidget(dialog)
    dialog.show_picture(str(tiny_dataset / "red" / "red_00.png"), "red", "train")
    qtbot.waitUntil(lambda: dialog.image.text() != "Loading ...", timeout=10_000)  # it stayed there before
    assert dialog.image.text() == "This picture cannot be shown."
    assert "unexpected problem (ValueError: decoder exploded)" in dialog.problem.text()
    assert dialog.fields["dimensions"].text() == "-"
    dialog.jobs.shutdown()


def make_run(folder, name: str, status: str, weights: bool = True, acc: float = 0.5):
    run = folder / name
    run.mkdir(parents=True)
    (run / runs.CONFIG).write_text("version = 1\n")
    files.atomic_write_json(run / runs.SUMMARY, {"status": status, "best_val_acc": acc, "model": "timm:resnet18",
                                                 "strategy": "lp-ft"})
    if weights:
        (run / runs.BEST).write_bytes(b"weights")
    return str(run)


def test_the_run_chooser_lists_newest_first_and_keeps_the_chosen_run(qtbot, tmp_path):
    folder = tmp_path / "runs"
    oldest = make_run(folder, "20250101-100000-a", "completed", acc=0.8)
    done = make_run(folder, "20250102-100000-b", "completed", acc=0.9)
    make_run(folder, "20250103-100000-c", "completed", weights=False)
    make_run(folder, "20250104-100000-d", "stopped")
    chooser = RunChooser("Which model.")
    qtbot.addWidget(chooser)
    chosen = []
    chooser.runChosen.connect(lambda: chosen.append(chooser.current_run()))
    assert chooser.set_folder(folder) and not chooser.set_folder(folder)
    chooser.refresh()
    combo = chooser.combo
    assert [combo.itemText(i).split()[0] for i in range(combo.count())] == [
        "20250104-100000-d", "20250103-100000-c", "20250102-100000-b", "20250101-100000-a"]
    assert combo.itemText(2) == "20250102-100000-b  -  completed, best 90.0 %  (resnet18, lp-ft)"
    assert combo.itemText(0).startswith("20250104-100000-d  -  stopped early")
    assert chooser.current_run() == done  # the newest completed run that has its weights
    assert [i.path for i in chooser.completed_runs()] == [done, oldest]
    assert chosen == []  # a listing is not a choice

    chooser.select_run(oldest)
    assert chosen == [oldest]
    newest = make_run(folder, "20250105-100000-e", "completed")
    chooser.refresh()
    assert chooser.current_run() == oldest and combo.count() == 5  # the user's choice stays
    chooser.refresh(select=newest)
    assert chooser.current_run() == newest and chosen == [oldest]
    with qtbot.waitSignal(chooser.refreshRequested):
        qtbot.mouseClick(chooser.refresh_button, Qt.MouseButton.LeftButton)
    assert chooser.set_folder(None)
    chooser.refresh()
    assert combo.count() == 0 and chooser.current_run() is None
