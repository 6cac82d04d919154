"""The offline install kit, and installing the app like a desktop application.

``pack_offline(out, weights)`` (``python main.py pack-offline --out DIR [--weights ...]``), on a computer with a
network, writes a folder that installs Transfer Studio on a computer without one:

    DIR/wheels/        every wheel needed, for this platform and Python: the app's own and the pinned set
                       (constraints.txt of the source folder, else the versions installed here)
    DIR/weights/       the chosen weight files, and weights.json (each file's model, size and SHA-256)
    DIR/install.sh     Linux and macOS: a virtual environment, `pip install --no-index --find-links wheels`, the
    DIR/install.bat    weights registered in the model library, and (Linux) a menu entry with the .tsproj association
    DIR/kit.json       what the kit holds and which Python it needs; README.txt says how to use it

After packing, the kit is resolved once with the index disabled (``pip install --dry-run --no-index``), so a kit that
would need the network fails here, on the connected computer, and not in the lab.

``python -m engine.kit register-weights DIR`` and ``python -m engine.kit desktop EXECUTABLE`` are the two steps the
install scripts run with the freshly installed Python. No function here imports Qt.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from engine.files import sha256_of
from engine.errors import UserError
from engine.files import atomic_write, atomic_write_json, atomic_write_text
from engine.paths import resource

APP_DISTRIBUTION = "transfer-studio"
WHEELS, WEIGHTS = "wheels", "weights"
WEIGHTS_MANIFEST = "weights.json"
KIT_MANIFEST = "kit.json"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
DESKTOP_ID = "transfer-studio"  # the .desktop file's and the icon's name
MIME_TYPE = "application/x-transfer-studio-project"


class KitError(UserError):
    """The kit cannot be made or installed: the sentence says why and what to do."""


@dataclass(frozen=True)
class KitWeights:
    file: str  # the file's name inside weights/
    architecture: str | None  # "timm:resnet18" when known
    source: str  # where it came from: a path, or "pretrained timm:resnet18"
    size_mb: float
    sha256: str


@dataclass(frozen=True)
class Kit:
    folder: Path
    wheels: int
    size_mb: float
    python: str  # "3.11"
    weights: tuple[KitWeights, ...]
    verified: bool  # resolved with the index disabled here


# --- packing -----------------------------------------------------------------------------------------------------


def pack_offline(out: str | os.PathLike, weights: Iterable[str] = (), *,
                 log: Callable[[str], None] = lambda line: None) -> Kit:
    """Write the offline kit into ``out`` (a new or empty folder, or an earlier kit to refresh). ``weights``: weight
    files (``FILE`` or ``FILE=timm:NAME`` to say its model) and model names (``timm:resnet18``: its pretrained
    weights, from this computer's caches or downloaded now)."""
    folder = Path(out).expanduser().absolute()
    if folder.exists() and any(folder.iterdir()) and not (folder / KIT_MANIFEST).is_file():
        raise KitError(f"{folder} is not empty: choose a new or empty folder for the kit.")
    specs = [_weight_spec(w) for w in weights]  # every mistake told before anything large is downloaded
    wheels = folder / WHEELS
    try:
        wheels.mkdir(parents=True, exist_ok=True)
        (folder / WEIGHTS).mkdir(exist_ok=True)
    except OSError as exc:
        raise KitError(f"The kit folder {folder} cannot be made ({exc.strerror or exc}).") from None
    _pip_available()
    log("Building the app's wheel ...")
    app_wheel = _app_wheel(wheels)
    log(f"Downloading the wheels of the pinned set for Python {_python()} on {platform.system()} "
        f"{platform.machine()} ...")
    with _constraints() as constraints:
        _pip("download", "--only-binary=:all:", "-c", str(constraints), "-d", str(wheels), str(app_wheel),
             what="The wheels could not be downloaded", advice="check the internet connection (or the package "
             "index pip uses) and try again")
    kit_weights = tuple(_add_weights(spec, folder / WEIGHTS, log) for spec in specs)
    atomic_write_json(folder / WEIGHTS / WEIGHTS_MANIFEST, [dataclasses.asdict(w) for w in kit_weights])
    version = _app_version(app_wheel)
    _write_scripts(folder, version)
    log("Checking that the kit installs without a network ...")
    _pip("install", "--dry-run", "--ignore-installed", "--no-index", "--find-links", str(wheels),
         f"{APP_DISTRIBUTION}=={version}", what="The kit is incomplete: it does not install without a network",
         advice="pack it again; if that repeats, report it")
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
    kit = Kit(folder, len(list(wheels.glob("*.whl"))), round(size, 1), _python(), kit_weights, True)
    atomic_write_json(folder / KIT_MANIFEST, {
        "app": APP_DISTRIBUTION, "version": version, "python": kit.python, "system": platform.system(),
        "machine": platform.machine(), "made": time.strftime("%Y-%m-%dT%H:%M:%S"), "wheels": kit.wheels,
        "weights": [w.file for w in kit_weights]})
    return kit


def _python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _source_tree() -> Path | None:
    """The source folder when running from one (pyproject.toml beside main.py), else None (an installed app)."""
    import main

    root = Path(main.__file__).resolve().parent
    return root if (root / "pyproject.toml").is_file() and (root / "engine").is_dir() else None


def _pip_available() -> None:
    if getattr(sys, "frozen", False):
        raise KitError("An offline kit is made with Transfer Studio installed with Python (not from the bundled "
                       "application): run `python main.py pack-offline` in the source folder or an installed copy.")
    try:
        import pip  # noqa: F401
    except ImportError:
        raise KitError(f"pip is not installed in this Python ({sys.executable}): install it "
                       "(python -m ensurepip) and pack again.") from None


def _pip(*args: str, what: str, advice: str) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        reason = next((line.strip() for line in lines if line.lstrip().upper().startswith("ERROR")),
                      lines[-1].strip() if lines else f"pip exited with {done.returncode}")
        raise KitError(f"{what} ({reason}): {advice}.")


def _app_wheel(wheels: Path) -> Path:
    """The app's own wheel in ``wheels``: built from the source folder, or copied from the wheel this copy was
    installed from."""
    for old in wheels.glob("transfer_studio-*.whl"):
        old.unlink()
    source = _source_tree()
    if source is not None:
        isolation = ("--no-build-isolation",) if _has_build_backend() else ()  # nothing to download then
        _pip("wheel", "--no-deps", *isolation, "-w", str(wheels),
             str(source), what="The app's wheel could not be built", advice="check that the source folder is complete")
    else:
        found = _installed_from_wheel()
        if found is None:
            raise KitError("This copy of Transfer Studio was not installed from a wheel file that is still on this "
                           "computer, so the kit cannot include the app: run pack-offline in the source folder "
                           "(python main.py pack-offline ...).")
        shutil.copy2(found, wheels / found.name)
    built = sorted(wheels.glob("transfer_studio-*.whl"))
    if not built:
        raise KitError("The app's wheel was not made: run pack-offline in the source folder.")
    return built[-1]


def _has_build_backend() -> bool:
    """Whether setuptools (68 or newer, as pyproject.toml asks) is importable here: then the wheel is built without
    an isolated environment (nothing to download)."""
    from importlib import metadata

    try:  # read, not imported: importing setuptools here would swap in its own distutils
        version = metadata.version("setuptools")
    except metadata.PackageNotFoundError:
        return False
    major = re.match(r"\d+", version)
    return bool(major) and int(major.group()) >= 68


def _installed_from_wheel() -> Path | None:
    from importlib import metadata
    from urllib.parse import unquote, urlparse

    try:
        text = metadata.distribution(APP_DISTRIBUTION).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    url = json.loads(text).get("url", "")
    path = Path(unquote(urlparse(url).path)) if url.startswith("file:") else None
    return path if path is not None and path.suffix == ".whl" and path.is_file() else None


class _constraints:
    """The pinned set as a constraints file: the source folder's constraints.txt, else the versions installed here."""

    def __enter__(self) -> Path:
        source = _source_tree()
        if source is not None and (source / "constraints.txt").is_file():
            self.temp = None
            return source / "constraints.txt"
        from importlib import metadata
        import tempfile

        pins = sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()
                       if d.metadata["Name"] and d.metadata["Name"].lower() not in (APP_DISTRIBUTION, "pip")})
        handle = tempfile.NamedTemporaryFile("w", suffix="-constraints.txt", delete=False)
        handle.write("\n".join(pins) + "\n")
        handle.close()
        self.temp = Path(handle.name)
        return self.temp

    def __exit__(self, *exc) -> None:
        if self.temp is not None:
            self.temp.unlink(missing_ok=True)


