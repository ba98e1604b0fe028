"""Issue 13: the defects found by attacking `serve` on loopback, each reproduced on the real server
(uvicorn, the connection guards, the gate, the app) running in-process with a rule-based cascade."""
from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi import Request  # module level: routes resolve their annotations here

from georeasoner_plugin.backend.server.connections import RateLimitedLog, loop_exception_handler
from georeasoner_plugin.core import api

from standins import (HEADERS, TOKEN, TimedCascade, form, multipart_body, png, raw_connection, read_until_closed,
                      serving)


def _wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def _request_head(path: str, length: int, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: multipart/form-data; boundary=standinboundary\r\nContent-Length: {length}\r\n"
            f"{extra}\r\n").encode()


PARSERS = pytest.mark.parametrize("parser", ["httptools", "h11"])  # h11: the fallback where httptools is missing


# ---------------------------------------------------------------------- 1. admission before work
def test_a_full_queue_refuses_before_the_body_is_read():
    cascade = TimedCascade(seconds=60)
    with serving(cascade, queue_size=1) as (url, service), ThreadPoolExecutor(2) as pool:
        running = pool.submit(httpx.post, url + api.ASK_PATH, headers=HEADERS, timeout=30, **form())
        _wait(lambda: service._running is not None)
        queued = pool.submit(httpx.post, url + api.ASK_PATH, headers=HEADERS, timeout=30, **form())
        _wait(lambda: service.queue_length() == 1)
        with raw_connection(url) as sock:  # 50 MB announced, not one byte of it sent
            sock.sendall(_request_head(api.ASK_PATH, 50_000_000))
            answer = read_until_closed(sock, limit=5)
        assert answer.startswith(b"HTTP/1.1 429"), answer[:200]
        assert b"retry-after:" in answer.lower()
        cascade.release.set()
        assert running.result().status_code == 200 and queued.result().status_code == 200


def test_an_oversized_content_length_is_refused_at_once_without_100_continue():
    with serving(max_body_bytes=100_000) as (url, service):
        with raw_connection(url) as sock:
            sock.sendall(_request_head(api.ASK_PATH, 10**12, "Expect: 100-continue\r\n"))
            answer = read_until_closed(sock, limit=5)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]  # no "HTTP/1.1 100 Continue" first
        assert b"<still open>" not in answer  # the connection is closed: the body was never invited


@PARSERS
def test_a_refusal_sent_before_the_body_closes_the_connection(parser):
    """Without Expect: 100-continue the client sends its body anyway; the server answers 413 at once
    and closes, instead of reading and throwing away the rest on a kept connection."""
    with serving(max_body_bytes=100_000, http_parser=parser) as (url, service):
        with raw_connection(url) as sock:
            sock.sendall(_request_head(api.ASK_PATH, 50_000_000) + b"x" * 65536)
            answer = read_until_closed(sock, limit=3)
        assert b"<still open>" not in answer, answer[:200]
        if not answer.startswith(b"<reset>"):  # a reset (our bytes unread) may beat the answer to us
            assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert httpx.get(url + api.HEALTH_PATH).status_code == 200


def test_decoded_size_is_charged_against_the_image_memory_budget():
    cascade = TimedCascade(seconds=60)
    bomb_like = png(2000, 2000, mode="1")  # a few KB that decode to 12 MB of pixels (32 MB while decoding)
    assert len(bomb_like) < 20_000
    with serving(cascade, queue_size=8, image_memory_bytes=40 * 2**20) as (url, service), ThreadPoolExecutor(2) as pool:
        first = pool.submit(httpx.post, url + api.ASK_PATH, headers=HEADERS, timeout=30, **form(image=bomb_like))
        _wait(lambda: service._running is not None)
        second = httpx.post(url + api.ASK_PATH, headers=HEADERS, timeout=30, **form(image=bomb_like))
        assert second.status_code == 503 and second.json()["error"]["code"] == "images_busy", second.text
        assert int(second.headers["Retry-After"]) >= 1
        assert service.budget.peak <= 40 * 2**20
        cascade.release.set()
        assert first.result().status_code == 200
        _wait(lambda: service.budget.used == 0)  # given back when the request ended


