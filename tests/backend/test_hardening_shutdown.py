"""Issue 13, defect 3 (and the access log of defect 6): SIGTERM on the real `serve` process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from georeasoner_plugin.core import api

from standins import png

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).resolve().parent / "serve_standin.py"
RECORDED = ROOT / "examples" / "naip_lakes_remotereasoner.txt"

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGTERM")


class StandinServer:
    def __init__(self, tmp_path: Path, *options: str):
        self.log_path = tmp_path / "server.log"
        self.token_file = tmp_path / "token"
        self._log = open(self.log_path, "w")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop(api.TOKEN_FILE_ENV, None)
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPT), "serve", "--host", "127.0.0.1", "--port", "0", "--token-file",
             str(self.token_file), "--reasoner-output", str(RECORDED), "--segmenter", "none", *options],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=self._log, text=True)
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


def _wait(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.parametrize("running_s,expect_answer", [(0.6, True), (30, False)])
def test_sigterm_stops_accepting_grants_the_grace_then_ends_every_request_with_503(tmp_path, running_s,
                                                                                    expect_answer):
    grace = 2.0
    server = StandinServer(tmp_path, "--shutdown-grace", str(grace), "--queue-size", "4")
    try:
        # A token put in the query string of a refused request never reaches the log.
        assert httpx.get(server.url + api.INFO_PATH + "?token=QUERYSECRET42").status_code == 401
        running, queued = [], []
        running_done, queued_done = threading.Event(), threading.Event()
        server.stream(f"sleep={running_s}", running, running_done)
        _wait(lambda: any(e["event"] == "token" for _, e in running))
        server.stream("sleep=0.1", queued, queued_done)
        _wait(lambda: any(e["event"] == "queued" for _, e in queued))
        sent = time.monotonic()
        server.process.send_signal(signal.SIGTERM)

        def refused():
            try:
                httpx.get(server.url + api.HEALTH_PATH, timeout=1)
                return False
            except httpx.ConnectError:
                return True
        _wait(refused, timeout=3)  # no new connections once the signal is handled
        assert queued_done.wait(grace + 5) and running_done.wait(grace + 5)
        final_queued = queued[-1][1]
        assert final_queued["event"] == "error" and final_queued["status"] == 503, queued[-3:]
        assert queued[-1][0] - sent < 1.5  # queued ones end at once
        final_running = running[-1]
        if expect_answer:
            assert final_running[1]["event"] == "answer", running[-3:]
        else:
            assert final_running[1]["event"] == "error" and final_running[1]["status"] == 503, running[-3:]
            assert "shutting down" in final_running[1]["message"]
            assert grace - 0.5 <= final_running[0] - sent <= grace + 3  # the documented grace, then cancelled
        assert server.process.wait(grace + 10) == 0
        log = server.log()
        assert "Traceback" not in log and "QUERYSECRET42" not in log, log
        assert "GET /v1/info?<query omitted>" in log
    finally:
        server.close()
