"""Using a trained model: load it from a run folder or an exported bundle, predict pictures and folders, write CSV.

``load_run_model(path)`` accepts a run folder (``model.json`` + ``labels.json`` + ``best.safetensors``) or an
exported bundle folder (``model.json`` with its classes + ``model.safetensors``). The model is rebuilt from its
architecture name with random weights, then every tensor is loaded from the file (strictly: a file that does not fit
is refused with a sentence), so no pickled code is ever run.

``predict_paths(bundle, paths)`` returns one ``Prediction`` per picture, in order: folders are opened (pictures in
sub-folders too, sorted by path); a picture that cannot be read gives a row with an ``error`` sentence, not a crash.
When a given folder sorts its pictures into sub-folders named like the model's classes (``new/ants/1.jpg``), each
such picture's ``true_class`` is known (``true_class_of``), and ``summary_line`` adds the accuracy over them.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn

from engine import files
from engine.project import runs
from engine.errors import ModelError, Stopped, UserError  # Stopped: the work was stopped on request
from engine.data.images import ImageError, is_image_path
from engine.words import plural  # part of this module's API since before engine.words

__all__ = ["BUNDLE_WEIGHTS", "HeatMap", "ModelBundle", "Prediction", "Stopped", "Tally", "accuracy_words",
           "expand_paths", "heat_map", "infer", "load_run_model", "plural", "predict_paths", "summary_line",
           "tally", "true_class_of", "write_csv"]

BUNDLE_WEIGHTS = "model.safetensors"
BATCH_SIZE = 32
CPU_BATCH_SIZE = 64  # evaluation and prediction on a CPU: the frozen pass's batch (engine.train.prefix.PREFIX_BATCH)
ProgressCallback = Callable[[int, int], None]


@dataclass
class ModelBundle:
    """A model ready for inference, with what is needed to feed it and to read its outputs."""

    model: nn.Module  # in eval mode, on ``device``
    classes: tuple[str, ...]
    data_config: dict  # input_size, interpolation, mean, std, crop_pct, crop_mode
    architecture: str  # timm:<name> or torchvision:<name>
    head: str
    device: str
    source: str  # the run or bundle folder
    info: dict = field(default_factory=dict)  # the folder's model.json
    kind: str = "run"  # "run" or "bundle"
    # Temperature scaling (engine.train.calibrate): logits are divided by it before the softmax, so that every
    # confidence shown or written is calibrated; 1 for a run trained before calibration existed.
    temperature: float = 1.0

    def __post_init__(self) -> None:
        from engine.data.loaders import build_transforms, decode_size

        from engine.data.cache import ImageCache

        self.transform = build_transforms(self.data_config, "none")[1]
        self.draft = decode_size(self.data_config)
        # Read only (get): the pictures a run trained on are there already, decoded and resized; others are decoded.
        self.cache = ImageCache.for_data_config(self.data_config)
        # Lab pictures are read with the model's own data settings, and so are the views of them (engine.data.formats).
        self.formats = self.cache.formats
        if self.data_config.get("formats"):
            from engine.data.formats import activate

            activate(self.formats)

    def preprocess(self, path: str | os.PathLike) -> torch.Tensor:
        """The network's input for one picture; raises ImageError."""
        from engine.data.loaders import load_picture  # every channel of lab pictures when the model takes them

        return self.transform(load_picture(path, draft_size=self.draft, settings=self.formats))


@dataclass(frozen=True)
class Prediction:
    """One picture's prediction; when it could not be read, ``error`` says why and the rest is empty."""

    path: str
    class_name: str | None = None
    class_index: int | None = None
    confidence: float | None = None  # the probability of the predicted class
    top: tuple[tuple[str, float], ...] = ()  # the k most probable classes, most probable first
    error: str | None = None
    true_class: str | None = None  # the class its folder names, when a given folder sorts pictures by class
    # How unlike the training pictures it is (engine.shift.ood: higher is less like them), and whether it is under
    # the run's threshold; None when not scored.
    ood_score: float | None = None
    in_domain: bool | None = None

    @property
    def correct(self) -> bool | None:
        """Whether the prediction is the true class: None when either is unknown."""
        if self.true_class is None or self.class_name is None:
            return None
        return self.class_name == self.true_class


