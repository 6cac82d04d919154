"""Everything that defines an experiment, as frozen dataclasses with a TOML round-trip.

The window and the command line build the same `RunConfig`; `config.toml` in a run folder holds it fully
resolved, so `python main.py train RUN/config.toml` repeats the run.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import tomli_w

from engine.errors import ConfigError

FORMAT_VERSION = 1

STRATEGIES = ("feature-extraction", "fine-tune-shallow", "fine-tune-deep", "progressive", "lp-ft", "custom", "lora")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "onecycle", "constant")
SPLIT_MODES = ("auto", "random")
AUGMENTATIONS = ("none", "light", "strong")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BN_POLICIES = ("frozen", "train")


@dataclass(frozen=True)
class DataConfig:
    source: str = ""  # a folder (class folders, or train/ val/ [test/]) or a CSV of path,label[,split]
    val_fraction: float = 0.2  # used only when the split is drawn (no split of the data's own, or split = random)
    test_fraction: float = 0.0
    split_seed: int = 0
    # "auto": the data's own split (train/ val/ folders, a CSV's split column) when it has one, else a random draw;
    # "random": every picture pooled and drawn at random, class by class, whatever folders they are in.
    split: str = "auto"
    # The user's review decisions (the data doctor, engine.advise.doctor), applied by engine.data.scan without
    # touching a file: pictures left out of every split, and pictures given another class. Paths are relative to the
    # data's folder (the folder itself, or the CSV file's folder) or absolute; applied after the split is drawn, so
    # a decision never moves another picture between training and validation.
    exclude: tuple[str, ...] = ()
    relabel: Mapping[str, str] = field(default_factory=dict)
    # Multi-task (engine.train.multitask): the CSV columns to learn, each a task; empty: every column of a CSV
    # other than path and split (one column: the usual single task).
    tasks: tuple[str, ...] = ()
    # Lab pictures (engine.data.formats; the defaults change nothing for JPEG and PNG folders): multi-frame DICOM as
    # its middle frame or every frame; the DICOM window from the file (automatic when none) or always automatic;
    # 16-bit and float pictures stretched between two percentiles of each picture or of the whole dataset; more than
    # three channels shown as "rgb" (the first three), three chosen ones ("3,2,1", from 1) or "all" into the model;
    # whole-slide pictures cut into tiles (pixels) at a magnification (0 = full resolution), keeping tiles with at
    # least this fraction of tissue.
    dicom_frames: str = "middle"
    dicom_window: str = "file"
    stretch: str = "picture"
    stretch_low: float = 0.5
    stretch_high: float = 99.5
    channels: str = "rgb"
    slide_tile: int = 512
    slide_magnification: float = 0.0
    slide_tissue: float = 0.5


@dataclass(frozen=True)
class ModelConfig:
    name: str = "timm:resnet18"  # "timm:<name>" or "torchvision:<name>"
    weights: str = "pretrained"  # "pretrained", "none", or the path of a weight file


@dataclass(frozen=True)
class Phase:
    """One stretch of training with one freeze plan.

    `stages` maps each stage that trains to its learning-rate multiplier; a stage that is not listed is kept as is
    (frozen, and in eval mode). `bn` is the BatchNorm policy inside the stages that train: "frozen" keeps the
    pretrained statistics, "train" updates them from the new pictures.
    """

    name: str
    epochs: int
    lr: float
    stages: Mapping[str, float] = field(default_factory=dict)
    bn: str = "frozen"


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 0  # pictures per step; 0 = automatic (engine.train.runtime.auto_batch_size)
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    momentum: float = 0.9  # SGD only
    schedule: str = "cosine"
    warmup_epochs: float = 0.5  # linear warm-up at the start of each phase
    augment: str = "light"
    label_smoothing: float = 0.1
    early_stopping: int = 0  # end a phase after this many epochs without a better validation accuracy; 0 = off
    layer_decay: float = 0.75  # fine-tune-deep and progressive: each stage further from the head learns this much slower
    # auto = bf16 (or fp16) mixed precision on CUDA; on the CPU, bf16 training steps where it pays
    # (engine.train.runtime.cpu_bf16_pays), fp32 otherwise
    precision: str = "auto"
    channels_last: str = "auto"  # auto = on for CUDA and the CPU (engine.train.runtime.resolve_runtime)
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    workers: int = -1  # data-loading processes; -1 = chosen from the machine's cores
    seed: int = 0
    # Speed (engine.data.cache, engine.train.fastpath); none of them changes what is learnt beyond rounding.
    cache_images: bool = True  # keep decoded, resized pictures on disk and reuse them across epochs and runs
    cache_features: bool = True  # compute the frozen layers' outputs once per phase when everything below is frozen
    feature_views: int = 0  # augmented views per training picture for cached outputs; 0 = automatic (3)
    compile: bool = False  # torch.compile the part that trains (slow to start; falls back when it fails)
    # A head that trains alone on stored outputs is first solved to convergence (L-BFGS, L2 strength chosen on the
    # validation pictures: engine.train.headfit); the epochs continue from it.
    fit_head: bool = True
    # Multi-task: each task's weight in the summed loss (a task not listed: 1); "uncertainty" learns the weights
    # instead (Kendall et al. 2018). See engine.train.multitask.
    task_weights: Mapping[str, float] = field(default_factory=dict)
    task_weighting: str = "fixed"


@dataclass(frozen=True)
class LoraSettings:
    """The ``lora`` strategy's adapters (engine.train.lora): rank = directions each adapted layer may change in,
    alpha = their strength (scale alpha / rank); ``stages``: the stages that get adapters (empty: every one)."""

    rank: int = 8
    alpha: float = 16.0
    stages: tuple[str, ...] = ()


# The features term's weight for new distilled runs (engine.train.distillation.feature_loss; measured in
# docs/edge.md, section 1).
DEFAULT_FEATURE_WEIGHT = 10.0


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation (engine.edge.distill): a finished run teaches this one. Empty ``teacher``: off."""

    teacher: str = ""  # the teacher's run folder
    temperature: float = 4.0  # softens both models' outputs before they are compared (Hinton et al., 2015)
    soft_weight: float = 0.7  # the share of the teacher's soft targets in the loss; the labels get the rest
    pool: str = ""  # optional folder of unlabelled pictures: the teacher labels them (soft targets only)
    # The weight of the distance between the student's features and the teacher's (engine.train.distillation);
    # 0 (off) for runs written before it existed; engine.edge.distill gives new runs its recommended value.
    feature_weight: float = 0.0


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    strategy: str = "feature-extraction"
    epochs: int = 5
    lr: float = 1e-3
    # Written out by the engine when it resolves the strategy; when present they are used as written.
    phases: tuple[Phase, ...] = ()
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str = "runs"  # parent folder of the run folders
    name: str = ""  # optional label for the run folder
    # A run made by adapting another run's model to new pictures without labels (engine.shift.adapt): the parent
    # run folder, the folder of new pictures, and the method (adabn or tent); empty for a trained run.
    adapted_from: str = ""
    adapted_data: str = ""
    adapted_method: str = ""
    distill: DistillConfig = field(default_factory=DistillConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    version: int = FORMAT_VERSION

    def validate(self) -> "RunConfig":
        """Raise ConfigError with a sentence for the first setting that cannot work."""
        t = self.train
        checks = [
            (self.strategy in STRATEGIES, f"Unknown strategy '{self.strategy}': choose one of {', '.join(STRATEGIES)}."),
            (self.strategy != "custom" or self.phases, "A custom strategy needs at least one phase with its stages."),
            (self.epochs >= 1 or self.phases, "The number of epochs must be at least 1."),
            (self.lr > 0, "The learning rate must be a positive number."),
            (t.optimizer in OPTIMIZERS, f"Unknown optimizer '{t.optimizer}': choose one of {', '.join(OPTIMIZERS)}."),
            (t.schedule in SCHEDULES, f"Unknown schedule '{t.schedule}': choose one of {', '.join(SCHEDULES)}."),
            (t.augment in AUGMENTATIONS, f"Unknown augmentation '{t.augment}': choose one of {', '.join(AUGMENTATIONS)}."),
            (t.precision in PRECISIONS, f"Unknown precision '{t.precision}': choose one of {', '.join(PRECISIONS)}."),
            (t.channels_last in ("auto", "on", "off"), "channels_last must be auto, on or off."),
            (t.batch_size >= 0, "The batch size must be at least 1 (or 0 to choose it automatically)."),
            (0 <= t.label_smoothing < 1, "Label smoothing must be between 0 and 1."),
            (0 < t.layer_decay <= 1, "The layer decay must be between 0 and 1."),
            (t.warmup_epochs >= 0 and t.early_stopping >= 0, "Warm-up and early stopping cannot be negative."),
            (0 <= self.data.val_fraction < 1 and 0 <= self.data.test_fraction < 1
             and self.data.val_fraction + self.data.test_fraction < 1,
             "The validation and test fractions must add up to less than 1."),
            (self.data.split in SPLIT_MODES, f"Unknown split '{self.data.split}': choose auto (the data's own "
             "split when it has one) or random."),
            (self.lora.rank >= 1 and self.lora.alpha > 0, "LoRA's rank must be a whole number of at least 1 and "
             "its alpha a positive number (rank 8, alpha 16 are usual)."),
            (self.train.task_weighting in ("fixed", "uncertainty"), "The task weighting must be fixed or uncertainty."),
            (all(w >= 0 for w in self.train.task_weights.values()), "Task weights cannot be negative."),
            (self.distill.temperature > 0, "The distillation temperature must be a positive number (4 is usual)."),
            (0 <= self.distill.soft_weight <= 1, "The weight of the teacher's soft targets must be between 0 and 1."),
            (0 <= self.distill.feature_weight <= 1000, "The weight of the teacher's features must be between 0 and "
             "1000."),
            (_formats_problem(self.data) is None, _formats_problem(self.data) or ""),
        ]
        for phase in self.phases:
            checks += [
                (phase.epochs >= 1, f"Phase '{phase.name}' needs at least 1 epoch."),
                (phase.lr > 0, f"Phase '{phase.name}' needs a positive learning rate."),
                (phase.bn in BN_POLICIES, f"Phase '{phase.name}': the BatchNorm policy must be frozen or train."),
                (bool(phase.stages), f"Phase '{phase.name}' trains nothing: mark at least one stage to retrain."),
                (all(m > 0 for m in phase.stages.values()),
                 f"Phase '{phase.name}': learning-rate multipliers must be positive."),
            ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self

    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases) if self.phases else self.epochs


def _formats_problem(data: DataConfig) -> str | None:
    from engine.data.formats.settings import settings_problem

    return settings_problem(data)


# --- TOML round-trip ------------------------------------------------------------------------------------------


def to_dict(config: RunConfig) -> dict[str, Any]:
    data = dataclasses.asdict(config)
    data["phases"] = [dict(p, stages=dict(p["stages"])) for p in data["phases"]]
    if not data["distill"]["teacher"]:  # an ordinary run: no [distill] table
        del data["distill"]
    if config.strategy != "lora" and config.lora == LoraSettings():  # no [lora] table either
        del data["lora"]
    # Put the version first so that a reader sees it at the top of the file.
    return {"version": data.pop("version"), **data}


_TYPE_NAMES = {int: "whole number", float: "number", str: "text"}


def _build(cls, values: Mapping[str, Any], where: str):
    where = where if where.startswith("the ") else f"[{where}]"
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where} must be a table of settings.")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"Unknown setting '{unknown[0]}' in {where}: check its spelling "
                          f"(known settings: {', '.join(known)}).")
    defaults = cls()
    kwargs = {}
    for name, value in values.items():
        default = getattr(defaults, name)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(default, (int, float, str)) and type(value) is not type(default):
            raise ConfigError(f"The setting '{name}' in {where} must be a {_TYPE_NAMES[type(default)]}, "
                              f"not {value!r}.")
        kwargs[name] = value
    return cls(**kwargs)


