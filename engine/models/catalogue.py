"""What the model picker shows about each model, without downloading anything.

For every timm and torchvision classification model: its parameter count (from the table shipped in
``resources/param_counts.json`` for the pinned timm and torchvision; for any other version the model is instantiated on
PyTorch's ``meta`` device in a helper process and the count is cached on disk), its default
input size, its pretrained weights (timm's tags, torchvision's weight sets), the licence its pretrained configuration
states, and whether pretrained weights are on this computer right now (the Hugging Face cache or the torch hub
cache). ``download_pretrained`` fetches them into those caches with progress, so that ``engine.models.build.build_model``
then finds them offline. Files the user imported and models trained earlier live in ``engine.project.library``.
"""

from __future__ import annotations

import atexit
import fnmatch
import functools
import io
import json
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from engine.errors import ModelError
from engine.models import build as models
from engine.models.weights import TORCH_BUILD_LOCK
from engine.paths import resource, user_cache_dir

PARAM_CACHE_FILE = "param-counts.json"
SHIPPED_COUNTS = resource("param_counts.json")
DOWNLOAD_CHUNK = 1 << 20  # bytes read between two progress reports and stop checks
HF_HOST = "huggingface.co"

# A short list for beginners, small and fast first, each with the one line that says why.
RECOMMENDED: tuple[tuple[str, str], ...] = (
    ("timm:mobilenetv3_small_100", "The smallest and fastest: trains in minutes on an ordinary laptop."),
    ("torchvision:mobilenet_v2", "Small and fast, a classic for laptops and phones."),
    ("timm:efficientnet_b0", "Small, and accurate for its size."),
    ("timm:mobilenetv3_large_100", "Fast and a little more accurate than the small MobileNet."),
    ("timm:resnet18", "Simple and well understood; quick to train, a good first try."),
    ("timm:vit_small_patch16_224", "A vision transformer: strong with a GPU and a few hundred pictures per class."),
    ("timm:resnet50", "The standard mid-size network; more accurate, best with a GPU."),
    ("timm:convnext_tiny", "A modern network with high accuracy; best with a GPU."),
)


@dataclass(frozen=True)
class ModelInfo:
    """One model of the catalogue. ``tags`` are its pretrained weight sets (timm's ``a1_in1k``..., torchvision's
    ``IMAGENET1K_V1``...); ``default_tag`` is the one ``pretrained`` means; empty when there are none."""

    name: str  # "timm:resnet18"
    source: str  # "timm" or "torchvision"
    arch: str
    input_size: tuple[int, int, int] | None
    tags: tuple[str, ...]
    default_tag: str | None
    license: str | None  # as the default pretrained configuration states it, else None
    recommended: str | None = None  # the reason it is on the beginners' list

    @property
    def has_pretrained(self) -> bool:
        return bool(self.tags)


@dataclass(frozen=True)
class Availability:
    """Whether a model's pretrained weights are on this computer now: ``where`` says where they are, ``reason``
    why not (one sentence each)."""

    offline: bool
    where: str = ""
    reason: str = ""


# --- the catalogue ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def all_models() -> tuple[ModelInfo, ...]:
    """Every classification model, timm's then torchvision's (computed once; fast after timm's import)."""
    import timm
    from timm.models import get_pretrained_cfg

    tags: dict[str, list[str]] = {}
    for full in timm.list_pretrained():
        arch, _, tag = full.partition(".")
        tags.setdefault(arch, []).append(tag)
    reasons = dict(RECOMMENDED)
    infos = []
    for arch in timm.list_models():
        cfg = get_pretrained_cfg(arch)
        own = tuple(tags.get(arch, ()))
        default = cfg.tag if cfg is not None and cfg.tag in own else (own[0] if own else None)
        infos.append(ModelInfo(
            f"timm:{arch}", "timm", arch,
            tuple(int(v) for v in cfg.input_size) if cfg is not None and cfg.input_size else None,
            own, default, (cfg.license if cfg is not None and own else None), reasons.get(f"timm:{arch}")))
    for arch in models._torchvision_names():
        enum = _torchvision_weights(arch)
        members = tuple(m.name for m in enum) if enum is not None else ()
        size = None
        if enum is not None:
            crop = int(enum.DEFAULT.transforms().crop_size[0])
            size = (3, crop, crop)
        infos.append(ModelInfo(f"torchvision:{arch}", "torchvision", arch, size, members,
                               enum.DEFAULT.name if enum is not None else None, None,
                               reasons.get(f"torchvision:{arch}")))
    return tuple(infos)


