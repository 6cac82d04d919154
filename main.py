"""Transfer Studio: ``python main.py`` opens the window; subcommands run the same engine headless.

    python main.py                                   open the window
    python main.py train --data DIR --model torchvision:mobilenet_v2 --weights FILE \\
                         --strategy feature-extraction --epochs 5 --out runs
    python main.py train CONFIG.toml                 repeat a run (a run folder's config.toml) or a saved project
    python main.py train --resume RUN                continue a stopped or interrupted run from its checkpoint
    python main.py scan DIR [--json]                 dataset summary and health report
    python main.py doctor DIR [--json] [--model M --weights W]   likely wrong labels, duplicates, suspicious pictures
    python main.py models [FILTER]                   the model catalogue
    python main.py evaluate RUN [--data DIR] [--json]            metrics, confusion matrix, mistakes, calibration
    python main.py predict RUN PATH... [--csv FILE] [--top K]    predict pictures and folders
    python main.py export RUN --format bundle|onnx|torchscript|onnx-int8 [--out DIR]
    python main.py distill RUN --student MODEL --weights W [--epochs N] [--pool DIR] [--out DIR]
    python main.py advise --data DIR [--model M --weights W ...] [--json]   which model, where to freeze
    python main.py drift RUN FOLDER [--json]         are new pictures still like the training pictures?
    python main.py adapt RUN --data FOLDER [--method adabn|tent] [--out DIR]   adapt to new pictures without labels
    python main.py suggest RUN --pool DIR [--n 20] [--json]       which unlabelled pictures to label next
    python main.py check [--json]                    this computer: Python, PyTorch, CUDA, GPUs, disk, weights
    python main.py pack-offline --out DIR [--weights FILE|MODEL ...]   an install kit for a computer without network
    python main.py PROJECT.tsproj                    open the window with this project
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
import traceback

from engine.words import plural  # noqa: E402
from engine.errors import EXIT_ABORTED, EXIT_BAD_INPUT, EXIT_COMPLETED, EXIT_FAILED, EXIT_STOPPED  # noqa: E402

EXIT_USER_ERROR = EXIT_BAD_INPUT  # the older name
EXIT_CODES_HELP = (f"exit status: {EXIT_COMPLETED} completed, {EXIT_FAILED} failed, {EXIT_BAD_INPUT} bad input "
                   f"(options, files, names), {EXIT_STOPPED} stopped (Ctrl-C; a stopped run can be resumed with "
                   f"train --resume RUN), {EXIT_ABORTED} aborted (a second Ctrl-C)")
HEATMAP_SIDE = 1024  # predict --heatmaps: the longest side of a saved overlay, in pixels


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one sentence and the usage line, never a traceback
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)


def _lr_arg(text: str):
    """--lr: a positive number, or 'auto'."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a learning rate: give a number such as 0.001, or auto"
                                         ) from None


