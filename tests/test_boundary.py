"""The engine never imports Qt, pyqtgraph or the GUI: the import-linter contract holds, importing every engine module
loads none of them, and both checks do catch a module that breaks the rule."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import tomli_w

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("PySide6", "shiboken6", "pyqtgraph", "gui", "PyQt5", "PyQt6", "qtpy", "superqt")

# Run from the folder given as cwd, so that `engine` is the package found there (the first entry of sys.path).
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
IMPORT_ALL = textwrap.dedent(f"""
    import importlib, json, pkgutil, sys
    import engine
    names = [m.name for m in pkgutil.walk_packages(engine.__path__, "engine.")]
    for name in names:
        importlib.import_module(name)
    forbidden = {FORBIDDEN!r}
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in forbidden)
    print(json.dumps({{"engine": engine.__file__, "modules": names, "forbidden": loaded}}))
""")


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def _import_all(root: Path) -> dict:
    result = _run(IMPORT_ALL, root)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(report["engine"]).resolve().parent == (root / "engine").resolve()  # the package under test
    return report


def test_import_linter_contract_holds():
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    assert any(c["type"] == "forbidden" and c["source_modules"] == ["engine"]
               and {"PySide6", "pyqtgraph", "gui"} <= set(c["forbidden_modules"]) for c in contracts)
    result = _run(LINT, REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"{len(contracts)} kept, 0 broken" in result.stdout


def test_importing_every_engine_module_loads_no_qt():
    report = _import_all(REPO)
    expected = {".".join(p.relative_to(REPO).with_suffix("").parts) for p in (REPO / "engine").rglob("*.py")
                if p.stem != "__init__"}
    assert expected <= set(report["modules"])
    assert report["forbidden"] == []


def test_both_checks_catch_an_engine_module_that_imports_qt(tmp_path):
    # A copy of the project's packages and of its import-linter settings, nothing else.
    for package in ("engine", "gui"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    settings = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    (tmp_path / "pyproject.toml").write_text(tomli_w.dumps({"tool": {"importlinter": settings}}), encoding="utf-8")

    clean = _run(LINT, tmp_path)
    assert clean.returncode == 0, clean.stdout[-3000:] + clean.stderr[-3000:]  # the copy passes as it is

    (tmp_path / "engine" / "leak.py").write_text('"""A module that breaks the rule."""\n\nimport PySide6  # noqa\n',
                                                 encoding="utf-8")
    broken = _run(LINT, tmp_path)
    assert broken.returncode != 0
    assert "BROKEN" in broken.stdout and "engine.leak" in broken.stdout and "PySide6" in broken.stdout

    report = _import_all(tmp_path)
    assert "engine.leak" in report["modules"]
    assert "PySide6" in report["forbidden"]


def _copy_with_lint_settings(tmp_path: Path) -> None:
    for package in ("engine", "gui"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    settings = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    (tmp_path / "pyproject.toml").write_text(tomli_w.dumps({"tool": {"importlinter": settings}}), encoding="utf-8")


def test_the_layout_contracts_catch_an_import_against_the_grain(tmp_path):
    """The data package reaching up into results and a step importing another step are each refused."""
    _copy_with_lint_settings(tmp_path)
    (tmp_path / "engine" / "data" / "upward.py").write_text("import engine.results.evaluate  # noqa\n",
                                                          encoding="utf-8")
    with open(tmp_path / "gui" / "steps" / "predict.py", "a", encoding="utf-8") as f:
        f.write("\nimport gui.steps.evaluate  # noqa\n")
    broken = _run(LINT, tmp_path)
    assert broken.returncode != 0
    assert "engine.data is not allowed to import engine.results" in broken.stdout
    assert "engine.data.upward -> engine.results.evaluate" in broken.stdout
    assert "gui.steps.predict is not allowed to import gui.steps.evaluate" in broken.stdout
