"""Transfer Studio: ``python main.py`` opens the window; subcommands run the same engine headless.

    python main.py                                   open the window
    python main.py train --data DIR --model torchvision:mobilenet_v2 --weights FILE \\
                         --strategy feature-extraction --epochs 5 --out runs
    python main.py train CONFIG.toml                 repeat a run (a run folder's config.toml) or a saved project
    python main.py train --resume RUN                continue a stopped or interrupted run from its checkpoint
    python main.py scan DIR [--json]                 dataset summary and health report
    python main.py models [FILTER]                   the model catalogue
    python main.py evaluate RUN [--data DIR] [--json]            metrics, confusion matrix, mistakes, calibration
    python main.py predict RUN PATH... [--csv FILE] [--top K]    predict pictures and folders
    python main.py export RUN --format bundle|onnx|torchscript [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
import traceback

EXIT_USER_ERROR = 2
EXIT_FAILED = 1
HEATMAP_SIDE = 1024  # predict --heatmaps: the longest side of a saved overlay, in pixels


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one sentence and the usage line, never a traceback
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)


def build_parser() -> argparse.ArgumentParser:
    from engine.config import AUGMENTATIONS, OPTIMIZERS, PRECISIONS, SCHEDULES, STRATEGIES

    parser = _Parser(prog="transfer-studio", description="Transfer learning on your own pictures. "
                     "Without a command, opens the window.")
    parser.add_argument("--debug", action="store_true", help="show full error details (for bug reports)")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    train = sub.add_parser("train", help="train a model (prints the run folder)",
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
    train.add_argument("--lr", type=float, help="learning rate of the new head")
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

    scan = sub.add_parser("scan", help="dataset summary and health report")
    scan.add_argument("data", help="a folder or a CSV of path,label")
    scan.add_argument("--json", action="store_true", help="print the summary as JSON")
    scan.add_argument("--val-fraction", type=float, default=0.2)
    scan.add_argument("--split", choices=("auto", "random"), default="auto",
                      help="auto: the data's own train/val split when it has one; random: draw it")
    scan.add_argument("--seed", type=int, default=0)

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

    export = sub.add_parser("export", help="export a run's model (bundle, ONNX or TorchScript) with a model card",
                            description="Export a run's model, check it against PyTorch on validation pictures, "
                            "and write model.json and MODEL_CARD.md beside it.")
    export.add_argument("run", help="a run folder")
    export.add_argument("--format", required=True, choices=("bundle", "onnx", "torchscript"))
    export.add_argument("--out", metavar="DIR", help="folder to export into (default: RUN/export)")
    return parser


# --- train ----------------------------------------------------------------------------------------------------


def config_from_args(args) -> "RunConfig":
    from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from engine.errors import ConfigError

    if args.config:
        from engine.project.project import load_run_config

        config = load_run_config(args.config)  # a run's config.toml or a saved project
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
    return dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, **data),
        model=dataclasses.replace(config.model, **model),
        train=dataclasses.replace(config.train, **train),
        **top,
    ).validate()


class ConsoleReporter:
    """Prints engine events: progress to stderr (a live line on a terminal), the outcome to stdout."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.live = stream.isatty()
        self.run_dir = None

    def __call__(self, event) -> None:
        from engine import events as ev

        if isinstance(event, ev.StepEnded):
            if self.live:
                self._line(f"  epoch {event.epoch}  step {event.step}/{event.steps}  loss {event.loss:.3f}  "
                           f"{event.images_per_s:.0f} img/s", end="\r")
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
    from engine.errors import ConfigError, UserError
    from engine.train.trainer import fit, resume

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
        config = config_from_args(args)
    if config is not None:
        from engine.models.build import check_name

        check_name(config.model.name)  # a mistyped name is told at once, before the pictures are scanned

    def work(stop: threading.Event):
        if config is None:
            return resume(args.resume, ConsoleReporter(), stop, device=args.device, workers=args.workers)
        return fit(config, ConsoleReporter(), stop)

    result = _with_stop(work, "Stopping after this batch")
    if result.status == "failed":
        print(f"error: {result.error}", file=sys.stderr)
        if result.run_dir:
            print(f"failed after {_plural(result.epochs_completed, 'epoch')}: {result.run_dir}")
        return EXIT_FAILED
    best = f"{result.best_val_acc:.3f} at epoch {result.best_epoch}" if result.best_val_acc is not None else "none"
    print(f"{result.status}: {_plural(result.epochs_completed, 'epoch')}, best validation accuracy {best}: "
          f"{result.run_dir}")
    return 0


