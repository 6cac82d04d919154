"""Which catalogue model a state dict was made for, from its tensors' names and shapes alone.

A weight file for another architecture fails with "100 missing (conv1.weight, ...); 262 unexpected": this module
lets that sentence also say which model the file *does* fit ("This file holds weights for resnet18 (timm:resnet18 /
torchvision:resnet18), not for mobilenet_v2"). The classifier head is left out of the comparison, since a file
trained for other classes has a head of another shape.

Each catalogue model has a *signature*: the number of its tensors outside the head, and a digest of their names and
shapes. ``resources/model_signatures.json`` holds them for the pinned timm and torchvision (made like the
parameter-count table: ``python -m engine.models.identify``); with other versions, the torchvision models and the
recommended timm models are built on the meta device on first use (no memory, no initialisation) and remembered for
the rest of the process. Looking a file up is cheap: its tensors are counted first, and only a count some model has
is hashed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
import warnings
from pathlib import Path
from typing import Iterable, Mapping

from engine.models import build as models
from engine.models import catalogue
from engine.models import weights
from engine.paths import resource

SIGNATURES_FILE = "model_signatures.json"
SHIPPED_SIGNATURES = resource(SIGNATURES_FILE)
MAX_NAMES = 4  # catalogue names listed in a sentence; more are counted


def _is_bookkeeping(key: str) -> bool:
    """BatchNorm's batch counter: not a weight, and files often lack it (as engine.models.weights ignores it)."""
    return key.endswith("num_batches_tracked")


def _body(state: Mapping, head: str) -> list[tuple[str, tuple[int, ...]]]:
    prefix = head + "."
    return sorted((k, tuple(int(d) for d in v.shape)) for k, v in state.items()
                  if not k.startswith(prefix) and not _is_bookkeeping(k))


def _digest(items: list[tuple[str, tuple[int, ...]]]) -> str:
    text = "\n".join(f"{k} {'x'.join(map(str, shape))}" for k, shape in items)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def signature(state: Mapping, head: str) -> tuple[int, str]:
    """(number of tensors, digest of their names and shapes) of ``state`` without the tensors under ``head``."""
    items = _body(state, head)
    return len(items), _digest(items)


def model_signature(name: str) -> tuple[str, int, str] | None:
    """(head, tensors, digest) of catalogue model ``name``, built on the meta device; None when it cannot be."""
    return _model_facts(name)[0]


def _model_facts(name: str) -> tuple[tuple[str, int, str] | None, frozenset[str]]:
    """The signature of ``name`` and its outermost module names outside the head (built on the meta device)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's notes about initialisation, which the meta device skips
            model = catalogue.meta_model(name)
        source, _ = models.split_name(name)
        head = models._find_head(model, source)
        state = model.state_dict()
    except Exception:  # an architecture that cannot be built without real tensors is simply not identified
        return None, frozenset()
    return (head, *signature(state, head)), _top_names(state, head)


# --- the table of signatures ------------------------------------------------------------------------------------


def _encode(entry: tuple[str, int, str] | None) -> str | None:
    return None if entry is None else f"{entry[0]}|{entry[1]}|{entry[2]}"


def _decode(text) -> tuple[str, int, str] | None:
    try:
        head, count, digest = str(text).split("|")
        return head, int(count), digest
    except (TypeError, ValueError):
        return None


def read_table(path: str | Path = SHIPPED_SIGNATURES) -> dict[str, tuple[str, int, str]] | None:
    """The signatures in a table written by ``write_signature_table`` for the timm and torchvision installed now;
    None when there is no such table (another version may change an architecture)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("versions") != catalogue._versions_key() or not isinstance(data.get("models"), dict):
            return None
    except (OSError, ValueError, AttributeError):
        return None
    table = {}
    for name, text in data["models"].items():
        entry = _decode(text)
        if entry is not None:
            table[str(name)] = entry
    return table


def write_signature_table(path: str | Path = SHIPPED_SIGNATURES, workers: int = 2) -> int:
    """Build every catalogue model on the meta device and write the table shipped with the app (run after
    changing the pinned timm or torchvision: ``python -m engine.models.identify``). Returns how many models it
    holds."""
    import concurrent.futures
    import multiprocessing

    from engine.files import atomic_write_json

    names = [item.name for item in catalogue.all_models()]
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        entries = dict(zip(names, pool.map(model_signature, names, chunksize=8)))
    atomic_write_json(Path(path), {"versions": catalogue._versions_key(),
                                   "models": {n: _encode(e) for n, e in sorted(entries.items())}})
    return len(entries)


# head -> number of tensors -> digest -> catalogue names
Index = dict[str, dict[int, dict[str, list[str]]]]


def _make_index(entries: Iterable[tuple[str, tuple[str, int, str] | None]]) -> Index:
    index: Index = {}
    for name, entry in entries:
        if entry is None:
            continue
        head, count, digest = entry
        index.setdefault(head, {}).setdefault(count, {}).setdefault(digest, []).append(name)
    return index


@functools.lru_cache(maxsize=1)
def _shipped_index() -> Index | None:
    table = read_table()
    return None if table is None else _make_index(table.items())


