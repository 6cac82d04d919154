"""Long work on many pictures (issue #23): the frozen pass stopped at 60 % and resumed against an uninterrupted run,
evaluation and prediction pictures/s against training's frozen pass, and peak memory.

    python bench/bench_long.py [--pictures 10000] [--repeats 1] [--out docs/long.md]
    python bench/bench_long.py --memory-only --pictures 50000 --model timm:test_resnet --side 64

Generates PICTURES pictures (10 classes, 256x192 JPEG, or --side x 3/4 --side; 80 % training, 20 % validation),
then, each in its own process (so that its peak memory is its own):

1. an uninterrupted feature-extraction run (MobileNetV2, 1 epoch, no augmentation, an empty frozen-output store);
2. the same run stopped when 60 % of its frozen pass is done, then resumed (``resume``), with another empty store;
   1 and 2 alternate (1, 2, 1, 2 ... --repeats pairs), so that a shared machine's changing load weighs on both;
3. ``python main.py evaluate RUN`` (the validation pictures; with the run's own store of frozen outputs, where
   they are read back, and with an empty one) and ``python main.py predict RUN FOLDER`` twice (as many new pictures
   as there are validation pictures: the run's first prediction, which also measures the training pictures for
   the unlike-the-training-pictures flag, and a second one), timed from the outside (process start, model loading
   included);
4. the same run trained from the window: the real main window, offscreen, opens the folder in the Data step (scan,
   thumbnails) and the Train step's Start trains it; its peak memory (getrusage) is the window's.

``--memory-only`` runs 1 and 4 alone, alternated (``--repeats`` pairs): the time, CPU time and peak memory of the
command line's run and of the window's, and their ratios (the window's aim: at most 1.2x the command line's time);
for the 50,000-picture row a small model and small pictures keep it affordable (say which in the row).

Writes a table of rows into OUT (appended, with the date and the machine). Uses ../shared/weights'
MobileNetV2 weights when present, else random weights (the same speed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenet_v2_in1k.safetensors"
MODEL = "torchvision:mobilenet_v2"


def make_pictures(root: Path, n: int, side: int = 256, seed: int = 0) -> None:
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    classes = [f"class{c}" for c in range(10)]
    width, height, r = side, side * 3 // 4, max(4, side // 5)
    for i in range(n):
        folder = root / classes[i % 10]
        folder.mkdir(parents=True, exist_ok=True)
        base = ((i % 10) * 25, 255 - (i % 10) * 20, rng.randint(0, 255))
        image = Image.new("RGB", (width, height), base)
        x, y = rng.randint(0, width - r), rng.randint(0, height - r)
        ImageDraw.Draw(image).ellipse([x, y, x + r, y + r], fill=(rng.randint(0, 255), 240, 240))
        image.save(folder / f"p{i:06d}.jpg", quality=90)


def config(data: Path, out: Path, model: str = MODEL):
    from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    weights = str(WEIGHTS) if WEIGHTS.is_file() and model == MODEL else "none"
    return RunConfig(data=DataConfig(source=str(data), val_fraction=0.2), model=ModelConfig(model, weights),
                     strategy="feature-extraction", epochs=1, out=str(out),
                     train=TrainConfig(augment="none", workers=-1))


def cpu_seconds() -> float:
    """CPU seconds of this process and of its ended children (loader processes): unlike the wall time, nearly the
    same on a quiet machine and on a shared one, so the window's and the command line's costs compare."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def thread_seconds() -> dict[str, float]:
    """CPU seconds of this process's live threads, summed by thread name (Linux; empty elsewhere): where the window's
    run spends its CPU (the window's thread, the training thread and its compute threads, picture jobs)."""
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    for task in Path("/proc/self/task").glob("*"):
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[name] = round(out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick, 1)
    return out


