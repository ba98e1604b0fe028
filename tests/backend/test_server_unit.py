"""The service's states and limits in-process (loading, failed models, time limit, full queue, a bug,
an unreachable remote reasoner), the token file, the Host rules, `serve`'s argument checks and the
remote reasoner's protocol details. The live-server tests are in test_server.py."""
from __future__ import annotations

import io
import json
import os
import socket
import stat
import threading
import time

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from georeasoner_plugin.backend import cli
from georeasoner_plugin.backend.auth import (TOKEN_FILE_ENV, TokenFileError, bearer_matches, load_or_create_token,
                                             token_file_path)
from georeasoner_plugin.backend.cascade import AskCancelled, CascadeResult
from georeasoner_plugin.backend.server import (STATE_ERROR, STATE_LOADING, STATE_READY, Service, ServiceConfig,
                                               create_app, exposure_warning, host_name, is_loopback_bind,
                                               is_loopback_name, load_cascade)
from georeasoner_plugin.core.protocol import Answer

from openai_double import OpenAIDouble  # noqa: E402 - tests/backend is on sys.path under pytest

TOKEN = "unit-test-token-0123456789"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def png(height: int = 20, width: int = 30) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def body(question: str = "where is the lake?", **options):
    return {"files": {"image": ("a.png", png(), "image/png")},
            "data": {"request": json.dumps({"question": question, "outputs": ["boxes", "points"], **options})}}


class FakeCascade:
    """Stands in for the models: answers at once, waits for should_stop, or fails like a bug would."""

    def __init__(self, behaviour: str = "answer"):
        self.behaviour = behaviour
        self.release = threading.Event()

    def run(self, image, question, *, profile=None, options=None, raw_output=None, valid=None, on_event=None,
            should_stop=None):
        on_event("stage", {"stage": "reason"})
        if self.behaviour == "block":
            while not should_stop() and not self.release.is_set():
                time.sleep(0.01)
            if should_stop():
                raise AskCancelled("stopped")
        if self.behaviour == "bug":
            raise RuntimeError("secret internals at 0xdeadbeef")
        on_event("token", {"text": "<answer>[]</answer>"})
        height, width = image.shape[:2]
        answer = Answer(question=question, profile=profile or "remotereasoner", image_width=width,
                        image_height=height, raw_output="<answer>[]</answer>", parse_status="empty")
        return CascadeResult(answer=answer)


def make_client(cascade=None, loader=None, **config_options):
    config = ServiceConfig(recorded_output="<answer>[]</answer>", **config_options)
    service = Service(config, loader=loader or (lambda cfg: (cascade, {"device": "cpu", "dtype": "float32"})))
    service.start()
    client = TestClient(create_app(service, token=TOKEN), base_url="http://127.0.0.1")
    return service, client


