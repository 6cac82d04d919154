"""The model picker: the catalogue with its facts, search and filters, and every weight source — pretrained (found
offline, downloaded with progress, or refused with a clear sentence when there is no connection), an imported file,
an earlier run's model, or none."""

from __future__ import annotations

import pytest
import torch
from PySide6.QtCore import Qt
from safetensors.torch import save_file

import engine.models.build as models
from engine.models import catalogue
from engine import files
from engine.project import runs
from engine.config import ModelConfig, RunConfig
from engine.project.library import ModelLibrary
from gui.steps.model import INPUT, LICENCE, NAME, NAME_ROLE, OFFLINE, PARAMS, ModelPicker

LOAD_TIMEOUT = 120_000  # ms: the first import of timm is slow on a busy machine


@pytest.fixture(scope="session")
def count_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("param-counts")


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf

    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(cache))
    saved = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torchhub"))
    yield cache
    torch.hub.set_dir(saved)


@pytest.fixture(scope="module")
def resnet18_state():
    import timm

    return timm.create_model("resnet18").state_dict()


@pytest.fixture(scope="module")
def mobilenet_state():
    import torchvision

    return torchvision.models.mobilenet_v2().state_dict()


def put_in_hf_cache(cache, repo_id: str, state: dict) -> None:
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    save_file(state, str(repo / "snapshots" / "abc" / "model.safetensors"))


def make_picker(qtbot, tmp_path, count_cache) -> ModelPicker:
    picker = ModelPicker(runs_folder=tmp_path / "runs", library=ModelLibrary(tmp_path / "library"),
                         cache_dir=count_cache)
    qtbot.addWidget(picker)
    picker.resize(1200, 700)
    with qtbot.waitSignal(picker.catalogueLoaded, timeout=LOAD_TIMEOUT):
        picker.show()
    return picker


@pytest.fixture
def picker(qtbot, tmp_path, hf_cache, count_cache) -> ModelPicker:
    return make_picker(qtbot, tmp_path, count_cache)


def shown(picker: ModelPicker) -> list[str]:
    return [picker.proxy.index(r, NAME).data(NAME_ROLE) for r in range(picker.proxy.rowCount())]


def cell(picker: ModelPicker, name: str, column: int) -> str:
    row = shown(picker).index(name)
    return picker.proxy.index(row, column).data()


def test_beginners_see_the_recommended_list_small_and_fast_first(qtbot, picker):
    assert shown(picker) == [name for name, _ in catalogue.RECOMMENDED]
    assert picker.current_model().name == catalogue.RECOMMENDED[0][0]
    assert "Recommended" in picker.reason_label.text()
    # Sizes are counted in the background and appear as they come: small and fast first.
    qtbot.waitUntil(lambda: "\u2026" not in [cell(picker, n, PARAMS) for n in shown(picker)], timeout=LOAD_TIMEOUT)
    sizes = [picker.table_model.count(n) for n in shown(picker)]
    assert sizes == sorted(sizes)
    assert cell(picker, "timm:resnet18", PARAMS) == "11.7 M"
    assert cell(picker, "torchvision:mobilenet_v2", PARAMS) == "3.5 M"
    assert cell(picker, "timm:resnet18", INPUT) == "224\u00d7224"
    assert cell(picker, "timm:resnet18", LICENCE) == "apache-2.0"
    assert cell(picker, "timm:resnet18", OFFLINE) == "needs download"


def test_search_and_filters(qtbot, picker):
    picker.recommended_check.setChecked(False)
    assert len(shown(picker)) == len(catalogue.all_models())
    qtbot.keyClicks(picker.search_edit, "resnet18")
    qtbot.waitUntil(lambda: "timm:resnet18" in shown(picker) and len(shown(picker)) < 20)
    assert "torchvision:resnet18" in shown(picker) and all("resnet18" in n for n in shown(picker))
    picker.source_combo.setCurrentIndex(picker.source_combo.findData("torchvision"))
    assert shown(picker) == ["torchvision:resnet18"]
    assert "1 of" in picker.count_label.text()
    picker.search_edit.setText("no-such-model")
    qtbot.waitUntil(lambda: shown(picker) == [])
    assert "nothing matches" in picker.count_label.text()


