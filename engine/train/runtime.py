"""How a run uses the machine: the device and precision (``resolve_device``, ``resolve_runtime``), the batch size
when it is automatic, bf16 on the CPU, the CPU allocator and threads, and ``torch.compile``.

``resolve_device`` is the one reading of a device setting ("auto", "cpu", "cuda", "cuda:N", "mps") for training,
evaluation and prediction alike; ``available_devices`` lists the choices as plain (spec, label) pairs for the window.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from engine.config import RunConfig, TrainConfig
from engine.errors import UserError


def available_devices() -> list[tuple[str, str]]:
    """``[("auto", ...), ("cpu", ...), ("cuda:0", "GPU 0: NVIDIA ... (24 GB)"), ("mps", ...)]``."""
    devices = [("auto", "Automatic (the best available)"), ("cpu", "CPU")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append((f"cuda:{i}", f"GPU {i}: {props.name} ({props.total_memory / 2**30:.0f} GB)"))
    if _mps_available():
        devices.append(("mps", "Apple GPU (MPS)"))
    return devices


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(spec: str = "auto") -> torch.device:
    """The device a setting names: "auto" is the best available (a CUDA GPU, Apple's GPU, else the CPU). A device
    that is not there, or a spec that is not a device, is a UserError with a sentence that says what to choose."""
    given = spec
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("A CUDA GPU was chosen, but none is available on this computer: choose the CPU.")
    if spec == "mps" and not _mps_available():
        raise UserError("Apple's GPU (MPS) was chosen, but it is not available on this computer: choose the CPU.")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UserError(f"'{given}' is not a device: choose auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and _gpu_index(device) >= torch.cuda.device_count():
        raise UserError(f"There is no GPU number {_gpu_index(device)} on this computer.")
    return device


def _gpu_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


@dataclass(frozen=True)
class Runtime:
    """How the run uses the machine, resolved from the config's ``auto`` settings."""

    device: torch.device
    description: str
    amp_dtype: torch.dtype | None  # autocast dtype, None for full fp32
    channels_last: bool


def resolve_runtime(config: RunConfig) -> Runtime:
    t = config.train
    device = resolve_device(t.device)
    if device.type == "cuda":
        index = _gpu_index(device)
        description = f"GPU {index}: {torch.cuda.get_device_name(index)}"
    else:
        description = {"cpu": f"CPU ({torch.get_num_threads()} threads)", "mps": "Apple GPU (MPS)"}[device.type]
    precision = t.precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device.type == "cuda" else "fp32"
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    # channels_last: on CUDA, and on the CPU too, where oneDNN's convolutions are about twice as fast in it (measured
    # on 2-core machines: MobileNetV2 inference 24 -> 51 pictures/s, a training step 8 -> 15; same results up to
    # rounding). On the CPU, automatic precision is fp32 here; training steps may still use bf16 autocast, chosen per
    # phase once the batch size is known (step_runtime, cpu_bf16_pays).
    channels_last = t.channels_last == "on" or (t.channels_last == "auto" and device.type in ("cuda", "cpu"))
    return Runtime(device, description, amp, channels_last)


def step_runtime(runtime: Runtime, train: TrainConfig, head_only: bool) -> Runtime:
    """The runtime of a phase's training steps: the run's, except that automatic precision on a CPU with native
    bf16 arithmetic trains in bf16 autocast when the batch is large enough for it to pay (cpu_bf16_pays). Not for a
    head trained alone on stored outputs (``head_only``: a few small matrix products, nothing to gain), and never for
    validation, the frozen layers' stored outputs, evaluation or export, which stay in fp32 so that their figures are
    those a user gets later from the saved model."""
    if train.precision != "auto" or runtime.device.type != "cpu" or runtime.amp_dtype is not None or head_only:
        return runtime
    if not cpu_bf16_pays(train.batch_size):
        return runtime
    return dataclasses.replace(runtime, amp_dtype=torch.bfloat16)

AUTO_BATCH = {"cuda": 64, "mps": 32, "cpu": 16}  # pictures per step when the batch size is automatic (0)
CPU_BF16_MIN_BATCH = 4  # the smallest batch measured to gain from bf16 autocast on the CPU (see cpu_bf16_pays)


def auto_batch_size(device: torch.device | str, n_train: int) -> int:
    """The batch size used when the user leaves it automatic: 64 pictures on a CUDA GPU (the trainer takes them
    in smaller pieces if the GPU runs out of memory, see engine.train.loop.Backoff), 32 on Apple GPUs, 16 on the CPU,
    and never more than a quarter of the training pictures, so that a small dataset still gets several learning
    steps per epoch.

    On the CPU the speed hardly depends on the batch past a few pictures (MobileNetV2 training steps on 2 cores,
    pictures/s at batches of 4, 8, 16, 32: fp32 34, 39, 37, 40; bf16 52-54 from 8 up), so 16 is chosen for the
    learning: BatchNorm statistics steadier than with 4 pictures, twice the steps per epoch of 32."""
    kind = torch.device(device).type
    return max(1, min(AUTO_BATCH.get(kind, 32), max(4, n_train // 4)))


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX), as oneDNN reports it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private helper of torch's: absent is taken as no
        return False


def cpu_bf16_pays(batch_size: int) -> bool:
    """Whether automatic precision trains in bf16 autocast on this CPU: only with native bf16 arithmetic (without it
    a training step ran twelve times slower than fp32) and batches of CPU_BF16_MIN_BATCH or more. Measured on 2 cores
    with AVX-512 BF16, training steps at batch 4 and 16, bf16 against fp32: MobileNetV2 48 and 52 against 38 and 37
    pictures/s (with its strided depthwise convolutions kept in fp32, see cpu_bf16_islands), ResNet-18 27 and 34
    against 17 and 18, ConvNeXt-atto 38 against 32 (batch 16); accuracy the same (docs/benchmark.md)."""
    return batch_size >= CPU_BF16_MIN_BATCH and cpu_has_native_bf16()


@contextlib.contextmanager
def cpu_allocator_for_training():
    """glibc's malloc tuned for training on the CPU while a run lasts, then restored and trimmed.

    glibc hands out every block above a few megabytes (activations, gradients) as a fresh memory mapping and unmaps it
    when freed, so every training step pays page faults for all its large tensors. Keeping large blocks on the heap
    and not trimming it during the run lets the steps reuse the same memory: MobileNetV2 ran 45 instead of 22
    pictures/s on the project's 2-core machines. This is the in-process equivalent of the jemalloc/tcmalloc advice
    in PyTorch's CPU performance guide; at the end the defaults come back and the memory is returned (malloc_trim).
    Linux with glibc only; elsewhere nothing changes."""
    libc = None
    try:
        import ctypes
        import platform

        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, -1)
            libc.mallopt(_M_TOP_PAD, 64 * 2**20)
    except (OSError, AttributeError):
        libc = None
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(_M_MMAP_MAX, 65536)  # glibc's defaults
            libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
            libc.mallopt(_M_TOP_PAD, 128 * 1024)
            libc.malloc_trim(0)


_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4  # mallopt parameters, from glibc's malloc.h


@contextlib.contextmanager
def cpu_bf16_islands(model: nn.Module, runtime: Runtime):
    """During bf16 autocast on the CPU, strided depthwise convolutions (MobileNet's and EfficientNet's downsampling
    blocks) compute in fp32: oneDNN's bf16 kernels for them train 2 to 5 times slower than its fp32 ones (measured
    backward passes on 2 cores, batch 16: 96 channels 3x3 at 112 pixels 78 against 36 ms, 144 channels 5x5 at 56
    pixels 85 against 16 ms), while every other convolution is as fast or faster in bf16. MobileNetV2 then trains
    at 52 pictures/s instead of 36 (fp32 throughout: 37). The modules' own ``forward`` is shadowed for the epoch and
    restored after it; the weights and what is saved do not change."""
    if runtime.amp_dtype != torch.bfloat16 or runtime.device.type != "cpu":
        yield
        return
    patched = [m for m in model.modules()
               if isinstance(m, nn.Conv2d) and 1 < m.groups == m.in_channels and max(m.stride) > 1
               and "forward" not in vars(m)]
    for module in patched:
        module.forward = types.MethodType(_fp32_forward, module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward


def _fp32_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", enabled=False):
        return type(self).forward(self, x.float())


@contextlib.contextmanager
def threads(n: int):
    """torch's CPU threads set to ``n`` for a while, then as they were."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def one_thread_on_cpu(device: torch.device):
    """``threads(1)`` on a CPU, nothing elsewhere: for small sequential work (L-BFGS on a head, a probe batch) that
    two threads only slow down by waiting for each other."""
    return threads(1) if device.type == "cpu" else contextlib.nullcontext()


class Compiled:
    """``torch.compile`` of a module, or the module itself once compiling fails (no compiler, an unsupported layer):
    the run goes on, slower, and says why."""

    def __init__(self, module: nn.Module, log: Callable[[str, str], None]):
        self.module = module
        self.compiled = torch.compile(module)
        self.log = log
        self.failed = False

    def __call__(self, x):
        if not self.failed:
            try:
                return self.compiled(x)
            except (torch.OutOfMemoryError, UserError, KeyboardInterrupt):
                raise
            except Exception as exc:  # the compiler's many error types: fall back to the plain module
                self.failed = True
                self.log(f"torch.compile could not compile the model ({exc.__class__.__name__}); training goes on "
                         "without it.", "warning")
        return self.module(x)

    def eval(self):
        self.module.eval()
        return self


class Compiler:
    """The run's modules as it calls them: each compiled once (``Compiled``) when the settings ask for
    ``torch.compile``, else the module itself."""

    def __init__(self, enabled: bool, log: Callable[[str, str], None]):
        self.enabled, self.log = enabled, log
        self._compiled: dict[nn.Module, Compiled] = {}

    def __call__(self, module: nn.Module):
        if not self.enabled:
            return module
        if module not in self._compiled:
            self._compiled[module] = Compiled(module, self.log)
        return self._compiled[module]