def build_parser() -> argparse.ArgumentParser:
    from engine.config import AUGMENTATIONS, OPTIMIZERS, PRECISIONS, SCHEDULES, STRATEGIES

    parser = _Parser(prog="transfer-studio", description="Transfer learning on your own pictures. "
                     "Without a command, opens the window.", epilog=EXIT_CODES_HELP)
    parser.add_argument("--debug", action="store_true", help="show full error details (for bug reports)")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    train = sub.add_parser("train", help="train a model (prints the run folder)", epilog=EXIT_CODES_HELP,
                           description="Train a model. Give a CONFIG.toml (a run folder's config.toml repeats that "
                           "run) or --data and --model; options given with a CONFIG override it.")
    train.add_argument("config", nargs="?", help="a config.toml to repeat")
    train.add_argument("--resume", metavar="RUN", help="continue the run in this run folder from its last checkpoint "
                       "(written every epoch, every few minutes and when stopped), with its own settings; only "
                       "--device and --workers may be given with it")
    train.add_argument("--data", help="folder of class sub-folders, train/ val/ [test/] folders, or a CSV path,label")
    train.add_argument("--model", help="timm:<name> or torchvision:<name> (see: models)")
    train.add_argument("--weights", help="pretrained, none, or a weight file (.safetensors .pth .pt .bin)")
    train.add_argument("--strategy", choices=[s for s in STRATEGIES if s != "custom"])
    train.add_argument("--epochs", type=int)
    train.add_argument("--lr", type=_lr_arg, help="learning rate of the new head, or 'auto': a short learning-rate "
                       "sweep on the pictures (Smith's range test) chooses it, and config.toml records the choice")
    train.add_argument("--batch-size", type=int, help="pictures per step (0 = automatic, the default)")
    train.add_argument("--optimizer", choices=OPTIMIZERS)
    train.add_argument("--schedule", choices=SCHEDULES)
    train.add_argument("--augment", choices=AUGMENTATIONS)
    train.add_argument("--label-smoothing", type=float)
    train.add_argument("--early-stopping", type=int, metavar="EPOCHS", help="patience in epochs, 0 = off")
    train.add_argument("--precision", choices=PRECISIONS)
    train.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    train.add_argument("--workers", type=int, help="data-loading processes (-1 = automatic)")
    train.add_argument("--seed", type=int)
    train.add_argument("--val-fraction", type=float, help="validation share when the split is drawn")
    train.add_argument("--split", choices=("auto", "random"),
                       help="auto: the data's own train/val split when it has one (default); random: pool every "
                            "picture and draw the split")
    train.add_argument("--out", help="folder for run folders (default: runs)")
    train.add_argument("--name", help="label for the run folder")
    train.add_argument("--tasks", metavar="A,B", help="multi-task: the CSV columns to learn, one head each (default: "
                       "every column but path and split)")
    train.add_argument("--task-weights", metavar="A=W,B=W", help="each task's weight in the loss (default: equal)")
    train.add_argument("--task-weighting", choices=("fixed", "uncertainty"), help="fixed: the task weights; "
                       "uncertainty: learn them (Kendall et al. 2018)")
    train.add_argument("--lora-rank", type=int, metavar="R", help="strategy lora: how many directions each adapted "
                       "layer may change in (default 8; higher learns more, stores more)")
    train.add_argument("--lora-alpha", type=float, metavar="A", help="strategy lora: the adapters' strength "
                       "(scale alpha/rank; default 16, twice the rank is usual)")
    train.add_argument("--lora-stages", metavar="S,S", help="strategy lora: the stages that get adapters (default: "
                       "every stage; see the stage names in the Layers step or a run's model.json)")

    scan = sub.add_parser("scan", help="dataset summary and health report")
    scan.add_argument("data", help="a folder or a CSV of path,label")
    scan.add_argument("--json", action="store_true", help="print the summary as JSON")
    scan.add_argument("--val-fraction", type=float, default=0.2)
    scan.add_argument("--split", choices=("auto", "random"), default="auto",
                      help="auto: the data's own train/val split when it has one; random: draw it")
    scan.add_argument("--seed", type=int, default=0)
    scan.add_argument("--data-setting", action="append", metavar="NAME=VALUE",
                      help="how lab pictures are read, as in config.toml's [data] (repeatable): dicom_frames, "
                      "dicom_window, stretch, stretch_low, stretch_high, channels, slide_tile, slide_magnification, "
                      "slide_tissue")

    doctor = sub.add_parser("doctor", help="likely wrong labels, duplicates and leakage, suspicious pictures",
                            description="Look for the mistakes in a dataset that still open as pictures: likely wrong "
                            "labels, exact and near copies (within and across splits), and suspicious pictures. "
                            "Nothing is changed.")
    doctor.add_argument("data", help="a folder or a CSV of path,label (or a saved project, .tsproj, whose review "
                        "decisions then apply)")
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")
    doctor.add_argument("--model", default=None, help="the model whose features compare the pictures (default: "
                        "the project's, else timm:resnet18)")
    doctor.add_argument("--weights", default=None, help="pretrained, none, or a weight file (default: pretrained)")
    doctor.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    doctor.add_argument("--val-fraction", type=float, default=0.2)
    doctor.add_argument("--split", choices=("auto", "random"), default="auto")
    doctor.add_argument("--seed", type=int, default=0)
    doctor.add_argument("--top", type=int, default=20, metavar="N", help="findings listed per kind (text output)")

    models = sub.add_parser("models", help="list the model catalogue")
    models.add_argument("filter", nargs="?", default="", help="part of a name, or a pattern such as '*vit*'")

    evaluate = sub.add_parser("evaluate", help="metrics, confusion matrix, mistakes and calibration of a run",
                              description="Evaluate a run on its validation (and test) pictures, or on another "
                              "folder, and write evaluation.json into the run folder.")
    evaluate.add_argument("run", help="a run folder")
    evaluate.add_argument("--data", help="evaluate every picture of this folder instead (same class names)")
    evaluate.add_argument("--json", action="store_true", help="print the whole evaluation as JSON")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")

    predict = sub.add_parser("predict", help="predict the class of pictures or of every picture in folders",
                             description="Predict pictures with a run's model (or an exported bundle folder).")
    predict.add_argument("run", help="a run folder or an exported bundle folder")
    predict.add_argument("paths", nargs="+", metavar="PATH", help="pictures or folders of pictures")
    predict.add_argument("--csv", metavar="FILE", help="write the predictions to this CSV file")
    predict.add_argument("--top", type=int, default=3, metavar="K", help="how many classes to list (default 3)")
    predict.add_argument("--heatmaps", metavar="DIR", help="also save each picture (at most 1024 pixels wide or "
                         "high) with its heat map (class-activation map) laid over it into this folder")
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    predict.add_argument("--unknown", action="store_true", help="answer 'unknown' instead of a class for pictures "
                         "unlike the training pictures (those whose ood_score is over the run's threshold)")
    predict.add_argument("--no-flag", action="store_true", help="do not score how unlike the training pictures "
                         "each picture is (no ood_score and in_domain columns)")
    _add_shift_parsers(sub)  # drift, adapt (engine.shift)

    advise = sub.add_parser("advise", help="which model and where to freeze: scores from your pictures, no training",
                            description="Score models on a sample of your pictures without training (LogME): "
                            "every model with weights on this computer, or the --model/--weights pairs given; the "
                            "first model's stages and suggested freeze point; pretrained against random weights.")
    advise.add_argument("--data", required=True, help="folder of class sub-folders, train/ val/ folders, or a CSV")
    advise.add_argument("--model", action="append", default=[], help="timm:<name> or torchvision:<name>; repeat "
                        "to compare several (default: every model with weights on this computer)")
    advise.add_argument("--weights", action="append", default=[], help="pretrained, none or a weight file, one "
                        "per --model in the same order (default: pretrained)")
    advise.add_argument("--runs", help="also score the models of earlier runs in this folder (without --model)")
    advise.add_argument("--sample", type=int, default=2000, help="pictures scored at most (default 2000)")
    advise.add_argument("--no-check", action="store_true", help="skip the pretrained-against-random check")
    advise.add_argument("--json", action="store_true", help="print the scores as JSON")
    advise.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")

    export = sub.add_parser("export", help="export a run's model (bundle, ONNX or TorchScript) with a model card",
                            description="Export a run's model, check it against PyTorch on validation pictures, "
                            "and write model.json and MODEL_CARD.md beside it.")
    export.add_argument("run", help="a run folder")
    export.add_argument("--format", required=True, choices=("bundle", "onnx", "torchscript", "onnx-int8"))
    export.add_argument("--out", metavar="DIR", help="folder to export into (default: RUN/export)")

    distill = sub.add_parser("distill", help="distil a finished run into a smaller model (prints the new run folder)",
                             epilog=EXIT_CODES_HELP, description="Train a student model on a finished run's pictures "
                             "with the run's model as its teacher (soft targets and labels); the new run folder is "
                             "printed on the last line, after the teacher-vs-student table.")
    distill.add_argument("run", help="the teacher: a finished run folder")
    distill.add_argument("--student", required=True, metavar="MODEL", help="the student, e.g. timm:mobilenetv2_050")
    distill.add_argument("--weights", required=True, metavar="W", help="pretrained, none, or a weight file")
    distill.add_argument("--epochs", type=int, help="epochs (default: the teacher's)")
    distill.add_argument("--pool", metavar="DIR", help="a folder of unlabelled pictures the teacher labels too")
    distill.add_argument("--out", metavar="DIR", help="parent folder of the new run (default: the teacher's)")
    distill.add_argument("--temperature", type=float, help="softens the outputs (default 4)")
    distill.add_argument("--soft-weight", type=float, help="share of the teacher's soft targets in the loss, 0-1 "
                         "(default 0.7; the labels get the rest)")
    distill.add_argument("--feature-weight", type=float, help="weight of the distance from the teacher's features, "
                         "0 to leave them out (default 10)")

    check = sub.add_parser("check", help="check this computer: versions, GPUs, disk, offline mode, weights",
                           description="Check this computer: Python, PyTorch and CUDA versions, each GPU (memory, "
                           "whether bf16 and fp16 really compute), free disk space and write permission at the "
                           "picture cache and the runs folder, offline mode and the pretrained weights here; each "
                           "problem with what to do. Opens no network connection.")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--runs", metavar="DIR", default="runs", help="the runs folder to check (default: runs)")

    pack = sub.add_parser("pack-offline", help="write an install kit for a computer without internet",
                          description="On a computer with internet: write a folder with every wheel Transfer Studio "
                          "needs for this platform and Python (the pinned set), the chosen weights, and install.sh / "
                          "install.bat, which install it without any network and add the weights to the model "
                          "library.")
    pack.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder for the kit")
    pack.add_argument("--weights", nargs="+", default=[], metavar="FILE|MODEL",
                      help="weight files to include (FILE, or FILE=timm:<name> to say its model), or model names "
                           "(timm:resnet18) for their pretrained weights (from this computer, else downloaded)")
    suggest = sub.add_parser("suggest", help="which unlabelled pictures to label next (most helpful first)",
                             description="Rank the pictures of a pool folder by how much labelling each would help "
                             "the run's model: its uncertainty, balanced with diversity so that the suggestions are "
                             "not near-copies of each other. Prints the paths, most helpful first.")
    suggest.add_argument("run", help="a run folder")
    suggest.add_argument("--pool", required=True, metavar="DIR", help="the folder of pictures still to label")
    suggest.add_argument("--n", type=int, default=20, help="how many pictures to suggest (default 20)")
    suggest.add_argument("--json", action="store_true",
                         help='print [{"path", "score", "predicted", "confidence"}, ...] as JSON')
    suggest.add_argument("--labels", metavar="CSV", help="a labels CSV (path,label): pictures answered there are not "
                         "suggested again, and the labelled ones count as already labelled")
    suggest.add_argument("--uncertainty", choices=("margin", "entropy"), default="margin")
    suggest.add_argument("--seed", type=int, default=0, help="breaks ties; the same seed gives the same suggestions")
    suggest.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    return parser


