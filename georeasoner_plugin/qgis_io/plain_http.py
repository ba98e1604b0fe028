"""Requests from a worker thread (QgsTask) to a backend on this machine, without Qt objects.

PyQt's wrappers are not safe when QObjects are made and destroyed in several threads at once: a
QNetworkReply or QTimer made in a task's thread could be handed a wrapper already marked deleted
by another thread ("wrapped C/C++ object ... has been deleted"; reproduced with a few hundred
requests in two QgsTasks, with Qt's and QGIS's managers alike). A loopback backend needs nothing
Qt's network stack adds (no proxy, no authentication manager: the token is a header), so tasks
talk to it with the standard library. The GUI thread and remote backends keep Qt's stack.

Pure Python: the caller turns the exceptions below into its own messages.
"""
from __future__ import annotations

import http.client
import queue
import socket
import threading
import time
import urllib.parse
from typing import Callable, Dict, Optional, Tuple


class Refused(Exception):
    """Nothing listens at the address."""


class Lost(Exception):
    """The connection broke (or never completed) before the answer ended; `answered`: after the
    status line came (mid-answer)."""

    def __init__(self, detail: str, answered: bool = False):
        super().__init__(detail)
        self.answered = answered


class Stalled(Exception):
    """Nothing arrived for longer than the timeout."""


class Stopped(Exception):
    """is_cancelled() said so."""


def request(url: str, method: str, body: Optional[bytes], headers: Dict[str, str], *, timeout_s: float,
            connect_timeout_s: float, is_cancelled: Callable[[], bool],
            on_data: Optional[Callable[[bytes], None]] = None) -> Tuple[int, bytes]:
    """(status, body) of one request; with on_data, a 200 answer's bytes go there as they arrive
    (an exception it raises ends the request and propagates). A helper thread does the blocking
    reads, so cancelling and the inactivity timeout are checked every 0.1 s."""
    parts = urllib.parse.urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=connect_timeout_s)
    events: "queue.Queue[tuple]" = queue.Queue()

    def pump() -> None:
        try:
            conn.request(method, target, body=body if method != "GET" else None,
                         headers=dict(headers, Connection="close"))
            conn.sock.settimeout(None)  # the caller watches for silence; reads may wait for the model
            response = conn.getresponse()
            events.put(("status", response.status))
            while True:
                data = response.read1(65536)
                if not data:
                    break
                events.put(("data", data))
            events.put(("end", None))
        except ConnectionRefusedError as exc:
            events.put(("refused", exc))
        except (OSError, http.client.HTTPException) as exc:
            events.put(("lost", exc))

    threading.Thread(target=pump, name="georeasoner-http", daemon=True).start()
    status: Optional[int] = None
    received = bytearray()
    last = time.monotonic()
    try:
        while True:
            try:
                kind, value = events.get(timeout=0.1)
            except queue.Empty:
                kind, value = "", None
            if is_cancelled():  # checked between pieces too: a streaming answer may never pause
                raise Stopped()
            if not kind:
                if time.monotonic() - last > timeout_s:
                    raise Stalled()
                continue
            last = time.monotonic()
            if kind == "status":
                status = int(value)
            elif kind == "data":
                if on_data is not None and status == 200:
                    on_data(value)
                else:
                    received.extend(value)
            elif kind == "end":
                return int(status or 0), bytes(received)
            elif kind == "refused":
                raise Refused(str(value))
            else:
                raise Lost(str(value) or type(value).__name__, answered=status is not None)
    finally:
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the helper thread if it still waits
            except OSError:
                pass
        conn.close()