def test_available_offline_filter_finds_cached_and_imported_weights(qtbot, tmp_path, hf_cache, count_cache,
                                                                    resnet18_state, mobilenet_state):
    put_in_hf_cache(hf_cache, "timm/resnet18.a1_in1k", resnet18_state)
    source = tmp_path / "mine.safetensors"
    save_file(mobilenet_state, str(source))
    ModelLibrary(tmp_path / "library").import_file(source, "torchvision:mobilenet_v2")
    picker = make_picker(qtbot, tmp_path, count_cache)
    picker.recommended_check.setChecked(False)
    picker.offline_check.setChecked(True)
    assert shown(picker) == ["timm:resnet18", "torchvision:mobilenet_v2"]
    assert cell(picker, "timm:resnet18", OFFLINE) == "on this computer"
    assert cell(picker, "torchvision:mobilenet_v2", OFFLINE) == "imported file"


def test_random_weights_are_chosen_at_once(qtbot, picker):
    assert picker.select("timm:resnet18")
    qtbot.mouseClick(picker.none_radio, Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(picker.modelChosen) as signal:
        qtbot.mouseClick(picker.use_button, Qt.MouseButton.LeftButton)
    assert signal.args == ["timm:resnet18", "none"]


def test_pretrained_weights_without_a_connection_say_so(qtbot, picker, monkeypatch):
    monkeypatch.setattr(models, "_online", lambda host: False)
    picker.select("timm:resnet18")
    assert picker.pretrained_radio.isChecked()
    assert "Not on this computer" in picker.availability_label.text()
    assert "internet connection" in picker.availability_label.text()
    assert picker.use_button.text() == "Download and use this model"
    with qtbot.assertNotEmitted(picker.modelChosen):
        with qtbot.waitSignal(picker.builder.failed, timeout=30_000):
            qtbot.mouseClick(picker.use_button, Qt.MouseButton.LeftButton)
    text = picker.message_label.text()
    assert "cannot be downloaded now" in text and "no internet connection" in text
    assert picker.message_label.isVisible() and not picker.progress.isVisible()


def test_pretrained_weights_download_with_progress_then_are_used(qtbot, picker, monkeypatch, hf_cache,
                                                                 resnet18_state):
    import huggingface_hub

    def fake_download(repo_id, filename, *, revision=None, tqdm_class=None, **_):
        bar = tqdm_class(total=4_000_000, unit="B")
        for _ in range(4):
            bar.update(1_000_000)
        put_in_hf_cache(hf_cache, repo_id, resnet18_state)
        return str(hf_cache)

    monkeypatch.setattr(models, "_online", lambda host: True)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    picker.select("timm:resnet18")
    seen = []
    picker.builder.progress.connect(lambda text, done, total: seen.append((done, total)))
    with qtbot.waitSignal(picker.modelChosen, timeout=30_000) as signal:
        qtbot.mouseClick(picker.use_button, Qt.MouseButton.LeftButton)
        assert picker.progress.isVisible()  # shown while the download runs
    assert signal.args == ["timm:resnet18", "pretrained"]
    assert (4_000_000, 4_000_000) in seen
    assert "now on this computer" in picker.message_label.text()
    assert "\u2714" in picker.availability_label.text() and picker.use_button.text() == "Use this model"


def test_pretrained_weights_already_here_are_used_without_a_network(qtbot, tmp_path, hf_cache, count_cache,
                                                                    resnet18_state, monkeypatch):
    put_in_hf_cache(hf_cache, "timm/resnet18.a1_in1k", resnet18_state)
    monkeypatch.setattr(models, "_online", lambda host: pytest.fail("went online"))
    picker = make_picker(qtbot, tmp_path, count_cache)
    picker.select("timm:resnet18")
    assert "On this computer" in picker.availability_label.text()
    assert "apache-2.0" in picker.availability_label.text()
    with qtbot.waitSignal(picker.modelChosen) as signal:
        qtbot.mouseClick(picker.use_button, Qt.MouseButton.LeftButton)
    assert signal.args == ["timm:resnet18", "pretrained"]


def test_a_weight_set_other_than_the_default(qtbot, picker):
    picker.select("timm:resnet18")
    picker.tag_combo.setCurrentIndex(picker.tag_combo.findData("tv_in1k"))
    assert picker.choice() == ("timm:resnet18.tv_in1k", "pretrained")
    assert "Not on this computer" in picker.availability_label.text()


def test_importing_a_weight_file(qtbot, picker, tmp_path, mobilenet_state, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    source = tmp_path / "downloads" / "mobilenet.pth"
    source.parent.mkdir()
    torch.save(mobilenet_state, source)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(source), ""))

    picker.select("timm:resnet18")  # the wrong model for this file
    qtbot.mouseClick(picker.import_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "do not fit" in picker.message_label.text(), timeout=30_000)
    assert picker.library.imported() == []

    picker.select("torchvision:mobilenet_v2")
    qtbot.mouseClick(picker.import_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: picker.file_radio.isChecked(), timeout=30_000)
    (entry,) = picker.library.imported()
    assert picker.choice() == ("torchvision:mobilenet_v2", entry.path)
    assert cell(picker, "torchvision:mobilenet_v2", OFFLINE) == "imported file"
    with qtbot.waitSignal(picker.modelChosen) as signal:
        qtbot.mouseClick(picker.use_button, Qt.MouseButton.LeftButton)
    assert signal.args == ["torchvision:mobilenet_v2", entry.path]


