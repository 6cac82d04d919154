"""Training: ``fit(config, on_event, stop) -> RunResult``.

One function runs a whole experiment: scan the data, build the model, resolve the strategy into phases, write the
run folder, then train phase by phase, reporting plain-data events and checking the stop token before every batch.
Expected problems (data, weights, settings, a diverging loss) end the run as ``failed`` with a sentence; nothing is
raised to the caller, so the window and the command line handle every outcome the same way.

Checkpoints and resuming: at the end of every epoch, every CHECKPOINT_EVERY_S seconds within an epoch, and when the
run is stopped, ``checkpoint.pt`` in the run folder receives everything needed to continue exactly there (see
``engine.train.checkpoint.Checkpointer.save``): the weights, the optimizer, schedule and gradient-scaler states, the
phase, epoch and step, the best epoch and the early-stopping count, the metrics so far, the random states and the
shuffled order's position. ``resume(run_dir)`` continues a stopped, failed or killed run from it, in the same folder;
on the CPU, with no loader processes, the result is the same as that of a run that was never interrupted
(tests/engine/test_resume.py). With loader processes, a run resumed within an epoch sees the same pictures in the same
order, but their random augmentation differs from the uninterrupted run's (the processes' random states are not
saved).

The ``Trainer`` conducts; the parts are its neighbours: engine.train.runtime (device, precision, threads),
engine.train.checkpoint (the run folder, checkpoints, resuming), engine.train.prefix (a phase's frozen-prefix fast
path), engine.train.optim (optimizer and schedule), engine.train.loop (epochs and steps) and engine.train.activity
(LayerActivity events).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from engine.config import Phase, RunConfig, TrainConfig
from engine.data.cache import ImageCache
from engine.data.loaders import (BatchNormalize, ImageDataset, auto_workers, build_transforms, decode_size,
                                 make_loader, outputs_uint8)
from engine.data.scan import DatasetIndex, scan, small_pictures_advice
from engine.errors import ConfigError, UserError
from engine.events import Failed, Finished, Log, PhaseStarted, RunStarted
from engine.models.build import build_model
from engine.models.layers import build_layer_tree
from engine.project import runs
from engine.train.checkpoint import (BASE_SHARE, Checkpointer, Live, RunFolder, RunState, dataset_of_run,
                                     open_for_resume, resume_phase, rng_state, seed_everything, set_rng_state)
from engine.train.fastpath import FastPath
from engine.train.loop import (Backoff, Data, Listener, Order, PhaseRun, Session, Stopped, run_phase,
                               shuffled_loader)
from engine.train.optim import make_optimizer, make_scheduler
from engine.train.prefix import fast_path
from engine.train.runtime import (Compiler, Runtime, auto_batch_size, cpu_allocator_for_training, resolve_runtime,
                                  one_thread_on_cpu, step_runtime, threads)
from engine.train.strategies import apply_phase, check_phase, param_groups, resolve_phases

EventCallback = Callable[[object], None]


@dataclass(frozen=True)
class RunResult:
    status: str  # "completed", "stopped" or "failed"
    run_dir: str | None
    best_val_acc: float | None
    best_epoch: int | None
    epochs_completed: int
    error: str | None


class Trainer:
    """One run. Use ``fit()`` or ``resume()``; the class conducts: it prepares the data, the model and the run
    folder, hands each phase to engine.train.loop, and turns every outcome into a RunResult."""

    def __init__(self, config: RunConfig | None, on_event: EventCallback | None, stop: threading.Event | None):
        self.config = config
        self.emit = Listener(on_event)
        self.stop = stop or threading.Event()
        self.state = RunState()
        self.folder = RunFolder(self.state)
        self.phases: tuple[Phase, ...] = ()
        self.checkpoint: dict | None = None  # what a resumed run continues from
        self.resume_dir: Path | None = None
        self.model_info: dict = {}
        self.tasks = None  # a multi-task run's tasks (engine.train.multitask)
        self._normal: tuple | None = None  # the normal path's loaders, shared by its phases
        self._told_bf16 = False  # the log said that training steps use bf16 on this CPU

    # -- the run ---------------------------------------------------------------------------------------------

    def run(self, dataset: DatasetIndex | None) -> RunResult:
        with contextlib.ExitStack() as self._held:  # the run folder's lock, held until the summary is written
            return self._run_and_report(dataset)

    def resume(self, run_dir: Path, *, device: str | None = None, workers: int | None = None) -> RunResult:
        with contextlib.ExitStack() as self._held:
            try:
                opened = open_for_resume(run_dir, self._held, device, workers)
            except Exception as exc:  # nothing was changed in the folder
                error = str(exc) if isinstance(exc, UserError) else (
                    f"The run in {run_dir} could not be resumed because of an unexpected error "
                    f"({exc.__class__.__name__}: {exc}).")
                summary = runs.read_summary(run_dir)
                result = RunResult("failed", str(run_dir), summary.get("best_val_acc"), summary.get("best_epoch"),
                                   summary.get("epochs_completed") or 0, error)
                self.emit(Failed(error, str(run_dir)))
                return result
            self.config, self.checkpoint, self.model_info = opened.config, opened.checkpoint, opened.model_info
            self.resume_dir = run_dir
            return self._run_and_report(None)

    def _run_and_report(self, dataset: DatasetIndex | None) -> RunResult:
        try:
            with contextlib.ExitStack() as self._resources:
                self._run(dataset)
            status, error = "completed", None
        except Stopped:
            status, error = "stopped", None
        except UserError as exc:
            status, error = "failed", str(exc)
        except Exception as exc:  # a bug, or a machine fault: still a sentence, and the details in error.log
            status, error = "failed", self._unexpected(exc)
        s, folder = self.state, self.folder.path or self.resume_dir
        result = RunResult(status, str(folder) if folder else None, s.best_acc, s.best_epoch, s.epochs_completed,
                           error)
        if self.folder.path is not None:
            problem = self.folder.close(status, error)
            if problem is not None:
                result = dataclasses.replace(result, status="failed", error=error or problem)
        if result.status == "failed":
            self.emit(Failed(result.error or "The run failed.", result.run_dir))
        else:
            self.emit(Finished(result.status, result.run_dir or "", s.best_acc, s.best_epoch, s.epochs_completed,
                               s.seconds()))
        return result

    def _unexpected(self, exc: Exception) -> str:
        where, run_dir = "", self.folder.path
        if run_dir is not None:
            try:
                (run_dir / runs.ERROR_LOG).write_text(traceback.format_exc(), encoding="utf-8")
                where = f" Details are in {run_dir / runs.ERROR_LOG}."
            except OSError:
                pass
        if isinstance(exc, OSError) and exc.errno in runs.FULL_DISK:
            return "The disk is full: free some space and start the run again." + where
        if isinstance(exc, torch.OutOfMemoryError):
            return "The model ran out of memory: choose a smaller batch size or a smaller model." + where
        return f"Training stopped because of an unexpected error ({exc.__class__.__name__}: {exc})." + where

    def _run(self, dataset: DatasetIndex | None) -> None:
        config = self.config.validate()
        if config.train.feature_views < 0:
            raise ConfigError("The number of augmented views (feature_views) cannot be negative; 0 chooses it.")
        runtime = resolve_runtime(config)
        if runtime.device.type == "cpu":
            self._resources.enter_context(cpu_allocator_for_training())
        seed_everything(config.train.seed)
        dataset = self._dataset(config, dataset)
        train_samples, val_samples = dataset.split("train"), dataset.split("val")
        if not train_samples or not val_samples:
            raise UserError("Training needs pictures for both training and validation: add pictures, or set a "
                            "validation fraction above 0.")
        if config.train.batch_size == 0:  # automatic: chosen for the device and the data, then written down
            bs = auto_batch_size(runtime.device, len(train_samples))
            config = self.config = dataclasses.replace(config, train=dataclasses.replace(config.train, batch_size=bs))
            self._log(f"Batch size: {bs} pictures per step (chosen automatically for this device and data).")
        built, tree = self._model_and_folder(config, dataset)
        small = small_pictures_advice([s.path for s in train_samples], max(built.data_config["input_size"][-2:]))
        if small is not None:
            self._log(small.message, "warning")
        resumed = self.checkpoint is not None
        self.emit(RunStarted(str(self.folder.path), tuple(dataset.classes), len(train_samples), len(val_samples),
                             runtime.description, sum(p.epochs for p in self.phases), tree.total_params,
                             resumed=resumed, epochs_done=self.state.epochs_completed))
        if resumed:
            self._log(f"Resuming the run in {self.folder.path} from its checkpoint {self.state.saved_where}.")
        from engine.train.multitask import task_words  # several tasks: each with its classes

        self._log(f"{len(train_samples)} training and {len(val_samples)} validation pictures, "
                  f"{task_words(self.tasks) if self.tasks else f'{len(dataset.classes)} classes'}; training on "
                  f"{runtime.description}.")
        session, data = self._session(config, runtime, built, tree, dataset)
        try:
            self._train_phases(session, built, data)
        except Stopped:
            session.checkpoints.on_stop(self._log)
            raise
        self._calibrate(session, data, dataset)

    def _calibrate(self, s: Session, data: Data, dataset: DatasetIndex) -> None:
        """Temperature scaling on the validation pictures, once training is over (engine.train.calibrate): every
        confidence the app later shows or writes for this run is calibrated with it. Skipped when stopped meanwhile."""
        from engine.train.calibrate import calibrate_run

        t = s.train
        val_loader = self._normal[1] if self._normal is not None else make_loader(
            data.val, t.batch_size, shuffle=False, workers=data.workers, pin_memory=data.pin)
        if self.tasks:  # several tasks: one temperature each (engine.train.task_fit)
            from engine.train.task_fit import calibrate_tasks

            calibrate_tasks(s, val_loader, self.folder, self.tasks, self._log)
            return
        result = calibrate_run(s, val_loader, self.folder, dataset.classes)
        if result is not None:
            self._log(result.sentence())

    def _dataset(self, config: RunConfig, dataset: DatasetIndex | None) -> DatasetIndex:
        """The pictures to train on: a resumed run's own, the given ones, or those of a scan of the config's
        source (its health advice logged)."""
        if self.checkpoint is not None:
            return dataset_of_run(self.resume_dir)
        if dataset is None:
            self._log(f"Scanning {config.data.source} ...")
            from engine.train.multitask import scan_for  # a CSV of several task columns (engine.train.multitask)

            dataset = scan_for(config, self.stop) or scan(config.data.source, val_fraction=config.data.val_fraction,
                           test_fraction=config.data.test_fraction, seed=config.data.split_seed,
                           split=config.data.split, stop=self.stop, exclude=config.data.exclude,
                           relabel=config.data.relabel, formats=config.data)
        if dataset.health.advice or dataset.health.unreadable:
            for line in dataset.health.lines():
                self._log(line, "warning")
        return dataset

    def _model_and_folder(self, config: RunConfig, dataset: DatasetIndex):
        """The model, its layer tree and the phases; then the run folder, created or (resuming) reopened."""
        ckpt = self.checkpoint
        # A resumed run takes its weights from the checkpoint, and its preprocessing from model.json.
        built = build_model(config.model.name, "none" if ckpt is not None else config.model.weights,
                            len(dataset.classes))
        if ckpt is not None:
            built = dataclasses.replace(built, data_config=self.model_info.get("data_config") or built.data_config)
        else:
            self._log(built.weights_note)
        from engine.models.build import adapt_to_data  # lab pictures: settings in data_config, N-channel input

        built = adapt_to_data(built, dataset if ckpt is None else None)
        from engine.train import multitask  # one head per task when the data has several (None: a single task)

        self.tasks = multitask.tasks_of(dataset, self.model_info)
        multitask.prepare_model(built, self.tasks, config.train)
        tree = build_layer_tree(built.model, built.head)
        if config.strategy == "lora":  # adapters in the chosen stages (engine.train.lora)
            from engine.train import lora

            tree = lora.attach_for_run(built.model, tree, config.lora, self._log)
        phases = self.phases = resolve_phases(config, tree)
        for phase in phases:
            check_phase(phase, tree)
        if ckpt is not None:
            self.folder.reopen(self.resume_dir, ckpt, config, built.model, phases)
        else:
            resolved = dataclasses.replace(config, phases=phases, data=dataclasses.replace(
                config.data, source=str(Path(dataset.root).resolve())))
            self.folder.create(resolved, dataset, built, tree, self._held)
        if config.strategy == "lora":
            self.folder.summary_extra["lora"] = lora.summary(built.model, tree)
        return built, tree

    def _session(self, config: RunConfig, runtime: Runtime, built, tree, dataset: DatasetIndex) -> tuple[Session, Data]:
        """The model on its device, the datasets, and what every phase trains with."""
        model, t, ckpt = built.model, config.train, self.checkpoint
        model.to(runtime.device, memory_format=torch.channels_last if runtime.channels_last else torch.preserve_format)
        if runtime.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels once
        data = self._data(t, runtime, built.data_config, dataset)
        criterion = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
        if self.tasks:  # several tasks: their masked, weighted losses (engine.train.multitask)
            from engine.train.multitask import criterion_for

            if config.distill.teacher:
                raise ConfigError("Distillation teaches one task; this run has several: choose one task (--tasks) "
                                  "to distil, or train without a teacher.")
            criterion = criterion_for(model, self.tasks, t)
            from engine.train.task_fit import TaskBest  # each task's figures, and its own best epoch where it can

            criterion.task_best = TaskBest(self.tasks, self.phases, model, self.state.records, self.folder)
        if config.distill.teacher:  # knowledge distillation: the teacher's soft targets with the labels
            from engine.train.distillation import distillation

            data, criterion, t = distillation(config, t, runtime, built.data_config, dataset, data, self.emit,
                                              self.stop, model=model, fresh=ckpt is None, head=built.head)
        normalize = (BatchNormalize(built.data_config["mean"], built.data_config["std"])
                     if outputs_uint8(t.augment) else None)
        scaler = torch.amp.GradScaler("cuda", enabled=runtime.amp_dtype == torch.float16)
        backoff = Backoff(runtime, self._log)
        if ckpt is not None:
            scaler.load_state_dict(ckpt["scaler"])
            backoff.pieces = int(ckpt["pieces"])
        checkpoints = Checkpointer(self.folder, model, self.phases, scaler, backoff)
        session = Session(model, tree, runtime, t, self.state, checkpoints, self.stop, self.emit, backoff, normalize,
                          criterion, scaler,
                          sum(p.epochs for p in self.phases), model_name=config.model.name)
        return session, data

    def _data(self, t: TrainConfig, runtime: Runtime, data_config: dict, dataset: DatasetIndex) -> Data:
        train_samples, val_samples = dataset.split("train"), dataset.split("val")
        # 8-bit pictures from the loaders, normalised by batch on the device (see engine.data.loaders.BatchNormalize).
        train_tf, eval_tf = build_transforms(data_config, t.augment, uint8=True)
        draft = decode_size(data_config)
        image_cache = None
        if t.cache_images:
            image_cache = ImageCache.for_data_config(data_config)
            plan = image_cache.prepare([s.path for s in train_samples + val_samples])
            self._log(plan.message(), "info" if plan.writable else "warning")
        # Not whether the pictures are in the cache yet: the same settings must give the same loaders (and so the
        # same augmentation) on a later run as on the first.
        workers = auto_workers(t.workers, len(train_samples), cached=image_cache is not None,
                               device=runtime.device.type)
        train_paths, train_labels = [s.path for s in train_samples], [s.label for s in train_samples]
        return Data(
            train=ImageDataset(train_paths, train_labels, train_tf, draft, image_cache),
            val=ImageDataset([s.path for s in val_samples], [s.label for s in val_samples], eval_tf, draft,
                             image_cache),
            train_eval=ImageDataset(train_paths, train_labels, eval_tf, draft, image_cache),
            workers=workers, pin=runtime.device.type == "cuda")

    # -- the phases ------------------------------------------------------------------------------------------

    def _train_phases(self, s: Session, built, data: Data) -> None:
        ckpt = self.checkpoint
        first = ckpt["phase"] if ckpt is not None else 0
        compiler = Compiler(s.train.compile, self._log)
        for index, phase in enumerate(self.phases):
            if index < first:
                continue
            resuming = ckpt is not None and index == first
            if resuming:  # the random state this phase began with: its augmented views come out the same
                set_rng_state(ckpt["phase_rng"])
            phase_rng = rng_state()
            trainable = apply_phase(s.model, s.tree, phase)
            fast = fast_path(s, data, built, phase, index, phase_rng)
            train_module, eval_module, train_loader, val_loader, order = self._path(s, data, fast, compiler)
            optimizer = make_optimizer(param_groups(s.model, s.tree, phase, s.train.weight_decay), self.config, phase)
            scheduler = make_scheduler(optimizer, phase, len(train_loader), self.config)
            live = Live(index, phase, optimizer, scheduler, order, fast is not None, phase_rng)
            resume_at = self._continue(s, live, trainable, resuming)
            if fast is not None and fast.split.kind == "head" and resume_at is None and s.train.fit_head:
                from engine.train.headfit import fit_fast_head
                from engine.train.task_fit import fit_task_heads  # several tasks: one head fit each

                # One CPU thread: L-BFGS on a small head is a stream of tiny operations, as the epochs below (on
                # 2 busy cores a 3-class head on 216 x 1280 outputs took 14-26 s with 2 threads, 0.8 s with one).
                with one_thread_on_cpu(s.runtime.device):
                    (fit_task_heads(fast, phase.name, s.train.label_smoothing, self._log, self.tasks) if self.tasks
                     else fit_fast_head(fast, phase.name, s.train.label_smoothing, self._log))
            s.state.live = live
            self.emit(PhaseStarted(index, phase.name, phase.epochs, phase.lr, trainable, s.tree.total_params,
                                   tuple(phase.stages)))
            self._log(f"Phase {index + 1}/{len(self.phases)} '{phase.name}': {trainable:,} of "
                      f"{s.tree.total_params:,} parameters train ({', '.join(phase.stages)}), {phase.epochs} epochs.")
            # Training only a head on stored outputs is a stream of tiny operations: on the CPU one thread does them
            # fastest (several threads spend more time meeting each other than computing, worst on a busy machine).
            one_thread = fast is not None and fast.split.kind == "head" and s.runtime.device.type == "cpu"
            with threads(1) if one_thread else contextlib.nullcontext():
                run_phase(s, PhaseRun(live, fast, train_module, eval_module, train_loader, val_loader,
                                      self._step_runtime(s, fast), resume_at))
            # The cached outputs' memory goes back before the next phase computes its own.
            s.state.live = None
            fast = train_loader = val_loader = train_module = eval_module = order = live = None

    def _path(self, s: Session, data: Data, fast: FastPath | None, compiler: Compiler) -> tuple:
        """The phase's training and evaluation modules, its loaders and its order: those of the fast path, or the
        normal path's, made once for the first phase that takes it."""
        if fast is not None:
            return (compiler(fast.split.train_suffix), compiler(fast.split.eval_suffix), fast.train_loader,
                    fast.val_loader, fast.order)
        if self._normal is None:
            t, ckpt = s.train, self.checkpoint
            drop_last = len(data.train) > t.batch_size  # a last batch of one would upset BatchNorm in train mode
            order = s.state.normal_order = Order(len(data.train), t.batch_size, drop_last, t.seed)
            if ckpt is not None and ckpt.get("normal_order") is not None:
                order.generator.set_state(ckpt["normal_order"])
            self._normal = (
                shuffled_loader(data.train, order, workers=data.workers, seed=t.seed, pin_memory=data.pin),
                make_loader(data.val, t.batch_size, shuffle=False, workers=data.workers, pin_memory=data.pin))
        module = compiler(s.model)
        return (module, module, *self._normal, s.state.normal_order)

    def _continue(self, s: Session, live: Live, trainable: int, resuming: bool) -> tuple[int, tuple] | None:
        """checkpoint-base.pt for a phase that trains little; a phase resumed within continues from the checkpoint
        (returns where in its epoch)."""
        ckpt = self.checkpoint
        within = resuming and ckpt["optimizer"] is not None  # within the phase: its optimizer, schedule, order
        if within and ckpt.get("base"):
            live.base = ckpt["base"]  # the weights this phase does not train are saved already
        elif trainable < BASE_SHARE * s.tree.total_params:
            live.base = s.checkpoints.save_base()
        return resume_phase(ckpt, live) if within else None

    def _step_runtime(self, s: Session, fast: FastPath | None) -> Runtime:
        """The phase's training steps' runtime (engine.train.runtime.step_runtime); the log says once that they
        use bf16 on this CPU."""
        stepping = step_runtime(s.runtime, s.train, head_only=fast is not None and fast.split.kind == "head")
        if stepping is not s.runtime and not self._told_bf16:
            self._told_bf16 = True
            self._log("Training steps use bfloat16 mixed precision: this CPU computes bf16 natively, which trains "
                      "faster than full precision with the same accuracy (validation stays in full precision). "
                      "Choose 'Full precision (fp32)' to turn it off.")
        return stepping

    def _log(self, message: str, level: str = "info") -> None:
        self.emit(Log(level, message))


