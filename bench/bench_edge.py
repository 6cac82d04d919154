"""To the edge: distillation into a smaller model, and the int8 ONNX export, measured on ants-vs-bees.

    python bench/bench_edge.py                     # the full table, written to docs/edge.md
    python bench/bench_edge.py --epochs 2 --student-epochs 2 --no-write   # a smoke run
    python bench/bench_edge.py --only distill --teacher RUN --student-epochs 8 --seeds 0 1 2 \
        --arms alone distilled fixed       # section 1 alone, over seeds (runs kept in --results, reused)

1. The teacher: torchvision's MobileNetV2 with the shared ImageNet weights (../shared/weights), fine-tuned on
   ants-vs-bees (../shared/datasets/hymenoptera) -- feature extraction, the app's default for so few pictures.
2. The student: timm's ``mobilenetv2_050`` (MobileNetV2 at half the width) starting from weights cut out of the shared
   ImageNet MobileNetV2 (``sliced_student``): no pretrained weights for a smaller model exist on these machines and
   nothing can be downloaded. Trained with the same settings, every layer, the same epochs and seeds, through
   ``engine.edge.distill`` each time: on the labels alone (soft weight 0 -- the loss is then exactly the
   cross-entropy) and distilled from the teacher (soft weight 0.7, temperature 4); ``--only distill`` trains both
   over several seeds (and, with ``--arms``, distillation from the answers computed once, without consistent
   teaching) and rewrites section 1 with the mean and spread.
3. int8 against fp32 ONNX (``export --format onnx-int8``), for the teacher and the distilled student: accuracy on the
   153 validation pictures, ONNX Runtime latency per picture (the two files alternated, median of many passes), size.

Timings alternate the two sides of each pair, so that other work on the machine slows both alike; the machine is
shared while measuring. Needs ../shared; skips cleanly without it.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.config import DEFAULT_FEATURE_WEIGHT  # noqa: E402  (after the path: the repository's engine)

SHARED = REPO.parent / "shared"
DATA = SHARED / "datasets" / "hymenoptera"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_in1k.safetensors"
STUDENT = "timm:mobilenetv2_050"
OUT = REPO / "docs" / "edge.md"
AIMS = {"distill_points": 3.0, "int8_speedup": 1.5, "int8_size": 0.3, "int8_points": 1.0}


USAGE = """## How to use it

- **Distil** (`python main.py distill RUN --student MODEL --weights W [--epochs N] [--pool DIR] [--out DIR]
  [--temperature T] [--soft-weight W]`, or *Distil into a smaller model...* in Predict & Export): the teacher is the
  finished run RUN; the student any catalogue model with its weight source (`pretrained`, `none` or a file). It
  trains on the teacher run's own pictures and split, every layer, with
  `loss = (1 - w) x cross-entropy + w x T^2 x KL(teacher_T || student_T)` (soft weight `w`, default 0.7; temperature
  `T`, default 4). A folder of unlabelled pictures (`--pool`) adds pictures with the soft term only. The teacher's
  outputs are computed once per picture before training; when teacher and student prepare pictures alike (input
  size, mean, standard deviation), the teacher also answers on each training step's own augmented pictures
  (consistent teaching, Beyer et al. 2022), otherwise the answers computed once are looked up per batch. Before a
  new run's first step the student's BatchNorm statistics are measured again on the training pictures (the run's log
  says so; a resumed run keeps its own). The result is a normal run folder
  (evaluate, predict, export, `train --resume` work; its `config.toml` has a `[distill]` section) with
  `distill.json`: the teacher-vs-student table, which the command prints before the run folder on its last line.
- **int8 export** (`python main.py export RUN --format onnx-int8`): `model.onnx` (fp32, checked against PyTorch as
  usual) and `model.int8.onnx` (ONNX Runtime static quantisation calibrated on up to 64 of the run's training
  pictures). The accuracy on the validation split, the latency per picture on this computer and the sizes of both
  files are printed and recorded in `model.json` (`checks["onnx-int8"]`) and `MODEL_CARD.md`. Operators ONNX Runtime
  does not quantise stay in float and are named; a model none of whose operators quantise is still written, with a
  sentence saying so.
