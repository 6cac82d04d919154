"""LoRA adapters against fine-tuning, measured on ants-vs-bees: accuracy, trainable parameters, the file a run must
keep per task, and training speed.

    python bench/bench_lora.py                      # the table, written to docs/lora.md
    python bench/bench_lora.py --epochs 1 --no-write   # a smoke run

Two models, each trained three ways with the same data, epochs, seed and learning rate (the app's defaults
otherwise): ``lora`` (rank 8, alpha 16, adapters in every stage, the head fully), ``fine-tune-shallow`` and
``fine-tune-deep``.

- torchvision's MobileNetV2 with the shared ImageNet weights (../shared/weights). LoRA adapts its full and pointwise
  convolutions; its depthwise convolutions (groups > 1) cannot be merged by peft and stay frozen.
- timm's ``test_vit`` (a ViT of 0.3 M parameters, 160-pixel input: six blocks of attention and MLP) from RANDOM
  weights: no pretrained ViT weights exist on these machines and nothing can be downloaded, and a larger ViT
  (``vit_tiny_patch16_224``) takes too long on the shared CPU. Its accuracies say little about pretrained ViTs (a
  random backbone learns little from 244 pictures); what it shows is where LoRA's adapters go in a transformer
  (attention qkv and proj, MLP fc1 and fc2, the patch embedding) and what they cost.

Columns: validation accuracy (best epoch, 153 pictures), trainable parameters, the file a run must keep for its task
(LoRA: adapter.safetensors, the adapters and the head; fine-tuning: the whole weights, best.safetensors), and training
pictures per second (the median of the steps' rates, augmentation and loading included). The runs are interleaved by
model (MobileNetV2's three, then the ViT's three); the machine was shared with other work while measuring, so speeds
are comparable only within a model. Needs ../shared; skips cleanly without it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
DATA = SHARED / "datasets" / "hymenoptera"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_in1k.safetensors"
OUT = REPO / "docs" / "lora.md"
MODELS = (("torchvision:mobilenet_v2", str(WEIGHTS), "MobileNetV2, ImageNet weights"),
          ("timm:test_vit", "none", "timm test_vit, random weights"))
STRATEGIES = ("lora", "fine-tune-shallow", "fine-tune-deep")

USAGE = '''
## Using it

```
python main.py train --data DATA --model MODEL --strategy lora                       # rank 8, alpha 16, every stage
python main.py train --data DATA --model MODEL --strategy lora --lora-rank 16 --lora-alpha 32 --lora-stages blocks.10,blocks.11
```

In `config.toml`: `strategy = "lora"` and a `[lora]` table with `rank`, `alpha` and `stages` (empty: every stage). In
the window: the Layers step's **LoRA adapters** preset; the Retrain tick of a stage then says whether it gets adapters,
and the rank ("how many directions each adapted layer may change in") and alpha ("the adapters' strength") sit above
the tree with the number of parameters that will train.

What a run does (engine/train/lora.py, built on peft): adapters go into every linear layer (a transformer's attention
and MLP projections) and every convolution without groups (the convolutions peft can merge; depthwise ones stay frozen)
of the chosen stages; only the adapters and the head train, every BatchNorm keeps its statistics. The log and
`summary.json` (`lora`) report the trainable parameters. `best.safetensors` holds the merged weights, so evaluation,
prediction and every export load a plain model (no peft needed); `adapter.safetensors` holds only the adapters and the
head, with rank, alpha and targets in its metadata (`engine.train.lora.apply_adapter_file` puts it back on the
starting model); `checkpoint.pt` keeps the adapters unmerged, so a stopped run resumes exactly.
'''


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_one(model: str, weights: str, strategy: str, epochs: int, lr: float, seed: int, out: Path) -> dict:
    from engine import events as ev
    from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from engine.train.trainer import fit

    rates, trainable = [], []

    def on_event(event):
        if isinstance(event, ev.StepEnded) and event.step > 1:  # the first step of an epoch waits for the loaders
            rates.append(event.images_per_s)
        elif isinstance(event, ev.PhaseStarted):
            trainable.append(event.trainable_params)

    config = RunConfig(data=DataConfig(source=str(DATA)), model=ModelConfig(model, weights), strategy=strategy,
                       epochs=epochs, lr=lr, train=TrainConfig(seed=seed, batch_size=32), out=str(out))
    began = time.monotonic()
    result = fit(config, on_event)
    seconds = time.monotonic() - began
    if result.status != "completed":
        raise SystemExit(f"{model} {strategy} failed: {result.error}")
    run = Path(result.run_dir)
    kept = run / ("adapter.safetensors" if strategy == "lora" else "best.safetensors")
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    return {"model": model, "strategy": strategy, "acc": result.best_val_acc, "trainable": max(trainable),
            "total": summary.get("lora", {}).get("model_params"), "file_bytes": kept.stat().st_size,
            "file": kept.name, "pictures_s": statistics.median(rates) if rates else float("nan"),
            "seconds": seconds}


def table(rows: list[dict], labels: dict) -> str:
    lines = ["| model | strategy | val. accuracy | trainable parameters | file kept per task | training pictures/s |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {labels[r['model']]} | {r['strategy']} | {r['acc']:.3f} | {r['trainable']:,} | "
                     f"{r['file_bytes'] / 1e6:.2f} MB ({r['file']}) | {r['pictures_s']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of every run (default 3)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="all", help="all, mobilenet or vit")
    parser.add_argument("--no-write", action="store_true", help="print the table, do not write docs/lora.md")
    parser.add_argument("--rows-from-log", metavar="LOG", help="take the runs an earlier invocation of this script "
                        "finished from its output (a long benchmark continued; the doc says which)")
    args = parser.parse_args(argv)
    if not DATA.is_dir() or not WEIGHTS.is_file():
        print(f"skipped: needs {DATA} and {WEIGHTS} (only on the project's own machines)")
        return 0
    models = [m for m in MODELS if args.models == "all" or args.models in m[0]]
    rows, earlier = [], []
    if args.rows_from_log:
        import ast

        for line in Path(args.rows_from_log).read_text(encoding="utf-8").splitlines():
            if "{'model'" in line:
                earlier.append(ast.literal_eval(line[line.index("{'model'"):]))
    with tempfile.TemporaryDirectory(prefix="bench-lora-") as tmp:
        os.environ.setdefault("TRANSFER_STUDIO_CACHE", str(Path(tmp) / "cache"))
        for model, weights, _ in models:
            for strategy in STRATEGIES:
                done = [r for r in earlier if r["model"] == model and r["strategy"] == strategy]
                if done:
                    rows.append(dict(done[0], earlier=True))
                    continue
                log(f"{model} {strategy} ...")
                rows.append(run_one(model, weights, strategy, args.epochs, args.lr, args.seed, Path(tmp) / "runs"))
                log(f"  {rows[-1]}")
    labels = {m: label for m, _, label in MODELS}
    import torch

    text = f"""# LoRA adapters against fine-tuning

