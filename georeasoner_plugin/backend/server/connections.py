"""Connection guards under uvicorn's HTTP/1.1 protocols (httptools, else h11): header and body
timeouts, a cap on open connections and on a request head's size, and a rate-limited log line for
failed accepts.

uvicorn closes idle keep-alive connections (`timeout_keep_alive`) but has no deadline for a
request's headers or body, and any byte received cancels the keep-alive timer: a client sending
one byte now and then (slowloris) holds its connection, and its file descriptor, forever. These
guards are hand-written because uvicorn offers no hook for them; they subclass its protocol classes
and touch only the connection's timers and transport (and, for httptools, count the head's bytes).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Optional

from ...core.api import error_body

log = logging.getLogger("georeasoner.server")

# The largest request head (request line and headers) accepted: h11's own limit, kept for httptools.
MAX_REQUEST_HEAD_BYTES = 16 * 1024
# Bytes asked of the socket per read. asyncio's selector transport reads 256 KiB at a time; each
# chunk of an upload then costs a round of flow control (uvicorn pauses reading past 64 KiB of
# unread body, the application resumes it) and of parser callbacks. 1 MiB reads halved the server's
# CPU time for a 12 MB upload (`make bench`, bench_server.py: ~27 -> ~14 ms); 4 MiB was slower
# (each read allocates that much before it is cut to what arrived).
READ_CHUNK_BYTES = 1024 * 1024
FD_RESERVE = 64  # descriptors kept free for model files, logs, temporary uploads and the worker


def effective_max_connections(configured: int) -> int:
    """The connection cap, lowered so that accepted connections cannot exhaust file descriptors.
    Raises the soft descriptor limit to the hard one first, where the platform allows."""
    try:
        import resource
    except ImportError:  # Windows: no descriptor limit of this kind
        return configured
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(4, min(configured, int(soft) - FD_RESERVE))


class RateLimitedLog:
    """At most one line per `interval_s` for a recurring problem, with the count of those not shown."""

    def __init__(self, interval_s: float = 10.0):
        self.interval_s = interval_s
        self._last = 0.0
        self._suppressed = 0

    def __call__(self, message: str, *args) -> bool:
        now = time.monotonic()
        if now - self._last < self.interval_s:
            self._suppressed += 1
            return False
        suppressed, self._suppressed, self._last = self._suppressed, 0, now
        note = f" ({suppressed} more since the last such line)" if suppressed else ""
        log.warning(message + note, *args)
        return True


_accept_errors = RateLimitedLog()
_refusals = RateLimitedLog()
_SERVER_ERRORS = ("socket.accept() out of system resource", "Error on reading from the event loop self pipe")


def loop_exception_handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """Failed accepts (EMFILE, ENFILE, ENOBUFS) become one rate-limited line instead of a traceback each."""
    message = str(context.get("message", ""))
    exc = context.get("exception")
    if message.startswith(_SERVER_ERRORS) or isinstance(exc, OSError) and "accept" in message:
        _accept_errors("cannot accept connections: %s (%s); the server stays up and retries",
                       message, getattr(exc, "strerror", None) or exc)
        return
    loop.default_exception_handler(context)


def _closing_response(status: int, reason: str, code: str, message: str, extra: bytes = b"") -> bytes:
    """An error answer in the API's shape (core.api.error_body) written straight to a connection that
    is then closed: for refusals made before any application runs."""
    import json

    body = json.dumps(error_body(status, code, message)).encode()
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n%sconnection: close\r\n"
            b"content-length: %d\r\n\r\n" % (status, reason.encode(), extra, len(body)) + body)


def _overload_response() -> bytes:
    return _closing_response(503, "Service Unavailable", "too_many_connections",
                             "the server has too many open connections; close idle ones or ask again in a moment",
                             b"retry-after: 1\r\n")


def _head_too_large_response() -> bytes:
    return _closing_response(431, "Request Header Fields Too Large", "request_head_too_large",
                             f"the request line and headers are over {MAX_REQUEST_HEAD_BYTES} bytes; send shorter ones")


class _Guard:
    """The guard timer, shared by both parsers' protocol classes: one deadline for the whole request
    head (never reset by a trickle of bytes), the longest silence while a body comes in, nothing while
    the application works. The subclass says which phase the connection is in (`_reading`)."""

    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    _guard: Optional[asyncio.TimerHandle] = None
    _guard_phase: Optional[str] = None

    def connection_made(self, transport) -> None:
        self._widen_reads(transport)
        super().connection_made(transport)  # type: ignore[misc]
        if not self._over_capacity(transport):
            self._arm("headers", self.header_timeout_s)

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        self._follow()

    def on_response_complete(self) -> None:
        if self._reading() == "body":
            # Answered before the body was read (a refusal: 413, 429, 503): close rather than read
            # and throw away the rest on a kept connection, which a client sending a huge body, or
            # trickling one, would hold for as long as it liked.
            self.transport.close()  # type: ignore[attr-defined]
        super().on_response_complete()  # type: ignore[misc]
        self._follow()

    @staticmethod
    def _widen_reads(transport) -> None:
        # `max_size` is an attribute of CPython's selector transport, not public API: where a loop's
        # transport has none (Windows' proactor, uvloop), its own read size stays.
        if isinstance(getattr(transport, "max_size", None), int):
            transport.max_size = max(transport.max_size, READ_CHUNK_BYTES)

    def _over_capacity(self, transport) -> bool:
        if len(self.connections) <= self.max_connections:  # type: ignore[attr-defined]
            return False
        _refusals("refused a connection: %d are open (the limit is %d)",
                  len(self.connections) - 1, self.max_connections)  # type: ignore[attr-defined]
        transport.write(_overload_response())
        transport.close()
        return True

    def send_400_response(self, msg: str) -> None:
        """The parser refused the request (uvicorn's text/plain answer replaced by the API's JSON shape)."""
        self.transport.write(_closing_response(  # type: ignore[attr-defined]
            400, "Bad Request", "malformed_request",
            "the request is not valid HTTP/1.1: header names and values may not hold control characters, and a "
            "body's Content-Length and Transfer-Encoding must agree (an HTTP library does this for you)"))
        self.transport.close()  # type: ignore[attr-defined]

    def _reading(self) -> Optional[str]:
        """"headers" (waiting for or inside a request head), "body", or None (the application's turn)."""
        raise NotImplementedError

    def _follow(self) -> None:
        phase = self._reading()
        if self.transport.is_closing() or phase is None:  # type: ignore[attr-defined]
            self._disarm()
        elif phase == "headers":
            if self._guard_phase != "headers":  # a deadline for the whole head, not reset per byte
                self._arm("headers", self.header_timeout_s)
        else:
            self._arm("body", self.body_timeout_s)  # the longest silence while the body comes in

    def _arm(self, phase: str, delay: float) -> None:
        self._disarm()
        self._guard_phase = phase
        self._guard = self.loop.call_later(delay, self._expired)  # type: ignore[attr-defined]

    def _disarm(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
        self._guard, self._guard_phase = None, None

    def _expired(self) -> None:
        phase, self._guard, self._guard_phase = self._guard_phase, None, None
        if self.transport.is_closing():  # type: ignore[attr-defined]
            return
        if phase == "body" and self.flow.read_paused:  # type: ignore[attr-defined]  # we stopped reading, not the client
            self._arm("body", self.body_timeout_s)
            return
        if phase == "headers" and self._reading() != "headers":
            return  # a pipelined request waiting for its turn: not the client's fault
        client = "%s:%d" % tuple(self.client[:2]) if self.client else "a client"  # type: ignore[attr-defined]
        if phase == "headers":
            log.info("closed the connection from %s: no complete request headers within %g s", client,
                     self.header_timeout_s)
        else:
            log.info("closed the connection from %s: the request body stalled for %g s", client, self.body_timeout_s)
        self.transport.close()  # type: ignore[attr-defined]


def _h11_protocol():
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(_Guard, H11Protocol):
        def _reading(self) -> Optional[str]:
            import h11

            if self.conn.their_state is h11.SEND_BODY:
                return "body"
            if self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete):
                return "headers"
            return None

    return GuardedH11Protocol


def _httptools_protocol():
    """uvicorn's httptools protocol (llhttp, C): an upload's bytes are copied about half as often as
    through h11 (a 12 MB TIFF: ~10 ms less per request, `make bench`, bench_server.py). llhttp has no
    limit on the size of a request head, so one is kept here, the same as h11's."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(_Guard, HttpToolsProtocol):
        _parsing: Optional[str] = None  # "headers" or "body" while the parser is inside a request
        _head_bytes = 0

        def data_received(self, data: bytes) -> None:
            if self._parsing != "body":
                self._head_bytes += len(data)  # an upper bound of the head's size: the chunk may hold body bytes too
            super().data_received(data)  # the guard timer follows there
            if self._parsing != "body" and self._head_bytes > MAX_REQUEST_HEAD_BYTES and not self.transport.is_closing():
                client = "%s:%d" % tuple(self.client[:2]) if self.client else "a client"
                log.info("closed the connection from %s: request head over %d bytes", client, MAX_REQUEST_HEAD_BYTES)
                self.transport.write(_head_too_large_response())
                self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._parsing = "headers"

        def on_headers_complete(self) -> None:
            self._parsing, self._head_bytes = "body", 0
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._parsing = None
            super().on_message_complete()

        def _reading(self) -> Optional[str]:
            if self._parsing is not None:
                return self._parsing
            if self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
                return None
            return "headers"

    return GuardedHttpToolsProtocol


HTTP_PARSERS = ("auto", "httptools", "h11")


def guarded_protocol(*, header_timeout_s: float, body_timeout_s: float, max_connections: int, parser: str = "auto"):
    """uvicorn's HTTP/1.1 protocol class with the guards; pass it as `uvicorn.Config(http=...)`.
    "auto" is httptools where it is installed (a backend requirement), else h11 (a venv made before
    httptools was one keeps working)."""
    if parser not in HTTP_PARSERS:
        raise ValueError(f"unknown HTTP parser {parser!r}; one of {', '.join(HTTP_PARSERS)}")
    protocol = None
    if parser in ("auto", "httptools"):
        try:
            protocol = _httptools_protocol()
        except ImportError:
            if parser == "httptools":
                raise
    if protocol is None:
        protocol = _h11_protocol()
    return type(protocol.__name__, (protocol,), {"header_timeout_s": header_timeout_s,
                                                 "body_timeout_s": body_timeout_s,
                                                 "max_connections": max_connections})
