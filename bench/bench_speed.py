"""Transfer Studio against the plain PyTorch recipe, on the same data, in one process.

    python bench/bench_speed.py                 # the full table (about 12 minutes on 2 idle CPU cores)
    python bench/bench_speed.py --epochs 2 --ft-epochs 2 --repeat 1 --no-write   # a smoke run

The baseline is the PyTorch transfer-learning tutorial
(https://pytorch.org/tutorials/beginner/transfer_learning_tutorial.html): torchvision ``ImageFolder``, a
``DataLoader`` with batches of 4 and 4 worker processes, SGD (lr 0.001, momentum 0.9) with ``StepLR(7, 0.1)``, and
its training loop, which decodes every picture and runs the whole network in every epoch. It uses the same model,
weights and transforms as the engine: torchvision's MobileNetV2 with the shared ImageNet weights, random resized
crops (scale 0.6-1, Transfer Studio's "light" augmentation) and flips for training, resize 256 and centre crop 224
for validation. Changes to the tutorial, so that both sides train the same model the same way: during feature
extraction its frozen body is kept in eval mode (the tutorial's ``model.train()`` would also update the frozen
BatchNorm statistics); when every layer is fine-tuned, SGD uses Nesterov momentum (timm's "sgd", which the engine
uses) and the learning rate decays to zero by cosine, step by step, over the run (the engine's default schedule).
With the tutorial's constant rate (its StepLR does not step before epoch 8) the final accuracy of a short run is a
snapshot of a noisy walk: at batch 4, with BatchNorm statistics from 4 pictures, it moved between 69 % and 91 % from
one epoch to the next, on both sides. Fine-tuning runs at the tutorial's batch of 4 and at the engine's automatic
batch for this device (16 on a CPU), each side at both, the learning rate scaled with the batch (0.001 per 4
pictures). The engine runs ``engine.train.trainer.fit`` with the same optimizer settings, batch size and epochs, starting
with an empty picture cache; everything else is automatic (loader processes, channels_last, precision: bf16
training steps on a CPU with native bf16 at batches of 8 or more).

Rows:
1. feature extraction (only the new head trains), N epochs: wall time of the whole run, from reading the folder to
   the last validation, and the ratio;
2. fine-tuning every layer: training pictures per second in the epochs after the first, and the ratio, at each
   batch size; 2c: each side at its own batch size (the tutorial's 4, the engine's automatic one);
3. the validation accuracy after the last epoch of each run (mean over the repeated runs);
4. with a CUDA GPU: fine-tuning timm's resnet50 (random weights), pictures per second, and the share of the GPU's
   bf16 peak that the engine's training reaches.

Needs ../shared (the ants/bees dataset and the MobileNetV2 weights); skips cleanly without it.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
DATA = SHARED / "datasets" / "hymenoptera"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_in1k.safetensors"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SCALE = (0.6, 1.0)  # engine.data.loaders.AUGMENT_PRESETS["light"]
BATCH, WORKERS, LR, MOMENTUM = 4, 4, 0.001, 0.9  # the tutorial's settings
# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, by a part of the device name.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.0,
                    "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "RTX 4090": 165.0}
RESNET50_TRAIN_GFLOP = 3 * 4.11  # per 224x224 picture: forward 4.11 GFLOP (2 x MACs), backward about twice that


# --- the baseline: the tutorial's code, with our model, weights and transforms ---------------------------------


def tutorial_loaders(data_dir: Path, batch: int = BATCH, workers: int = WORKERS, side: int = 224):
    import torch
    from torchvision import datasets, transforms

    data_transforms = {
        "train": transforms.Compose([
            transforms.RandomResizedCrop(side, scale=SCALE),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]),
        "val": transforms.Compose([
            transforms.Resize(int(side / 0.875)),
            transforms.CenterCrop(side),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]),
    }
    image_datasets = {x: datasets.ImageFolder(os.path.join(data_dir, x), data_transforms[x]) for x in ["train", "val"]}
    dataloaders = {x: torch.utils.data.DataLoader(image_datasets[x], batch_size=batch, shuffle=True,
                                                  num_workers=workers) for x in ["train", "val"]}
    sizes = {x: len(image_datasets[x]) for x in ["train", "val"]}
    return dataloaders, sizes, image_datasets["train"].classes


def tutorial_mobilenet(num_classes: int, feature_extraction: bool):
    import torch.nn as nn
    import torchvision
    from safetensors.torch import load_file

    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(load_file(str(WEIGHTS)))
    if feature_extraction:
        for param in model.parameters():
            param.requires_grad = False
    model.classifier[1] = nn.Linear(model.classifier[1].in_features, num_classes)
    return model


def tutorial_train(model, dataloaders, sizes, optimizer, scheduler, num_epochs, device, frozen_body=None,
                   per_batch=False):
    """The tutorial's train_model(), timing each phase; returns per-epoch records. ``per_batch``: the scheduler
    steps after every batch instead of every epoch."""
    import torch
    import torch.nn as nn

    criterion = nn.CrossEntropyLoss()
    records = []
    best_model_wts = copy.deepcopy(model.state_dict())
    best_acc = 0.0
    for epoch in range(num_epochs):
        record = {"epoch": epoch + 1}
        for phase in ["train", "val"]:
            began = time.perf_counter()
            if phase == "train":
                model.train()
                if frozen_body is not None:
                    frozen_body.eval()  # see the module docstring
            else:
                model.eval()
            running_loss = 0.0
            running_corrects = 0
            for inputs, labels in dataloaders[phase]:
                inputs = inputs.to(device)
                labels = labels.to(device)
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    _, preds = torch.max(outputs, 1)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                        if per_batch:
                            scheduler.step()
                running_loss += loss.item() * inputs.size(0)
                running_corrects += torch.sum(preds == labels.data)
            if phase == "train" and not per_batch:
                scheduler.step()
            record[f"{phase}_seconds"] = time.perf_counter() - began
            record[f"{phase}_acc"] = running_corrects.double().item() / sizes[phase]
            if phase == "val" and record["val_acc"] > best_acc:
                best_acc = record["val_acc"]
                best_model_wts = copy.deepcopy(model.state_dict())
        records.append(record)
    model.load_state_dict(best_model_wts)
    return records


def baseline_feature_extraction(epochs: int, seed: int = 0) -> dict:
    import torch
    from torch.optim import lr_scheduler

    torch.manual_seed(seed)  # the new head's weights and the loaders' order and crops
    began = time.perf_counter()
    dataloaders, sizes, classes = tutorial_loaders(DATA)
    model = tutorial_mobilenet(len(classes), feature_extraction=True)
    optimizer = torch.optim.SGD(model.classifier[1].parameters(), lr=LR, momentum=MOMENTUM)
    scheduler = lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    records = tutorial_train(model, dataloaders, sizes, optimizer, scheduler, epochs, torch.device("cpu"),
                             frozen_body=model.features)
    return {"seconds": time.perf_counter() - began, "val_acc": records[-1]["val_acc"], "records": records}


def baseline_fine_tuning(epochs: int, device="cpu", model_name: str = "mobilenet_v2", batch: int = BATCH,
                         workers: int = WORKERS, lr: float = LR, seed: int = 0) -> dict:
    import torch
    from torch.optim import lr_scheduler

    torch.manual_seed(seed)  # the new head's weights and the loaders' order and crops

    device = torch.device(device)
    dataloaders, sizes, classes = tutorial_loaders(DATA, batch=batch, workers=workers)
    if model_name == "mobilenet_v2":
        model = tutorial_mobilenet(len(classes), feature_extraction=False)
    else:
        import timm

        model = timm.create_model(model_name, num_classes=len(classes))
    model = model.to(device)
    # Nesterov momentum and a per-step cosine decay to zero, as the engine's SGD and schedule (see the docstring).
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=MOMENTUM, nesterov=True)
    scheduler = lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(dataloaders["train"]))
    records = tutorial_train(model, dataloaders, sizes, optimizer, scheduler, epochs, device, per_batch=True)
    steady = records[1:] or records
    rate = sum(sizes["train"] for _ in steady) / sum(r["train_seconds"] for r in steady)
    return {"images_per_s": rate, "val_acc": records[-1]["val_acc"], "records": records}


# --- the engine -----------------------------------------------------------------------------------------------


def engine_run(strategy: str, epochs: int, *, model: str = "torchvision:mobilenet_v2", weights: str | None = None,
               device: str = "auto", batch: int = BATCH, workers: int = -1, lr: float = LR, **train) -> dict:
    from engine import events as ev
    from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from engine.train.trainer import fit

    steps: dict[int, float] = {}
    logs: list[str] = []

    def on_event(event):
        if isinstance(event, ev.StepEnded):
            steps[event.epoch] = event.images_per_s  # the last step's: the epoch's training pictures per second
        elif isinstance(event, ev.Log):
            logs.append(event.message)

    settings = {"batch_size": batch, "optimizer": "sgd", "momentum": MOMENTUM, "weight_decay": 0.0,
                "schedule": "cosine", "warmup_epochs": 0.0, "label_smoothing": 0.0, "augment": "light",
                "device": device, "workers": workers, **train}
    with tempfile.TemporaryDirectory() as out:
        config = RunConfig(data=DataConfig(source=str(DATA)), model=ModelConfig(model, weights or str(WEIGHTS)),
                           strategy=strategy, epochs=epochs, lr=lr, train=TrainConfig(**settings), out=out)
        began = time.perf_counter()
        result = fit(config, on_event)
        seconds = time.perf_counter() - began
        if result.status != "completed":
            raise SystemExit(f"The engine's run did not complete: {result.error}")
        from engine.project import runs

        records = runs.read_metrics(result.run_dir)
    steady = [steps[e] for e in sorted(steps)[1:]] or list(steps.values())
    return {"seconds": seconds, "val_acc": records[-1]["val_acc"], "records": records, "logs": logs,
            "images_per_s": sum(steady) / len(steady),
            "bf16": any(m.startswith("Training steps use bfloat16") for m in logs)}


# --- the table ------------------------------------------------------------------------------------------------


def mean(runs: list[dict], key: str) -> float:
    return sum(r[key] for r in runs) / len(runs)


def each(runs: list[dict], key: str, fmt: str) -> str:
    """The runs' values, for the table: ``each(runs, "seconds", "{:.1f}")`` -> "88.1, 87.0"."""
    return ", ".join(fmt.format(r[key]) for r in runs)


