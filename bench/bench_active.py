"""Benchmark: does labelling the app's suggestions beat labelling pictures at random? And how fast is a retrain?

1. Simulated rounds (labels hidden, then revealed as the "user" answers) on two labelled datasets:
   - ants vs bees: the training pictures of ``../shared/datasets/hymenoptera`` are the pool (their labels hidden),
     its validation pictures measure each round;
   - a generated dataset with more classes: 9 classes (three patterns of engine.project.demo's recipe, each in three
     tints), 40 pool pictures and 20 validation pictures per class, 64 x 64 pixels.
   Each starts with a few labelled pictures per class (drawn at random by the seed) and adds a fixed number per round
   for 5 rounds, chosen (a) at random, (b) by the app's suggestions (``engine.active.ranking.select``, the same
   function the app and ``main.py suggest`` use: typical pictures during a cold start, then margin uncertainty x
   novelty within k-means groups). After each round a linear head
   (multinomial logistic regression, L-BFGS, fixed L2) is trained on the labelled pictures' features and measured on
   the validation pictures. The features of MobileNetV2 (``../shared/weights/mobilenet_v2_in1k.safetensors``) are
   computed ONCE per dataset and the rounds are simulated on them: that is what a feature-extraction retrain learns
   from, and it keeps the benchmark fast on a shared 2-core machine. Mean of 3 seeds.
   Aims: the suggestions are never below random, and reach random's final accuracy with at most 60 % of its labels.
2. A real retrain (``engine.active.retrain``, the window's *Retrain*): a feature-extraction run of MobileNetV2 on ants
   vs bees, then a retrain with 20 labelled pool pictures added; the retrain refits the head on the frozen layers'
   stored outputs (engine.active.refit), computing only the new pictures' ones. Measured: wall time of each, outputs
   read back and computed.

    python bench/bench_active.py [--seeds 3] [--skip-retrain] [--out docs/active.md]

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
L2 = 1e-3
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


def fit_head(x: np.ndarray, y: np.ndarray, classes: int) -> torch.nn.Linear:
    """Multinomial logistic regression (L-BFGS, fixed L2): what a feature-extraction retrain learns."""
    torch.manual_seed(0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    head = torch.nn.Linear(x.shape[1], classes)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=200, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(xt), yt) + L2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head


def simulate(pool_x, pool_y, val_x, val_y, classes: int, start_per_class: int, per_round: int, seed: int,
             how: str) -> list[tuple[int, float]]:
    """(labelled pictures, validation accuracy) after the start and after each of ROUNDS rounds."""
    from engine.active.ranking import select

    rng = np.random.default_rng(seed)
    labelled = []
    for c in range(classes):  # the same start for both ways of choosing (drawn from the seed only)
        labelled += list(rng.choice(np.flatnonzero(pool_y == c), start_per_class, replace=False))
    pick = np.random.default_rng(seed + 1000)
    curve = []
    for r in range(ROUNDS + 1):
        head = fit_head(pool_x[labelled], pool_y[labelled], classes)
        with torch.no_grad():
            acc = float((head(torch.from_numpy(val_x)).argmax(1).numpy() == val_y).mean())
        curve.append((len(labelled), acc))
        if r == ROUNDS:
            break
        rest = np.setdiff1d(np.arange(len(pool_y)), labelled)
        if how == "random":
            new = list(pick.choice(rest, per_round, replace=False))
        else:
            with torch.no_grad():
                probs = head(torch.from_numpy(pool_x[rest])).softmax(1).numpy()
            chosen = select(probs, pool_x[rest], per_round, anchors=pool_x[labelled], seed=seed)
            new = [int(rest[row]) for row, _ in chosen]
        labelled += new
    return curve


def standardise(pool: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = pool.mean(0), pool.std(0) + 1e-6  # from the pool's pictures only (no labels involved)
    return ((pool - mean) / std).astype(np.float32), ((val - mean) / std).astype(np.float32)


def run_dataset(name, pool_x, pool_y, val_x, val_y, classes, start, per_round, seeds) -> dict:
    pool_x, val_x = standardise(pool_x, val_x)
    curves = {}
    for how in ("random", "suggested"):
        runs = [simulate(pool_x, pool_y, val_x, val_y, len(classes), start, per_round, s, how) for s in range(seeds)]
        counts = [n for n, _ in runs[0]]
        curves[how] = (counts, np.mean([[a for _, a in run] for run in runs], axis=0),
                       np.std([[a for _, a in run] for run in runs], axis=0))
        print(f"{name} {how}: " + ", ".join(f"{n}: {a:.3f}" for n, a in zip(counts, curves[how][1])), flush=True)
    counts, rand, _ = curves["random"]
    _, sugg, _ = curves["suggested"]
    never_below = bool(np.all(sugg[1:] >= rand[1:] - 1e-9))
    target = rand[-1]
    reach = next((n for n, a in zip(counts, sugg) if a >= target - 1e-9), None)
    share = reach / counts[-1] if reach is not None else None
    return {"name": name, "classes": len(classes), "pool": len(pool_y), "val": len(val_y), "start": start,
            "per_round": per_round, "curves": curves, "never_below": never_below, "reach": reach, "share": share}


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
    done = retrain(config, labels, start_run=first.run_dir)
    t_retrain = time.perf_counter() - t0
    result, summary = done.result, done.summary
    refit = done.refit.to_dict() if done.refit is not None else None
    return {"first_s": t_first, "retrain_s": t_retrain, "first_acc": first.best_val_acc,
            "retrain_acc": result.best_val_acc, "joined": summary.joined, "status": result.status, "refit": refit}


def write_doc(out: Path, results: list[dict], retrain_figures: dict | None, seeds: int, seconds: float) -> None:
    lines = [
        "# Active learning: labelling the app's suggestions against labelling at random",
        "",
        "Written by `python bench/bench_active.py` (the machine's 2 CPU cores were shared with other work while "
        "measuring).",
        "",
        "## What is measured",
        "",
        "Labels hidden, then revealed as a simulated user answers. Each dataset starts with a few labelled pictures "
        "per class (drawn by the seed, the same for both ways of choosing) and adds a fixed number per round for 5 rounds, "
        "chosen (a) at random or (b) by the app's suggestions (`engine.active.ranking.select`, the function behind "
        "*Suggest* and `main.py suggest`, called here as is: during a cold start -- fewer labelled pictures than the "
        "round adds, as in ants vs bees' first round -- the most typical picture of each of as many k-means groups "
        "(TypiClust-like); then the pool split into as many k-means groups as pictures wanted, each giving its picture "
        "of largest margin uncertainty x novelty, novelty being the distance to the nearest labelled picture "
        "(Cluster-Margin-like)). "
        "After each round a linear head (multinomial logistic regression, L-BFGS, fixed L2 = 1e-3 on standardised "
        "features) is trained on the labelled pictures and measured on the validation pictures; figures are the "
        f"mean of {seeds} seeds. MobileNetV2's features (`../shared/weights/mobilenet_v2_in1k.safetensors`) are computed "
        "**once per dataset** and the rounds are simulated on them -- what a feature-extraction retrain learns from -- "
        "so the whole benchmark runs in minutes on a shared 2-core machine.",
        "",
        "Aims (from issue #18): the suggestions are never below random (rounds 1-5), and reach random's final accuracy "
        "with at most 60 % of random's labels.",
        "",
    ]
    for r in results:
        counts, rand, rand_sd = r["curves"]["random"]
        _, sugg, sugg_sd = r["curves"]["suggested"]
        lines += [f"## {r['name']}", "",
                  f"{r['classes']} classes; pool {r['pool']} pictures (labels hidden), validation {r['val']}; start "
                  f"{r['start']} per class, {r['per_round']} more per round.", "",
                  "| labelled pictures | random | suggestions |", "|---:|---:|---:|"]
        for n, a, sa, b, sb in zip(counts, rand, rand_sd, sugg, sugg_sd):
            lines.append(f"| {n} | {a:.3f} ± {sa:.3f} | {b:.3f} ± {sb:.3f} |")
        reach = (f"{r['reach']} labels ({r['share']:.0%} of random's {counts[-1]})" if r["reach"] is not None
                 else "not within the 5 rounds")
        lines += ["",
                  f"- Never below random (rounds 1-5): **{'met' if r['never_below'] else 'not met'}**.",
                  f"- Random's final accuracy ({rand[-1]:.3f} with {counts[-1]} labels) reached by the suggestions "
                  f"with {reach}: **{'met' if r['share'] is not None and r['share'] <= 0.6 else 'not met'}** "
                  "(aim: at most 60 %).", ""]
    lines += ["How the rule was chosen (while developing it, on these same features with the same simulation): the "
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
    lines += [f"Total benchmark time: {seconds / 60:.1f} min.", ""]
    lines += USAGE.splitlines()
    out.write_text("\n".join(lines), encoding="utf-8")


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--skip-retrain", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "docs" / "active.md"))
    args = parser.parse_args()
    if not HYMENOPTERA.is_dir() or not WEIGHTS.is_file():
        print(f"skipped: needs {HYMENOPTERA} and {WEIGHTS} (only on the project's own machines)")
        return 0
    torch.set_num_threads(2)
    began = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-active-") as tmp:
        work = Path(tmp)
        os.environ.setdefault("TRANSFER_STUDIO_CACHE", str(work / "cache"))
        pool_paths, pool_y, classes = folder_dataset(HYMENOPTERA / "train")
        val_paths, val_y, _ = folder_dataset(HYMENOPTERA / "val")
        print("features of ants vs bees ...", flush=True)
        results.append(run_dataset("Ants vs bees (hymenoptera)", features_of(pool_paths), pool_y,
                                   features_of(val_paths), val_y, classes, 2, 10, args.seeds))
        generated = make_generated(work / "generated-pool", 40, 0)
        generated_val = make_generated(work / "generated-val", 20, 1)
        pool_paths, pool_y, classes = folder_dataset(generated)
        val_paths, val_y, _ = folder_dataset(generated_val)
        print("features of the generated dataset ...", flush=True)
        results.append(run_dataset("Generated patterns, 9 classes", features_of(pool_paths), pool_y,
                                   features_of(val_paths), val_y, classes, 2, 18, args.seeds))
        figures = None if args.skip_retrain else real_retrain(work)
        if figures:
            print(f"retrain: first run {figures['first_s']:.1f} s, retrain {figures['retrain_s']:.1f} s", flush=True)
    write_doc(Path(args.out), results, figures, args.seeds, time.perf_counter() - began)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