# --- train ----------------------------------------------------------------------------------------------------


def config_from_args(args) -> "RunConfig":
    from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from engine.errors import ConfigError

    if args.config:
        from engine.active import project_config

        # A run's config.toml, or a saved project: with its labelled pool pictures, as the Label step's Retrain.
        config, joined = project_config(args.config)
        if joined is not None:
            print(joined.sentence(), file=sys.stderr)
    elif not args.data or not args.model:
        raise ConfigError("Say what to train: give --data and --model, or a CONFIG.toml.")
    else:
        config = RunConfig(data=DataConfig(), model=ModelConfig(), train=TrainConfig())
    top = {k: v for k, v in {"strategy": args.strategy, "epochs": args.epochs, "lr": args.lr, "out": args.out,
                            "name": args.name}.items() if v is not None}
    if {"strategy", "epochs", "lr"} & top.keys():
        top["phases"] = ()  # the saved phases belonged to the old strategy: resolve them again
    data = {k: v for k, v in {"source": args.data, "val_fraction": args.val_fraction, "split": args.split}.items()
            if v is not None}
    model = {k: v for k, v in {"name": args.model, "weights": args.weights}.items() if v is not None}
    train = {k: v for k, v in {
        "batch_size": args.batch_size, "optimizer": args.optimizer, "schedule": args.schedule,
        "augment": args.augment, "label_smoothing": args.label_smoothing, "early_stopping": args.early_stopping,
        "precision": args.precision, "device": args.device, "workers": args.workers, "seed": args.seed,
    }.items() if v is not None}
    if "weights" not in model and not args.config:
        model["weights"] = "pretrained"
    from engine.train.multitask import with_cli_options  # --tasks ..., --lora-... (issue #17)

    config = with_cli_options(config, tasks=args.tasks, task_weights=args.task_weights,
                              task_weighting=args.task_weighting, lora_rank=args.lora_rank,
                              lora_alpha=args.lora_alpha, lora_stages=args.lora_stages)
    return dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, **data),
        model=dataclasses.replace(config.model, **model),
        train=dataclasses.replace(config.train, **train),
        **top,
    ).validate()


def _auto_lr(config):
    """--lr auto: the learning-rate finder's suggestion for the configuration's first phase (engine.advise.lr_finder)."""
    from engine.advise.lr_finder import find_lr, with_lr

    print("Choosing the learning rate: a short sweep of rates on the training pictures ...", file=sys.stderr,
          flush=True)
    finding = _with_stop(lambda stop: find_lr(config, on_progress=_progress("Learning-rate sweep"), stop=stop))
    _end_progress()
    print(finding.sentence(), file=sys.stderr, flush=True)
    return with_lr(config, finding.suggestion)


