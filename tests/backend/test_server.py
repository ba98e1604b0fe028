"""The HTTP backend as a user's QGIS starts it: `python -m georeasoner_plugin.backend.cli serve` on
127.0.0.1 port 0, tiny real models, a real token file, real sockets.

Three servers run for the whole module: `live` (tiny Qwen2.5-VL + tiny SAM2 in-process), `replay`
(the recorded NAIP answer through the real parser + tiny SAM2; small body/pixel limits) and `remote`
(the reasoning step on an OpenAI-compatible test double of vLLM serving the tiny model).
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from georeasoner_plugin.core import api
from georeasoner_plugin.core.protocol import Answer

from openai_double import OpenAIDouble  # noqa: E402 - tests/backend is on sys.path under pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
NAIP = DATA / "naip_nd_2020.tif"
RECORDED = ROOT / "examples" / "naip_lakes_remotereasoner.txt"
REPLAY_MAX_BODY = 2_000_000
REPLAY_MAX_PIXELS = 4_000_000

needs_data = pytest.mark.skipif(not NAIP.exists(), reason=f"sample imagery not found at {DATA} (../shared/data)")


# ------------------------------------------------------------------------------------ harness
class ServerProcess:
    """One `georeasoner serve` subprocess; its log (stderr) goes to a file the tests can read."""

    def __init__(self, name: str, args, workdir: Path):
        self.name = name
        self.token_file = workdir / f"{name}-token"
        self.log_path = workdir / f"{name}.log"
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
        env.pop("GEOREASONER_TOKEN_FILE", None)
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "georeasoner_plugin.backend.cli", "serve", "--host", "127.0.0.1", "--port", "0",
             "--token-file", str(self.token_file), *[str(a) for a in args]],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=self._log, text=True)
        self.stdout_lines = []
        self.url = None

    def wait_listening(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"{self.name} server exited ({self.process.poll()}):\n{self.log()}")
            self.stdout_lines.append(line)
            url = api.parse_listening_line(line)
            if url:
                self.url = url
                return
        raise AssertionError(f"{self.name} server did not print its URL in {timeout} s:\n{self.log()}")

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:  # loading holds the GIL for long stretches; on a loaded 2-core machine health can take seconds
                status = httpx.get(f"{self.url}{api.HEALTH_PATH}", timeout=30).json()
            except httpx.TimeoutException:
                continue
            if status["status"] == "ready":
                return
            assert status["status"] == "loading", status
            time.sleep(0.1)
        raise AssertionError(f"{self.name} server not ready in {timeout} s:\n{self.log()}")

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    @property
    def headers(self):
        return {"Authorization": f"Bearer {self.token}"}

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def assert_alive(self) -> None:
        assert self.process.poll() is None, f"{self.name} server died:\n{self.log()}"
        health = httpx.get(f"{self.url}{api.HEALTH_PATH}", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ready", health.text

    def interrupt(self) -> None:
        """Ctrl+C, as a user stops it (the servers of a module are interrupted together, then waited for)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.interrupt()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process.stdout.close()
        self._log.close()


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def synthetic(height: int, width: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)


def multipart(image: bytes, request, filename: str = "capture.png", mime: str = "image/png"):
    """httpx arguments for the body the QGIS plugin sends: file part `image`, JSON part `request`."""
    text = request if isinstance(request, str) else json.dumps(request)
    return {"files": {"image": (filename, image, mime)}, "data": {"request": text}}


def ask(server: ServerProcess, image: bytes, request, timeout: float = 120, filename: str = "capture.png",
        mime: str = "image/png") -> httpx.Response:
    return httpx.post(f"{server.url}{api.ASK_PATH}", headers=server.headers, timeout=timeout,
                      **multipart(image, request, filename, mime))


def ask_stream(server: ServerProcess, image: bytes, request, timeout: float = 120):
    """(status, headers, [events]) of one streaming request read to its end."""
    with httpx.stream("POST", f"{server.url}{api.ASK_STREAM_PATH}", headers=server.headers, timeout=timeout,
                      **multipart(image, request)) as response:
        if response.status_code != 200:
            response.read()
            return response.status_code, response.headers, [response.json()]
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return 200, response.headers, [json.loads(line) for line in response.iter_lines() if line]