@functools.lru_cache(maxsize=1)
def _by_name() -> dict[str, ModelInfo]:
    return {item.name: item for item in all_models()}


def info(name: str) -> ModelInfo:
    """The catalogue entry of ``name`` (``timm:resnet18``, or with a tag: ``timm:resnet18.a1_in1k``)."""
    found = _by_name().get(base_name(name))
    if found is not None:
        return found
    models.check_name(name)  # raises the usual sentence for an unknown name
    raise ModelError(f"{name} is not a classification model Transfer Studio can train.")


def recommended() -> list[ModelInfo]:
    """The beginners' list, small and fast first."""
    return [_by_name()[name] for name, _ in RECOMMENDED if name in _by_name()]


def search(query: str = "", items: Iterable[ModelInfo] | None = None, *, source: str | None = None,
           pretrained_only: bool = False, recommended_only: bool = False,
           offline: Callable[[ModelInfo], bool] | None = None) -> list[ModelInfo]:
    """Models whose name (or one of their pretrained tags) matches ``query`` — a part of a name or a pattern such as
    ``*vit*small*``, case-insensitive — and every filter given: ``offline`` is a predicate such as
    ``OfflineIndex.has_any``."""
    query = query.strip().lower()
    pattern = query if any(c in query for c in "*?[") else f"*{query}*"
    result = []
    for item in all_models() if items is None else items:
        if source and item.source != source:
            continue
        if pretrained_only and not item.has_pretrained:
            continue
        if recommended_only and not item.recommended:
            continue
        if query and not (fnmatch.fnmatch(item.name, pattern) or fnmatch.fnmatch(item.arch, pattern)
                          or any(fnmatch.fnmatch(f"{item.arch}.{t}".lower(), pattern) for t in item.tags)):
            continue
        if offline is not None and not offline(item):
            continue
        result.append(item)
    return result


def names(query: str = "") -> list[str]:
    """The names (``timm:<name>``, then ``torchvision:<name>``) of the models ``search(query)`` finds: what
    ``python main.py models QUERY`` lists."""
    return [item.name for item in search(query)]


def license_of(name: str, tag: str | None = None) -> str | None:
    """The licence a weight set's pretrained configuration states (timm), or None."""
    item = info(name)
    tag = tag or tag_of(name) or item.default_tag
    if item.source != "timm" or not tag:
        return None
    cfg = _timm_cfg(item.arch, tag)
    return cfg.get("license") if cfg else None


def base_name(name: str) -> str:
    source, arch = models.split_name(name)
    return f"{source}:{arch.partition('.')[0]}" if source == "timm" else name


def tag_of(name: str) -> str | None:
    source, arch = models.split_name(name)
    if source != "timm":
        return None
    return arch.partition(".")[2] or None


def _torchvision_weights(arch: str):
    import torchvision.models as tvm

    try:
        return tvm.get_model_weights(arch)
    except (ValueError, KeyError):
        return None


def _timm_cfg(arch: str, tag: str | None) -> dict | None:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(f"{arch}.{tag}" if tag else arch)
    return cfg.to_dict() if cfg is not None else None


# --- parameter counts -------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    return user_cache_dir()


def _versions_key() -> str:
    # The installed packages' versions from their metadata: importing timm (and with it torchvision) only to read
    # them held the window's start for 2-3 s.
    from importlib.metadata import version

    return f"timm {version('timm')}, torchvision {version('torchvision').split('+')[0]}"  # the same with or without CUDA