def fit(config: RunConfig, on_event: EventCallback | None = None, stop: threading.Event | None = None, *,
        dataset: DatasetIndex | None = None) -> RunResult:
    """Run the experiment ``config`` describes. Never raises for a problem the user can fix: the result (and a
    ``Failed`` event) carries a sentence instead. ``stop.set()`` ends the run within one batch as ``stopped``."""
    return Trainer(config, on_event, stop).run(dataset)


def resume(run_dir: str | Path, on_event: EventCallback | None = None, stop: threading.Event | None = None, *,
           device: str | None = None, workers: int | None = None) -> RunResult:
    """Continue the run in ``run_dir`` from its checkpoint, with the settings of its config.toml (``device`` and
    ``workers`` may differ: the computer may have changed), in the same folder: metrics.jsonl is cut back to the
    epochs the checkpoint holds, so that each epoch appears once, and summary.json says 'running' again, then how
    the run ended. Never raises for a problem the user can fix: a run that completed, is still training elsewhere,
    or has no checkpoint gets a sentence (in the result and a ``Failed`` event), and its folder is left as it was.
    """
    return Trainer(None, on_event, stop).resume(Path(run_dir).expanduser(), device=device, workers=workers)


def result_json(result: RunResult) -> str:
    return json.dumps(dataclasses.asdict(result))
