"""The advisor's benchmark (issue 13), written to docs/advisor.md.

    python bench/bench_advisor.py [--only a,b,e] [--out docs/advisor.md] [--sample N]

Each item is one function ``item_<letter>(ctx) -> markdown``; an item added later (the LR finder, the head fit and
calibration) is one more function and one more entry in ITEMS. Data: the shared MobileNetV2 ImageNet weights on
ants-vs-bees (../shared, skipped when absent) and one generated dataset (shapes of random colours: the class is the
shape, never the colour).

(a) Spearman correlation between each stage's LogME and the validation accuracy of a linear probe (logistic
    regression, L-BFGS) trained on that stage's pooled features.
(b) Pretrained against random weights (the negative-transfer check) on both datasets.
(e) Wall time of ``advise`` on 2,000 pictures, one model, picture cache warm, on this computer.
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
SHARED = REPO.parent / "shared"
HYMENOPTERA = SHARED / "datasets" / "hymenoptera"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_in1k.safetensors"
MODEL = "torchvision:mobilenet_v2"

import numpy as np  # noqa: E402
import torch  # noqa: E402


# --- helpers -------------------------------------------------------------------------------------------------


def make_shapes(root: Path, per_class: int, seed: int = 0, size: int = 96) -> Path:
    """Circles, squares and triangles of random colours, sizes and places on random backgrounds."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", max(20, per_class // 5))):
        for shape in ("circle", "square", "triangle"):
            folder = root / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
                draw = ImageDraw.Draw(image)
                r = int(rng.integers(size // 6, size // 3))
                cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
                colour = tuple(int(v) for v in rng.integers(0, 256, 3))
                if shape == "circle":
                    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
                elif shape == "square":
                    draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
                else:
                    draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
                image.save(folder / f"{shape}_{i:04d}.png")
    return root


def spearman(a, b) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def linear_probe(train_x, train_y, val_x, val_y, classes: int, l2: float = 1e-3) -> float:
    """Validation accuracy of a multinomial logistic regression on standardised features, fitted with L-BFGS."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x = torch.tensor((train_x - mean) / std, dtype=torch.float64)
    v = torch.tensor((val_x - mean) / std, dtype=torch.float64)
    y = torch.tensor(train_y)
    w = torch.zeros(x.shape[1], classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((v @ w + b).argmax(1).numpy() == val_y).mean())


def datasets(ctx) -> list[tuple[str, Path, str]]:
    """(name, folder, weights) of each dataset of the benchmark."""
    found = []
    if HYMENOPTERA.is_dir() and WEIGHTS.is_file():
        found.append(("ants-vs-bees (hymenoptera)", HYMENOPTERA, str(WEIGHTS)))
    else:
        print("shared data or weights absent: ants-vs-bees skipped", file=sys.stderr)
    if WEIGHTS.is_file():
        found.append(("generated shapes (3 classes)", ctx["shapes"], str(WEIGHTS)))
    return found


def stage_features(weights: str, dataset, samples, ctx):
    from engine.advise.transfer import extract_features
    from engine.models.build import build_model
    from engine.models.layers import build_layer_tree

    torch.manual_seed(0)
    built = build_model(MODEL, weights, len(dataset.classes), allow_download=False)
    tree = build_layer_tree(built.model, built.head)
    return extract_features(built, tree, samples, device="cpu")


# --- items ---------------------------------------------------------------------------------------------------


def item_a(ctx) -> str:
    from engine.advise.logme import logme
    from engine.advise.transfer import stratified_sample
    from engine.data.scan import scan

    lines = ["## (a) Stage scores against linear-probe accuracy", "",
             "Each stage's pooled features: LogME on the training sample, and the validation accuracy of a logistic "
             "regression trained on the same features (L-BFGS, L2 1e-3). Spearman rank correlation over the stages.",
             ""]
    for name, folder, weights in datasets(ctx):
        dataset = scan(folder, verify=False)
        train = stratified_sample(dataset.split("train"), ctx["sample"])
        val = stratified_sample(dataset.split("val"), ctx["sample"])
        started = time.perf_counter()
        ftrain = stage_features(weights, dataset, train, ctx)
        fval = stage_features(weights, dataset, val, ctx)
        ytrain = np.array([s.label for s in train])
        yval = np.array([s.label for s in val])
        rows = []
        for stage, x in ftrain.stages.items():
            score = logme(x, ytrain, len(dataset.classes))
            acc = linear_probe(x, ytrain, fval.stages[stage], yval, len(dataset.classes))
            rows.append((stage, x.shape[1], score, acc))
        rho = spearman([r[2] for r in rows], [r[3] for r in rows])
        lines += [f"### {name}: {len(train)} training / {len(val)} validation pictures, {len(rows)} stages "
                  f"({time.perf_counter() - started:.0f} s)", "",
                  f"**Spearman correlation: {rho:.2f}**", "", "| stage | features | LogME | probe val acc |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {s} | {d} | {sc:.3f} | {acc:.3f} |" for s, d, sc, acc in rows]
        lines.append("")
        print(f"(a) {name}: Spearman {rho:.2f} over {len(rows)} stages", file=sys.stderr)
    return "\n".join(lines)


def item_b(ctx) -> str:
    from engine.advise.transfer import Candidate, advise
    from engine.data.scan import scan

    lines = ["## (b) Pretrained against random weights", "",
             "The negative-transfer check of `advise` (up to 500 pictures; the log Bayes factor is the LogME "
             "difference times the pictures; clearly better from log(100) = 4.6).", "",
             "| dataset | pretrained | random | log Bayes factor | clearly better | verdict |", "|---|---:|---:|---:|---|---|"]
    for name, folder, weights in datasets(ctx):
        dataset = scan(folder, verify=False)
        advice = advise(dataset, [Candidate(MODEL, weights)], sample=ctx["sample"], device="cpu")
        t = advice.transfer
        lines.append(f"| {name} | {t.pretrained_score:.3f} | {t.random_score:.3f} | {t.log_bayes_factor:.1f} | "
                     f"{'yes' if t.clearly_better else 'no'} | {t.sentence} |")
        print(f"(b) {name}: pretrained {t.pretrained_score:.3f} random {t.random_score:.3f}", file=sys.stderr)
    return "\n".join(lines + [""])


def item_e(ctx) -> str:
    """Wall time of ``advise`` on 2,000 pictures (``--e-sample`` of them scored), picture cache warm: the plain feature extraction (``fast=False``,
    as before issue #13's speed-up) and the fast one (BatchNorms folded, 8-bit pictures normalised by the batch)
    alternated in the same process, so that a busy machine slows both alike; the ratio is the figure to trust."""
    from engine.advise.transfer import Candidate, advise
    from engine.data.scan import scan

    if not WEIGHTS.is_file():
        return "## (e) Wall time\n\nSkipped: the shared MobileNetV2 weights are absent.\n"
    folder = ctx["big_shapes"]
    dataset = scan(folder, verify=False)
    candidate = [Candidate(MODEL, str(WEIGHTS))]

    def timed(**kwargs) -> tuple[float, object]:
        started = time.perf_counter()
        advice = advise(dataset, candidate, sample=ctx["e_sample"], device="cpu", **kwargs)
        seconds = time.perf_counter() - started
        print(f"(e) {kwargs}: {seconds:.1f} s", file=sys.stderr, flush=True)
        return seconds, advice

    cold, _ = timed(check=False)  # fills the picture cache
    plain, fast, plain_scores, fast_scores = [], [], None, None
    for _ in range(ctx["repeats"]):  # alternated: plain, fast, plain, fast ...
        seconds, advice = timed(check=False, fast=False)
        plain.append(seconds)
        plain_scores = [s.score for s in advice.stages]
        seconds, advice = timed(check=False, fast=True)
        fast.append(seconds)
        fast_scores = [s.score for s in advice.stages]
    with_check, advice = timed(check=True)
    load = os.getloadavg()[0]
    same = max(abs(a - b) for a, b in zip(plain_scores, fast_scores))
    ratio = np.mean(plain) / np.mean(fast)
    return "\n".join([
        f"## (e) Wall time of `advise` (one model, {advice.pictures:,} of 2,000 pictures scored)", "",
        f"MobileNetV2, {advice.pictures} pictures (generated, 96 x 96 PNG, resized to the model's 224 crop), "
        f"{len(advice.stages)} stages scored, CPU only ({ctx['machine']}); load average {load:.1f} at the end "
        "(the machine was shared with other people's work while measuring: compare the runs of this table with "
        "each other, not with an idle machine).", "",
        "Before: the plain feature extraction. After: BatchNorms folded into their convolutions and pictures "
        "decoded to 8-bit tensors, normalised a batch at a time (the stage scores differ by at most "
        f"{same:.1e}). Runs alternated (before, after, ...) in one process.", "",
        "| run | seconds |", "|---|---:|",
        f"| first (picture cache cold, after) | {cold:.1f} |",
        f"| picture cache warm, without the check, before | {' / '.join(f'{v:.1f}' for v in plain)} |",
        f"| **picture cache warm, without the check, after** | **{' / '.join(f'{v:.1f}' for v in fast)}** |",
        f"| before / after | {ratio:.2f}x |",
        f"| picture cache warm, with the pretrained-vs-random check ({advice.transfer.pictures} pictures, after) | "
        f"{with_check:.1f} |", ""])


ITEMS = {"a": item_a, "b": item_b, "e": item_e}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(ITEMS), help="comma-separated items to run (default: all)")
    parser.add_argument("--out", default=str(REPO / "docs" / "advisor.md"))
    parser.add_argument("--sample", type=int, default=600, help="pictures per split for (a) and (b)")
    parser.add_argument("--repeats", type=int, default=1, help="before/after pairs for (e)")
    parser.add_argument("--e-sample", type=int, default=2000, help="pictures (e) scores (of 2,000)")
    args = parser.parse_args()
    wanted = [i.strip() for i in args.only.split(",") if i.strip()]
    unknown = [i for i in wanted if i not in ITEMS]
    if unknown:
        parser.error(f"unknown item(s) {', '.join(unknown)}: choose from {', '.join(ITEMS)}")
    work = Path(tempfile.mkdtemp(prefix="bench-advisor-"))
    os.environ.setdefault("TRANSFER_STUDIO_CACHE", str(work / "cache"))
    ctx = {"sample": args.sample, "repeats": args.repeats, "e_sample": args.e_sample, "machine": f"{platform.processor() or platform.machine()}, "
           f"{len(os.sched_getaffinity(0))} cores, torch {torch.get_num_threads()} threads"}
    if {"a", "b"} & set(wanted):
        ctx["shapes"] = make_shapes(work / "shapes", per_class=200)
    if "e" in wanted:
        ctx["big_shapes"] = make_shapes(work / "shapes-2000", per_class=667, seed=1)
    parts = ["# The advisor: benchmark", "",
             f"`python bench/bench_advisor.py --only {','.join(wanted)}` on {ctx['machine']}; "
             f"{time.strftime('%Y-%m-%d')}. Model: {MODEL} with the shared ImageNet weights.", ""]
    from engine.files import atomic_write_text

    for key in wanted:  # the document is rewritten after each item: a run cut short keeps what it measured
        parts.append(ITEMS[key](ctx))
        atomic_write_text(args.out, "\n".join(parts))
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