# --- scan, models ---------------------------------------------------------------------------------------------


def cmd_scan(args) -> int:
    from engine.data.scan import scan

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\rChecking pictures {done}/{total}", end="", file=sys.stderr, flush=True)

    index = scan(args.data, val_fraction=args.val_fraction, seed=args.seed, split=args.split, on_progress=progress)
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
    sizes = " / ".join(f"{sum(counts[s].values())} {s}" for s in splits)
    unreadable = len(index.health.unreadable)
    print(f"{_plural(len(index.classes), 'class', 'classes')}, {sizes} pictures, {unreadable} unreadable",
          file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_models(args) -> int:
    from engine.models import catalogue

    names = catalogue.names(args.filter)  # the same catalogue as the window's model picker
    for name in names:
        print(name)
    timm_count = sum(n.startswith("timm:") for n in names)
    print(f"{_plural(len(names), 'model')} ({timm_count} timm, {len(names) - timm_count} torchvision)"
          + (f" matching '{args.filter}'" if args.filter else ""), file=sys.stderr)
    return 0


def _plural(n: int, noun: str, plural: str = "") -> str:
    """'1 epoch', '2 epochs'; '1 class', '3 classes' with plural='classes'."""
    return f"1 {noun}" if n == 1 else f"{n:,} {plural or noun + 's'}"


# --- evaluate, predict, export ---------------------------------------------------------------------------------


def _progress(label: str):
    """A live 'label done/total' line on a terminal's stderr; nothing when output goes to a file."""
    if not sys.stderr.isatty():
        return None
    return lambda done, total: print(f"\r{label} {done}/{total}", end="", file=sys.stderr, flush=True)


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

    evaluation = _with_stop(lambda stop: evaluate_run(args.run, args.data, _progress("Evaluating pictures"), stop,
                                                      device=args.device))
    _end_progress()
    if args.json:
        print(json.dumps(evaluation.to_dict(), indent=2, ensure_ascii=False))
    else:
        classes = evaluation.classes
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
                print(f"  {_plural(len(mistakes), 'mistake')}, most confident first:")
                for i in mistakes[:5]:
                    s = split.samples[i]
                    others = ", ".join(f"{classes[c]} {p:.2f}" for c, p in s.top[1:])
                    print(f"    {classes[s.predicted]} {s.confidence:.2f}" + (f" ({others})" if others else "")
                          + f", truly {classes[s.label]}: {s.path}")
                if len(mistakes) > 5:
                    print(f"    ... {len(mistakes) - 5} more in evaluation.json")
            bins = [b for b in split.calibration if b.count]
            print(f"  calibration: expected calibration error {split.ece:.3f}; confidence -> accuracy: "
                  + ", ".join(f"{b.confidence:.2f}->{b.accuracy:.2f} ({b.count})" for b in bins))
            if split.unreadable:
                print(f"  {_plural(len(split.unreadable), 'picture')} could not be read and were left out, e.g. "
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
    rows = _with_stop(lambda stop: predict_paths(bundle, args.paths, top_k=args.top,
                                                 on_progress=_progress("Predicting pictures"), stop=stop))
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
            print(f"{r.path}: {r.class_name} {r.confidence:.3f}" + (f" ({others})" if others else "") + truth)
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
        for r in good:
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
    result = _with_stop(lambda stop: export_run(args.run, args.format, args.out, stop=stop))
    for path in result.files:
        print(f"wrote {path}", file=sys.stderr)
    print(result.summary())
    return 0


# --- entry ----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        from gui.app import run_app

        return run_app([sys.argv[0]])
    from engine.errors import UserError

    commands = {"train": cmd_train, "scan": cmd_scan, "models": cmd_models, "evaluate": cmd_evaluate,
                "predict": cmd_predict, "export": cmd_export}
    try:
        return commands[args.command](args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one sentence, details on request
        if args.debug:
            traceback.print_exc()
        print(f"error: Transfer Studio hit an unexpected problem ({exc.__class__.__name__}: {exc}). "
              "Run the command again with --debug for details.", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