class ConsoleReporter:
    """Prints engine events: progress to stderr (a live line on a terminal), the outcome to stdout."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stderr  # the stream of now, not of the import
        self.live = self.stream.isatty()
        self.run_dir = None

    def __call__(self, event) -> None:
        from engine import events as ev

        if isinstance(event, ev.StepEnded):
            if self.live:
                self._line(f"  epoch {event.epoch}  step {event.step}/{event.steps}  loss {event.loss:.3f}  "
                           f"{event.images_per_s:.0f} img/s", end="\r")
        elif isinstance(event, ev.Preparing):
            if self.live:  # (without a terminal, the log's progress lines say it every few seconds)
                from engine.train.prefix import preparing_text

                self._line("  " + preparing_text(event), end="\n" if event.done >= event.total else "\r")
        elif isinstance(event, ev.Log):
            self._line(("warning: " if event.level == "warning" else "") + event.message)
        elif isinstance(event, ev.RunStarted):
            self.run_dir = event.run_dir
            self._line(f"Run folder: {event.run_dir}"
                       + (f" (resumed after {event.epochs_done} epochs)" if event.resumed else ""))
        elif isinstance(event, ev.EpochEnded):
            self._line(f"epoch {event.epoch}/{event.total_epochs} [{event.phase_name}]  "
                       f"train loss {event.train_loss:.3f} acc {event.train_acc:.3f}  "
                       f"val loss {event.val_loss:.3f} acc {event.val_acc:.3f}  {event.seconds:.1f}s"
                       + ("  *best" if event.is_best else ""))

    def _line(self, text: str, end: str = "\n") -> None:
        if self.live:
            text = text.ljust(78)
        print(text, end=end, file=self.stream, flush=True)


RESUME_KEEPS = ("device", "workers")  # what --resume allows to change: the computer, not the experiment


def _resume_conflicts(args) -> list[str]:
    """The options given with --resume that would change the experiment."""
    given = [f"--{name.replace('_', '-')}" for name, value in vars(args).items()
             if value is not None and name not in ("command", "debug", "resume", "config", *RESUME_KEEPS)]
    return (["a CONFIG file"] if args.config else []) + given


def cmd_train(args) -> int:
    from engine.edge.distill import resume  # the trainer's resume; a distilled run's table is measured again
    from engine.errors import ConfigError, UserError
    from engine.train.trainer import fit

    auto_lr = args.lr == "auto"
    if args.resume is not None:
        from engine.project.runs import resume_problem

        conflicts = _resume_conflicts(args)
        if conflicts:
            raise ConfigError(f"--resume continues a run with the settings in its folder: leave out "
                              f"{', '.join(conflicts)} (only --device and --workers may change).")
        problem = resume_problem(args.resume)
        if problem:
            raise UserError(problem)
        config = None
    else:
        if auto_lr:
            args.lr = None
        config = config_from_args(args)
    if config is not None:
        from engine.models.build import check_name

        check_name(config.model.name)  # a mistyped name is told at once, before the pictures are scanned
        if auto_lr:
            config = _auto_lr(config)

    def work(stop: threading.Event):
        if config is None:
            return resume(args.resume, ConsoleReporter(), stop, device=args.device, workers=args.workers)
        return fit(config, ConsoleReporter(), stop)

    result = _with_stop(work, "Stopping after this batch")
    if result.status != "failed" and result.run_dir:
        from engine.advise.training_doctor import advise_run

        for verdict in advise_run(result.run_dir):  # the training doctor; also in the run's summary.json
            step = verdict.action.get("label")
            print(f"advice: {verdict.sentence} ({verdict.evidence})" + (f" Next step: {step}." if step else ""))
    if result.status == "failed":
        print(f"error: {result.error}", file=sys.stderr)
        if result.run_dir:
            print(f"failed after {plural(result.epochs_completed, 'epoch')}: {result.run_dir}")
            return EXIT_FAILED
        return EXIT_BAD_INPUT  # it failed before a run folder was made: the data, the model or the settings
    best = f"{result.best_val_acc:.3f} at epoch {result.best_epoch}" if result.best_val_acc is not None else "none"
    print(f"{result.status}: {plural(result.epochs_completed, 'epoch')}, best validation accuracy {best}: "
          f"{result.run_dir}")
    if result.status == "stopped":
        if result.run_dir:
            print(f"Continue it with: python main.py train --resume {result.run_dir}", file=sys.stderr)
        return EXIT_STOPPED
    return EXIT_COMPLETED


# --- scan, models ---------------------------------------------------------------------------------------------


def cmd_scan(args) -> int:
    from engine.data.scan import scan

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\rChecking pictures {done}/{total}", end="", file=sys.stderr, flush=True)

    from engine.data.formats.settings import from_pairs
    from engine.data.scan import format_lines

    index = scan(args.data, val_fraction=args.val_fraction, seed=args.seed, split=args.split, on_progress=progress,
                 formats=from_pairs(args.data_setting))
    if sys.stderr.isatty():
        print(file=sys.stderr)
    counts = index.counts()
    splits = [s for s in ("train", "val", "test") if any(counts.get(s, {}).values())]
    if args.json:
        print(json.dumps(index.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(f"{index.root}  ({index.layout}, split: {index.split_source})")
        width = max([len(c) for c in index.classes] + [5])
        print("class".ljust(width) + "".join(s.rjust(8) for s in splits))
        for c in index.classes:
            print(c.ljust(width) + "".join(str(counts[s][c]).rjust(8) for s in splits))
        for line in index.health.lines():
            print(line)
        for line in format_lines(index):  # how many of each format were read, with which settings
            print(line)
    sizes = " / ".join(f"{sum(counts[s].values())} {s}" for s in splits)
    unreadable = len(index.health.unreadable)
    print(f"{plural(len(index.classes), 'class', 'classes')}, {sizes} pictures, {unreadable} unreadable",
          file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_doctor(args) -> int:
    from pathlib import Path

    from engine.advise.task_doctor import diagnose_any as diagnose  # a CSV of several tasks: task by task (#17)
    from engine.config import DataConfig
    from engine.data.scan import scan

    data = DataConfig(source=args.data, val_fraction=args.val_fraction, split_seed=args.seed, split=args.split)
    model, weights = "timm:resnet18", "pretrained"
    if Path(args.data).suffix.lower() == ".tsproj":  # a project: its dataset, split, model and review decisions
        from engine.project.project import open_project

        config = open_project(args.data).project.config
        data, model, weights = config.data, config.model.name, config.model.weights
    model, weights = args.model or model, args.weights or weights
    from engine.advise.task_doctor import scan_for_doctor  # a CSV of several tasks (issue #17)

    index = scan_for_doctor(data) or scan(data.source, val_fraction=data.val_fraction, test_fraction=data.test_fraction,
                                          seed=data.split_seed, split=data.split,
                                          on_progress=_progress("Checking pictures"), exclude=data.exclude,
                                          relabel=data.relabel)
    _end_progress()
    shown = [""]

    def progress(what: str, done: int, total: int) -> None:
        if sys.stderr.isatty():
            if shown[0] and shown[0] != what:
                print(file=sys.stderr)
            shown[0] = what
            print(f"\r{what} {done}/{total}", end="", file=sys.stderr, flush=True)

    report = _with_stop(lambda stop: diagnose(index, model=model, weights=weights, device=args.device,
                                              seed=args.seed, on_progress=progress, stop=stop))
    _end_progress()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        print(" ".join(report.summary()), file=sys.stderr)
        return 0
    print(f"{index.root}: {plural(report.pictures, 'picture')}, model {model}")
    for line in report.summary():
        print(f"- {line}")
    for note in report.notes:
        print(f"Note: {note}")
    top = max(0, args.top)
    if report.label_issues:
        print(f"\nLikely wrong labels ({len(report.label_issues)}):")
        print("\n".join(_table([["picture", "given", "suggested", "score"]] + [
            [x.path, x.given, x.suggested, f"{x.score:.2f}"] for x in report.label_issues[:top]])))
    if report.duplicates:
        print(f"\nCopies ({len(report.duplicates)} groups):")
        for d in report.duplicates[:top]:
            what = "leakage" if d.leakage else ("conflict" if d.conflict else d.kind)
            flag = f"{d.kind}, {what}" if what != d.kind else d.kind
            print(f"  [{flag}] " + "  =  ".join(f"{p} ({s}, {label})"
                                              for p, s, label in zip(d.paths, d.splits, d.labels)))
    if report.suspicious:
        print(f"\nSuspicious pictures ({len(report.suspicious)}):")
        for x in report.suspicious[:top]:
            print(f"  {x.path}: {x.reason}")
    return 0


def cmd_models(args) -> int:
    from engine.models import catalogue

    names = catalogue.names(args.filter)  # the same catalogue as the window's model picker
    for name in names:
        print(name)
    timm_count = sum(n.startswith("timm:") for n in names)
    print(f"{plural(len(names), 'model')} ({timm_count} timm, {len(names) - timm_count} torchvision)"
          + (f" matching '{args.filter}'" if args.filter else ""), file=sys.stderr)
    return 0


# --- evaluate, predict, export ---------------------------------------------------------------------------------


def _progress(label: str):
    """A live 'label done/total' line on a terminal's stderr; nothing when output goes to a file."""
    if not sys.stderr.isatty():
        return None
    return lambda done, total: print(f"\r{label} {done}/{total}", end="", file=sys.stderr, flush=True)


