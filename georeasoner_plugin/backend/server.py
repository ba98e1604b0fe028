"""The backend as an HTTP service: FastAPI on uvicorn around one cascade, secure by default.

One worker thread owns the models (one GPU) and answers requests in arrival order from a bounded
queue; the event loop only parses, validates, decodes and relays. Every request but health needs
the bearer token; bound to loopback, requests naming a foreign Host are refused (DNS rebinding).
Every error is JSON {"error": {"status", "code", "message"}} with a message a user can act on.

API (prefix /v1): GET health, GET info, POST ask, POST ask/stream (newline-delimited JSON
events). README.md's "Backend service" section is the client's reference.
"""
from __future__ import annotations

import asyncio
import copy
import io
import ipaddress
import json
import logging
import math
import re
import socket
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Literal, Optional, Tuple

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from .. import __version__
from ..core.parsing import MAX_OBJECTS
from ..core.profiles import DEFAULT_PROFILE, PROFILES, UnknownProfileError, get_profile
from ..core.protocol import GRANULARITIES, PROTOCOL_VERSION
from .auth import bearer_matches
from .segment_routes import install as install_segment_routes
from .cascade import MAX_IMAGE_PIXELS, MAX_QUESTION_CHARS, AskOptions, CancelledError, CascadeError

log = logging.getLogger("georeasoner.server")

API_PREFIX = "/v1"
NDJSON = "application/x-ndjson"
PUBLIC_PATHS = frozenset({f"{API_PREFIX}/health", "/openapi.json"})
LISTENING_PREFIX = "GeoReasoner backend listening on"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_QUEUE_SIZE = 8
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MAX_BODY_BYTES = 128 * 1024 * 1024
MAX_REQUEST_PART_BYTES = 1024 * 1024  # the JSON part; a question is at most a few kilobytes
RETRY_AFTER_LOADING_S = 5
_FIRST_DURATION_GUESS_S = 10.0

STATE_LOADING, STATE_READY, STATE_ERROR = "loading", "ready", "error"

_IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
)