def window_child(data: Path, out: Path, model: str) -> None:
    """The run trained from the real main window (offscreen): open the folder, set the configuration, press Start;
    prints a JSON line with the time and the process's peak memory."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from gui.main_window import MainWindow
    from gui.settings import file_settings

    app = QApplication.instance() or QApplication([])
    home = Path(tempfile.mkdtemp(prefix="bench-long-window-"))
    window = MainWindow(settings=file_settings(home / "settings.ini"), data_dir=home / "data")
    window.ask_unsaved = lambda: "discard"
    errors = []
    window.show_error = lambda title, message, warning=True: errors.append(message)
    window.resize(1280, 800)
    window.show()

    def wait(done, what: str, seconds: float = 7200) -> None:
        """Run the window's event loop as the app does (asleep between events) until ``done()``, checked 10 times a
        second. Not ``processEvents`` in a loop: it returns at once when no event is pending, so that loop kept the
        window's thread busy on a whole core and made the run it measured several times slower."""
        end = time.monotonic() + seconds
        loop = QEventLoop()
        failure: list[str] = []

        def check() -> None:
            if errors:
                failure.append(f"the window said: {errors[-1]}")
            elif time.monotonic() > end:
                failure.append(f"timed out waiting for {what}")
            if failure or done():
                loop.quit()

        timer = QTimer(interval=100, timeout=check)
        timer.start()
        check()
        if not failure and not done():
            loop.exec()
        timer.stop()
        if failure:
            raise SystemExit(failure[0])

    began = time.monotonic()
    window.open_folder(data)
    wait(lambda: window.project.dataset is not None and not window.data_page.scanning, "the scan")
    scanned = time.monotonic() - began
    window.project.set_config(config(data, out, model))
    panel = window.training.train
    started, cpu_started = time.monotonic(), cpu_seconds()
    panel.start()
    wait(lambda: panel.last_result is not None, "the run")
    result = panel.last_result
    if result.status != "completed":
        raise SystemExit(f"the window's run ended {result.status}: {result.error}")
    row = {"seconds": time.monotonic() - began, "scan_seconds": scanned, "run_dir": result.run_dir,
           "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_s": cpu_seconds(),
           "run_seconds": time.monotonic() - started, "run_cpu_s": cpu_seconds() - cpu_started,
           "threads": thread_seconds()}
    window.shutdown()
    print(json.dumps(row))


