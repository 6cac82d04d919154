"""The advisor's benchmark, training items (issue 13 (c) and (d)): a section of docs/advisor.md.

    python bench/bench_advisor_training.py [--only c,d] [--out docs/advisor.md] [--seeds 3]

(c) The learning-rate finder's suggestion against the best of a 5-point sweep of learning rates (fine-tune-shallow,
    3 epochs; best = highest best-epoch validation accuracy, then lowest validation loss): within 3x?
(d) Feature extraction before and after items 4-5 (the head solved by L-BFGS on the stored outputs; temperature
    scaling): validation accuracy and expected calibration error, mean of ``--seeds`` seeds. The ECE after is measured
    on the validation pictures the temperature was fitted on (evaluate a test split for an unbiased figure).

Data: the shared MobileNetV2 ImageNet weights on ants-vs-bees (../shared; skipped when absent) and the generated shapes
of bench/bench_advisor.py. The section replaces the text between the markers below in ``--out`` (appended when absent),
so that bench/bench_advisor.py's items (a), (b), (e) stay as that script wrote them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_advisor import HYMENOPTERA, MODEL, WEIGHTS, make_shapes  # noqa: E402

BEGIN, END = "<!-- bench_advisor_training: begin -->", "<!-- bench_advisor_training: end -->"
SWEEP = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


def _datasets(ctx):
    found = []
    wanted = ctx.get("datasets")
    if HYMENOPTERA.is_dir() and WEIGHTS.is_file():
        found.append(("ants-vs-bees", HYMENOPTERA))
    if WEIGHTS.is_file():
        found.append(("generated shapes", ctx["shapes"]))
    return [f for f in found if not wanted or f[0] in wanted]


def _config(data: Path, strategy: str, epochs: int, lr: float, seed: int, out: Path, fit_head: bool = True):
    from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    return RunConfig(data=DataConfig(source=str(data)), model=ModelConfig(MODEL, str(WEIGHTS)), strategy=strategy,
                     epochs=epochs, lr=lr, train=TrainConfig(batch_size=32, workers=0, seed=seed, fit_head=fit_head),
                     out=str(out))


def _train(config):
    from engine.project import runs
    from engine.train.trainer import fit

    result = fit(config)
    if result.status != "completed":
        raise SystemExit(f"a benchmark run failed: {result.error}")
    records = runs.read_metrics(result.run_dir)
    best = max(records, key=lambda r: (r["val_acc"], -r["val_loss"]))
    return best, runs.read_summary(result.run_dir)


def item_c(ctx) -> str:
    from engine.advise.lr_finder import find_lr

    lines = ["### (c) The learning-rate finder against a 5-point sweep", "",
             "Fine-tune-shallow, 3 epochs, batch 32, AdamW; the sweep's best is the highest best-epoch validation "
             "accuracy (then the lowest validation loss).", "",
             "| data | finder's suggestion | finder time (s) | sweep: validation accuracy at " +
             ", ".join(f"{lr:g}" for lr in SWEEP) + " | best of sweep | ratio | within 3x |",
             "|---|---:|---:|---|---:|---:|---|"]
    for name, data in _datasets(ctx):
        began = time.monotonic()
        finding = find_lr(_config(data, "fine-tune-shallow", 3, 1e-3, 0, ctx["work"] / "c"))
        seconds = time.monotonic() - began
        print(f"(c) {name}: the finder suggests {finding.suggestion:.2g} ({seconds:.0f} s)", file=sys.stderr,
              flush=True)
        results = []
        for lr in SWEEP:
            best, _ = _train(_config(data, "fine-tune-shallow", 3, lr, 0, ctx["work"] / "c"))
            results.append((best["val_acc"], -best["val_loss"], lr))
            print(f"(c) {name}: lr {lr:g}: {best['val_acc']:.3f}, validation loss {best['val_loss']:.4f}",
                  file=sys.stderr, flush=True)
        top = max(results)[2]
        ratio = max(finding.suggestion, top) / min(finding.suggestion, top)
        lines.append(f"| {name} | {finding.suggestion:.2g} | {seconds:.0f} | "
                     + ", ".join(f"{a:.3f}" for a, _, _ in results)
                     + f" | {top:g} | {ratio:.1f}x | {'yes' if ratio <= 3 else 'no'} |")
    return "\n".join(lines + [""])


def item_d(ctx) -> str:
    import numpy as np

    seeds = ctx["seeds"]
    lines = ["### (d) Feature extraction before and after items 4-5", "",
             f"Feature extraction, 10 epochs at the default rate (0.001), batch 32, mean (and range) of {seeds} seeds. "
             "Before: the head trained by its epochs alone, the model's own softmax. After: the head solved first "
             "(L-BFGS, L2 chosen on validation), confidences divided by the fitted temperature. Accuracy: the best "
             "epoch's validation accuracy; ECE on the same validation pictures (15 bins).", "",
             "| data | accuracy before | accuracy after | ECE before | ECE after | temperature |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, data in _datasets(ctx):
        rows = {False: [], True: []}
        for seed in range(seeds):
            for fitted in (False, True):
                best, summary = _train(_config(data, "feature-extraction", 10, 1e-3, seed, ctx["work"] / "d",
                                               fit_head=fitted))
                cal = summary.get("calibration") or {}
                ece = cal.get("ece_after") if fitted else cal.get("ece_before")
                rows[fitted].append((best["val_acc"], ece, cal.get("temperature", 1.0)))
                print(f"(d) {name} seed {seed} {'after' if fitted else 'before'}: {best['val_acc']:.3f} ECE {ece}",
                      file=sys.stderr, flush=True)

        def stat(values):
            values = np.asarray(values, dtype=float)
            return f"{values.mean():.3f} ({values.min():.3f}-{values.max():.3f})"

        before, after = rows[False], rows[True]
        lines.append(f"| {name} | {stat([r[0] for r in before])} | {stat([r[0] for r in after])} | "
                     f"{stat([r[1] for r in before])} | {stat([r[1] for r in after])} | "
                     f"{np.mean([r[2] for r in after]):.2f} |")
    return "\n".join(lines + [""])


ITEMS = {"c": item_c, "d": item_d}


def write_section(path: Path, text: str) -> None:
    from engine.files import atomic_write_text

    old = path.read_text(encoding="utf-8") if path.is_file() else "# The advisor: benchmark\n"
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + block + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_text(path, new)


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(ITEMS))
    parser.add_argument("--out", default=str(REPO / "docs" / "advisor.md"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", default="", help="comma-separated: ants-vs-bees, generated shapes (default both)")
    parser.add_argument("--shapes", type=int, default=60, help="generated training pictures per class")
    args = parser.parse_args()
    wanted = [i.strip() for i in args.only.split(",") if i.strip()]
    work = Path(tempfile.mkdtemp(prefix="bench-advisor-training-"))
    os.environ.setdefault("TRANSFER_STUDIO_CACHE", str(work / "cache"))
    ctx = {"work": work, "seeds": args.seeds, "datasets": [d.strip() for d in args.datasets.split(",") if d.strip()], "shapes": make_shapes(work / "shapes", per_class=args.shapes)}
    machine = (f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
               f"torch {torch.get_num_threads()} threads")
    parts = ["## Training items: the learning-rate finder, the head fit and calibration", "",
             f"`python bench/bench_advisor_training.py --only {','.join(wanted)} --seeds {args.seeds}` on {machine}; "
             f"{time.strftime('%Y-%m-%d')}. Model: {MODEL} with the shared ImageNet weights; generated shapes: "
             f"{args.shapes} training pictures per class.", ""]
    for key in wanted:
        parts.append(ITEMS[key](ctx))
    write_section(Path(args.out), "\n".join(parts))
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
