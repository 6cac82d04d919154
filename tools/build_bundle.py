"""Build the desktop bundle: a one-folder application (PyInstaller) that runs without a Python installation.

    pip install pyinstaller          (into the environment that has Transfer Studio's packages)
    python tools/build_bundle.py [--dist DIR] [--smoke]

Writes DIR/transfer-studio/ (default DIR: dist/), holding the executable ``transfer-studio`` (Windows:
``transfer-studio.exe``; macOS: also ``Transfer Studio.app``) and ``_internal/`` with Python, PyTorch, Qt and the app's
resources. Zip the folder to hand it on. ``--smoke`` then runs ``transfer-studio --help`` and ``check`` from it, and
trains the demo (its pictures and config.toml written by this environment into a temporary folder) with the bundle's
``train``.
The bundle includes the PyTorch of this environment: a CUDA build makes a bundle of about 5-6 GB (the CUDA
libraries), a CPU-only build about 1 GB. Not run in CI (too large); see README "Install" for the figures.

Why PyInstaller: it bundles PyTorch, PySide6 and their native libraries with maintained hooks on Linux, Windows and
macOS from one command; briefcase builds platform installers but needs its own packaging of every native
dependency (PyTorch has none), and cx_Freeze lacks hooks for PyTorch's CUDA libraries.

On Linux, ``python -m engine.kit desktop dist/transfer-studio/transfer-studio`` adds the menu entry and the .tsproj
association for the bundle.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAME = "transfer-studio"


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", default=str(REPO / "dist"), help="where the bundle folder goes (default: dist/)")
    parser.add_argument("--work", default=str(REPO / "build" / "pyinstaller"), help="PyInstaller's work folder")
    parser.add_argument("--smoke", action="store_true", help="run --help and check from the bundle afterwards, "
                        "and train the demo with it")
    args = parser.parse_args()
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        print("error: PyInstaller is not installed in this environment: pip install pyinstaller, then run this "
              "script again.", file=sys.stderr)
        return 2
    sep = os.pathsep
    command = [
        sys.executable, "-m", "PyInstaller", str(REPO / "main.py"),
        "--name", NAME, "--onedir", "--noconfirm", "--clean", "--windowed",
        "--distpath", args.dist, "--workpath", args.work, "--specpath", args.work,
        # The app's resources: found by engine.paths.resources_dir() beside the engine package (_internal/resources).
        "--add-data", f"{REPO / 'resources'}{sep}resources",
        # Packages whose data files or lazily imported modules PyInstaller's analysis does not see.
        "--collect-data", "qtawesome", "--collect-data", "timm", "--collect-submodules", "timm.models",
        "--collect-submodules", "engine", "--collect-submodules", "gui",
        "--collect-data", "onnxscript", "--collect-submodules", "onnxscript", "--collect-data", "onnx_ir",
        "--copy-metadata", "torch", "--copy-metadata", "timm", "--copy-metadata", "torchvision",
        "--copy-metadata", "huggingface_hub", "--copy-metadata", "safetensors",
        # The app's own version (`check` reads it from the installed metadata; without it, it says "source checkout").
        "--copy-metadata", "transfer-studio",
        # Lab formats: pydicom finds its pixel-data plugins (pylibjpeg's JPEG and JPEG 2000 decoders) through their
        # entry points, which live in the packages' metadata; OpenSlide's library ships in the openslide_bin package.
        "--collect-submodules", "pydicom", "--copy-metadata", "pylibjpeg", "--copy-metadata", "pylibjpeg-libjpeg",
        "--copy-metadata", "pylibjpeg-openjpeg", "--collect-all", "pylibjpeg", "--collect-all", "libjpeg",
        "--collect-all", "openjpeg", "--collect-all", "openslide_bin", "--collect-submodules", "imagecodecs",
        "--exclude-module", "tkinter", "--exclude-module", "pytest", "--exclude-module", "IPython",
    ]
    # torchvision's operator libraries (0.29: _C_stable.so and image_stable.so; before: _C.so, image.so) are loaded
    # with torch.ops.load_library from beside torchvision/__init__.py: the contrib hook's hidden import torchvision._C
    # misses the new names and --collect-binaries only takes lib*.so, and without them timm stops with "operator
    # torchvision::nms does not exist".
    for library in torchvision_libraries():
        command += ["--add-binary", f"{library}{sep}torchvision"]
    if sys.platform == "darwin":
        command += ["--osx-bundle-identifier", "org.transferstudio.app"]
    started = time.perf_counter()
    print(" ".join(command), flush=True)
    done = subprocess.run(command, cwd=REPO)
    if done.returncode != 0:
        print(f"error: PyInstaller failed (exit {done.returncode}): see its output above.", file=sys.stderr)
        return 1
    bundle = Path(args.dist) / NAME
    executable = bundle / (NAME + (".exe" if sys.platform == "win32" else ""))
    print(f"Bundle: {bundle} ({folder_size(bundle) / 2**30:.2f} GB, {sum(1 for _ in bundle.rglob('*')):,} files), "
          f"built in {time.perf_counter() - started:.0f} s")
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="ts-bundle-smoke-") as folder:
            for check in ([str(executable), "--help"], [str(executable), "check"],
                          [str(executable), "train", str(demo_config_file(Path(folder)))]):
                started = time.perf_counter()
                result = subprocess.run(check, capture_output=True, text=True, timeout=1800, cwd=folder)
                print(f"$ {' '.join(check)}  (exit {result.returncode}, {time.perf_counter() - started:.1f} s)")
                print((result.stdout + result.stderr)[-3000:], flush=True)
                if result.returncode != 0:
                    return 1
    return 0


def torchvision_libraries() -> list[Path]:
    """The native libraries at the top of the installed torchvision package (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(list(spec.submodule_search_locations)[0])
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".so", ".pyd", ".dylib", ".dll"))


def demo_config_file(folder: Path) -> Path:
    """The demo's pictures and a config.toml training it (runs in folder/runs), written by this environment."""
    sys.path.insert(0, str(REPO))
    from engine.config import dumps
    from engine.project.demo import demo_config, ensure_demo_dataset

    config = folder / "demo.toml"
    config.write_text(dumps(demo_config(ensure_demo_dataset(folder), folder / "runs")), encoding="utf-8")
    return config


if __name__ == "__main__":
    sys.exit(main())