def assert_error(response: httpx.Response, status: int, code: str = None) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"status", "code", "message"}, body
    assert body["error"]["status"] == status
    if code is not None:
        assert body["error"]["code"] == code, body
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body["error"]


def check_stream_shape(events) -> dict:
    """Events follow the contract: queued first, exactly one final event, last. Returns the final one."""
    assert events and events[0] == {"event": api.EVENT_QUEUED, "position": events[0]["position"]}
    finals = [e for e in events if e["event"] in api.FINAL_EVENTS]
    assert len(finals) == 1 and events[-1] is finals[0], [e["event"] for e in events]
    for event in events[:-1]:
        assert event["event"] in ("queued", "stage", "token"), event
        expected = {"queued": {"event", "position"}, "stage": {"event", "stage"}, "token": {"event", "text"}}
        assert set(event) == expected[event["event"]], event
    positions = [e["position"] for e in events if e["event"] == "queued"]
    assert positions == sorted(positions, reverse=True), positions
    return finals[0]


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def naip_png():
    if not NAIP.exists():
        pytest.skip(f"sample imagery not found at {DATA} (../shared/data)")
    from georeasoner_plugin.backend.imagery import read_raster

    raster = read_raster(NAIP)
    return {"full": raster.rgb, "full_png": png_bytes(raster.rgb),
            "crop_png": png_bytes(np.ascontiguousarray(raster.rgb[200:424, 300:524]))}


@pytest.fixture(scope="module")
def double(tiny_reasoner):
    with OpenAIDouble(tiny_reasoner) as served:
        yield served


@pytest.fixture(scope="module")
def servers(request, tmp_path_factory, tiny_models):
    workdir = tmp_path_factory.mktemp("servers")
    reasoner, segmenter = tiny_models["reasoner"], tiny_models["segmenter"]
    started = {}
    try:
        started["live"] = ServerProcess("live", ["--reasoner", reasoner, "--segmenter", segmenter, "--device", "cpu",
                                                 "--queue-size", "4", "--timeout", "90"], workdir)
        started["replay"] = ServerProcess("replay", [
            "--reasoner-output", RECORDED, "--segmenter", segmenter, "--device", "cpu", "--max-body-bytes",
            REPLAY_MAX_BODY, "--max-image-pixels", REPLAY_MAX_PIXELS, "--queue-size", "8"], workdir)
        double = request.getfixturevalue("double")  # loads the tiny model here while the servers start
        started["remote"] = ServerProcess("remote", ["--reasoner-url", double.url, "--reasoner-model",
                                                     double.model_name, "--segmenter", segmenter, "--device", "cpu",
                                                     "--no-shared-capture-dir"],
                                          workdir)
        for server in started.values():
            server.wait_listening()
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.interrupt()
        for server in started.values():
            server.stop()
    for server in started.values():  # after the whole module: the token never reached a log
        log = server.log()
        assert server.token not in log and server.token not in "".join(server.stdout_lines), server.name
        assert "Traceback" not in log, f"{server.name} logged a traceback:\n{log}"


@pytest.fixture(scope="module")
def live(servers):
    return servers["live"]


@pytest.fixture(scope="module")
def replay(servers):
    return servers["replay"]


@pytest.fixture(scope="module")
def remote(servers):
    return servers["remote"]


# ---------------------------------------------------------------- 1. round trips on real imagery
def test_start_prints_url_and_token_path_never_the_token(live):
    out = "".join(live.stdout_lines)
    assert live.url.startswith("http://127.0.0.1:") and not live.url.endswith(":0")
    assert str(live.token_file) in out and live.token not in out
    assert oct(live.token_file.stat().st_mode & 0o777) == "0o600"


