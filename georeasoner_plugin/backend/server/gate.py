"""The security gate: ASGI middleware in front of every route. Host (403, DNS rebinding), bearer
token (401) and body size (413) are checked before any route runs and before any body byte is read.

A refusal is answered at once, never after reading the body (a client that sent
`Expect: 100-continue` gets it instead of `100 Continue`), and the connection is then closed
(server/connections.py), so the rest of a body already on its way is never read."""
from __future__ import annotations

from typing import Dict, Optional

from starlette.datastructures import Headers

from ...core.api import PUBLIC_PATHS, host_name, is_loopback_host, is_loopback_name
from ..auth import bearer_matches
from .errors import BodyTooLarge, error_response, too_large_message

__all__ = ["Gate", "host_name", "is_loopback_name", "is_loopback_bind"]


def is_loopback_bind(host: str) -> bool:
    """Whether `serve --host` binds to this machine only (core/api.py's rule)."""
    return is_loopback_host(host)


class Gate:
    """ASGI middleware in front of everything: Host (403), bearer token (401), body size (413)."""

    def __init__(self, app, *, token: str, loopback_only: bool, max_body_bytes: int):
        self.app = app
        self.token = token
        self.loopback_only = loopback_only
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "websocket":  # no endpoint speaks it; refused before any check is skipped
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self.loopback_only and not is_loopback_name(host_name(headers.get("host"))):
            await self._refuse(scope, receive, send, 403, "foreign_host",
                               "this server only answers requests addressed to 127.0.0.1, localhost or [::1]; "
                               "connect with one of those names (the server is bound to loopback)")
            return
        if scope["path"] not in PUBLIC_PATHS and not bearer_matches(headers.get("authorization"), self.token):
            missing = not headers.get("authorization")
            challenge = 'Bearer realm="georeasoner"' + ("" if missing else ', error="invalid_token"')
            await self._refuse(scope, receive, send, 401, "unauthorized",
                               f"the request {'has no bearer token' if missing else 'carries a wrong token'}; send "
                               f"'Authorization: Bearer <token>' with the token from the server's token file (its "
                               f"path is printed at start)", {"WWW-Authenticate": challenge})
            return
        try:
            declared = int(headers.get("content-length", "0"))
        except ValueError:
            declared = 0
        if declared > self.max_body_bytes:
            await self._refuse(scope, receive, send, 413, "body_too_large", too_large_message(self.max_body_bytes))
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge()
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, scope, receive, send, status: int, code: str, message: str,
                      headers: Optional[Dict[str, str]] = None) -> None:
        headers = dict(headers or {})
        request_headers = Headers(scope=scope)
        if "100-continue" in request_headers.get("expect", "").lower():
            headers["Connection"] = "close"  # the body was never invited: nothing is in flight, end it cleanly
        await error_response(status, code, message, headers)(scope, receive, send)