- **The frozen pass in int8** (feature extraction and other phases with a frozen prefix, on the CPU, automatic
  precision, 512 or more training outputs): the training pictures' frozen outputs are computed by the int8 prefix,
  the validation pictures' in fp32; the run's log says which precision was used and the measured check (a linear
  probe on the int8 outputs must classify the validation pictures from int8 outputs within half a point of its
  accuracy from fp32 ones; otherwise the training outputs are computed again in fp32). The prefix is quantised with
  min-max ranges calibrated on 16 training pictures and one scale per weight tensor (faster to calibrate and to run
  than the export's settings; the check guards the outputs), and kept beside the stored outputs, so that the next run
  with the same frozen layers and pictures reads it back. Whether int8 is faster here is timed on the validation
  pictures, which go through both versions batch by batch from one loader (they are needed for the check anyway); it
  is used only at 1.2x or more. Precision `fp32` turns it off.
  bf16 is not used for this pass: ONNX Runtime's CPU provider has no bf16 convolutions, and the frozen pass already
  runs in ONNX Runtime (faster than PyTorch's fp32 and bf16 paths on these CPUs).
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def train_teacher(out: Path, epochs: int, seed: int):
    from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from engine.train.trainer import fit

    config = RunConfig(data=DataConfig(source=str(DATA)), model=ModelConfig("torchvision:mobilenet_v2", str(WEIGHTS)),
                       strategy="feature-extraction", epochs=epochs, lr=1e-3, train=TrainConfig(seed=seed),
                       out=str(out), name="teacher")
    result = fit(config)
    assert result.status == "completed", result.error
    return Path(result.run_dir)


def sliced_student(out: Path) -> Path:
    """A weight file for timm's ``mobilenetv2_050`` (MobileNetV2 at half the width: 0.7 M parameters against 2.2 M)
    cut from the shared ImageNet MobileNetV2: each layer keeps the first channels of the same layer of the full
    network (the same channels all along, so residual sums and the next layer's inputs still match), BatchNorm
    statistics included; the classifier is left out (the student gets a new head). Like DistilBERT, whose student
    starts from one layer in two of its teacher, the student starts from the teacher family's own ImageNet features
    instead of random numbers: no pretrained weights for a smaller model are on these machines. The two networks
    list their layers in the same order (checked: same count, every student tensor fits in its teacher tensor)."""
    import timm
    import torchvision
    from safetensors.torch import load_file, save_file

    big = torchvision.models.mobilenet_v2()
    big.load_state_dict(load_file(str(WEIGHTS)), strict=False)
    small = timm.create_model(STUDENT.split(":", 1)[1], num_classes=1000).state_dict()
    big_keys = [k for k in big.state_dict() if not k.startswith("classifier")]
    small_keys = [k for k in small if not k.startswith("classifier")]
    assert len(big_keys) == len(small_keys), "the two networks no longer list the same layers"
    state, full = {}, big.state_dict()
    for a, b in zip(small_keys, big_keys):
        target, source = small[a], full[b]
        assert target.dim() == source.dim() and all(x <= y for x, y in zip(target.shape, source.shape)), (a, b)
        state[a] = source[tuple(slice(0, n) for n in target.shape)].clone().contiguous()
    path = out / "mobilenetv2_050_from_mobilenet_v2_in1k.safetensors"
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def train_student(teacher: Path, out: Path, student: str, epochs: int, soft_weight: float, weights: str = "none",
                  seed: int = 0, latency_rounds: int = 30, feature_weight: float | None = None):
    import dataclasses

    from engine.edge.distill import distill, distill_config

    config = distill_config(teacher, student, weights, epochs=epochs, out=str(out), soft_weight=soft_weight,
                            feature_weight=feature_weight)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))
    done = distill(config, latency_rounds=latency_rounds)
    assert done.run.status == "completed", done.run.error
    return Path(done.run.run_dir), done.table


# What was measured and changed in the cold frozen pass (2026-12-07, profiled with cProfile and timed part by part,
# alternated, on the 2 shared cores at a load average of 4 to 8); kept with section 3 when it is written again.
FROZEN_NOTES = """### Where the cold pass's time went, and what was cut

Profiled (cProfile, and each part timed alone, alternated with its old version) on 2026-12-07 while the machine was
busy with other work (load average 4 to 8 on its 2 cores): every part below slows with the load, the ratios less.

| part of the cold pass | before | now |
|---|---|---|
| batching 64 training pictures (the loader's `torch.stack`) | 0.2 to 0.74 s per batch: timm's 8-bit transform ends in a channels-first *view* of each picture, copied byte by byte with a stride of 3, on 2 torch threads that wait for each other | 3 to 20 ms: the transforms end in contiguous pictures (`engine.data.loaders.Uint8CHW`, `CropFlipUint8`: the same random draws and the same pixels as timm's steps, checked pixel for pixel) |
| torch's part of the pass (crops, batching, normalising, copying outputs) while ONNX Runtime computes | 2 torch threads | 1 torch thread: ONNX Runtime has its own; the normalisation is one pass fewer (`uint8 - mean`, then divide) |
| reading a cached decoded picture | 0.25 ms (a memory map, then two copies) | 0.1 ms (one read) |
| seeding each augmented view | `torch.manual_seed` (seeds every accelerator too) | the CPU generator alone (the one the transforms draw from), 20 times cheaper |
| the check's linear probe (732 x 1280 outputs, L-BFGS) | 0.9 to 4.9 s on 2 threads (0.7 to 8 s in earlier runs) | 0.14 to 0.3 s on one thread; the same verdict |
| a refused int8 check | every view computed in int8, then all again in fp32 | the check decides after the first view (its probe only ever used that one): one view in int8, then fp32 |
| quantising the prefix | about 2 s at load 4 to 7: calibration 1.3 s (16 pictures one at a time through ONNX Runtime's unoptimised calibration graph), the quantiser's graph work 0.4 s, ONNX files 0.2 s | unchanged. Calibrating the 16 pictures as one batch gives the same file byte for byte but no time; ONNX Runtime's calibration session busy-waits on its threads (1.7 s against 1.1 s without, measured) but offers no option to turn that off short of patching its internals |

Not changed: loader processes for the frozen pass (one process alternated with none gave 33.4 against 33.9 and 53.8
against 42.1 pictures/s at a load average of 7 to 9: no clear gain, and a process of its own takes a core from ONNX
Runtime's threads on a quiet machine); torch's antialiased resize for the training crops (0.2 ms against PIL's 0.6 to
0.9 ms on one thread, but its pixels differ from PIL's by 1 of 255 on 2 % of them, and the int8 check, whose half
point is less than one of the 153 validation pictures, changed its verdict on that difference at seed 1: kept with
PIL's crops, refused with torch's).

Why 2x is out of reach at 888 outputs on these 2 cores: the int8 body alone runs about 2.2 to 2.6 times the fp32 one
(ONNX Runtime, batches of 64), but the automatic pass also quantises the prefix (about 2 s, the order of a third of
the whole fp32 pass here), computes the 153 validation pictures in both precisions for its check, and loads every
picture like the fp32 pass does. Once those are paid, the int8 training views run at about twice the fp32 pass's
pictures per second (one automatic run of 10 epochs, from its log's times at a load average of 2.3: the last 490 of
its 888 outputs at 163 pictures/s, against 83 for the whole fp32 pass in the same hour), so the pass as a whole gets
closer to 2x as the pictures grow in number (at most 3 views per picture, whatever the epochs: `bench_speed.py`'s 10
epochs also compute 888 outputs; `docs/benchmark.md`, rows 1b). A larger set was not measured.
"""


