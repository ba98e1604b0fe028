"""The backend service's contract, shared across the process boundary.

The QGIS plugin (its HTTP client, its settings, the local-backend launcher) and the backend (the
FastAPI server, `georeasoner serve`, the cascade) both import this file, so every name, limit and
rule both sides must agree on is defined here once:

* the endpoints and the protocol version;
* the fields of an ask request and their limits (`check_question` is the one question rule);
* the NDJSON stream's event and stage names;
* the start-up line a launcher parses (`listening_line` / `parse_listening_line`);
* where the bearer token lives (`token_file_path`: expanduser + strip, one rule for both sides);
* which host names count as loopback (`is_loopback_host`);
* the JSON error body (`error_body` / `parse_error_body`);
* the service's default limits and timeouts (the `serve` defaults; README "Security model").

Pure Python, standard library only: QGIS's interpreter imports it too.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from .protocol import GRANULARITIES, PROTOCOL_VERSION

__all__ = [
    "PROTOCOL_VERSION", "API_PREFIX", "HEALTH_PATH", "INFO_PATH", "ASK_PATH", "ASK_STREAM_PATH", "PUBLIC_PATHS",
    "NDJSON_MEDIA_TYPE", "IMAGE_PART", "REQUEST_PART", "ASK_FIELDS", "MAX_QUESTION_CHARS", "MAX_IMAGE_PIXELS",
    "MAX_REQUEST_PART_BYTES", "QuestionError", "check_question",
    "EVENT_QUEUED", "EVENT_STAGE", "EVENT_TOKEN", "EVENT_ANSWER", "EVENT_ERROR", "STREAM_EVENTS", "FINAL_EVENTS",
    "STAGES", "CLIENT_STAGE_CAPTURE", "CLIENT_STAGE_SENDING", "CLIENT_STAGE_STORE", "LISTENING_PREFIX",
    "listening_line", "parse_listening_line", "TOKEN_FILE_ENV", "config_dir",
    "token_file_path", "host_name", "is_loopback_name", "is_loopback_host", "error_body", "parse_error_body",
    "sentence", "SERVER_TIMING_HEADER", "SERVER_TIMINGS", "server_timing", "parse_server_timing",
]

# ------------------------------------------------------------------------------------ endpoints
API_PREFIX = "/v1"
HEALTH_PATH = f"{API_PREFIX}/health"
INFO_PATH = f"{API_PREFIX}/info"
ASK_PATH = f"{API_PREFIX}/ask"
ASK_STREAM_PATH = f"{API_PREFIX}/ask/stream"
SEGMENT_PATH = f"{API_PREFIX}/segment"  # re-segment objects of an image the server holds (corrections)
OPENAPI_PATH = "/openapi.json"
PUBLIC_PATHS = frozenset({HEALTH_PATH, OPENAPI_PATH})  # everything else needs the bearer token
NDJSON_MEDIA_TYPE = "application/x-ndjson"

# Health states (GET /v1/health "status").
STATE_LOADING, STATE_READY, STATE_ERROR = "loading", "ready", "error"

# --------------------------------------------------------------------------------- the request
# An ask is multipart/form-data with exactly these two parts.
IMAGE_PART = "image"  # a file part: PNG, JPEG or TIFF bytes
REQUEST_PART = "request"  # a text part: the JSON below

MAX_QUESTION_CHARS = 2000
MAX_IMAGE_PIXELS = 64_000_000  # the hard ceiling; `serve --max-image-pixels` may only lower it
MAX_REQUEST_PART_BYTES = 1024 * 1024  # the JSON part; a question is at most a few kilobytes
MAX_OUTPUTS_ITEMS = 16

# The JSON fields of the `request` part: name -> (default, minimum, maximum). None: no bound.
# The server's pydantic schema and the client's request builder both read their limits from here.
ASK_FIELDS: Dict[str, Tuple[Any, Any, Any]] = {
    "question": (None, 1, MAX_QUESTION_CHARS),  # characters after stripping
    "profile": (None, None, None),  # null: the server's default profile
    "outputs": (list(GRANULARITIES), 1, MAX_OUTPUTS_ITEMS),  # items, among GRANULARITIES
    "max_new_tokens": (1024, 1, 8192),
    "temperature": (0.0, 0.0, 2.0),  # 0: greedy
    "top_p": (1.0, 0.0, 1.0),  # exclusive minimum
    "seed": (None, 0, 2**63 - 1),
    "simplify_tolerance": (0.0, 0.0, 1e6),  # image pixels
    "min_area": (0.0, 0.0, 1e12),  # image pixels
    # core/transport.py's "path" transport: a capture file in the backend's shared folder, sent
    # instead of the image part (only when /v1/info lists INFO_SHARED_CAPTURE_DIR); characters.
    "image_path": (None, 1, 4096),
}


class QuestionError(ValueError):
    """A question the service refuses; `code` is the error code the server answers with."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def check_question(question: str) -> str:
    """The question as the service uses it (stripped), or QuestionError with what to do."""
    text = str(question).strip()
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise QuestionError("invalid_field", "the question holds characters that are not valid Unicode text "
                                             "(lone surrogates); send it as UTF-8") from None
    if not text:
        raise QuestionError("empty_question", "the question is empty; type a question about the image")
    if len(text) > MAX_QUESTION_CHARS:
        raise QuestionError("question_too_long", f"the question is {len(text)} characters long; the limit is "
                                                 f"{MAX_QUESTION_CHARS}. Shorten it")
    return text


