"""The catalogue's facts about models, found without downloading: sizes (counted on the meta device and cached),
input sizes, pretrained weight sets and their licences, whether weights are on this computer, search, and the
download path (which says clearly when there is no connection)."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from safetensors.torch import save_file

import engine.models.build as models
from engine.models import catalogue
from engine.models.catalogue import Availability, OfflineIndex, ParamCounts
from engine.errors import ModelError, UserError


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache of our own (timm and huggingface_hub read this setting at call time)."""
    import huggingface_hub.constants as hf

    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def hub_dir(tmp_path):
    """An empty torch hub folder of our own."""
    saved = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torchhub"))
    yield tmp_path / "torchhub"
    torch.hub.set_dir(saved)


def put_in_hf_cache(cache, repo_id: str, filename: str, state: dict) -> None:
    """Lay a file out as huggingface_hub's cache does: refs/main names a snapshot holding the file."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    save_file(state, str(snapshot / filename))


@pytest.fixture(scope="module")
def resnet18_imagenet_state():
    import timm

    torch.manual_seed(0)
    return timm.create_model("resnet18").state_dict()  # random weights, ImageNet's 1000-class head


# --- facts ---------------------------------------------------------------------------------------------------


def test_facts_of_a_timm_and_a_torchvision_model():
    resnet = catalogue.info("timm:resnet18")
    assert resnet.source == "timm" and resnet.arch == "resnet18"
    assert resnet.input_size == (3, 224, 224)
    assert {"a1_in1k", "tv_in1k"} <= set(resnet.tags) and resnet.default_tag == "a1_in1k"
    assert resnet.license == "apache-2.0"
    assert catalogue.info("timm:resnet18.tv_in1k") == resnet  # a weight set names the same model
    mobilenet = catalogue.info("torchvision:mobilenet_v2")
    assert mobilenet.input_size == (3, 224, 224)
    assert mobilenet.tags == ("IMAGENET1K_V1", "IMAGENET1K_V2") and mobilenet.default_tag == "IMAGENET1K_V2"
    assert mobilenet.license is None  # torchvision's configuration states none
    names = {i.name for i in catalogue.all_models()}
    import timm
    import torchvision.models as tvm
    every = {f"timm:{n}" for n in timm.list_models()} | {f"torchvision:{n}" for n in tvm.list_models(module=tvm)}
    assert every == names  # every classification model of both libraries (the command line lists the same)


def test_licence_follows_the_weight_set():
    assert catalogue.license_of("timm:resnet18") == "apache-2.0"
    stated = {catalogue.license_of(f"timm:{i.arch}") for i in catalogue.search("convnext") if i.tags}
    assert stated and None not in stated


def test_unknown_model_is_a_sentence():
    with pytest.raises(UserError) as info:
        catalogue.info("timm:no_such_net")
    assert "no timm model" in str(info.value)


def test_parameter_counts_on_the_meta_device_are_exact_and_cached(tmp_path, monkeypatch):
    counts = ParamCounts(tmp_path, shipped=None)  # as with a timm version the shipped table was not made for
    # torchvision publishes its counts; timm's resnet18 is the same architecture.
    published = counts.get("torchvision:resnet18")
    assert published == 11_689_512
    assert counts.get("timm:resnet18") is None  # not counted yet: nothing is built to answer get()
    assert counts.count("timm:resnet18") == published
    vit = counts.count("timm:vit_base_patch16_224")
    assert vit == counts.get("torchvision:vit_b_16") == 86_567_656  # ViT-B/16 in both libraries
    counts.save()
    saved = json.loads((tmp_path / catalogue.PARAM_CACHE_FILE).read_text())
    assert saved["counts"]["timm:resnet18"] == published and "timm" in saved["versions"]

    # A second session reads the counts without building anything.
    monkeypatch.setattr(catalogue, "_count_on_meta", lambda name: pytest.fail("built a model"))
    again = ParamCounts(tmp_path, shipped=None)
    assert again.count("timm:vit_base_patch16_224") == vit


def test_the_shipped_table_counts_every_model_of_the_pinned_libraries(tmp_path, monkeypatch):
    """The picker shows sizes at once, building nothing. Fails after an upgrade of timm or torchvision: then run
    ``python -m engine.models.catalogue`` to write resources/param_counts.json again."""
    shipped = json.loads(catalogue.SHIPPED_COUNTS.read_text())
    assert shipped["versions"] == catalogue._versions_key(), "regenerate: python -m engine.models.catalogue"
    monkeypatch.setattr(catalogue, "_count_on_meta", lambda name: pytest.fail(f"built {name}"))
    counts = ParamCounts(tmp_path)
    assert all(counts.known(item.name) for item in catalogue.all_models())
    assert counts.count("timm:resnet18") == 11_689_512 and counts.count("timm:vit_base_patch16_224") == 86_567_656


def test_a_cache_from_other_library_versions_is_ignored(tmp_path):
    (tmp_path / catalogue.PARAM_CACHE_FILE).write_text(json.dumps(
        {"versions": "timm 0.1, torchvision 0.1", "counts": {"timm:resnet18": 5}}))
    assert ParamCounts(tmp_path, shipped=None).count("timm:resnet18") == 11_689_512
    (tmp_path / catalogue.PARAM_CACHE_FILE).write_text("{not json")
    assert ParamCounts(tmp_path, shipped=None).get("timm:resnet18") is None  # a damaged cache is only a lost speed-up


def test_recommended_list_is_small_and_fast_first(tmp_path):
    counts = ParamCounts(tmp_path)
    recommended = catalogue.recommended()
    assert [i.name for i in recommended] == [name for name, _ in catalogue.RECOMMENDED]
    sizes = [counts.count(i.name) for i in recommended]
    assert sizes == sorted(sizes) and sizes[0] < 5_000_000
    assert all(i.has_pretrained and i.recommended for i in recommended)


def test_search_by_name_pattern_and_weight_set():
    found = {i.name for i in catalogue.search("resnet18")}
    assert {"timm:resnet18", "torchvision:resnet18"} <= found
    assert all("resnet18" in n for n in found)
    assert {i.name for i in catalogue.search("RESNET18", source="torchvision")} == {"torchvision:resnet18"}
    assert "timm:vit_tiny_patch16_224" in {i.name for i in catalogue.search("vit*tiny*")}
    by_tag = {i.name for i in catalogue.search("fb_swsl_ig1b")}  # a weight set's name finds its models
    assert "timm:resnet18" in by_tag and "timm:vit_tiny_patch16_224" not in by_tag
    assert {i.name for i in catalogue.search("", recommended_only=True)} == {n for n, _ in catalogue.RECOMMENDED}
    assert all(i.has_pretrained for i in catalogue.search("vit", pretrained_only=True))
    kept = {i.name for i in catalogue.search("resnet18", offline=lambda item: item.source == "timm")}
    assert "timm:resnet18" in kept and "torchvision:resnet18" not in kept
    assert catalogue.search("zzzz-nothing") == []


# --- weights on this computer ----------------------------------------------------------------------------------


def test_pretrained_weights_not_on_this_computer_say_why(hf_cache, hub_dir):
    timm_answer = catalogue.pretrained_availability("timm:resnet18")
    assert not timm_answer.offline and "huggingface.co" in timm_answer.reason and "internet" in timm_answer.reason
    tv_answer = catalogue.pretrained_availability("torchvision:mobilenet_v2")
    assert not tv_answer.offline and "download.pytorch.org" in tv_answer.reason
    none = [i for i in catalogue.all_models() if not i.tags][0]
    answer = catalogue.pretrained_availability(none.name)
    assert answer == Availability(False, reason=answer.reason) and "no published pretrained weights" in answer.reason


def test_weights_in_the_hugging_face_cache_are_found_and_load_offline(hf_cache, hub_dir, resnet18_imagenet_state,
                                                                     monkeypatch):
    put_in_hf_cache(hf_cache, "timm/resnet18.a1_in1k", "model.safetensors", resnet18_imagenet_state)
    answer = catalogue.pretrained_availability("timm:resnet18")
    assert answer.offline and "Hugging Face cache" in answer.where
    assert not catalogue.pretrained_availability("timm:resnet18.tv_in1k").offline  # another weight set
    index = OfflineIndex(extra=["torchvision:mobilenet_v2"])
    offline = {i.name for i in catalogue.search("", offline=index.has_any)}
    assert offline == {"timm:resnet18", "torchvision:mobilenet_v2"}
    # What the catalogue calls available is what the engine then loads, with no network.
    monkeypatch.setattr(models, "_online", lambda host: pytest.fail("went online"))
    built = models.build_model("timm:resnet18", "pretrained", 3)
    assert torch.equal(built.model.state_dict()["conv1.weight"], resnet18_imagenet_state["conv1.weight"])


def test_torchvision_weights_in_the_torch_hub_cache_are_found(hf_cache, hub_dir):
    import torchvision.models as tvm

    url = tvm.get_model_weights("mobilenet_v2").DEFAULT.url
    checkpoints = hub_dir / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / url.rsplit("/", 1)[1]).write_bytes(b"weights")
    answer = catalogue.pretrained_availability("torchvision:mobilenet_v2")
    assert answer.offline and "PyTorch hub cache" in answer.where
    assert OfflineIndex().pretrained(catalogue.info("torchvision:mobilenet_v2"))


# --- downloading -----------------------------------------------------------------------------------------------


def test_download_without_a_connection_is_a_clear_sentence(hf_cache, hub_dir, monkeypatch):
    monkeypatch.setattr(models, "_online", lambda host: False)
    for name in ("timm:resnet18", "torchvision:mobilenet_v2"):
        with pytest.raises(ModelError) as info:
            catalogue.download_pretrained(name)
        text = str(info.value)
        assert "cannot be downloaded now" in text and "\n" not in text and info.value.__cause__ is None


def test_download_reports_progress_into_the_cache_that_timm_reads(hf_cache, hub_dir, monkeypatch,
                                                                  resnet18_imagenet_state):
    """huggingface_hub is replaced by a stand-in that behaves like it: reports through tqdm_class, then leaves the
    file in the cache."""
    import huggingface_hub

    def fake_hf_hub_download(repo_id, filename, *, revision=None, tqdm_class=None, **_):
        assert (repo_id, filename) == ("timm/resnet18.a1_in1k", "model.safetensors")
        bar = tqdm_class(total=300, initial=0, unit="B", unit_scale=True, desc=filename)
        for _ in range(3):
            bar.update(100)
        bar.close()
        put_in_hf_cache(hf_cache, repo_id, filename, resnet18_imagenet_state)
        return str(hf_cache)

    monkeypatch.setattr(models, "_online", lambda host: host == "huggingface.co")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hf_hub_download)
    seen = []
    catalogue.download_pretrained("timm:resnet18", on_progress=lambda done, total: seen.append((done, total)))
    assert seen == [(100, 300), (200, 300), (300, 300)]
    assert catalogue.pretrained_availability("timm:resnet18").offline


def test_download_url_streams_atomically_and_stops(tmp_path):
    source = tmp_path / "big.bin"
    source.write_bytes(bytes(range(256)) * 12_000)  # about 3 MB: several chunks
    target = tmp_path / "cache" / "big.bin"
    seen = []
    catalogue.download_url(source.as_uri(), target, lambda done, total: seen.append((done, total)))
    assert target.read_bytes() == source.read_bytes()
    assert seen[-1] == (source.stat().st_size, source.stat().st_size) and len(seen) >= 3
    stop = threading.Event()
    stop.set()
    other = tmp_path / "cache" / "other.bin"
    with pytest.raises(catalogue.DownloadCancelled):
        catalogue.download_url(source.as_uri(), other, stop=stop)
    assert not other.exists() and [p.name for p in other.parent.iterdir()] == ["big.bin"]  # no half file left
