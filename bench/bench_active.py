"""Benchmark: does labelling the app's suggestions beat labelling pictures at random? And how fast is a retrain?

1. Simulated rounds (labels hidden, then revealed as the "user" answers) on two labelled datasets:
   - ants vs bees: the training pictures of ``../shared/datasets/hymenoptera`` are the pool (their labels hidden),
     its validation pictures measure each round;
   - a generated dataset with more classes: 9 classes (three patterns of engine.project.demo's recipe, each in three
     tints), 40 pool pictures and 20 validation pictures per class, 64 x 64 pixels.
   Each starts with a few labelled pictures per class (drawn at random by the seed) and adds a fixed number per round
   for 5 rounds, chosen (a) at random, (b) by the app's suggestions (``engine.active.ranking.select``, the same
   function the app and ``main.py suggest`` use: typical pictures during a cold start, then margin uncertainty x
   novelty within k-means groups). After each round the head is fitted as the app fits it (engine.train.headfit's
   L-BFGS over the app's L2 grid, the strength best on the validation pictures kept, label smoothing 0.1, raw
   features; the temperature fitted on the validation pictures) on the labelled pictures' features and measured on
   the validation pictures. The features of MobileNetV2 (``../shared/weights/mobilenet_v2_in1k.safetensors``) are
   computed ONCE per dataset and the rounds are simulated on them: that is what a feature-extraction retrain learns
   from, and it keeps the benchmark fast on a shared 2-core machine. Headline: mean of 3 seeds (issue #18's
   configuration); then, as extra information, a finer grain (start 1 per class, 4 or 9 more per round, 6 seeds).
   Aims: the suggestions are never below random, and reach random's final accuracy with at most 60 % of its labels.
2. A real retrain (``engine.active.retrain``, the window's *Retrain*): a feature-extraction run of MobileNetV2 on ants
   vs bees, then a retrain with 20 labelled pool pictures added; the retrain refits the head on the frozen layers'
   stored outputs (engine.active.refit), computing only the new pictures' ones. Measured: wall time of each, outputs
   read back and computed, and the wall time of each part of the retrain (RETRAIN_PARTS).

    python bench/bench_active.py [--seeds 3] [--first-seed 0] [--fine-seeds 6] [--rule suggested|lookahead]
                                 [--learner app|fixed] [--features FILE.npz] [--skip-retrain] [--out docs/active.md]

``--skip-retrain`` keeps the retrain section of the doc already at --out (measured by an earlier full run).

Skips cleanly (exit 0, a message) without ../shared.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SHARED = ROOT.parent / "shared"
HYMENOPTERA = SHARED / "datasets" / "hymenoptera"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_in1k.safetensors"
MODEL = "torchvision:mobilenet_v2"
ROUNDS = 5
L2 = 1e-3  # the "fixed" learner's (earlier passes)
SMOOTHING = 0.1  # engine.config.TrainConfig.label_smoothing's default
TINTS = {"red": (220, 60, 40), "green": (40, 170, 70), "blue": (40, 80, 220)}


def features_of(paths: list[str]) -> np.ndarray:
    from engine.advise.features import extract_features

    found = extract_features(paths, MODEL, str(WEIGHTS))
    if not found.ok.all():
        raise SystemExit(f"{(~found.ok).sum()} pictures could not be read")
    return found.vectors


def folder_dataset(root: Path) -> tuple[list[str], np.ndarray, list[str]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    paths, labels = [], []
    for i, name in enumerate(classes):
        for p in sorted((root / name).iterdir()):
            paths.append(str(p))
            labels.append(i)
    return paths, np.array(labels), classes


def make_generated(folder: Path, per_class: int, seed: int) -> Path:
    """Nine classes: three patterns (engine.project.demo's drawing) x three tints laid over them."""
    from PIL import Image

    from engine.project.demo import DEMO_CLASSES, draw_pattern

    rng = random.Random(f"bench-active/{seed}")
    for kind in DEMO_CLASSES:
        for tint, rgb in TINTS.items():
            target = folder / f"{kind}-{tint}"
            target.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                image = draw_pattern(kind, 64, rng)
                image = Image.blend(image, Image.new("RGB", image.size, rgb), 0.45)
                image.save(target / f"{i:03d}.png")
    return folder


class Head:
    """A fitted linear head: logits, the temperature calibrating its probabilities, the L2 it was fitted with."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, temperature: float, l2: float):
        self.weight, self.bias, self.temperature, self.l2 = weight, bias, temperature, l2

    def logits(self, x: np.ndarray) -> np.ndarray:
        return x.astype(np.float64) @ self.weight.T + self.bias

    def probs(self, x: np.ndarray) -> np.ndarray:
        return softmax(self.logits(x) / self.temperature)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def fit_head(x: np.ndarray, y: np.ndarray, classes: int, val_x: np.ndarray, val_y: np.ndarray,
             learner: str = "app") -> Head:
    """The head a feature-extraction retrain learns from the labelled pictures' features.

    "app" (default): as the app fits it (engine.train.headfit.fit_head, called as is: multinomial logistic
    regression on the raw pooled features, the run's default label smoothing, L-BFGS for each L2 strength of the
    app's grid, the strength best on the validation pictures kept), then the temperature fitted on the validation
    pictures' logits (engine.train.calibrate.fit_temperature), as every run's confidences are calibrated: the
    suggestions are chosen from these calibrated probabilities, as in the app. Not simulated: the phase's epochs of
    AdamW on augmented views that continue from the solution.
    "fixed": the earlier passes' learner (standardised features, fixed L2 = 1e-3, no smoothing, no temperature)."""
    from engine.train.calibrate import MIN_PICTURES, fit_temperature
    from engine.train.headfit import fit_head as app_fit_head

    head = torch.nn.Linear(x.shape[1], classes)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    if learner == "app":
        fitted = app_fit_head(head, xt, yt, torch.from_numpy(val_x), torch.from_numpy(val_y), SMOOTHING)
        weight, bias = head.weight.detach().double().numpy(), head.bias.detach().double().numpy()
        logits = torch.from_numpy(val_x.astype(np.float64) @ weight.T + bias)
        temperature = fit_temperature(logits, torch.from_numpy(val_y)) if len(val_y) >= MIN_PICTURES else 1.0
        return Head(weight, bias, temperature, fitted.l2)
    opt = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=200, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(xt), yt) + L2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return Head(head.weight.detach().double().numpy(), head.bias.detach().double().numpy(), 1.0, 2 * L2)


def lookahead_delta(head: Head, labelled_x, candidates_x, pool_x, smoothing: float) -> np.ndarray:
    """Look-ahead for a linear softmax head: the change of every pool picture's logits, (candidates, label, pool,
    classes), if a candidate were labelled with each label and the head refitted -- approximated by one Newton step
    from the current solution on the objective with the candidate added (its own curvature included), computed in
    kernel form (the step lies in the span of the labelled pictures' and the candidate's features, so only Gram
    matrices and an (n x classes)-square system are needed; the bias is a constant feature, penalised alike, a
    small departure from the app's unpenalised bias). Hand-written: no library offers expected error
    reduction for a softmax head. Checked against refitting from scratch
    (generated set, 36 labelled, three candidates): correlation 0.77-0.97 with the true change."""
    def one(a):
        return np.hstack([a.astype(np.float64), np.ones((len(a), 1))])

    xl, xc, xp = one(labelled_x), one(candidates_x), one(pool_x)
    n, c, k = len(xl), len(xc), head.weight.shape[0]
    lam = (n + 1) * head.l2  # the objective summed over pictures: the L2 term's curvature (Head.l2: of l2/2 |W|^2)
    eye = np.eye(k)

    def hess(p):
        return np.einsum("ia,ab->iab", p, eye) - np.einsum("ia,ib->iab", p, p)

    pl, pc = softmax(head.logits(labelled_x)), softmax(head.logits(candidates_x))
    a, ac = hess(pl), hess(pc)
    m = lam * np.eye(n * k) + np.einsum("iab,ij->iajb", a, xl @ xl.T).reshape(n * k, n * k)
    kcl = xc @ xl.T
    b = np.einsum("iab,ci->iacb", a, kcl).reshape(n * k, c * k)
    mb = np.linalg.solve(m, b).reshape(n, k, c, k)
    s = np.einsum("ci,iacb->cab", kcl, mb)
    target = (1 - smoothing) * eye + smoothing / k
    u = pc[:, None, :] - target[None]
    system = lam * eye[None] + np.einsum("cab,cbd->cad", ac, (xc * xc).sum(1)[:, None, None] * eye[None] - s)
    gc = np.linalg.solve(np.repeat(system[:, None], k, 1), u[..., None])[..., 0]
    gl = -np.einsum("iacb,cyb->cyia", mb, gc)
    return -(np.einsum("cyia,ij->cyja", gl, xl @ xp.T) + np.einsum("cya,cj->cyja", gc, xc @ xp.T))


def select_lookahead(head: Head, pool_x, labelled_x, n: int, seed: int, smoothing: float,
                     per_group: int = 5) -> list[int]:
    """Expected error reduction (Roy & McCallum 2001) within diversity: the pool split into n k-means groups (as
    engine.active.ranking.select does); in each, its per_group most uncertain pictures are candidates; each
    candidate's expected error over the whole pool after labelling it (each label weighted by the current calibrated
    probability; the refit by lookahead_delta) is estimated, and each group gives its candidate of largest expected
    error reduction. Tried in docs/active.md's later-pass table (bench option --rule lookahead)."""
    from engine.active.ranking import _kmeans, _unit, uncertainty

    logits = head.logits(pool_x)
    probs = softmax(logits / head.temperature)
    u = uncertainty(probs)
    group, _ = _kmeans(_unit(pool_x), n, np.random.default_rng(seed))
    candidates = []
    for g in range(n):
        members = np.flatnonzero(group == g)
        candidates += [int(j) for j in members[np.argsort(-u[members], kind="stable")][:per_group]]
    candidates = sorted(candidates)
    delta = lookahead_delta(head, labelled_x, pool_x[candidates], pool_x, smoothing)
    after = softmax((logits[None, None] + delta) / head.temperature)
    expected = (probs[candidates] * (1 - after.max(-1)).sum(-1)).sum(1)
    gain = np.full(len(pool_x), -np.inf)
    gain[candidates] = (1 - probs.max(-1)).sum() - expected
    chosen = [int(mem[np.argmax(gain[mem])]) for g in range(n)
              if len(mem := np.flatnonzero((group == g) & np.isfinite(gain)))]
    chosen += [int(j) for j in np.argsort(-gain) if int(j) not in chosen and np.isfinite(gain[j])][:n - len(chosen)]
    return chosen[:n]


def simulate(pool_x, pool_y, val_x, val_y, classes: int, start_per_class: int, per_round: int, seed: int,
             how: str, learner: str = "app") -> list[tuple[int, float]]:
    """(labelled pictures, validation accuracy) after the start and after each of ROUNDS rounds. ``how``: "random",
    "suggested" (engine.active.ranking.select, as the app calls it) or "lookahead" (select_lookahead after the cold
    start, the app's rule during it)."""
    from engine.active.ranking import select

    rng = np.random.default_rng(seed)
    labelled = []
    for c in range(classes):  # the same start for both ways of choosing (drawn from the seed only)
        labelled += list(rng.choice(np.flatnonzero(pool_y == c), start_per_class, replace=False))
    pick = np.random.default_rng(seed + 1000)
    curve = []
    for r in range(ROUNDS + 1):
        head = fit_head(pool_x[labelled], pool_y[labelled], classes, val_x, val_y, learner)
        acc = float((head.logits(val_x).argmax(1) == val_y).mean())
        curve.append((len(labelled), acc))
        if r == ROUNDS:
            break
        rest = np.setdiff1d(np.arange(len(pool_y)), labelled)
        if how == "random":
            new = list(pick.choice(rest, per_round, replace=False))
        elif how == "lookahead" and len(labelled) >= per_round:
            new = [int(rest[j]) for j in select_lookahead(head, pool_x[rest], pool_x[labelled], per_round, seed,
                                                          SMOOTHING if learner == "app" else 0.0)]
        else:
            chosen = select(head.probs(pool_x[rest]), pool_x[rest], per_round, anchors=pool_x[labelled], seed=seed)
            new = [int(rest[row]) for row, _ in chosen]
        labelled += new
    return curve


def standardise(pool: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = pool.mean(0), pool.std(0) + 1e-6  # from the pool's pictures only (no labels involved)
    return ((pool - mean) / std).astype(np.float32), ((val - mean) / std).astype(np.float32)


def run_dataset(name, pool_x, pool_y, val_x, val_y, classes, start, per_round, seeds: list[int],
                rule: str = "suggested", learner: str = "app") -> dict:
    if learner == "fixed":
        pool_x, val_x = standardise(pool_x, val_x)
    curves = {}
    for how in ("random", rule):
        runs = [simulate(pool_x, pool_y, val_x, val_y, len(classes), start, per_round, s, how, learner)
                for s in seeds]
        counts = [n for n, _ in runs[0]]
        curves[how] = (counts, np.mean([[a for _, a in run] for run in runs], axis=0),
                       np.std([[a for _, a in run] for run in runs], axis=0))
        print(f"{name} {how}: " + ", ".join(f"{n}: {a:.3f}" for n, a in zip(counts, curves[how][1])), flush=True)
    curves["suggested"] = curves[rule]
    counts, rand, _ = curves["random"]
    _, sugg, _ = curves["suggested"]
    never_below = bool(np.all(sugg[1:] >= rand[1:] - 1e-9))
    target = rand[-1]
    reach = next((n for n, a in zip(counts, sugg) if a >= target - 1e-9), None)
    share = reach / counts[-1] if reach is not None else None
    return {"name": name, "classes": len(classes), "pool": len(pool_y), "val": len(val_y), "start": start,
            "per_round": per_round, "curves": curves, "never_below": never_below, "reach": reach, "share": share,
            "seeds": seeds}


def real_retrain(work: Path) -> dict:
    """A feature-extraction run on ants vs bees, then a retrain with 20 labelled pool pictures (wall times)."""
    from engine.active import read_labels, retrain
    from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from engine.train.trainer import fit

    data = work / "ants-bees"
    shutil.copytree(HYMENOPTERA / "train", data / "train")
    shutil.copytree(HYMENOPTERA / "val", data / "val")
    pool = work / "pool"
    rng = random.Random(0)
    moved = []
    for name in ("ants", "bees"):  # 40 training pictures become the unlabelled pool
        for p in rng.sample(sorted((data / "train" / name).iterdir()), 20):
            target = pool / f"{name}-{p.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(p, target)
            moved.append((str(target), name))
    config = RunConfig(data=DataConfig(source=str(data)), model=ModelConfig(MODEL, str(WEIGHTS)),
                       strategy="feature-extraction", epochs=3,
                       train=TrainConfig(workers=0, seed=0), out=str(work / "runs"))
    t0 = time.perf_counter()
    first = fit(config)
    t_first = time.perf_counter() - t0
    labels = read_labels(work / "labels.csv")
    for path, name in moved[:10] + moved[20:30]:  # the user labels 10 of each
        labels.set(path, name)
    labels.save()
    t0 = time.perf_counter()
    with timed_parts() as parts:
        done = retrain(config, labels, start_run=first.run_dir)
    t_retrain = time.perf_counter() - t0
    result, summary = done.result, done.summary
    refit = done.refit.to_dict() if done.refit is not None else None
    return {"first_s": t_first, "retrain_s": t_retrain, "first_acc": first.best_val_acc,
            "retrain_acc": result.best_val_acc, "joined": summary.joined, "status": result.status, "refit": refit,
            "parts": dict(parts)}


# The parts of a retrain whose wall time is measured (owner module, attribute, what it is in the doc's words); the
# frozen layers' fast version is built inside "frozen outputs", and is also listed on its own.
RETRAIN_PARTS = (
    ("engine.active.join", "joined_config", "the list of training pictures (scan of the data + CSV)"),
    ("engine.train.trainer:Trainer", "_model_and_folder", "building the model (weights read) + the run folder written"),
    ("engine.train.trainer:Trainer", "_session", "the model to its device, the loaders, the picture cache checked"),
    ("engine.train.prefix", "_plan", "the model split into frozen layers and head, verified on a probe batch"),
    ("engine.active.refit:_HeadRefit", "_outputs", "frozen outputs: read back, the new ones computed and stored"),
    ("engine.train.fastpath", "fast_prefix", "... of which the frozen layers' fast version built (ONNX export)"),
    ("engine.train.headfit", "fit_head", "the head solved by L-BFGS (4 L2 strengths)"),
    ("engine.train.loop", "run_phase", "the phase's 3 epochs on the outputs (checkpoint, best weights, metrics)"),
    ("engine.active.refit:_HeadRefit", "_calibrate", "the temperature fitted on the validation outputs"),
)


class timed_parts:
    """Within the block, the wall time of each of RETRAIN_PARTS (functions wrapped, unwrapped on leaving)."""

    def __enter__(self) -> dict:
        import functools
        import importlib

        self.times: dict[str, float] = {}
        self.undo = []
        for where, name, label in RETRAIN_PARTS:
            module_name, _, cls = where.partition(":")
            owner = importlib.import_module(module_name)
            owner = getattr(owner, cls) if cls else owner
            real = getattr(owner, name)

            def wrapper(*args, _real=real, _label=label, **kwargs):
                began = time.perf_counter()
                try:
                    return _real(*args, **kwargs)
                finally:
                    self.times[_label] = self.times.get(_label, 0.0) + time.perf_counter() - began

            setattr(owner, name, functools.wraps(real)(wrapper))
            self.undo.append((owner, name, real))
        return self.times

    def __exit__(self, *exc):
        for owner, name, real in reversed(self.undo):
            setattr(owner, name, real)
        return False


RETRAIN_HEADING = "## Retrain in seconds"
TOTAL_LINE = "Total benchmark time"


def kept_retrain_section(out: Path) -> list[str] | None:
    """The retrain section of the doc already written (--skip-retrain keeps it as it is), or None."""
    try:
        text = out.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    if RETRAIN_HEADING not in text:
        return None
    begin = text.index(RETRAIN_HEADING)
    end = next((i for i in range(begin, len(text)) if text[i].startswith(TOTAL_LINE)), len(text))
    return text[begin:end]


RULE_WORDS = {
    "suggested": "the app's suggestions (`engine.active.ranking.select`, the function behind *Suggest* and "
                 "`main.py suggest`, called here as is: during a cold start -- fewer labelled pictures than the round "
                 "adds, as in ants vs bees' first round -- the most typical picture of each of as many k-means groups "
                 "(TypiClust-like); then the pool split into as many k-means groups as pictures wanted, each giving "
                 "its picture of largest margin uncertainty x novelty, novelty being the distance to the nearest "
                 "labelled picture (Cluster-Margin-like))",
    "lookahead": "the look-ahead rule tried in this benchmark (`select_lookahead`: expected error reduction within "
                 "k-means groups; the app's rule during the cold start), NOT the app's rule",
}
LEARNER_WORDS = {
    "app": "After each round the head is fitted **as the app fits it** (`engine.train.headfit.fit_head`, called as "
           "is: multinomial logistic regression on the raw pooled features, label smoothing 0.1 -- the run's "
           "default --, L-BFGS for each L2 strength of the app's grid 0.1, 0.01, 0.001, 0.0001, the one best on the "
           "validation pictures kept, as the app keeps it), its confidences calibrated by a temperature fitted on "
           "the validation pictures (`engine.train.calibrate.fit_temperature`, as every run's are; the suggestions "
           "are chosen from these calibrated probabilities, as in the app), and it is measured on the validation "
           "pictures; the same for both ways of choosing. Not simulated: the few epochs of AdamW on augmented views "
           "that the app's phase runs after the solution (they start from it and keep the best epoch).",
    "fixed": "After each round a linear head (multinomial logistic regression, L-BFGS, fixed L2 = 1e-3 on "
             "standardised features: the earlier passes' learner, not the app's) is trained on the labelled "
             "pictures and measured on the validation pictures.",
}


def verdict_lines(r: dict, label: str) -> list[str]:
    counts, rand, rand_sd = r["curves"]["random"]
    _, sugg, sugg_sd = r["curves"]["suggested"]
    seeds = r["seeds"]
    lines = [f"{r['classes']} classes; pool {r['pool']} pictures (labels hidden), validation {r['val']}; start "
             f"{r['start']} per class, {r['per_round']} more per round; mean ± spread of seeds "
             f"{seeds[0]}-{seeds[-1]}.", "",
             f"| labelled pictures | random | {label} |", "|---:|---:|---:|"]
    for n, a, sa, b, sb in zip(counts, rand, rand_sd, sugg, sugg_sd):
        lines.append(f"| {n} | {a:.3f} ± {sa:.3f} | {b:.3f} ± {sb:.3f} |")
    reach = (f"{r['reach']} labels ({r['share']:.0%} of random's {counts[-1]})" if r["reach"] is not None
             else "not within the 5 rounds")
    below = [f"{n} labels ({b:.3f} against {a:.3f})" for n, a, b in zip(counts[1:], rand[1:], sugg[1:])
             if b < a - 1e-9]
    lines += ["",
              f"- Never below random (rounds 1-5): **{'met' if r['never_below'] else 'not met'}**"
              + (f" (below at {', '.join(below)})." if below else "."),
              f"- Random's final accuracy ({rand[-1]:.3f} with {counts[-1]} labels) reached with {reach}: "
              f"**{'met' if r['share'] is not None and r['share'] <= 0.6 else 'not met'}** (aim: at most 60 %).", ""]
    return lines


def command_options(args) -> str:
    """The options that change the figures, as typed (not --features or --out)."""
    parts = [f"--seeds {args.seeds}" if args.seeds != 3 else "",
             f"--first-seed {args.first_seed}" if args.first_seed else "",
             f"--fine-seeds {args.fine_seeds}" if args.fine_seeds != 6 else "",
             f"--rule {args.rule}" if args.rule != "suggested" else "",
             f"--learner {args.learner}" if args.learner != "app" else "",
             "--skip-retrain" if args.skip_retrain else ""]
    return "".join(f" {p}" for p in parts if p)


def write_doc(out: Path, results: list[dict], fine: list[dict], retrain_figures: dict | None,
              kept: list[str] | None, args, seconds: float, features_kept: bool = False) -> None:
    label = "suggestions" if args.rule == "suggested" else "look-ahead"
    lines = [
        "# Active learning: labelling the app's suggestions against labelling at random",
        "",
        f"Written by `python bench/bench_active.py{command_options(args)}` (the "
        "machine's 2 CPU cores were shared with other work while measuring).",
        "",
        "## What is measured",
        "",
        "Labels hidden, then revealed as a simulated user answers. Each dataset starts with a few labelled pictures "
        "per class (drawn by the seed, the same for both ways of choosing) and adds a fixed number per round for 5 "
        f"rounds, chosen (a) at random or (b) by {RULE_WORDS[args.rule]}. {LEARNER_WORDS[args.learner]} "
        "MobileNetV2's features (`../shared/weights/mobilenet_v2_in1k.safetensors`) are computed **once per "
        "dataset** and the rounds are simulated on them -- what a feature-extraction retrain learns from -- so the "
        "whole benchmark runs in minutes on a shared 2-core machine.",
        "",
        "Aims (from issue #18): the suggestions are never below random (rounds 1-5, on the mean), and reach random's "
        "final accuracy with at most 60 % of random's labels. The headline is the issue's configuration (start 2 per "
        "class, 10 or 18 more per round); the finer grain after it is extra information.",
        "",
    ]
    lines += ["## Verdict", ""]
    for title, group in (("Headline (the issue's configuration)", results), ("Finer grain (extra information)", fine)):
        for r in group:
            counts = r["curves"]["random"][0]
            share = f"{r['share']:.0%} of random's labels" if r["share"] is not None else "not within the 5 rounds"
            lines.append(f"- {title}, {r['name']}, seeds {r['seeds'][0]}-{r['seeds'][-1]}: never below random "
                         f"**{'met' if r['never_below'] else 'not met'}**; random's final accuracy reached with "
                         f"{r['reach'] if r['reach'] is not None else '-'} of {counts[-1]} labels ({share}): "
                         f"**{'met' if r['share'] is not None and r['share'] <= 0.6 else 'not met'}** "
                         "(aim: at most 60 %).")
    lines.append("")
    if (args.rule, args.learner, args.first_seed, args.seeds) == ("suggested", "app", 0, 3):
        lines += VERDICT_NOTE.splitlines() + [""]
    for r in results:
        lines += [f"## {r['name']}", ""] + verdict_lines(r, label)
    if fine:
        lines += ["## Finer grain (extra information, not the headline)", "",
                  "A user labelling twenty suggestions at a time in a big pool is in the low-budget regime too: the "
                  "same comparison, starting with 1 labelled picture per class and adding 4 (ants vs bees) or 9 "
                  "(generated) per round, 5 rounds.", ""]
        for r in fine:
            lines += [f"### {r['name']}", ""] + verdict_lines(r, label)
    lines += ["## How the rule was chosen", "",
              "Earlier passes (on these same features with the same simulation, but the fixed-L2 learner on "
              "standardised features): the "
              "previous rule (margin x novelty by a weighted k-center greedy after the cold start), TypiClust with "
              "|labelled| + n groups every round, BADGE-like k-means++ on the head's gradient embedding, pure margin, "
              "a longer cold start, and typicality-weighted variants were tried with 3 seeds; the best four again "
              "with 6 seeds, where the previous rule and the longer cold start fell below random in some round on "
              "ants vs bees, and this rule (like its typicality-weighted variant) did not; with 10 seeds this rule "
              "was still never below random on either dataset, but reached random's final accuracy only with 83 % "
              "(generated) and 100 % (ants vs bees) of its labels. The trade-off, plainly: the previous rule's one good "
              "figure on ants vs bees (random's final accuracy with 63 % of its labels, 3 seeds) came from a spike at "
              "34 labels that it also showed with 6 seeds (0.952), while with 6 seeds it fell below random at 24 and "
              "44 labels (0.911 against 0.912, 0.929 against 0.938) and ended below it (0.942 against 0.946); this "
              "rule is steadier (above random in every round) but does not reach random's final accuracy early. "
              "Neither meets the 60 % aim on both datasets. Differences of about 0.01 are within the seeds' spread.",
              ""]
    lines += RULES_TRIED.splitlines() + [""] + LATER_PASS.splitlines() + [""]
    if kept is not None and retrain_figures is None:
        lines += kept  # --skip-retrain: the section measured by an earlier full run, as it was
    if retrain_figures:
        f = retrain_figures
        lines += ["## Retrain in seconds", "",
                  "A real feature-extraction run of MobileNetV2 on ants vs bees (40 training pictures held back as "
                  "the pool, 3 epochs, CPU, 2 threads), then `engine.active.retrain` (the window's *Retrain*) with "
                  f"{f['joined']} of them labelled. The retrain is a normal run folder (settings, metrics, best "
                  "weights, calibrated temperature; it evaluates, predicts and exports like any run), but with "
                  "feature extraction and the frozen layers' outputs stored it trains only the head on them "
                  "(`engine.active.refit`: the outputs of the pictures already seen read back from the store, the head "
                  "solved by L-BFGS and then the phase's epochs on the outputs, as the full run does); only the newly "
                  "labelled pictures pass through the frozen layers, and the pictures are not decoded again to be "
                  "checked.", "",
                  "| | wall time | best validation accuracy |", "|---|---:|---:|",
                  f"| first run (frozen outputs computed) | {f['first_s']:.1f} s | {f['first_acc']:.3f} |",
                  f"| retrain with {f['joined']} labelled pictures | {f['retrain_s']:.1f} s | "
                  f"{f['retrain_acc']:.3f} |", ""]
        if f.get("refit"):
            r = f["refit"]
            lines += [f"The retrain refitted the head: {r['read_back']:,} frozen-layer outputs read back from the "
                      f"store, {r['computed']:,} computed (the {f['joined']} new pictures' augmented views); "
                      f"{f['retrain_s'] / f['first_s']:.0%} of the first run's time "
                      "(measured one after the other on the same machine, shared with other work). Aim (seconds, "
                      f"not minutes): **{'met' if f['retrain_s'] < 60 else 'not met'}**.", ""]
        else:
            lines += ["The retrain did not refit the head (it trained the normal way): see the run's log.", ""]
        if f.get("parts"):
            parts = f["parts"]
            top = sum(v for k, v in parts.items() if not k.startswith("..."))
            lines += ["Where the retrain's time went (each part's wall time, measured by wrapping the functions named "
                      "in `bench/bench_active.py`'s `RETRAIN_PARTS`):", "",
                      "| part of the retrain | seconds |", "|---|---:|"]
            lines += [f"| {label} | {parts.get(label, 0.0):.2f} |" for _, _, label in RETRAIN_PARTS]
            lines += [f"| the rest (events, log, dataset.json, summary, ...) | {max(0.0, f['retrain_s'] - top):.2f} |",
                      f"| **the whole retrain** | **{f['retrain_s']:.2f}** |", ""]
        lines += RETRAIN_CHANGES.splitlines() + [""]
    how = [what for what, done in (("the features read back from the file --features kept", features_kept),
                                   ("the retrain section kept from an earlier run", kept is not None and
                                    retrain_figures is None)) if done]
    lines += [f"Total benchmark time: {seconds / 60:.1f} min" + (f" ({'; '.join(how)})." if how else "."), ""]
    lines += USAGE.splitlines()
    out.write_text("\n".join(lines), encoding="utf-8")


RULES_TRIED = """A later pass tried what the list above does not hold, on the same stored features with the same simulation (rounds
are simulated in seconds; with the earlier passes' learner, fixed L2 on standardised features; figures are the
accuracies after rounds 1-5, ants vs bees then generated):

| rule | seeds | ants vs bees (14, 24, 34, 44, 54 labels) | generated (36, 54, 72, 90, 108 labels) |
|---|---|---|---|
| random | 0-2 | 0.908 0.922 0.937 0.937 0.943 | 0.717 0.831 0.893 0.913 0.935 |
| the app's rule | 0-2 | 0.935 0.932 0.941 0.941 0.948 | 0.811 0.915 0.930 0.943 0.956 |
| ProbCover (Yehuda et al. 2022; radius from 95 % purity of k-means groups) every round | 0-2 | 0.930 0.937 0.952 0.948 0.952 | 0.767 0.874 **0.891** **0.907** **0.933** |
| ProbCover, radius from 80 % purity | 0-2 | 0.917 0.932 0.948 **0.930** 0.950 | 0.830 0.883 0.894 0.926 **0.931** |
| the 10 n most uncertain, k-means into n, nearest to each centre (Zhdanov 2019) | 0-2 | 0.935 0.935 0.943 0.946 0.946 | 0.841 0.906 0.926 0.946 0.950 |
| expected gradient length of the linear head, best in each k-means group | 0-2 | 0.935 0.935 **0.917** 0.941 0.946 | 0.806 0.852 0.922 0.948 0.967 |
| margin x typicality (k-NN density) in each group, every round | 0-2 | 0.935 0.939 0.941 0.950 0.954 | 0.785 0.885 0.913 0.922 0.952 |
| the app's rule on tempered probabilities (T = 2) | 0-2 | 0.935 0.928 0.941 0.950 0.943 | 0.819 0.883 0.906 0.930 0.937 |
| ProbCover for the cold start, then the app's rule | 0-2 | 0.930 0.954 0.939 0.959 0.948 | (as the app's rule: no cold start) |
| random | 0-5 | 0.900 0.912 0.936 0.938 0.946 | 0.760 0.841 0.886 0.909 0.922 |
| the app's rule | 0-5 | 0.935 0.934 0.940 0.943 0.948 | 0.829 0.902 0.916 0.931 0.953 |
| ProbCover for the cold start, then the app's rule | 0-5 | 0.928 0.924 **0.928** 0.947 **0.944** | (as the app's rule) |
| 2 n k-means groups, the n best group winners | 0-5 | 0.935 0.915 0.941 0.947 0.952 | 0.829 0.890 0.923 0.945 0.961 |
| random | 0-9 | 0.897 0.914 0.937 0.941 0.946 | 0.764 0.849 0.893 0.921 0.930 |
| the app's rule | 0-9 | 0.932 0.933 0.941 0.944 0.951 | 0.813 0.884 0.906 0.923 0.953 |
| 1.5 n k-means groups, the n best group winners | 0-9 | 0.932 0.929 0.939 0.946 0.949 | 0.807 0.887 0.915 0.942 0.963 |
| 2 n groups | 0-9 | 0.932 0.920 **0.936** 0.947 0.952 | 0.826 0.878 0.919 0.944 0.958 |
| picks spread over the predicted classes | 0-9 | 0.932 **0.910** 0.943 0.943 0.953 | 0.802 0.879 0.917 0.932 0.951 |
| random | 10-19 | 0.888 0.917 0.938 0.939 0.945 | 0.781 0.841 0.871 0.902 0.912 |
| the app's rule | 10-19 | 0.909 0.929 **0.933** 0.941 0.946 | 0.813 0.870 0.914 0.939 0.958 |
| 1.5 n groups | 10-19 | 0.909 0.921 **0.928** 0.940 0.945 | 0.804 0.884 0.910 0.939 0.957 |

(Bold: below random in that round.) ProbCover for the cold start looked like the answer on 3 seeds (random's final
accuracy on ants vs bees with 44 % of its labels) and fell below random with 6; 1.5 n groups reached random's final
accuracy with 81 % (ants vs bees) and 83 % (generated) of its labels on seeds 0-9, against the app's rule's 100 %
and 100 % there, but on the fresh seeds 10-19 it was below random on ants vs bees at 34 labels, and below the app's
rule. No rule was better on both datasets over 6 or more seeds and never below random, so the app's rule is
unchanged. On seeds 10-19 the app's rule too is below random in one round (ants vs bees, 34 labels: 0.933 against
0.938), within the seeds' spread: "never below random" holds on average over some sets of seeds, not all. Why 60 %
is hard here: with every pool picture labelled the same linear head reaches 0.961 (ants vs bees) and 0.978
(generated); random's final accuracy, 0.943-0.946 on ants vs bees, is 1.5 to 2 points under that ceiling, and 60 % of its
54 labels means reaching it by the 24-label round.
"""


VERDICT_NOTE = """\
What moved, and how much it means. These figures come from the app's own way of fitting the head (this pass; the
earlier passes used a fixed L2 on standardised features, under which the headline read: never below random met on
both datasets, random's final accuracy with 100 % and 83 % of its labels). The headline's "not met" for never below
random on ants vs bees is the last round: 0.943 against 0.946 on the mean of 3 seeds, half a validation picture
(one picture is 0.0065 there). With 6 seeds (0-5) the app's rule is never below random on either dataset and reaches
random's final accuracy with 81 % (ants vs bees) and 83 % (generated) of its labels; on the fresh seeds 10-19 it is
below random in one round on each dataset and reaches it with 63 % and 83 % (the table "This pass" below). No rule
tried in this pass meets 60 % on both datasets either; why, in figures, at the end of that section."""

LATER_PASS = """\
This pass (issue #18's open aim) first checked that the simulation's learner is the app's. It was not: the earlier
passes fitted every round's head with a fixed L2 = 1e-3 (as 1e-3 |W|^2) on standardised features, without label
smoothing, and chose the suggestions from uncalibrated probabilities, while the app's retrain (engine.active.refit ->
engine.train.headfit.fit_head) fits the raw pooled features with label smoothing 0.1, tries the L2 strengths 0.1,
0.01, 0.001, 0.0001 (as l2/2 |W|^2) and keeps the one best on the validation pictures -- here it kept 0.1 in 16 of
36 heads on ants vs bees and 0.01 in 18 of 36 on the generated set, so no fixed strength stands for it -- and the
suggestions come from probabilities calibrated by a temperature fitted on the validation pictures. The benchmark now
calls the app's own fit and temperature for both ways of choosing (`fit_head(..., learner="app")`; the earlier
learner stays as `--learner fixed`), and every figure of this pass, random's included, was measured with it. Not
simulated: the few epochs of AdamW on augmented views that follow the solution in the app.

Then it tried, with the app's learner, what the table above does not hold (figures after rounds 1-5; bold: below
random in that round on the mean; `python bench/bench_active.py --rule lookahead` repeats the look-ahead rows):

| rule | seeds | ants vs bees (14, 24, 34, 44, 54 labels) | generated (36, 54, 72, 90, 108 labels) |
|---|---|---|---|
| random | 0-2 | 0.911 0.924 0.937 0.930 0.946 | 0.778 0.870 0.922 0.931 0.941 |
| the app's rule | 0-2 | 0.935 0.930 0.948 0.948 **0.943** | 0.785 0.915 0.926 0.950 0.959 |
| expected error reduction (Roy & McCallum 2001): per k-means group, its 5 most uncertain pictures, the one whose labelling is expected to lower the pool's estimated error most (refit by one Newton step of the head, each label weighted by its calibrated probability) | 0-2 | 0.935 0.926 0.946 0.935 **0.943** | 0.828 0.907 0.928 0.939 0.946 |
| the same, the first version (Newton step without the candidate's own curvature: steps 100 to 900 times too long) | 0-2 | 0.935 0.924 **0.915** 0.941 **0.941** | 0.815 0.887 0.928 0.946 0.961 |
| expected error reduction, the n best over the 5 n most uncertain (no groups) | 0-2 | 0.935 0.924 0.941 0.939 **0.939** | 0.793 0.876 **0.907** **0.917** **0.924** |
| expected error reduction, 20 candidates per group | 0-2 | 0.935 0.932 0.946 0.939 **0.930** | 0.833 0.904 0.930 0.943 0.948 |
| expected error reduction, candidates by the app's score (margin x novelty), 20 per group | 0-2 | 0.935 0.932 0.946 0.939 **0.930** | 0.833 0.917 0.930 0.948 0.950 |
| the same, 5 per group | 0-2 | 0.935 0.930 **0.935** 0.935 **0.941** | 0.833 0.917 0.950 0.961 0.952 |
| expected model output change (the expected L1 change of the pool's probabilities), per group | 0-2 | 0.935 0.926 0.948 0.933 **0.922** | 0.857 0.882 0.928 0.950 0.952 |
| MaxHerding (Bae et al. 2024: greedy kernel coverage, Gaussian kernel, width the median distance to the 10th neighbour) | 0-2 | 0.935 0.932 **0.924** 0.930 **0.928** | 0.870 0.887 0.928 **0.930** 0.946 |
| MaxHerding, width half the median pairwise distance | 0-2 | 0.935 0.932 **0.930** **0.924** **0.930** | 0.874 0.891 0.930 0.937 0.946 |
| Uncertainty Herding (Bae et al. 2025: coverage weighted by margin uncertainty), 10th-neighbour width | 0-2 | **0.893** 0.939 0.941 0.943 **0.937** | 0.872 0.917 0.935 0.946 0.959 |
| Uncertainty Herding, half the median pairwise distance | 0-2 | **0.902** **0.913** **0.935** 0.941 0.950 | 0.887 0.909 0.935 0.939 0.950 |
| random | 0-5 | 0.905 0.913 0.931 0.929 0.943 | 0.806 0.872 0.912 0.931 0.938 |
| the app's rule | 0-5 | 0.924 0.931 0.939 0.949 0.944 | 0.828 0.911 0.937 0.945 0.951 |
| expected error reduction, 5 per group | 0-5 | 0.924 0.936 0.946 0.938 0.947 | 0.845 0.917 0.932 0.947 0.951 |
| expected error reduction, app's score, 5 per group | 0-5 | 0.924 0.938 0.937 0.938 **0.940** | 0.856 0.912 0.931 0.952 0.954 |
| expected model output change | 0-5 | 0.924 0.928 0.938 0.934 **0.928** | 0.866 0.885 0.920 0.941 0.946 |
| random | 10-19 | 0.909 0.923 0.929 0.933 0.937 | 0.826 0.864 0.901 0.923 0.928 |
| the app's rule | 10-19 | 0.923 **0.919** 0.937 0.936 0.947 | **0.819** 0.888 0.921 0.934 0.953 |
| expected error reduction, 5 per group | 10-19 | 0.923 0.932 0.933 0.943 0.941 | 0.829 0.891 0.913 0.940 0.955 |
| expected model output change | 10-19 | 0.923 0.933 0.932 **0.929** 0.939 | **0.822** 0.888 0.918 0.940 0.945 |

The same rules at the finer grain (start 1 per class; ants vs bees 4 more per round: 6, 10, 14, 18, 22 labels;
generated 9 more per round: 18, 27, 36, 45, 54 labels):

| rule | seeds | ants vs bees (6 ... 22 labels) | generated (18 ... 54 labels) |
|---|---|---|---|
| random | 0-2 | 0.854 0.887 0.913 0.932 0.932 | 0.624 0.698 0.793 0.841 0.854 |
| MaxHerding, 10th-neighbour width | 0-2 | 0.917 0.906 0.935 **0.902** **0.906** | 0.769 0.857 0.869 0.880 0.902 |
| MaxHerding, half the median distance | 0-2 | 0.917 0.906 0.941 **0.926** **0.911** | 0.746 0.856 0.859 0.874 0.904 |
| Uncertainty Herding, 10th-neighbour width | 0-2 | 0.904 0.900 0.937 **0.924** **0.908** | 0.763 0.857 0.887 0.917 0.931 |
| Uncertainty Herding, half the median distance | 0-2 | 0.902 0.895 0.935 **0.919** **0.908** | 0.756 0.880 0.898 0.911 0.937 |
| random | 0-5 | 0.810 0.894 0.912 0.926 0.931 | 0.632 0.733 0.823 0.857 0.872 |
| the app's rule | 0-5 | 0.890 0.894 0.926 0.927 0.936 | 0.660 **0.723** **0.812** 0.862 0.915 |
| expected error reduction, 5 per group | 0-5 | 0.890 0.900 0.923 **0.923** 0.936 | 0.681 0.771 0.834 0.881 0.909 |
| expected error reduction, app's score, 5 per group | 0-5 | 0.890 0.901 0.918 **0.925** **0.927** | 0.667 0.811 0.863 0.876 0.905 |
| expected model output change | 0-5 | 0.890 0.929 0.932 0.929 0.954 | 0.666 0.780 0.866 0.887 0.905 |
| random | 10-19 | 0.842 0.857 0.918 0.926 0.930 | 0.638 0.729 0.792 0.829 0.861 |
| the app's rule | 10-19 | 0.912 0.912 0.921 0.936 **0.926** | 0.664 0.773 0.819 0.867 0.901 |
| expected error reduction, 5 per group | 10-19 | 0.912 0.920 **0.909** 0.935 0.937 | 0.673 0.778 0.849 0.896 0.918 |
| expected model output change | 10-19 | 0.912 0.909 0.935 0.926 0.934 | 0.672 0.795 0.857 0.894 0.912 |

What this shows. No rule is better than the app's on both datasets over 6 or more seeds, so `select` is unchanged.
Expected error reduction (5 candidates per group) comes closest: with the app's learner it was never below random in
the headline on seeds 0-5 nor on the fresh seeds 10-19 (the app's rule was, once on each dataset on 10-19), and its
mean accuracy over the five rounds is a little higher on both datasets and both sets of seeds (0.938 against 0.937
and 0.918 against 0.914 on 0-5; 0.934 against 0.932 and 0.906 against 0.903 on 10-19: well within the seeds'
spread); but the number of labels it needs to reach random's final accuracy is not better: on the generated set 90 of
108 (83 %) for both rules on both sets of seeds, on ants vs bees 34 of 54 (63 %) against the app's rule's 44 (81 %)
on seeds 0-5 and 44 (81 %) against 34 (63 %) on 10-19; and at the finer grain it fell below random on ants vs bees on
both sets of seeds. It also needs what `select` is not given -- the head itself (weights, L2 strength) and a solve of
a (labelled pictures x classes)-square system per round (20,000 x 20,000 for 2,000 labelled pictures and 10 classes,
where `select` now takes 0.3 s on 2,000 pool pictures x 1,280 features x 10 classes, n = 20, one core) -- so adopting
it would change the function's inputs for a gain the seeds cannot tell from noise. Expected model output change was
the best rule at the finer grain (random's final accuracy with 10 of 22 labels on ants vs bees, 27 of 54 on the
generated set, never below random, seeds 0-5; on the fresh seeds 10-19 still never below random, with 14 of 22 and
45 of 54 labels) but the worst at the headline's grain on ants vs bees (below random in a late round on both sets of
seeds, and random's final accuracy reached only with all its labels on 10-19: it picks the pictures whose answer
would move the head most, which late in the rounds are the odd ones). The coverage rules (MaxHerding, Uncertainty
Herding), strong for the generated set's first rounds, fell below random on ants vs bees, as ProbCover and TypiClust
did in the earlier passes.

Why 60 % is out of reach here, in figures. The rounds' grain makes the aim a step: on ants vs bees 60 % of 54 labels
is 32, so random's final accuracy (0.937-0.946 over the seed sets) must be reached by the 24-label round, where no
rule measured is above 0.939; on the generated set 60 % of 108 is 65, so it must be reached by the 54-label
round, where the best rules are at 0.91-0.92 against random's final 0.928-0.941. And on ants vs bees the curve is
flat from about 30 labels on: with every one of the 245 pool pictures labelled the app's learner reaches 0.935 (the
generated set: 0.978), under random's final accuracy with 54 labels on every set of seeds above; on its
validation set (153 pictures) one picture is 0.0065, about the size of the rules' differences, so which rule "reaches"
random's final accuracy there first is decided by a picture or two.
"""

RETRAIN_CHANGES = """\
What was cut, and what was kept (this pass; profiled with cProfile, then the timings above). Before it, the same
retrain (MobileNetV2, ants vs bees, 20 new pictures, imports warm as in the app after its first run, each retrain from
a fresh copy of the first run's stored outputs) took a median 16.6 s against 6.8 s after, measured alternately
(original code, new code, 4 times each after one warm-up) on the shared 2-core machine at a load average of about 5:
the head's L-BFGS went from 8.2 s to 0.9 s, verifying the split from 1.0 s to 0.2 s, the frozen outputs part from
5.7 s to 4.8 s (of which 2.3 s the ONNX export); same best accuracy (0.948), same L2 strength, temperature 0.45898
against 0.45896. (An earlier alternated comparison at a load of about 8, before the split's verification moved to
one thread: 29.5 s against 11.1 s.) In quiet moments single retrains took about 2 s, before and after.

- **The head's L-BFGS runs on one CPU thread**, as the full run already solves it (engine.train.trainer): it is a
  stream of tiny operations, and two threads on a busy 2-core machine spend their time waiting for each other
  (two threads: 0.5 s in a quiet moment, 4 to 23 s under load; one thread: 0.5 to 1.7 s). Same solution.
- **The split's verification runs on one CPU thread** too: three passes of a 2-picture probe batch, 0.2 s on one
  thread against 0.7 to 4.8 s on two under load (measured alternately); the check itself (engine.train.prefix, the
  full run's) is unchanged.
- **The new pictures pass through the run's fast frozen layers** (engine.train.fastpath.fast_prefix: ONNX Runtime on
  the CPU in full precision, else BatchNorm folded into the convolutions), not eager PyTorch: on 20 pictures of
  224 x 224 on the busy machine, eager 2.9 s, folded 2.5 s, ONNX Runtime 0.5 s, after a 1 to 4 s export; the export
  is paid only when some picture is missing from the store. tests/engine/test_active_refit.py checks that the outputs
  stored for the new pictures are the features the finished model computes from those pictures.
- **Kept**: the model is built once (the trainer builds it; no second build was found); the temperature was already
  fitted on the validation pictures' stored outputs (no pass over the pictures; the same test checks that it equals
  the temperature fitted on logits computed from the pictures); the four L2 strengths (under 1 s together on one
  thread) and the phase's epochs with a checkpoint each (about 0.2 s for the three), so that the retrain trains as
  the full run does and its run folder is the same (the same files, loaded the same way).
- The aim "a few seconds beyond building the model" (0.2 s here) holds in quiet moments (about 2 s in all) and is
  close under the load of this shared machine (about 7 s), where the new pictures' frozen outputs -- the ONNX export,
  decoding and augmenting the 20 pictures, 60 outputs -- take about 5 s. Left: the ONNX export is redone at every
  retrain (engine.train.fastpath keeps no exported prefix between runs).
"""


USAGE = """
## How it works in the app and on the command line

**The pool.** A project can hold a folder of pictures still to label (Label step: *Choose the pictures to label...*;
saved in the project file as `pool`). It is scanned with the same picture checks as the labelled data
(`engine.active.pool.scan_pool`): unreadable files are reported and left out, pictures already in the labelled data
are left out, and none of it trains until labelled.

**Suggestions** (`engine.active.ranking`). The chosen run's model looks at every pool picture once; the input of its
head (the pooled features) and its calibrated probabilities are kept. Each picture's uncertainty is the margin
`1 - (p1 - p2)` (or the normalised entropy). While the model has learnt from fewer pictures than it is about to be
given (a cold start), its uncertainty is not worth much yet: the pool is split into as many k-means groups as pictures
wanted and the most typical picture of each is suggested (TypiClust-like). After that the pool is again split into as
many k-means groups, and each group gives its picture of largest `uncertainty x novelty`, novelty being the feature
distance to the nearest picture already labelled (the run's training pictures and the labelled pool pictures): the
suggestions cover every kind of picture in the pool (twenty suggestions are not twenty near-copies), and within a kind
the model's doubt decides. Ties are broken by a seeded random order: the same run, pool, answers and seed give the
same suggestions. The features are cached per backbone (every weight but the head, hashed), so after a
feature-extraction retrain the next suggestions only apply the new head.

    python main.py suggest RUN --pool DIR [--n 20] [--json] [--labels CSV] [--seed 0] [--uncertainty margin|entropy]

prints the ranked paths; with `--json` exactly `[{"path", "score", "predicted", "confidence"}, ...]`.

**Labels** live in `<project>-labels.csv` beside the project file (columns `path,label`; `<none of these>` for a
picture that shows none of the classes), rewritten atomically at every answer. *Copy into class folders...* also
copies the labelled pictures into a folder of class sub-folders.

**Retrain** (`engine.active.join`) writes the next run's data as a CSV (`<project>-labels-rounds/training-*.csv`:
every picture of the project's data with its split, plus the labelled pool pictures as training pictures; "none of
these" stays out) and trains the project's own settings on it -- the same joined settings whether started from the
Label step or with `python main.py train PROJECT.tsproj`. With feature extraction, and the frozen layers' outputs of
an earlier run in the store, it refits only the head on the stored outputs (`engine.active.refit`; the window says
"head refitted on stored outputs in 3 s"); other strategies train the whole run again. The validation pictures stay
the same, so the rounds are comparable; `rounds.jsonl` there records pictures labelled and validation accuracy per
round, which the Label step's chart shows. The run's `config.toml` names that CSV, so
`python main.py train RUN/config.toml` repeats it. Saving the project (or saving it under another name) moves the
labels CSV and this folder beside the project file, as it moves the runs.

Screenshots: `docs/active-queue.png` (the queue and the first suggestion), `docs/active-label.png` (labelling with the
keys, after a retrain: the chart's second point), `docs/active-grid.png` (bulk labelling), `docs/active-map.png` (the
map with a lasso selection); made by `python bench/screenshots_active.py`.
"""


def dataset_features(work: Path, cache: Path | None) -> dict[str, tuple]:
    """Both datasets' features, labels and class names: computed once (MobileNetV2), or read back from ``cache`` (an
    .npz this function wrote earlier, --features) so that rules can be compared without computing them again."""
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as d:
            return {k: (d[f"{k}_px"], d[f"{k}_py"], d[f"{k}_vx"], d[f"{k}_vy"], list(d[f"{k}_classes"]))
                    for k in ("ants", "generated")}
    found = {}
    pool_paths, pool_y, classes = folder_dataset(HYMENOPTERA / "train")
    val_paths, val_y, _ = folder_dataset(HYMENOPTERA / "val")
    print("features of ants vs bees ...", flush=True)
    found["ants"] = (features_of(pool_paths), pool_y, features_of(val_paths), val_y, classes)
    generated = make_generated(work / "generated-pool", 40, 0)
    generated_val = make_generated(work / "generated-val", 20, 1)
    pool_paths, pool_y, classes = folder_dataset(generated)
    val_paths, val_y, _ = folder_dataset(generated_val)
    print("features of the generated dataset ...", flush=True)
    found["generated"] = (features_of(pool_paths), pool_y, features_of(val_paths), val_y, classes)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **{f"{k}_{part}": v for k, parts in found.items()
                           for part, v in zip(("px", "py", "vx", "vy", "classes"), parts)})
    return found


# (name, features key, headline start per class, headline per round, fine start per class, fine per round)
DATASETS = (("Ants vs bees (hymenoptera)", "ants", 2, 10, 1, 4),
            ("Generated patterns, 9 classes", "generated", 2, 18, 1, 9))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the headline comparison (default 3)")
    parser.add_argument("--first-seed", type=int, default=0, help="the first of them (fresh seeds: e.g. 10)")
    parser.add_argument("--fine-seeds", type=int, default=6,
                        help="seeds of the finer-grain comparison (start 1 per class, a class's worth or 4 per "
                             "round); 0 leaves it out")
    parser.add_argument("--rule", choices=("suggested", "lookahead"), default="suggested",
                        help="the rule compared with random: the app's (engine.active.ranking.select) or the "
                             "look-ahead tried in this benchmark (select_lookahead)")
    parser.add_argument("--learner", choices=("app", "fixed"), default="app",
                        help="how each round's head is fitted: as the app does (default) or the earlier passes' "
                             "fixed L2 on standardised features")
    parser.add_argument("--features", default=None, help="an .npz to keep the features in between runs")
    parser.add_argument("--skip-retrain", action="store_true",
                        help="no real retrain: the doc keeps the retrain section already in --out")
    parser.add_argument("--out", default=str(ROOT / "docs" / "active.md"))
    args = parser.parse_args()
    if not HYMENOPTERA.is_dir() or not WEIGHTS.is_file():
        print(f"skipped: needs {HYMENOPTERA} and {WEIGHTS} (only on the project's own machines)")
        return 0
    torch.set_num_threads(2)
    began = time.perf_counter()
    out = Path(args.out)
    kept = kept_retrain_section(out) if args.skip_retrain else None
    features_kept = bool(args.features) and Path(args.features).is_file()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    fine_seeds = list(range(args.first_seed, args.first_seed + args.fine_seeds))
    results, fine = [], []
    with tempfile.TemporaryDirectory(prefix="bench-active-") as tmp:
        work = Path(tmp)
        os.environ.setdefault("TRANSFER_STUDIO_CACHE", str(work / "cache"))
        found = dataset_features(work, Path(args.features) if args.features else None)
        torch.set_num_threads(1)  # the heads are fitted on one thread, as the app fits them (engine.train.trainer)
        for name, key, start, per_round, fine_start, fine_per_round in DATASETS:
            px, py, vx, vy, classes = found[key]
            results.append(run_dataset(name, px, py, vx, vy, classes, start, per_round, seeds, args.rule,
                                       args.learner))
            if fine_seeds:
                fine.append(run_dataset(name, px, py, vx, vy, classes, fine_start, fine_per_round, fine_seeds,
                                        args.rule, args.learner))
        torch.set_num_threads(2)
        figures = None if args.skip_retrain else real_retrain(work)
        if figures:
            print(f"retrain: first run {figures['first_s']:.1f} s, retrain {figures['retrain_s']:.1f} s", flush=True)
    write_doc(out, results, fine, figures, kept, args, time.perf_counter() - began, features_kept)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
