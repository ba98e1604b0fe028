"""Rule-based stand-ins for the models in server tests (tests only): a cascade that answers after a
set time, streaming tokens and honouring should_stop like the real one, and helpers to run the
real HTTP server (uvicorn, the connection guards, the gate) in-process on 127.0.0.1."""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

import numpy as np
from PIL import Image

from georeasoner_plugin.backend.cascade import AskCancelled, CascadeResult
from georeasoner_plugin.core.protocol import Answer

from georeasoner_plugin.core import api

TOKEN = "standin-token-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).resolve().parent / "serve_standin.py"
RECORDED = ROOT / "examples" / "naip_lakes_remotereasoner.txt"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


class TimedCascade:
    """Answers 'nothing found' after `seconds`, a token every 20 ms; stops when asked to."""

    def __init__(self, seconds: float = 0.0):
        self.seconds = seconds
        self.release = threading.Event()

    def run(self, image, question, *, profile=None, options=None, raw_output=None, valid=None, on_event=None,
            should_stop=None):
        on_event("stage", {"stage": "reason"})
        seconds = float(question.split("sleep=", 1)[1].split()[0]) if "sleep=" in question else self.seconds
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self.release.is_set():
            if should_stop():
                raise AskCancelled("stopped")
            on_event("token", {"text": "."})
            time.sleep(0.02)
        if should_stop():
            raise AskCancelled("stopped")
        height, width = image.shape[:2]
        answer = Answer(question=question, profile=profile or "remotereasoner", image_width=width,
                        image_height=height, raw_output="<answer>[]</answer>", parse_status="empty")
        return CascadeResult(answer=answer)


def png(height: int = 32, width: int = 32, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    if mode == "1":
        Image.new("1", (width, height), 0).save(buffer, format="PNG")
    else:
        Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def form(question: str = "where is the lake?", image: bytes = None):
    return {"files": {"image": ("a.png", image if image is not None else png(), "image/png")},
            "data": {"request": json.dumps({"question": question, "outputs": ["boxes", "points"]})}}


def multipart_body(question: str, image: bytes, boundary: str = "standinboundary") -> bytes:
    request = json.dumps({"question": question, "outputs": ["boxes"]}).encode()
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"request\"\r\n\r\n".encode() + request +
            f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n".encode() + image + f"\r\n--{boundary}--\r\n".encode())


@contextmanager
def serving(cascade=None, **config_options):
    """The real server (uvicorn + guards + gate + app) in a thread; yields (url, service)."""
    from georeasoner_plugin.backend.server import Service, ServiceConfig, bind_socket, create_app, url_of
    from georeasoner_plugin.backend.server.run import make_server

    config_options.setdefault("shutdown_grace_s", 1.0)
    config = ServiceConfig(recorded_output="<answer>[]</answer>", **config_options)
    cascade = cascade or TimedCascade()
    service = Service(config, loader=lambda cfg: (cascade, {"device": "cpu", "dtype": "float32"}))
    sock = bind_socket("127.0.0.1", 0)
    url = url_of(sock)
    server = make_server(create_app(service, token=TOKEN), service, url, log_level="warning")
    service.start()
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not (server.started and service.state == "ready") and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield url, service
    finally:
        if hasattr(cascade, "release"):
            cascade.release.set()
        server.should_exit = True
        thread.join(30)
        service.close()
        sock.close()


def raw_connection(url: str, timeout: float = 5.0) -> socket.socket:
    host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
    return socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)


def read_until_closed(sock: socket.socket, limit: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection (or `limit` seconds pass)."""
    sock.settimeout(limit)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    except socket.timeout:
        return data + b"<still open>"
    except ConnectionResetError:
        return data + b"<reset>"


class StandinServer:
    def __init__(self, tmp_path: Path, *options: str, fd_limit: int = None):
        self.log_path = tmp_path / "server.log"
        self.token_file = tmp_path / "token"
        self._log = open(self.log_path, "w")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop(api.TOKEN_FILE_ENV, None)
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPT), "serve", "--host", "127.0.0.1", "--port", "0", "--token-file",
             str(self.token_file), "--reasoner-output", str(RECORDED), "--segmenter", "none", *options],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=self._log, text=True,
            preexec_fn=(lambda: _limit_fds(fd_limit)) if fd_limit else None)
        for line in self.process.stdout:
            url = api.parse_listening_line(line)
            if url:
                self.url = url
                break
        else:
            raise AssertionError(self.log())
        self.headers = {"Authorization": f"Bearer {self.token_file.read_text().strip()}"}
        while httpx.get(self.url + api.HEALTH_PATH).json()["status"] != "ready":
            time.sleep(0.05)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def stream(self, question: str, events: list, done: threading.Event) -> threading.Thread:
        def run():
            try:
                with httpx.stream("POST", self.url + api.ASK_STREAM_PATH, headers=self.headers, timeout=30,
                                  files={"image": ("a.png", png(), "image/png")},
                                  data={"request": json.dumps({"question": question, "outputs": ["boxes"]})}) as r:
                    for line in r.iter_lines():
                        if line:
                            events.append((time.monotonic(), json.loads(line)))
            except httpx.HTTPError as exc:
                events.append((time.monotonic(), {"event": "transport_error", "detail": repr(exc)}))
            finally:
                done.set()
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process.stdout.close()
        self._log.close()


def _limit_fds(limit: int) -> None:
    import resource
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