def test_at_most_n_images_are_decoded_at_once():
    image = png(1200, 1200)
    with serving(TimedCascade(seconds=0), queue_size=16, max_decodes=1) as (url, service), ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: httpx.post(url + api.ASK_PATH, headers=HEADERS, timeout=60,
                                                      **form(image=image)).status_code, range(8)))
    assert statuses == [200] * 8
    assert service.stats["decoding_peak"] == 1


# -------------------------------------------------------------------------------- 2. timeouts
@PARSERS
def test_half_sent_headers_and_slowloris_are_closed_after_the_header_timeout(parser):
    with serving(header_timeout_s=0.5, http_parser=parser) as (url, service):
        with raw_connection(url) as half, raw_connection(url) as slow:
            half.sendall(b"GET /v1/health HTTP/1.1\r\nHo")
            started = time.monotonic()
            closed = False
            for byte in b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200:
                try:
                    slow.sendall(bytes([byte]))
                except OSError:
                    closed = True
                    break
                slow.settimeout(0.1)
                try:
                    if slow.recv(1) == b"":
                        closed = True
                        break
                except TimeoutError:
                    pass
                assert time.monotonic() - started < 5, "the slowloris connection is still open"
            assert closed
            assert read_until_closed(half, limit=3) == b""
        assert httpx.get(url + api.HEALTH_PATH).status_code == 200  # the server still answers


@PARSERS
def test_a_stalled_body_and_an_idle_keep_alive_connection_are_closed(parser):
    with serving(body_timeout_s=0.5, keep_alive_s=0.5, http_parser=parser) as (url, service):
        with raw_connection(url) as stalled:
            stalled.sendall(_request_head(api.ASK_PATH, 5000) + b"--standinboundary\r\n")
            assert read_until_closed(stalled, limit=4) == b""
        with raw_connection(url) as idle:
            idle.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = read_until_closed(idle, limit=4)
            assert answer.startswith(b"HTTP/1.1 200") and b"<still open>" not in answer
        _wait(lambda: service.budget.used == 0)


@PARSERS
def test_an_endless_request_head_is_refused_and_closed(parser):
    """llhttp keeps no limit of its own on a request head's size; h11 does (16 KiB). Both end the same way."""
    with serving(http_parser=parser) as (url, service):
        with raw_connection(url) as flood:
            flood.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            closed = False
            for _ in range(200):  # up to 200 x 1 KiB of headers; the limit is 16 KiB
                try:
                    flood.sendall(b"X-Flood: " + b"a" * 1014 + b"\r\n")
                except OSError:
                    closed = True
                    break
            answer = read_until_closed(flood, limit=3)
            assert b"<still open>" not in answer  # closed by the server
            # the refusal, unless the close came as a reset (the server closed with our bytes unread),
            # which may reach us before its answer does
            if not closed and not answer.startswith(b"<reset>"):
                assert answer.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400")), answer[:200]
        # a head under the limit (a long but ordinary header) is still served
        big = httpx.get(url + api.HEALTH_PATH, headers={"X-Long": "b" * 8000})
        assert big.status_code == 200
        assert httpx.get(url + api.HEALTH_PATH).status_code == 200


