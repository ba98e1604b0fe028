"""Connection guards under uvicorn's HTTP/1.1 protocol (h11): header and body timeouts, a cap on
open connections, and a rate-limited log line for failed accepts.

uvicorn closes idle keep-alive connections (`timeout_keep_alive`) but has no deadline for a
request's headers or body, and any byte received cancels the keep-alive timer: a client sending
one byte now and then (slowloris) holds its connection, and its file descriptor, forever. These
guards are hand-written because uvicorn offers no hook for them; they subclass its h11 protocol
and touch only the connection's timers and transport.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Optional

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ...core.api import error_body

log = logging.getLogger("georeasoner.server")

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


def _overload_response() -> bytes:
    import json

    body = json.dumps(error_body(503, "too_many_connections", "the server has too many open connections; close "
                                                              "idle ones or ask again in a moment")).encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def guarded_protocol(*, header_timeout_s: float, body_timeout_s: float, max_connections: int):
    """uvicorn's h11 protocol class with the guards; pass it as `uvicorn.Config(http=...)`."""

    class GuardedH11Protocol(H11Protocol):
        _guard: Optional[asyncio.TimerHandle] = None
        _guard_phase: Optional[str] = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                _refusals("refused a connection: %d are open (the limit is %d)", len(self.connections) - 1,
                          max_connections)
                transport.write(_overload_response())
                transport.close()
                return
            self._arm("headers", header_timeout_s)

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._follow()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._follow()

        # -- the guard timer follows the connection's phase
        def _follow(self) -> None:
            if self.transport.is_closing():
                self._disarm()
            elif self.conn.their_state is h11.IDLE:
                if self._guard_phase != "headers":  # a deadline for the whole header, not reset per byte
                    self._arm("headers", header_timeout_s)
            elif self.conn.their_state is h11.SEND_BODY:
                self._arm("body", body_timeout_s)  # the longest silence while the body comes in
            else:
                self._disarm()

        def _arm(self, phase: str, delay: float) -> None:
            self._disarm()
            self._guard_phase = phase
            self._guard = self.loop.call_later(delay, self._expired)

        def _disarm(self) -> None:
            if self._guard is not None:
                self._guard.cancel()
            self._guard, self._guard_phase = None, None

        def _expired(self) -> None:
            phase, self._guard, self._guard_phase = self._guard_phase, None, None
            if self.transport.is_closing():
                return
            if phase == "body" and self.flow.read_paused:  # we stopped reading, not the client
                self._arm("body", body_timeout_s)
                return
            if phase == "headers" and self.conn.their_state is h11.IDLE and self.cycle is not None \
                    and not self.cycle.response_complete:
                return  # pipelined request waiting for its turn: not the client's fault
            client = "%s:%d" % tuple(self.client[:2]) if self.client else "a client"
            if phase == "headers":
                log.info("closed the connection from %s: no complete request headers within %g s", client,
                         header_timeout_s)
            else:
                log.info("closed the connection from %s: the request body stalled for %g s", client, body_timeout_s)
            self.transport.close()

    return GuardedH11Protocol
