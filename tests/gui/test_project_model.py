"""The project object the steps share: changes go through the RunConfig, announce themselves, mark the project as
modified, and are kept in a draft until saved."""

from __future__ import annotations

import dataclasses

import pytest

from engine.config import RunConfig
from engine.errors import ConfigError
from engine.project.project import Project, draft_path, new_project, read_draft
from gui.project import DraftKeeper, ProjectModel


@pytest.fixture
def model(qtbot, tmp_path):
    m = ProjectModel(tmp_path / "data")
    m.load(new_project(tmp_path / "pics", data_dir=tmp_path / "data"))
    return m


def test_a_change_announces_the_new_settings_and_marks_the_project_modified(qtbot, model):
    seen = []
    model.config_changed.connect(seen.append)
    with qtbot.waitSignal(model.dirty_changed) as dirty:
        model.update_train(batch_size=8)
    assert dirty.args == [True]
    assert seen == [model.config] and model.config.train.batch_size == 8
    assert model.is_dirty

    with qtbot.assertNotEmitted(model.config_changed):
        model.update_train(batch_size=8)  # the same value again: nothing changes


def test_settings_that_cannot_work_are_refused_and_nothing_changes(qtbot, model):
    before = model.config
    with pytest.raises(ConfigError, match="batch size"):
        model.update_train(batch_size=-1)
    assert model.config is before and not model.is_dirty


def test_every_part_of_the_run_config_can_be_changed(model):
    model.update_data(val_fraction=0.3)
    model.update_model(name="timm:resnet18", weights="none")
    model.update(strategy="lp-ft", epochs=4)
    model.update_train(optimizer="sgd")
    config = model.config
    assert (config.data.val_fraction, config.model.weights, config.strategy, config.epochs,
            config.train.optimizer) == (0.3, "none", "lp-ft", 4, "sgd")


def test_saving_clears_the_modified_flag_and_opening_another_project_resets_the_dataset(qtbot, model, tmp_path):
    model.update(epochs=2)
    model.set_dataset(object())  # any scanned dataset
    saved = model.save(tmp_path / "p.tsproj").project
    assert not model.is_dirty and saved.path == str(tmp_path / "p.tsproj")

    with qtbot.waitSignals([model.project_replaced, model.dataset_changed]):
        model.load(Project("Other", RunConfig()))
    assert model.dataset is None and model.name == "Other"


def test_a_rename_is_a_change(model):
    model.rename("  Bees  ")
    assert model.name == "Bees" and model.is_dirty
    model.rename("   ")
    assert model.name == "Bees"


def test_the_draft_is_written_after_a_change_and_removed_after_saving(qtbot, model, tmp_path):
    keeper = DraftKeeper(model, tmp_path / "data", delay_ms=1)
    model.update(epochs=21)
    qtbot.waitUntil(lambda: draft_path(tmp_path / "data").is_file())
    assert read_draft(data_dir=tmp_path / "data").project.config.epochs == 21

    model.save(tmp_path / "x.tsproj")
    assert not draft_path(tmp_path / "data").exists()
    assert keeper is not None


def test_a_draft_that_cannot_be_written_is_reported_not_raised(qtbot, model, tmp_path):
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the data folder should be")
    keeper = DraftKeeper(model, blocker, delay_ms=1)
    with qtbot.waitSignal(keeper.error) as error:
        model.update(epochs=6)
    assert "backup" in error.args[0]
    assert dataclasses.is_dataclass(model.project)