def test_health_info_and_openapi(live, replay, servers):
    health = httpx.get(f"{live.url}/v1/health").json()
    assert set(health) == {"status", "detail", "version"} and health["status"] == "ready"
    info = httpx.get(f"{live.url}/v1/info", headers=live.headers).json()
    assert set(info) == {"version", "protocol_version", "models", "profiles", "default_profile", "device", "dtype",
                         "replay", "status", "detail", "image_formats", "shared_capture_dir", "limits"}
    assert info["status"] == "ready"
    # on loopback, without --shared-capture-dir: a private 'captures' folder beside the token file
    shared = Path(info["shared_capture_dir"])
    assert shared == (live.token_file.parent / "captures").resolve() and shared.is_dir()
    assert oct(shared.stat().st_mode & 0o777) == "0o700"
    assert info["protocol_version"] == 1 and info["replay"] is False and info["device"] == "cpu"
    assert info["dtype"] == "float32" and info["default_profile"] == "remotereasoner"
    assert set(info["models"]) == {"reasoner", "segmenter"} and info["models"]["reasoner"]
    assert {"name", "title", "frame"} == set(info["profiles"][0])
    assert set(info["limits"]) == {"max_body_bytes", "max_image_pixels", "max_question_chars", "max_objects",
                                   "queue_size", "request_timeout_s", "image_memory_bytes", "max_decodes",
                                   "header_timeout_s", "body_timeout_s", "keep_alive_s", "max_connections",
                                   "shutdown_grace_s"}
    assert info["limits"]["queue_size"] == 4 and info["limits"]["request_timeout_s"] == 90
    remote_info = httpx.get(f"{servers['remote'].url}/v1/info", headers=servers["remote"].headers).json()
    assert remote_info["shared_capture_dir"] is None  # --no-shared-capture-dir
    replay_info = httpx.get(f"{replay.url}/v1/info", headers=replay.headers).json()
    assert replay_info["replay"] is True and replay_info["models"]["reasoner"] is None
    assert replay_info["limits"]["max_body_bytes"] == REPLAY_MAX_BODY

    schema = httpx.get(f"{live.url}/openapi.json").json()
    for path in ("/v1/health", "/v1/info", "/v1/ask", "/v1/ask/stream"):
        assert path in schema["paths"], path
    body = schema["paths"]["/v1/ask"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert body["schema"]["required"] == ["request"]  # the image part, or image_path (shared capture)
    assert body["encoding"]["request"]["contentType"] == "application/json"
    fields = schema["components"]["schemas"]["AskRequest"]["properties"]
    assert set(fields) == {"question", "profile", "outputs", "max_new_tokens", "temperature", "top_p", "seed",
                           "simplify_tolerance", "min_area", "image_path"}
    assert schema["paths"]["/v1/ask"]["post"]["security"] == [{"bearer": []}]
    assert "application/x-ndjson" in schema["paths"]["/v1/ask/stream"]["post"]["responses"]["200"]["content"]


@needs_data
def test_ask_round_trip_on_a_geotiff_png_matches_the_in_process_cascade(replay, naip_png, tiny_segmenter):
    from georeasoner_plugin.backend.cascade import Cascade

    response = ask(replay, naip_png["full_png"], {"question": "Which lakes could supply irrigation water?"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    answer = Answer.from_dict(response.json())
    height, width = naip_png["full"].shape[:2]
    assert (answer.image_width, answer.image_height) == (width, height)
    assert answer.parse_status == "ok" and len(answer.objects) == 4
    assert "north-east corner" in answer.reasoning
    assert all(o.box and o.points and o.polygons and o.mask for o in answer.objects)

    expected = Cascade(segmenter=tiny_segmenter).run(naip_png["full"], "Which lakes could supply irrigation water?",
                                                     raw_output=RECORDED.read_text()).answer
    assert [o.box for o in answer.objects] == [tuple(o.box) for o in expected.objects] or \
        [list(o.box) for o in answer.objects] == [list(o.box) for o in expected.objects]
    assert [o.mask.to_dict() for o in answer.objects] == [o.mask.to_dict() for o in expected.objects]


@needs_data
def test_stream_round_trip_on_a_geotiff_png(replay, naip_png):
    status, headers, events = ask_stream(replay, naip_png["full_png"], {"question": "Which lakes?"})
    assert status == 200
    final = check_stream_shape(events)
    assert final["event"] == "answer", final
    answer = final["answer"]
    streamed = "".join(e["text"] for e in events if e["event"] == "token")
    assert streamed == answer["raw_output"] == RECORDED.read_text()
    assert answer["reasoning"] and answer["reasoning"] in streamed
    assert streamed.split("<think>")[1].split("</think>")[0].strip() == answer["reasoning"].strip()
    stages = [e["stage"] for e in events if e["event"] == "stage"]
    assert stages == ["reason", "parse", "segment", "vectorize", "done"]
    assert len(answer["objects"]) == 4


@needs_data
def test_tiny_model_streams_the_text_it_answers(live, naip_png):
    request = {"question": "Which lakes could supply irrigation water?", "max_new_tokens": 48, "seed": 3}
    status, _, events = ask_stream(live, naip_png["crop_png"], request)
    assert status == 200
    final = check_stream_shape(events)
    assert final["event"] == "answer", final
    tokens = [e["text"] for e in events if e["event"] == "token"]
    assert len(tokens) > 1 and "".join(tokens) == final["answer"]["raw_output"]
    assert final["answer"]["reasoning"] in "".join(tokens)
    stages = [e["stage"] for e in events if e["event"] == "stage"]
    assert stages[:2] == ["preprocess", "reason"] and stages[-1] == "done"
    # The same request without streaming gives the same (greedy) answer.
    plain = ask(live, naip_png["crop_png"], request)
    assert plain.status_code == 200 and plain.json()["raw_output"] == final["answer"]["raw_output"]
    assert (plain.json()["image"]["width"], plain.json()["image"]["height"]) == (224, 224)


def test_boxes_only_jpeg_and_tiff_are_accepted(replay):
    image = synthetic(96, 128, seed=5)
    for fmt, mime in (("JPEG", "image/jpeg"), ("TIFF", "image/tiff")):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format=fmt)
        response = ask(replay, buffer.getvalue(), {"question": "lakes", "outputs": ["boxes", "points"]},
                       timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["image"] == {"width": 128, "height": 96}
        assert response.json()["granularities"] == ["boxes", "points"]


# ------------------------------------------------------------------------- 2. refusals and limits
def test_missing_or_wrong_token_is_401(live):
    image = png_bytes(synthetic(32, 32))
    for headers in ({}, {"Authorization": "Bearer not-the-token"}, {"Authorization": f"Basic {live.token}"},
                    {"Authorization": live.token}):
        for method, path in (("GET", "/v1/info"), ("POST", "/v1/ask"), ("POST", "/v1/ask/stream")):
            kwargs = multipart(image, {"question": "q"}) if method == "POST" else {}
            response = httpx.request(method, f"{live.url}{path}", headers=headers, timeout=10, **kwargs)
            assert_error(response, 401, "unauthorized")
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert httpx.get(f"{live.url}/v1/health").status_code == 200  # health needs no token
    live.assert_alive()


def test_foreign_host_is_refused(live):
    for host in ("evil.example", "evil.example:80", "192.168.1.10", "localhost.evil.example", ""):
        for path in ("/v1/health", "/v1/info"):
            response = httpx.get(f"{live.url}{path}", headers={**live.headers, "Host": host}, timeout=10)
            assert_error(response, 403, "foreign_host")
    port = live.url.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", "localhost", f"127.0.0.1:{port}", f"[::1]:{port}"):
        response = httpx.get(f"{live.url}/v1/info", headers={**live.headers, "Host": host}, timeout=10)
        assert response.status_code == 200, (host, response.text)
    assert "access-control-allow-origin" not in {k.lower() for k in response.headers}


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny, valid-looking PNG whose header claims a huge image (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
            + chunk(b"IEND", b""))


def test_documented_status_codes_and_the_server_survives(replay):
    small = png_bytes(synthetic(64, 64, seed=1))
    ok = {"question": "Which lakes?", "outputs": ["boxes"]}
    noise = np.random.default_rng(2).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    too_big = png_bytes(noise)  # ~3 MB of incompressible pixels > the 2 MB limit
    assert len(too_big) > REPLAY_MAX_BODY

    assert_error(ask(replay, too_big, ok), 413, "body_too_large")

    def chunked():  # no Content-Length: the limit must hold while the body streams in
        boundary = b"----georeasoner"
        yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="request"\r\n\r\n' + json.dumps(ok).encode()
        yield b"\r\n--" + boundary + b'\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        yield b"Content-Type: image/png\r\n\r\n"
        for start in range(0, len(too_big), 65536):
            yield too_big[start:start + 65536]
        yield b"\r\n--" + boundary + b"--\r\n"

    response = httpx.post(f"{replay.url}/v1/ask", headers={**replay.headers,
                          "Content-Type": "multipart/form-data; boundary=----georeasoner"}, content=chunked(), timeout=30)
    assert_error(response, 413, "body_too_large")

    assert_error(ask(replay, bomb_png(), ok), 413, "image_too_large")
    assert_error(ask(replay, png_bytes(np.zeros((2100, 2000, 3), np.uint8)), ok), 413, "image_too_large")  # 4.2 M > 4 M pixels
    assert_error(ask(replay, small[: len(small) // 2], ok), 400, "corrupt_image")
    assert_error(ask(replay, b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, ok), 400, "corrupt_image")
    assert_error(ask(replay, b"", ok), 400, "corrupt_image")
    gif = io.BytesIO()
    Image.fromarray(synthetic(16, 16)).save(gif, format="GIF")
    assert_error(ask(replay, gif.getvalue(), ok, filename="a.gif", mime="image/gif"), 415, "unsupported_image_type")
    assert_error(ask(replay, b"%PDF-1.4 not an image", ok), 415, "unsupported_image_type")
    response = httpx.post(f"{replay.url}/v1/ask", headers=replay.headers, json=ok, timeout=10)
    assert_error(response, 415, "unsupported_media_type")

    cases = [
        ({"question": "x" * 5000}, "question_too_long"),
        ({"question": "   "}, "empty_question"),
        ({}, "missing_question"),
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ({"question": "q", "profile": "no-such-profile"}, "unknown_profile"),
        ({"question": "q", "outputs": ["boxes", "polygons"]}, "invalid_field"),
        ({"question": "q", "outputs": []}, "invalid_field"),
        ({"question": "q", "max_new_tokens": 0}, "invalid_field"),
        ({"question": "q", "max_new_tokens": 100000}, "invalid_field"),
        ({"question": "q", "temperature": -1}, "invalid_field"),
        ({"question": "q", "top_p": 0}, "invalid_field"),
        ({"question": "q", "seed": -5}, "invalid_field"),
        ({"question": "q", "simplify_tolerance": -0.5}, "invalid_field"),
        ({"question": "q", "max_new_tokens": "12"}, "invalid_field"),
        ({"question": 42}, "invalid_field"),
        ({"question": "q", "max_tokens": 12}, "invalid_field"),
    ]
    for request, code in cases:
        error = assert_error(ask(replay, small, request), 422, code)
        assert error["message"][0].isupper() or error["message"][0] == "'", error
    huge_question = ask(replay, small, {"question": "y" * 1_500_000})  # larger than the JSON part may be
    assert_error(huge_question, 422, "malformed_form")
    response = httpx.post(f"{replay.url}/v1/ask", headers=replay.headers, timeout=10,
                          files={"request": (None, json.dumps(ok))})
    assert_error(response, 422, "malformed_form")  # no image part
    response = httpx.post(f"{replay.url}/v1/ask", headers=replay.headers, timeout=10,
                          files={"request": (None, json.dumps(ok)), "image": (None, "not a file")})
    assert_error(response, 422, "malformed_form")  # the image as a text field
    response = httpx.post(f"{replay.url}/v1/ask", headers=replay.headers, timeout=10,
                          files={"image": ("a.png", small, "image/png")})
    assert_error(response, 422, "malformed_form")  # no request part
    assert_error(httpx.get(f"{replay.url}/v1/nothing", headers=replay.headers), 404, "not_found")
    assert_error(httpx.get(f"{replay.url}/v1/ask", headers=replay.headers), 405, "method_not_allowed")

    replay.assert_alive()
    answered = ask(replay, small, ok, timeout=30)
    assert answered.status_code == 200 and answered.json()["question"] == "Which lakes?"


# --------------------------------------------------------------------------------- 3. the fuzz
_FIELD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=False),
                          st.text(max_size=30), st.lists(st.sampled_from(["boxes", "points", "masks", "contours",
                                                                          "lines", ""]), max_size=5))
_REQUEST_OBJECTS = st.fixed_dictionaries(
    {"question": st.one_of(st.text(min_size=0, max_size=60), st.integers(), st.none(), st.just("q" * 2100))},
    optional={
        "profile": st.one_of(st.none(), st.sampled_from(["remotereasoner", "segzero", "think2seg", "qwen", "grasp",
                                                         "georeasoner", "nope", ""])),
        "outputs": st.one_of(st.lists(st.sampled_from(["boxes", "points", "masks", "contours"]), max_size=4),
                             _FIELD_VALUES),
        "max_new_tokens": st.one_of(st.integers(-5, 9000), _FIELD_VALUES),
        "temperature": st.one_of(st.floats(-1, 3, allow_nan=False), _FIELD_VALUES),
        "top_p": st.one_of(st.floats(-0.5, 1.5, allow_nan=False), _FIELD_VALUES),
        "seed": st.one_of(st.integers(-2**64, 2**64), _FIELD_VALUES),
        "simplify_tolerance": st.one_of(st.floats(-1, 1e7, allow_nan=False), _FIELD_VALUES),
        "min_area": st.one_of(st.floats(-1, 1e13, allow_nan=False), _FIELD_VALUES),
        "unexpected": _FIELD_VALUES,
    })
_VALID_REQUESTS = st.fixed_dictionaries(
    {"question": st.text(min_size=1, max_size=40).filter(lambda q: q.strip())},
    optional={"outputs": st.lists(st.sampled_from(["boxes", "points", "masks", "contours"]), min_size=1, max_size=4,
                                  unique=True),
              "profile": st.sampled_from(["remotereasoner", "segzero", "think2seg", "qwen", "georeasoner", None]),
              "simplify_tolerance": st.floats(0, 5), "min_area": st.floats(0, 50)})
# Valid requests weigh three times as much, so the image checks behind the JSON checks get their share.
_REQUEST_TEXT = st.one_of(
    _VALID_REQUESTS.map(json.dumps), _VALID_REQUESTS.map(json.dumps), _VALID_REQUESTS.map(json.dumps),
    _REQUEST_OBJECTS.map(json.dumps),
    _REQUEST_OBJECTS.map(lambda d: json.dumps(d)[:-1]),  # cut short
    st.text(max_size=80),
    st.sampled_from(["", "null", "[]", "{}", '{"question": NaN}', '{"question": "q", "top_p": Infinity}',
                     '{"question": "\\ud800"}', '{"question": "q", "seed": 1e400}']),
)


def _fuzz_images():
    tiny = png_bytes(synthetic(24, 40, seed=7))
    jpeg = io.BytesIO()
    Image.fromarray(synthetic(30, 30, seed=8)).save(jpeg, format="JPEG")
    return st.one_of(
        st.just(tiny),
        st.just(jpeg.getvalue()),
        st.binary(max_size=300),
        st.binary(max_size=200).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
        st.binary(max_size=200).map(lambda b: b"II*\x00" + b),
        st.binary(max_size=200).map(lambda b: b"\xff\xd8\xff" + b),
        st.integers(1, len(tiny) - 1).map(lambda n: tiny[:n]),
        st.tuples(st.integers(0, len(tiny) - 1), st.integers(0, 255)).map(
            lambda t: tiny[:t[0]] + bytes([t[1]]) + tiny[t[0] + 1:]),  # one byte flipped
        st.tuples(st.integers(1, 70_000), st.integers(1, 70_000)).map(lambda wh: bomb_png(*wh)),
        st.just(bomb_png()),
    )


_FUZZ_IMAGES = _fuzz_images()
_SHAPES = st.sampled_from(["multipart", "multipart", "multipart", "multipart", "no_image", "no_request",
                           "image_as_field", "extra_part", "raw_body", "json_body", "wrong_token", "foreign_host",
                           "stream", "stream", "get", "unknown_path"])


def test_fuzz_at_least_500_requests_without_a_5xx(replay):
    statuses = []
    client = httpx.Client(base_url=replay.url, timeout=60)

    @settings(max_examples=520, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(shape=_SHAPES, image=_FUZZ_IMAGES, request_text=_REQUEST_TEXT, filename=st.text(max_size=20),
           mime=st.sampled_from(["image/png", "application/octet-stream", "text/plain", "", "image/tiff"]))
    def one_request(shape, image, request_text, filename, mime):
        headers = dict(replay.headers)
        files = {"image": (filename or "x", image, mime or "application/octet-stream")}
        data = {"request": request_text}
        path, method, kwargs = "/v1/ask", "POST", {"files": files, "data": data}
        if shape == "no_image":
            kwargs = {"files": {"other": ("f", b"x")}, "data": data}
        elif shape == "no_request":
            kwargs = {"files": files}
        elif shape == "image_as_field":
            kwargs = {"data": {"request": request_text, "image": image.decode("latin-1")}}
        elif shape == "extra_part":
            kwargs = {"files": files, "data": {**data, "more": "x"}}
        elif shape == "raw_body":
            kwargs = {"content": image, "headers": {**headers, "Content-Type": "multipart/form-data; boundary=zz"}}
        elif shape == "json_body":
            kwargs = {"content": request_text.encode("utf-8", "surrogatepass"),
                      "headers": {**headers, "Content-Type": "application/json"}}
        elif shape == "wrong_token":
            headers = {"Authorization": "Bearer " + filename.encode("ascii", "ignore").decode()}
        elif shape == "foreign_host":
            headers = {**headers, "Host": (filename or "x").encode("ascii", "ignore").decode() or "x.example"}
        elif shape == "stream":
            path = "/v1/ask/stream"
        elif shape == "get":
            method, path, kwargs = "GET", "/v1/info", {}
        elif shape == "unknown_path":
            path = "/v1/" + "".join(c for c in filename if c.isalnum())
        kwargs.setdefault("headers", headers)
        try:
            response = client.request(method, path, **kwargs)
        except httpx.LocalProtocolError:  # the client itself refused to send it (an illegal header)
            return
        statuses.append(response.status_code)
        assert response.status_code < 500, (shape, response.status_code, response.text[:500])
        if response.status_code == 200 and shape == "stream":
            events = [json.loads(line) for line in response.text.splitlines() if line]
            final = check_stream_shape(events)
            assert final["event"] == "answer" or final["status"] < 500, final
        elif response.status_code == 200:
            assert response.json()
        else:
            assert_error(response, response.status_code)

    one_request()
    client.close()
    assert len(statuses) >= 500
    assert all(s < 500 for s in statuses)
    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    print("fuzz statuses:", counts)
    assert {401, 403, 413, 415, 422}.issubset(counts) and 200 in counts, str(counts)
    replay.assert_alive()


# ------------------------------------------------------------------------- 4. many clients at once
def test_16_concurrent_clients_each_get_their_own_answer_or_429(live):
    image = png_bytes(synthetic(112, 112, seed=11))
    barrier = threading.Barrier(16)

    def client(index: int):
        question = f"question number {index}: where is the water?"
        request = {"question": question, "max_new_tokens": 12, "outputs": ["boxes", "points"]}
        barrier.wait()
        if index % 2:
            status, headers, events = ask_stream(live, image, request)
            if status == 200:
                final = check_stream_shape(events)
                assert final["event"] == "answer", final
                return index, question, 200, final["answer"]["question"], None
            return index, question, status, None, headers.get("Retry-After")
        response = ask(live, image, request)
        answered = response.json().get("question") if response.status_code == 200 else None
        return index, question, response.status_code, answered, response.headers.get("Retry-After")

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(client, range(16)))
    assert len(results) == 16
    for index, question, status, answered, retry_after in results:
        assert status in (200, 429), (index, status)
        if status == 200:
            assert answered == question
        else:
            assert retry_after is not None and int(retry_after) >= 1
    statuses = [r[2] for r in results]
    assert statuses.count(200) >= 5 and 429 in statuses  # 1 running + 4 waiting at least; the rest refused
    live.assert_alive()


def _client_script(url: str, token: str, request: dict, stream: bool) -> str:
    return f"""
import httpx, io, json, sys
import numpy as np
from PIL import Image
buffer = io.BytesIO()
Image.fromarray((np.random.default_rng(0).random((112, 112, 3)) * 255).astype(np.uint8)).save(buffer, "PNG")
kwargs = dict(headers={{"Authorization": "Bearer {token}"}}, timeout=300,
              files={{"image": ("a.png", buffer.getvalue(), "image/png")}}, data={{"request": json.dumps({request!r})}})
if {stream!r}:
    with httpx.stream("POST", "{url}/v1/ask/stream", **kwargs) as response:
        for line in response.iter_lines():
            if json.loads(line)["event"] == "token":
                print("streaming", flush=True)
else:
    print("sending", flush=True)
    httpx.post("{url}/v1/ask", **kwargs)
"""


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "plain"])
def test_a_killed_client_frees_its_slot(live, stream):
    long_request = {"question": "think for a very long time", "max_new_tokens": 8192}
    went_away = "stopped: the client went away"
    before = live.log().count(went_away)
    client = subprocess.Popen([sys.executable, "-c", _client_script(live.url, live.token, long_request, stream)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() in ("streaming", "sending")
        if not stream:
            time.sleep(2.0)  # generation under way
        # A second client queues behind the long request and sees its position.
        waiting = {}

        def second():
            waiting["result"] = ask_stream(live, png_bytes(synthetic(56, 56)), {"question": "short", "max_new_tokens": 4})

        second_thread = threading.Thread(target=second)
        second_thread.start()
        time.sleep(1.0)
        killed_at = time.monotonic()
        client.kill()
        client.wait(10)
        second_thread.join(60)
        elapsed = time.monotonic() - killed_at
    finally:
        if client.poll() is None:
            client.kill()
        client.stdout.close()
    status, _, events = waiting["result"]
    assert status == 200
    final = check_stream_shape(events)
    assert final["event"] == "answer" and final["answer"]["question"] == "short"
    positions = [e["position"] for e in events if e["event"] == "queued"]
    assert positions[0] == 1, positions  # it waited behind the long request
    assert elapsed < 20, elapsed  # 8192 tokens would have taken far longer
    deadline = time.monotonic() + 10
    while live.log().count(went_away) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert live.log().count(went_away) == before + 1
    live.assert_alive()


# ----------------------------------------------------------------------- 5. the remote reasoner
def test_remote_reasoner_gives_the_in_process_answer(remote, double, tiny_reasoner, tiny_segmenter):
    from georeasoner_plugin.backend.cascade import AskOptions, Cascade
    from georeasoner_plugin.core.profiles import get_profile

    image = synthetic(150, 230, seed=21)
    question = "Which fields are flooded?"
    request = {"question": question, "max_new_tokens": 40, "temperature": 0.0}
    before = len(double.requests)
    response = ask(remote, png_bytes(image), request)
    assert response.status_code == 200, response.text
    remote_answer = response.json()

    expected = Cascade(reasoner=tiny_reasoner, segmenter=tiny_segmenter).run(
        image, question, options=AskOptions(max_new_tokens=40)).answer.to_dict()
    assert remote_answer["raw_output"] == expected["raw_output"] and remote_answer["raw_output"]
    assert remote_answer["objects"] == expected["objects"]
    assert remote_answer["parse"] == expected["parse"] and remote_answer["reasoning"] == expected["reasoning"]
    assert remote_answer["models"]["reasoner"] == double.model_name

    sent = double.requests[before]
    frame = get_profile("remotereasoner").frame.frame_for(230, 150)
    assert sent["image_size"] == (frame.frame_width, frame.frame_height)  # resized on our side
    assert sent["stream"] and sent["temperature"] == 0.0 and sent["max_tokens"] == 40

    status, _, events = ask_stream(remote, png_bytes(image), request)
    final = check_stream_shape(events)
    assert status == 200 and final["event"] == "answer"
    assert "".join(e["text"] for e in events if e["event"] == "token") == expected["raw_output"]
    remote.assert_alive()