class _Counted:
    """Progress of pictures with counts and the time left: a live line on a terminal's stderr, else a line every
    EVERY_S seconds (a log file or a pipe is never silent for long)."""

    EVERY_S = 10.0

    def __init__(self, label: str):
        import time

        self.label, self.clock = label, time.monotonic
        self.began = self.last = self.clock()
        self.live = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        from engine.train.prefix import time_left

        now = self.clock()
        if not self.live and now - self.last < self.EVERY_S and done < total:
            return
        self.last = now
        spent = now - self.began
        left = time_left((total - done) * spent / done) if done and spent >= 1.0 and done < total else ""
        text = f"{self.label}: {done:,} of {total:,}" + (f" \u2014 {left}" if left else "")
        if self.live:
            print(f"\r{text}".ljust(79), end="", file=sys.stderr, flush=True)
        else:
            print(text, file=sys.stderr, flush=True)


def _end_progress() -> None:
    if sys.stderr.isatty():
        print(file=sys.stderr)


def _with_stop(work, stopping: str = "Stopping"):
    """Run ``work(stop)`` with the first Ctrl-C setting the stop token (the engine stops cleanly at its next check)
    and a second one aborting at once. The one Ctrl-C handler of every command."""
    stop = threading.Event()

    def on_interrupt(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        print(f"\n{stopping} ... (press Ctrl-C again to abort)", file=sys.stderr, flush=True)
        stop.set()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        return work(stop)
    finally:
        signal.signal(signal.SIGINT, previous)


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
            for r in rows]