@PARSERS
def test_a_request_the_parser_refuses_gets_a_json_error_and_the_server_stays_up(parser):
    """A control character in a header value: llhttp refuses it, h11 may pass it to the gate (401).
    Either way the answer is the API's JSON error shape, never uvicorn's plain text."""
    with serving(http_parser=parser) as (url, service):
        with raw_connection(url) as conn:
            conn.sendall(b"GET /v1/info HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                         b"Authorization: Bearer \x01\x1f\r\n\r\n")
            answer = read_until_closed(conn, limit=3)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith((b"HTTP/1.1 400", b"HTTP/1.1 401")), answer[:300]
        error = json.loads(body.split(b"<still open>")[0])["error"]
        assert error["status"] in (400, 401) and error["message"]
        assert httpx.get(url + api.HEALTH_PATH).status_code == 200


@PARSERS
def test_pipelined_requests_are_answered_in_order_and_not_timed_out_while_waiting(parser):
    """Three requests in one write: the second and third wait for the first's answer, which is not
    the client's fault (no header deadline runs for them)."""
    with serving(header_timeout_s=0.5, http_parser=parser) as (url, service):
        with raw_connection(url) as conn:
            head = b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            conn.sendall(head * 3)
            received = b""
            deadline = time.monotonic() + 5
            while received.count(b"HTTP/1.1 200") < 3 and time.monotonic() < deadline:
                conn.settimeout(max(0.05, deadline - time.monotonic()))
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    break
                if not chunk:
                    break
                received += chunk
            assert received.count(b"HTTP/1.1 200") == 3, received[:400]


@PARSERS
def test_connections_over_the_cap_get_503_and_the_server_recovers(parser):
    with serving(max_connections=8, header_timeout_s=1.0, http_parser=parser) as (url, service):
        idle = [raw_connection(url) for _ in range(8)]
        try:
            time.sleep(0.2)
            with raw_connection(url) as extra:
                answer = read_until_closed(extra, limit=3)
            assert answer.startswith(b"HTTP/1.1 503") and b"too_many_connections" in answer
            assert b"retry-after" in answer.lower()
        finally:
            for sock in idle:
                sock.close()
        _wait(lambda: httpx.get(url + api.HEALTH_PATH).status_code == 200, timeout=5)


def test_failed_accepts_are_one_rate_limited_line_not_a_traceback_each(caplog):
    import asyncio
    import errno

    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.WARNING, logger="georeasoner.server"):
            for _ in range(5000):
                loop_exception_handler(loop, {"message": "socket.accept() out of system resource",
                                              "exception": OSError(errno.EMFILE, "Too many open files")})
    finally:
        loop.close()
    lines = [r for r in caplog.records if "cannot accept connections" in r.getMessage()]
    assert len(lines) <= 1 and all(r.exc_info is None for r in caplog.records)
    limited = RateLimitedLog(interval_s=0.0)
    assert limited("x") and limited("x")


# ------------------------------------------------------------------------ 4. an aborted upload
def test_an_aborted_upload_is_one_log_line_without_traceback(caplog):
    with caplog.at_level(logging.INFO, logger="georeasoner.server"):
        with serving() as (url, service):
            with raw_connection(url) as sock:
                sock.sendall(_request_head(api.ASK_PATH, 100_000) + multipart_body("q", png())[:500])
                time.sleep(0.2)
            _wait(lambda: any("aborted" in r.getMessage() for r in caplog.records), timeout=5)
            assert httpx.get(url + api.HEALTH_PATH).status_code == 200
    server_lines = [r for r in caplog.records if r.name.startswith(("georeasoner", "uvicorn"))]
    assert sum("aborted" in r.getMessage() for r in server_lines) == 1
    assert not any(r.exc_info or "unhandled" in r.getMessage() or "Traceback" in r.getMessage()
                   for r in server_lines), [r.getMessage() for r in server_lines]


# --------------------------------------------------------------------------- 9. Retry-After
def test_retry_after_follows_measured_service_times():
    cascade = TimedCascade(seconds=0.2)
    with serving(cascade, queue_size=1) as (url, service), ThreadPoolExecutor(3) as pool:
        for _ in range(3):  # measured: about 0.2 s each
            assert httpx.post(url + api.ASK_PATH, headers=HEADERS, timeout=30, **form()).status_code == 200
        cascade.seconds = 3
        running = pool.submit(httpx.post, url + api.ASK_PATH, headers=HEADERS, timeout=30, **form())
        _wait(lambda: service._running is not None)
        queued = pool.submit(httpx.post, url + api.ASK_PATH, headers=HEADERS, timeout=30, **form())
        _wait(lambda: service.queue_length() == 1)
        refused = httpx.post(url + api.ASK_PATH, headers=HEADERS, timeout=30, **form())
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 2, refused.headers  # not 10 s x queue length
        cascade.release.set()
        running.result(), queued.result()


