"""Check this computer: what Transfer Studio will run on, and what to do about each problem.

``check_computer()`` gathers, without any network: the Python, PyTorch and CUDA build versions and the NVIDIA driver;
each device (every CUDA GPU, Apple's GPU, the CPU) with its memory and whether bf16 and fp16 really compute on it (a
tiny matrix product and convolution in that precision, compared with fp32); free disk space and write permission at
the picture cache and the runs folder; the offline switch; and the pretrained weights on this computer (the Hugging
Face and PyTorch hub caches, and the model library). ``Report.problems`` are sentences, each saying what to do.

``python main.py check [--json]`` prints it, and the window shows it in Help > Check this computer (gui.check).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

MIN_FREE_CACHE_GB = 2.0  # below this the picture cache stops early and re-decodes pictures every epoch
MIN_FREE_RUNS_GB = 1.0  # a run folder holds the best weights and a checkpoint: up to a few hundred MB each
MIN_MEMORY_GB = 4.0  # PyTorch alone takes about 0.6 GB; a small model and its pictures need a few more
PROBE_SIDE = 64  # the tiny test operation: a 64 x 64 matrix product and a 3 x 3 convolution
NVIDIA_SMI_TIMEOUT = 10  # seconds


@dataclass
class Device:
    name: str
    type: str  # "cuda", "mps" or "cpu"
    memory_gb: float | None
    bf16: bool  # a tiny bf16 operation ran and gave the right result
    fp16: bool
    index: int | None = None  # the GPU number for "cuda"
    native_bf16: bool | None = None  # the CPU only: bf16 in hardware (AVX-512 BF16 / AMX), as training uses it


@dataclass
class Folder:
    path: str
    free_gb: float | None
    writable: bool
    exists: bool


@dataclass
class Weights:
    model: str  # "timm:resnet18" (its pretrained weights), or the architecture of an imported file
    where: str  # "Hugging Face cache", "PyTorch hub cache" or "model library"
    path: str
    size_mb: float


@dataclass
class Report:
    python: dict
    torch: dict
    cuda: dict
    devices: list[Device]
    disk: dict[str, Folder]
    offline: bool
    weights: list[Weights]
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The JSON of ``check --json``: keys python, torch, cuda, devices, disk, offline, weights, problems."""
        return dataclasses.asdict(self)

    def lines(self) -> list[str]:
        """The report in plain text, one fact per line (the command line and the window's copy)."""
        out = [f"Python {self.python['version']} ({self.python['executable']})",
               f"PyTorch {self.torch['version']}, torchvision {self.torch['torchvision']}, timm {self.torch['timm']}, "
               f"Transfer Studio {self.torch['transfer_studio']}"]
        cuda = self.cuda
        if cuda["build"]:
            out.append(f"CUDA build {cuda['build']}" + (f", cuDNN {cuda['cudnn']}" if cuda["cudnn"] else "")
                       + (f"; NVIDIA driver {cuda['driver']}" if cuda["driver"] else "; no NVIDIA GPU or driver found")
                       + ("" if cuda["available"] else " (CUDA not usable)"))
        else:
            out.append("PyTorch without CUDA" + (f"; NVIDIA driver {cuda['driver']}" if cuda["driver"] else ""))
        for d in self.devices:
            memory = f"{d.memory_gb:.1f} GB" if d.memory_gb is not None else "memory unknown"
            bf16 = "yes" if d.bf16 else "no"
            if d.native_bf16 is not None:
                bf16 += " (in hardware)" if d.native_bf16 else " (emulated: training stays in fp32)"
            out.append(f"{d.name} [{d.type}{'' if d.index is None else ':' + str(d.index)}]: {memory}, "
                       f"bf16 {bf16}, fp16 {'yes' if d.fp16 else 'no'}")
        for label, folder in self.disk.items():
            free = f"{folder.free_gb:.1f} GB free" if folder.free_gb is not None else "free space unknown"
            out.append(f"{label.capitalize()} folder {folder.path}: {free}, "
                       + ("writable" if folder.writable else "NOT writable"))
        out.append("Offline mode: " + ("on (no network connection at all)" if self.offline else "off"))
        if self.weights:
            out.append(f"Pretrained and imported weights on this computer ({len(self.weights)}):")
            out += [f"  {w.model}: {w.where} ({Path(w.path).name}), {w.size_mb:,.0f} MB" for w in self.weights]
        else:
            out.append("No pretrained or imported weights on this computer yet.")
        out.append("Problems:" if self.problems else "No problems found.")
        out += [f"  - {p}" for p in self.problems]
        return out


