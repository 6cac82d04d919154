"""What a user sees for every bad input Transfer Studio is known to meet: pictures, weight files, configurations and
projects.

Every input is generated in a temporary folder (nothing is downloaded, nothing outside that folder is touched), then
handed to the engine exactly as the window and the command line do:

- pictures: one ``engine.data.scan.scan`` of a folder that mixes them with good pictures; the sentence is the one its
  health report gives (``python main.py scan DIR`` prints it; the Data step lists it under "Left out"). Pictures that
  are odd but usable say so, and are trained on;
- weight files: ``engine.models.build.build_model`` (``--weights FILE``, the Model step), ``engine.project.library`` import and
  ``engine.results.predict.load_run_model`` (``predict``, the Predict step); the sentence is the UserError's text;
- configurations and projects: ``engine.config.load`` (``main.py train CONFIG.toml``) and
  ``engine.project.project.open_project`` (Open project...): the UserError's text, or the note shown after opening.

It prints a Markdown table, ``input | what the user sees``. Run:

    .venv/bin/python bench/bad_inputs_report.py > docs/bad-inputs.md
"""

from __future__ import annotations

import os
import pickle
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # bad_pictures: the same generator the tests use
os.environ.setdefault("TRANSFER_STUDIO_OFFLINE", "1")  # no weight source may reach a network
warnings.filterwarnings("ignore", "Detected pickle protocol")  # torch's note while it refuses a plain pickle

Row = tuple[str, str]


# --- pictures ---------------------------------------------------------------------------------------------------


def picture_rows(tmp: Path) -> list[Row]:
    from bad_pictures import LOCKED, good_classes, make_bad_pictures, unreadable

    from engine.data.scan import scan

    data = good_classes(tmp / "pictures")
    bad, odd = make_bad_pictures(data / "cats")
    (data / "dogs" / "loop").symlink_to(data / "dogs", target_is_directory=True)  # a folder link back to itself
    with unreadable(data / "cats") as simulated:
        index = scan(data, workers=1)
    reasons = {Path(p.path).name: p.reason for p in index.health.unreadable}
    used = {Path(s.path).name for s in index.samples}
    rows: list[Row] = []
    for description, name in bad:
        if name == LOCKED and simulated:
            description += " (run as root, where chmod does not stop reading: the refused open is simulated)"
        seen = reasons.get(name, "(used for training!)" if name in used else "(not reported)")
        rows.append((f"{description}: `{name}`", seen))
    for description, name in odd:
        rows.append((f"{description}: `{name}`", "Nothing: the picture is kept for training."
                     if name in used else f"(left out: {reasons.get(name)})"))
    rows.append(("folder link that loops back to its own folder: `dogs/loop -> dogs`",
                 "Nothing: each real folder is visited once, and the scan ends."))
    summary = next((a.message for a in index.health.advice if a.kind == "unreadable"), "")
    rows.append(("(the health report's summary of the files above)", summary))
    return rows


# --- weight files -----------------------------------------------------------------------------------------------


class _CreatesAFile:
    """Unpickling this would call open(marker, "w") and create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _outcome(call: Callable[[], str]) -> str:
    """What ``call`` tells the user: its UserError's sentence, or the sentence it returns."""
    from engine.errors import UserError

    try:
        return call()
    except UserError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - the report must show a crash rather than hide it
        return f"CRASH: {exc.__class__.__name__}: {exc}"


def _user_error(call: Callable[[], object]) -> str:
    """The UserError's sentence, or a note that the input was accepted."""
    return _outcome(lambda: f"(accepted: {call()!r})"[:200])


