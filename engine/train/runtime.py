"""The devices a run can use, as plain (spec, label) pairs for the window's device list."""

from __future__ import annotations

import torch


def available_devices() -> list[tuple[str, str]]:
    """``[("auto", ...), ("cpu", ...), ("cuda:0", "GPU 0: NVIDIA ... (24 GB)"), ("mps", ...)]``."""
    devices = [("auto", "Automatic (the best available)"), ("cpu", "CPU")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append((f"cuda:{i}", f"GPU {i}: {props.name} ({props.total_memory / 2**30:.0f} GB)"))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append(("mps", "Apple GPU (MPS)"))
    return devices


AUTO_BATCH = {"cuda": 64, "mps": 32, "cpu": 16}  # pictures per step when the batch size is automatic (0)
CPU_BF16_MIN_BATCH = 4  # the smallest batch measured to gain from bf16 autocast on the CPU (see cpu_bf16_pays)


def auto_batch_size(device: torch.device | str, n_train: int) -> int:
    """The batch size used when the user leaves it automatic: 64 pictures on a CUDA GPU (the trainer takes them
    in smaller pieces if the GPU runs out of memory, see engine.train.trainer.Backoff), 32 on Apple GPUs, 16 on the CPU, and
    never more than a quarter of the training pictures, so that a small dataset still gets several learning steps
    per epoch.

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
    pictures/s (with its strided depthwise convolutions kept in fp32, see engine.train.trainer._cpu_bf16_islands), ResNet-18
    27 and 34 against 17 and 18, ConvNeXt-atto 38 against 32 (batch 16); accuracy the same (docs/benchmark.md)."""
    return batch_size >= CPU_BF16_MIN_BATCH and cpu_has_native_bf16()