Written by `bench/bench_lora.py` ({time.strftime('%Y-%m-%d')}; {platform.processor() or platform.machine()},
{torch.get_num_threads()} torch threads, CPU; the machine was shared with other work while measuring). Ants-vs-bees
(244 training, 153 validation pictures), {args.epochs} epoch{'s' if args.epochs != 1 else ''} per run, learning rate {args.lr:g}, batch 32, seed
{args.seed}, the app's defaults otherwise; LoRA with rank 8 and alpha 16 in every stage.

{table(rows, labels)}
{"" if not any(r.get("earlier") for r in rows) else chr(10) + "Rows measured by an earlier invocation of this script (same settings), read back from its output with `--rows-from-log`: " + ", ".join(labels[r["model"]] + " " + r["strategy"] for r in rows if r.get("earlier")) + "." + chr(10)}
How to read it:

- **Trainable parameters**: LoRA trains the adapters and the head only; fine-tune-shallow the top quarter of the
  stages and the head; fine-tune-deep everything.
- **File kept per task**: what a LoRA run needs beside the starting weights is `adapter.safetensors` (the adapters
  and the head); a fine-tuned model is its whole weight file. Every run also writes `best.safetensors` with the
  adapters merged in, so evaluation, prediction and every export use a plain model (no peft at inference time).
- **Pictures/s**: LoRA's backward pass still runs through the whole frozen network (the adapters sit in every stage),
  so it is not faster than fine-tune-deep per picture (on a model as small as test_vit, peft's extra adapter layers
  make it slower); what it saves is the optimizer's memory and the file kept per task.
- **ViT from random weights**: no pretrained ViT weights are on these machines; its accuracies are those of a random
  backbone (near chance for every strategy) and do not rank the strategies for pretrained ViTs.

Command: `python main.py train --data DATA --model MODEL --strategy lora --lora-rank 8 --lora-alpha 16`.
""" + USAGE
    print(text)
    if not args.no_write:
        from engine.files import atomic_write_text

        atomic_write_text(OUT, text)
        print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