# One feature-extraction run with a cold frozen pass, in a process of its own, on the engine of the source tree given
# (this repository's, or an earlier version's: ``--baseline-tree``): prints a JSON line with the pass's figures, and
# the time spent quantising the prefix and in the check's linear probe (timed from outside, the engine unchanged).
_ONE_FROZEN_RUN = r"""
import json, os, re, sys, tempfile, time
tree, data, weights, precision, epochs, seed = sys.argv[1:7]
sys.path.insert(0, tree)
from pathlib import Path
from engine import events as ev
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.train.trainer import fit
import engine.train.prefix as prefix
spent = {"quantise_s": 0.0, "probe_s": 0.0}
def timed(module, name, key):
    inner = getattr(module, name, None)
    if inner is None:
        return
    def wrapper(*a, **k):
        began = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            spent[key] += time.perf_counter() - began
    setattr(module, name, wrapper)
timed(prefix.feats, "int8_prefix", "quantise_s")
timed(prefix, "probe_accuracies", "probe_s")
logs = []
with tempfile.TemporaryDirectory() as out:
    os.environ["TRANSFER_STUDIO_FROZEN_CACHE"] = str(Path(out) / "frozen")  # a cold pass every time
    config = RunConfig(data=DataConfig(source=data), model=ModelConfig("torchvision:mobilenet_v2", weights),
                       strategy="feature-extraction", epochs=int(epochs), lr=1e-3,
                       train=TrainConfig(precision=precision, seed=int(seed)), out=str(Path(out) / "runs"))
    result = fit(config, lambda e: logs.append(e.message) if isinstance(e, ev.Log) else None)
    assert result.status == "completed", result.error
ready = next(m for m in logs if "outputs are ready" in m)
n, seconds = map(float, re.search(r"\((\d+) pictures in ([\d.]+) s", ready).groups())
check = next((m for m in logs if "int8" in m and ("probe" in m or "not faster" in m)), "")
print(json.dumps({"per_s": n / seconds, "seconds": seconds, "n": int(n), "acc": result.best_val_acc,
                  "int8": "in int8" in ready, "check": check, **spent}))
"""


def one_frozen_run(tree: Path, precision: str, epochs: int, seed: int) -> dict:
    import json
    import subprocess

    done = subprocess.run([sys.executable, "-c", _ONE_FROZEN_RUN, str(tree), str(DATA), str(WEIGHTS), precision,
                           str(epochs), str(seed)], capture_output=True, text=True, cwd=str(tree))
    if done.returncode != 0:
        raise SystemExit(f"a frozen-pass run failed ({tree}, {precision}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def frozen_pass(epochs: int, rounds: int, baseline: Path | None = None) -> list[str]:
    """Feature extraction's cold frozen pass, fp32 (precision "fp32") against int8 (precision "auto"), each run with
    an empty store of frozen outputs and the decoded pictures cached, alternated, each run in a process of its own;
    with ``baseline`` (a folder holding an earlier version's ``engine`` package, e.g. ``git archive COMMIT engine``),
    that version's fp32 pass too, in the same alternation: "today's" pass. The section's lines."""
    arms = ([("baseline", baseline, "fp32")] if baseline else []) + [("fp32", REPO, "fp32"), ("auto", REPO, "auto")]
    results: dict[str, list[dict]] = {name: [] for name, _, _ in arms}
    load_before = " ".join(f"{v:.1f}" for v in os.getloadavg())
    one_frozen_run(REPO, "fp32", 1, 0)  # fills the picture cache: every measured run finds its pictures decoded
    for attempt in range(rounds):
        for name, tree, precision in arms:
            r = one_frozen_run(tree, precision, epochs, attempt)
            r["load"] = os.getloadavg()[0]
            results[name].append(r)
            log(f"frozen pass, {name}: {r['per_s']:.1f} pictures/s (quantising {r['quantise_s']:.1f} s, probe "
                f"{r['probe_s']:.2f} s), val acc {r['acc']:.3f}, load {r['load']:.1f}")
    load_after = " ".join(f"{v:.1f}" for v in os.getloadavg())
    mean = lambda rows, k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
    each = lambda rows, k="per_s", f="{:.1f}": ", ".join(f.format(r[k]) for r in rows)  # noqa: E731
    f, q = results["fp32"], results["auto"]
    ratio = mean(q, "per_s") / mean(f, "per_s")
    kept = sum(r["int8"] for r in q)
    used = (f"int8 in {kept} of {len(q)} runs" + ("" if kept == len(q) else
            " (in the others " + ("int8 was not faster here" if any("not faster" in r["check"] for r in q)
                                  else "the check refused int8 and the training outputs were computed again in fp32")
            + ")"))
    points = 100 * (mean(q, "acc") - mean(f, "acc"))
    pairs = ", ".join(f"{b['per_s'] / a['per_s']:.2f}x" for a, b in zip(f, q))
    lines = ["## 3. Feature extraction's cold frozen pass in int8", "",
             f"Feature extraction of the shared MobileNetV2 on ants-vs-bees ({epochs} epochs, {f[0]['n']} frozen "
             "outputs: the augmented views of the 245 training pictures and the 153 validation pictures), each run in "
             "a process of its own with an empty store of frozen outputs (a cold pass) and the decoded pictures cached; "
             f"precision `fp32` against the automatic precision, {rounds} runs each, alternated"
             + (", with the fp32 pass of the engine before this work (\"today's\" pass of the issue) in the same "
                "alternation" if baseline else "") + f", written by `bench/bench_edge.py --only frozen` on "
             f"{time.strftime('%Y-%m-%d')}. The machine was shared with other work while measuring (load average "
             f"before: {load_before}; after: {load_after}; after each fp32 run, then each automatic one: "
             f"{each(f + q, 'load')}): compare within a "
             "pair.", "",
             "| frozen pass | pictures/s | quantising | linear probe | best validation accuracy |",
             "|---|---:|---:|---:|---:|"]
    if baseline:
        b = results["baseline"]
        lines.append(f"| before this work: fp32 (ONNX Runtime) | {mean(b, 'per_s'):.1f} ({each(b)}) | - | - | "
                     f"{100 * mean(b, 'acc'):.1f} % |")
    lines += [f"| fp32 (ONNX Runtime) | {mean(f, 'per_s'):.1f} ({each(f)}) | - | - | {100 * mean(f, 'acc'):.1f} % |",
              f"| automatic: {used} | {mean(q, 'per_s'):.1f} ({each(q)}) | {mean(q, 'quantise_s'):.1f} s | "
              f"{mean(q, 'probe_s'):.2f} s | {100 * mean(q, 'acc'):.1f} % |", "",
              f"- Speed: **{ratio:.2f}x** the pictures per second of the fp32 cold pass over all runs (aim: 2x: "
              f"{'met' if ratio >= 2 else 'not met'}); pair by pair (each fp32 run against the automatic run right "
              f"after it): {pairs}."]
    if baseline:
        b = results["baseline"]
        base_ratio = mean(q, "per_s") / mean(b, "per_s")
        lines.append(f"- Against the fp32 pass before this work (the cheaper loading of pictures helps fp32 too): "
                     f"automatic **{base_ratio:.2f}x** (aim: 2x: {'met' if base_ratio >= 2 else 'not met'}; pairs: "
                     + ", ".join(f"{c['per_s'] / a['per_s']:.2f}x" for a, c in zip(b, q))
                     + f"), fp32 now {mean(f, 'per_s') / mean(b, 'per_s'):.2f}x (pairs: "
                     + ", ".join(f"{c['per_s'] / a['per_s']:.2f}x" for a, c in zip(b, f)) + ").")
    lines += ["- The automatic pass includes quantising the prefix (min-max calibration on 16 training pictures, one "
              "scale per weight tensor), the validation pictures in int8 beside fp32 for its check and the linear "
              "probe of the check; the validation pictures' outputs stay in fp32.",
              f"- Accuracy of the finished runs: {points:+.1f} points (the runs' own check allows half a point on its "
              "probe; one validation picture is 0.65 points).",
              f"- The run's own check said: \"{q[0]['check']}\"" if q[0]["check"] else "", ""]
    return lines


def bf16_prefix(rounds: int) -> list[str]:
    """MobileNetV2's frozen prefix (the whole body) on a batch of 64, pictures per second: ONNX Runtime fp32 (the frozen
    pass's engine), PyTorch fp32 and PyTorch bf16 autocast (channels_last), alternated; the lines of a sub-section."""
    import statistics

    import torch
    import torchvision

    from engine.train.fastpath import Split, fast_prefix
    from engine.train.runtime import cpu_has_native_bf16

    model = torchvision.models.mobilenet_v2()
    model.classifier = torch.nn.Identity()
    model.eval()
    x = torch.randn(64, 3, 224, 224)
    with torch.no_grad():
        probe = model(x[:2])
    onnx, how = fast_prefix(Split(model, model, model, "head", (), tuple(probe.shape[1:]), probe.dtype, probe), x[:2],
                            onnx=True)
    cl = model.to(memory_format=torch.channels_last)
    xcl = x.contiguous(memory_format=torch.channels_last)

    def bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return cl(xcl)

    ways = {f"ONNX Runtime fp32 ({how})": lambda: onnx(x), "PyTorch fp32": lambda: cl(xcl), "PyTorch bf16": bf16}
    times: dict[str, list[float]] = {k: [] for k in ways}
    with torch.inference_mode():
        for k, f in ways.items():
            f()
        for _ in range(rounds):
            for k, f in ways.items():
                began = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - began)
    rows = [f"| {k} | {64 / statistics.median(v):.1f} |" for k, v in times.items()]
    log("; ".join(f"{k}: {64 / statistics.median(v):.1f}/s" for k, v in times.items()))
    return ["### Why not bf16", "", f"MobileNetV2's frozen body on batches of 64 pictures, pictures per second (median of "
            f"{rounds} batches each, alternated; this CPU {'computes' if cpu_has_native_bf16() else 'does not compute'}"
            " bf16 natively):", "", "| frozen pass | pictures/s |", "|---|---:|", *rows, ""]