# --------------------------------------------------------------------------------------- errors
class ApiError(Exception):
    """An answer other than 200, with what the user can do about it."""

    def __init__(self, status: int, code: str, message: str, headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


class BodyTooLarge(Exception):
    """Raised from the request's receive channel once the body outgrows the limit."""


def error_body(status: int, code: str, message: str) -> Dict[str, Any]:
    return {"error": {"status": int(status), "code": code, "message": _sentence(message)}}


def error_response(status: int, code: str, message: str, headers: Optional[Dict[str, str]] = None) -> JSONResponse:
    return JSONResponse(error_body(status, code, message), status_code=status, headers=headers)


# ------------------------------------------------------------------------------------ settings
@dataclass
class ServiceConfig:
    """What the service loads and the limits it enforces (the CLI's `serve` options)."""

    profile: str = DEFAULT_PROFILE
    reasoner: Optional[str] = None  # hub id or folder; None: the profile's published checkpoint
    adapter: Optional[str] = None
    segmenter: Optional[str] = None  # None: no SAM2, only boxes and points can be asked for
    recorded_output: Optional[str] = None  # replay mode: this raw model output answers every question
    recorded_source: Optional[str] = None  # where the recorded output came from (for info and health)
    reasoner_url: Optional[str] = None  # OpenAI-compatible endpoint instead of an in-process reasoner
    reasoner_model: Optional[str] = None
    reasoner_api_key: Optional[str] = None
    device: str = "auto"
    dtype: str = "auto"
    queue_size: int = DEFAULT_QUEUE_SIZE
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_image_pixels: int = MAX_IMAGE_PIXELS

    @property
    def replay(self) -> bool:
        return self.recorded_output is not None

    def validate(self) -> None:
        """ValueError with a user-facing message for settings that cannot work."""
        get_profile(self.profile)
        if self.replay and (self.reasoner or self.reasoner_url):
            raise ValueError("--reasoner-output replays a recorded answer; it cannot be combined with "
                             "--reasoner or --reasoner-url")
        if self.reasoner_url and not self.reasoner_model:
            raise ValueError("--reasoner-url needs --reasoner-model (the model name the endpoint serves)")
        if self.reasoner_model and not self.reasoner_url:
            raise ValueError("--reasoner-model names the model of a --reasoner-url endpoint; give the URL too")
        if self.reasoner_url and (self.reasoner or self.adapter):
            raise ValueError("with --reasoner-url the model and its adapter are loaded by the remote server; "
                             "drop --reasoner/--adapter")
        if not self.replay and not self.reasoner_url and not (self.reasoner or get_profile(self.profile).default_checkpoint):
            raise ValueError(f"profile {self.profile} has no published checkpoint; pass --reasoner with your model "
                             f"(hub id or folder)")
        if not 1 <= self.queue_size <= 10_000:
            raise ValueError("--queue-size must be between 1 and 10000")
        if not 0 < self.timeout_s <= 86_400 or not math.isfinite(self.timeout_s):
            raise ValueError("--timeout must be a positive number of seconds (at most a day)")
        if self.max_body_bytes < 1024:
            raise ValueError("--max-body-bytes must be at least 1024")
        if not 1 <= self.max_image_pixels <= MAX_IMAGE_PIXELS:
            raise ValueError(f"--max-image-pixels must be between 1 and {MAX_IMAGE_PIXELS}")

    def reasoner_label(self) -> Optional[str]:
        if self.replay:
            return None
        if self.reasoner_url:
            from .remote_reasoner import _redacted
            return f"{self.reasoner_model} at {_redacted(self.reasoner_url)}"
        name = self.reasoner or get_profile(self.profile).default_checkpoint
        return f"{name} + adapter {self.adapter}" if self.adapter else name


# ------------------------------------------------------------------------------ request schema
Granularity = Literal["boxes", "points", "masks", "contours"]


class AskRequest(BaseModel):
    """The JSON of the `request` part of POST /v1/ask and /v1/ask/stream."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    question: str = Field(description=f"the question about the image (at most {MAX_QUESTION_CHARS} characters)")
    profile: Optional[str] = Field(None, description="prompt profile; null: the server's default")
    outputs: List[Granularity] = Field(default_factory=lambda: list(GRANULARITIES), min_length=1, max_length=16,
                                       description="which granularities to compute")
    max_new_tokens: int = Field(1024, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0: greedy decoding")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: Optional[int] = Field(None, ge=0, le=2**63 - 1)
    simplify_tolerance: float = Field(0.0, ge=0.0, le=1e6, description="contour simplification, image pixels")
    min_area: float = Field(0.0, ge=0.0, le=1e12, description="contour parts and holes below this many pixels are dropped")


class HealthResponse(BaseModel):
    status: Literal["loading", "ready", "error"]
    detail: str
    version: str


class ModelsInfo(BaseModel):
    reasoner: Optional[str]
    segmenter: Optional[str]


class ProfileInfo(BaseModel):
    name: str
    title: str
    frame: str


class LimitsInfo(BaseModel):
    max_body_bytes: int
    max_image_pixels: int
    max_question_chars: int
    max_objects: int
    queue_size: int
    request_timeout_s: float


class InfoResponse(BaseModel):
    version: str
    protocol_version: int
    models: ModelsInfo
    profiles: List[ProfileInfo]
    default_profile: str
    device: str
    dtype: str
    replay: bool
    limits: LimitsInfo


class ErrorDetail(BaseModel):
    status: int
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


# ---------------------------------------------------------------------------------- the image
def sniff_image_type(data: bytes) -> Optional[str]:
    for signature, kind in _IMAGE_SIGNATURES:
        if data.startswith(signature):
            return kind
    return None


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """PNG / JPEG / TIFF bytes -> (H, W, 3) uint8, or ApiError 413 / 415 / 400."""
    from PIL import Image

    from .imagery import ImageryError, read_image_bytes

    if not data:
        raise ApiError(400, "corrupt_image", "the image part is empty (0 bytes); attach the image file")
    kind = sniff_image_type(data)
    if kind is None:
        raise ApiError(415, "unsupported_image_type",
                       "the image is not PNG, JPEG or TIFF (judging by its first bytes); send it in one of those formats")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Only the decoder the signature names: the bytes never reach any other image plugin.
            with Image.open(io.BytesIO(data), formats=[kind]) as header:
                width, height = header.size
    except Image.DecompressionBombError:
        raise ApiError(413, "image_too_large", f"the image claims more pixels than this server decodes (limit "
                                               f"{max_pixels}); send a smaller image") from None
    except Exception:  # noqa: BLE001 - any decoder failure on untrusted bytes means the same thing
        raise ApiError(400, "corrupt_image", f"the {kind} image could not be read (truncated or corrupt?); "
                                             f"export it again and resend") from None
    if width * height > max_pixels:
        raise ApiError(413, "image_too_large", f"the image is {width} x {height} = {width * height} pixels; this "
                                               f"server accepts at most {max_pixels}. Send a smaller or downsampled image")
    try:
        return read_image_bytes(data, max_pixels=max_pixels)
    except ImageryError as exc:
        raise ApiError(400, "corrupt_image", f"the {kind} image could not be decoded: {exc}") from None
    except Exception:  # noqa: BLE001
        raise ApiError(400, "corrupt_image", f"the {kind} image could not be decoded (truncated or corrupt?); "
                                             f"export it again and resend") from None


# ----------------------------------------------------------------------------------- the queue
class Job:
    """One accepted request: what to ask, and the channel its events travel back on."""

    def __init__(self, loop: asyncio.AbstractEventLoop, image: np.ndarray, question: str, profile: Optional[str],
                 options: AskOptions, streaming: bool, timeout_s: float):
        self.id = uuid.uuid4().hex[:12]
        self.loop = loop
        self.image = image
        self.question = question
        self.profile = profile
        self.options = options
        self.streaming = streaming
        self.timeout_s = timeout_s
        self.accepted = time.monotonic()
        self.deadline = self.accepted + timeout_s
        self.started: Optional[float] = None
        self.events: "asyncio.Queue[dict]" = asyncio.Queue()
        self.cancelled = threading.Event()
        self.position: Optional[int] = None

    def should_stop(self) -> bool:
        return self.cancelled.is_set() or time.monotonic() >= self.deadline

    def post(self, event: dict) -> None:
        """Thread-safe: hand an event to the request's coroutine."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is gone (shutdown): nobody is listening any more
            pass

    def timeout_error(self) -> dict:
        started = self.started if self.started is not None else time.monotonic()
        waited = max(0.0, started - self.accepted)
        return error_event(504, "timeout",
                           f"the request did not finish within the server's time limit of {self.timeout_s:g} s "
                           f"({waited:.0f} s of it waiting in the queue); ask with a smaller image or fewer tokens, "
                           f"or start the server with a larger --timeout")


def error_event(status: int, code: str, message: str, headers: Optional[Dict[str, str]] = None) -> dict:
    # Keys starting with "_" are for the plain (non-streaming) response only.
    return {"event": "error", "status": status, "message": _sentence(message), "_code": code,
            "_headers": headers or {}}


def public_event(event: dict) -> dict:
    return {k: v for k, v in event.items() if not k.startswith("_")}


Loader = Callable[["ServiceConfig"], Tuple[Any, Dict[str, str]]]


class Service:
    """Model state, the bounded FIFO queue and the one worker thread that runs the cascade."""

    def __init__(self, config: ServiceConfig, loader: Optional[Loader] = None):
        self.config = config
        self.state = STATE_LOADING
        self.detail = "loading models"
        self.cascade = None
        self.runtime = {"device": config.device, "dtype": config.dtype}
        self.models = {"reasoner": config.reasoner_label(), "segmenter": config.segmenter}
        self._loader = loader or load_cascade
        self._lock = threading.Condition()
        self._waiting: Deque[Job] = deque()
        self._running: Optional[Job] = None
        self._closed = False
        self._mean_duration_s = _FIRST_DURATION_GUESS_S
        self._thread: Optional[threading.Thread] = None

    # -- life cycle
    def start(self) -> None:
        # Health needs no token: its detail names no model or path (/v1/info, behind the token, does).
        self.detail = "loading models"
        self._thread = threading.Thread(target=self._load_then_work, name="georeasoner-worker", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for job in self._waiting:
                job.cancelled.set()
            self._waiting.clear()
            if self._running is not None:
                self._running.cancelled.set()
            self._lock.notify_all()

    def _model_summary(self) -> str:
        reasoner = self.models["reasoner"] or f"replay of {self.config.recorded_source or 'a recorded answer'}"
        segmenter = self.models["segmenter"] or "none (boxes and points only)"
        return f"reasoner {reasoner}; segmenter {segmenter}"

    def _load_then_work(self) -> None:
        started = time.perf_counter()
        try:
            cascade, runtime = self._loader(self.config)
        except Exception as exc:  # noqa: BLE001 - the reason goes to health and to every ask
            from .models import ModelLoadError
            from .remote_reasoner import RemoteReasonerError

            if isinstance(exc, (ModelLoadError, RemoteReasonerError, ValueError, OSError)):
                reason = str(exc)
            else:
                log.error("loading the models failed:\n%s", traceback.format_exc())
                reason = f"loading the models failed unexpectedly ({type(exc).__name__}: {exc}); see the server log"
            with self._lock:
                self.state, self.detail = STATE_ERROR, reason
            log.error("models not loaded: %s", reason)
            return
        with self._lock:
            self.cascade = cascade
            self.runtime.update(runtime)
            self.state = STATE_READY
            self.detail = "ready"
        log.info("models ready in %.1f s: %s", time.perf_counter() - started, self._model_summary())
        self._work()

    # -- admission
    def check_ready(self) -> None:
        if self.state == STATE_LOADING:
            raise ApiError(503, "loading", f"the models are still loading ({self._model_summary()}); ask again "
                                           f"in a few seconds", {"Retry-After": str(RETRY_AFTER_LOADING_S)})
        if self.state == STATE_ERROR:
            raise ApiError(503, "models_failed", f"the models could not be loaded: {self.detail}. Fix this and "
                                                 f"restart the server")

    def check_room(self) -> None:
        with self._lock:
            if len(self._waiting) >= self.config.queue_size:
                raise self._queue_full()

    def _queue_full(self) -> ApiError:
        wait = self._mean_duration_s * (len(self._waiting) + 1)
        retry_after = int(min(3600, max(1, math.ceil(wait))))
        return ApiError(429, "queue_full", f"the server is busy: {len(self._waiting)} requests are already waiting "
                                           f"(the limit is {self.config.queue_size}); ask again in about "
                                           f"{retry_after} s", {"Retry-After": str(retry_after)})

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._closed:
                raise ApiError(503, "shutting_down", "the server is shutting down; start it again and resend")
            if len(self._waiting) >= self.config.queue_size:
                raise self._queue_full()
            self._waiting.append(job)
            self._announce_positions()
            self._lock.notify_all()

    def cancel(self, job: Job, why: str) -> None:
        """Frees the job's place: dropped from the queue, or its generation stopped at the next token."""
        with self._lock:
            if job.cancelled.is_set():
                return
            job.cancelled.set()
            if job in self._waiting:
                self._waiting.remove(job)
                self._announce_positions()
                log.info("request %s dropped from the queue: %s", job.id, why)
            elif job is self._running:
                log.info("request %s cancelled while running: %s", job.id, why)

    def queue_length(self) -> int:
        with self._lock:
            return len(self._waiting)

    def _announce_positions(self) -> None:
        ahead = 1 if self._running is not None else 0
        for index, job in enumerate(self._waiting):
            position = index + ahead
            if job.position != position:
                job.position = position
                if job.streaming:
                    job.post({"event": "queued", "position": position})

    # -- the worker
    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                job = self._waiting.popleft()
                self._running = job
                self._announce_positions()
            try:
                self._run(job)
            finally:
                with self._lock:
                    self._running = None
                    self._announce_positions()

    def _run(self, job: Job) -> None:
        from .remote_reasoner import RemoteReasonerError

        if job.cancelled.is_set():
            return
        if job.should_stop():
            job.post(job.timeout_error())
            return
        job.started = time.monotonic()
        try:
            answer = self._ask(job)
        except CancelledError:
            if job.cancelled.is_set():
                log.info("request %s stopped: the client went away", job.id)
            else:
                log.info("request %s stopped: time limit reached", job.id)
                job.post(job.timeout_error())
        except CascadeError as exc:
            job.post(error_event(422, "invalid_request", _sentence(str(exc))))
        except RemoteReasonerError as exc:
            job.post(error_event(502, "reasoner_unavailable", _sentence(str(exc))))
        except Exception:  # noqa: BLE001 - a bug must not take the worker (and the server) down
            log.error("request %s failed:\n%s", job.id, traceback.format_exc())
            job.post(error_event(500, "internal_error", "the server failed on this request (a bug: the server log "
                                                        "has the details); please report it"))
        else:
            job.post({"event": "answer", "answer": answer})
            log.info("request %s answered in %.2f s (%.2f s queued): %d object(s), parse %s", job.id,
                     time.monotonic() - job.started, job.started - job.accepted, len(answer["objects"]),
                     answer["parse"]["status"])
        finally:
            elapsed = time.monotonic() - job.started
            self._mean_duration_s = 0.7 * self._mean_duration_s + 0.3 * elapsed
            job.image = None  # the request's coroutine may outlive the job; the pixels need not

    def _ask(self, job: Job) -> dict:
        def on_event(kind: str, data: dict) -> None:
            if not job.streaming:
                return
            if kind == "stage":
                job.post({"event": "stage", "stage": data["stage"]})
            elif kind == "token":
                job.post({"event": "token", "text": data["text"]})

        raw_output = self.config.recorded_output
        if raw_output is not None and job.streaming:
            # Replay streams the recorded text like a model would, so clients see the same events.
            on_event("stage", {"stage": "reason"})
            for piece in re.findall(r"\s*\S+|\s+", raw_output):
                if job.should_stop():
                    raise CancelledError("cancelled during replay")
                on_event("token", {"text": piece})
        result = self.cascade.ask(job.image, job.question, profile=job.profile, options=job.options,
                                  raw_output=raw_output, on_event=on_event, should_stop=job.should_stop)
        return _finite(result.answer.to_dict())


def _sentence(text: str) -> str:
    """One line, capitalised, ending in a full stop: messages are shown to users as they are."""
    text = " ".join(str(text).split())
    if not text:
        return text
    text = text[:1].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def _finite(value):
    """JSON has no NaN or infinity: such a number (a degenerate score) becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def load_cascade(config: ServiceConfig):
    """(Cascade, {"device", "dtype"}) for the configured models; raises ModelLoadError and friends."""
    from .cascade import Cascade

    reasoner = segmenter = None
    runtime: Dict[str, str] = {}
    if config.reasoner_url:
        from .remote_reasoner import RemoteReasoner, RemoteReasonerError

        reasoner = RemoteReasoner(config.reasoner_url, config.reasoner_model, api_key=config.reasoner_api_key,
                                  read_timeout_s=config.timeout_s)
        try:
            served = reasoner.list_models()
        except RemoteReasonerError as exc:
            log.warning("%s; requests fail with 502 until it answers", exc)
        else:
            if served and config.reasoner_model not in served:
                raise ValueError(f"the reasoning server at {reasoner.display_url} serves {', '.join(served)}, not "
                                 f"{config.reasoner_model}; pass one of those to --reasoner-model")
    elif not config.replay:
        from .reasoner import Reasoner

        model = config.reasoner or get_profile(config.profile).default_checkpoint
        reasoner = Reasoner(model, adapter=config.adapter, device=config.device, dtype=config.dtype)
        runtime = _runtime_of(reasoner)
    if config.segmenter:
        from .segmenter import Segmenter

        segmenter = Segmenter(config.segmenter, device=config.device, dtype=config.dtype)
        runtime = runtime or _runtime_of(segmenter)
    # Replay or a remote reasoner without SAM2: no model runs here.
    runtime = runtime or {"device": "none", "dtype": "none"}
    return Cascade(reasoner=reasoner, segmenter=segmenter, profile=config.profile), runtime


def _runtime_of(model) -> Dict[str, str]:
    return {"device": str(model.device), "dtype": str(model.dtype).replace("torch.", "")}


# ----------------------------------------------------------------------------- the HTTP gate
def host_name(host_header: Optional[str]) -> str:
    """The name in a Host header, without port and brackets, lower case."""
    host = (host_header or "").strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def is_loopback_name(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_loopback_bind(host: str) -> bool:
    return is_loopback_name(host_name(host) if not host.startswith("[") else host.strip("[]"))


async def _drain(receive, limit: int) -> bool:
    """Reads and discards the rest of the request body; False when it exceeds `limit` (then the
    connection must be closed). A client still sending gets the error instead of a reset."""
    drained = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return False
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
        if drained > limit:
            return False


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
            await self._refuse(scope, receive, send, 413, "body_too_large", _too_large_message(self.max_body_bytes))
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    if message.get("more_body", False):
                        await _drain(receive, self.max_body_bytes)
                    raise BodyTooLarge()
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, scope, receive, send, status: int, code: str, message: str,
                      headers: Optional[Dict[str, str]] = None) -> None:
        headers = dict(headers or {})
        if not await _drain(receive, self.max_body_bytes):
            headers["Connection"] = "close"
        await error_response(status, code, message, headers)(scope, receive, send)


def _too_large_message(limit: int) -> str:
    return (f"the request body is larger than this server's limit of {limit} bytes ({limit / 2**20:.0f} MiB); "
            f"send a smaller image (downsample it, or use JPEG) or start the server with a larger --max-body-bytes")


# ------------------------------------------------------------------------------------ the app
_ERROR_RESPONSES = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "corrupt image"), (401, "missing or wrong bearer token"), (403, "foreign Host header"),
        (413, "body too large, or too many decoded pixels"), (415, "not multipart, or not a PNG/JPEG/TIFF image"),
        (422, "malformed request JSON or fields"), (429, "queue full (Retry-After)"),
        (502, "the remote reasoning server failed"), (503, "models loading (Retry-After) or failed"),
        (504, "per-request time limit reached"),
    )
}

_ASK_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image", "request"],
                "properties": {
                    "image": {"type": "string", "format": "binary", "description": "PNG, JPEG or TIFF bytes"},
                    "request": {"$ref": "#/components/schemas/AskRequest"},
                },
            },
            "encoding": {"request": {"contentType": "application/json"},
                         "image": {"contentType": "image/png, image/jpeg, image/tiff"}},
        }
    },
}

_STREAM_EVENTS_DOC = (
    "One JSON object per line: {\"event\": \"queued\", \"position\": n} (requests ahead of this one, the running "
    "one included; repeated as it changes), {\"event\": \"stage\", \"stage\": name} (preprocess, reason, parse, "
    "segment, vectorize, done), {\"event\": \"token\", \"text\": piece} (the model's output as it is generated; "
    "the pieces add up to the answer's raw_output), then exactly one final {\"event\": \"answer\", \"answer\": {...}} "
    "or {\"event\": \"error\", \"status\": int, \"message\": str}. Problems found before the stream starts "
    "(token, body, fields, image, queue full, models not ready) are ordinary HTTP errors."
)


def create_app(service: Service, *, token: str, loopback_only: bool = True) -> FastAPI:
    """The ASGI application; `service` owns the models and the queue."""
    config = service.config
    app = FastAPI(title="GeoReasoner backend", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json", redirect_slashes=False,
                  description="Ask questions about imagery; answers are boxes, points, masks and contours in "
                              "pixels of the sent image. Every endpoint but health needs 'Authorization: Bearer "
                              "<token>'.")

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            message = (f"there is no endpoint {request.url.path}; the API lives under {API_PREFIX} "
                       f"(health, info, ask, ask/stream; see /openapi.json)")
            return error_response(404, "not_found", message)
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            return error_response(405, "method_not_allowed",
                                  f"{request.method} is not allowed on {request.url.path}; use {allowed or 'another method'}",
                                  exc.headers)
        return error_response(exc.status_code, "http_error", _sentence(str(exc.detail)), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return error_response(422, "invalid_request", "the request is malformed; see /openapi.json")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.error("unhandled error on %s %s:\n%s", request.method, request.url.path,
                  "".join(traceback.format_exception(exc)))
        return error_response(500, "internal_error", "the server failed on this request (a bug: the server log has "
                                                     "the details); please report it")

    @app.get(f"{API_PREFIX}/health", response_model=HealthResponse, tags=["service"],
             summary="Model state; no token needed", responses={403: _ERROR_RESPONSES[403]})
    async def health():
        return {"status": service.state, "detail": service.detail, "version": __version__}

    @app.get(f"{API_PREFIX}/info", response_model=InfoResponse, tags=["service"],
             summary="Models, profiles, device and limits",
             responses={s: _ERROR_RESPONSES[s] for s in (401, 403)})
    async def info():
        return {
            "version": __version__,
            "protocol_version": PROTOCOL_VERSION,
            "models": service.models,
            "profiles": [{"name": p.name, "title": p.title, "frame": p.frame.describe()} for p in PROFILES.values()],
            "default_profile": config.profile,
            "device": service.runtime["device"],
            "dtype": service.runtime["dtype"],
            "replay": config.replay,
            "limits": {
                "max_body_bytes": config.max_body_bytes,
                "max_image_pixels": config.max_image_pixels,
                "max_question_chars": MAX_QUESTION_CHARS,
                "max_objects": MAX_OBJECTS,
                "queue_size": config.queue_size,
                "request_timeout_s": config.timeout_s,
            },
        }

    ask_responses = dict(_ERROR_RESPONSES)
    ask_responses[200] = {"description": f"the answer (core answer protocol version {PROTOCOL_VERSION}, pixels of "
                                         f"the sent image)",
                          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Answer"}}}}

    @app.post(f"{API_PREFIX}/ask", tags=["ask"], summary="Answer a question about an image",
              response_class=Response, responses=ask_responses, openapi_extra={"requestBody": _ASK_BODY})
    async def ask(request: Request):
        job = await _accept(request, streaming=False)
        event = await _final_event(request, job)
        if event["event"] == "answer":
            body = json.dumps(event["answer"], ensure_ascii=False, allow_nan=False).encode("utf-8")
            return Response(body, media_type="application/json")
        return error_response(event["status"], event["_code"], event["message"], event["_headers"])

    stream_responses = dict(_ERROR_RESPONSES)
    stream_responses[200] = {"description": _STREAM_EVENTS_DOC,
                             "content": {NDJSON: {"schema": {"$ref": "#/components/schemas/StreamEvent"}}}}

    @app.post(f"{API_PREFIX}/ask/stream", tags=["ask"], summary="Answer with progress, tokens, then the answer",
              response_class=StreamingResponse, responses=stream_responses,
              openapi_extra={"requestBody": _ASK_BODY})
    async def ask_stream(request: Request):
        job = await _accept(request, streaming=True)
        return StreamingResponse(_event_lines(job), media_type=NDJSON,
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def _accept(request: Request, streaming: bool) -> Job:
        fields = await _read_form(request, config.max_body_bytes)
        ask_request, question, options = _validate(fields["request"])
        image_bytes = fields["image"]
        service.check_ready()
        service.check_room()
        image = await run_in_threadpool(decode_image, image_bytes, config.max_image_pixels)
        job = Job(asyncio.get_running_loop(), image, question, ask_request.profile, options, streaming,
                  config.timeout_s)
        service.submit(job)
        return job

    async def _final_event(request: Request, job: Job) -> dict:
        """The job's answer or error; cancels the job when the client leaves or time runs out."""
        watcher = asyncio.create_task(_watch_disconnect(request, job))
        finished = False
        try:
            while True:
                event = await _next_event(job)
                if event["event"] in ("answer", "error"):
                    finished = True
                    return event
        finally:
            watcher.cancel()
            if not finished:
                service.cancel(job, "the request ended before its answer")

    async def _watch_disconnect(request: Request, job: Job) -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                service.cancel(job, "the client disconnected")
                job.events.put_nowait(error_event(499, "client_gone", "the client disconnected"))
                return

    async def _next_event(job: Job) -> dict:
        remaining = job.deadline - time.monotonic()
        try:
            return await asyncio.wait_for(job.events.get(), timeout=max(0.0, remaining) + 0.5)
        except asyncio.TimeoutError:
            service.cancel(job, "time limit reached")
            return job.timeout_error()

    async def _event_lines(job: Job):
        finished = False
        try:
            while not finished:
                event = await _next_event(job)
                finished = event["event"] in ("answer", "error")
                yield (json.dumps(public_event(event), ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
        finally:
            if not finished:
                service.cancel(job, "the client disconnected from the stream")

    install_segment_routes(app, service)  # POST /v1/segment (segment_routes.py)
    original_openapi = app.openapi

    def openapi() -> Dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original_openapi()
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas["AskRequest"] = AskRequest.model_json_schema()
        schemas["Answer"] = {
            "type": "object",
            "description": f"GeoReasoner answer protocol version {PROTOCOL_VERSION} "
                           "(georeasoner_plugin/core/protocol.py): pixels of the sent image, (0, 0) its top-left corner",
            "required": ["version", "question", "profile", "image", "objects"],
            "additionalProperties": True,
        }
        schemas["StreamEvent"] = {
            "type": "object", "description": _STREAM_EVENTS_DOC, "required": ["event"],
            "properties": {"event": {"type": "string", "enum": ["queued", "stage", "token", "answer", "error"]},
                           "position": {"type": "integer"}, "stage": {"type": "string"}, "text": {"type": "string"},
                           "answer": {"$ref": "#/components/schemas/Answer"}, "status": {"type": "integer"},
                           "message": {"type": "string"}},
        }
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, operations in schema.get("paths", {}).items():
            if path not in PUBLIC_PATHS:
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
    return Gate(app, token=token, loopback_only=loopback_only, max_body_bytes=config.max_body_bytes)


class _InMemoryMultiPartParser(MultiPartParser):
    # The image is decoded from memory anyway and the Gate bounds the body, so parts stay in memory:
    # spooling them to a temporary file costs a thread hop per chunk (60 ms for a 12 MB TIFF).
    spool_max_size = 2**62


async def _read_form(request: Request, max_body_bytes: int) -> Dict[str, Any]:
    """{'image': bytes, 'request': str} from the multipart body, or ApiError 413 / 415 / 422."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(415, "unsupported_media_type",
                       "send the request as multipart/form-data with a file part 'image' and a text part 'request' "
                       f"(JSON); got Content-Type {content_type[:80] or 'none'!r}")
    try:
        form = await _InMemoryMultiPartParser(request.headers, request.stream(), max_files=2, max_fields=2,
                                              max_part_size=MAX_REQUEST_PART_BYTES).parse()
    except BodyTooLarge:
        raise ApiError(413, "body_too_large", _too_large_message(max_body_bytes)) from None
    except ClientDisconnect:
        raise
    except MultiPartException as exc:
        raise ApiError(422, "malformed_form", f"the multipart body could not be read ({exc.message}); send one "
                                              f"file part 'image' and one JSON part 'request' (at most "
                                              f"{MAX_REQUEST_PART_BYTES // 1024} KiB)") from None
    except Exception:  # noqa: BLE001 - whatever the parser chokes on, the body is malformed
        raise ApiError(422, "malformed_form", "the multipart body could not be read; send one file part 'image' "
                                              "and one JSON part 'request'") from None
    try:
        names = [name for name, _ in form.multi_items()]
        unknown = sorted(set(names) - {"image", "request"})
        if unknown:
            raise ApiError(422, "malformed_form", f"unexpected part(s) {', '.join(repr(n) for n in unknown)}; send "
                                                  f"only 'image' (the file) and 'request' (JSON)")
        for name in ("image", "request"):
            if names.count(name) != 1:
                raise ApiError(422, "malformed_form", f"the body needs exactly one part named {name!r} (found "
                                                      f"{names.count(name)}): 'image' is the image file, 'request' "
                                                      f"the JSON with the question")
        image_part, request_part = form["image"], form["request"]
        if not isinstance(image_part, UploadFile):
            raise ApiError(422, "malformed_form", "the 'image' part must be a file part (Content-Disposition with a "
                                                  "filename) holding the image bytes")
        if isinstance(request_part, UploadFile):
            raw = await request_part.read(MAX_REQUEST_PART_BYTES + 1)
            if len(raw) > MAX_REQUEST_PART_BYTES:
                raise ApiError(422, "malformed_form", f"the 'request' part is larger than "
                                                      f"{MAX_REQUEST_PART_BYTES // 1024} KiB; it holds only the "
                                                      f"question and options")
            request_part = raw.decode("utf-8", "replace")
        return {"image": await image_part.read(), "request": request_part}
    finally:
        await form.close()


def _validate(text: str) -> Tuple[AskRequest, str, AskOptions]:
    try:
        ask_request = AskRequest.model_validate_json(text)
    except ValidationError as exc:
        raise _field_error(exc) from None
    question = ask_request.question.strip()
    try:
        question.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(422, "invalid_field", "the question holds characters that are not valid Unicode text "
                                             "(lone surrogates); send it as UTF-8") from None
    if not question:
        raise ApiError(422, "empty_question", "the question is empty; type a question about the image")
    if len(question) > MAX_QUESTION_CHARS:
        raise ApiError(422, "question_too_long", f"the question is {len(question)} characters long; the limit is "
                                                 f"{MAX_QUESTION_CHARS}. Shorten it")
    if ask_request.profile is not None:
        try:
            get_profile(ask_request.profile)
        except UnknownProfileError as exc:
            raise ApiError(422, "unknown_profile", f"{exc}; pick one of those or null for the server's default") \
                from None
    outputs = [g for g in GRANULARITIES if g in ask_request.outputs]
    options = AskOptions(granularities=outputs, max_new_tokens=ask_request.max_new_tokens,
                         temperature=ask_request.temperature, top_p=ask_request.top_p, seed=ask_request.seed,
                         simplify_tolerance=ask_request.simplify_tolerance, min_area=ask_request.min_area)
    try:
        options.validate()
    except CascadeError as exc:
        raise ApiError(422, "invalid_field", _sentence(str(exc))) from None
    return ask_request, question, options


def _field_error(exc: ValidationError) -> ApiError:
    errors = exc.errors(include_url=False, include_input=False)
    if any(e["type"] == "json_invalid" for e in errors):
        return ApiError(422, "invalid_json", "the 'request' part is not valid JSON; send a JSON object such as "
                                             "{\"question\": \"...\"}")
    if any(e["type"] in ("model_type", "dict_type", "model_attributes_type") and not e["loc"] for e in errors):
        return ApiError(422, "invalid_json", "the 'request' part must be a JSON object such as {\"question\": \"...\"}")
    problems = []
    for error in errors[:3]:
        field = ".".join(str(part) for part in error["loc"]) or "request"
        if error["type"] == "extra_forbidden":
            known = ", ".join(AskRequest.model_fields)
            problems.append(f"'{field}' is not a known field (known: {known})")
        elif error["type"] == "missing":
            problems.append(f"'{field}' is required")
        else:
            problems.append(f"'{field}': {error['msg'][:1].lower()}{error['msg'][1:]}")
    code = "missing_question" if any(e["type"] == "missing" and e["loc"] == ("question",) for e in errors) \
        else "invalid_field"
    return ApiError(422, code, "; ".join(problems) + "; fix the request and resend")


# -------------------------------------------------------------------------------- running it
def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free port (read it back from getsockname())."""
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    infos = socket.getaddrinfo(bare, port, family if ":" in bare else socket.AF_UNSPEC, socket.SOCK_STREAM)
    family, socktype, proto, _, address = infos[0]
    # proto must be IPPROTO_TCP (not 0): asyncio turns Nagle's algorithm off only on sockets that say
    # so, and with it on, every keep-alive response waits for a delayed ACK (40 ms on Linux).
    sock = socket.socket(family, socktype, proto or socket.IPPROTO_TCP)
    try:
        if sys.platform != "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def exposure_warning(host: str) -> Optional[str]:
    """What to print when the server is reachable from other machines; None on loopback."""
    if is_loopback_bind(host):
        return None
    return (f"warning: listening on {host}, reachable from other machines: anyone with the token can use this "
            f"server and its GPU, and the traffic (token included) is not encrypted. Use a firewall, or keep "
            f"--host 127.0.0.1 and reach it through an SSH tunnel.")


def url_of(sock: socket.socket) -> str:
    address = sock.getsockname()
    host, port = address[0], address[1]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


def run_server(config: ServiceConfig, *, host: str, port: int, token: str, token_file: Path,
               log_level: str = "info", loader: Optional[Loader] = None) -> None:
    """Bind, announce the URL on stdout, load the models in the background, serve until interrupted."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    loopback = is_loopback_bind(host)
    sock = bind_socket(host, port)
    url = url_of(sock)
    service = Service(config, loader=loader)
    app = create_app(service, token=token, loopback_only=loopback)
    warning = exposure_warning(host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(f"Token file: {token_file} (send its content as 'Authorization: Bearer <token>')", flush=True)

    class _AnnouncingServer(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.started:
                print(f"{LISTENING_PREFIX} {url}", flush=True)

    # Logs go to stderr: stdout carries only the lines a launching client parses (token file, URL).
    # The access log shows method, path and status, never headers (the token travels in one).
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    uvicorn_config = uvicorn.Config(app, log_level=log_level, log_config=log_config, access_log=True,
                                    proxy_headers=False, server_header=False, timeout_graceful_shutdown=3,
                                    lifespan="off")
    server = _AnnouncingServer(uvicorn_config)
    service.start()
    try:
        server.run(sockets=[sock])
    finally:
        service.close()
        sock.close()
