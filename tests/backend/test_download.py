"""Downloads through huggingface_hub against a stand-in hub on 127.0.0.1 (HF_ENDPOINT points at it).

Progress events, a transfer cut in the middle and resumed with an HTTP Range request, a download
cancelled (SIGTERM, as the plugin does) and resumed by the next run, a corrupt file detected and
removed, a gated repository, and HF_HUB_OFFLINE.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from georeasoner_plugin.backend import doctor
from tests.hub_standin import StandInHub

ROOT = Path(__file__).resolve().parents[2]
REPO = "acme/weights-24mb"
CHUNK = 10 * 1024 * 1024  # huggingface_hub writes the body in chunks of this size


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A model folder with a 24 MB safetensors file (fake weights: larger than one download chunk)."""
    folder = tmp_path_factory.mktemp("weights")
    rng = np.random.default_rng(0)
    save_file({"w": rng.standard_normal(6_000_000).astype(np.float32)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "stand-in"}))
    (folder / "pytorch_model.bin").write_bytes(b"pickle: never downloaded")
    return folder


@pytest.fixture
def hub(model_dir):
    server = StandInHub({REPO: model_dir}).start()
    yield server
    server.stop()


@pytest.fixture
def env(hub, tmp_path):
    e = dict(os.environ, HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(tmp_path / "cache"), HF_HUB_DISABLE_TELEMETRY="1",
             HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_ETAG_TIMEOUT="5", HF_HUB_DOWNLOAD_TIMEOUT="5")
    e.pop("HF_HUB_OFFLINE", None)
    e.pop("HF_TOKEN", None)
    return e


def command(repo=REPO):
    return [sys.executable, "-m", "georeasoner_plugin.backend.cli", "download", repo, "--progress-json"]


def run(env, repo=REPO):
    result = subprocess.run(command(repo), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.returncode, events, result.stderr


def weight_gets(hub):
    return [r for r in hub.requests if r["method"] == "GET" and r["path"].endswith("/model.safetensors")]


def test_progress_events_and_the_files_land_in_the_cache(hub, env, model_dir):
    code, events, err = run(env)
    assert code == 0, err
    kinds = [e["event"] for e in events]
    assert kinds[0] == "plan" and kinds[-1] == "done" and "verify" in kinds
    plan = events[0]
    size = (model_dir / "model.safetensors").stat().st_size + (model_dir / "config.json").stat().st_size
    assert plan["total_bytes"] == plan["to_download_bytes"] == size and plan["files"] == 2  # no .bin
    progress = [e["downloaded_bytes"] for e in events if e["event"] == "progress"]
    assert progress == sorted(progress) and progress[-1] == size
    folder = Path(events[-1]["path"])
    assert (folder / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()
    assert not (folder / "pytorch_model.bin").exists()
    # doctor now finds it in the hub cache
    entry = doctor.model_entry(REPO, "reasoner", Path(env["HF_HUB_CACHE"]), True, None)
    assert entry["present"] and entry["path"] == str(folder)


def test_a_transfer_cut_in_the_middle_resumes_with_a_range_request(hub, env, model_dir):
    hub.cut_after["model.safetensors"] = 15 * 1024 * 1024
    code, events, err = run(env)
    assert code == 0, err
    gets = weight_gets(hub)
    assert len(gets) == 2 and gets[0]["range"] is None
    assert gets[1]["range"] == f"bytes={CHUNK}-"  # what reached the disk before the cut is kept
    folder = Path(events[-1]["path"])
    assert (folder / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()


def test_cancel_then_the_next_run_resumes(hub, env, model_dir):
    hub.throttle_bps = 6 * 1024 * 1024
    process = subprocess.Popen(command(), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    events = []
    for line in process.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "progress" and events[-1]["downloaded_bytes"] > CHUNK + 2 * 1024 * 1024:
            process.send_signal(signal.SIGTERM)
            break
    rest = process.stdout.read()
    assert process.wait(30) == 130
    assert json.loads(rest.strip().splitlines()[-1]) == {"event": "cancelled"}
    partial = list(Path(env["HF_HUB_CACHE"]).rglob("*.incomplete"))
    assert len(partial) == 1 and partial[0].stat().st_size >= CHUNK
    kept = partial[0].stat().st_size

    hub.throttle_bps = None
    code, events, err = run(env)
    assert code == 0, err
    assert [e["event"] for e in events][-1] == "done"
    assert events[1]["event"] == "progress" and events[1]["downloaded_bytes"] >= kept  # counted from the start
    assert weight_gets(hub)[-1]["range"] == f"bytes={kept}-"
    folder = Path(events[-1]["path"])
    assert (folder / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()


def test_a_corrupt_file_is_detected_removed_and_fetched_again(hub, env, model_dir):
    hub.corrupt.add("model.safetensors")
    code, events, err = run(env)
    assert code == 1
    error = events[-1]
    assert error["event"] == "error" and error["code"] == "corrupt"
    assert "model.safetensors" in error["message"] and "again" in error["message"]
    assert not list(Path(env["HF_HUB_CACHE"]).rglob("blobs/*"))  or all(
        p.stat().st_size < 1000 for p in Path(env["HF_HUB_CACHE"]).rglob("blobs/*"))
    hub.corrupt.clear()
    code, events, err = run(env)
    assert code == 0, err
    folder = Path(events[-1]["path"])
    assert (folder / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()


def test_a_gated_repository_says_how_to_get_access(hub, env):
    hub.gated.add(REPO)
    code, events, _ = run(env)
    assert code == 1
    assert events[-1]["event"] == "error" and events[-1]["code"] == "gated"
    assert "accept the licence" in events[-1]["message"] and "token" in events[-1]["message"]


def test_offline_mode_is_respected(hub, env):
    offline = dict(env, HF_HUB_OFFLINE="1")
    code, events, _ = run(offline)
    assert code == 1 and events[-1]["code"] == "offline" and "local folder" in events[-1]["message"]
    assert hub.requests == []  # nothing went to the network
    assert run(env)[0] == 0
    before = len(hub.requests)
    code, events, _ = run(offline)
    assert code == 0 and events[-1]["event"] == "done"
    assert len(hub.requests) == before