def reused(run: str, soft_weight: float):
    """A student run made earlier (--alone, --distilled): its folder and teacher-vs-student table."""
    import json

    from engine.config import load

    folder = Path(run)
    config = load(folder / "config.toml")
    assert config.distill.soft_weight == soft_weight, f"{folder} was trained with soft weight {config.distill.soft_weight}"
    log(f"reusing {folder}")
    return folder, json.loads((folder / "distill.json").read_text(encoding="utf-8"))


def int8_of(folder: Path):
    """An int8 export made earlier (--int8), read back from its model.json as the export's result."""
    import json
    from types import SimpleNamespace

    c = json.loads((folder / "model.json").read_text(encoding="utf-8"))["checks"]["onnx-int8"]
    log(f"reusing {folder}")
    return SimpleNamespace(accuracy_fp32=c["accuracy_fp32"], accuracy_int8=c["accuracy_int8"],
                           latency_ms_fp32=c["latency_ms_fp32"], latency_ms_int8=c["latency_ms_int8"],
                           bytes_fp32=c["bytes_fp32"], bytes_int8=c["bytes_int8"], sentence=c.get("note", ""))


ARMS = {  # name: (soft weight, consistent teaching, feature weight, how the doc names it)
    "alone": (0.0, False, 0.0, "labels alone (soft weight 0, feature weight 0)"),
    "distilled": (0.7, True, DEFAULT_FEATURE_WEIGHT, "distilled: soft targets and features, the teacher's head "
                  "reused (the defaults)"),
    "own-head": (0.7, True, DEFAULT_FEATURE_WEIGHT, "distilled: soft targets and features, the student's own new "
                 "head"),
    "soft": (0.7, True, 0.0, "distilled, soft targets only (feature weight 0)"),
    "fixed": (0.7, False, 0.0, "distilled, soft targets only, the teacher's answers computed once"),
}


SHORT = {"alone": "labels alone", "distilled": "features, teacher's head", "own-head": "features, own head",
         "soft": "soft targets only",
         "fixed": "answers computed once"}


