"""Suggestions: drawn from the pool only, distinct, stable for a seed, diverse; the pool is scanned with the data's
checks; the command line prints exactly the JSON the issue names."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, make_class_folders
from engine.active import Labels, NONE_OF_THESE, pca_map, scan_pool, select, suggest
from engine.data.scan import DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    """Twelve unlabelled pictures (other draws of the tiny run's colours), in nested folders as a user drops them."""
    root = tmp_path_factory.mktemp("pool") / "unlabelled"
    make_class_folders(root / "batch", per_class=4, seed=7)
    return root


@pytest.fixture(autouse=True)
def _own_feature_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFER_STUDIO_FEATURES", str(tmp_path / "features"))


def test_pool_scan_uses_the_data_checks(tmp_path, pool, tiny_run_data):
    root = tmp_path / "pool"
    shutil.copytree(pool, root)
    (root / "notes.txt").write_text("not a picture")
    (root / "broken.png").write_bytes(b"not really a png")
    known = next(tiny_run_data.rglob("*.png"))
    shutil.copy(known, root / "copy-of-known.png")
    found = scan_pool(root, known=[root / "copy-of-known.png"])
    assert len(found.paths) == 12
    assert [p.path for p in found.health.unreadable] == [str(root / "broken.png")]
    assert found.health.ignored == 1 and found.overlap == 1
    assert {a.kind for a in found.health.advice} == {"unreadable", "pool-overlap"}
    with pytest.raises(DataError, match="already in the labelled data"):
        scan_pool(root / "batch", known=found.paths)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="No pictures were found"):
        scan_pool(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        scan_pool(tmp_path / "missing")


def test_suggestions_are_distinct_from_the_pool_and_stable_for_a_seed(tiny_run, pool):
    paths = scan_pool(pool).paths
    first = suggest(tiny_run, paths, 5, seed=3)
    again = suggest(tiny_run, paths, 5, seed=3)
    chosen = [s.path for s in first.suggestions]
    assert len(chosen) == 5 == len(set(chosen))
    assert set(chosen) <= set(paths)
    assert [s.to_dict() for s in again.suggestions] == [s.to_dict() for s in first.suggestions]
    assert again.outputs.computed == 0  # the second look read the features back
    classes = json.loads((tiny_run / "labels.json").read_text())
    for s in first.suggestions:
        assert s.predicted in classes and 0 < s.confidence <= 1 and 0 <= s.score <= 1
    everything = suggest(tiny_run, paths, 50, seed=0).suggestions
    assert sorted(s.path for s in everything) == sorted(paths)  # never more than the pool, never a repeat


def test_answered_pictures_are_not_suggested_again(tiny_run, pool, tmp_path):
    paths = scan_pool(pool).paths
    labels = Labels(str(tmp_path / "labels.csv"))
    labels.set(paths[:4], "red")
    labels.set(paths[4], NONE_OF_THESE)
    found = suggest(tiny_run, paths, 20, labels=labels)
    assert {s.path for s in found.suggestions} == set(paths[5:])
    labels.set(paths[5:], "blue")
    with pytest.raises(Exception, match="Every picture of the pool has an answer"):
        suggest(tiny_run, paths, 20, labels=labels)


def test_suggestions_spread_over_clusters_instead_of_near_copies():
    rng = np.random.default_rng(0)
    centres = np.eye(3, 16, dtype=np.float32)
    features = np.concatenate([c + 0.01 * rng.standard_normal((10, 16)) for c in centres]).astype(np.float32)
    # The first cluster is the most uncertain: uncertainty alone would take three of its near-copies.
    probs = np.array([[0.52, 0.48]] * 10 + [[0.7, 0.3]] * 10 + [[0.75, 0.25]] * 10, dtype=np.float32)
    far = np.eye(16, dtype=np.float32)[8:11]  # labelled pictures unlike any of the pool's
    chosen = [row for row, _ in select(probs, features, 3, anchors=far, seed=0)]
    assert sorted(row // 10 for row in chosen) == [0, 1, 2]
    # Cold start (fewer labelled pictures than suggestions): the most typical picture of each group.
    chosen = [row for row, _ in select(probs, features, 3, seed=0)]
    assert sorted(row // 10 for row in chosen) == [0, 1, 2]
    # Already labelled pictures near the first cluster make it less worth labelling.
    chosen = [row for row, _ in select(probs, features, 1, anchors=features[:2], seed=0)]
    assert chosen[0] >= 10


def test_the_map_is_two_dimensional_and_reproducible():
    rng = np.random.default_rng(1)
    features = rng.standard_normal((40, 8)).astype(np.float32)
    features[:20, 0] += 5
    a, b = pca_map(features, seed=0), pca_map(features, seed=0)
    assert a.shape == (40, 2) and np.array_equal(a, b)
    assert abs(a[:20, 0].mean() - a[20:, 0].mean()) > 0.5  # the two groups lie apart on the first axis


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def test_command_line_prints_the_ranked_json(tiny_run, pool, tmp_path):
    proc = run_cli("suggest", str(tiny_run), "--pool", str(pool), "--n", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == 4 and all(list(r) == ["path", "score", "predicted", "confidence"] for r in rows)
    assert rows == [s.to_dict() for s in suggest(tiny_run, scan_pool(pool).paths, 4).suggestions]
    plain = run_cli("suggest", str(tiny_run), "--pool", str(pool), "--n", "2")
    assert plain.returncode == 0 and [line.split("\t")[0] for line in plain.stdout.splitlines()] == \
        [r["path"] for r in rows[:2]]
    missing = run_cli("suggest", str(tiny_run), "--pool", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines()[-1].startswith("error: The pool folder")
