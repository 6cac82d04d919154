"""RunConfig: the TOML round-trip, paths relative to the file, and a plain sentence for every setting that cannot work."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from engine.config import (
    FORMAT_VERSION,
    DataConfig,
    ModelConfig,
    Phase,
    RunConfig,
    TrainConfig,
    dumps,
    load,
    loads,
    save,
)
from engine.errors import ConfigError, UserError


def _custom_config(root: Path) -> RunConfig:
    """A config in which every value differs from its default, with two phases that train different stages."""
    config = RunConfig(
        data=DataConfig(source=str(root / "pictures"), val_fraction=0.15, test_fraction=0.1, split_seed=7,
                        split="random", exclude=("train/ants/blurred.jpg",),
                        relabel={"train/ants/really a bee.jpg": "bees"},
                        dicom_frames="all", dicom_window="auto", stretch="dataset", stretch_low=1.0, stretch_high=99.0,
                        channels="3,2,1", slide_tile=256, slide_magnification=20.0, slide_tissue=0.3,
                        tasks=("species", "stage")),
        model=ModelConfig(name="torchvision:mobilenet_v2", weights=str(root / "weights" / "mine.safetensors")),
        strategy="custom",
        epochs=9,
        lr=0.003,
        phases=(
            Phase(name="head only", epochs=2, lr=0.01, stages={"head": 1.0}, bn="train"),
            Phase(name="top blocks", epochs=3, lr=1e-4,
                  stages={"features.17": 0.25, "features.18": 0.5, "head": 1.0}, bn="frozen"),
        ),
        train=TrainConfig(batch_size=16, optimizer="sgd", weight_decay=0.0, momentum=0.8, schedule="onecycle",
                          warmup_epochs=1.0, augment="strong", label_smoothing=0.0, early_stopping=3, layer_decay=0.6,
                          precision="fp32", channels_last="off", device="cpu", workers=2, seed=42,
                          cache_images=False, cache_features=False, feature_views=3, compile=True, fit_head=False,
                          task_weights={"species": 2.0}, task_weighting="uncertainty"),
        out=str(root / "my runs"),
        name="ants vs bees",
    )
    # Guard the premise: no setting may be left at its default, or the round-trip would not prove it is written.
    defaults = RunConfig()
    for section in ("data", "model", "train"):
        for f in dataclasses.fields(getattr(defaults, section)):
            assert getattr(getattr(config, section), f.name) != getattr(getattr(defaults, section), f.name), f.name
    for key in ("strategy", "epochs", "lr", "phases", "out", "name"):
        assert getattr(config, key) != getattr(defaults, key), key
    return config.validate()


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        loads(text)
    return _plain_sentence(info.value)


def _plain_sentence(exc: BaseException) -> str:
    message = str(exc)
    assert isinstance(exc, UserError)
    assert message and "Traceback" not in message and "\n" not in message
    # Raised "from None": no chained Python exception for the window to print.
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
    return message


# --- round-trip ----------------------------------------------------------------------------------------------------


def test_dumps_loads_round_trips_every_setting(tmp_path):
    config = _custom_config(tmp_path)
    text = dumps(config)
    assert loads(text) == config
    # A person reading the file sees the format version first and the phases with their stage multipliers.
    assert text.splitlines()[0] == f"version = {FORMAT_VERSION}"
    data = tomllib.loads(text)
    assert data["phases"][1]["stages"] == {"features.17": 0.25, "features.18": 0.5, "head": 1.0}
    assert [p["bn"] for p in data["phases"]] == ["train", "frozen"]


def test_save_load_round_trips_every_setting(tmp_path):
    config = _custom_config(tmp_path)
    path = tmp_path / "experiment" / "config.toml"
    path.parent.mkdir()
    save(config, path)
    loaded = load(path)
    assert loaded == config
    assert loaded.phases[1].stages == {"features.17": 0.25, "features.18": 0.5, "head": 1.0}
    assert loaded.phases[0].bn == "train"
    assert loaded.total_epochs == 5
    # save leaves no temporary file beside the config.
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.toml"]


def test_save_replaces_an_existing_file(tmp_path):
    path = tmp_path / "config.toml"
    save(RunConfig(epochs=3), path)
    save(RunConfig(epochs=8), path)
    assert load(path).epochs == 8


def test_default_config_round_trips():
    assert loads(dumps(RunConfig())) == RunConfig()


def test_an_empty_file_is_the_default_config():
    assert loads("") == RunConfig()


def test_int_where_a_float_is_expected_is_accepted():
    config = loads("lr = 1\n[train]\nweight_decay = 0\nwarmup_epochs = 2\n[data]\nval_fraction = 0\n")
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.train.weight_decay == 0.0 and isinstance(config.train.weight_decay, float)
    assert config.train.warmup_epochs == 2.0 and isinstance(config.train.warmup_epochs, float)
    assert config.data.val_fraction == 0.0 and isinstance(config.data.val_fraction, float)


def test_int_stage_multiplier_and_phase_lr_become_floats():
    config = loads('strategy = "custom"\n[[phases]]\nname = "p"\nepochs = 1\nlr = 1\nstages = {head = 1}\n')
    assert config.phases[0].lr == 1.0 and isinstance(config.phases[0].lr, float)
    assert config.phases[0].stages == {"head": 1.0}
    assert config.phases[0].bn == "frozen"  # the documented default


# --- paths relative to the file ------------------------------------------------------------------------------------


def test_load_resolves_relative_paths_against_the_file_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "config.toml").write_text(
        '[data]\nsource = "pictures/set1"\n[model]\nname = "timm:resnet18"\nweights = "../weights/w.pth"\n',
        encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the answer must not depend on the working folder
    config = load(folder / "config.toml")
    assert Path(config.data.source) == (folder / "pictures" / "set1").resolve()
    assert Path(config.model.weights) == (tmp_path / "weights" / "w.pth").resolve()


def test_load_resolves_against_the_file_even_when_given_a_relative_path(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "config.toml").write_text('[data]\nsource = "pictures"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    config = load(Path("project") / "config.toml")
    assert Path(config.data.source) == (folder / "pictures").resolve()


@pytest.mark.parametrize("weights", ["pretrained", "none"])
def test_load_keeps_the_weight_keywords(tmp_path, weights):
    path = tmp_path / "config.toml"
    path.write_text(f'[model]\nweights = "{weights}"\n', encoding="utf-8")
    config = load(path)
    assert config.model.weights == weights
    assert config.data.source == ""  # no source stays no source, not the file's folder


def test_load_keeps_absolute_paths(tmp_path):
    source = tmp_path / "somewhere" / "pictures"
    path = tmp_path / "project" / "config.toml"
    path.parent.mkdir()
    save(RunConfig(data=DataConfig(source=str(source))), path)
    assert load(path).data.source == str(source)


# --- errors: one sentence, no traceback ----------------------------------------------------------------------------


def test_unknown_top_level_key():
    message = _error("epochs = 3\nlearning_rate = 0.1\n")
    assert "learning_rate" in message and "Unknown setting" in message


def test_unknown_key_in_train():
    message = _error("[train]\nbatchsize = 8\n")
    assert "batchsize" in message and "[train]" in message
    assert "batch_size" in message  # the known settings help to fix the spelling


def test_unknown_key_in_data_and_model():
    assert "folder" in _error('[data]\nfolder = "x"\n')
    assert "[model]" in _error('[model]\narch = "resnet18"\n')


def test_unknown_key_in_a_phase():
    message = _error('strategy = "custom"\n[[phases]]\nname = "a"\nepochs = 1\nlr = 0.1\nstages = {head = 1.0}\n'
                     'freeze = true\n')
    assert "freeze" in message and "phase 1" in message


def test_a_phase_missing_its_learning_rate():
    message = _error('strategy = "custom"\n[[phases]]\nname = "a"\nepochs = 1\nstages = {head = 1.0}\n')
    assert "lr" in message and "Phase 1" in message


def test_wrong_type():
    message = _error("epochs = 'five'\n")
    assert "epochs" in message and "five" in message


@pytest.mark.parametrize("text, setting", [
    ("lr = '0.1'\n", "lr"),
    ("[train]\nbatch_size = 8.0\n", "batch_size"),
    ("[train]\nseed = true\n", "seed"),
    ("lr = true\n", "lr"),
    ("[data]\nsource = 5\n", "source"),
])
def test_other_wrong_types(text, setting):
    assert setting in _error(text)


def test_a_section_that_is_not_a_table():
    assert "[data]" in _error('data = "pictures"\n')


def test_a_future_version_asks_for_an_update():
    message = _error("version = 99\nepochs = 3\n")
    assert "newer" in message and "99" in message


def test_invalid_toml():
    message = _error("epochs = = 3\n")
    assert "not valid TOML" in message
    assert "line 1" in message  # says where


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "nowhere.toml")
    message = _plain_sentence(info.value)
    assert "does not exist" in message and "nowhere.toml" in message


def test_a_folder_instead_of_a_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    assert "cannot be read" in _plain_sentence(info.value)


def test_a_file_that_is_not_text(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b"\xff\xfe\x00\x80 binary")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert "cannot be read" in _plain_sentence(info.value)


def test_unreadable_files_are_explained_without_python_exception_names(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b"\xff\xfe\x00\x80 binary")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert _plain_sentence(info.value) == (f"The configuration file {path} cannot be read: it is not text (it may be "
                                           "damaged). Choose a config.toml that Transfer Studio wrote.")
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    message = _plain_sentence(info.value)
    assert "it is a folder" in message and "Error" not in message


@pytest.mark.parametrize("text, where", [
    ("epochs = = 3\n", "(invalid value at line 1, column 10)"),
    ('[train]\nbatch_size = 8\noptimizer = "ad', "(unterminated string at the end of the file)"),
])
def test_invalid_toml_says_where_and_what_to_do(text, where):
    assert _error(text) == (f"The configuration file is not valid TOML {where}: correct it in a text editor, or use a "
                            "config.toml that Transfer Studio wrote.")


# --- validate() ----------------------------------------------------------------------------------------------------


def _phase(**changes) -> str:
    values = {"name": '"top"', "epochs": "2", "lr": "0.01", "stages": "{head = 1.0}", "bn": '"frozen"'} | changes
    return 'strategy = "custom"\n[[phases]]\n' + "".join(f"{k} = {v}\n" for k, v in values.items())


@pytest.mark.parametrize("text, words", [
    ('strategy = "fine-tune-everything"\n', ["Unknown strategy", "fine-tune-everything", "lp-ft"]),
    ('strategy = "custom"\n', ["custom strategy", "phase"]),
    ("lr = -0.001\n", ["learning rate", "positive"]),
    ("lr = 0\n", ["learning rate", "positive"]),
    ("lr = nan\n", ["learning rate", "positive"]),
    ("epochs = 0\n", ["epochs", "at least 1"]),
    ("[data]\nval_fraction = 0.6\ntest_fraction = 0.4\n", ["fractions", "less than 1"]),
    ("[data]\nval_fraction = 0.7\ntest_fraction = 0.5\n", ["fractions", "less than 1"]),
    ("[data]\nval_fraction = -0.1\n", ["fractions"]),
    ('[train]\noptimizer = "adam"\n', ["optimizer", "adam", "adamw"]),
    ('[train]\nschedule = "step"\n', ["schedule", "step"]),
    ('[train]\naugment = "heavy"\n', ["augmentation", "heavy"]),
    ('[train]\nprecision = "fp8"\n', ["precision", "fp8"]),
    ('[train]\nchannels_last = "yes"\n', ["channels_last"]),
    ("[train]\nbatch_size = -1\n", ["batch size"]),
    ("[train]\nlabel_smoothing = 1.0\n", ["Label smoothing"]),
    ("[train]\nlayer_decay = 0.0\n", ["layer decay"]),
    ("[train]\nearly_stopping = -1\n", ["early stopping"]),
    (_phase(stages="{}"), ["trains nothing", "top"]),
    (_phase(epochs="0"), ["top", "at least 1 epoch"]),
    (_phase(lr="-1.0"), ["top", "positive learning rate"]),
    (_phase(bn='"learn"'), ["top", "BatchNorm"]),
    (_phase(stages="{head = 0.0}"), ["top", "multipliers must be positive"]),
])
def test_validate_rules(text, words):
    message = _error(text)
    for word in words:
        assert word in message


def test_validate_accepts_the_edges():
    # Fractions summing to just under 1, a phase-only config with epochs = 0, a multiplier above 1.
    config = loads('strategy = "custom"\nepochs = 0\n'
                   "[data]\nval_fraction = 0.5\ntest_fraction = 0.49\n"
                   '[[phases]]\nname = "all"\nepochs = 2\nlr = 0.01\nstages = {head = 2.0, layer4 = 0.1}\n')
    assert config.total_epochs == 2
    assert config.phases[0].stages == {"head": 2.0, "layer4": 0.1}


def test_validate_on_a_config_built_in_code():
    with pytest.raises(ConfigError, match="trains nothing"):
        RunConfig(strategy="custom", phases=(Phase("p", 1, 0.1, {}),)).validate()
    assert RunConfig().validate() == RunConfig()


# --- edge cases found in review -------------------------------------------------


def test_fractional_phase_epochs_are_refused():
    _error(_phase(epochs="2.5"))


def test_a_version_that_is_not_a_number_is_not_called_newer():
    message = _error('version = "1"\n')
    assert "newer" not in message