def from_dict(data: Mapping[str, Any]) -> RunConfig:
    data = dict(data)
    version = data.get("version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError(f"The format version must be a whole number such as {FORMAT_VERSION}, not {version!r}.")
    if version > FORMAT_VERSION:
        raise ConfigError(f"This file was written by a newer Transfer Studio (format {version}); "
                          f"this version reads format {FORMAT_VERSION}: please update the app.")
    try:
        phases = [_phase(p, i + 1) for i, p in enumerate(data.pop("phases", []) or [])]
        sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "distill": DistillConfig,
                    "lora": LoraSettings}
        built = {key: _build(cls, data.pop(key, {}), key) for key, cls in sections.items()}
        built["data"] = _overrides(built["data"])
        built["data"], built["train"], built["lora"] = _task_and_lora_lists(built["data"], built["train"], built["lora"])
        top = _build(RunConfig, data, "the top level")
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"The configuration has a value of the wrong kind ({exc}).") from None
    return dataclasses.replace(top, phases=tuple(phases), **built).validate()


def _overrides(data: DataConfig) -> DataConfig:
    """``exclude`` as a tuple of paths and ``relabel`` as a path -> class table, or ConfigError."""
    exclude, relabel = data.exclude, data.relabel
    if not isinstance(exclude, (list, tuple)) or not all(isinstance(p, str) and p for p in exclude):
        raise ConfigError("The setting 'exclude' in [data] must be a list of picture paths.")
    if not isinstance(relabel, Mapping) or not all(isinstance(k, str) and k and isinstance(v, str) and v
                                                   for k, v in relabel.items()):
        raise ConfigError("The setting 'relabel' in [data] must be a table of picture path = \"class name\".")
    return dataclasses.replace(data, exclude=tuple(dict.fromkeys(exclude)), relabel=dict(relabel))