def child(mode: str, data: Path, out: Path, model: str = MODEL) -> None:
    """One scenario in this process; prints a JSON line with its times and peak memory."""
    from engine import events as ev
    from engine.train.trainer import fit, resume

    pass_rate = []

    def listen(event, stop=None, at=None):
        if isinstance(event, ev.Log) and "outputs are ready (" in event.message:
            text = event.message.split("outputs are ready (")[1]
            pictures, seconds = text.split(" pictures in ")[0], text.split(" pictures in ")[1].split(" s")[0]
            pass_rate.append((int(pictures), float(seconds)))
        if stop is not None and isinstance(event, ev.Preparing) and event.done >= at * event.total:
            stop.set()

    began = time.monotonic()
    if mode == "uninterrupted":
        result = fit(config(data, out, model), listen)
        assert result.status == "completed", result.error
        row = {"seconds": time.monotonic() - began, "pass": pass_rate}
    else:
        stop = threading.Event()
        stopped = fit(config(data, out, model), lambda e: listen(e, stop, 0.6), stop)
        assert stopped.status == "stopped", stopped.error
        first = time.monotonic() - began
        result = resume(stopped.run_dir, listen)
        assert result.status == "completed", result.error
        row = {"seconds": time.monotonic() - began, "stopped_after": first, "pass": pass_rate}
    row["run_dir"] = result.run_dir
    row["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row["cpu_s"] = cpu_seconds()
    print(json.dumps(row))


def timed(command: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, peak MiB) of a command line."""
    began = time.monotonic()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *command], cwd=REPO, env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return time.monotonic() - began, int(proc.stderr.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pictures", type=int, default=10_000)
    parser.add_argument("--out", default=str(REPO / "docs" / "long.md"))
    parser.add_argument("--repeats", type=int, default=1, help="alternated pairs of 1 (uninterrupted) and 2 (stopped)")
    parser.add_argument("--memory-only", action="store_true", help="only the peak memory of 1 and of the window")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--side", type=int, default=256, help="the pictures' width (height: three quarters)")
    parser.add_argument("--child", choices=("uninterrupted", "stop-resume", "window"))
    parser.add_argument("--data")
    parser.add_argument("--runs")
    args = parser.parse_args()
    if args.child == "window":
        return window_child(Path(args.data), Path(args.runs), args.model)
    if args.child:
        return child(args.child, Path(args.data), Path(args.runs), args.model)

    work = Path(tempfile.mkdtemp(prefix="bench-long-"))
    data = work / "pictures"
    make_pictures(data, args.pictures, args.side)
    env = dict(os.environ, TRANSFER_STUDIO_CACHE=str(work / "cache-a"))
    caches = iter(range(1000))

    def scenario(mode: str) -> dict:
        """One scenario in its own process, with an empty picture cache and frozen-output store of its own."""
        env_s = dict(env, TRANSFER_STUDIO_CACHE=str(work / f"cache-{next(caches)}"))
        proc = subprocess.run([sys.executable, __file__, "--child", mode, "--data", str(data), "--runs",
                               str(work / "runs"), "--model", args.model], cwd=REPO, env=env_s,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{mode}: {row}", file=sys.stderr, flush=True)  # a run cut short keeps what it measured
        return row

    what = (f"{args.pictures:,} pictures of {args.side}x{args.side * 3 // 4}, {os.cpu_count()} cores, "
            f"load average {os.getloadavg()[0]:.1f} at the start, "
            + ("MobileNetV2 ImageNet weights" if WEIGHTS.is_file() and args.model == MODEL else
               f"{args.model}, random weights"))
    if args.memory_only:
        wholes, windows = [], []
        for _ in range(args.repeats):  # alternated: command line, window, command line, ...
            wholes.append(scenario("uninterrupted"))
            windows.append(scenario("window"))
        pictures, seconds = wholes[0]["pass"][0]
        each = lambda rows, key: " / ".join(f"{r[key]:.0f}" for r in rows)  # noqa: E731
        mean = lambda rows, key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
        rows = [f"\n### {time.strftime('%Y-%m-%d')}: the window against the command line, {what}\n",
                "| measure | value |", "| --- | --- |",
                f"| command line: feature extraction, 1 epoch (frozen pass of {pictures:,} pictures in {seconds:.0f} s) "
                f"| {each(wholes, 'seconds')} s, {each(wholes, 'cpu_s')} CPU s, peak "
                f"{max(w['peak_mib'] for w in wholes):.0f} MiB |",
                f"| window: open the folder, then Start (same run) | {each(windows, 'seconds')} s "
                f"({each(windows, 'scan_seconds')} s scanning, {each(windows, 'run_seconds')} s from Start), "
                f"{each(windows, 'cpu_s')} CPU s, peak {max(w['peak_mib'] for w in windows):.0f} MiB |",
                f"| window / command line (alternated, {args.repeats} pair{'s' if args.repeats > 1 else ''}) | "
                f"{mean(windows, 'seconds') / mean(wholes, 'seconds'):.2f}x the time, "
                f"{mean(windows, 'cpu_s') / mean(wholes, 'cpu_s'):.2f}x the CPU time, "
                f"{max(w['peak_mib'] for w in windows) / max(w['peak_mib'] for w in wholes):.2f}x the peak memory "
                "(aim: at most 1.2x the time) |",
                f"| load average at the end | {os.getloadavg()[0]:.1f} |"]
        return _write(args.out, rows)

    wholes, brokens = [], []
    for _ in range(args.repeats):  # alternated: uninterrupted, stopped-and-resumed, uninterrupted, ...
        wholes.append(scenario("uninterrupted"))
        brokens.append(scenario("stop-resume"))
    whole, broken = wholes[0], brokens[0]
    passes = [w["pass"][0] for w in wholes]
    pictures = passes[0][0]
    seconds = sum(s for _, s in passes) / len(passes)
    pass_rate = pictures / seconds
    run = whole["run_dir"]
    val = json.loads((Path(run) / "dataset.json").read_text())["samples"]
    n_val = sum(1 for s in val if s["split"] == "val")
    fresh = work / "new-pictures"  # pictures the run never saw, as many as its validation pictures, for predict
    make_pictures(fresh, n_val, args.side, seed=1)
    # The run's own caches (the first uninterrupted run's: what a user has after training), and empty ones.
    own = dict(env, TRANSFER_STUDIO_CACHE=str(work / "cache-0"))
    ev_s, ev_mem = timed([sys.executable, "main.py", "evaluate", run], own)
    print(f"evaluate (stored outputs): {ev_s:.0f} s, {ev_mem:.0f} MiB", file=sys.stderr, flush=True)
    ev0_s, ev0_mem = timed([sys.executable, "main.py", "evaluate", run], env)
    print(f"evaluate (empty store): {ev0_s:.0f} s, {ev0_mem:.0f} MiB", file=sys.stderr, flush=True)
    predict = [sys.executable, "main.py", "predict", run, str(fresh), "--csv", str(work / "p.csv")]
    pr_s, pr_mem = timed(predict, own)
    print(f"predict, first: {pr_s:.0f} s, {pr_mem:.0f} MiB", file=sys.stderr, flush=True)
    pr2_s, pr2_mem = timed(predict, own)
    print(f"predict, again: {pr2_s:.0f} s, {pr2_mem:.0f} MiB", file=sys.stderr, flush=True)
    window = scenario("window")
    mean_whole = sum(w["seconds"] for w in wholes) / len(wholes)
    mean_broken = sum(b["seconds"] for b in brokens) / len(brokens)
    ratio = mean_broken / mean_whole
    each = lambda rows, key: " / ".join(f"{r[key]:.0f}" for r in rows)  # noqa: E731
    rows = [
        f"\n### {time.strftime('%Y-%m-%d')}: {what}\n",
        "| measure | value |", "| --- | --- |",
        f"| uninterrupted run (feature extraction, 1 epoch) | {each(wholes, 'seconds')} s, peak "
        f"{max(w['peak_mib'] for w in wholes):.0f} MiB |",
        f"| frozen pass ({pictures:,} pictures) | {seconds:.0f} s, {pass_rate:.0f} pictures/s |",
        f"| stopped at 60 % of the frozen pass, then resumed | {each(brokens, 'seconds')} s in all "
        f"({each(brokens, 'stopped_after')} s before the stop), peak {max(b['peak_mib'] for b in brokens):.0f} MiB |",
        f"| resumed / uninterrupted (alternated, {args.repeats} pair{'s' if args.repeats > 1 else ''}) | "
        f"{ratio:.2f}x (aim: at most 1.1x) |",
        f"| evaluate ({n_val:,} validation pictures, command line, start to end; their frozen outputs read back "
        f"from the run's store) | {ev_s:.1f} s, {n_val / ev_s:.0f} pictures/s = {n_val / ev_s / pass_rate:.2f}x the "
        f"frozen pass, peak {ev_mem:.0f} MiB |",
        f"| evaluate, the same with an empty store (every picture computed) | {ev0_s:.1f} s, {n_val / ev0_s:.0f} "
        f"pictures/s = {n_val / ev0_s / pass_rate:.2f}x the frozen pass, peak {ev0_mem:.0f} MiB |",
        f"| predict ({n_val:,} new pictures, command line, start to end), the run's first (it also measures the "
        f"training pictures once for the unlike-the-training-pictures flag) | {pr_s:.1f} s, {n_val / pr_s:.0f} "
        f"pictures/s = {n_val / pr_s / pass_rate:.2f}x the frozen pass, peak {pr_mem:.0f} MiB |",
        f"| predict the same pictures again (the flag's statistics stored) | {pr2_s:.1f} s, {n_val / pr2_s:.0f} "
        f"pictures/s = {n_val / pr2_s / pass_rate:.2f}x the frozen pass, peak {pr2_mem:.0f} MiB |",
        f"| window: open the folder (scan, thumbnails), then Start (the same run) | {window['seconds']:.0f} s "
        f"({window['scan_seconds']:.0f} s scanning), peak {window['peak_mib']:.0f} MiB |",
        f"| command line: peak memory of the same run | {whole['peak_mib']:.0f} MiB |",
    ]
    _write(args.out, rows)


def _write(out_path: str, rows: list[str]) -> None:
    from engine.files import atomic_write_text

    text = "\n".join(rows) + "\n"
    print(text)
    out = Path(out_path)
    before = out.read_text() if out.exists() else (
        "# Long work: the frozen pass stopped and resumed, evaluation and prediction speed, memory\n\n"
        "Rows written by `python bench/bench_long.py` (see its docstring for what each row measures).\n")
    atomic_write_text(out, before + text)


if __name__ == "__main__":
    main()