def cmd_evaluate(args) -> int:
    from engine.results.evaluate import SPLIT_NAMES, evaluate_run

    print(f"Evaluating {args.run} ...", file=sys.stderr, flush=True)
    evaluation = _with_stop(lambda stop: evaluate_run(args.run, args.data, _Counted("Evaluating pictures"), stop,
                                                      device=args.device))
    _end_progress()
    if args.json:
        print(json.dumps(evaluation.to_dict(), indent=2, ensure_ascii=False))
    else:
        classes = evaluation.classes
        for task, ev in evaluation.tasks.items():  # several tasks: each in a line, the first in detail below
            print(f"Task {task}: " + "; ".join(s.summary() for s in ev.splits.values()))
        print(f"Run: {evaluation.run_dir} ({evaluation.model})"
              + (f"; pictures from {evaluation.data}" if evaluation.data != "run" else ""))
        for split in evaluation.splits.values():
            print(f"{SPLIT_NAMES.get(split.name, split.name)} pictures: {split.count}, "
                  f"accuracy {split.accuracy:.3f}, macro precision {split.macro_precision:.3f}, "
                  f"recall {split.macro_recall:.3f}, F1 {split.macro_f1:.3f}")
            rows = [["class", "precision", "recall", "F1", "pictures"]]
            rows += [[c.name, f"{c.precision:.3f}", f"{c.recall:.3f}", f"{c.f1:.3f}", str(c.support)]
                     for c in split.per_class]
            print("\n".join(_table(rows)))
            print("  confusion matrix (rows: true class, columns: predicted class)")
            print("\n".join(_table([["", *classes]] + [[classes[i], *map(str, row)]
                                                       for i, row in enumerate(split.confusion)], "    ")))
            mistakes = split.mistakes
            if mistakes:
                print(f"  {plural(len(mistakes), 'mistake')}, most confident first:")
                for i in mistakes[:5]:
                    s = split.samples[i]
                    others = ", ".join(f"{classes[c]} {p:.2f}" for c, p in s.top[1:])
                    print(f"    {classes[s.predicted]} {s.confidence:.2f}" + (f" ({others})" if others else "")
                          + f", truly {classes[s.label]}: {s.path}")
                if len(mistakes) > 5:
                    print(f"    ... {len(mistakes) - 5} more in evaluation.json")
            bins = [b for b in split.calibration if b.count]
            before = (f" (before temperature scaling, T = {split.temperature:.2f}: {split.ece_before:.3f})"
                      if split.ece_before is not None and split.temperature != 1.0 else "")
            print(f"  calibration: expected calibration error {split.ece:.3f}{before}; confidence -> accuracy: "
                  + ", ".join(f"{b.confidence:.2f}->{b.accuracy:.2f} ({b.count})" for b in bins))
            if split.unreadable:
                print(f"  {plural(len(split.unreadable), 'picture')} could not be read and were left out, e.g. "
                      f"{split.unreadable[0][0]}: {split.unreadable[0][1]}")
    summary = "; ".join(s.summary() for s in evaluation.splits.values())
    print(f"{summary}; written to {evaluation.path}", file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_predict(args) -> int:
    from pathlib import Path

    from engine.errors import UserError
    from engine.results.predict import heat_map, load_run_model, predict_paths, summary_line, write_csv

    if args.top < 1:
        raise UserError("--top must be at least 1.")
    bundle = load_run_model(args.run, args.device)
    if bundle.info.get("tasks"):  # several tasks: a class and a confidence per task (engine.results.multitask)
        from engine.results import multitask as mt

        rows = _with_stop(lambda stop: mt.predict_tasks(bundle, args.paths, on_progress=_Counted("Predicting"),
                                                        stop=stop))
        _end_progress()
        if not any(r.error is None for r in rows):
            raise UserError(f"None of the {len(rows)} pictures could be predicted ({rows[0].path}: {rows[0].error})")
        if args.csv:
            print(f"Predictions written to {mt.write_task_csv(rows, args.csv, mt.tasks_of_bundle(bundle))}.")
        print("\n".join(mt.prediction_lines(rows if not args.csv else [r for r in rows if r.error])))
        return 0
    flagged = _shift_predict(args, bundle)  # engine.shift: with ood_score and in_domain, unless --no-flag
    rows = flagged if flagged is not None else _with_stop(lambda stop: predict_paths(
        bundle, args.paths, top_k=args.top, on_progress=_Counted("Predicting pictures"), stop=stop))
    _end_progress()
    good = [r for r in rows if r.error is None]
    if not good:
        first = rows[0]
        raise UserError(f"None of the {len(rows)} pictures could be predicted ({first.path}: {first.error})")
    if args.csv:
        csv_path = write_csv(rows, args.csv, top_k=min(args.top, len(bundle.classes)))
    for r in rows:
        if r.error is not None:
            print(f"{r.path}: {r.error}", file=sys.stderr if args.csv else sys.stdout)
        elif not args.csv:
            others = ", ".join(f"{c} {p:.3f}" for c, p in r.top[1:])
            truth = "" if r.correct is None else f" [true class {r.true_class}: {'right' if r.correct else 'wrong'}]"
            flag = "" if r.in_domain is not False else f" [unlike the training pictures: {r.ood_score:.1f}]"
            confidence = "" if r.confidence is None else f" {r.confidence:.3f}"
            print(f"{r.path}: {r.class_name}{confidence}" + (f" ({others})" if others else "") + truth + flag)
    maps = 0
    if args.heatmaps:
        from engine.results.cam import overlay
        from engine.data.images import load_rgb
        from engine.files import atomic_write

        folder = Path(args.heatmaps).expanduser()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"The folder {folder} cannot be created ({exc.strerror or exc}).") from None
        used: set[str] = set()
        from engine.results.slide_maps import slide_heat_map
        from engine.results.slides import is_slide_path

        for r in good:
            if is_slide_path(r.path):  # a whole slide: its tiles' scores on the slide's grid
                picture = slide_heat_map(bundle, r.path, r.class_index).picture()
            else:
                image = load_rgb(r.path)
                image.thumbnail((HEATMAP_SIDE, HEATMAP_SIDE))  # a view, not an archive: keeps huge pictures cheap
                picture = overlay(image, heat_map(bundle, image, r.class_index).cam)
            name = f"{Path(r.path).stem}-{r.class_name}-heatmap"
            while name in used:  # pictures of the same name in different folders
                name += "+"
            used.add(name)
            target = folder / f"{name}.png"
            atomic_write(target, lambda tmp: picture.save(tmp, format="PNG"))
            maps += 1
    if flagged is not None and _flag_words(rows):  # its own line: the last one keeps its fixed form
        print(f"{_flag_words(rows)[0].upper()}{_flag_words(rows)[1:]}.")
    line = summary_line(rows, unreadable_always=True)
    if args.csv:
        line += f"; CSV written to {csv_path}"
    if maps:
        line += f"; {maps} heat maps in {Path(args.heatmaps).expanduser()}"
    print(line)
    return 0


def cmd_export(args) -> int:
    from engine.results.export import FORMAT_NAMES, export_run

    print(f"Exporting {args.run} as {FORMAT_NAMES[args.format]} and checking it against PyTorch ...",
          file=sys.stderr, flush=True)
    _shift_before_export(args.run)  # the OOD statistics travel with the export (engine.shift.ood)
    result = _with_stop(lambda stop: export_run(args.run, args.format, args.out, stop=stop))
    for path in result.files:
        print(f"wrote {path}", file=sys.stderr)
    print(result.summary())
    return 0


def cmd_distill(args) -> int:
    from engine.edge.distill import distill, distill_config, table_lines

    config = distill_config(args.run, args.student, args.weights, epochs=args.epochs, pool=args.pool, out=args.out,
                            temperature=args.temperature, soft_weight=args.soft_weight,
                            feature_weight=args.feature_weight)
    done = _with_stop(lambda stop: distill(config, ConsoleReporter(sys.stderr), stop), "Stopping after this batch")
    result = done.run
    for line in table_lines(done.table) if done.table else []:
        print(line)
    if result.status == "failed":
        print(f"error: {result.error}", file=sys.stderr)
        if not result.run_dir:
            return EXIT_BAD_INPUT
        print(f"failed after {plural(result.epochs_completed, 'epoch')}: {result.run_dir}")
        return EXIT_FAILED
    best = f"{result.best_val_acc:.3f} at epoch {result.best_epoch}" if result.best_val_acc is not None else "none"
    print(f"{result.status}: {plural(result.epochs_completed, 'epoch')}, best validation accuracy {best}: "
          f"{result.run_dir}")
    return EXIT_STOPPED if result.status == "stopped" else EXIT_COMPLETED