def _app_version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


# --- weights -----------------------------------------------------------------------------------------------------


def _weight_spec(text: str) -> tuple[str, Path | None, str | None]:
    """('pretrained', None, 'timm:resnet18') or ('file', path, architecture or None), or a KitError sentence."""
    from engine.models.build import check_name

    text = text.strip()
    if text.startswith(("timm:", "torchvision:")) and not Path(text).exists():
        check_name(text)
        return "pretrained", None, text
    path_text, _, arch = text.partition("=") if not Path(text).exists() else (text, "", "")
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise KitError(f"{text} is neither a weight file on this computer nor a model name (timm:<name> or "
                       "torchvision:<name> for its pretrained weights).")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise KitError(f"{path.name} is not a weight file: use .safetensors, .pth, .pt or .bin.")
    if arch:
        check_name(arch)
    return "file", path, arch or None


def _add_weights(spec, target: Path, log: Callable[[str], None]) -> KitWeights:
    kind, path, arch = spec
    if kind == "pretrained":
        from engine.check import _pretrained_file
        from engine.models import catalogue

        path = _pretrained_file(arch)
        if path is None:
            log(f"Downloading the pretrained weights of {arch} ...")
            catalogue.download_pretrained(arch)
            path = _pretrained_file(arch)
        if path is None:
            raise KitError(f"The pretrained weights of {arch} could not be found after downloading them.")
        path = Path(path).resolve()  # the Hugging Face cache links to its blobs
        name = f"{arch.replace(':', '-')}{path.suffix}"
        source = f"pretrained {arch}"
    else:
        name, source = path.name, str(path.resolve())
        arch = arch or _architecture_of(path)
    log(f"Adding {name}" + (f" ({arch})" if arch else " (model unknown: it is registered without one)"))
    atomic_write(target / name, lambda tmp: shutil.copyfile(path, tmp))
    return KitWeights(name, arch, source, round((target / name).stat().st_size / 2**20, 1), sha256_of(target / name))