def auto_batch() -> int:
    """The batch size the engine chooses by itself for these pictures on this machine's CPU (or GPU)."""
    import torch

    from engine.train.runtime import auto_batch_size

    return auto_batch_size("cuda" if torch.cuda.is_available() else "cpu", 245)


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from engine.data.loaders import available_cores

    text = f"{cpu}, {available_cores()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if torch.cuda.is_available():
        text += f", GPU: {torch.cuda.get_device_name(0)}"
    return text


def load() -> str:
    try:
        return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "n/a"


def bf16_peak(name: str) -> float | None:
    for key, value in BF16_PEAK_TFLOPS.items():
        if key in name:
            return value
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="feature-extraction epochs (default 10)")
    parser.add_argument("--ft-epochs", type=int, default=3, help="fine-tuning epochs, at least 2 (default 3)")
    parser.add_argument("--gpu-epochs", type=int, default=6, help="CUDA fine-tuning epochs (default 6)")
    parser.add_argument("--repeat", type=int, default=2, help="alternating fine-tuning pairs (default 2)")
    parser.add_argument("--no-write", action="store_true", help="print the table only, leave docs/benchmark.md")
    parser.add_argument("--only", choices=["fe", "ft", "gpu"], help="run one part")
    args = parser.parse_args(argv)
    if not (DATA.is_dir() and WEIGHTS.is_file()):
        print(f"Skipped: the benchmark needs {DATA} and {WEIGHTS} (only on the project's own machines).")
        return 0
    import torch

    os.environ["TRANSFER_STUDIO_CACHE"] = tempfile.mkdtemp(prefix="ts-bench-cache-")  # start with no cached picture
    load_before = load()
    print(f"Machine: {machine()}; load average before: {load_before}", flush=True)
    rows: list[tuple[str, str, str, str]] = []
    notes: list[str] = []

    if args.only in (None, "fe"):
        # Runs with seeds 0, 1, ... on each side (accuracies over 153 pictures move by a point or two with the
        # seed); the engine's first run starts with an empty picture cache, its later ones find the pictures there,
        # and a last run repeats seed 0 with the cache filled, which must give the first run's accuracy again.
        bases, engines = [], []
        for attempt in range(max(1, args.repeat)):
            print(f"Feature extraction, {args.epochs} epochs, seed {attempt}: baseline ...", flush=True)
            bases.append(baseline_feature_extraction(args.epochs, seed=attempt))
            print(f"  {bases[-1]['seconds']:.1f} s, val acc {bases[-1]['val_acc']:.4f}; engine "
                  f"({'empty picture cache' if attempt == 0 else 'pictures cached'}) ...", flush=True)
            engines.append(engine_run("feature-extraction", args.epochs, seed=attempt))
            print(f"  {engines[-1]['seconds']:.1f} s, val acc {engines[-1]['val_acc']:.4f}", flush=True)
        print("  engine, seed 0 again (pictures cached) ...", flush=True)
        again = engine_run("feature-extraction", args.epochs, seed=0)
        print(f"  {again['seconds']:.1f} s, val acc {again['val_acc']:.4f}", flush=True)
        eng, warm = engines[0], engines[1:] + [again]
        base_s, warm_s = mean(bases, "seconds"), mean(warm, "seconds")
        frozen = "int8" if any("ran in int8" in m for m in eng["logs"]) else "fp32"  # engine.train.prefix decides
        rows.append((f"1. Feature extraction, {args.epochs} epochs: wall time (tutorial: mean of {len(bases)} "
                     f"runs; engine: its first run, empty picture cache, frozen pass in {frozen})",
                     f"{base_s:.1f} s ({each(bases, 'seconds', '{:.1f}')})", f"{eng['seconds']:.1f} s",
                     f"{base_s / eng['seconds']:.1f}x"))
        rows.append((f"   same, engine runs with the decoded pictures cached (mean of {len(warm)})", f"{base_s:.1f} s",
                     f"{warm_s:.1f} s ({each(warm, 'seconds', '{:.1f}')})", f"{base_s / warm_s:.1f}x"))
        base_acc, eng_acc = mean(bases, "val_acc"), mean(engines, "val_acc")
        rows.append((f"3. Validation accuracy after the last epoch (feature extraction; mean of seeds 0-"
                     f"{len(bases) - 1})", f"{100 * base_acc:.1f} % ({each(bases, 'val_acc', '{:.1%}')})",
                     f"{100 * eng_acc:.1f} % ({each(engines, 'val_acc', '{:.1%}')})",
                     f"{100 * (eng_acc - base_acc):+.1f} points"))
        rows.append(("   engine, seed 0 repeated with the pictures cached: validation accuracy", "-",
                     f"{100 * again['val_acc']:.1f} %", "same as the first run" if again["val_acc"] == eng["val_acc"]
                     else f"differs from the first run ({100 * eng['val_acc']:.1f} %)"))
        notes += [m for m in eng["logs"] if "run once per picture" in m or "outputs are ready" in m]
        # The cold frozen pass (issue #20): precision fp32 against the automatic one (int8 where its check keeps the
        # accuracy), alternated pair by pair, each run with an empty store of frozen outputs, pictures cached.
        import re

        cold: dict[str, list[dict]] = {"fp32": [], "auto": []}
        for attempt in range(max(1, args.repeat)):
            for precision in ("fp32", "auto"):
                os.environ["TRANSFER_STUDIO_FROZEN_CACHE"] = tempfile.mkdtemp(prefix="ts-bench-frozen-")
                print(f"Feature extraction, seed {attempt}, frozen pass cold, precision {precision} ...", flush=True)
                run = engine_run("feature-extraction", args.epochs, seed=attempt, precision=precision)
                ready = next(m for m in run["logs"] if "outputs are ready" in m)
                n, s = map(float, re.search(r"\((\d+) pictures in ([\d.]+) s", ready).groups())
                run.update(per_s=n / s, n=int(n), int8="in int8" in ready)
                cold[precision].append(run)
                print(f"  {run['seconds']:.1f} s; frozen pass {n / s:.1f} pictures/s", flush=True)
        os.environ.pop("TRANSFER_STUDIO_FROZEN_CACHE", None)
        f32, auto = cold["fp32"], cold["auto"]
        ratio = mean(auto, "per_s") / mean(f32, "per_s")
        pairs = ", ".join(f"{b['per_s'] / a['per_s']:.2f}x" for a, b in zip(f32, auto))
        rows.append((f"1b. Feature extraction, {args.epochs} epochs, frozen pass cold (empty store of frozen outputs, "
                     "pictures cached), fp32 against automatic precision, alternated: wall time",
                     f"{base_s:.1f} s", f"fp32 {mean(f32, 'seconds'):.1f} s ({each(f32, 'seconds', '{:.1f}')}); "
                     f"auto {mean(auto, 'seconds'):.1f} s ({each(auto, 'seconds', '{:.1f}')})",
                     f"fp32 {base_s / mean(f32, 'seconds'):.1f}x; auto {base_s / mean(auto, 'seconds'):.1f}x"))
        rows.append((f"   the cold frozen pass alone ({f32[0]['n']:,} outputs): pictures/s, automatic precision "
                     f"(int8 kept in {sum(r['int8'] for r in auto)} of {len(auto)} runs) against fp32", "-",
                     f"fp32 {mean(f32, 'per_s'):.1f} ({each(f32, 'per_s', '{:.1f}')}); auto "
                     f"{mean(auto, 'per_s'):.1f} ({each(auto, 'per_s', '{:.1f}')})",
                     f"{ratio:.2f}x (pairs: {pairs}; aim 2x: {'met' if ratio >= 2 else 'not met'})"))
        rows.append(("   validation accuracy after the last epoch, fp32 against automatic frozen pass (same seeds)",
                     "-",
                     f"fp32 {100 * mean(f32, 'val_acc'):.1f} %; auto {100 * mean(auto, 'val_acc'):.1f} %",
                     f"{100 * (mean(auto, 'val_acc') - mean(f32, 'val_acc')):+.1f} points"))

    if args.only in (None, "ft"):
        epochs = max(2, args.ft_epochs)
        # Every layer trains, the same recipe on both sides: SGD with Nesterov momentum, a learning rate scaled with
        # the batch (0.001 per 4 pictures) decaying to zero by cosine over the run, the same epochs; at the
        # tutorial's batch of 4 and at the engine's automatic batch for this device.
        auto = auto_batch()
        batches = [BATCH] + ([auto] if auto != BATCH else [])
        # Baseline and engine alternate (A B A B ...): a burst of other work on the shared cores then shows up as a
        # spread between the pairs instead of silently favouring one side.
        results: dict[int, tuple[list, list]] = {b: ([], []) for b in batches}
        for attempt in range(max(1, args.repeat)):
            for batch in batches:
                lr = LR * batch / BATCH
                bases, engines = results[batch]
                print(f"Fine-tuning every layer, batch {batch}, lr {lr:g}, {epochs} epochs (pair {attempt + 1}): "
                      "baseline ...", flush=True)
                bases.append(baseline_fine_tuning(epochs, batch=batch, lr=lr, seed=attempt))
                print(f"  {bases[-1]['images_per_s']:.1f} pictures/s, val acc {bases[-1]['val_acc']:.4f}; "
                      "engine ...", flush=True)
                engines.append(engine_run("fine-tune-deep", epochs, batch=batch, lr=lr, seed=attempt,
                                          layer_decay=1.0))  # every stage at one rate
                print(f"  {engines[-1]['images_per_s']:.1f} pictures/s, val acc {engines[-1]['val_acc']:.4f}"
                      + (" (bf16 training steps)" if engines[-1]["bf16"] else ""), flush=True)
        for batch in batches:
            bases, engines = results[batch]
            base_rate, eng_rate = mean(bases, "images_per_s"), mean(engines, "images_per_s")
            pairs = ", ".join(f"{e['images_per_s'] / b['images_per_s']:.1f}x" for b, e in zip(bases, engines))
            how = ("the tutorial's batch" if batch == BATCH else "the engine's automatic batch on this device")
            how += ", bf16 training steps in the engine" if engines[-1]["bf16"] else ", fp32 on both sides"
            rows.append((f"2. Fine-tuning every layer, batch {batch} ({how}), epochs 2-{epochs}: training "
                         f"pictures/s (mean of {len(bases)} alternating runs)",
                         f"{base_rate:.1f} ({each(bases, 'images_per_s', '{:.1f}')})",
                         f"{eng_rate:.1f} ({each(engines, 'images_per_s', '{:.1f}')})",
                         f"{eng_rate / base_rate:.1f}x (pairs: {pairs})"))
            base_acc, eng_acc = mean(bases, "val_acc"), mean(engines, "val_acc")
            rows.append((f"3. Validation accuracy after the last epoch (fine-tuning every layer, batch {batch}, "
                         f"{epochs} epochs; mean of {len(bases)})",
                         f"{100 * base_acc:.1f} % ({each(bases, 'val_acc', '{:.1%}')})",
                         f"{100 * eng_acc:.1f} % ({each(engines, 'val_acc', '{:.1%}')})",
                         f"{100 * (eng_acc - base_acc):+.1f} points"))
        if auto != BATCH:
            base_rate = mean(results[BATCH][0], "images_per_s")
            eng_rate = mean(results[auto][1], "images_per_s")
            rows.append((f"2c. What each does out of the box: the engine at its automatic batch ({auto}) against "
                         f"the tutorial at its batch ({BATCH}): training pictures/s", f"{base_rate:.1f}",
                         f"{eng_rate:.1f}", f"{eng_rate / base_rate:.1f}x"))
        base_rate = mean(results[BATCH][0], "images_per_s")
        base = results[BATCH][0][-1]
        print("  engine, fine-tune-shallow (top quarter trains, frozen layers computed once) ...", flush=True)
        shallow = engine_run("fine-tune-shallow", epochs)
        once = next((m for m in shallow["logs"] if "outputs are ready" in m), "")
        seconds = once.split(" in ")[-1].split(" s")[0] if " in " in once else "?"
        print(f"  {shallow['images_per_s']:.1f} pictures/s, val acc {shallow['val_acc']:.4f}", flush=True)
        rows.append((f"2b. Engine's fine-tune-shallow (top quarter trains; frozen layers computed once in "
                     f"{seconds} s) vs the tutorial's fine-tuning of every layer: training pictures/s",
                     f"{base_rate:.1f}", f"{shallow['images_per_s']:.1f}",
                     f"{shallow['images_per_s'] / base_rate:.1f}x"))
        rows.append(("3. Validation accuracy after the last epoch (engine's fine-tune-shallow)",
                     f"{100 * base['val_acc']:.1f} %", f"{100 * shallow['val_acc']:.1f} %",
                     f"{100 * (shallow['val_acc'] - base['val_acc']):+.1f} points"))

    if args.only in (None, "gpu"):
        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
            epochs = max(2, args.gpu_epochs)
            print(f"CUDA: fine-tuning timm resnet50 on {name}, {epochs} epochs: baseline ...", flush=True)
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            workers = min(8, max(1, cores - 1))
            base = baseline_fine_tuning(epochs, "cuda", "resnet50", batch=64, workers=workers)
            eng = engine_run("fine-tune-deep", epochs, model="timm:resnet50", weights="none", device="cuda",
                             batch=64, layer_decay=1.0)
            peak = bf16_peak(name)
            share = (f"{100 * eng['images_per_s'] * RESNET50_TRAIN_GFLOP / (peak * 1000):.1f} % of "
                     f"{peak:.0f} TFLOP/s" if peak else "peak unknown")
            rows.append((f"4. CUDA ({name}), fine-tuning resnet50, batch 64: training pictures/s",
                         f"{base['images_per_s']:.0f}", f"{eng['images_per_s']:.0f}",
                         f"{eng['images_per_s'] / base['images_per_s']:.1f}x; engine at {share} bf16 peak"))
        else:
            rows.append(("4. CUDA fine-tuning of resnet50", "-", "-", "no CUDA GPU on this machine: skipped"))

    load_after = load()
    table = ["| measurement | PyTorch tutorial | Transfer Studio | ratio |", "|---|---|---|---|"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    text = "\n".join(table)
    print()
    print(text)
    print(f"\nLoad average before: {load_before}; after: {load_after} (other processes share these cores).")
    for note in notes:
        print(f"engine: {note}")
    if not args.no_write:
        write_doc(text, notes, load_before, load_after, args)
    return 0


def write_doc(table: str, notes: list[str], load_before: str, load_after: str, args) -> None:
    from engine.files import atomic_write_text

    doc = f"""# Benchmark: Transfer Studio against the PyTorch tutorial

Measured with
`python bench/bench_speed.py --epochs {args.epochs} --ft-epochs {args.ft_epochs} --repeat {args.repeat}`
on {time.strftime('%Y-%m-%d')}: {machine()}.
Load average (1, 5, 15 min) before: {load_before}; after: {load_after}. The machine's 2 cores are shared with other
work, so absolute times vary from run to run; both sides run in the same process, one after the other (the
fine-tuning runs alternate, baseline and engine, to expose bursts of other work).

{table}

What runs (see the docstring of `bench/bench_speed.py`): the baseline is the PyTorch transfer-learning tutorial's
code (ImageFolder, DataLoader with 4 worker processes, SGD with momentum 0.9), with the same model (torchvision
MobileNetV2), weights (`../shared/weights/mobilenet_v2_in1k.safetensors`) and transforms as the engine, on
`../shared/datasets/hymenoptera` (244 training, 153 validation pictures). Feature extraction: the tutorial's batch
of 4 and lr 0.001 on both sides (the tutorial's StepLR, the engine's cosine schedule). Fine-tuning every layer: the
same recipe on both sides (Nesterov momentum, a cosine decay to zero, lr 0.001 per 4 pictures of the batch), at the
tutorial's batch of 4 and at the engine's automatic batch for this machine, each pair of runs with its own seed.
The engine starts from an empty picture cache (the later runs reuse what the first one cached) and chooses
everything else itself.

Where the engine's time goes:

- Feature extraction: the frozen body runs once per picture -- three augmented views of each training picture, each
  validation picture once -- through ONNX Runtime (or, where a model does not export, a BatchNorm-folded
  channels_last graph); the epochs then train only the head on the stored outputs, which takes about a second. The
  baseline runs the whole network on every picture in every epoch. Pictures are decoded once into the picture cache
  (the second run finds them there).
- Fine-tuning every layer: the same arithmetic on both sides, done faster: channels_last convolutions; bf16 autocast
  for the training steps on a CPU with native bf16 (AVX-512 BF16 or AMX), with the strided depthwise convolutions
  kept in fp32 because oneDNN's bf16 kernels for them are 2-5 times slower than its fp32 ones (validation stays in
  fp32); glibc's allocator kept from unmapping large tensors after every step; pictures decoded once, normalised by
  batch, and read in the training process once they are all cached (a loader process would take a core from the
  training's threads). On CPUs without native bf16 (AVX2 only) bf16 would run twelve times slower than fp32, so
  there the engine stays in fp32.
- The engine's own fine-tuning strategy (`fine-tune-shallow`: the top quarter of the stages and the head) computes
  the frozen three quarters once, like feature extraction, and trains the rest on their outputs: row 2b.

The engine reads 245 training pictures where torchvision's ImageFolder reads 244 (it also accepts the GIF in
`train/ants`). Accuracies over 153 validation pictures move in steps of 0.65 points.

Engine messages from the feature-extraction run:

{chr(10).join(f'- {n}' for n in notes) or '- (not run)'}
"""
    atomic_write_text(REPO / "docs" / "benchmark.md", doc)
    print(f"Written to {REPO / 'docs' / 'benchmark.md'}")


if __name__ == "__main__":
    raise SystemExit(main())