class ParamCounts:
    """Parameter counts (with the model's original classifier), cached in a JSON file keyed by the timm and
    torchvision versions, since a new version may change an architecture. Safe to use from several threads."""

    def __init__(self, cache_dir: str | Path | None = None, shipped: str | Path | None = SHIPPED_COUNTS) -> None:
        self.path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / PARAM_CACHE_FILE
        self._lock = threading.Lock()
        self._counts: dict[str, int | None] = {}
        self._dirty = 0
        for source in (shipped, self.path):
            if source is not None:
                self._counts.update(_read_counts(Path(source)))

    def get(self, name: str) -> int | None:
        """The count when it is known without work (cached, or published by torchvision), else None."""
        with self._lock:
            if name in self._counts:
                return self._counts[name]
        source, arch = models.split_name(name)
        if source == "torchvision":
            enum = _torchvision_weights(arch)
            if enum is not None and "num_params" in enum.DEFAULT.meta:
                return int(enum.DEFAULT.meta["num_params"])
        return None

    def known(self, name: str) -> bool:
        with self._lock:
            return name in self._counts

    def count(self, name: str) -> int | None:
        """The count, instantiating the model on the meta device in a helper process when it is not known (about
        0.1-2 s, no memory); None for a model that cannot be built that way."""
        known = self.get(name)
        if known is not None:
            return known
        with self._lock:
            if name in self._counts:
                return self._counts[name]
        value = _count_on_meta(name)
        with self._lock:
            self._counts[name] = value
            self._dirty += 1
        return value

    def save(self) -> None:
        """Write the cache (atomically); a cache that cannot be written is only a lost speed-up."""
        from engine.files import atomic_write_json

        with self._lock:
            if not self._dirty:
                return
            data = {"versions": _versions_key(), "counts": dict(sorted(self._counts.items()))}
            self._dirty = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, data)
        except OSError:
            pass