def _architecture_of(path: Path) -> str | None:
    """The model a weight file is for: its safetensors metadata, a run folder's model.json beside it, else the one
    catalogue model whose layers it fits (engine.models.identify), else None."""
    from engine.project.library import _architecture_beside

    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                arch = (f.metadata() or {}).get("architecture")
            if arch:
                return arch
        except Exception:  # noqa: BLE001 - a damaged file is refused when it is read below
            pass
    arch = _architecture_beside(path)
    if arch:
        return arch
    from engine.models.identify import identify
    from engine.models.weights import read_weight_file

    candidates = identify(read_weight_file(path))
    return candidates[0] if len(candidates) == 1 else None



def register_weights(folder: str | os.PathLike, library_dir: str | os.PathLike | None = None) -> list[str]:
    """Import the kit's weights (``weights/weights.json``) into the model library, each checked against its SHA-256
    first; returns one line per file."""
    from engine.project.library import ModelLibrary

    folder = Path(folder)
    manifest = folder / WEIGHTS_MANIFEST
    if not manifest.is_file():
        return []
    try:
        entries = [KitWeights(**e) for e in json.loads(manifest.read_text(encoding="utf-8"))]
    except (OSError, ValueError, TypeError) as exc:
        raise KitError(f"The kit's list of weights {manifest} cannot be read ({exc}): copy the kit again.") from None
    library = ModelLibrary(library_dir)
    lines = []
    for entry in entries:
        path = folder / entry.file
        if not path.is_file() or sha256_of(path) != entry.sha256:
            raise KitError(f"The weight file {entry.file} of the kit is missing or damaged: copy the kit again.")
        imported = library.import_file(path, entry.architecture)
        lines.append(f"{entry.file} -> {imported.architecture or 'model unknown'} in the model library")
    return lines