def weight_rows(tmp: Path) -> list[Row]:
    import torch
    import torchvision
    from safetensors.torch import save_file

    from engine.project.library import ModelLibrary
    from engine.models.build import build_model
    from engine.results.predict import load_run_model

    folder = tmp / "weights"
    folder.mkdir()
    torch.manual_seed(0)
    mobilenet = torchvision.models.mobilenet_v2().state_dict()
    good = folder / "mobilenet_v2.safetensors"
    save_file(mobilenet, str(good))
    good_pth = folder / "mobilenet_v2.pth"
    torch.save(mobilenet, good_pth)
    target = "torchvision:mobilenet_v2"
    rows: list[Row] = []

    def row(description: str, path: Path, *, model: str = target) -> None:
        rows.append((description, _user_error(lambda: build_model(model, str(path), 3))))

    resnet = folder / "resnet18.safetensors"
    save_file(torchvision.models.resnet18().state_dict(), str(resnet))
    row(f"weights for another architecture: `{resnet.name}` into {target}", resnet)
    cut = folder / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:1000])
    row("truncated .safetensors (first 1000 bytes)", cut)
    cut_pth = folder / "cut.pth"
    cut_pth.write_bytes(good_pth.read_bytes()[: good_pth.stat().st_size // 2])
    row("truncated .pth (first half)", cut_pth)
    row("missing path", folder / "nowhere.safetensors")
    wrong = dict(mobilenet, **{"features.0.0.weight": torch.zeros(32, 3, 5, 5)})
    reshaped = folder / "reshaped.safetensors"
    save_file(wrong, str(reshaped))
    row("safetensors file with a tensor of the wrong shape", reshaped)
    empty = folder / "empty.pth"
    empty.write_bytes(b"")
    row("zero-byte .pth", empty)
    html = folder / "download.pth"
    html.write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>\n")
    row("web page saved as .pth (a failed download)", html)
    notes = folder / "notes.pth"
    torch.save({"epoch": 3, "accuracy": 0.9}, notes)
    row("a .pth holding no tensors (`{epoch: 3, accuracy: 0.9}`)", notes)
    other = folder / "weights.txt"
    other.write_bytes(good.read_bytes())
    row("a weight file with another suffix (`weights.txt`)", other)
    (folder / "a-folder.pth").mkdir()
    row("a folder named `a-folder.pth`", folder / "a-folder.pth")

    markers = []
    for writer in ("torch.save", "pickle.dump"):
        marker = folder / f"created-by-{writer}"
        markers.append(marker)
        evil = folder / f"evil-{writer.split('.')[0]}.pth"
        payload = {"conv.weight": torch.zeros(2, 2), "trap": _CreatesAFile(marker)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if writer == "torch.save":
                torch.save(payload, evil)
            else:
                evil.write_bytes(pickle.dumps(payload))
        row(f"pickle that would run code when loaded (written with {writer})", evil)
        rows.append((f"... the same file imported into the model library",
                     _user_error(lambda: ModelLibrary(tmp / "library").import_file(evil))))

    run = tmp / "runs" / "20260101-000000-test_resnet-feature-extraction"
    run.mkdir(parents=True)
    (run / "config.toml").write_text("version = 1\n", encoding="utf-8")
    (run / "labels.json").write_text('["cats", "dogs"]\n', encoding="utf-8")
    (run / "model.json").write_text('{"model": "timm:test_resnet", "head": "fc", "data_config": {"input_size": '
                                    '[3, 160, 160], "interpolation": "bilinear", "mean": [0.5, 0.5, 0.5], "std": '
                                    '[0.5, 0.5, 0.5], "crop_pct": 0.875, "crop_mode": "center"}}\n',
                                    encoding="utf-8")
    marker = folder / "created-by-run-folder"
    markers.append(marker)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save({"fc.weight": torch.zeros(2, 2), "trap": _CreatesAFile(marker)}, run / "best.safetensors")
    rows.append(("run folder whose `best.safetensors` was replaced by a code-running pickle (predict)",
                 _user_error(lambda: load_run_model(run, device="cpu"))))
    (run / "best.pt").write_bytes((run / "best.safetensors").read_bytes())
    rows.append(("... the same pickle given as `--weights best.pt`",
                 _user_error(lambda: build_model("timm:test_resnet", str(run / "best.pt"), 2))))
    created = [m.name for m in markers if m.exists()]
    rows.append(("(did any of these pickles run?)", f"NO SAFETY: {', '.join(created)} created" if created else
                 "No: none of the files the pickles would create exists."))
    return rows


# --- configurations and projects --------------------------------------------------------------------------------


PROJECT = '[project]\nformat = "transfer-studio-project"\nversion = 1\nname = "Leaves"\n'


def config_rows(tmp: Path) -> list[Row]:
    from engine.config import load

    folder = tmp / "configs"
    folder.mkdir()
    rows: list[Row] = []

    def row(description: str, text: str | bytes) -> None:
        path = folder / "config.toml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        rows.append((f"config.toml: {description}", _user_error(lambda: load(path))))

    row("not valid TOML (`epochs = = 3`)", "epochs = = 3\n")
    row("cut short in the middle of a table", '[train]\nbatch_size = 8\noptimizer = "ad')
    row("binary garbage", b"\xff\xfe\x00\x80\x00 binary \x89PNG")
    row("unknown key (`learning_rate`)", "learning_rate = 0.1\n")
    row("misspelt key in [train] (`batchsize`)", "[train]\nbatchsize = 8\n")
    row("a future format version (`version = 2`)", "version = 2\n")
    row("a value of the wrong kind (`epochs = \"five\"`)", 'epochs = "five"\n')
    row("an unknown choice (`strategy = \"magic\"`)", 'strategy = "magic"\n')
    rows.append(("config.toml: missing file", _user_error(lambda: load(folder / "nowhere.toml"))))
    return rows


def project_rows(tmp: Path) -> list[Row]:
    import dataclasses

    from engine.config import RunConfig
    from engine.project.project import Project, open_project, save_project

    folder = tmp / "projects" / "shared"
    folder.mkdir(parents=True)
    data_dir = tmp / "app-data"
    rows: list[Row] = []

    def row(description: str, text: str | bytes) -> None:
        path = folder / "leaves.tsproj"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))

        def opened() -> str:
            result = open_project(path, data_dir=data_dir)
            return " ".join(result.notes) or f"Nothing: the project opens, its runs go to {result.project.config.out}."

        rows.append((f".tsproj: {description}", _outcome(opened)))

    whole = save_project(Project("Leaves", RunConfig()), folder / "whole.tsproj").path
    text = Path(whole).read_text(encoding="utf-8")
    row("cut short (first 60 characters)", text[:60])
    row("binary garbage", b"\x00\x01\x02\xff\xfe garbage")
    row("not valid TOML", "[project\nformat = 1\n")
    row("a run's config.toml renamed to .tsproj", 'version = 1\nstrategy = "feature-extraction"\n')
    row("a future format version (`version = 2`)", PROJECT.replace("version = 1", "version = 2"))
    row("an unknown section (`[extras]`)", PROJECT + "[extras]\na = 1\n")
    row("an unknown setting in [project] (`title`)", PROJECT + 'title = "Leaves"\n')
    row("an unknown setting in [config.train] (`batchsize`)", PROJECT + "[config.train]\nbatchsize = 8\n")
    row("runs sent outside the project (`out = \"../../outside\"`)", PROJECT + '[config]\nout = "../../outside"\n')
    row("runs sent to an absolute folder elsewhere (`out = \"/etc/cron.d\"`)", PROJECT + '[config]\nout = "/etc/cron.d"\n')
    runs_link = folder / "runs-link"
    runs_link.symlink_to(tmp / "elsewhere", target_is_directory=True)
    row("runs sent through a link that leads outside (`out = \"runs-link\"`)", PROJECT + '[config]\nout = "runs-link"\n')

    from engine.project.runs import create_run_dir

    for name in ("../../escape", "/etc/passwd", "..\\..\\windows"):
        config = dataclasses.replace(RunConfig(), out=str(folder / "runs"), name=name)
        made = create_run_dir(config.out, config.model.name, config.strategy, config.name)
        inside = made.parent == folder / "runs"
        rows.append((f"a run name with path separators (`name = \"{name}\"`)",
                     f"Nothing: the run folder is `runs/{_undated(made.name)}`" + ("" if inside else " (OUTSIDE!)")
                     + "."))
    return rows


# --- the report -------------------------------------------------------------------------------------------------


def _undated(name: str) -> str:
    return re.sub(r"^\d{8}-\d{6}", "<date>-<time>", name)


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("|", "\\|")).strip()


def report() -> str:
    with tempfile.TemporaryDirectory(prefix="ts-bad-inputs-") as tmp_name:
        tmp = Path(tmp_name)
        sections = [
            ("Pictures (`scan`, the Data step's health report, training)", picture_rows(tmp)),
            ("Weight files (`--weights`, the Model step, the model library, `predict`)", weight_rows(tmp)),
            ("Configuration files (`main.py train CONFIG.toml`)", config_rows(tmp)),
            ("Project files (Open project...)", project_rows(tmp)),
        ]
        lines = []
        for title, rows in sections:
            lines += [f"### {title}", "", "| input | what the user sees |", "|---|---|"]
            lines += [f"| {_cell(a)} | {_cell(b).replace(tmp_name, '<tmp>')} |" for a, b in rows]
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