@dataclass(frozen=True)
class HeatMap:
    cam: np.ndarray  # float32 (height, width) in [0, 1], at the picture's size
    class_index: int
    class_name: str
    probability: float


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path.parent} has no {path.name}: {what}") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} cannot be read ({getattr(exc, 'strerror', None) or 'damaged'}): "
                        "the folder is damaged; train or export the model again.") from None


def _model_folder(path: str | os.PathLike) -> Path:
    folder = Path(path).expanduser()
    if folder.is_file() and folder.name in (runs.MODEL, runs.BEST, BUNDLE_WEIGHTS):
        folder = folder.parent
    if not folder.exists():
        raise UserError(f"The folder {folder} does not exist.")
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder: give a run folder or an exported model folder.")
    if not (folder / runs.MODEL).is_file():
        raise UserError(f"{folder} is not a run folder or an exported model: it has no {runs.MODEL}.")
    return folder


def load_run_model(path: str | os.PathLike, device: str = "auto") -> ModelBundle:
    """The model of a run folder (its best epoch) or of an exported bundle folder, ready for inference."""
    folder = _model_folder(path)
    info = _read_json(folder / runs.MODEL, "give a run folder or an exported model folder.")
    if "classes" in info:  # an exported bundle
        kind, classes, architecture = "bundle", info["classes"], info.get("architecture", "")
        weights = folder / BUNDLE_WEIGHTS
        if not weights.is_file():
            raise UserError(f"{folder} holds no {BUNDLE_WEIGHTS}: export the run again with --format bundle.")
    else:
        kind, architecture = "run", info.get("model", "")
        classes = _read_json(folder / runs.LABELS, "the run folder is incomplete; train again.")
        weights = folder / runs.BEST
        if not weights.is_file():
            raise UserError(f"The run in {folder} has no saved weights (it ended before its first epoch was "
                            "complete): train it again.")
    if not isinstance(classes, list) or len(classes) < 2 or not architecture or "data_config" not in info:
        raise UserError(f"{folder / runs.MODEL} is incomplete: train or export the model again.")
    from engine.models.build import build_model
    from engine.models.weights import read_weight_file
    from engine.train.runtime import resolve_device  # the one reading of a device setting, training's too

    torch_device = resolve_device(device)
    built = build_model(architecture, "none", len(classes), allow_download=False)
    from engine.models.build import adapt_input  # a model of every channel of lab pictures: its first layer

    built = adapt_input(built, info["data_config"])
    model = built.model
    from engine.train.multitask import flat_classes, rebuild_head  # several tasks: one head each

    tasks = rebuild_head(model, built.head, info)
    classes = flat_classes(tasks) if tasks else classes  # the output's columns, task by task
    state = read_weight_file(weights)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise ModelError(f"The weights in {weights} do not fit {architecture} with {len(classes)} classes: the "
                         "folder was changed by hand; train or export the model again.") from None
    model.eval().to(torch_device)
    data_config = dict(info["data_config"])
    for key in ("input_size", "mean", "std"):
        data_config[key] = tuple(data_config[key])
    temperature = info.get("temperature", 1.0)
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
        raise UserError(f"{folder / runs.MODEL} has an invalid temperature ({temperature!r}): train or export the "
                        "model again.")
    return ModelBundle(model, tuple(str(c) for c in classes), data_config, architecture,
                       info.get("head", built.head), str(torch_device), str(folder), info, kind, float(temperature))


# --- inputs ---------------------------------------------------------------------------------------------------


def expand_paths(paths: Iterable[str | os.PathLike]) -> list[tuple[str, str | None]]:
    """(picture path, None) for each picture given or found in a given folder (sorted, hidden entries skipped), or
    (path, sentence) for a path that gives no picture."""
    items: list[tuple[str, str | None]] = []
    for given in paths:
        p = Path(given).expanduser()
        if p.is_dir():
            found = sorted(str(f) for f in _walk(p))
            items.extend((f, None) for f in found)
            if not found:
                items.append((str(p), "The folder holds no pictures (JPEG, PNG, BMP, GIF, TIFF or WebP)."))
        elif p.exists():
            items.append((str(p), None))  # decoding decides whether it is a picture
        else:
            items.append((str(p), "The file does not exist."))
    return items