# --- scripts and the desktop entry -------------------------------------------------------------------------------


def _write_scripts(folder: Path, version: str) -> None:
    values = {"@PYTHON@": _python(), "@VERSION@": version}
    for name, newline in (("install.sh", "\n"), ("install.bat", "\r\n")):
        text = resource(f"kit-{name}").read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace(key, value)
        target = folder / name
        atomic_write(target, lambda tmp, text=text, newline=newline: tmp.write_bytes(
            text.replace("\r\n", "\n").replace("\n", newline).encode("utf-8")))
        if name.endswith(".sh"):
            target.chmod(0o755)
    atomic_write_text(folder / "README.txt", resource("kit-README.txt").read_text(encoding="utf-8")
                      .replace("@PYTHON@", _python()).replace("@VERSION@", version))


def install_desktop_entry(executable: str | os.PathLike, data_home: str | os.PathLike | None = None) -> list[Path]:
    """Linux: a menu entry that starts ``executable``, its icon, and the .tsproj file type opened by it (the
    freedesktop.org places under ``$XDG_DATA_HOME``, ~/.local/share by default); returns the files written."""
    home = Path(data_home or os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    entry = resource(f"{DESKTOP_ID}.desktop").read_text(encoding="utf-8")
    exe = str(Path(executable).absolute())
    entry = re.sub(r"^Exec=\S+", lambda m: "Exec=" + _desktop_quote(exe), entry, flags=re.M)
    entry = re.sub(r"^TryExec=\S+", lambda m: "TryExec=" + exe, entry, flags=re.M)
    written = []
    for target, text in ((home / "applications" / f"{DESKTOP_ID}.desktop", entry),
                         (home / "mime" / "packages" / f"{DESKTOP_ID}.xml",
                          resource(f"{DESKTOP_ID}-mime.xml").read_text(encoding="utf-8"))):
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, text)
        written.append(target)
    for folder in ("scalable/apps", "scalable/mimetypes"):
        name = f"{DESKTOP_ID}.svg" if folder.endswith("apps") else f"{MIME_TYPE.replace('/', '-')}.svg"
        target = home / "icons" / "hicolor" / folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda tmp: shutil.copyfile(resource("icon.svg"), tmp))
        written.append(target)
    for command in (["update-mime-database", str(home / "mime")],
                    ["update-desktop-database", str(home / "applications")],
                    ["xdg-mime", "default", f"{DESKTOP_ID}.desktop", MIME_TYPE]):
        if shutil.which(command[0]):
            subprocess.run(command, capture_output=True)  # a cache refresh: the files above are what counts
    return written


def _desktop_quote(path: str) -> str:
    """A path for a .desktop Exec line (quoted when it holds spaces), followed by the file argument."""
    quoted = f'"{path}"' if re.search(r"[\s\"'\\$`]", path) else path
    return quoted


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.kit register-weights DIR`` | ``python -m engine.kit desktop EXECUTABLE`` (install steps)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if len(argv) == 2 and argv[0] == "register-weights":
            for line in register_weights(argv[1]):
                print(line)
            return 0
        if len(argv) == 2 and argv[0] == "desktop":
            for path in install_desktop_entry(argv[1]):
                print(f"wrote {path}")
            return 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("usage: python -m engine.kit register-weights DIR | desktop EXECUTABLE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