def _read_counts(path: Path) -> dict[str, int | None]:
    """The counts in a table written by ``ParamCounts.save`` or ``write_count_table``, when they were made with the
    timm and torchvision installed now (a new version may change an architecture); {} otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("versions") == _versions_key() and isinstance(data.get("counts"), dict):
            return {str(k): (int(v) if isinstance(v, int) else None) for k, v in data["counts"].items()}
    except (OSError, ValueError, AttributeError):
        pass  # no table yet, or an unreadable one: counts are rebuilt as models are counted
    return {}


_POOL_LOCK = threading.Lock()
_POOL = None


def _count_on_meta(name: str) -> int | None:
    """Count in a helper process. Building models on the meta device in a thread of the app's own process once
    hung the test suite together with tensor work on the main thread (both threads stuck, inside torch), so these
    builds run in a process of their own, started on first use and kept for the next ones."""
    global _POOL
    import concurrent.futures
    import multiprocessing

    with _POOL_LOCK:
        if _POOL is None:
            _POOL = concurrent.futures.ProcessPoolExecutor(max_workers=1,
                                                          mp_context=multiprocessing.get_context("spawn"))
            atexit.register(shutdown_counting)
        pool = _POOL
    try:
        return pool.submit(_count_here, name).result()
    except concurrent.futures.process.BrokenProcessPool:  # the helper died (out of memory, killed): a new one next time
        with _POOL_LOCK:
            if _POOL is pool:
                _POOL = None
        return None


def shutdown_counting() -> None:
    """Stop the helper process (registered to run when the app exits)."""
    global _POOL
    with _POOL_LOCK:
        pool, _POOL = _POOL, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


def _count_here(name: str) -> int | None:
    try:
        return int(sum(p.numel() for p in meta_model(name).parameters()))
    except Exception:  # an architecture that cannot be built without real tensors: shown as unknown
        return None


def write_count_table(path: str | Path = SHIPPED_COUNTS, workers: int = 2) -> int:
    """Count every model of the catalogue and write the table shipped with the app (run after changing the pinned
    timm or torchvision: ``python -m engine.models.catalogue``). Returns how many models were counted."""
    import concurrent.futures
    import multiprocessing

    names = [item.name for item in all_models()]
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        counts = dict(zip(names, pool.map(_count_here, names, chunksize=8)))
    from engine.files import atomic_write_json

    atomic_write_json(Path(path), {"versions": _versions_key(), "counts": dict(sorted(counts.items()))})
    return len(counts)


def meta_model(name: str):
    """``name`` on the meta device with its original classifier: its structure and shapes, no memory used."""
    import torch

    source, arch = models.split_name(name)
    models.check_name(name)
    with TORCH_BUILD_LOCK, torch.device("meta"):  # see TORCH_BUILD_LOCK
        if source == "timm":
            import timm

            return timm.create_model(arch, pretrained=False)
        import torchvision.models as tvm

        return tvm.get_model(arch, weights=None)


# --- pretrained weights on this computer ------------------------------------------------------------------------


def _weight_source(name: str, tag: str | None = None) -> tuple[str, str, tuple[str, ...]] | None:
    """Where ``pretrained`` loads from, as timm or torchvision resolves it: ("hf", repo_id[@revision], filenames in
    the order tried) or ("url", url, ()); None for a model without pretrained weights."""
    item = info(name)
    tag = tag or tag_of(name) or item.default_tag
    if not tag:
        return None
    if item.source == "torchvision":
        enum = _torchvision_weights(item.arch)
        return ("url", enum[tag].url, ()) if enum is not None else None
    cfg = _timm_cfg(item.arch, tag) or {}
    if cfg.get("hf_hub_id"):
        wanted = cfg.get("hf_hub_filename") or "pytorch_model.bin"
        # timm prefers a .safetensors twin of a pickled file (timm.models._hub._get_safe_alternatives)
        safe = {"pytorch_model.bin": "model.safetensors",
                "open_clip_pytorch_model.bin": "open_clip_model.safetensors"}.get(wanted)
        return "hf", cfg["hf_hub_id"], tuple(f for f in (safe, wanted) if f)
    if cfg.get("url"):
        return "url", cfg["url"], ()
    return None


def _hf_cached(repo: str, filenames: tuple[str, ...]) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    repo_id, _, revision = repo.partition("@")
    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, revision=revision or None)
        if isinstance(found, str):
            return found
    return None


def _hub_checkpoint(url: str) -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(url).path).name


def pretrained_availability(name: str, tag: str | None = None) -> Availability:
    """Whether ``pretrained`` (or the weight set ``tag``) for ``name`` can be loaded without a network now."""
    item = info(name)
    source = _weight_source(name, tag)
    if source is None:
        return Availability(False, reason=f"{item.arch} has no published pretrained weights: train it from "
                                          "random weights, or use a weight file.")
    kind, where, filenames = source
    if kind == "hf":
        found = _hf_cached(where, filenames)
        if found:
            return Availability(True, where=f"On this computer, in the Hugging Face cache ({Path(found).parent}).")
    else:
        checkpoint = _hub_checkpoint(where)
        if checkpoint.is_file():
            return Availability(True, where=f"On this computer, in the PyTorch hub cache ({checkpoint.parent}).")
    host = HF_HOST if kind == "hf" else urllib.parse.urlparse(where).hostname
    return Availability(False, reason=f"Not on this computer yet: they are downloaded from {host} the first time, "
                                      "which needs an internet connection.")


def weights_problem(name: str, weights: str) -> str | None:
    """None when ``name`` can start from ``weights`` ("pretrained", "none" or a weight file) on this computer now,
    without a network; else one sentence that says what is missing and what to do. Quick (local files only): it
    never opens a connection, so it is safe with the offline switch on. Only "pretrained" needs the catalogue
    (``all_models``: timm's import on first use)."""
    if weights == "none":
        return None
    if weights != "pretrained":
        path = Path(weights)
        if not path.is_file():
            return (f"The weight file {path.name} is no longer in {path.parent}: import it again, or choose "
                    "other weights.")
        return None
    try:
        item = info(name)
    except ModelError as exc:
        return str(exc)
    if not item.has_pretrained:
        return (f"No pretrained weights are published for {item.arch}: import a weight file for it, choose "
                "another model, or start from random weights.")
    if pretrained_availability(name).offline:
        return None
    if models.offline_mode():
        return (f"The pretrained weights of {item.arch} are not on this computer, and offline mode is on, so "
                "they cannot be downloaded: import a weight file, choose a model whose weights are here, or "
                "start from random weights.")
    return (f"The pretrained weights of {item.arch} are not on this computer: download them (needs internet), "
            "import a weight file, or choose a model whose weights are here.")


class OfflineIndex:
    """Which models have pretrained weights on this computer, from one look at the caches (for the "available
    offline" filter over the whole catalogue); ``extra`` names models that have other offline weights (imported
    files, earlier runs)."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        import huggingface_hub.constants as hf

        self.extra = {base_name(n) for n in extra}
        hf_cache = Path(hf.HF_HUB_CACHE)
        try:
            self._hf_repos = {d.name[len("models--"):].replace("--", "/") for d in hf_cache.iterdir()
                              if d.name.startswith("models--")}
        except OSError:
            self._hf_repos = set()
        try:
            self._checkpoints = {p.name for p in _hub_checkpoint("x").parent.iterdir()}
        except OSError:
            self._checkpoints = set()
        self._memo: dict[str, bool] = {}

    def pretrained(self, item: ModelInfo) -> bool:
        if item.name not in self._memo:
            self._memo[item.name] = self._check(item)
        return self._memo[item.name]

    def _check(self, item: ModelInfo) -> bool:
        if not item.tags or not (self._hf_repos or self._checkpoints):
            return False
        source = _weight_source(item.name)
        if source is None:
            return False
        kind, where, _ = source
        if kind == "hf":
            # Cheap test first (the repo folder exists), then the exact file as timm would load it.
            return where.partition("@")[0] in self._hf_repos and pretrained_availability(item.name).offline
        return _hub_checkpoint(where).name in self._checkpoints

    def has_any(self, item: ModelInfo) -> bool:
        return item.name in self.extra or self.pretrained(item)


# --- downloading ------------------------------------------------------------------------------------------------


class DownloadCancelled(Exception):
    """The user stopped a download (nothing is broken; a later download resumes or starts again)."""


ProgressCallback = Callable[[int, int], None]  # (bytes done, bytes in all; 0 when unknown)


def download_pretrained(name: str, on_progress: ProgressCallback | None = None,
                        stop: threading.Event | None = None) -> str:
    """Download the pretrained weights of ``name`` into the local cache (Hugging Face's or PyTorch hub's, where
    timm and torchvision look), reporting progress; returns where they are. Raises ModelError with a sentence when
    there is no connection, DownloadCancelled when ``stop`` is set."""
    availability = pretrained_availability(name)
    if availability.offline:
        return availability.where
    source = _weight_source(name)
    if source is None:
        raise ModelError(availability.reason)
    kind, where, filenames = source
    host = HF_HOST if kind == "hf" else urllib.parse.urlparse(where).hostname or ""
    if not models._online(host):
        raise ModelError(models._no_download_message(name))
    try:
        if kind == "hf":
            return _download_hf(where, filenames, on_progress, stop)
        target = _hub_checkpoint(where)
        download_url(where, target, on_progress, stop)
        return str(target)
    except (DownloadCancelled, ModelError):
        raise
    except Exception as exc:  # network errors come in many types (HTTP, SSL, socket, hub errors)
        raise ModelError(f"The weights of {name} could not be downloaded ({exc.__class__.__name__}): check the "
                         "internet connection and try again, or choose a weight file.") from None


def _progress_class(on_progress: ProgressCallback | None, stop: threading.Event | None):
    from tqdm.std import tqdm

    class _Progress(tqdm):
        """huggingface_hub reports its download through a tqdm class: this one passes it on, and stops it."""

        def __init__(self, *args, **kwargs):
            kwargs["file"] = io.StringIO()  # no console output: the window shows its own bar
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            result = super().update(n)
            if on_progress is not None:
                on_progress(int(self.n), int(self.total or 0))
            if stop is not None and stop.is_set():
                raise DownloadCancelled()
            return result

    return _Progress


def _download_hf(repo: str, filenames: tuple[str, ...], on_progress, stop) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    repo_id, _, revision = repo.partition("@")
    for index, filename in enumerate(filenames):
        try:
            return hf_hub_download(repo_id, filename, revision=revision or None,
                                   tqdm_class=_progress_class(on_progress, stop))
        except EntryNotFoundError:
            if index == len(filenames) - 1:
                raise
    raise ModelError(f"No weight file was found in {repo_id}.")


def download_url(url: str, target: str | Path, on_progress: ProgressCallback | None = None,
                 stop: threading.Event | None = None) -> None:
    """Stream ``url`` into ``target`` (atomically), reporting progress and checking ``stop`` between chunks.

    Written by hand because torch.hub.download_url_to_file reports progress only to a console bar and cannot be
    stopped; torchvision and timm then find the file in the same place (torch hub's checkpoints folder)."""
    from engine.files import atomic_write

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with urllib.request.urlopen(url, timeout=30) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while True:
                if stop is not None and stop.is_set():
                    raise DownloadCancelled()
                chunk = response.read(DOWNLOAD_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                if on_progress is not None:
                    on_progress(done, total)

    atomic_write(target, write)


if __name__ == "__main__":
    print(f"{write_count_table()} models counted into {SHIPPED_COUNTS}")
