"""Transfer Studio: ``python main.py`` opens the window; subcommands run the same engine headless.

    python main.py                                   open the window
    python main.py train --data DIR --model torchvision:mobilenet_v2 --weights FILE \\
                         --strategy feature-extraction --epochs 5 --out runs
    python main.py train CONFIG.toml                 repeat a run (a run folder's config.toml) or a saved project
    python main.py scan DIR [--json]                 dataset summary and health report
    python main.py models [FILTER]                   the model catalogue
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
    train.add_argument("--data", help="folder of class sub-folders, train/ val/ [test/] folders, or a CSV path,label")
    train.add_argument("--model", help="timm:<name> or torchvision:<name> (see: models)")
    train.add_argument("--weights", help="pretrained, none, or a weight file (.safetensors .pth .pt .bin)")
    train.add_argument("--strategy", choices=[s for s in STRATEGIES if s != "custom"])
    train.add_argument("--epochs", type=int)
    train.add_argument("--lr", type=float, help="learning rate of the new head")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--optimizer", choices=OPTIMIZERS)
    train.add_argument("--schedule", choices=SCHEDULES)
    train.add_argument("--augment", choices=AUGMENTATIONS)
    train.add_argument("--label-smoothing", type=float)
    train.add_argument("--early-stopping", type=int, metavar="EPOCHS", help="patience in epochs, 0 = off")
    train.add_argument("--precision", choices=PRECISIONS)
    train.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    train.add_argument("--workers", type=int, help="data-loading processes (-1 = automatic)")
    train.add_argument("--seed", type=int)
    train.add_argument("--val-fraction", type=float, help="validation share when the data has no split")
    train.add_argument("--out", help="folder for run folders (default: runs)")
    train.add_argument("--name", help="label for the run folder")

    scan = sub.add_parser("scan", help="dataset summary and health report")
    scan.add_argument("data", help="a folder or a CSV of path,label")
    scan.add_argument("--json", action="store_true", help="print the summary as JSON")
    scan.add_argument("--val-fraction", type=float, default=0.2)
    scan.add_argument("--seed", type=int, default=0)

    models = sub.add_parser("models", help="list the model catalogue")
    models.add_argument("filter", nargs="?", default="", help="part of a name, or a pattern such as '*vit*'")
    return parser


# --- train ----------------------------------------------------------------------------------------------------


def config_from_args(args) -> "RunConfig":
    from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig, load
    from engine.errors import ConfigError

    if args.config:
        config = load(args.config)
    elif not args.data or not args.model:
        raise ConfigError("Say what to train: give --data and --model, or a CONFIG.toml.")
    else:
        config = RunConfig(data=DataConfig(), model=ModelConfig(), train=TrainConfig())
    top = {k: v for k, v in {"strategy": args.strategy, "epochs": args.epochs, "lr": args.lr, "out": args.out,
                            "name": args.name}.items() if v is not None}
    if {"strategy", "epochs", "lr"} & top.keys():
        top["phases"] = ()  # the saved phases belonged to the old strategy: resolve them again
    data = {k: v for k, v in {"source": args.data, "val_fraction": args.val_fraction}.items() if v is not None}
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
            self._line(f"Run folder: {event.run_dir}")
        elif isinstance(event, ev.EpochEnded):
            self._line(f"epoch {event.epoch}/{event.total_epochs} [{event.phase_name}]  "
                       f"train loss {event.train_loss:.3f} acc {event.train_acc:.3f}  "
                       f"val loss {event.val_loss:.3f} acc {event.val_acc:.3f}  {event.seconds:.1f}s"
                       + ("  *best" if event.is_best else ""))

    def _line(self, text: str, end: str = "\n") -> None:
        if self.live:
            text = text.ljust(78)
        print(text, end=end, file=self.stream, flush=True)


def cmd_train(args) -> int:
    from engine.train import fit

    config = config_from_args(args)
    stop = threading.Event()

    def on_interrupt(signum, frame):  # first Ctrl-C: stop cleanly after this batch; second: give up at once
        if stop.is_set():
            raise KeyboardInterrupt
        print("\nStopping after this batch (press Ctrl-C again to abort) ...", file=sys.stderr, flush=True)
        stop.set()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        result = fit(config, ConsoleReporter(), stop)
    finally:
        signal.signal(signal.SIGINT, previous)
    if result.status == "failed":
        print(f"error: {result.error}", file=sys.stderr)
        if result.run_dir:
            print(f"failed after {result.epochs_completed} epochs: {result.run_dir}")
        return EXIT_FAILED
    best = f"{result.best_val_acc:.3f} at epoch {result.best_epoch}" if result.best_val_acc is not None else "none"
    print(f"{result.status}: {result.epochs_completed} epochs, best validation accuracy {best}: {result.run_dir}")
    return 0


# --- scan, models ---------------------------------------------------------------------------------------------


def cmd_scan(args) -> int:
    from engine.data import scan

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\rChecking pictures {done}/{total}", end="", file=sys.stderr, flush=True)

    index = scan(args.data, val_fraction=args.val_fraction, seed=args.seed, on_progress=progress)
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
    print(f"{len(index.classes)} classes, {sizes} pictures, {unreadable} unreadable",
          file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_models(args) -> int:
    from engine.models import catalogue

    names = catalogue(args.filter)
    for name in names:
        print(name)
    timm_count = sum(n.startswith("timm:") for n in names)
    print(f"{len(names)} models ({timm_count} timm, {len(names) - timm_count} torchvision)"
          + (f" matching '{args.filter}'" if args.filter else ""), file=sys.stderr)
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

    commands = {"train": cmd_train, "scan": cmd_scan, "models": cmd_models}
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