def run_arm(teacher: Path, out: Path, student: str, weights: str, epochs: int, arm: str, seed: int) -> dict:
    """One student run of one arm and seed; its figures (accuracy per epoch, best, time, the table)."""
    import json

    import engine.train.distillation as distillation

    soft_weight, consistent, feature_weight, _ = ARMS[arm]
    distillation.CONSISTENT = consistent  # the fixed-answers arm: the ablation of consistent teaching
    distillation.REUSE_HEAD = arm != "own-head"  # the ablation of the reused teacher head
    began = time.monotonic()
    try:
        folder, table = train_student(teacher, out, student, epochs, soft_weight, weights, seed, latency_rounds=10,
                                      feature_weight=feature_weight)
    finally:
        distillation.CONSISTENT = distillation.REUSE_HEAD = True
    curve = [json.loads(line) for line in (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line]
    return {"arm": arm, "seed": seed, "epochs": epochs, "run": str(folder), "seconds": time.monotonic() - began,
            "val_acc": [c["val_acc"] for c in curve], "epoch_seconds": [c["seconds"] for c in curve],
            "accuracy": table["student"]["accuracy"], "table": table}


def distill_section(args, results: list[dict]) -> list[str]:
    """Section 1 from the runs in ``results``: mean and spread across seeds per epoch budget and arm."""
    import statistics as st

    from engine.edge.distill import table_lines

    budgets = sorted({r["epochs"] for r in results})
    groups = {(e, arm): sorted((r for r in results if r["epochs"] == e and r["arm"] == arm), key=lambda r: r["seed"])
              for e in budgets for arm in ARMS}
    groups = {k: v for k, v in groups.items() if v}

    def ms(values):
        values = [100 * v for v in values]
        mean = st.mean(values)
        spread = st.stdev(values) if len(values) > 1 else 0.0
        return mean, f"{mean:.1f} ± {spread:.1f} %" if len(values) > 1 else f"{mean:.1f} %"

    first = next(iter(groups.values()))[0]["table"]
    t = first["teacher"]
    size = lambda n: f"{n / 2**20:.1f} MB"  # noqa: E731
    seeds = sorted({r["seed"] for r in results})
    lines = [f"## 1. Distillation (`python main.py distill TEACHER --student {args.student} --weights SLICED_FILE`)",
             "",
             f"Measured by `bench/bench_edge.py --only distill` on {time.strftime('%Y-%m-%d')} (2 shared CPU cores: "
             "other people's training and tests ran at the same time, a load average of 3 to 8 on 2 cores; the "
             "accuracies do not depend on it, the minutes do).", "",
             "- Teacher: torchvision MobileNetV2 with the shared ImageNet weights, feature extraction, 3 epochs on "
             f"ants-vs-bees (245 training, {first['pictures']} validation pictures; one validation picture is "
             f"{100 / first['pictures']:.2f} points).",
             f"- Student: `{args.student}` (MobileNetV2 at half the width) starting from weights cut out of the "
             "shared ImageNet MobileNetV2 (the first channels of every layer, `sliced_student` in the benchmark): no "
             "pretrained weights for a smaller model are on this machine. Before the first step each run measures "
             "the student's BatchNorm statistics again on the training pictures (the sliced ones were measured at "
             "full width; the largest running mean moved by about 2); its log says so. Every layer trains, with the "
             f"same settings, epochs and seeds ({', '.join(map(str, seeds))}) for every arm; the only differences are "
             "the soft weight (0: the loss is exactly the cross-entropy; 0.7 at temperature 4, the defaults), the "
             f"feature weight (0, or {DEFAULT_FEATURE_WEIGHT:g}, the default: the mean squared distance between the "
             "1,280 features the student's head reads and the teacher's, on the same augmented pictures, relative to "
             "the teacher's), whether the student's head starts as a copy of the teacher's (the default when both "
             "read as many features) and where the teacher's answers come from (consistent teaching: on each step's "
             "own augmented pictures, the default; or computed once on the centred pictures). No unlabelled pool (it "
             "would give the distilled students more pictures per epoch). Each run used one CPU thread, two runs at a "
             "time (except the student's own new head: one run alone with two threads).", "",
             "| epochs | student | seeds | validation accuracy (mean ± spread) | per seed | last epoch's accuracy "
             "(mean ± spread) | minutes per run |",
             "|---:|---|---:|---:|---|---:|---:|"]
    summary = {}
    for (e, arm), rows in groups.items():
        mean, text = ms([r["accuracy"] for r in rows])
        summary[(e, arm)] = mean
        finals = ", ".join(f"{100 * r['accuracy']:.1f}" for r in rows)
        minutes = st.mean(r["seconds"] for r in rows) / 60
        last = ms([r["val_acc"][-1] for r in rows])[1]
        lines.append(f"| {e} | {ARMS[arm][3]} | {len(rows)} | {text} | {finals} | {last} | {minutes:.1f} |")
    lines += ["", f"The teacher: {100 * t['accuracy']:.1f} % on the same pictures. 'Validation accuracy' is the run's "
              "kept model (its best epoch, as the app keeps it) measured again by the teacher-vs-student table: choosing the "
              "best of noisy epochs on the same validation pictures flatters every arm alike; the last epoch's "
              "accuracy does not choose. The spread is the standard deviation across seeds.", ""]
    for e in budgets:
        if (e, "alone") in groups and (e, "distilled") in groups:
            pairs = [100 * (d["accuracy"] - a["accuracy"]) for a in groups[(e, "alone")]
                     for d in groups[(e, "distilled")] if a["seed"] == d["seed"]]
            gain = summary[(e, "distilled")] - summary[(e, "alone")]
            lines.append(f"- {e} epochs, distilled against labels alone: **{gain:+.1f} points** on average "
                         f"(per seed: {', '.join(f'{g:+.1f}' for g in pairs)}; aim: at least "
                         f"+{AIMS['distill_points']:.0f}: **{'met' if gain >= AIMS['distill_points'] else 'not met'}**)"
                         ".")
        if (e, "fixed") in groups and (e, "distilled") in groups:
            lines.append(f"- {e} epochs, consistent teaching against the answers computed once: "
                         f"{summary[(e, 'distilled')] - summary[(e, 'fixed')]:+.1f} points; the answers computed "
                         f"once against labels alone: {summary[(e, 'fixed')] - summary.get((e, 'alone'), 0):+.1f} "
                         "points.")
    lines += ["", WHY, ""]
    big = max(e for e, arm in groups)
    shown = groups.get((big, "distilled")) or next(iter(groups.values()))
    table = shown[0]["table"]
    s, t = table["student"], table["teacher"]  # both measured together, alternated
    lines += [f"- The distilled student against the teacher: {100 * (s['accuracy'] - t['accuracy']):+.1f} points "
              f"({big} epochs, seed {shown[0]['seed']}), {t['parameters'] / s['parameters']:.1f}x fewer parameters "
              f"({s['parameters']:,} against {t['parameters']:,}), weight file {size(s['file_bytes'])} against "
              f"{size(t['file_bytes'])}, {t['latency_ms'] / s['latency_ms']:.1f}x the speed per picture (PyTorch on "
              "the CPU, one picture at a time, alternated, median of 10 passes each, on the shared machine).", "",
              "Validation accuracy epoch by epoch:", "", "```"]
    for (e, arm), rows in groups.items():
        for r in rows:
            lines.append(f"{e:2} epochs {arm:9} seed {r['seed']}: " + " ".join(f"{100 * v:.0f}" for v in r["val_acc"]))
    per_epoch = {}
    for (e, arm), rows in groups.items():
        per_epoch.setdefault(arm, []).extend(x for r in rows for x in r["epoch_seconds"])
    lines += ["```", "", f"The table as `distill` prints it (the distilled student, {big} epochs, seed "
              f"{shown[0]['seed']}):", "", "```", *table_lines(table), "```", "", "### Why an epoch took minutes", "",
              PROFILE.format(epochs=", ".join(f"{SHORT[a]} {st.median(v):.0f} s "
                                              f"(from {min(v):.0f} to {max(v):.0f} s)"
                                              for a, v in per_epoch.items())), ""]
    return lines


# The teacher's answers on the training pictures (engine.train.distillation.teacher_log_probs), measured separately.
WHY = """Why distillation helps so little here, in figures. The teacher classifies all 245 training pictures
correctly (100 %), and with two classes its answer is one number per picture: the probability it gives the right class
averages 0.925 at temperature 1 and 0.678 at the temperature 4 of the soft term. On these pictures the soft targets
are the labels, softened -- what label smoothing (0.1, on in every arm) already does. This pass added what the teacher
knows beyond its answer: its features, the 1,280 numbers its head reads for each picture, matched on the student's own
augmented crops (FitNets' hints, Romero et al. 2015), with the student's head starting as a copy of the teacher's
(Chen et al., 2022). Over 4 seeds at 20 epochs that moved the kept model by +1.5 points on average and the last epoch
by +0.8 -- per seed from -1.3 to +6.5, within the seeds' spread -- and at 40 epochs (seed 0) by +0.0 and +3.9: the
distilled curves end higher and steadier than the labels-alone ones, but the best epochs, which the app keeps, are
as high in both. The student's limit is its start and its pictures: weights cut from the wider network lose half of
every layer's inputs, and 245 pictures seen 20 or 40 times are too few examples of what the full network computes
for the half-width one to learn it; the gains reported for function matching at small data (Beyer et al., 2022) come
from hundreds to thousands of epochs with strong augmentation (mixup), on problems with many classes. The differences
swing by several points from seed to seed because a run keeps its best epoch on these same 153 pictures (one picture
is 0.65 points). Runs are repeatable for a given number of CPU threads, not across them: the labels-alone student of
seed 0 reached 77.8 % with two threads in an earlier invocation (its first nine epochs came out the same, to the
picture, when run again with two threads today, stopped there) and 75.2 % with one. What would most likely move this comparison: a student with real
pretrained weights (timm's ImageNet weights for mobilenetv2_050 exist, but not on this machine, which has no
internet), or more pictures -- the unlabelled pool, which only distillation can use (an unequal budget by design, so
left out of this comparison)."""


# Measured on 2026-12-07 with /tmp profiling scripts (cProfile of one run; the training step alone, alternated): the
# figures are not re-measured by this benchmark, only the epoch times of its own runs ({epochs}).
PROFILE = """One distilled run of 2 epochs on the 245 training pictures, profiled (cProfile) while the machine was lightly
shared (load average about 3 on 2 cores): 58 s in all. The teacher's answers on all pictures: 3.6 s, once (ONNX
Runtime). Decoding: none (the picture cache held 393 of the 398 pictures after the first run). The checkpoint:
negligible. Validation and the confidence calibration: about 10 s. The 15 training steps of an epoch: 30 s in the
first epoch and 12.6 s in the second, about 20 pictures/s: the
student's own forward and backward passes (BatchNorm, convolutions and ReLU6 in bf16), nothing of the teacher's. The
same training step alone in a process: 38 pictures/s in fp32 and 46 in bf16 with 2 threads, about 6 s of steps per
epoch. What made epochs take minutes is the shared machine, not a slow part of the distillation: with other people's
training on the same 2 cores (load average 3.5), the same step, measured alternately, ran 7.2 pictures/s with 2
threads in fp32 (single steps from 1.0 to 5.5 s) against 13.5 with 1 thread, and 17.2 against 24.0 in bf16: two
threads that must meet after every layer wait for each other whenever the scheduler takes one of them away. The
earlier measurement's 330 to 345 s per epoch (0.7 pictures/s) came from such a load. The runs above, at a load
average of 3 to 8.5, took per epoch (median): {epochs} (the consistent teacher adds one teacher pass per step).
The fastest epochs, when the other work paused, took about 3.3 s (training and validation): that is this student's
speed on these 2 cores. Choosing fewer threads when the cores are busy would help on a shared computer (the training
runtime's choice, left to it)."""


def only_distill(args) -> int:
    """Section 1 alone, over seeds and arms, each run saved in --results as it ends (a later call with the same
    file skips what is done), then section 1 of docs/edge.md replaced (sections 2 and 3 are kept)."""
    import json

    from engine.files import atomic_write_json, atomic_write_text

    results_file = Path(args.results)
    results = json.loads(results_file.read_text(encoding="utf-8")) if results_file.is_file() else []
    work = results_file.parent / "runs"
    teacher = Path(args.teacher) if args.teacher else train_teacher(work, args.epochs, 0)
    weights = str(sliced_student(results_file.parent / "weights"))
    for seed in args.seeds:
        for arm in args.arms:
            if any(r["arm"] == arm and r["seed"] == seed and r["epochs"] == args.student_epochs for r in results):
                continue
            log(f"{arm}, seed {seed}, {args.student_epochs} epochs ...")
            r = run_arm(teacher, work, args.student, weights, args.student_epochs, arm, seed)
            log(f"{arm} seed {seed}: {100 * r['accuracy']:.1f} % (per epoch "
                f"{' '.join(f'{100 * v:.0f}' for v in r['val_acc'])}) in {r['seconds'] / 60:.1f} min")
            results.append(r)
            atomic_write_json(results_file, results)
    section = "\n".join(distill_section(args, results))
    print(section)
    if not args.no_write:
        text = OUT.read_text(encoding="utf-8")
        head, rest = text.split("## 1. Distillation", 1)
        tail = "## 2. int8 ONNX" + rest.split("## 2. int8 ONNX", 1)[1]
        atomic_write_text(OUT, head + section + "\n" + tail)
        log(f"wrote section 1 of {OUT}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="the teacher's epochs (default 3)")
    parser.add_argument("--student-epochs", type=int, default=3, help="each student's epochs (default 3)")
    parser.add_argument("--student", default=STUDENT, help=f"the student model (default {STUDENT})")
    parser.add_argument("--student-weights", default="sliced", help="the students' starting weights: sliced (cut "
                        f"from the shared ImageNet MobileNetV2, for {STUDENT}; default), none, or a weight file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print the table, do not write docs/edge.md")
    parser.add_argument("--only", choices=("frozen", "bf16", "distill"), help="frozen: only section 3 (the frozen pass "
                        "in int8), replacing it in docs/edge.md; bf16: only its bf16 sub-section, printed; distill: "
                        "only section 1, over --seeds and --arms, replacing it in docs/edge.md")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="distill: the seeds (default 0 1 2)")
    parser.add_argument("--arms", nargs="+", choices=tuple(ARMS), default=["alone", "distilled"],
                        help="distill: the students to train (default alone distilled; fixed: the answers computed "
                        "once)")
    parser.add_argument("--results", default=str(Path(tempfile.gettempdir()) / "bench-edge-distill" / "results.json"),
                        help="distill: where each run's figures are kept (a later call skips the runs in it)")
    parser.add_argument("--rounds", type=int, default=2, help="frozen pass: runs of each precision (default 2)")
    parser.add_argument("--baseline-tree", help="frozen pass: a folder with an earlier version's engine package "
                        "(git archive COMMIT engine | tar -x -C DIR), whose fp32 pass joins the alternation")
    parser.add_argument("--teacher", help="reuse this teacher run folder (made by an earlier run of this benchmark)")
    parser.add_argument("--alone", help="reuse this labels-alone student run (soft weight 0, with its distill.json)")
    parser.add_argument("--distilled", help="reuse this distilled student run (with its distill.json)")
    parser.add_argument("--int8", help="reuse this int8 export folder of the teacher (its model.json)")
    args = parser.parse_args(argv)
    if not DATA.is_dir() or not WEIGHTS.is_file():
        print(f"skipped: needs {DATA} and {WEIGHTS} (only on the project's own machines)")
        return 0
    if args.only == "bf16":
        print("\n".join(bf16_prefix(args.rounds)))
        return 0
    if args.only == "distill":
        return only_distill(args)
    if args.only == "frozen":
        baseline = Path(args.baseline_tree) if args.baseline_tree else None
        section = "\n".join(frozen_pass(args.epochs, args.rounds, baseline) + FROZEN_NOTES.splitlines() + [""]
                            + bf16_prefix(max(3, args.rounds)))
        print(section)
        if not args.no_write:
            from engine.files import atomic_write_text

            text = OUT.read_text(encoding="utf-8") if OUT.is_file() else "# To the edge\n\n"
            text = text.split("## 3. Feature extraction's cold frozen pass")[0].rstrip() + "\n\n" + section + "\n"
            atomic_write_text(OUT, text)
            log(f"wrote section 3 of {OUT}")
        return 0
    import torch

    from engine.edge.distill import table_lines
    from engine.results.export import export_run

    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    if args.teacher:
        teacher = Path(args.teacher)
        log(f"teacher: {teacher}")
    else:
        log(f"teacher: MobileNetV2, feature extraction, {args.epochs} epochs ...")
        teacher = train_teacher(work / "runs", args.epochs, args.seed)
    student_weights = (str(sliced_student(work / "weights")) if args.student_weights == "sliced" and
                       args.student == STUDENT else "none" if args.student_weights == "sliced" else args.student_weights)
    if args.alone:
        alone, alone_table = reused(args.alone, 0.0)
    else:
        log(f"student on the labels alone: {args.student}, {args.student_epochs} epochs ...")
        alone, alone_table = train_student(teacher, work / "runs", args.student, args.student_epochs, 0.0,
                                           student_weights, args.seed, feature_weight=0.0)
    if args.distilled:
        distilled, table = reused(args.distilled, 0.7)
    else:
        log("student distilled from the teacher ...")
        distilled, table = train_student(teacher, work / "runs", args.student, args.student_epochs, 0.7,
                                         student_weights, args.seed)
    if args.int8:
        int8 = {"teacher (MobileNetV2)": int8_of(Path(args.int8))}
    else:
        log("int8 export of the teacher ...")
        int8 = {"teacher (MobileNetV2)": export_run(teacher, "onnx-int8", work / "export-teacher")}
    minutes = (time.monotonic() - began) / 60

    t, s, a = table["teacher"], table["student"], alone_table["student"]
    gain = 100 * (s["accuracy"] - a["accuracy"])
    lines = ["# To the edge: distillation and int8 export, measured", "",
             f"Written by `bench/bench_edge.py` on {time.strftime('%Y-%m-%d')} ({platform.processor() or 'CPU'}, "
             f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, PyTorch {torch.__version__}); "
             + (f"{minutes:.0f} minutes" if not (args.teacher or args.alone or args.distilled or args.int8) else
                "the table assembled from runs made by earlier invocations (--teacher, --alone, --distilled, --int8)")
             + ". The machine was shared with other work while measuring: every timing "
             "alternates the two sides of its pair, so that the load slows both alike, and only the ratios of "
             "pairs measured together are compared. One seed (seed 0): the accuracy figures of the students move by "
             "a few points from seed to seed on 153 validation pictures (one picture is 0.65 points).", "",
             f"## 1. Distillation (`python main.py distill TEACHER --student {args.student} --weights "
             f"{'SLICED_FILE' if args.student_weights == 'sliced' else args.student_weights}`)",
             "",
             f"- Teacher: torchvision MobileNetV2 with the shared ImageNet weights, feature extraction, {args.epochs} "
             "epochs on ants-vs-bees (244 training, 153 validation pictures).",
             f"- Student: `{args.student}` (MobileNetV2 at half the width) starting from weights cut out of the "
             "shared ImageNet MobileNetV2 (the first channels of every layer, `sliced_student` in the benchmark; "
             "like DistilBERT's student, made from its teacher's family): no pretrained weights for a smaller model "
             "are on this machine, and random weights left both students at chance in a first attempt. No unlabelled "
             "pool: it would give the distilled student more pictures per epoch than the other, not the same budget. "
             f"Both students train every layer for {args.student_epochs} epochs with the same settings and seed "
             f"({args.seed}); the only difference is the soft "
             "weight: 0 (the labels alone: the loss is then exactly the cross-entropy) or 0.7 (temperature 4).", "",
             "| model | validation accuracy | parameters | weight file | CPU latency per picture |",
             "|---|---:|---:|---:|---:|"]
    size = lambda n: f"{n / 2**20:.1f} MB"  # noqa: E731
    for name, row in (("teacher (MobileNetV2, ImageNet weights)", t), ("student, labels alone", a),
                      ("student, distilled", s)):
        lines.append(f"| {name} | {100 * row['accuracy']:.1f} % | {row['parameters']:,} | "
                     f"{size(row['file_bytes'])} | {row['latency_ms']:.1f} ms |")
    lines += ["", f"Latency: {table['latency']}; the labels-alone student's latency comes from its own "
              "teacher-vs-student measurement.", "",
              f"- Distilled against labels alone: **{gain:+.1f} points** (aim: at least +{AIMS['distill_points']:.0f}: "
              f"{'met' if gain >= AIMS['distill_points'] else 'not met'}).",
              f"- Distilled student against the teacher: {100 * (s['accuracy'] - t['accuracy']):+.1f} points, "
              f"{t['parameters'] / s['parameters']:.1f}x fewer parameters, "
              f"{t['latency_ms'] / s['latency_ms']:.1f}x the speed per picture.", "",
              "The table as `distill` prints it:", "", "```", *table_lines(table), "```", "",
              "## 2. int8 ONNX against fp32 ONNX (`python main.py export RUN --format onnx-int8`)", "",
              "ONNX Runtime static quantisation (QDQ, int8 weights per channel, float biases that ONNX Runtime makes "
              "32-bit integers when it loads the file, uint8 activations calibrated (99.999th percentile) on 64 "
              "training pictures; the exporter's per-node notes removed), run by ONNX Runtime's CPU provider; the latency is one picture at a time, the "
              "median of 60 passes, the fp32 and int8 files alternated.", "",
              "| model | accuracy fp32 | accuracy int8 | difference | latency fp32 | latency int8 | speed-up | "
              "size fp32 | size int8 | size ratio |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    verdicts = []
    for role, r in int8.items():
        lines.append(f"| {role} | {100 * r.accuracy_fp32:.1f} % | {100 * r.accuracy_int8:.1f} % | "
                     f"{100 * (r.accuracy_int8 - r.accuracy_fp32):+.1f} points | {r.latency_ms_fp32:.2f} ms | "
                     f"{r.latency_ms_int8:.2f} ms | {r.latency_ms_fp32 / r.latency_ms_int8:.2f}x | "
                     f"{size(r.bytes_fp32)} | {size(r.bytes_int8)} | {r.bytes_int8 / r.bytes_fp32:.2f}x |")
        speed, ratio = r.latency_ms_fp32 / r.latency_ms_int8, r.bytes_int8 / r.bytes_fp32
        points = 100 * abs(r.accuracy_int8 - r.accuracy_fp32)
        verdicts.append(
            f"- {role}: latency {speed:.2f}x (aim at least {AIMS['int8_speedup']}x: "
            f"{'met' if speed >= AIMS['int8_speedup'] else 'not met'}), size {ratio:.2f}x (aim at most "
            f"{AIMS['int8_size']}x: {'met' if ratio <= AIMS['int8_size'] else 'not met'}), accuracy difference "
            f"{points:.1f} points (aim at most {AIMS['int8_points']:.0f}: "
            f"{'met' if points <= AIMS['int8_points'] else 'not met'})." + (f" {r.sentence}" if r.sentence else ""))
    lines += ["", *verdicts, "", USAGE]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        from engine.files import atomic_write_text

        marker = "## 3. Feature extraction's cold frozen pass"
        before = OUT.read_text(encoding="utf-8") if OUT.is_file() else ""
        if marker in before:  # section 3 (--only frozen) is kept
            text = text.rstrip() + "\n\n" + marker + before.split(marker, 1)[1]
        atomic_write_text(OUT, text)
        log(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
