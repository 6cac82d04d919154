"""Benchmark: lab pictures (engine.data.formats) against ordinary JPEGs, on ants-vs-bees.

The ants-vs-bees pictures (``../shared/datasets/hymenoptera``) are converted four ways, each kept in the same train/
val folders:

- ``greyscale JPEG``: the baseline (the colour photos in grey, quality 95);
- ``12-bit DICOM``: the grey values as 12-bit stored values with a rescale (slope 1, intercept -1024) and the file's
  window spanning the whole range, half of them compressed (RLE Lossless), read with the file's window;
- ``16-bit TIFF``: the grey values in a narrow part of the 16-bit range (1000 + 40 x grey: 1000 .. 11200 of 65535),
  read with the percentile stretch (0.5 .. 99.5 %, each picture);
- ``16-bit TIFF, dataset stretch``: the same files, stretched with the dataset's percentiles.

Measured:
1. Feature extraction accuracy (ImageNet MobileNetV2 from ``../shared/weights``, the frozen backbone and a new head,
   a few epochs, the same seed) on the validation pictures of each version. Aim: within 2 points of the greyscale JPEG.
2. Decode speed into the picture cache (engine.data.cache.ImageCache.load on an empty cache: decode, stretch or
   window, resize to the working size, write), per format, as milliseconds per picture; rounds alternate the formats
   and the ratio to the greyscale JPEG comes from the same rounds.
3. The JPEG path's cost: load_rgb (through the suffix test in front of the dispatcher) against Pillow's path called
   directly, alternated.

    python bench/bench_formats.py [--epochs 3] [--pictures 40] [--rounds 3] [--out docs/formats.md]

Skips (exit 0, nothing written) when ../shared is absent.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

SHARED = ROOT.parent / "shared"
HYMENOPTERA = SHARED / "datasets" / "hymenoptera"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_in1k.safetensors"


def convert(source: Path, target: Path) -> dict[str, Path]:
    """The four versions of the dataset (see the module's note); returns their folders."""
    import numpy as np
    from PIL import Image

    from lab_pictures import write_dicom, write_tiff

    folders = {"greyscale JPEG": target / "jpeg", "12-bit DICOM": target / "dicom", "16-bit TIFF": target / "tiff16"}
    k = 0
    for path in sorted(source.rglob("*.jpg")):
        rel = path.relative_to(source)
        grey = Image.open(path).convert("L")
        out = folders["greyscale JPEG"] / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        grey.save(out, quality=95)
        values = np.asarray(grey).astype(np.uint16)
        stored = np.rint(values * (4095 / 255)).astype(np.uint16)
        write_dicom((folders["12-bit DICOM"] / rel).with_suffix(".dcm"), stored, RescaleSlope=1,
                    RescaleIntercept=-1024, WindowCenter=1024, WindowWidth=4096,
                    syntax="rle" if k % 2 else None)
        write_tiff((folders["16-bit TIFF"] / rel).with_suffix(".tif"), (1000 + 40 * values).astype(np.uint16))
        k += 1
    return folders


def accuracy(folder: Path, out: Path, epochs: int, **data_settings) -> tuple[float, float]:
    """(best validation accuracy, seconds) of a feature-extraction run on ``folder``."""
    from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from engine.data import formats
    from engine.train.trainer import fit

    formats.activate(formats.FormatSettings())
    config = RunConfig(data=DataConfig(source=str(folder), **data_settings),
                       model=ModelConfig("torchvision:mobilenet_v2", str(WEIGHTS)), strategy="feature-extraction",
                       epochs=epochs, lr=1e-3,
                       train=TrainConfig(batch_size=32, workers=0, seed=0), out=str(out))
    began = time.perf_counter()
    result = fit(config)
    if result.status != "completed":
        raise SystemExit(f"the run on {folder} did not complete: {result.error}")
    return float(result.best_val_acc), time.perf_counter() - began


def decode_speed(folders: dict[str, Path], pictures: int, rounds: int, scratch: Path) -> dict[str, list[float]]:
    """Milliseconds per picture into an empty picture cache, per format, for each round (formats alternated)."""
    from engine.data.cache import ImageCache
    from engine.data.formats import FormatSettings

    chosen = {name: sorted(p for p in folder.rglob("*") if p.is_file())[:pictures] for name, folder in folders.items()}
    times: dict[str, list[float]] = {name: [] for name in folders}
    warm = ImageCache(256, root=scratch / "cache-warm-up", formats=FormatSettings())
    for name in folders:  # not measured: the first use of each decoder and of the resize imports and compiles code
        for path in chosen[name][:3]:
            warm.load(path)
    shutil.rmtree(scratch / "cache-warm-up", ignore_errors=True)
    for r in range(rounds):
        order = list(folders) if r % 2 == 0 else list(reversed(folders))
        for name in order:
            root = scratch / f"cache-{r}-{name.replace(' ', '-')}"
            cache = ImageCache(256, root=root, formats=FormatSettings())
            began = time.perf_counter()
            for path in chosen[name]:
                cache.load(path)
            times[name].append(1000 * (time.perf_counter() - began) / len(chosen[name]))
            shutil.rmtree(root, ignore_errors=True)
    return times


def jpeg_path_cost(folder: Path, pictures: int, rounds: int) -> tuple[float, float]:
    """(ms per picture through load_rgb, ms per picture through Pillow's path directly), medians, alternated."""
    from engine.data.images import load_ordinary, load_rgb

    paths = sorted(folder.rglob("*.jpg"))[:pictures]
    through, direct = [], []
    for path in paths[:3]:  # warm-up, not measured
        load_rgb(path, draft_size=(256, 256))
    for r in range(rounds * 2):
        fn, into = (load_rgb, through) if r % 2 == 0 else (load_ordinary, direct)
        began = time.perf_counter()
        for path in paths:
            fn(path, draft_size=(256, 256))
        into.append(1000 * (time.perf_counter() - began) / len(paths))
    return statistics.median(through), statistics.median(direct)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--pictures", type=int, default=40, help="pictures per format for the decode speed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "docs" / "formats.md"))
    args = parser.parse_args()
    if not HYMENOPTERA.is_dir() or not WEIGHTS.is_file():
        print(f"skipped: needs {HYMENOPTERA} and {WEIGHTS} (only on the project's own machines)")
        return 0
    import torch

    scratch = Path(tempfile.mkdtemp(prefix="bench-formats-"))
    os.environ["TRANSFER_STUDIO_CACHE"] = str(scratch / "picture-cache")
    try:
        folders = convert(HYMENOPTERA, scratch / "data")
        speeds = decode_speed(folders, args.pictures, args.rounds, scratch)
        through, direct = jpeg_path_cost(HYMENOPTERA, args.pictures, args.rounds)
        results = {}
        for name, folder in folders.items():
            results[name] = accuracy(folder, scratch / "runs", args.epochs)
            print(f"{name}: {results[name][0]:.4f} ({results[name][1]:.0f} s)", flush=True)
        results["16-bit TIFF, dataset stretch"] = accuracy(folders["16-bit TIFF"], scratch / "runs", args.epochs,
                                                           stretch="dataset")
        print(f"16-bit TIFF, dataset stretch: {results['16-bit TIFF, dataset stretch'][0]:.4f}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    write_doc(Path(args.out), results, speeds, (through, direct), args, torch.get_num_threads())
    return 0


def write_doc(out: Path, results, speeds, jpeg_cost, args, threads: int) -> None:
    base_acc = results["greyscale JPEG"][0]
    base_speed = statistics.median(speeds["greyscale JPEG"])
    lines = ["# Lab pictures: DICOM, 16-bit and float TIFF, many channels, whole slides", "",
             "## What is read, and how", "",
             "Every view of a picture -- the Data step's grid and preview, the health report, the picture cache, the "
             "augmentation preview, training, evaluation and prediction -- goes through one dispatcher "
             "(`engine.data.formats.open_picture`) with the data settings of `config.toml`'s `[data]` (the window's "
             "*How pictures are read* box; `python main.py scan DATA --data-setting NAME=VALUE`). A trained model "
             "keeps them in `model.json`'s `data_config.formats`, so evaluation, prediction and exported bundles "
             "read new pictures as training did. Their defaults change nothing for JPEG and PNG folders.", "",
             "| Pictures | How they are read | Settings |", "|---|---|---|",
             "| DICOM (`.dcm`, or no extension with the DICOM preamble) | pydicom: the modality LUT (rescale slope "
             "and intercept), then the file's VOI LUT or window centre/width (an automatic percentile window when "
             "there is none), MONOCHROME1 inverted; compressed syntaxes (JPEG lossless, JPEG 2000, RLE) through "
             "pydicom's plugins, else a sentence naming the syntax | `dicom_frames` = middle / all, "
             "`dicom_window` = file / auto |",
             "| 16-bit, 32-bit and float TIFF (tifffile) | contrast stretched between two percentiles, never "
             "clipped at 255; stacks by their middle plane | `stretch` = picture / dataset, `stretch_low`, "
             "`stretch_high` (0.5, 99.5) |",
             "| More than three channels | the first three as red, green and blue, three chosen ones, or every "
             "channel into the model (its first convolution adapted by timm's `adapt_input_conv`; ONNX input with N "
             "channels; augmentation then geometric only) | `channels` = rgb / 3,2,1 / all |",
             "| Whole slides (`.svs`, `.ndpi`, ... and pyramidal TIFF; OpenSlide) | cut into tiles at a "
             "magnification; tiles that are mostly glass skipped (tissue: saturation above Otsu's threshold or grey "
             "below 220, on a low-resolution view; numpy, scikit-image is not installed); each tile has its slide's "
             "class and split; prediction answers once per slide (mean of its tiles) with a heat map of the tiles | "
             "`slide_tile` (512), `slide_magnification` (0 = full resolution), `slide_tissue` (0.5) |", "",
             "Patient data stays private: nothing read from a DICOM's tags but the pixel description is used; "
             "captions show the file name; a test trains, evaluates, predicts and exports on DICOMs carrying a "
             "name, ID, birth date and institution and finds none of them in any output file.", "",
             "Screenshots: the Data step and the preview on 12-bit DICOMs (`formats-dicom-browser.png`, "
             "`formats-dicom-preview.png`), on 16-bit fluorescence TIFFs (`formats-tiff16-*.png`) and on a slide's "
             "tiles (`formats-slide-*.png`), made by `python bench/screenshots_formats.py`.", "",
             "## Measured", "",
             "Made by `python bench/bench_formats.py` (engine.data.formats). Ants vs bees "
             "(`../shared/datasets/hymenoptera`, 245 training and 153 validation pictures) converted to greyscale "
             "JPEG, to 12-bit DICOM (rescale slope 1, intercept -1024, the file's window spanning the range; every "
             "other file RLE-compressed) and to 16-bit TIFF in a narrow range (1000 + 40 x grey: 1000 .. 11200 of "
             "65535). The machine (2 CPU cores) was shared with other work while measuring: absolute times vary, "
             "the ratios come from the same alternated rounds.", "",
             f"## Feature extraction accuracy ({args.epochs} epochs, MobileNetV2 ImageNet weights, seed 0)", "",
             "| Pictures | Validation accuracy | Against greyscale JPEG | Aim (within 2 points) | Time |",
             "|---|---|---|---|---|"]
    for name, (acc, seconds) in results.items():
        diff = 100 * (acc - base_acc)
        met = "baseline" if name == "greyscale JPEG" else ("met" if abs(diff) <= 2 else "not met")
        lines.append(f"| {name} | {100 * acc:.1f} % | {diff:+.1f} points | {met} | {seconds:.0f} s |")
    lines += ["", f"## Decode speed into the picture cache ({args.pictures} pictures per format, {args.rounds} "
              "alternated rounds, empty cache each time: decode, window or stretch, resize to 256, write)", "",
              "| Format | ms per picture (median) | rounds | Against greyscale JPEG |", "|---|---|---|---|"]
    for name, values in speeds.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.1f} | {', '.join(f'{v:.1f}' for v in values)} | "
                     f"{median / base_speed:.2f} x |")
    through, direct = jpeg_cost
    lines += ["", "## The JPEG path", "",
              f"`load_rgb` on the colour JPEGs (a suffix test in front of the dispatcher): {through:.2f} ms per "
              f"picture; Pillow's path called directly: {direct:.2f} ms ({through / direct:.2f} x; medians of "
              f"{args.rounds} alternated rounds of {args.pictures} pictures, decoded at draft size 256).", "",
              f"torch threads: {threads}.", ""]
    out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