# ------------------------------------------------------------------------------ the NDJSON stream
# POST /v1/ask/stream answers one JSON object per line, "event" naming its kind:
EVENT_QUEUED = "queued"  # {"position": n}: requests ahead (the running one included); repeated as it changes
EVENT_STAGE = "stage"  # {"stage": name}, name among STAGES
EVENT_TOKEN = "token"  # {"text": piece}: the model's output as it is generated
EVENT_ANSWER = "answer"  # {"answer": {...}}: final, the answer protocol document
EVENT_ERROR = "error"  # {"status": int, "message": str}: final
STREAM_EVENTS = (EVENT_QUEUED, EVENT_STAGE, EVENT_TOKEN, EVENT_ANSWER, EVENT_ERROR)
FINAL_EVENTS = frozenset({EVENT_ANSWER, EVENT_ERROR})  # exactly one of them ends every stream

STAGE_PREPROCESS = "preprocess"
STAGE_REASON = "reason"
STAGE_PARSE = "parse"
STAGE_SEGMENT = "segment"
STAGE_VECTORIZE = "vectorize"
STAGE_DONE = "done"
STAGES = (STAGE_PREPROCESS, STAGE_REASON, STAGE_PARSE, STAGE_SEGMENT, STAGE_VECTORIZE, STAGE_DONE)
# The client's own stages around the service's (the QGIS plugin reports them in the same stream).
CLIENT_STAGE_CAPTURE = "capture"
CLIENT_STAGE_SENDING = "sending"
CLIENT_STAGE_STORE = "store"

# ---------------------------------------------------------------------------- where the time went
# A 200 answer of POST /v1/ask carries the server's own stages in milliseconds, as the standard
# Server-Timing header: "read;dur=3.1, decode;dur=0.0, queue;dur=0.1, run;dur=412.0" (reading and
# parsing the body, decoding the image, waiting in the queue, the cascade). A client subtracts them
# from what it measured to see what the transfer and the HTTP layers cost (bench/bench_server.py).
SERVER_TIMING_HEADER = "Server-Timing"
SERVER_TIMINGS = ("read", "decode", "queue", "run")


def server_timing(seconds: Mapping[str, float]) -> str:
    return ", ".join(f"{name};dur={seconds[name] * 1000:.1f}" for name in SERVER_TIMINGS if name in seconds)


def parse_server_timing(value: Optional[str]) -> Dict[str, float]:
    """{metric: milliseconds} of a Server-Timing header (metrics without a duration are left out)."""
    timings: Dict[str, float] = {}
    for entry in (value or "").split(","):
        name, _, params = entry.strip().partition(";")
        for param in params.split(";"):
            key, _, number = param.strip().partition("=")
            if key == "dur" and name:
                try:
                    timings[name] = float(number)
                except ValueError:
                    pass
    return timings


# ------------------------------------------------------------------------------ the start-up line
# `georeasoner serve` prints exactly one such line on stdout once it accepts connections.
LISTENING_PREFIX = "GeoReasoner backend listening on"
_LISTENING_RE = re.compile(re.escape(LISTENING_PREFIX) + r" (http://\S+)\s*$")


