"""main.py check [--json]: the facts of this computer and each problem with what to do, without any network."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from engine import check
from engine.project.library import ModelLibrary
from tests.conftest import REPO

KEYS = ["python", "torch", "cuda", "devices", "disk", "offline", "weights", "problems"]


def test_check_json_has_the_documented_keys_and_this_computers_facts(tmp_path):
    env = {**os.environ, "TRANSFER_STUDIO_OFFLINE": "1", "XDG_DATA_HOME": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, str(REPO / "main.py"), "check", "--json", "--runs", str(tmp_path / "runs")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert list(report) == KEYS
    assert report["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert report["torch"]["version"] == torch.__version__
    assert report["cuda"]["build"] == torch.version.cuda
    cpu = report["devices"][-1]
    assert {"name", "memory_gb", "bf16", "fp16"} <= set(cpu) and cpu["type"] == "cpu"
    assert cpu["fp16"] is True and cpu["bf16"] is True  # a CPU computes both (natively or not)
    assert report["disk"]["runs"]["path"] == str(tmp_path / "runs") and report["disk"]["runs"]["writable"]
    assert report["offline"] is True
    assert all(isinstance(p, str) and p.endswith(".") for p in report["problems"])


def test_check_prints_plain_lines_without_json(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "main.py"), "check", "--runs", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Python ") and "Offline mode: off" in done.stdout


def test_an_nvidia_gpu_with_a_torch_without_cuda_is_a_problem_with_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(check, "_nvidia_smi", lambda: {"gpus": ["NVIDIA RTX A2000"], "driver": "535.1", "cuda": "12.2"})
    monkeypatch.setattr(torch.version, "cuda", None)
    report = check.check_computer(runs_dir=tmp_path, library_dir=tmp_path / "lib")
    assert report.cuda["driver"] == "535.1"
    assert any(p.startswith("An NVIDIA GPU is present (NVIDIA RTX A2000) but this PyTorch build has no CUDA")
               and "install PyTorch with CUDA support" in p for p in report.problems)


def test_a_driver_too_old_for_the_cuda_build_is_a_problem(monkeypatch, tmp_path):
    monkeypatch.setattr(check, "_nvidia_smi", lambda: {"gpus": ["Tesla T4"], "driver": "470.2", "cuda": "11.4"})
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    report = check.check_computer(runs_dir=tmp_path, library_dir=tmp_path / "lib")
    assert any("PyTorch cannot use it" in p and "Update the NVIDIA driver" in p and "CUDA up to 11.4" in p
               for p in report.problems)


def test_little_disk_space_and_an_unwritable_runs_folder_are_problems(monkeypatch, tmp_path):
    real = check._folder

    def folder(path):
        found = real(path)
        if "runs" in str(path):
            found.writable = False
        else:
            found.free_gb = 0.5
        return found

    monkeypatch.setattr(check, "_folder", folder)
    report = check.check_computer(runs_dir=tmp_path / "runs", library_dir=tmp_path / "lib")
    assert any(p.startswith("Only 0.5 GB are free at the picture cache") and "TRANSFER_STUDIO_CACHE" in p
               for p in report.problems)
    assert any(p.startswith("Transfer Studio cannot write run folders in") for p in report.problems)


def test_a_runs_folder_not_made_yet_is_checked_at_its_parent(tmp_path):
    folder = check._folder(tmp_path / "not" / "yet")
    assert folder.writable and not folder.exists and folder.free_gb is not None
    assert list(tmp_path.iterdir()) == []  # the write test left nothing behind


def test_imported_weights_are_listed_and_offline_without_weights_says_what_to_do(monkeypatch, tmp_path):
    from safetensors.torch import save_file

    import timm

    monkeypatch.setenv("TRANSFER_STUDIO_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    library = tmp_path / "lib"
    report = check.check_computer(runs_dir=tmp_path, library_dir=library)
    assert report.weights == []
    assert any(p.startswith("Offline mode is on and no pretrained weights are on this computer")
               for p in report.problems)

    weights = tmp_path / "mine.safetensors"
    save_file(timm.create_model("test_resnet").state_dict(), str(weights))
    ModelLibrary(library).import_file(weights, "timm:test_resnet")
    report = check.check_computer(runs_dir=tmp_path, library_dir=library)
    assert [(w.model, w.where) for w in report.weights] == [("timm:test_resnet", "model library")]
    assert not any(p.startswith("Offline mode is on") for p in report.problems)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_precision_probe_really_computes(dtype):
    assert check._runs(torch.device("cpu"), dtype) is True
