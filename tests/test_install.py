"""Installing like a user: the wheel carries the app's resources, and the offline kit installs Transfer Studio into a
fresh virtual environment with the package index disabled, where the command line, the window and the demo work.

The kit test is the wheel test too: the kit's install.sh installs the app's wheel non-editable (with every
dependency of the pinned set, torch included) into a new environment, so `transfer-studio --help`, `models resnet`,
the window (offscreen) and a headless demo run are checked there, with resources found in the installed package.
Measured on this 2-core machine: packing the kit 40-60 s (3 GB of wheels from the local package mirror), installing it
about 70 s; the whole module takes 3-4 minutes, so it runs in CI (marked slow). Everything it writes (about 9 GB) is
deleted at its end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

SOURCE_ITEMS = ("pyproject.toml", "setup.py", "README.md", "main.py", "constraints.txt", "engine", "gui", "resources")
RESOURCE_FILES = ("icon.svg", "param_counts.json", "model_signatures.json", "guide.md", "transfer-studio.desktop",
                  "transfer-studio-mime.xml", "kit-install.sh", "kit-install.bat")


@pytest.fixture(scope="module")
def workspace():
    """A folder for the module, removed at its end (the kit and the environment take about 9 GB)."""
    folder = Path(tempfile.mkdtemp(prefix="ts-install-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def source(workspace) -> Path:
    """A copy of the source folder (what a user downloads), so that building never writes into the repository."""
    target = workspace / "source"
    target.mkdir()
    for name in SOURCE_ITEMS:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, target / name)
    return target


def run(command, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=900, **kwargs)


def test_the_wheel_carries_the_resources_and_every_package(source, workspace):
    out = workspace / "wheel"
    done = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out),
                str(source)])
    assert done.returncode == 0, done.stderr
    names = zipfile.ZipFile(next(out.glob("transfer_studio-*.whl"))).namelist()
    for name in RESOURCE_FILES:
        assert f"transfer_studio_resources/{name}" in names
    packages = {str(p.parent.relative_to(source)).replace(os.sep, "/") for top in ("engine", "gui")
                for p in (source / top).rglob("__init__.py")}
    for package in packages:  # every package of engine/ and gui/ (a new one is found without listing it)
        assert f"{package}/__init__.py" in names
    assert "main.py" in names


@pytest.fixture(scope="module")
def kit(source, workspace) -> Path:
    """An offline kit made from the source copy, with one weight file for timm:test_resnet."""
    from safetensors.torch import save_file

    import timm

    weights = workspace / "lab-weights.safetensors"
    save_file(timm.create_model("test_resnet", num_classes=5).state_dict(), str(weights))
    folder = workspace / "kit"
    done = run([sys.executable, str(source / "main.py"), "pack-offline", "--out", str(folder), "--weights",
                f"{weights}=timm:test_resnet"], cwd=workspace)
    assert done.returncode == 0, done.stderr
    assert "checked to install without a network" in done.stdout
    return folder


@pytest.fixture(scope="module")
def installed(kit, workspace) -> tuple[Path, dict]:
    """The kit installed by its install.sh into a fresh environment, with pip's index disabled and no pip
    configuration (what a computer without network has), and a home folder of its own."""
    home = workspace / "home"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "TRANSFER_STUDIO"))}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "share"), XDG_CACHE_HOME=str(home / "cache"),
               PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull, QT_QPA_PLATFORM="offscreen",
               PYTHON=shutil.which("python3") or sys.executable)
    target = workspace / "app"
    done = run(["sh", str(kit / "install.sh"), str(target)], env=env, cwd=workspace)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Transfer Studio is installed" in done.stdout
    return target / "venv", env


def test_the_kit_holds_the_pinned_set_the_weights_and_the_scripts(kit):
    pinned = {line.split("==")[0].lower().replace("_", "-") for line in (REPO / "constraints.txt").read_text()
              .splitlines() if "==" in line}
    wheels = {p.name.split("-")[0].lower().replace("_", "-") for p in (kit / "wheels").glob("*.whl")}
    assert {"torch", "torchvision", "timm", "pyside6-essentials", "numpy", "transfer-studio"} <= wheels
    assert wheels - {"transfer-studio", "setuptools"} <= pinned  # nothing outside the tested set (torch needs
    # setuptools, which pip freeze leaves out of constraints.txt)
    manifest = json.loads((kit / "weights" / "weights.json").read_text())
    assert [(w["file"], w["architecture"]) for w in manifest] == [("lab-weights.safetensors", "timm:test_resnet")]
    assert os.access(kit / "install.sh", os.X_OK) and (kit / "install.bat").read_bytes().count(b"\r\n") > 10
    assert json.loads((kit / "kit.json").read_text())["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}"


def test_a_folder_that_is_not_empty_is_refused(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    done = run([sys.executable, str(REPO / "main.py"), "pack-offline", "--out", str(tmp_path)])
    assert done.returncode == 2 and "is not empty: choose a new or empty folder" in done.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_the_installed_command_line_works(installed):
    venv, env = installed
    help_text = run([str(venv / "bin" / "transfer-studio"), "--help"], env=env)
    assert help_text.returncode == 0 and "pack-offline" in help_text.stdout and "check" in help_text.stdout
    models = run([str(venv / "bin" / "transfer-studio"), "models", "resnet"], env=env)
    assert models.returncode == 0, models.stderr
    assert "timm:resnet18" in models.stdout.splitlines() and "torchvision:resnet50" in models.stdout.splitlines()


def test_the_installed_window_opens_with_its_resources(installed):
    venv, env = installed
    script = (
        "import sys\n"
        "from PySide6.QtCore import QTimer\n"
        "from PySide6.QtWidgets import QApplication\n"
        "from engine.paths import resources_dir\n"
        "from gui.app import open_main_window\n"
        "from gui import help as guide\n"
        "window = open_main_window([])\n"
        "app = QApplication.instance()\n"
        "QTimer.singleShot(500, window.close)\n"
        "QTimer.singleShot(800, app.quit)\n"
        "app.exec()\n"
        "print('resources', resources_dir())\n"
        "print('icon', not app.windowIcon().isNull())\n"
        "print('guide', guide.guide_path().is_file())\n"
        "print('title', window.windowTitle())\n")
    done = run([str(venv / "bin" / "python"), "-c", script], env=env, cwd=venv.parent)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    assert str(venv) in lines["resources"] and "site-packages" in lines["resources"]
    assert lines["icon"] == "True" and lines["guide"] == "True"
    assert "Transfer Studio" in lines["title"]


def test_the_demo_trains_headless_from_the_installed_kit(installed, workspace):
    venv, env = installed
    env = {**env, "TRANSFER_STUDIO_OFFLINE": "1"}
    make = run([str(venv / "bin" / "python"), "-c",
                "from engine.project.demo import open_demo_project; print(open_demo_project().path)"], env=env)
    assert make.returncode == 0, make.stderr
    project = make.stdout.strip().splitlines()[-1]
    done = run([str(venv / "bin" / "transfer-studio"), "train", project, "--epochs", "2", "--out",
                str(workspace / "runs")], env=env, cwd=workspace)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("completed: 2 epochs")


def test_the_kit_registered_its_weights_and_a_menu_entry(installed):
    venv, env = installed
    done = run([str(venv / "bin" / "transfer-studio"), "check", "--json"], env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [(w["model"], w["where"]) for w in report["weights"]] == [("timm:test_resnet", "model library")]
    share = Path(env["XDG_DATA_HOME"])
    entry = (share / "applications" / "transfer-studio.desktop").read_text()
    assert f"Exec={venv / 'bin' / 'transfer-studio'} %f" in entry
    assert "MimeType=application/x-transfer-studio-project;" in entry
    assert "*.tsproj" in (share / "mime" / "packages" / "transfer-studio.xml").read_text()
    assert (share / "icons" / "hicolor" / "scalable" / "apps" / "transfer-studio.svg").is_file()
