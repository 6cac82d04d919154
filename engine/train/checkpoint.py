"""Where a run stands, and its run folder: the files a run writes as it trains, and the checkpoints it resumes from.

``RunState`` holds the run's counters, best epoch and metrics so far; ``Live`` the phase being trained and
``EpochProgress`` the epoch. ``RunFolder`` writes the folder's settings when the run starts, the best weights, metrics
and summary after each epoch, and turns every failure to write into a sentence that says what is kept.

``Checkpointer`` writes ``checkpoint.pt`` at the end of every epoch, every CHECKPOINT_EVERY_S seconds within an epoch
and when the run is stopped: everything needed to continue exactly there (see ``Checkpointer.save``). A phase that
trains little saves the weights it does not train once, in ``checkpoint-base.pt``. ``open_for_resume``,
``dataset_of_run``, ``RunFolder.reopen`` and ``resume_phase`` read them back for ``engine.train.trainer.resume``.

A checkpoint is a torch file of tensors, numbers, strings, lists and dicts only: ``torch.load(path,
weights_only=True)`` reads it back, without running any code from the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Sampler

from engine import files
from engine.config import Phase, RunConfig, dumps
from engine.data.scan import DatasetIndex
from engine.errors import UserError
from engine.models.layers import LayerTree
from engine.project import runs

CHECKPOINT_EVERY_S = 300.0  # within an epoch, a checkpoint at least this often (besides one at each epoch's end)
CHECKPOINT_FORMAT = 1  # checkpoint.pt's layout; a checkpoint of another layout is not resumed
# A phase that trains less than this share of the parameters saves the rest once, in checkpoint-base.pt, when it
# starts; its checkpoints then hold only the trained parameters (and the buffers). Feature extraction on a large model
# writes kilobytes each epoch instead of the whole model.
BASE_SHARE = 0.5
NO_PARTIAL = (0.0, 0, 0, 0.0)  # the sums of an epoch's batches before any was trained: loss, correct, seen, seconds


# -- files -----------------------------------------------------------------------------------------------------------


def state_dict_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    # Contiguous CPU copies: safetensors refuses views, channels_last layouts and shared storage.
    from engine.train.lora import info_of, merged_state_dict  # LoRA: the plain model's weights, adapters merged

    state = merged_state_dict(model) if info_of(model) is not None else model.state_dict()
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    state = state_dict_for_saving(model)
    files.atomic_write(path, lambda tmp: save_file(state, str(tmp)))


def save_checkpoint(state: dict, path: Path) -> None:
    """A checkpoint as a torch file of tensors, numbers, strings, lists and dicts only: ``torch.load(path,
    weights_only=True)`` reads it back, without running any code from the file."""
    files.atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# -- random states ---------------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Python's, NumPy's and torch's random states (CUDA's too, once used), as tensors and plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state = {"python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# -- where the run stands --------------------------------------------------------------------------------------------


@dataclass
class Live:
    """The phase being trained."""

    index: int
    phase: Phase
    optimizer: torch.optim.Optimizer
    scheduler: object
    order: Sampler  # the shuffled order of its batches, with a resumable position (engine.train.loop.Order)
    fast: bool  # trained on cached outputs
    rng: dict  # the random state the phase began with
    base: str | None = None  # the token of checkpoint-base.pt when the phase's checkpoints hold only what trains
    epochs_done: int = 0
    since_best: int = 0  # epochs without a better validation accuracy (early stopping)


@dataclass
class EpochProgress:
    """The epoch being trained: batches done and their sums."""

    step: int
    loss: float
    correct: int
    seen: int
    began: float


@dataclass
class RunState:
    """The run's counters, its best epoch and metrics so far, the phase and epoch being trained, and its last
    checkpoint: what a checkpoint saves besides the weights and the optimizer."""

    epoch: int = 0  # the epoch being trained (1-based, over the whole run), or the last one completed
    global_step: int = 0  # optimizer steps over the whole run
    epochs_completed: int = 0
    best_acc: float | None = None
    best_loss: float = math.inf
    best_epoch: int | None = None
    records: list[dict] = field(default_factory=list)  # metrics.jsonl's lines so far; every checkpoint holds them
    started: float = field(default_factory=time.monotonic)
    seconds_before: float = 0.0  # training time before the run was resumed
    live: Live | None = None  # the phase being trained
    progress: EpochProgress | None = None  # the epoch being trained
    normal_order: Sampler | None = None  # the picture order of the normal path, shared by its phases
    saved_step: int | None = None  # global_step at the last checkpoint written; None: none yet
    saved_where: str = ""  # where the last checkpoint stands, in words

    @property
    def best(self) -> tuple[float | None, float, int | None]:
        return self.best_acc, self.best_loss, self.best_epoch

    def seconds(self) -> float:
        return self.seconds_before + time.monotonic() - self.started


def where(completed: int, step: int) -> str:
    if not completed and not step:
        return "before the first epoch"
    return f"at epoch {completed + 1}, step {step}" if step else f"after epoch {completed}"


# -- the run folder --------------------------------------------------------------------------------------------------


class RunFolder:
    """The run folder as a run writes it (``path`` is None until it is created or reopened)."""

    def __init__(self, state: RunState):
        self.state = state
        self.path: Path | None = None
        self.summary_extra: dict = {}

    def create(self, config: RunConfig, dataset: DatasetIndex, built, tree: LayerTree,
               held: contextlib.ExitStack) -> None:
        """A new run's folder with its settings; its lock is held by ``held``."""
        d = self.path = runs.create_run_dir(config.out, config.model.name, config.strategy, config.name)
        held.enter_context(runs.run_lock(d))

        from engine.train.multitask import model_json

        def write():
            files.atomic_write_text(d / runs.CONFIG, dumps(config))
            files.atomic_write_json(d / runs.LABELS, list(dataset.classes))
            files.atomic_write_json(d / runs.DATASET, {
                "root": dataset.root, "layout": dataset.layout, "split_source": dataset.split_source,
                "classes": list(dataset.classes), "counts": dataset.counts(),
                "samples": [{"path": s.path, "label": s.label, "split": s.split} for s in dataset.samples],
                "health": dataset.health.to_dict(),
                **({"formats": dataset.formats} if getattr(dataset, "formats", None) else {})})  # engine.data.formats
            files.atomic_write_json(d / runs.MODEL, {
                "model": config.model.name, "weights": config.model.weights, "weights_note": built.weights_note,
                "license": built.license, "head": built.head, "num_classes": len(dataset.classes),
                **model_json(getattr(dataset, "tasks", None), config.train),  # several tasks: engine.train.multitask
                "data_config": built.data_config,
                "stages": [{"name": s.name, "params": s.params} for s in tree.stages]})
            self.summary_extra = {"model": config.model.name, "strategy": config.strategy,
                                  "weights": config.model.weights, "total_epochs": config.total_epochs}
            self.write_summary("running", None)

        self.write("the run's settings", write)

    def reopen(self, run_dir: Path, ckpt: dict, config: RunConfig, model: nn.Module,
               phases: tuple[Phase, ...]) -> None:
        """The resumed run's folder: the weights and counters from the checkpoint, metrics.jsonl cut back to the
        epochs the checkpoint holds, the summary 'running' again."""
        if [list(p) for p in ckpt["phases"]] != [[p.name, p.epochs] for p in phases]:
            raise runs.RunFolderError(f"The phases in {run_dir / runs.CONFIG} differ from those the run was trained "
                                      f"with (the file was changed): start a new run from it instead.")
        try:
            model.load_state_dict(ckpt["model"])
        except (RuntimeError, KeyError, TypeError):
            raise runs.RunFolderError(f"The checkpoint in {run_dir} does not fit the model of its {runs.CONFIG} "
                                      "(one of them was changed): start a new run instead.") from None
        self.path = run_dir  # from here on, the summary says what happened
        for stale in run_dir.glob(".*.tmp"):  # half-written files of a process that was killed while writing them
            with contextlib.suppress(OSError):
                stale.unlink()
        s = self.state
        s.epoch = s.epochs_completed = int(ckpt["epochs_completed"])
        best = ckpt["best"]
        s.best_acc, s.best_loss, s.best_epoch = best["acc"], best["loss"], best["epoch"]
        s.records = list(ckpt["records"])
        s.global_step = s.saved_step = int(ckpt["global_step"])
        s.seconds_before = float(ckpt["seconds"])
        s.saved_where = where(s.epochs_completed, int(ckpt["step"]))
        self.summary_extra = {"model": config.model.name, "strategy": config.strategy,
                              "weights": config.model.weights, "total_epochs": sum(p.epochs for p in phases)}
        self.write("the metrics", lambda: runs.rewrite_jsonl(run_dir / runs.METRICS, s.records))
        if ckpt["best_is_model"]:  # written after the checkpoint: perhaps not yet
            self.save_best(model)
        self.write_running()

    def write(self, what: str, write: Callable[[], None]) -> None:
        """``write()``, a file of the run folder; a full disk or a read-only folder becomes a sentence that says
        what is kept and how to go on."""
        try:
            write()
        except OSError as exc:
            sentence = runs.write_problem(what, self.path, exc)
            if self.state.saved_step is not None:
                best = " and the best weights" if self.state.best_epoch is not None else ""
                sentence += (f", then resume the run (python main.py train --resume {self.path}): its last "
                             f"checkpoint ({self.state.saved_where}){best} {'are' if best else 'is'} kept.")
            else:
                sentence += ", then start the run again."
            raise runs.RunFolderError(sentence) from None

    def write_summary(self, status: str, error: str | None) -> None:
        s = self.state
        files.atomic_write_json(self.path / runs.SUMMARY, {
            "status": status, "best_val_acc": s.best_acc, "best_epoch": s.best_epoch,
            "epochs_completed": s.epochs_completed, "error": error,
            "seconds": round(s.seconds(), 2), **self.summary_extra})

    def write_running(self) -> None:
        self.write("the run's summary", lambda: self.write_summary("running", None))

    def save_best(self, model: nn.Module) -> None:
        self.write("the best weights", lambda: save_weights(model, self.path / runs.BEST))
        if getattr(model, "transfer_studio_lora", None) is not None:  # LoRA: the adapters alone too
            from engine.train.lora import ADAPTER_FILE, save_adapter

            self.write("the adapter file", lambda: save_adapter(model, self.path / ADAPTER_FILE))

    def append_metrics(self, record: dict) -> None:
        self.write("the epoch's metrics", lambda: runs.append_jsonl(self.path / runs.METRICS, record))

    def close(self, status: str, error: str | None) -> str | None:
        """The summary says how the run ended, and a completed run's checkpoints go (nothing is left to resume: the
        disk space goes back). Returns a sentence when the summary could not be written."""
        try:
            self.write_summary(status, error)
        except OSError as exc:
            return f"The run's summary could not be written ({exc.strerror or exc})."
        if status == "completed":
            for name in (runs.CHECKPOINT, runs.CHECKPOINT_BASE):
                with contextlib.suppress(OSError):
                    (self.path / name).unlink(missing_ok=True)
        return None