def _task_and_lora_lists(data: DataConfig, train: TrainConfig, lora: LoraSettings):
    """``tasks`` and LoRA's ``stages`` as tuples of names, ``task_weights`` as a name -> number table."""
    if not isinstance(data.tasks, (list, tuple)) or not all(isinstance(t, str) and t for t in data.tasks):
        raise ConfigError("The setting 'tasks' in [data] must be a list of CSV column names.")
    if not isinstance(lora.stages, (list, tuple)) or not all(isinstance(t, str) and t for t in lora.stages):
        raise ConfigError("The setting 'stages' in [lora] must be a list of stage names.")
    weights = train.task_weights
    if not isinstance(weights, Mapping) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in weights.values()):
        raise ConfigError("The setting 'task_weights' in [train] must be a table of task name = number.")
    return (dataclasses.replace(data, tasks=tuple(data.tasks)),
            dataclasses.replace(train, task_weights={str(k): float(v) for k, v in weights.items()}),
            dataclasses.replace(lora, stages=tuple(lora.stages)))


def _phase(p: Any, number: int) -> Phase:
    if not isinstance(p, Mapping):
        raise ConfigError(f"Phase {number} must be a table of settings.")
    missing = [k for k in ("name", "epochs", "lr") if k not in p]
    if missing:
        raise ConfigError(f"Phase {number} lacks '{missing[0]}'.")
    extra = sorted(set(p) - {"name", "epochs", "lr", "stages", "bn"})
    if extra:
        raise ConfigError(f"Unknown setting '{extra[0]}' in phase {number}.")
    number_types = (int, float)
    stages = p.get("stages", {})
    checks = [
        (isinstance(p["name"], str), "'name' must be text"),
        (isinstance(p["epochs"], int) and not isinstance(p["epochs"], bool), "'epochs' must be a whole number"),
        (isinstance(p["lr"], number_types) and not isinstance(p["lr"], bool), "'lr' must be a number"),
        (isinstance(p.get("bn", "frozen"), str), "'bn' must be frozen or train"),
        (isinstance(stages, Mapping) and all(isinstance(v, number_types) and not isinstance(v, bool)
                                             for v in stages.values()),
         "'stages' must map stage names to learning-rate multipliers"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"Phase {number}: {message}.")
    return Phase(name=p["name"], epochs=p["epochs"], lr=float(p["lr"]),
                 stages={str(k): float(v) for k, v in stages.items()}, bn=p.get("bn", "frozen"))


def dumps(config: RunConfig) -> str:
    return tomli_w.dumps(to_dict(config))


def loads(text: str) -> RunConfig:
    try:
        data = tomllib.loads(text.removeprefix("\ufeff"))  # a byte-order mark, as Windows editors write
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"The configuration file is not valid TOML ({toml_problem(exc)}): correct it in a text "
                          "editor, or use a config.toml that Transfer Studio wrote.") from None
    return from_dict(data)