def check_computer(runs_dir: str | os.PathLike | None = None, library_dir: str | os.PathLike | None = None) -> Report:
    """Check this computer (a few seconds: the catalogue's first use imports timm; every GPU runs a tiny operation).
    ``runs_dir``: the runs folder to check (default ``runs`` in the current folder, where ``train`` writes)."""
    import torch

    from engine.data.cache import cache_root
    from engine.offline import offline_mode

    problems: list[str] = []
    python = {"version": platform.python_version(), "executable": sys.executable,
              "platform": platform.platform(), "machine": platform.machine()}
    torch_facts = {"version": torch.__version__, "torchvision": _version("torchvision"), "timm": _version("timm"),
                   "transfer_studio": _version("transfer-studio") or "source checkout",
                   "threads": torch.get_num_threads()}
    smi = _nvidia_smi()
    cuda = {"build": torch.version.cuda, "available": bool(torch.version.cuda) and torch.cuda.is_available(),
            "driver": smi.get("driver"), "driver_cuda": smi.get("cuda"),
            "cudnn": torch.backends.cudnn.version() if torch.version.cuda and torch.cuda.is_available() else None,
            "driver_gpus": smi.get("gpus", []), "arch_list": torch.cuda.get_arch_list() if torch.version.cuda else []}
    problems += _cuda_problems(cuda)

    devices = _devices(problems)
    disk = {"cache": _folder(cache_root()), "runs": _folder(Path(runs_dir) if runs_dir is not None else Path("runs"))}
    problems += _disk_problems(disk)
    offline = offline_mode()
    weights = _weights(library_dir, problems)
    if offline and not weights:
        problems.append("Offline mode is on and no pretrained weights are on this computer, so models can only start "
                        "from random weights: import a weight file in the Model step, or install an offline kit with "
                        "weights (python main.py pack-offline --weights ... on a connected computer).")
    return Report(python, torch_facts, cuda, devices, disk, offline, weights, problems)


# --- versions and the NVIDIA driver --------------------------------------------------------------------------------