# -- checkpoints -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mark:
    """Where a checkpoint stands, with what the run state does not hold yet at the end of an epoch."""

    completed: int  # epochs completed over the run
    step: int  # batches of the next epoch already trained
    partial: tuple  # their sums: loss, correct, seen, seconds
    records: list[dict]
    best: tuple  # (accuracy, loss, epoch) of the best epoch
    since_best: int
    phase_epochs: int  # the phase's epochs complete
    phase_done: bool
    best_is_model: bool  # the model's weights are the best epoch's


class Checkpointer:
    """Writes the run's checkpoints into its folder: ``model`` is the run's model, ``backoff`` its memory backoff
    (engine.train.loop.Backoff), whose number of pieces a resumed run keeps."""

    def __init__(self, folder: RunFolder, model: nn.Module, phases: tuple[Phase, ...],
                 scaler: torch.amp.GradScaler, backoff):
        self.folder, self.state = folder, folder.state
        self.model, self.phases, self.scaler, self.backoff = model, phases, scaler, backoff
        self.last = time.monotonic()  # when the last checkpoint was written (or the phase began)

    def due(self) -> bool:
        """Whether a checkpoint is due within the epoch (CHECKPOINT_EVERY_S since the last one)."""
        return time.monotonic() - self.last >= CHECKPOINT_EVERY_S

    def save(self, mark: Mark) -> None:
        """Write checkpoint.pt: everything a resumed run needs to continue exactly here (see CHECKPOINT_FORMAT)."""
        live, s = self.state.live, self.state
        rng = rng_state()
        # The weights the phase does not train are in checkpoint-base.pt, except at the end of a phase that another
        # follows: the next phase replaces that file, so this checkpoint holds all the weights.
        done = mark.phase_done
        base = live.base if not (done and live.index + 1 < len(self.phases)) else None
        partial = mark.partial
        state = {
            "format": CHECKPOINT_FORMAT,
            "phases": [[p.name, p.epochs] for p in self.phases],
            "epochs_completed": mark.completed,
            "phase": live.index + 1 if done else live.index,  # the phase to continue (or to start)
            "phase_epochs": 0 if done else mark.phase_epochs,  # its epochs complete
            "step": mark.step,  # batches of the next epoch already trained
            "partial": [float(partial[0]), int(partial[1]), int(partial[2]), float(partial[3])],
            "global_step": s.global_step,
            "since_best": 0 if done else mark.since_best,
            "best": {"acc": mark.best[0], "loss": float(mark.best[1]), "epoch": mark.best[2]},
            "best_is_model": mark.best_is_model,  # the weights below are the best epoch's
            "records": mark.records,
            "model": self._model_state(trained_only=base is not None),
            "base": base,  # the token of checkpoint-base.pt, which holds the other weights; None: all are here
            "optimizer": None if done else live.optimizer.state_dict(),
            "scheduler": None if done else live.scheduler.state_dict(),
            "fast_order": live.order.position() if live.fast and not done else None,
            "normal_order": s.normal_order.position() if s.normal_order is not None else None,
            "scaler": self.scaler.state_dict(),
            "pieces": self.backoff.pieces,
            "rng": rng,
            "phase_rng": rng if done else live.rng,
            "seconds": s.seconds(),
        }
        self.folder.write("the checkpoint", lambda: save_checkpoint(state, self.folder.path / runs.CHECKPOINT))
        self.last = time.monotonic()
        s.saved_step = s.global_step
        s.saved_where = where(mark.completed, mark.step)

    def save_start(self, index: int, phase_rng: dict) -> None:
        """Write checkpoint.pt at the start of phase ``index``, before any of its steps (before its frozen layers'
        outputs are computed): a run stopped or killed then resumes with that phase, from the beginning."""
        s = self.state
        state = {
            "format": CHECKPOINT_FORMAT, "phases": [[p.name, p.epochs] for p in self.phases],
            "epochs_completed": s.epochs_completed, "phase": index, "phase_epochs": 0, "step": 0,
            "partial": list(NO_PARTIAL), "global_step": s.global_step, "since_best": 0,
            "best": {"acc": s.best_acc, "loss": float(s.best_loss), "epoch": s.best_epoch},
            "best_is_model": False, "records": list(s.records), "model": self._model_state(trained_only=False),
            "base": None, "optimizer": None, "scheduler": None, "fast_order": None,
            "normal_order": s.normal_order.position() if s.normal_order is not None else None,
            "scaler": self.scaler.state_dict(), "pieces": self.backoff.pieces, "rng": rng_state(),
            "phase_rng": phase_rng, "seconds": s.seconds(),
        }
        self.folder.write("the checkpoint", lambda: save_checkpoint(state, self.folder.path / runs.CHECKPOINT))
        self.last = time.monotonic()
        s.saved_step = s.global_step
        s.saved_where = where(s.epochs_completed, 0)

    def _model_state(self, trained_only: bool) -> dict[str, torch.Tensor]:
        """The model's state dict; with ``trained_only``, its trained parameters and all its buffers (BatchNorm
        statistics: small, and those of trained stages change)."""
        state = self.model.state_dict(keep_vars=True)
        return {k: v.detach() for k, v in state.items()
                if not trained_only or not isinstance(v, nn.Parameter) or v.requires_grad}

    def save_base(self) -> str:
        """Write checkpoint-base.pt (all the weights, as the phase begins); returns the token that ties the phase's
        checkpoints to it."""
        token = os.urandom(8).hex()  # not from the seeded random generators: the run's random numbers stay the same
        state = {"format": CHECKPOINT_FORMAT, "token": token, "model": self._model_state(trained_only=False)}
        self.folder.write("the checkpoint", lambda: save_checkpoint(state, self.folder.path / runs.CHECKPOINT_BASE))
        return token

    def save_mid_epoch(self) -> None:
        s = self.state
        p, live = s.progress, s.live
        self.save(Mark(completed=s.epoch - 1, step=p.step,
                       partial=(p.loss, p.correct, p.seen, time.monotonic() - p.began), records=s.records,
                       best=s.best, since_best=live.since_best, phase_epochs=live.epochs_done, phase_done=False,
                       best_is_model=False))

    def on_stop(self, log: Callable[[str, str], None]) -> None:
        """A stopped run keeps the steps it made since the last checkpoint: resuming it loses nothing."""
        s = self.state
        if s.live is None or s.progress is None or s.global_step == s.saved_step:
            return
        try:
            self.save_mid_epoch()
        except UserError as exc:
            log(f"The run stopped, but its last steps could not be saved: {exc}", "warning")


