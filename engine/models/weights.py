"""Weight files: reading a state dict safely from ``.safetensors``, ``.pth``, ``.pt`` or ``.bin`` (pickles only with
``weights_only=True``: nothing in them can run code), and loading it into a model whose head may be new.
"""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from engine.errors import ModelError

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
# Reading weight files and building models on the meta device (engine.models.catalogue) from two threads at once hung torch
# once in the test suite (torch.load waiting inside load_tensor while a meta-device build ran): one at a time.
TORCH_BUILD_LOCK = threading.RLock()


# --- weight files ---------------------------------------------------------------------------------------------


def read_weight_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a local file. Pickles are loaded with ``weights_only=True``; a pickle that needs code to
    load is refused. A ``.safetensors`` file is only ever opened by the safetensors reader (which runs no code)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(f"The weight file {path} does not exist: check the path, or choose another file.")
    if not path.is_file():
        raise ModelError(f"{path} is a folder, not a weight file: choose the weight file inside it.")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ModelError(f"{path.name} is not a weight file: use a {', '.join(WEIGHT_SUFFIXES)} file.")
    damaged = (f"{path.name} cannot be read as a weight file: it is damaged or truncated. Copy or download it "
               "again, or choose another file.")
    try:
        if path.stat().st_size == 0:
            raise ModelError(f"{path.name} is empty (0 bytes), so it holds no weights: copy or download it again, or "
                             "choose another file.")
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            if _looks_like_pickle(path):  # e.g. a torch.save file renamed: never unpickled under this name
                raise ModelError(f"{path.name} is not a safetensors file (it holds a pickle or another format), so it "
                                 "was not opened: use the original weight file, or train or export the model again.")
            with TORCH_BUILD_LOCK:
                state = load_file(str(path), device="cpu")
        else:
            with TORCH_BUILD_LOCK:
                state = torch.load(str(path), map_location="cpu", weights_only=True)
    except ModelError:
        raise
    except pickle.UnpicklingError as exc:
        # It names code to run, or it is a whole plain pickle (pickle.dump: opcodes that torch's safe reader refuses).
        if "unsupported global" in str(exc).lower() or (_is_raw_pickle(path) and _is_whole_pickle(path)):
            raise ModelError(f"{path.name} was refused: it is a pickle that would need to run code to load, "
                             "which could be unsafe. Save the weights as a plain state dict or as .safetensors.") from None
        raise ModelError(f"{path.name} cannot be read as a weight file: it is damaged or truncated, or not a "
                         "weight file at all. Copy or download it again, or choose another file.") from None
    except MemoryError:
        raise ModelError(f"{path.name} is too large to load into memory.") from None
    except PermissionError:
        raise ModelError(f"{path.name} cannot be read (permission denied): check the file's permissions.") from None
    except Exception:  # safetensors and torch raise many types for damaged files
        raise ModelError(damaged) from None
    return _unwrap_state_dict(state, path.name)


def _is_raw_pickle(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"  # the PROTO opcode that starts every pickle of protocol 2 or later


def _is_whole_pickle(path: Path) -> bool:
    """Whether the file parses as one complete pickle, read as opcodes only (pickletools runs nothing); a pickle cut
    short or filled with garbage is damaged, not unsafe."""
    import pickletools

    try:
        with open(path, "rb") as f:
            for _ in pickletools.genops(f):
                pass
    except Exception:
        return False
    return True


def _looks_like_pickle(path: Path) -> bool:
    """A torch.save file (a zip archive) or a raw pickle, by its first bytes. A safetensors file starts with the
    length of its header (8 bytes), then the header's JSON: that is never taken for a pickle."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[8:9] == b"{":
        return False
    return head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")


def _unwrap_state_dict(state, filename: str) -> dict[str, torch.Tensor]:
    # Training scripts often save {"state_dict": ...} or {"model": ...}, and DataParallel adds "module.".
    for key in ("state_dict", "model_state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{filename} does not hold model weights (a dictionary of named tensors): choose the file "
                         "that holds the model's weights.")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


GENERAL_ADVICE = "They were probably made for another architecture: choose the matching model."
# Which catalogue model a file that does not fit was made for: engine.models.identify knows (it compares the file
# with every catalogue model) and registers itself here, since it builds models and so cannot be imported from here.
_mismatch_advice: Callable[..., str] | None = None


def set_mismatch_advice(advice: Callable[..., str] | None) -> None:
    """``advice(state, model_state, head, architecture) -> sentence`` ends the sentence of weights that do not fit."""
    global _mismatch_advice
    _mismatch_advice = advice


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], head: str, what: str,
                 architecture: str | None = None) -> str:
    """Load ``state`` into ``model``: every tensor but the head's must fit exactly; the head is loaded too when its
    shape matches (same classes), otherwise it stays new. Returns a note saying what was loaded. Weights that do
    not fit raise a sentence that names the catalogue model they were made for, when their tensors identify one
    (``architecture`` names ``model`` in it; without it, the model is recognised by its tensors too)."""
    own = model.state_dict()
    is_head = lambda k: k.startswith(head + ".")  # noqa: E731
    # BatchNorm's batch counter is bookkeeping, not a weight: files often lack it.
    optional = lambda k: k.endswith("num_batches_tracked")  # noqa: E731
    missing = [k for k in own if k not in state and not is_head(k) and not optional(k)]
    unexpected = [k for k in state if k not in own and not is_head(k) and not optional(k)]
    mismatched = [k for k in state if k in own and not is_head(k) and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("of the wrong shape", mismatched)):
            if keys:
                parts.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
        advice = _mismatch_advice(state, own, head, architecture) if _mismatch_advice else GENERAL_ADVICE
        raise ModelError(f"The weights in {what} do not fit this model: {'; '.join(parts)}. {advice}")
    head_keys = [k for k in own if is_head(k)]
    head_fits = head_keys and all(k in state and state[k].shape == own[k].shape for k in head_keys)
    to_load = {k: v for k, v in state.items() if k in own and (head_fits or not is_head(k))}
    model.load_state_dict(to_load, strict=False)
    return f"Weights from {what}" + (" (with its head)." if head_fits else "; a new head for your classes.")
