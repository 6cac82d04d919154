"""A retrain in seconds: train only the head again, on the frozen layers' stored outputs (feature extraction).

With feature extraction only the head trains, and the frozen layers' output for every picture a run has seen is kept
on disk (engine.train.store). After a few more pictures are labelled, a *Retrain* therefore does not need to pass the
pictures already seen through the network again: :func:`refit_head` makes a normal run (the same run folder,
settings, metrics, best weights, calibrated temperature and summary as engine.train.trainer writes, so that
evaluation, prediction and export work on it) in which

1. the frozen layers' outputs of every training picture (each augmented view the full run would compute) and
   validation picture are read back from the store -- a training output the earlier run computed in int8 from the
   int8 entries, as that run trained on them; only the pictures the store does not hold (the newly labelled pool
   pictures) pass through the frozen layers, run as the full run's fast path runs them (ONNX Runtime on the CPU;
   no int8 calibration for a few pictures), and are stored;
2. the head trains exactly as the full run's phase does on those outputs (engine.train.headfit's L-BFGS solution,
   on one CPU thread as the trainer solves it, then the phase's epochs, the best epoch kept);
3. the temperature is fitted on the validation pictures' stored outputs (no pass over the pictures).

It is used only when the head-only split applies (feature extraction, a single linear head, one phase, one task, no
teacher) and the store holds the validation pictures' outputs (the sign that a run with the same frozen part came
before); otherwise the run trains the normal way (the project's own strategy) and the log says why.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.data import Subset

from engine.config import RunConfig
from engine.data.loaders import make_loader
from engine.data.scan import DatasetIndex
from engine.events import PhaseStarted
from engine.train import prefix as prefix_path
from engine.train.headfit import linear_head
from engine.train.loop import Session, Data
from engine.train.runtime import one_thread_on_cpu
from engine.train.store import picture_key, view_seed
from engine.train.strategies import apply_phase
from engine.train.trainer import RunResult, Trainer

__all__ = ["HEAD_REFIT", "Refit", "eligible", "refit_head"]

HEAD_REFIT = "head_refit"  # the summary.json entry a refitted run carries (a Refit as a dict)
MIN_STORED_SHARE = 0.5  # the store must hold at least this share of the validation pictures' outputs


@dataclass(frozen=True)
class Refit:
    """What a head refit did, for the user: outputs read back and computed, and how long it took."""

    read_back: int  # frozen-layer outputs read from the store
    computed: int  # ... computed now (the pictures the store did not hold)
    seconds: float  # the whole run, from the first line to the summary
    l2: float | None  # the L2 strength chosen on the validation pictures

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def sentence(self) -> str:
        return (f"head refitted on stored outputs in {self.seconds:.0f} s ({self.read_back:,} read back, "
                f"{self.computed:,} computed now)")


def eligible(config: RunConfig) -> str | None:
    """None when ``config`` may be retrained by a head refit, else the reason in words (the settings only; whether
    the store holds the outputs is found once the model is built)."""
    if config.strategy != "feature-extraction":
        return f"the strategy is '{config.strategy}', not feature extraction: the whole model trains again"
    if config.distill.teacher:
        return "the run learns from a teacher model, which a head refit does not use"
    if not config.train.cache_features:
        return "computing the frozen layers once is turned off (cache_features = false)"
    return None


class _Counting(nn.Module):
    """The frozen layers, counting the pictures that pass through them; ``inner`` is set when the first picture is
    to be computed (:meth:`_HeadRefit._fast_prefix`)."""

    def __init__(self):
        super().__init__()
        self.inner: nn.Module | None = None
        self.pictures = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.pictures += int(x.shape[0])
        return self.inner(x)


class _HeadRefit(Trainer):
    """The Trainer, with the phase's epochs replaced by a head solved on the stored outputs (see the module)."""

    def __init__(self, config: RunConfig, on_event, stop):
        super().__init__(config, on_event, stop)
        self.refit: Refit | None = None
        self._eval_suffix: nn.Module | None = None  # the head, and the validation pictures' outputs: calibration
        self._val_outputs: torch.Tensor | None = None

    def _train_phases(self, s: Session, built, data: Data) -> None:
        why = self._why_not(s)
        if why is None:
            phase = self.phases[0]
            apply_phase(s.model, s.tree, phase)
            # The split is verified by three passes of a 2-picture probe batch: on one CPU thread (on the busy
            # 2-core machine 0.2 s against 0.7 to 4.8 s with two, measured alternately; docs/active.md).
            with one_thread_on_cpu(s.runtime.device):
                plan = prefix_path._plan(s, data, built, phase)  # noqa: SLF001  (the trainer's own decision)
            why = self._why_not_plan(s, data, built, plan)
        if why is not None:
            self._log(f"The retrain trains the normal way: {why}.")
            super()._train_phases(s, built, data)
            return
        self._refit(s, built, data, phase, plan)

    def _why_not(self, s: Session) -> str | None:
        if self.checkpoint is not None:
            return "it continues a stopped run"
        if self.tasks:
            return "the data has several tasks"
        if len(self.phases) != 1:
            return "the strategy has several phases"
        return eligible(self.config)

    def _why_not_plan(self, s: Session, data: Data, built, plan) -> str | None:
        if plan is None or plan.split.kind != "head":
            return "the model cannot be split into frozen layers and a head"
        if linear_head(plan.split.train_suffix) is None:
            return "the head is not a single linear layer"
        store = prefix_path._store(s, plan, built.data_config, self._output_dtype(s, plan))  # noqa: SLF001
        if store is None:
            return "the frozen layers' outputs cannot be kept on disk"
        keys = [store.key("eval", picture_key(p)) for p in data.val.paths]
        held = sum(1 for k in keys if k is not None and store.entry_path(k).is_file())
        if held < MIN_STORED_SHARE * max(1, len(keys)):
            return (f"the frozen layers' outputs of the validation pictures are not stored ({held} of {len(keys)}): "
                    "no feature-extraction run of this model on these pictures came before")
        return None

    @staticmethod
    def _output_dtype(s: Session, plan) -> torch.dtype:
        if s.runtime.amp_dtype is None:
            return plan.split.output_dtype
        run_batch = prefix_path._prefix_batch(s)  # noqa: SLF001
        with prefix_path.feats._eval(plan.split.prefix):  # noqa: SLF001
            return run_batch(plan.split.prefix, plan.example).dtype

    def _refit(self, s: Session, built, data: Data, phase, plan) -> None:
        """The phase as engine.train.trainer trains it on the fast path -- the head solved by L-BFGS, then the
        phase's epochs on the stored outputs, the best epoch kept -- with the outputs read back from the store."""
        from engine.train.checkpoint import BASE_SHARE, Live, rng_state
        from engine.train.fastpath import FastPath, FeatureSet, as_is, feature_loader
        from engine.train.headfit import fit_fast_head
        from engine.train.loop import Order, PhaseRun, run_phase, shuffled_loader
        from engine.train.optim import make_optimizer, make_scheduler
        from engine.train.strategies import param_groups

        t = s.train
        phase_rng = rng_state()
        trainable = apply_phase(s.model, s.tree, phase)
        counting = _Counting()
        self._log("Retrain in seconds: the frozen layers' outputs are read back from the store (only the pictures "
                  "not seen before pass through the frozen layers), and only the head trains on them.")
        x, y, vx, vy, views = self._outputs(s, data, plan, counting, built.data_config)
        total = len(vy) + len(y)
        s.check_stop()
        n_train = len(data.train)
        train_set = FeatureSet(x.reshape(views, n_train, *x.shape[1:]), y.reshape(views, n_train), seed=t.seed)
        val_set = FeatureSet(vx.unsqueeze(0), vy.unsqueeze(0))
        order = Order(n_train, t.batch_size, n_train > t.batch_size, t.seed)
        fast = FastPath(plan.split, train_set, shuffled_loader(train_set, order, seed=t.seed, collate_fn=as_is),
                        feature_loader(val_set, t.batch_size, shuffle=False), order)
        optimizer = make_optimizer(param_groups(s.model, s.tree, phase, t.weight_decay), self.config, phase)
        scheduler = make_scheduler(optimizer, phase, len(fast.train_loader), self.config)
        live = Live(0, phase, optimizer, scheduler, order, True, phase_rng)
        if trainable < BASE_SHARE * s.tree.total_params:
            live.base = s.checkpoints.save_base()
        fitted = None
        if t.fit_head:
            # One CPU thread, as the trainer solves it: L-BFGS on a small head is a stream of tiny operations (2
            # busy cores, 828 x 1280 outputs: a median 18.2 s with two threads, 1.3 s with one; docs/active.md).
            with one_thread_on_cpu(s.runtime.device):
                fitted = fit_fast_head(fast, phase.name, t.label_smoothing, self._log)
        s.state.live = live
        self.emit(PhaseStarted(0, phase.name, phase.epochs, phase.lr, trainable, s.tree.total_params,
                               tuple(phase.stages)))
        with one_thread_on_cpu(s.runtime.device):  # as the trainer: tiny steps, one thread
            run_phase(s, PhaseRun(live, fast, plan.split.train_suffix, plan.split.eval_suffix, fast.train_loader,
                                  fast.val_loader, self._step_runtime(s, fast), None))
        s.state.live = None
        self._eval_suffix, self._val_outputs = plan.split.eval_suffix, vx
        self.refit = Refit(read_back=total - counting.pictures, computed=counting.pictures, seconds=0.0,
                           l2=fitted.l2 if fitted is not None else None)
        self.folder.summary_extra[HEAD_REFIT] = self.refit.to_dict()
        self._log(f"The head was trained on the frozen layers' outputs of {n_train:,} training pictures: "
                  f"{counting.pictures:,} of the {total:,} outputs computed now, the others read back from the store.")

    def _outputs(self, s: Session, data: Data, plan, counting: _Counting, data_config: dict):
        """The frozen layers' outputs of the validation pictures and of each augmented view of the training pictures,
        keyed as engine.train.prefix keys them (the same views the full run would compute): read back from the store
        -- a training output the first run computed in int8 (engine.train.prefix) from the int8 entries, as that run
        trained on them -- and the missing ones computed (by :meth:`_fast_prefix`, built only when some output is
        missing; few pictures, so no int8 calibration) and stored. Returns (training outputs, view after view, their
        labels, validation outputs, their labels, the number of views)."""
        t, views = s.train, plan.views
        dtype = self._output_dtype(s, plan)
        store = prefix_path._store(s, plan, data_config, dtype)  # noqa: SLF001
        low_store = prefix_path._store(s, plan, data_config, dtype, "int8")  # noqa: SLF001
        train_pictures = [picture_key(p) for p in data.train.paths]
        passes = [(data.val, "eval", None, [picture_key(p) for p in data.val.paths])]
        for view in range(views):
            if t.augment != "none":
                name = f"train:{t.augment}:{t.seed}:{view}"
                seeds = [view_seed(k or path, name) for k, path in zip(train_pictures, data.train.paths)]
                passes.append((data.train, name, seeds, train_pictures))
            else:
                passes.append((data.train_eval, "eval", None, train_pictures))
        shape = plan.split.output_shape
        progress = prefix_path._Progress(s, len(data.val) + len(data.train) * views)  # noqa: SLF001
        run_batch = prefix_path._prefix_batch(s)  # noqa: SLF001
        results = []
        for index, (dataset, name, seeds, pictures) in enumerate(passes):
            out = torch.empty((len(pictures), *shape), dtype=dtype, device=plan.keep_on)
            keys = [store.key(name, k) for k in pictures]
            missing = prefix_path._read_back(store, keys, out, progress)  # noqa: SLF001
            if index and missing and low_store is not None:
                found = torch.empty((len(missing), *shape), dtype=dtype, device=plan.keep_on)
                low_keys = [low_store.key(name, pictures[i]) for i in missing]
                still = prefix_path._read_back(low_store, low_keys, found, progress)  # noqa: SLF001
                kept = [j for j in range(len(missing)) if j not in set(still)]
                if kept:
                    out[torch.as_tensor([missing[j] for j in kept], device=out.device)] = found[kept]
                missing = [missing[j] for j in still]
            if missing:
                if counting.inner is None:
                    counting.inner = self._fast_prefix(s, plan)
                views_of = prefix_path._SeededViews  # noqa: SLF001  (a picture's view from its own seed)
                source = Subset(views_of(dataset, seeds) if seeds is not None else dataset, missing)
                loader = make_loader(source, prefix_path.PREFIX_BATCH.get(s.runtime.device.type, 32), shuffle=False,
                                     workers=0, pin_memory=data.pin)
                filled = 0
                with prefix_path.feats._eval(counting):  # noqa: SLF001
                    for images, _ in loader:
                        s.check_stop()
                        began = time.monotonic()
                        result = run_batch(counting, images)
                        rows = missing[filled:filled + result.shape[0]]
                        filled += result.shape[0]
                        out[torch.as_tensor(rows, device=out.device)] = result.to(out.device, out.dtype)
                        for i, row in zip(rows, result.to("cpu")):
                            store.put(keys[i], row)
                        progress.advance(result.shape[0], time.monotonic() - began)
            results.append(out)
        progress.finish()
        val_labels = torch.as_tensor(data.val.labels, dtype=torch.long)
        train_labels = torch.as_tensor(data.train.labels, dtype=torch.long).repeat(views)
        return torch.cat(results[1:]), train_labels, results[0], val_labels, views

    def _fast_prefix(self, s: Session, plan) -> nn.Module:
        """The frozen layers for the pictures the store does not hold, run as the full run's fast path runs them
        (engine.train.fastpath.fast_prefix: on the CPU in full precision ONNX Runtime, else each BatchNorm folded
        into the convolution before it; verified on the probe batch, the split's own prefix when neither passes).
        Measured on the shared 2-core machine, 20 pictures of 224 x 224: eager PyTorch 2.9 s, folded 2.5 s, ONNX
        Runtime 0.5 s (after a 1-4 s export), so from a few dozen outputs on the export pays for itself."""
        prefix, how = prefix_path.feats.fast_prefix(plan.split, plan.example, onnx=s.runtime.amp_dtype is None)
        if s.runtime.channels_last and how == "fused":
            prefix = prefix.to(memory_format=torch.channels_last)
        return prefix

    def _calibrate(self, s: Session, data: Data, dataset: DatasetIndex) -> None:
        """Temperature scaling as engine.train.calibrate does it, on the validation pictures' stored outputs passed
        through the best epoch's head (no pass over the pictures)."""
        if self.refit is None:  # trained the normal way
            super()._calibrate(s, data, dataset)
            return
        import json

        from safetensors.torch import load_file

        from engine import files
        from engine.project import runs
        from engine.train.calibrate import calibrate, per_class

        best = self.folder.path / runs.BEST
        if best.is_file():
            from engine.train.lora import load_plain_state

            load_plain_state(s.model, load_file(str(best)))
            suffix = self._eval_suffix
            suffix.eval()
            device = next(suffix.parameters()).device
            with torch.no_grad():
                logits = torch.cat([suffix(self._val_outputs[i:i + 1024].to(device, torch.float32)).float().cpu()
                                    for i in range(0, len(self._val_outputs), 1024)])
            labels = torch.as_tensor(data.val.labels, dtype=torch.long)
            result = calibrate(logits, labels)

            def write_model_json():
                path = self.folder.path / runs.MODEL
                info = json.loads(path.read_text(encoding="utf-8"))
                info["temperature"] = round(result.temperature, 6)
                files.atomic_write_json(path, info)

            self.folder.write("the model's description", write_model_json)
            self.folder.summary_extra["calibration"] = result.to_dict()
            self.folder.summary_extra["val_per_class"] = per_class(logits, labels, dataset.classes,
                                                                   result.temperature)
            self._log(result.sentence())
        # The whole run's time, now that it is done.
        self.refit = dataclasses.replace(self.refit, seconds=round(self.state.seconds(), 2))
        self.folder.summary_extra[HEAD_REFIT] = self.refit.to_dict()


def refit_head(config: RunConfig, on_event=None, stop: threading.Event | None = None, *,
               dataset: DatasetIndex | None = None) -> tuple[RunResult, Refit | None]:
    """Run ``config`` as a head refit on the stored outputs when it can (see the module), else the normal way;
    returns the run's result and what the refit did (None when it trained the normal way)."""
    trainer = _HeadRefit(config, on_event, stop)
    result = trainer.run(dataset)
    return result, trainer.refit if result.status == "completed" else None
