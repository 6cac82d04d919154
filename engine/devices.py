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


AUTO_BATCH = {"cuda": 64, "mps": 32, "cpu": 32}  # pictures per step when the batch size is automatic (0)


def auto_batch_size(device: torch.device | str, n_train: int) -> int:
    """The batch size used when the user leaves it automatic: 64 pictures on a CUDA GPU (the trainer takes them
    in smaller pieces if the GPU runs out of memory, see engine.train.Backoff), 32 on Apple GPUs and on the CPU
    (where larger batches stop paying: the cores are busy either way), and never more than a quarter of the
    training pictures, so that a small dataset still gets several learning steps per epoch."""
    kind = torch.device(device).type
    return max(1, min(AUTO_BATCH.get(kind, 32), max(4, n_train // 4)))