_FALLBACK_LOCK = threading.Lock()
# This process's signatures and outermost module names of the models built when no table fits.
_FALLBACK: dict[str, tuple[str, int, str] | None] = {}
_FALLBACK_TOPS: dict[str, frozenset[str]] = {}


def fallback_candidates() -> list[str]:
    """The models identified without the shipped table: the recommended timm models, and torchvision's."""
    return [n for n, _ in catalogue.RECOMMENDED] + [f"torchvision:{a}" for a in models._torchvision_names()]


def family(name: str) -> str:
    """A model's family by its name: 'resnet' for resnet18 and resnet152, 'mobilenet_v' for mobilenet_v2 and _v3."""
    return re.sub(r"\d.*$", "", arch_of(name)).rstrip("_") or arch_of(name)


def _top_names(state: Mapping, head: str) -> frozenset[str]:
    """The outermost module names of ``state``'s tensors outside ``head`` ('conv1', 'layer1', ... for a ResNet)."""
    prefix = head + "."
    return frozenset(k.partition(".")[0] for k in state if not k.startswith(prefix) and not _is_bookkeeping(k))


def _fallback_index(state: Mapping) -> Index:
    """Signatures of the fallback candidates that may fit ``state``: one model of each family is built first, and
    the rest of a family only when its outermost module names are those of ``state``."""
    families: dict[str, list[str]] = {}
    for name in fallback_candidates():
        families.setdefault(family(name), []).append(name)
    with _FALLBACK_LOCK:
        for members in families.values():
            first = members[0]
            if first not in _FALLBACK:
                _FALLBACK[first], _FALLBACK_TOPS[first] = _model_facts(first)
            entry = _FALLBACK[first]
            if entry is None or _top_names(state, entry[0]) != _FALLBACK_TOPS[first]:
                continue
            for name in members[1:]:
                if name not in _FALLBACK:
                    _FALLBACK[name], _FALLBACK_TOPS[name] = _model_facts(name)
        return _make_index(_FALLBACK.items())


def _index(state: Mapping) -> Index:
    shipped = _shipped_index()
    return shipped if shipped is not None else _fallback_index(state)


# --- identifying ------------------------------------------------------------------------------------------------


def identify(state: Mapping, exclude: Iterable[str] = ()) -> list[str]:
    """The catalogue models (``timm:resnet18``, ``torchvision:resnet18``, ...) whose tensors outside the head have
    exactly the names and shapes of ``state``'s, best known first (the recommended models, then the shorter names);
    [] when none does. ``exclude`` names models to leave out (with or without a timm tag)."""
    if not state:
        return []
    index = _index(state)
    found: set[str] = set()
    for head, by_count in index.items():
        prefix = head + "."
        count = sum(1 for k in state if not k.startswith(prefix) and not _is_bookkeeping(k))
        by_digest = by_count.get(count)
        if by_digest:  # hash only when some model has this many tensors
            found.update(by_digest.get(_digest(_body(state, head)), ()))
    left_out = {catalogue.base_name(n) for n in exclude}
    return sorted(found - left_out, key=_preference)


def _preference(name: str) -> tuple:
    recommended = [n for n, _ in catalogue.RECOMMENDED]
    arch = name.partition(":")[2]
    return (recommended.index(name) if name in recommended else len(recommended), len(arch), name)


def arch_of(name: str) -> str:
    """``mobilenet_v2`` for ``torchvision:mobilenet_v2``, ``resnet18`` for ``timm:resnet18.a1_in1k``."""
    return name.partition(":")[2].partition(".")[0] or name


def describe(names: list[str]) -> str:
    """'resnet18 (timm:resnet18 / torchvision:resnet18)': the first model's short name, then the catalogue's."""
    shown = " / ".join(names[:MAX_NAMES])
    if len(names) > MAX_NAMES:
        shown += f" and {len(names) - MAX_NAMES} more"
    return f"{arch_of(names[0])} ({shown})"


def mismatch_advice(state: Mapping, model_state: Mapping, head: str, architecture: str | None = None) -> str:
    """The sentence that ends "the weights do not fit this model": which catalogue model they fit when their
    tensors identify one, else that they were probably made for another architecture. ``model_state`` and
    ``head`` describe the model they were given to; ``architecture`` names it when the caller knows."""
    fallback = weights.GENERAL_ADVICE
    try:
        own = identify(model_state)  # the model itself, by the same signatures (its head left out)
        target = architecture or (own[0] if own else None)
        fits = identify(state, exclude=own + ([architecture] if architecture else []))
    except Exception:  # naming the right model is a help, never a reason to fail differently
        return fallback
    if not fits:
        return fallback
    these = f"not for {arch_of(target)}" if target else "not for this model"
    return f"This file holds weights for {describe(fits)}, {these}: choose the matching model."


weights.set_mismatch_advice(mismatch_advice)  # load_weights' sentence names the model a file fits (see there)


if __name__ == "__main__":
    print(f"{write_signature_table()} models described in {SHIPPED_SIGNATURES}")