def toml_problem(exc: tomllib.TOMLDecodeError) -> str:
    """tomllib's "Invalid value (at line 1, column 10)" as "invalid value at line 1, column 10"."""
    text = str(exc)
    text = text.replace(" (at end of document)", " at the end of the file").replace(" (at line ", " at line ")
    text = text[:-1] if text.endswith(")") and text.count(")") > text.count("(") else text
    return text[:1].lower() + text[1:]


def load(path: str | os.PathLike) -> RunConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"The configuration file {path} does not exist.") from None
    except IsADirectoryError:
        raise ConfigError(f"The configuration file {path} cannot be read: it is a folder. Choose the config.toml "
                          "inside a run folder.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"The configuration file {path} cannot be read: it is not text (it may be damaged). "
                          "Choose a config.toml that Transfer Studio wrote.") from None
    except OSError as exc:
        raise ConfigError(f"The configuration file {path} cannot be read ({(exc.strerror or str(exc)).lower()})."
                          ) from None
    config = loads(text)
    # Relative paths in a config file are relative to the file, so that a run folder can be moved.
    return dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, source=resolve_path(config.data.source, path.parent)),
        model=dataclasses.replace(config.model, weights=resolve_weights(config.model.weights, path.parent)),
        distill=dataclasses.replace(config.distill, teacher=resolve_path(config.distill.teacher, path.parent),
                                    pool=resolve_path(config.distill.pool, path.parent)),
    )


def save(config: RunConfig, path: str | os.PathLike) -> None:
    from engine.files import atomic_write_text

    try:
        atomic_write_text(path, dumps(config))
    except OSError as exc:
        raise ConfigError(f"The configuration could not be saved to {path} ({exc.strerror or exc}).") from None


def resolve_path(value: str, base: Path) -> str:
    """``value`` as an absolute path, a relative one taken from ``base`` (the folder of the config or project file
    that names it); an empty value stays empty."""
    if not value:
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def resolve_weights(value: str, base: Path) -> str:
    """A weight source with its file path resolved like ``resolve_path``; ``pretrained`` and ``none`` stay."""
    return value if value in ("pretrained", "none") else resolve_path(value, base)
