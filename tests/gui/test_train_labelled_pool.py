"""The Train step's Start trains what `main.py train PROJECT.tsproj` and the Label step's Retrain train: the project's
pictures plus the pool pictures labelled in the Label step ("none of these" left out), and its status line says so."""

from __future__ import annotations

from conftest import make_class_folders
from engine.active import NONE_OF_THESE, joined_config, labels_path_for, read_labels
from engine.active.pool import scan_pool
from tests.gui.test_main_window import wait_scanned, window  # noqa: F401  (window is a fixture)


def started_config(window, monkeypatch):  # noqa: F811
    """Press Start; the settings the training thread was given (it is not run: the test looks at what it gets)."""
    train = window.training.train
    given = []
    monkeypatch.setattr(train.controller, "start", lambda config, dataset=None: given.append((config, dataset)))
    train.start()
    return given


def test_start_trains_the_labelled_pool_pictures_too(qtbot, tmp_path, window, tiny_dataset,  # noqa: F811
                                                     monkeypatch):
    window.open_folder(tiny_dataset)
    wait_scanned(qtbot, window)
    pool = make_class_folders(tmp_path / "unsorted", per_class=2, seed=3)
    paths = scan_pool(pool).paths
    labels = read_labels(labels_path_for(window.project.project))
    blue = [p for p in paths if "/blue/" in p]
    labels.set(blue, "blue")
    labels.set([next(p for p in paths if "/red/" in p)], NONE_OF_THESE)
    labels.save()

    given = started_config(window, monkeypatch)

    (config, dataset), = given
    joined, summary = joined_config(window.training.train.config(), labels)
    assert config.data.source == joined.data.source  # the same training list as `train PROJECT` and Retrain
    assert dataset is None  # not the Data step's scan of the folder alone: the engine reads the joined list
    assert summary.joined == len(blue) == 2
    assert "2 labelled pool pictures join training; 1 marked 'none of these' stay out" in \
        window.training.train.status.text()
    assert "2 labelled pool pictures join training" in window.training.train.log.toPlainText()  # and in the log


def test_start_without_labelled_pool_pictures_trains_the_project_as_it_is(qtbot, window,  # noqa: F811
                                                                          tiny_dataset, monkeypatch):
    window.open_folder(tiny_dataset)
    wait_scanned(qtbot, window)
    (config, dataset), = started_config(window, monkeypatch)
    assert config == window.training.train.config() and dataset is window.project.dataset