def _version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _nvidia_smi() -> dict:
    """The NVIDIA driver's version, the newest CUDA it supports and its GPUs' names, from nvidia-smi ({} without)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    try:
        listing = subprocess.run([exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT)
        banner = subprocess.run([exe], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT)
    except (OSError, subprocess.SubprocessError):
        return {}
    rows = [[c.strip() for c in line.split(",")] for line in listing.stdout.splitlines() if line.strip()]
    found = re.search(r"CUDA Version:\s*([\d.]+)", banner.stdout)
    facts = {"gpus": [r[0] for r in rows if r], "cuda": found.group(1) if found else None}
    if rows and len(rows[0]) > 1:
        facts["driver"] = rows[0][1]
    if listing.returncode != 0 and not rows:
        facts["error"] = (listing.stderr or listing.stdout).strip().splitlines()[:1]
    return facts


def _cuda_problems(cuda: dict) -> list[str]:
    gpus = cuda["driver_gpus"]
    if gpus and not cuda["build"]:
        return [f"An NVIDIA GPU is present ({gpus[0]}) but this PyTorch build has no CUDA, so training runs on the "
                "CPU, many times slower: install PyTorch with CUDA support (pytorch.org lists the command for this "
                "computer), or use Transfer Studio's offline kit or bundle made on a computer with a CUDA build."]
    if gpus and cuda["build"] and not cuda["available"]:
        driver = f"driver {cuda['driver']}" + (f", for CUDA up to {cuda['driver_cuda']}" if cuda["driver_cuda"] else "")
        return [f"An NVIDIA GPU is present ({gpus[0]}) but PyTorch cannot use it: this PyTorch is built for CUDA "
                f"{cuda['build']} and the NVIDIA {driver} may be older than that needs. Update the NVIDIA driver, "
                "or install a PyTorch build for the CUDA version the driver supports."]
    return []


# --- devices ---------------------------------------------------------------------------------------------------------


def _devices(problems: list[str]) -> list[Device]:
    import torch

    devices = []
    if torch.version.cuda and torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            devices.append(_cuda_device(i, problems))
    from engine.train.runtime import _mps_available, cpu_has_native_bf16

    if _mps_available():
        memory = None
        if hasattr(torch.mps, "recommended_max_memory"):
            memory = round(torch.mps.recommended_max_memory() / 2**30, 1)
        device = torch.device("mps")
        devices.append(Device("Apple GPU (MPS)", "mps", memory, _runs(device, torch.bfloat16),
                              _runs(device, torch.float16)))
    cpu = torch.device("cpu")
    import psutil

    memory = psutil.virtual_memory().total / 2**30
    devices.append(Device(_cpu_name(), "cpu", round(memory, 1), _runs(cpu, torch.bfloat16), _runs(cpu, torch.float16),
                          native_bf16=cpu_has_native_bf16()))
    if memory < MIN_MEMORY_GB:
        problems.append(f"This computer has {memory:.1f} GB of memory: training may run out of it. Close other "
                        "programs, choose a small model (MobileNet) and a small batch size.")
    return devices


def _cuda_device(index: int, problems: list[str]) -> Device:
    import torch

    props = torch.cuda.get_device_properties(index)
    device = torch.device("cuda", index)
    name = f"GPU {index}: {props.name}"
    fp32 = _runs(device, torch.float32)
    bf16, fp16 = _runs(device, torch.bfloat16), _runs(device, torch.float16)
    capability = f"sm_{props.major}{props.minor}"
    if fp32 is not True:
        built = ", ".join(torch.cuda.get_arch_list()) or "none"
        problems.append(f"{name} cannot run this PyTorch build ({fp32}; the GPU is {capability}, the build has "
                        f"kernels for {built}): install a PyTorch build that supports it, or train on the CPU.")
    elif not fp16 and not bf16:
        problems.append(f"{name} computes neither in bf16 nor in fp16: set Precision to fp32 in the Train step "
                        "(--precision fp32), or training in automatic precision will fail there.")
    elif not bf16 and torch.cuda.is_bf16_supported():
        problems.append(f"{name} reports bf16 support but a bf16 operation failed on it: set Precision to fp16 in the "
                        "Train step (--precision fp16).")
    return Device(name, "cuda", round(props.total_memory / 2**30, 1), bf16 is True, fp16 is True, index=index)


def _runs(device, dtype):
    """True when a tiny matrix product and a convolution in ``dtype`` run on ``device`` and agree with fp32 (bf16
    keeps about 3 significant digits); else False, or the error's text when even fp32 fails."""
    import torch

    try:
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(PROBE_SIDE, PROBE_SIDE, generator=generator)
        image = torch.randn(1, 3, 16, 16, generator=generator)
        kernel = torch.randn(4, 3, 3, 3, generator=generator)
        expected = (a @ a, torch.nn.functional.conv2d(image, kernel, padding=1))
        a, image, kernel = (t.to(device=device, dtype=dtype) for t in (a, image, kernel))
        got = (a @ a, torch.nn.functional.conv2d(image, kernel, padding=1))
        for g, e in zip(got, expected):
            g = g.float().cpu()
            if not torch.isfinite(g).all() or not torch.allclose(g, e, rtol=0.05, atol=0.05 * float(e.abs().max())):
                return False
        return True
    except Exception as exc:  # noqa: BLE001 - a failing device is a finding, not a crash
        return f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ") \
            if dtype == torch.float32 else False