def test_a_model_trained_before(qtbot, picker, tmp_path, mobilenet_state):
    run = tmp_path / "runs" / "20250101-120000-mobilenet_v2-lp-ft"
    run.mkdir(parents=True)
    (run / runs.CONFIG).write_text("version = 1\n")
    files.atomic_write_json(run / runs.MODEL, {"model": "torchvision:mobilenet_v2"})
    files.atomic_write_json(run / runs.LABELS, ["ant", "bee"])
    files.atomic_write_json(run / runs.SUMMARY, {"status": "completed", "best_val_acc": 0.9})
    save_file(mobilenet_state, str(run / runs.BEST))
    picker.select("timm:resnet18")
    qtbot.mouseClick(picker.run_radio, Qt.MouseButton.LeftButton)
    assert picker.choice() is None and not picker.use_button.isEnabled()  # no run of resnet18
    picker.set_runs_folder(tmp_path / "runs")
    picker.select("torchvision:mobilenet_v2")
    picker.run_radio.setChecked(True)
    assert "2 classes" in picker.run_combo.currentText()
    assert picker.choice() == ("torchvision:mobilenet_v2", str(run / runs.BEST))
    assert picker.use_button.isEnabled()


def test_a_model_without_published_weights(qtbot, picker):
    bare = next(i for i in catalogue.all_models() if not i.tags)
    assert picker.select(bare.name)
    assert not picker.pretrained_radio.isEnabled() and picker.none_radio.isChecked()
    assert "No pretrained weights are published" in picker.availability_label.text()
    assert picker.choice() == (bare.name, "none")


def test_set_config_shows_the_configs_model(qtbot, picker):
    picker.set_config(RunConfig(model=ModelConfig("timm:vit_tiny_patch16_224", "none"), out="elsewhere"))
    assert picker.current_model().name == "timm:vit_tiny_patch16_224"
    assert picker.none_radio.isChecked() and picker.choice() == ("timm:vit_tiny_patch16_224", "none")
    assert picker.runs_folder.name == "elsewhere"


def test_a_projects_weight_file_that_was_never_imported_is_shown_as_its_choice(qtbot, picker, tmp_path,
                                                                               mobilenet_state):
    """A project made with a weight file from anywhere on the computer (``main.py train --weights FILE``, a lab's
    shared folder) opens with that file chosen, not with pretrained weights that would need a download."""
    weights = tmp_path / "lab" / "mobilenet_v2_lab.safetensors"
    weights.parent.mkdir()
    save_file(mobilenet_state, str(weights))
    picker.set_config(RunConfig(model=ModelConfig("torchvision:mobilenet_v2", str(weights)), out="elsewhere"))
    assert picker.current_model().name == "torchvision:mobilenet_v2"
    assert picker.file_radio.isChecked() and not picker.pretrained_radio.isChecked()
    assert picker.file_combo.currentText() == "mobilenet_v2_lab.safetensors (this project's file)"
    assert picker.choice() == ("torchvision:mobilenet_v2", str(weights))
    picker.select("timm:resnet18")  # another model, then back: the file is still there for this one
    assert picker.file_combo.findData(str(weights)) < 0
    picker.select("torchvision:mobilenet_v2")
    assert picker.file_combo.findData(str(weights)) >= 0
