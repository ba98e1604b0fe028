"""The backend as an HTTP service: FastAPI on uvicorn around one cascade, secure by default.

One worker thread owns the models (one GPU) and answers requests in arrival order from a bounded
queue; the event loop only parses, validates, decodes and relays. Every request but health needs
the bearer token; bound to loopback, requests naming a foreign Host are refused (DNS rebinding).
Every error is JSON {"error": {"status", "code", "message"}} with a message a user can act on.

API (prefix /v1): GET health, GET info, POST ask, POST ask/stream (newline-delimited JSON
events). README.md's "Backend service" section is the client's reference; the contract shared
with the QGIS client (names, limits, the start-up line, the token path) is core/api.py.

The package, by concern:
    errors   ApiError, error events, the JSON error body
    schema   pydantic request/response models and OpenAPI text
    config   ServiceConfig (the `serve` options)
    images   recognising, measuring and decoding the uploaded image
    forms    reading the multipart body, validating the request JSON
    service  Job, the bounded queue and the worker thread (Service), load_cascade
    gate     the ASGI security gate (Host, token, body size)
    app      create_app: the routes
    run      bind_socket, run_server
"""
from __future__ import annotations

from ...core.api import (API_PREFIX, DEFAULT_HOST, DEFAULT_MAX_BODY_BYTES, DEFAULT_PORT, DEFAULT_QUEUE_SIZE,
                         DEFAULT_TIMEOUT_S, LISTENING_PREFIX, MAX_REQUEST_PART_BYTES, NDJSON_MEDIA_TYPE as NDJSON,
                         PUBLIC_PATHS, STATE_ERROR, STATE_LOADING, STATE_READY, host_name, is_loopback_name)
from .app import create_app
from .config import ServiceConfig
from .errors import ApiError, BodyTooLarge, error_body, error_event, error_response, public_event
from .forms import read_form, read_form_bytes, validate_request

from .gate import Gate, is_loopback_bind
from .images import decode_image, sniff_image_type
from .run import bind_socket, exposure_warning, run_server, url_of
from .schema import AskRequest, ErrorBody, HealthResponse, InfoResponse
from .service import RETRY_AFTER_LOADING_S, Job, Loader, Service, load_cascade

__all__ = [
    "API_PREFIX", "DEFAULT_HOST", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_PORT", "DEFAULT_QUEUE_SIZE", "DEFAULT_TIMEOUT_S",
    "LISTENING_PREFIX", "MAX_REQUEST_PART_BYTES", "NDJSON", "PUBLIC_PATHS", "STATE_ERROR", "STATE_LOADING",
    "STATE_READY", "host_name", "is_loopback_name", "is_loopback_bind", "create_app", "ServiceConfig", "ApiError",
    "BodyTooLarge", "error_body", "error_event", "error_response", "public_event", "read_form", "read_form_bytes",
    "validate_request",
    "Gate", "decode_image", "sniff_image_type", "bind_socket", "exposure_warning", "run_server", "url_of",
    "AskRequest", "ErrorBody", "HealthResponse", "InfoResponse", "RETRY_AFTER_LOADING_S", "Job", "Loader", "Service",
    "load_cascade",
]