def cmd_advise(args) -> int:
    from pathlib import Path

    from engine.advise.transfer import Candidate, advise, candidates
    from engine.data.scan import scan
    from engine.errors import UserError

    if len(args.weights) > len(args.model):
        raise UserError("Give one --weights per --model (each --weights follows its --model).")
    if args.sample < 2:
        raise UserError("--sample must be at least 2 pictures.")
    if args.model:
        from engine.models.build import check_name

        for name in args.model:
            check_name(name)
        weights = args.weights + ["pretrained"] * (len(args.model) - len(args.weights))
        models = [Candidate(m, w, origin="given") for m, w in zip(args.model, weights)]
    else:
        models = candidates(args.runs)
        if not models:
            raise UserError("No model has weights on this computer yet: name one with --model and --weights "
                            "(a weight file, or none), or download pretrained weights in the window first.")
    dataset = scan(args.data, verify=False)
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if sys.stderr.isatty() else None
    advice = _with_stop(lambda stop: advise(dataset, models, sample=args.sample, check=not args.no_check,
                                            device=args.device, on_progress=_progress("Scoring pictures"),
                                            stop=stop, on_say=say))
    _end_progress()
    if args.json:
        print(json.dumps(advice.to_dict(), indent=2, ensure_ascii=False))
        return 0
    print(f"Scores (LogME, higher is better) on {advice.pictures} of your pictures, {len(advice.classes)} classes:")
    rows = [["model", "weights", "score", "s/epoch frozen", "s/epoch all", "params"]]
    for m in advice.models:
        weights = m.weights if m.weights in ("pretrained", "none") else Path(m.weights).name
        rows.append([m.model, weights, f"{m.score:.3f}", f"{m.epoch_seconds_frozen:.0f}",
                     f"{m.epoch_seconds_full:.0f}", f"{m.params / 1e6:.1f} M"])
    print("\n".join(_table(rows)))
    print(f"Stages of {advice.chosen.split(' | ')[0]} (input to head):")
    print("\n".join(_table([["stage", "score", "features"]] + [
        [s.stage + ("  <- suggested freeze point" if s.stage == advice.suggested_freeze else ""),
         f"{s.score:.3f}", str(s.features)] for s in advice.stages])))
    print(advice.freeze_sentence)
    if advice.transfer is not None:
        print(advice.transfer.sentence)
    for line in advice.skipped:
        print(f"not scored: {line}", file=sys.stderr)
    return 0


# --- check, pack-offline ----------------------------------------------------------------------------------------


def cmd_suggest(args) -> int:
    from engine.active import read_labels, scan_pool, suggest
    from engine.errors import UserError

    if args.n < 1:
        raise UserError("--n must be at least 1.")
    labels = read_labels(args.labels) if args.labels else None
    print(f"Reading the pool folder {args.pool} ...", file=sys.stderr, flush=True)
    pool = scan_pool(args.pool, on_progress=_progress("Checking pictures"))
    _end_progress()
    for line in pool.health.lines() if pool.health.advice else []:
        print(line, file=sys.stderr)
    found = _with_stop(lambda stop: suggest(args.run, pool.paths, args.n, labels=labels, seed=args.seed,
                                            kind=args.uncertainty, device=args.device,
                                            on_progress=_Counted("Looking at pictures"), stop=stop))
    _end_progress()
    if args.json:
        print(json.dumps([s.to_dict() for s in found.suggestions], indent=2, ensure_ascii=False))
        return 0
    for s in found.suggestions:
        print(f"{s.path}\tscore {s.score:.3f}\tguess {s.predicted} {s.confidence:.2f}")
    print(f"{plural(len(found.suggestions), 'suggestion')} from {plural(len(found.outputs.paths), 'picture')} "
          "still to label, most helpful first", file=sys.stderr)
    return 0


def cmd_check(args) -> int:
    from engine.check import check_computer

    report = check_computer(runs_dir=args.runs)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print("\n".join(report.lines()))
    return 0


def cmd_pack_offline(args) -> int:
    from engine.kit import pack_offline

    kit = pack_offline(args.out, args.weights, log=lambda line: print(line, file=sys.stderr, flush=True))
    weights = f", {plural(len(kit.weights), 'weight file')}" if kit.weights else ""
    print(f"Offline kit for Python {kit.python}: {plural(kit.wheels, 'wheel')}{weights}, {kit.size_mb:,.0f} MB, "
          f"checked to install without a network: {kit.folder} (install.sh or install.bat there)")
    return 0


# --- drift, adapt (engine.shift: pictures unlike the training pictures) -----------------------------------------


def _add_shift_parsers(sub) -> None:
    drift = sub.add_parser("drift", help="are new pictures still like the training pictures? (a drift report)",
                           description="Compare a folder of new pictures with the pictures a run was trained on: "
                           "the share flagged as unlike the training pictures (about 5 %% expected), how well a "
                           "classifier tells them apart, and how the predicted class mix moved.")
    drift.add_argument("run", help="a run folder or an exported bundle folder")
    drift.add_argument("folder", help="the folder of new pictures (sub-folders too)")
    drift.add_argument("--json", action="store_true", help="print the report as JSON")
    drift.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    adapt = sub.add_parser("adapt", help="adapt a run's model to new pictures without labels (prints the new run "
                           "folder)", epilog=EXIT_CODES_HELP,
                           description="Re-estimate the model's BatchNorm statistics on unlabelled new pictures "
                           "(AdaBN), optionally tuning them by entropy minimisation (TENT), and write the result as "
                           "a new run folder linked to its parent. Refused, with the reason, when the pictures show "
                           "no drift or, when their folders name their classes, when it would make the model worse.")
    adapt.add_argument("run", help="a run folder")
    adapt.add_argument("--data", required=True, metavar="FOLDER", help="the folder of new pictures")
    adapt.add_argument("--method", choices=("adabn", "tent"), default="adabn")
    adapt.add_argument("--out", metavar="DIR", help="folder for the new run folder (default: beside the run)")
    adapt.add_argument("--force", action="store_true", help="adapt even when the measurements say it will not help")
    adapt.add_argument("--json", action="store_true", help="also print the outcome as JSON (before the last line)")
    adapt.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")


