"""`georeasoner doctor`: no torch, no GPU, model missing, disk low (simulated), all good; the --json schema."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from georeasoner_plugin.backend import doctor
from georeasoner_plugin.core.catalog import GB

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_KEYS = {"python", "torch", "cuda", "gpus", "disk_free_bytes", "models", "problems", "ok"}


def run_cli(python, *args, env=None):
    result = subprocess.run([python, "-m", "georeasoner_plugin.backend.cli", "doctor", *args], cwd=ROOT,
                            capture_output=True, text=True, env=env, timeout=120)
    return result


def codes(report):
    return [p["code"] for p in report["problems"]]


def check_schema(report):
    assert set(report) == SCHEMA_KEYS
    assert isinstance(report["ok"], bool) and report["ok"] == (not report["problems"])
    for gpu in report["gpus"]:
        assert {"name", "free_bytes"} <= set(gpu)
    for model in report["models"]:
        assert {"id", "role", "present"} <= set(model)
    for problem in report["problems"]:
        assert set(problem) == {"code", "advice"} and problem["advice"]


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_no_torch_in_a_python_without_it(tmp_path):
    python = shutil.which("python3", path="/usr/bin") or ""
    if not python:
        pytest.skip("no system python3 to stand for an interpreter without torch")
    has_torch = subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0
    if has_torch:
        pytest.skip(f"{python} has torch; this test needs an interpreter without it")
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path))
    result = run_cli(python, "--json", env=env)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    check_schema(report)
    assert report["torch"] is None and report["cuda"] is None
    assert "no_torch" in codes(report)
    advice = next(p["advice"] for p in report["problems"] if p["code"] == "no_torch")
    assert "Install" in advice
    text = run_cli(python, env=env)
    assert text.returncode == 1 and "[no_torch]" in text.stdout and "Traceback" not in text.stderr


def test_no_gpu_for_a_7b_reasoner(empty_cache):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    report = doctor.run(profile="remotereasoner")
    check_schema(report)
    assert report["gpus"] == [] and report["torch"] == torch.__version__
    assert "no_gpu" in codes(report)
    assert "GPU server" in next(p["advice"] for p in report["problems"] if p["code"] == "no_gpu")


def test_model_missing_hub_id_and_folder(empty_cache, tmp_path):
    result = run_cli(sys.executable, "--json", "--reasoner", "acme/not-downloaded", "--segmenter",
                     str(tmp_path / "no-such-folder"), env=dict(os.environ))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    check_schema(report)
    missing = [p["advice"] for p in report["problems"] if p["code"] == "model_missing"]
    assert len(missing) == 2
    assert any("georeasoner download acme/not-downloaded" in a for a in missing)
    assert any("does not exist" in a for a in missing)
    chosen = [m for m in report["models"] if m["selected"]]
    assert [m["present"] for m in chosen] == [False, False]


class LowDisk(doctor.Probe):
    """Simulates a nearly full disk; everything else is read from this machine."""

    def disk_free(self, path):
        return int(0.5 * GB)


def test_disk_low_simulated(empty_cache):
    report = doctor.run(profile="remotereasoner", probe=LowDisk())
    check_schema(report)
    assert report["disk_free_bytes"] == int(0.5 * GB)
    advice = next(p["advice"] for p in report["problems"] if p["code"] == "disk_low")
    assert "500.0 MB free" in advice and "HF_HOME" in advice


class SmallGpu(doctor.Probe):
    """A CUDA machine with one small GPU (this workplace has none)."""

    def torch(self):
        return "2.14.1", "13.0", [doctor.Gpu("Stand-in GPU 8 GB", 6 * GB, 8 * GB)], ""


def test_gpu_memory_marks_what_fits(empty_cache):
    report = doctor.run(profile="remotereasoner", probe=SmallGpu())
    assert "gpu_memory" in codes(report) and "no_gpu" not in codes(report)
    fits = {m["id"]: m["fits"] for m in report["models"]}
    assert fits["1e12Leon/RemoteReasoner"] is False
    assert fits["facebook/sam2.1-hiera-large"] is True


def test_all_good_with_tiny_models(tiny_models, empty_cache):
    result = run_cli(sys.executable, "--json", "--reasoner", str(tiny_models["reasoner"]),
                     "--segmenter", str(tiny_models["segmenter"]), env=dict(os.environ))
    report = json.loads(result.stdout)
    check_schema(report)
    assert result.returncode == 0, report["problems"]
    assert report["ok"] is True and report["problems"] == []
    chosen = [m for m in report["models"] if m["selected"]]
    assert [m["present"] for m in chosen] == [True, True]
    text = run_cli(sys.executable, "--reasoner", str(tiny_models["reasoner"]), "--segmenter",
                   str(tiny_models["segmenter"]), env=dict(os.environ))
    assert text.returncode == 0 and "All good" in text.stdout


def test_unknown_profile_is_a_usage_error():
    result = run_cli(sys.executable, "--profile", "nope")
    assert result.returncode == 2 and "known profiles" in result.stderr
