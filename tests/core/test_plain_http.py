"""qgis_io/plain_http.py: a task's requests to a loopback backend without Qt (standard library only,
so it is tested here against a real HTTP server on 127.0.0.1)."""
from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from georeasoner_plugin.qgis_io import plain_http


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path.startswith("/stream"):
            self.send_response(200)
            self.end_headers()
            for n in range(3):
                self.wfile.write(f'{{"n": {n}}}\n'.encode())
                self.wfile.flush()
                time.sleep(0.05)
        elif self.path.startswith("/silent"):
            time.sleep(2)
        else:
            body = b'{"error": {"status": 404, "code": "x", "message": "no"}}'
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        reply = f"{len(body)} {self.headers.get('Authorization')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def call(url, path, method="GET", body=b"", timeout_s=5.0, is_cancelled=lambda: False, on_data=None):
    return plain_http.request(url + path, method, body, {"Authorization": "Bearer t"}, timeout_s=timeout_s,
                              connect_timeout_s=2.0, is_cancelled=is_cancelled, on_data=on_data)


def test_bodies_statuses_and_streams(url):
    assert call(url, "/up", "POST", b"x" * 300_000) == (200, b"300000 Bearer t")
    status, body = call(url, "/missing")
    assert status == 404 and b'"code": "x"' in body
    pieces = []
    assert call(url, "/stream", on_data=pieces.append) == (200, b"")
    assert b"".join(pieces).decode().splitlines() == ['{"n": 0}', '{"n": 1}', '{"n": 2}']


def test_silence_cancel_refusal_and_a_failing_consumer(url):
    started = time.monotonic()
    with pytest.raises(plain_http.Stalled):
        call(url, "/silent", timeout_s=0.3)
    with pytest.raises(plain_http.Stopped):
        call(url, "/silent", is_cancelled=lambda: time.monotonic() - started > 0.5)
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with pytest.raises(plain_http.Refused):
        call(f"http://127.0.0.1:{port}", "/")

    def consumer(data):
        raise ValueError("stop here")
    with pytest.raises(ValueError):
        call(url, "/stream", on_data=consumer)


def test_cancel_is_seen_while_an_answer_streams_without_pause(url):
    seen = []
    with pytest.raises(plain_http.Stopped):
        call(url, "/stream", on_data=seen.append, is_cancelled=lambda: bool(seen))
    assert len(seen) == 1