def listening_line(url: str) -> str:
    """The line `serve` prints when it accepts connections (without the line end)."""
    return f"{LISTENING_PREFIX} {url}"


def parse_listening_line(line: str) -> Optional[str]:
    """The URL in a start-up line, or None for any other line."""
    match = _LISTENING_RE.match(line.strip())
    return match.group(1) if match else None


# -------------------------------------------------------------------------------- the token file
TOKEN_FILE_ENV = "GEOREASONER_TOKEN_FILE"
MIN_TOKEN_CHARS = 16


def config_dir(environ: Optional[Mapping[str, str]] = None) -> Path:
    """$XDG_CONFIG_HOME/georeasoner, else ~/.config/georeasoner."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME", "").strip()
    return (Path(base).expanduser() if base else Path.home() / ".config") / "georeasoner"


def token_file_path(explicit: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> Path:
    """The bearer token file: `explicit` (--token-file, a plugin setting), else $GEOREASONER_TOKEN_FILE,
    else config_dir()/token. Surrounding blanks are stripped and ~ is expanded, on both sides alike."""
    env = os.environ if environ is None else environ
    chosen = (explicit or "").strip() or env.get(TOKEN_FILE_ENV, "").strip()
    return Path(chosen).expanduser() if chosen else config_dir(env) / "token"


# ---------------------------------------------------------------------------------- loopback hosts
def host_name(host_header: Optional[str]) -> str:
    """The name in a Host header (or a --host value), without port and brackets, lower case."""
    host = (host_header or "").strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def is_loopback_name(name: str) -> bool:
    """Whether a bare host name (no port) is localhost or a loopback address."""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_loopback_host(host: str) -> bool:
    """Whether a --host value, a URL's host or a Host header names this machine only."""
    return is_loopback_name(host_name(host))


# ---------------------------------------------------------------------------------- error bodies
# Every answer other than 200 is {"error": {"status": int, "code": str, "message": str}}; the
# message is one sentence a user can act on.
ERROR_KEYS = ("status", "code", "message")


def sentence(text: str) -> str:
    """One line, capitalised, ending in a full stop: messages are shown to users as they are."""
    text = " ".join(str(text).split())
    if not text:
        return text
    text = text[:1].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def error_body(status: int, code: str, message: str) -> Dict[str, Any]:
    return {"error": {"status": int(status), "code": code, "message": sentence(message)}}


def parse_error_body(data: Any) -> Optional[Dict[str, Any]]:
    """{"status", "code", "message"} of an error body, or None when `data` is not one."""
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return None
    status = error.get("status")
    return {"status": status if isinstance(status, int) else None, "code": str(error.get("code") or ""),
            "message": error["message"]}


# Codes a client may want to tell apart (the full list is in README "Backend service").
CODE_QUEUE_FULL = "queue_full"
CODE_LOADING = "loading"
CODE_SHUTTING_DOWN = "shutting_down"
CODE_UNAUTHORIZED = "unauthorized"
CODE_IMAGE_NOT_CACHED = "image_not_cached"  # POST /v1/segment by image_key: send the image again


def image_key(data: bytes) -> str:
    """The name of an image's bytes both sides agree on: a correction names the image it re-segments
    instead of sending it again (POST /v1/segment `image_key`)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


IMAGE_KEY_PATTERN = r"^[0-9a-f]{32}$"

# ------------------------------------------------------------------------- defaults of `serve`
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_QUEUE_SIZE = 8
DEFAULT_TIMEOUT_S = 600.0  # per request, queue included
DEFAULT_MAX_BODY_BYTES = 128 * 1024 * 1024
DEFAULT_IMAGE_MEMORY_BYTES = 1024 * 1024 * 1024  # decoded pixels held at once (decoding, queued, running)
DEFAULT_MAX_DECODES = 2  # images decoded at once
DEFAULT_HEADER_TIMEOUT_S = 10.0  # from connection (or the previous answer) to the end of the request headers
DEFAULT_BODY_TIMEOUT_S = 30.0  # longest silence while a request body is being received
DEFAULT_KEEP_ALIVE_S = 5.0  # an idle keep-alive connection is closed after this
DEFAULT_MAX_CONNECTIONS = 128  # open connections; lowered to fit the process's file-descriptor limit
DEFAULT_SHUTDOWN_GRACE_S = 10.0  # on SIGTERM/Ctrl+C: how long the running request may still take
