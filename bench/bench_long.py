"""Long work on many pictures (issue #23): the frozen pass stopped at 60 % and resumed against an uninterrupted run,
evaluation and prediction pictures/s against training's frozen pass, and peak memory.

    python bench/bench_long.py [--pictures 10000] [--out docs/long.md]

Generates PICTURES pictures (10 classes, 256x192 JPEG; 80 % training, 20 % validation), then, each in its own
process (so that its peak memory is its own):

1. an uninterrupted feature-extraction run (MobileNetV2, 1 epoch, no augmentation, an empty frozen-output store);
2. the same run stopped when 60 % of its frozen pass is done, then resumed (``resume``), with another empty store;
3. ``python main.py evaluate RUN`` (the validation pictures) and ``python main.py predict RUN FOLDER`` (the
   validation pictures again), timed from the outside (process start, model loading included).

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


def make_pictures(root: Path, n: int) -> None:
    from PIL import Image, ImageDraw

    rng = random.Random(0)
    classes = [f"class{c}" for c in range(10)]
    for i in range(n):
        folder = root / classes[i % 10]
        folder.mkdir(parents=True, exist_ok=True)
        base = ((i % 10) * 25, 255 - (i % 10) * 20, rng.randint(0, 255))
        image = Image.new("RGB", (256, 192), base)
        x, y = rng.randint(0, 200), rng.randint(0, 140)
        ImageDraw.Draw(image).ellipse([x, y, x + 50, y + 50], fill=(rng.randint(0, 255), 240, 240))
        image.save(folder / f"p{i:06d}.jpg", quality=90)


def config(data: Path, out: Path):
    from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    weights = str(WEIGHTS) if WEIGHTS.is_file() else "none"
    return RunConfig(data=DataConfig(source=str(data), val_fraction=0.2), model=ModelConfig(MODEL, weights),
                     strategy="feature-extraction", epochs=1, out=str(out),
                     train=TrainConfig(augment="none", workers=-1))


def child(mode: str, data: Path, out: Path) -> None:
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
        result = fit(config(data, out), listen)
        assert result.status == "completed", result.error
        row = {"seconds": time.monotonic() - began, "pass": pass_rate}
    else:
        stop = threading.Event()
        stopped = fit(config(data, out), lambda e: listen(e, stop, 0.6), stop)
        assert stopped.status == "stopped", stopped.error
        first = time.monotonic() - began
        result = resume(stopped.run_dir, listen)
        assert result.status == "completed", result.error
        row = {"seconds": time.monotonic() - began, "stopped_after": first, "pass": pass_rate}
    row["run_dir"] = result.run_dir
    row["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
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
    parser.add_argument("--child", choices=("uninterrupted", "stop-resume"))
    parser.add_argument("--data")
    parser.add_argument("--runs")
    args = parser.parse_args()
    if args.child:
        return child(args.child, Path(args.data), Path(args.runs))

    work = Path(tempfile.mkdtemp(prefix="bench-long-"))
    data = work / "pictures"
    make_pictures(data, args.pictures)
    env = dict(os.environ, TRANSFER_STUDIO_CACHE=str(work / "cache-a"))

    def scenario(mode: str, cache: str) -> dict:
        env_s = dict(env, TRANSFER_STUDIO_CACHE=str(work / cache))
        proc = subprocess.run([sys.executable, __file__, "--child", mode, "--data", str(data), "--runs",
                               str(work / "runs")], cwd=REPO, env=env_s, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        return json.loads(proc.stdout.strip().splitlines()[-1])

    whole = scenario("uninterrupted", "cache-a")
    broken = scenario("stop-resume", "cache-b")
    pictures, seconds = whole["pass"][0]
    pass_rate = pictures / seconds
    run = whole["run_dir"]
    val = json.loads((Path(run) / "dataset.json").read_text())["samples"]
    val_paths = [s["path"] for s in val if s["split"] == "val"]
    listing = work / "val-list"
    listing.mkdir()
    for p in val_paths:  # a folder of the validation pictures, for predict
        target = listing / Path(p).parent.name
        target.mkdir(exist_ok=True)
        os.symlink(p, target / Path(p).name)
    ev_s, ev_mem = timed([sys.executable, "main.py", "evaluate", run], env)
    pr_s, pr_mem = timed([sys.executable, "main.py", "predict", run, str(listing), "--csv", str(work / "p.csv")], env)
    n_val = len(val_paths)
    ratio = broken["seconds"] / whole["seconds"]
    rows = [
        f"\n### {time.strftime('%Y-%m-%d')}: {args.pictures:,} pictures, {os.cpu_count()} cores "
        f"({'MobileNetV2 ImageNet weights' if WEIGHTS.is_file() else 'MobileNetV2, random weights'})\n",
        "| measure | value |", "| --- | --- |",
        f"| uninterrupted run (feature extraction, 1 epoch) | {whole['seconds']:.0f} s, peak {whole['peak_mib']:.0f} MiB |",
        f"| frozen pass ({pictures:,} pictures) | {seconds:.0f} s, {pass_rate:.0f} pictures/s |",
        f"| stopped at 60 % of the frozen pass, then resumed | {broken['seconds']:.0f} s in all "
        f"({broken['stopped_after']:.0f} s before the stop), peak {broken['peak_mib']:.0f} MiB |",
        f"| resumed / uninterrupted | {ratio:.2f}x (aim: at most 1.1x) |",
        f"| evaluate ({n_val:,} validation pictures, command line, start to end) | {ev_s:.0f} s, "
        f"{n_val / ev_s:.0f} pictures/s = {n_val / ev_s / pass_rate:.2f}x the frozen pass, peak {ev_mem:.0f} MiB |",
        f"| predict ({n_val:,} pictures, command line, start to end) | {pr_s:.0f} s, {n_val / pr_s:.0f} pictures/s = "
        f"{n_val / pr_s / pass_rate:.2f}x the frozen pass, peak {pr_mem:.0f} MiB |",
    ]
    text = "\n".join(rows) + "\n"
    print(text)
    from engine.files import atomic_write_text

    out = Path(args.out)
    before = out.read_text() if out.exists() else (
        "# Long work: the frozen pass stopped and resumed, evaluation and prediction speed, memory\n\n"
        "Rows written by `python bench/bench_long.py` (see its docstring for what each row measures).\n")
    atomic_write_text(out, before + text)


if __name__ == "__main__":
    main()