def _ood_of(bundle, what: str = "Measuring the training pictures (once per run)"):
    from engine.shift.ood import ensure

    return _with_stop(lambda stop: ensure(bundle, on_progress=_Counted(what), stop=stop))


def _shift_predict(args, bundle):
    """predict's rows with ood_score and in_domain (engine.shift.ood), or None when not scored."""
    from engine.errors import UserError
    from engine.shift.ood import predict_paths as predict_flagged

    if args.no_flag:
        if args.unknown:
            raise UserError("--unknown needs the flag: leave out --no-flag.")
        return None
    ood = _ood_of(bundle)
    _end_progress()
    if ood is None:
        if args.unknown:
            raise UserError(f"{bundle.source} carries no statistics of its training pictures, so pictures unlike "
                            "them cannot be told: export the model again from its run folder.")
        print(f"note: {bundle.source} carries no statistics of its training pictures: no ood_score column (export "
              "it again from its run folder).", file=sys.stderr)
        return None
    rows = _with_stop(lambda stop: predict_flagged(bundle, args.paths, ood, top_k=args.top, unknown=args.unknown,
                                                   on_progress=_Counted("Predicting pictures"), stop=stop))
    _end_progress()
    return rows


def _flag_words(rows) -> str:
    from engine.shift.ood import flag_words

    return flag_words(rows)


def _shift_before_export(run) -> None:
    """Fit the run's OOD statistics before an export, so that they travel with it; a note when they cannot be."""
    from engine.errors import Stopped, UserError
    from engine.results.predict import load_run_model

    try:
        bundle = load_run_model(run, device="cpu")
        if bundle.kind == "run" and not bundle.info.get("tasks"):
            _ood_of(bundle)
            _end_progress()
    except Stopped:
        raise
    except UserError as exc:
        print(f"note: the export carries no statistics for pictures unlike the training ones ({exc})",
              file=sys.stderr)


def cmd_drift(args) -> int:
    from engine.errors import UserError
    from engine.results.predict import load_run_model
    from engine.shift.drift import drift_report

    bundle = load_run_model(args.run, args.device)
    ood = _ood_of(bundle)
    _end_progress()
    if ood is None:
        raise UserError(f"{bundle.source} carries no statistics of its training pictures: give its run folder, or "
                        "export it again from the run folder.")
    report = _with_stop(lambda stop: drift_report(bundle, args.folder, ood, stop=stop,
                                                  on_progress=_Counted("Measuring the new pictures")))
    _end_progress()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        return 0
    d = report.to_dict()
    print(f"Run: {report.run}; pictures: {report.folder}")
    print(f"  flagged as unlike the training pictures: {report.flagged} of {report.pictures} "
          f"({100 * report.flagged_share:.1f} %; about {100 * report.expected_share:.0f} % expected; chance of this "
          f"many or more: {report.p_value:.2g})")
    if report.domain_auc is not None:
        print(f"  domain classifier AUC: {report.domain_auc:.3f} (0.5: indistinguishable, 1: entirely different)")
    print("  predicted class mix (validation -> new): " + ", ".join(
        f"{c} {100 * v['reference']:.0f} % -> {100 * v['new']:.0f} %" for c, v in d["class_mix"].items()))
    if report.unreadable:
        print(f"  {plural(report.unreadable, 'picture')} could not be read and were left out")
    print(report.sentence())
    return 0


def cmd_adapt(args) -> int:
    from engine.shift.adapt import adapt_run

    print(f"Adapting {args.run} to the pictures in {args.data} ({args.method}) ...", file=sys.stderr, flush=True)
    state = {"what": None, "progress": None}

    def progress(what: str, done: int, total: int) -> None:
        if state["what"] != what:
            _end_progress() if state["what"] else None
            state["what"], state["progress"] = what, _Counted(what)
        state["progress"](done, total)

    result = _with_stop(lambda stop: adapt_run(args.run, args.data, args.method, args.out, force=args.force,
                                               device=args.device, on_progress=progress, stop=stop))
    _end_progress()
    print(result.sentence())
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    print(result.run_dir)
    return 0


def _project_argument(argv: list[str]) -> str | None:
    """The project file given alone (``transfer-studio my.tsproj``: a double-click on a project, a file
    association), else None."""
    from pathlib import Path

    if len(argv) == 1 and argv[0].lower().endswith(".tsproj"):
        return str(Path(argv[0]).expanduser().absolute())
    return None


# --- entry ----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    project = _project_argument(argv)
    if project is not None:
        from gui.app import run_app

        return run_app([sys.argv[0]], project=project)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        from gui.app import run_app

        return run_app([sys.argv[0]])
    from engine.errors import Stopped, UserError

    commands = {"train": cmd_train, "scan": cmd_scan, "doctor": cmd_doctor, "models": cmd_models, "evaluate": cmd_evaluate,
                "predict": cmd_predict, "export": cmd_export, "advise": cmd_advise, "distill": cmd_distill,
                "check": cmd_check, "pack-offline": cmd_pack_offline, "suggest": cmd_suggest,
                "drift": cmd_drift, "adapt": cmd_adapt}
    try:
        return commands[args.command](args)
    except Stopped as exc:  # Ctrl-C: the work stopped cleanly at its next check
        print(f"stopped: {exc}", file=sys.stderr)
        return EXIT_STOPPED
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_ABORTED
    except Exception as exc:  # a bug: still one sentence, details on request
        if args.debug:
            traceback.print_exc()
        print(f"error: Transfer Studio hit an unexpected problem ({exc.__class__.__name__}: {exc}). "
              "Run the command again with --debug for details.", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
