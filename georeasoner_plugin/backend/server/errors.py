"""Errors the service answers with: ApiError (raised anywhere before a job is queued), error events
(posted by the worker) and the JSON body both become (core/api.py's error_body)."""
from __future__ import annotations

from typing import Dict, Optional

from fastapi.responses import JSONResponse

from ...core.api import EVENT_ERROR, error_body, sentence

__all__ = ["ApiError", "BodyTooLarge", "error_body", "error_response", "error_event", "public_event", "sentence",
           "too_large_message"]


class ApiError(Exception):
    """An answer other than 200, with what the user can do about it."""

    def __init__(self, status: int, code: str, message: str, headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


class BodyTooLarge(Exception):
    """Raised from the request's receive channel once the body outgrows the limit."""


def error_response(status: int, code: str, message: str, headers: Optional[Dict[str, str]] = None) -> JSONResponse:
    return JSONResponse(error_body(status, code, message), status_code=status, headers=headers)


def error_event(status: int, code: str, message: str, headers: Optional[Dict[str, str]] = None) -> dict:
    # Keys starting with "_" are for the plain (non-streaming) response only.
    return {"event": EVENT_ERROR, "status": status, "message": sentence(message), "_code": code,
            "_headers": headers or {}}


def public_event(event: dict) -> dict:
    return {k: v for k, v in event.items() if not k.startswith("_")}


def too_large_message(limit: int) -> str:
    return (f"the request body is larger than this server's limit of {limit} bytes ({limit / 2**20:.0f} MiB); "
            f"send a smaller image (downsample it, or use JPEG) or start the server with a larger --max-body-bytes")