def test_retry_after_before_any_measurement_is_not_a_guess():
    cascade = TimedCascade(seconds=60)
    with serving(cascade, queue_size=1) as (url, service), ThreadPoolExecutor(2) as pool:
        running = pool.submit(httpx.post, url + api.ASK_PATH, headers=HEADERS, timeout=30, **form())
        _wait(lambda: service._running is not None)
        queued = pool.submit(httpx.post, url + api.ASK_PATH, headers=HEADERS, timeout=30, **form())
        _wait(lambda: service.queue_length() == 1)
        refused = httpx.post(url + api.ASK_PATH, headers=HEADERS, timeout=30, **form())
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) <= 2, refused.headers
        cascade.release.set()
        running.result(), queued.result()


# --------------------------------------------------------------------------------- 6. leaks
def test_a_secret_in_the_reasoner_url_never_shows(caplog):
    from georeasoner_plugin.backend.remote_reasoner import RemoteReasoner, chat_completions_url, redact_url
    from georeasoner_plugin.backend.server import Service, ServiceConfig, create_app, load_cascade
    from starlette.testclient import TestClient

    secret_url = "http://alice:pa55word@127.0.0.1:9/v1?api-key=SECRET123"
    assert "SECRET123" not in redact_url(secret_url) and "pa55word" not in redact_url(secret_url)
    assert chat_completions_url(secret_url).endswith("/v1/chat/completions?api-key=SECRET123")
    with pytest.raises(ValueError) as info:
        chat_completions_url("ftp://x/?key=SECRET123")
    assert "SECRET123" not in str(info.value)
    assert RemoteReasoner(secret_url, "m").models_url == "http://alice:pa55word@127.0.0.1:9/v1/models?api-key=SECRET123"

    config = ServiceConfig(reasoner_url=secret_url, reasoner_model="m", timeout_s=5)
    with caplog.at_level(logging.INFO):
        service = Service(config, loader=load_cascade)
        service.start()
        _wait(lambda: service.state != "loading", timeout=20)
        with TestClient(create_app(service, token=TOKEN), base_url="http://127.0.0.1") as client:
            info = client.get("/v1/info", headers=HEADERS)
            answer = client.post("/v1/ask", headers=HEADERS, files={"image": ("a.png", png(), "image/png")},
                                 data={"request": json.dumps({"question": "q", "outputs": ["boxes"]})})
        service.close()
    assert answer.status_code == 502, answer.text
    for text in (info.text, answer.text, caplog.text):
        assert "SECRET123" not in text and "pa55word" not in text, text


def test_routers_of_other_features_sit_behind_the_gate():
    from fastapi import APIRouter
    from starlette.testclient import TestClient

    from georeasoner_plugin.backend.server import Service, ServiceConfig, create_app, decode_image, read_form_bytes

    router = APIRouter()

    @router.get("/v1/extra")
    async def extra():
        return {"ok": True}

    @router.post("/v1/extra")
    async def extra_image(request: Request):  # the pre-split helpers a feature route may use
        fields = await read_form_bytes(request, 10**7)
        return {"shape": list(decode_image(fields["image"], 10**7).shape)}

    service = Service(ServiceConfig(recorded_output="x"), loader=lambda cfg: (TimedCascade(), {}))
    with TestClient(create_app(service, token=TOKEN, routers=[router]), base_url="http://127.0.0.1") as client:
        assert client.get("/v1/extra").status_code == 401
        assert client.get("/v1/extra", headers=HEADERS).json() == {"ok": True}
        assert client.get("/v1/extra", headers={**HEADERS, "Host": "evil.example"}).status_code == 403
        posted = client.post("/v1/extra", headers=HEADERS, files={"image": ("a.png", png(20, 30), "image/png")},
                             data={"request": "{}"})
        assert posted.json() == {"shape": [20, 30, 3]}