def true_class_of(path: str | os.PathLike, roots: Iterable[str | os.PathLike], classes: Sequence[str]) -> str | None:
    """The class named by the nearest folder above ``path`` whose name is one of ``classes`` (case-insensitive; an
    exact match wins), looking only at the sub-folders of the given folder (of ``roots``) that holds the picture, not
    at that folder itself nor above it: ``new/ants/1.jpg`` given ``new`` is an ant, given ``new/ants`` it is unknown.
    None when no such sub-folder names a class (or the picture is in none of ``roots``)."""
    exact = {c: c for c in classes}
    folded: dict[str, str | None] = {}
    for c in classes:  # two classes differing only in case: a folder name in a third case names neither
        folded[c.casefold()] = None if c.casefold() in folded else c
    picture = Path(os.path.abspath(Path(path).expanduser()))
    best: Path | None = None  # the deepest given folder that holds the picture
    for root in roots:
        root = Path(os.path.abspath(Path(root).expanduser()))
        if root != picture and root in picture.parents and (best is None or len(root.parts) > len(best.parts)):
            best = root
    if best is None:
        return None
    for folder in picture.parents:
        if folder == best:
            return None
        found = exact.get(folder.name) or folded.get(folder.name.casefold())
        if found is not None:
            return found
    return None


