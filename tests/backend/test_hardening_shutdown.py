"""Issue 13, defect 3 (and the access log of defect 6): SIGTERM on the real `serve` process."""
from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from georeasoner_plugin.core import api

from standins import StandinServer

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGTERM")


def _wait(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.parametrize("running_s,expect_answer", [(2.5, True), (30, False)])
def test_sigterm_stops_accepting_grants_the_grace_then_ends_every_request_with_503(tmp_path, running_s,
                                                                                    expect_answer):
    grace = 3.0
    server = StandinServer(tmp_path, "--shutdown-grace", str(grace), "--queue-size", "4")
    try:
        # A token put in the query string of a refused request never reaches the log.
        assert httpx.get(server.url + api.INFO_PATH + "?token=QUERYSECRET42").status_code == 401
        running, queued = [], []
        running_done, queued_done = threading.Event(), threading.Event()
        server.stream(f"sleep={running_s}", running, running_done)
        _wait(lambda: any(e["event"] == "token" for _, e in running))
        server.stream("sleep=0.1", queued, queued_done)
        _wait(lambda: any(e["event"] == "queued" and e["position"] >= 1 for _, e in queued))
        assert not running_done.is_set()
        sent = time.monotonic()
        server.process.send_signal(signal.SIGTERM)

        def refused():
            try:
                httpx.get(server.url + api.HEALTH_PATH, timeout=1)
                return False
            except (httpx.ConnectError, httpx.RemoteProtocolError):
                # refused, or taken from the kernel's backlog as the socket closed and dropped unanswered
                return True
        _wait(refused, timeout=5)  # no new connections once the signal is handled
        assert queued_done.wait(grace + 5) and running_done.wait(grace + 5)
        final_queued = queued[-1][1]
        assert final_queued["event"] == "error" and final_queued["status"] == 503, queued[-3:]
        assert queued[-1][0] - sent < grace - 0.5  # queued ones end at once, not after the grace
        final_running = running[-1]
        if expect_answer:
            assert final_running[1]["event"] == "answer", running[-3:]
        else:
            assert final_running[1]["event"] == "error" and final_running[1]["status"] == 503, running[-3:]
            assert "shutting down" in final_running[1]["message"]
            assert grace - 0.5 <= final_running[0] - sent <= grace + 5  # the documented grace, then cancelled
        assert server.process.wait(grace + 10) == 0
        log = server.log()
        assert "Traceback" not in log and "QUERYSECRET42" not in log, log
        assert "GET /v1/info?<query omitted>" in log
    finally:
        server.close()