def wait_for_state(service: Service, state: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while service.state != state and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service.state == state, (service.state, service.detail)


def error_of(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status and error["code"] == code, error
    assert "Traceback" not in response.text
    return error


# ------------------------------------------------------------------------------ service states
def test_health_answers_while_loading_and_asks_get_503_with_retry_after():
    gate = threading.Event()

    def slow_loader(config):
        gate.wait(10)
        return FakeCascade(), {"device": "cpu", "dtype": "float32"}

    service, client = make_client(loader=slow_loader)
    with client:
        health = client.get("/v1/health").json()
        assert health["status"] == STATE_LOADING and "loading models" in health["detail"]
        assert client.get("/v1/info", headers=HEADERS).status_code == 200
        response = client.post("/v1/ask", headers=HEADERS, **body())
        error_of(response, 503, "loading")
        assert int(response.headers["Retry-After"]) >= 1
        gate.set()
        wait_for_state(service, STATE_READY)
        assert client.get("/v1/health").json()["status"] == STATE_READY
        assert client.post("/v1/ask", headers=HEADERS, **body()).status_code == 200
    service.close()


def test_models_that_fail_to_load_give_the_reason_behind_the_token_never_in_health():
    from georeasoner_plugin.backend.models import ModelLoadError

    def failing_loader(config):
        raise ModelLoadError("'/models/qwen' lacks config.json; pass the folder that holds the weights")

    service, client = make_client(loader=failing_loader)
    wait_for_state(service, STATE_ERROR)
    with client:
        health = client.get("/v1/health").json()  # no token: no path, no model name
        assert health["status"] == "error" and "/models/qwen" not in json.dumps(health)
        assert "/v1/info" in health["detail"]
        info = client.get("/v1/info", headers=HEADERS).json()
        assert info["status"] == "error" and "lacks config.json" in info["detail"]
        response = client.post("/v1/ask/stream", headers=HEADERS, **body())
        error = error_of(response, 503, "models_failed")
        assert "lacks config.json" in error["message"] and "Retry-After" not in response.headers
    service.close()


def test_the_time_limit_gives_504_plain_and_streaming():
    service, client = make_client(FakeCascade("block"), timeout_s=0.5)
    wait_for_state(service, STATE_READY)
    with client:
        started = time.monotonic()
        error = error_of(client.post("/v1/ask", headers=HEADERS, **body()), 504, "timeout")
        assert "0.5 s" in error["message"] and time.monotonic() - started < 5
        with client.stream("POST", "/v1/ask/stream", headers=HEADERS, **body()) as response:
            assert response.status_code == 200
            events = [json.loads(line) for line in response.iter_lines() if line]
        assert events[0]["event"] == "queued" and events[-1]["event"] == "error" and events[-1]["status"] == 504
        assert set(events[-1]) == {"event", "status", "message"}
    service.close()


def test_a_full_queue_answers_429_with_retry_after():
    cascade = FakeCascade("block")
    service, client = make_client(cascade, queue_size=1)
    wait_for_state(service, STATE_READY)
    results = []
    with client:
        def ask(question):
            results.append(client.post("/v1/ask", headers=HEADERS, **body(question)))

        first = threading.Thread(target=ask, args=("first",))
        first.start()
        while service._running is None:  # the first request runs (and blocks)
            time.sleep(0.01)
        second = threading.Thread(target=ask, args=("second",))
        second.start()
        while service.queue_length() < 1:  # the second waits
            time.sleep(0.01)
        response = client.post("/v1/ask", headers=HEADERS, **body("third"))
        error_of(response, 429, "queue_full")
        assert int(response.headers["Retry-After"]) >= 1
        cascade.release.set()
        first.join(10)
        second.join(10)
    assert sorted(r.json()["question"] for r in results) == ["first", "second"]
    service.close()


def test_a_bug_is_a_clean_500_and_the_worker_survives():
    cascade = FakeCascade("bug")
    service, client = make_client(cascade)
    wait_for_state(service, STATE_READY)
    with client:
        response = client.post("/v1/ask", headers=HEADERS, **body())
        error_of(response, 500, "internal_error")
        assert "secret" not in response.text and "0xdeadbeef" not in response.text
        cascade.behaviour = "answer"
        assert client.post("/v1/ask", headers=HEADERS, **body()).status_code == 200
    service.close()


def test_an_unreachable_remote_reasoner_gives_502():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = ServiceConfig(reasoner_url=f"http://127.0.0.1:{port}/v1", reasoner_model="qwen")
    service = Service(config, loader=load_cascade)
    service.start()
    wait_for_state(service, STATE_READY)
    with TestClient(create_app(service, token=TOKEN), base_url="http://127.0.0.1") as client:
        info = client.get("/v1/info", headers=HEADERS).json()
        assert info["models"] == {"reasoner": f"qwen at http://127.0.0.1:{port}/v1", "segmenter": None}
        error = error_of(client.post("/v1/ask", headers=HEADERS, **body()), 502, "reasoner_unavailable")
        assert f"127.0.0.1:{port}" in error["message"]
        # Masks need SAM2, which this server does not have: a clear 422, not a failure.
        response = client.post("/v1/ask", headers=HEADERS, files=body()["files"],
                               data={"request": json.dumps({"question": "q", "outputs": ["masks"]})})
        assert response.status_code in (422, 502), response.text
    service.close()


# --------------------------------------------------------------------------------- the token
def test_token_file_is_created_private_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(TOKEN_FILE_ENV, raising=False)
    path = token_file_path()
    assert path == tmp_path / "config" / "georeasoner" / "token"
    token = load_or_create_token(path)
    assert len(token) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_or_create_token(path) == token

    os.chmod(path, 0o644)
    assert load_or_create_token(path) == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    monkeypatch.setenv(TOKEN_FILE_ENV, str(tmp_path / "env-token"))
    assert token_file_path() == tmp_path / "env-token"
    assert token_file_path(str(tmp_path / "flag-token")) == tmp_path / "flag-token"

    path.write_text("short\n")
    with pytest.raises(TokenFileError, match="delete it"):
        load_or_create_token(path)


def test_bearer_comparison():
    assert bearer_matches(f"Bearer {TOKEN}", TOKEN) and bearer_matches(f"bearer  {TOKEN} ", TOKEN)
    for header in (None, "", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer", "Bearer é"):
        assert not bearer_matches(header, TOKEN), header


def test_host_rules():
    assert host_name("127.0.0.1:8765") == "127.0.0.1" and host_name("[::1]:80") == "::1"
    assert host_name("LocalHost.") == "localhost" and host_name(None) == ""
    for name in ("localhost", "127.0.0.1", "127.8.9.1", "::1"):
        assert is_loopback_name(name), name
    for name in ("", "localhost.evil.example", "evil.example", "10.0.0.1", "0.0.0.0", "::"):
        assert not is_loopback_name(name), name
    assert is_loopback_bind("127.0.0.1") and is_loopback_bind("localhost") and is_loopback_bind("::1")
    assert not is_loopback_bind("0.0.0.0") and not is_loopback_bind("::")
    assert exposure_warning("127.0.0.1") is None and "reachable from other machines" in exposure_warning("0.0.0.0")


def test_a_server_bound_elsewhere_accepts_any_host_but_still_wants_the_token():
    service, _ = make_client(FakeCascade())
    wait_for_state(service, STATE_READY)
    with TestClient(create_app(service, token=TOKEN, loopback_only=False), base_url="http://gpu.example") as client:
        assert client.get("/v1/health").status_code == 200
        error_of(client.get("/v1/info"), 401, "unauthorized")
        assert client.get("/v1/info", headers=HEADERS).status_code == 200
    service.close()


# ------------------------------------------------------------------------------- serve's CLI
@pytest.mark.parametrize("args", [
    ["serve", "--reasoner-url", "http://127.0.0.1:9/v1"],
    ["serve", "--reasoner-model", "m"],
    ["serve", "--reasoner-url", "ftp://example/v1", "--reasoner-model", "m"],
    ["serve", "--reasoner-output", "RECORDED", "--reasoner", "some/model"],
    ["serve", "--reasoner-url", "http://127.0.0.1:9/v1", "--reasoner-model", "m", "--adapter", "lora"],
    ["serve", "--profile", "no-such-profile"],
    ["serve", "--profile", "georeasoner"],  # no published checkpoint and no --reasoner
    ["serve", "--queue-size", "0", "--reasoner-output", "RECORDED"],
    ["serve", "--timeout", "-1", "--reasoner-output", "RECORDED"],
    ["serve", "--port", "70000", "--reasoner-output", "RECORDED"],
])
def test_serve_refuses_settings_that_cannot_work(args, tmp_path, capsys):
    recorded = tmp_path / "answer.txt"
    recorded.write_text("<answer>[]</answer>")
    args = [str(recorded) if a == "RECORDED" else a for a in args]
    code = cli.main(args + ["--token-file", str(tmp_path / "token")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE, err
    assert "georeasoner: error:" in err and "Traceback" not in err


# ------------------------------------------------------------------------ the remote reasoner
def test_remote_reasoner_details(tiny_reasoner):
    from georeasoner_plugin.backend.reasoning import FrameMismatchError, ReasonerProtocol
    from georeasoner_plugin.backend.remote_reasoner import RemoteReasoner, RemoteReasonerError, chat_completions_url

    assert chat_completions_url("http://gpu:8000/v1/") == "http://gpu:8000/v1/chat/completions"
    assert chat_completions_url("http://gpu:8000/v1/chat/completions") == "http://gpu:8000/v1/chat/completions"
    with pytest.raises(ValueError):
        chat_completions_url("gpu:8000")

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is the lake?"}]}]
    frame = Image.new("RGB", (56, 84), (40, 90, 160))
    with OpenAIDouble(tiny_reasoner, api_key="endpoint-key", token_delay_s=0.02) as double:
        reasoner = RemoteReasoner(double.url, double.model_name, api_key="endpoint-key")
        assert reasoner.list_models() == [double.model_name]
        # Both reasoners are what the cascade asks for, and refuse an image off the frame alike.
        assert isinstance(reasoner, ReasonerProtocol) and isinstance(tiny_reasoner, ReasonerProtocol)
        with pytest.raises(FrameMismatchError, match="not a model frame"):
            tiny_reasoner.generate(Image.new("RGB", (50, 84)), messages)
        with pytest.raises(FrameMismatchError):
            reasoner.generate(Image.new("RGB", (50, 84)), messages)

        pieces = []
        stop_after = 3
        text = reasoner.generate(frame, messages, max_new_tokens=400, on_token=pieces.append,
                                 should_stop=lambda: len(pieces) >= stop_after)
        assert len(pieces) == stop_after and text == "".join(pieces) and reasoner.last_timings["cancelled"]
        deadline = time.monotonic() + 10
        while double.cancelled == 0 and time.monotonic() < deadline:  # the server stopped generating too
            time.sleep(0.05)
        assert double.cancelled == 1

        stopped = threading.Event()
        threading.Timer(0.3, stopped.set).start()
        started = time.monotonic()
        reasoner.generate(frame, messages, max_new_tokens=400, should_stop=stopped.is_set)
        assert time.monotonic() - started < 5

        with pytest.raises(RemoteReasonerError, match="HTTP 401.*GEOREASONER_REASONER_API_KEY"):
            RemoteReasoner(double.url, double.model_name).generate(frame, messages, max_new_tokens=4)
        with pytest.raises(RemoteReasonerError, match="HTTP 404.*--reasoner-model"):
            RemoteReasoner(double.url, "other-model", api_key="endpoint-key").generate(frame, messages,
                                                                                        max_new_tokens=4)
        reasoner.close()


def test_a_lossless_webp_upload_is_decoded_and_info_lists_the_formats():
    service, client = make_client(FakeCascade())
    wait_for_state(service, STATE_READY)
    pixels = np.random.default_rng(3).integers(0, 255, (24, 40, 3), dtype=np.uint8)
    webp = io.BytesIO()
    Image.fromarray(pixels).save(webp, format="WEBP", lossless=True)
    with client:
        info = client.get("/v1/info", headers=HEADERS).json()
        assert set(info["image_formats"]) >= {"png", "jpeg", "tiff", "webp"}
        answer = client.post("/v1/ask", headers=HEADERS, files={"image": ("a.webp", webp.getvalue(), "image/webp")},
                             data={"request": json.dumps({"question": "lake?", "outputs": ["boxes"]})})
        assert answer.status_code == 200, answer.text
        assert (answer.json()["image"]["width"], answer.json()["image"]["height"]) == (40, 24)
        refused = client.post("/v1/ask", headers=HEADERS, files={"image": ("a.gif", b"GIF89a" + bytes(20), "image/gif")},
                              data={"request": json.dumps({"question": "lake?"})})
        message = error_of(refused, 415, "unsupported_image_type")["message"]
        assert message.startswith("The image is not PNG, JPEG, TIFF or WebP")
    service.close()


def test_a_shared_capture_is_read_by_path_only_inside_the_shared_folder(tmp_path):
    """core/transport.py's "path" transport: the request names a file in --shared-capture-dir."""
    shared, outside = tmp_path / "captures", tmp_path / "elsewhere"
    shared.mkdir()
    outside.mkdir()
    pixels = np.random.default_rng(5).integers(0, 255, (20, 36, 3), dtype=np.uint8)
    for folder in (shared, outside):
        Image.fromarray(pixels).save(folder / "capture.tif", format="TIFF")
    (shared / "escape.tif").symlink_to(outside / "capture.tif")

    def ask(client, image_path, image=None):
        files = {"request": (None, json.dumps({"question": "lake?", "outputs": ["boxes"], "image_path": image_path}))}
        if image is not None:
            files["image"] = ("a.tif", image, "image/tiff")
        return client.post("/v1/ask", headers=HEADERS, files=files)

    service, client = make_client(FakeCascade(), shared_capture_dir=str(shared))
    wait_for_state(service, STATE_READY)
    with client:
        info = client.get("/v1/info", headers=HEADERS).json()
        assert info["shared_capture_dir"] == str(shared.resolve())
        good = ask(client, str(shared / "capture.tif"))
        assert good.status_code == 200, good.text
        assert (good.json()["image"]["width"], good.json()["image"]["height"]) == (36, 20)
        for path in (str(outside / "capture.tif"), str(shared / ".." / "elsewhere" / "capture.tif"),
                     str(shared / "escape.tif")):
            assert "not in the shared capture folder" in error_of(ask(client, path), 400, "bad_image_path")["message"]
        assert "no such capture" in error_of(ask(client, str(shared / "gone.tif")), 400, "bad_image_path")["message"]
        both = ask(client, str(shared / "capture.tif"), image=(shared / "capture.tif").read_bytes())
        assert "not both" in error_of(both, 422, "malformed_form")["message"]
    service.close()
    service, client = make_client(FakeCascade())  # no shared folder: the path transport is refused
    wait_for_state(service, STATE_READY)
    with client:
        assert not client.get("/v1/info", headers=HEADERS).json().get("shared_capture_dir")
        error = error_of(ask(client, str(shared / "capture.tif")), 422, "no_shared_capture_dir")
        assert "--shared-capture-dir" in error["message"]
        missing = client.post("/v1/ask", headers=HEADERS,
                              files={"request": (None, json.dumps({"question": "lake?"}))})
        assert "exactly one part named 'image'" in error_of(missing, 422, "malformed_form")["message"]
    service.close()
    with pytest.raises(ValueError, match="is not a folder"):
        ServiceConfig(recorded_output="x", shared_capture_dir=str(tmp_path / "nope")).validate()