# -- resuming --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resumable:
    """A stopped run, read back: its settings, its checkpoint (with the base weights merged in), its model.json."""

    config: RunConfig
    checkpoint: dict
    model_info: dict


def open_for_resume(run_dir: Path, held: contextlib.ExitStack, device: str | None,
                    workers: int | None) -> Resumable:
    """Check that the run can continue, hold its lock (in ``held``) and read its settings and checkpoint, with
    ``device`` and ``workers`` replaced when given; RunFolderError (a sentence) otherwise, with nothing in the folder
    changed."""
    from engine.config import load

    problem = runs.resume_problem(run_dir)
    if problem:
        raise runs.RunFolderError(problem)
    held.enter_context(runs.run_lock(run_dir))
    config = load(run_dir / runs.CONFIG)
    train = {k: v for k, v in {"device": device, "workers": workers}.items() if v is not None}
    if train:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, **train))
    ckpt = _read_checkpoint(run_dir)
    try:
        model_info = json.loads((run_dir / runs.MODEL).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise runs.RunFolderError(f"The run's {runs.MODEL} in {run_dir} cannot be read: "
                                  f"start the run again from its {runs.CONFIG}.") from None
    return Resumable(config, ckpt, model_info)


def _read_checkpoint(run_dir: Path) -> dict:
    again = f"start the run again from its {runs.CONFIG}"
    try:
        ckpt = torch.load(run_dir / runs.CHECKPOINT, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise runs.RunFolderError(f"The run in {run_dir} has no checkpoint to resume from: {again}.") from None
    except Exception as exc:  # unpickling refused, a cut file, ...: the checkpoint cannot be trusted
        raise runs.RunFolderError(f"The checkpoint in {run_dir} cannot be read ({exc.__class__.__name__}): it is "
                                  f"damaged or was not written by Transfer Studio; {again}.") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise runs.RunFolderError(f"The checkpoint in {run_dir} was written by another version of Transfer "
                                  f"Studio and cannot be continued: {again}.")
    if ckpt.get("base"):  # the weights the phase does not train
        try:
            base = torch.load(run_dir / runs.CHECKPOINT_BASE, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise runs.RunFolderError(f"The checkpoint's saved weights ({runs.CHECKPOINT_BASE}) in {run_dir} "
                                      f"cannot be read ({exc.__class__.__name__}): {again}.") from None
        if not isinstance(base, dict) or base.get("token") != ckpt["base"]:
            raise runs.RunFolderError(f"The files {runs.CHECKPOINT} and {runs.CHECKPOINT_BASE} in {run_dir} do "
                                      f"not belong together (one was replaced): {again}.")
        ckpt["model"] = {**base["model"], **ckpt["model"]}
    return ckpt


def dataset_of_run(run_dir: Path) -> DatasetIndex:
    """The pictures the run trained on, from its dataset.json: a resumed run continues on exactly them."""
    from engine.data.scan import HealthReport, Sample

    try:
        info = json.loads((run_dir / runs.DATASET).read_text(encoding="utf-8"))
        samples = [Sample(s["path"], int(s["label"]), s["split"]) for s in info["samples"]]
        dataset = DatasetIndex(info["root"], info["layout"], list(info["classes"]), samples, HealthReport(),
                               info["split_source"])
    except (OSError, ValueError, KeyError, TypeError):
        raise runs.RunFolderError(f"The run's list of pictures ({runs.DATASET}) in {run_dir} cannot be read, so it "
                                  f"cannot continue on the same pictures: start it again from its "
                                  f"{runs.CONFIG}.") from None
    from engine.data.formats import real_path  # a slide's tile or a DICOM's frame: its file

    missing = [s.path for s in samples if s.split in ("train", "val") and not Path(real_path(s.path)).is_file()]
    if missing:
        raise runs.RunFolderError(f"{len(missing)} of the pictures the run trained on are no longer there (for "
                                  f"example {missing[0]}): put them back to resume it, or start a new run.")
    return dataset


def resume_phase(ckpt: dict, live: Live) -> tuple[int, tuple]:
    """The checkpoint's phase, continued within: its optimizer, schedule, order, epochs and random state. Returns
    where in its epoch to continue: (batches already trained, their sums)."""
    live.optimizer.load_state_dict(ckpt["optimizer"])
    live.scheduler.load_state_dict(ckpt["scheduler"])
    if live.fast:
        live.order.generator.set_state(ckpt["fast_order"])
    live.epochs_done, live.since_best = int(ckpt["phase_epochs"]), int(ckpt["since_best"])
    resume_at = (int(ckpt["step"]), tuple(ckpt["partial"]))
    set_rng_state(ckpt["rng"])  # (at a phase's start, the state is phase_rng, set by the trainer)
    return resume_at