def _walk(folder: Path):
    for root, dirs, names in os.walk(folder, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__MACOSX"]
        for name in names:
            if is_image_path(name):
                yield Path(root) / name


# --- inference ------------------------------------------------------------------------------------------------


FAST_FROM = 64  # pictures from which evaluation and prediction first make the faster model (a few seconds' work)


def last_linear(model: nn.Module, head: str) -> nn.Linear | None:
    """The classifier's last linear layer: the head itself, or the last nn.Linear inside it; None when there is
    none (a convolutional head)."""
    try:
        module = model.get_submodule(head) if head else model
    except AttributeError:
        module = model
    if isinstance(module, nn.Linear):
        return module
    found = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return found[-1] if found else None


class _WithFeatures(nn.Module):
    """The model's logits followed by its penultimate features (the input of the classifier's last linear layer),
    as one tensor: a single output, so the fast path (ONNX export, checked against the model) takes it like any
    model, and the OOD score, drift report and adaptation get the same speed as prediction."""

    def __init__(self, model: nn.Module, linear: nn.Linear):
        super().__init__()
        self.model = model
        self._linear = [linear]  # not a child: its parameters are the model's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        caught: list[torch.Tensor] = []
        hook = self._linear[0].register_forward_hook(lambda m, inputs, out: caught.append(inputs[0]))
        try:
            logits = self.model(x)
        finally:
            hook.remove()
        return torch.cat([logits.float(), caught[-1].flatten(1).float()], 1)


def _fast_model(bundle: ModelBundle, n: int, features: bool = False,
                model: nn.Module | None = None) -> tuple[nn.Module, bool]:
    """The module for ``n`` pictures, and whether its outputs carry the penultimate features after the logits
    (``features`` asked and the model has a linear classifier). On a CPU from FAST_FROM pictures: the training's
    fast path (ONNX Runtime, else BatchNorm folded), checked against the model on a probe batch and kept on the
    bundle for its own model; the model itself for a few pictures, on a GPU, or when that fails."""
    base = bundle.model if model is None else model
    linear = last_linear(base, bundle.head) if features else None
    module = _WithFeatures(base, linear) if linear is not None else base
    if n < FAST_FROM or torch.device(bundle.device).type != "cpu":
        return module, linear is not None
    from engine.train.fastpath import PROBE_BATCH, fast_inference

    key = "_fast_features" if linear is not None else "_fast"
    cached = getattr(bundle, key, None) if model is None else None
    if cached is not None:
        return cached, linear is not None
    example = torch.randn(PROBE_BATCH, *bundle.data_config["input_size"], generator=torch.Generator().manual_seed(0))
    try:
        fast, _ = fast_inference(module, example)
    except Exception:  # any export or tracing problem: the model itself is always right
        fast = module
    if model is None:
        object.__setattr__(bundle, key, fast)
    return fast, linear is not None


def loader(bundle: ModelBundle, use_cache: bool = True):
    """``load(path) -> (tensor | None, error | None)`` with the bundle's preprocessing, from its picture cache when
    ``use_cache`` and it holds the picture."""
    cache = bundle.cache if use_cache else None

    def load(path: str):
        try:
            image = cache.get(path) if cache is not None else None
            return (bundle.preprocess(path) if image is None else bundle.transform(image)), None
        except ImageError as exc:
            return None, str(exc)
        except OSError as exc:  # the cache's folder, a file that vanished
            return None, f"The picture cannot be read ({exc.strerror or exc})."
    return load


def batches(bundle: ModelBundle, paths: Sequence[str], batch_size: int = BATCH_SIZE,
            stop: threading.Event | None = None, stop_message: str = "The work was stopped.", use_cache: bool = True):
    """(indices of the pictures read, their tensor batch | None, {index: error | None}) per chunk of ``paths``, the
    next chunk's pictures prepared on a few threads while this one is used."""
    load = loader(bundle, use_cache)
    chunks = [list(range(s, min(len(paths), s + batch_size))) for s in range(0, len(paths), batch_size)]
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = [pool.submit(load, paths[i]) for i in chunks[0]] if chunks else []
        for k, chunk in enumerate(chunks):
            if stop is not None and stop.is_set():
                for future in pending:
                    future.cancel()
                raise Stopped(stop_message)
            loaded = [f.result() for f in pending]
            # The next batch's pictures are prepared while the model computes this one.
            pending = [pool.submit(load, paths[i]) for i in chunks[k + 1]] if k + 1 < len(chunks) else []
            good = [j for j, (t, _) in enumerate(loaded) if t is not None]
            batch = torch.stack([loaded[j][0] for j in good]) if good else None
            yield [chunk[j] for j in good], batch, dict(zip(chunk, (e for _, e in loaded)))


def infer_outputs(bundle: ModelBundle, paths: Sequence[str], *, features: bool = False,
                  model: nn.Module | None = None, batch_size: int = BATCH_SIZE,
                  on_progress: ProgressCallback | None = None, stop: threading.Event | None = None,
                  stop_message: str = "Prediction was stopped before the end.", use_cache: bool | None = None
                  ) -> tuple[np.ndarray, np.ndarray | None, list[str | None]]:
    """The raw logits of each path (float32, NaN rows for pictures that cannot be read), with ``features`` also
    their penultimate features (None when the model has no linear classifier), and per path None or the sentence
    saying why it could not be read. ``model``: another module of the bundle's architecture (an adapted copy), run
    in eval mode. The path of training's frozen pass: pictures from the picture cache (``use_cache``; by default
    from FAST_FROM pictures) or decoded on a few threads that prepare the next batch while the model computes this
    one, the model through ONNX Runtime on a CPU, and glibc keeping its large blocks (no page faults for every
    batch's tensors: engine.train.runtime.cpu_allocator_for_training)."""
    from engine.train.runtime import cpu_allocator_for_training

    n, k = len(paths), len(bundle.classes)
    logits = np.full((n, k), np.nan, dtype=np.float32)
    feats: np.ndarray | None = None
    errors: list[str | None] = [None] * n
    device = torch.device(bundle.device)
    if device.type == "cpu":
        batch_size = max(batch_size, CPU_BATCH_SIZE)  # fewer meetings of the threads per picture
    cache = n >= FAST_FROM if use_cache is None else use_cache
    allocator = cpu_allocator_for_training() if device.type == "cpu" and n >= FAST_FROM else contextlib.nullcontext()
    was_training = model.training if model is not None else None
    if model is not None:
        model.eval()
    done = 0
    todo = list(range(n))
    if model is None and device.type == "cpu" and n >= FAST_FROM:
        # Pictures whose frozen-layer outputs the run's training stored: only the layers above them run
        # (engine.results.stored); the others take the fast path below.
        from engine.results.stored import read_back

        linear = last_linear(bundle.model, bundle.head) if features else None
        found = read_back(bundle, paths, linear)
        if found is not None:
            indices, stored_logits, stored_feats = found
            logits[indices] = stored_logits
            if stored_feats is not None:
                feats = np.full((n, stored_feats.shape[1]), np.nan, dtype=np.float32)
                feats[indices] = stored_feats
            todo = sorted(set(todo) - set(indices))
            done = len(indices)
            if on_progress is not None:
                on_progress(done, n)
    try:
        with allocator:
            net, with_features = _fast_model(bundle, len(todo), features, model) if todo else (None, False)
            rest = [paths[i] for i in todo]
            for chunk, batch, errs in batches(bundle, rest, batch_size, stop, stop_message, cache) if todo else ():
                indices = [todo[j] for j in chunk]
                for j, e in errs.items():
                    errors[todo[j]] = e
                if batch is not None:
                    with torch.inference_mode():
                        out = net(batch.to(device)).float().cpu().numpy()
                    logits[indices] = out[:, :k]
                    if with_features:
                        if feats is None:
                            feats = np.full((n, out.shape[1] - k), np.nan, dtype=np.float32)
                        feats[indices] = out[:, k:]
                done += len(errs)
                if on_progress is not None:
                    on_progress(done, n)
    finally:
        if model is not None:
            model.train(was_training)
    return logits, feats, errors


def calibrated(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Class probabilities (float32) of raw logits divided by the temperature; NaN rows stay NaN."""
    return torch.from_numpy(np.asarray(logits, dtype=np.float32) / float(temperature)).softmax(1).numpy()


def infer(bundle: ModelBundle, paths: Sequence[str], *, batch_size: int = BATCH_SIZE,
          on_progress: ProgressCallback | None = None, stop: threading.Event | None = None,
          stop_message: str = "Prediction was stopped before the end.",
          temperature: float | None = None) -> tuple[np.ndarray, list[str | None]]:
    """Class probabilities for each path (float32, NaN rows for pictures that cannot be read) and, per path, None or
    the sentence saying why it could not be read (infer_outputs' fast path). The probabilities are calibrated with
    the bundle's temperature, or with ``temperature`` when given (1: the model's own, uncalibrated)."""
    logits, _, errors = infer_outputs(bundle, paths, batch_size=batch_size, on_progress=on_progress, stop=stop,
                                      stop_message=stop_message)
    return calibrated(logits, bundle.temperature if temperature is None else temperature), errors


Scorer = Callable[[np.ndarray, "np.ndarray | None"], tuple[np.ndarray, float]]


def predict_paths(bundle: ModelBundle, paths_or_folders: Iterable[str | os.PathLike], *, top_k: int = 3,
                  batch_size: int = BATCH_SIZE, on_progress: ProgressCallback | None = None,
                  stop: threading.Event | None = None, scorer: Scorer | None = None) -> list[Prediction]:
    """One Prediction per picture (folders opened), in order, with the ``top_k`` most probable classes. ``scorer``
    (engine.shift.ood): (logits, penultimate features | None) -> (how unlike the training pictures each one is,
    the threshold above which it is flagged); each readable row then carries ``ood_score`` and ``in_domain``."""
    if top_k < 1:
        raise UserError("The number of classes to show (top k) must be at least 1.")
    given = list(paths_or_folders)
    from engine.results.slides import expand_slides, slide_answers  # a slide: its tiles, then one answer for it

    items = expand_slides(expand_paths(given), bundle.formats)
    roots = [Path(g).expanduser() for g in given if Path(g).expanduser().is_dir()]
    truth = [true_class_of(path, roots, bundle.classes) if roots else None for path, _ in items]
    readable = [i for i, (_, error) in enumerate(items) if error is None]
    logits, features, errors = infer_outputs(bundle, [items[i][0] for i in readable], features=scorer is not None,
                                             batch_size=batch_size, on_progress=on_progress, stop=stop)
    probs = calibrated(logits, bundle.temperature)
    scores, threshold = scorer(logits, features) if scorer is not None else (None, None)
    rows: list[Prediction] = [Prediction(path, error=error, true_class=truth[i])
                              for i, (path, error) in enumerate(items)]
    k = min(top_k, len(bundle.classes))
    for j, (row_index, p, error) in enumerate(zip(readable, probs, errors)):
        path = items[row_index][0]
        if error is not None:
            rows[row_index] = Prediction(path, error=error, true_class=truth[row_index])
            continue
        order = np.argsort(-p, kind="stable")[:k]
        top = tuple((bundle.classes[c], float(p[c])) for c in order)
        extra = {} if scores is None else {"ood_score": float(scores[j]), "in_domain": bool(scores[j] <= threshold)}
        rows[row_index] = Prediction(path, top[0][0], int(order[0]), top[0][1], top, true_class=truth[row_index],
                                     **extra)
    return slide_answers(rows, probs, [items[i][0] for i in readable], bundle.classes, k)


# --- summary --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    total: int  # rows
    predicted: int  # rows that were read and predicted
    unreadable: int
    known: int  # predicted rows whose true class is known
    right: int  # of those, predicted correctly

    @property
    def accuracy(self) -> float | None:
        return self.right / self.known if self.known else None


def tally(predictions: Sequence[Prediction]) -> Tally:
    predicted = [p for p in predictions if p.error is None]
    known = [p for p in predicted if p.correct is not None]
    return Tally(len(predictions), len(predicted), len(predictions) - len(predicted), len(known),
                 sum(bool(p.correct) for p in known))


def accuracy_words(t: Tally) -> str:
    """'accuracy 87 % on 30 pictures whose folder names their class', or '' when no true class is known."""
    if not t.known:
        return ""
    return (f"accuracy {100 * t.accuracy:.0f} % on {plural(t.known, 'picture')} whose folder names "
            f"{'its' if t.known == 1 else 'their'} class")


def summary_line(predictions: Sequence[Prediction], unreadable_always: bool = False) -> str:
    """'4 pictures: 3 predicted, 1 could not be read; accuracy 67 % on 3 pictures whose folder names their class',
    '1 picture predicted' when every picture was read (unless ``unreadable_always``: '1 picture: 1 predicted, 0 could
    not be read', the command line's fixed form)."""
    t = tally(predictions)
    if t.unreadable or unreadable_always:
        line = f"{plural(t.total, 'picture')}: {t.predicted} predicted, {t.unreadable} could not be read"
    else:
        line = f"{plural(t.total, 'picture')} predicted"
    accuracy = accuracy_words(t)
    return f"{line}; {accuracy}" if accuracy else line


def heat_map(bundle: ModelBundle, picture, target_class: int | None = None) -> HeatMap:
    """The class-activation map of one picture (a path or a PIL image) for ``target_class`` (default: the
    predicted one)."""
    from engine.results.cam import explain

    from engine.train.calibrate import apply_temperature

    cam, target, probs = explain(bundle.model, picture, bundle.data_config, target_class, head=bundle.head)
    if bundle.info.get("tasks"):  # several tasks: the class's probability within its task (engine.results.multitask)
        from engine.train.multitask import task_probability

        return HeatMap(cam, target, bundle.classes[target], task_probability(bundle.info, probs, target))
    probs = apply_temperature(np.asarray(probs, dtype=np.float64)[None], bundle.temperature)[0]
    return HeatMap(cam, target, bundle.classes[target], float(probs[target]))


# --- CSV ------------------------------------------------------------------------------------------------------


def write_csv(predictions: Sequence[Prediction], path: str | os.PathLike, top_k: int | None = None) -> Path:
    """Write the predictions as CSV (atomically): path, prediction, confidence, then top2, top2_confidence, ...,
    and error (empty for pictures that were read); when any picture's true class is known, then also true_class and
    correct (yes, no, or empty where unknown) at the end."""
    path = Path(path).expanduser()
    if not path.parent.is_dir():
        raise UserError(f"The folder {path.parent} for the CSV file does not exist: create it or choose another.")
    k = top_k or max((len(p.top) for p in predictions), default=1)
    header = ["path", "prediction", "confidence"]
    for i in range(2, k + 1):
        header += [f"top{i}", f"top{i}_confidence"]
    header.append("error")
    truth = any(p.true_class is not None for p in predictions)
    if truth:
        header += ["true_class", "correct"]
    scored = any(p.ood_score is not None for p in predictions)  # engine.shift.ood: how unlike the training pictures
    if scored:
        header += ["ood_score", "in_domain"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for p in predictions:
        row = [p.path, p.class_name or "", "" if p.confidence is None else f"{p.confidence:.6f}"]
        for i in range(1, k):
            row += [p.top[i][0], f"{p.top[i][1]:.6f}"] if i < len(p.top) else ["", ""]
        row.append(p.error or "")
        if truth:
            row += [p.true_class or "", {True: "yes", False: "no", None: ""}[p.correct]]
        if scored:
            row += ["" if p.ood_score is None else f"{p.ood_score:.6f}",
                    {True: "true", False: "false", None: ""}[p.in_domain]]
        writer.writerow(row)
    try:
        files.atomic_write_text(path, buffer.getvalue())
    except OSError as exc:
        raise UserError(f"The CSV file {path} cannot be written ({exc.strerror or exc}): choose another place."
                        ) from None
    return path