def _cpu_name() -> str:
    name = platform.processor() or ""
    try:
        if sys.platform.startswith("linux"):
            for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU: {name or platform.machine()} ({os.cpu_count()} cores)"


# --- disk ------------------------------------------------------------------------------------------------------------


def _folder(path: Path) -> Folder:
    """Free space and write permission at ``path``, or at its nearest existing parent when it does not exist yet
    (it is made on first use). Writing is tried for real: an unnamed temporary file, gone when closed."""
    path = Path(path).expanduser().absolute()
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    try:
        free = round(shutil.disk_usage(existing).free / 2**30, 1)
    except OSError:
        free = None
    try:
        with tempfile.TemporaryFile(dir=existing):
            writable = True
    except OSError:
        writable = False
    return Folder(str(path), free, writable, path.exists())


def _disk_problems(disk: dict[str, Folder]) -> list[str]:
    problems = []
    cache, runs = disk["cache"], disk["runs"]
    if not cache.writable:
        problems.append(f"Transfer Studio cannot write its picture cache in {cache.path}: give your user write "
                        "permission there, or set TRANSFER_STUDIO_CACHE to a folder you can write to.")
    elif cache.free_gb is not None and cache.free_gb < MIN_FREE_CACHE_GB:
        problems.append(f"Only {cache.free_gb:.1f} GB are free at the picture cache ({cache.path}): free some space, "
                        "or set TRANSFER_STUDIO_CACHE to a folder on a larger disk; pictures are otherwise decoded "
                        "again in every epoch.")
    if not runs.writable:
        problems.append(f"Transfer Studio cannot write run folders in {runs.path}: choose a runs folder you can write "
                        "to (save the project elsewhere, or train with --out DIR).")
    elif runs.free_gb is not None and runs.free_gb < MIN_FREE_RUNS_GB:
        problems.append(f"Only {runs.free_gb:.1f} GB are free for the runs folder ({runs.path}): each run keeps its "
                        "weights and a checkpoint there; free some space or choose a folder on a larger disk.")
    return problems


# --- weights ---------------------------------------------------------------------------------------------------------


def _weights(library_dir, problems: list[str]) -> list[Weights]:
    """Pretrained weights in the Hugging Face and PyTorch hub caches that a catalogue model loads, and the files
    imported into the model library (only local files are looked at)."""
    from engine.models import catalogue
    from engine.project.library import ModelLibrary

    found = []
    index = catalogue.OfflineIndex()
    for item in catalogue.all_models():
        if not index.pretrained(item):
            continue
        path = _pretrained_file(item.name)
        if path is not None:
            where = "Hugging Face cache" if "huggingface" in str(path).lower() or "models--" in str(path) \
                else "PyTorch hub cache"
            found.append(Weights(item.name, where, str(path), _size_mb(path)))
    try:
        for entry in ModelLibrary(library_dir).imported():
            found.append(Weights(entry.architecture or f"unknown model ({entry.label})", "model library", entry.path,
                                 _size_mb(Path(entry.path))))
    except OSError as exc:
        problems.append(f"The model library could not be read ({exc.strerror or exc}): check the permissions of "
                        "the app's data folder.")
    return found


def _pretrained_file(name: str) -> Path | None:
    from engine.models import catalogue

    source = catalogue._weight_source(name)
    if source is None:
        return None
    kind, where, filenames = source
    if kind == "hf":
        found = catalogue._hf_cached(where, filenames)
        return Path(found) if found else None
    checkpoint = catalogue._hub_checkpoint(where)
    return checkpoint if checkpoint.is_file() else None


def _size_mb(path: Path) -> float:
    try:
        return round(Path(path).resolve().stat().st_size / 2**20, 1)
    except OSError:
        return 0.0
