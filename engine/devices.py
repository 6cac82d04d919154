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
