"""The queue and its worker: one thread owns the models (one GPU) and answers requests in arrival
order from a bounded FIFO queue; request coroutines wait on their job's event channel."""
from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
import traceback
import uuid
from collections import deque
from typing import Any, Callable, Deque, Dict, Optional, Tuple

import numpy as np

from ...core.api import (CODE_LOADING, CODE_QUEUE_FULL, CODE_SHUTTING_DOWN, EVENT_ANSWER, EVENT_QUEUED,
                         EVENT_STAGE, EVENT_TOKEN, STAGE_REASON, STATE_ERROR, STATE_LOADING, STATE_READY,
                         server_timing)
from ...core.profiles import get_profile
from ..cascade import AskCancelled, AskOptions, CascadeError
from .admission import ImageBudget
from .config import ServiceConfig
from .errors import ApiError, error_event, sentence as _sentence

log = logging.getLogger("georeasoner.server")

RETRY_AFTER_LOADING_S = 5
_DURATION_WINDOW = 20  # service times the Retry-After estimate is based on (the most recent ones)

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
        self.finished: Optional[float] = None  # the worker posted the answer (time.monotonic)
        self.timings: Dict[str, float] = {}  # seconds of the request's stages before the queue (read, decode)
        self.events: "asyncio.Queue[dict]" = asyncio.Queue()
        self.cancelled = threading.Event()
        self.position: Optional[int] = None
        self.reservation = None  # admission.Reservation of the decoded image's bytes
        self.shutting_down = False  # set by Service.begin_shutdown: the deadline is the grace period's end

    def should_stop(self) -> bool:
        return self.cancelled.is_set() or time.monotonic() >= self.deadline

    def release(self) -> None:
        """Gives the image's memory back (idempotent): the job ran, failed or was dropped."""
        self.image = None
        if self.reservation is not None:
            self.reservation.release()

    def post(self, event: dict) -> None:
        """Thread-safe: hand an event to the request's coroutine."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is gone (shutdown): nobody is listening any more
            pass

    def server_timing(self) -> str:
        """The Server-Timing header value of an answered job (core/api.py)."""
        timings = dict(self.timings)
        if self.started is not None:
            timings["queue"] = self.started - self.accepted
            if self.finished is not None:
                timings["run"] = self.finished - self.started
        return server_timing(timings)

    def timeout_error(self) -> dict:
        if self.shutting_down:
            return shutdown_event()
        started = self.started if self.started is not None else time.monotonic()
        waited = max(0.0, started - self.accepted)
        return error_event(504, "timeout",
                           f"the request did not finish within the server's time limit of {self.timeout_s:g} s "
                           f"({waited:.0f} s of it waiting in the queue); ask with a smaller image or fewer tokens, "
                           f"or start the server with a larger --timeout")


def shutdown_event() -> dict:
    return error_event(503, CODE_SHUTTING_DOWN, "the server is shutting down and stopped this request; resend it "
                                                "once the server is running again", {"Retry-After": "5"})


Loader = Callable[[ServiceConfig], Tuple[Any, Dict[str, str]]]


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
        self._admitting = 0  # places reserved by requests still reading their body
        self._durations: Deque[float] = deque(maxlen=_DURATION_WINDOW)
        self.budget = ImageBudget(config.image_memory_bytes)
        self.stats = {"decoding": 0, "decoding_peak": 0}  # images being decoded now / at most (event loop only)
        self._thread: Optional[threading.Thread] = None

    # -- life cycle
    def start(self) -> None:
        # Health needs no token: its detail names no model or path (/v1/info, behind the token, does).
        self.detail = "loading models"
        self._thread = threading.Thread(target=self._load_then_work, name="georeasoner-worker", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stops at once: begin_shutdown without a grace period."""
        self.begin_shutdown(0.0)

    def begin_shutdown(self, grace_s: float) -> None:
        """No new request is admitted (503 shutting_down); the queued ones end at once with a final
        503 shutting_down event; the running one has `grace_s` seconds to finish, then gets the same."""
        with self._lock:
            self._closed = True
            for job in self._waiting:
                job.shutting_down = True
                job.cancelled.set()
                job.post(shutdown_event())
                job.release()
            if self._waiting:
                log.info("shutting down: %d queued request(s) answered 503", len(self._waiting))
            self._waiting.clear()
            running = self._running
            if running is not None:
                running.shutting_down = True
                running.deadline = min(running.deadline, time.monotonic() + max(0.0, grace_s))
                log.info("shutting down: the running request %s has %.0f s to finish", running.id, grace_s)
            self._lock.notify_all()

    def public_detail(self) -> str:
        """The state for /v1/health (no token): never a model name, path or URL."""
        if self.state == STATE_ERROR:
            return "the models could not be loaded; the reason is in /v1/info (with the token) and the server log"
        return "ready" if self.state == STATE_READY else "loading models"

    @property
    def closed(self) -> bool:
        return self._closed

    def busy(self) -> bool:
        """Whether a request is running or waiting."""
        with self._lock:
            return self._running is not None or bool(self._waiting)

    def _model_summary(self) -> str:
        reasoner = self.models["reasoner"] or f"replay of {self.config.recorded_source or 'a recorded answer'}"
        segmenter = self.models["segmenter"] or "none (boxes and points only)"
        return f"reasoner {reasoner}; segmenter {segmenter}"

    def _load_then_work(self) -> None:
        started = time.perf_counter()
        try:
            cascade, runtime = self._loader(self.config)
        except Exception as exc:  # noqa: BLE001 - the reason goes to health and to every ask
            from ..models import ModelLoadError
            from ..remote_reasoner import RemoteReasonerError

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
            raise ApiError(503, CODE_LOADING, f"the models are still loading ({self._model_summary()}); ask again "
                                           f"in a few seconds", {"Retry-After": str(RETRY_AFTER_LOADING_S)})
        if self.state == STATE_ERROR:
            raise ApiError(503, "models_failed", f"the models could not be loaded: {self.detail}. Fix this and "
                                                 f"restart the server")

    def _check_open(self) -> None:
        if self._closed:
            raise ApiError(503, CODE_SHUTTING_DOWN, "the server is shutting down; resend once it is running again",
                           {"Retry-After": "5"})

    def check_room(self) -> None:
        with self._lock:
            self._check_open()
            if len(self._waiting) + self._admitting >= self.config.queue_size:
                raise self._queue_full()

    def reserve_place(self) -> "_Place":
        """A place in the queue, held while the body is read and the image decoded (429 when none is
        free): a request is admitted before it costs memory, not after."""
        with self._lock:
            self._check_open()
            if len(self._waiting) + self._admitting >= self.config.queue_size:
                raise self._queue_full()
            self._admitting += 1
        return _Place(self)

    def _free_place(self) -> None:
        with self._lock:
            self._admitting = max(0, self._admitting - 1)

    def retry_after_s(self) -> int:
        """When a place is likely free again: the running request's expected remaining time, from the
        median of measured service times (before any was measured: as long as it has run so far)."""
        with self._lock:
            running = self._running
            durations = sorted(self._durations)
        elapsed = time.monotonic() - running.started if running is not None and running.started else 0.0
        if durations:
            typical = durations[len(durations) // 2]
            remaining = max(typical - elapsed, 0.25 * typical)
        else:
            remaining = elapsed
        return int(min(3600, max(1, math.ceil(remaining))))

    def _queue_full(self) -> ApiError:
        retry_after = self.retry_after_s()
        return ApiError(429, CODE_QUEUE_FULL, f"the server is busy: {len(self._waiting) + self._admitting} requests "
                                              f"are already waiting (the limit is {self.config.queue_size}); ask "
                                              f"again in about {retry_after} s", {"Retry-After": str(retry_after)})

    def submit(self, job: Job, place: Optional["_Place"] = None) -> None:
        with self._lock:
            if place is not None and place.held:
                place.held = False
                self._admitting = max(0, self._admitting - 1)
            self._check_open()
            if len(self._waiting) + self._admitting >= self.config.queue_size:
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
                job.release()
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
                    job.post({"event": EVENT_QUEUED, "position": position})

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
                job.release()  # the request's coroutine may outlive the job; the pixels need not
                with self._lock:
                    self._running = None
                    self._announce_positions()

    def _run(self, job: Job) -> None:
        from ..remote_reasoner import RemoteReasonerError

        if job.cancelled.is_set():
            return
        if job.should_stop():
            job.post(job.timeout_error())
            return
        job.started = time.monotonic()
        try:
            answer = self._ask(job)
        except AskCancelled:
            if job.shutting_down:
                log.info("request %s stopped: the server is shutting down", job.id)
                job.post(shutdown_event())
            elif job.cancelled.is_set():
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
            job.finished = time.monotonic()
            job.post({"event": EVENT_ANSWER, "answer": answer})
            log.info("request %s answered in %.2f s (%.2f s queued): %d object(s), parse %s", job.id,
                     time.monotonic() - job.started, job.started - job.accepted, len(answer["objects"]),
                     answer["parse"]["status"])
            with self._lock:
                self._durations.append(time.monotonic() - job.started)

    def _ask(self, job: Job) -> dict:
        def on_event(kind: str, data: dict) -> None:
            if not job.streaming:
                return
            if kind == "stage":
                job.post({"event": EVENT_STAGE, "stage": data["stage"]})
            elif kind == "token":
                job.post({"event": EVENT_TOKEN, "text": data["text"]})

        raw_output = self.config.recorded_output
        if raw_output is not None and job.streaming:
            # Replay streams the recorded text like a model would, so clients see the same events.
            on_event("stage", {"stage": STAGE_REASON})
            for piece in re.findall(r"\s*\S+|\s+", raw_output):
                if job.should_stop():
                    raise AskCancelled("cancelled during replay")
                on_event("token", {"text": piece})
        result = self.cascade.run(job.image, job.question, profile=job.profile, options=job.options,
                                  raw_output=raw_output, on_event=on_event, should_stop=job.should_stop)
        return _finite(result.answer.to_dict())



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
    from ..cascade import Cascade

    reasoner = segmenter = None
    runtime: Dict[str, str] = {}
    if config.reasoner_url:
        from ..remote_reasoner import RemoteReasoner, RemoteReasonerError

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
        from ..reasoner import Reasoner

        model = config.reasoner or get_profile(config.profile).default_checkpoint
        reasoner = Reasoner(model, adapter=config.adapter, device=config.device, dtype=config.dtype)
        runtime = _runtime_of(reasoner)
    if config.segmenter:
        from ..segmenter import Segmenter

        segmenter = Segmenter(config.segmenter, device=config.device, dtype=config.dtype)
        runtime = runtime or _runtime_of(segmenter)
    # Replay or a remote reasoner without SAM2: no model runs here.
    runtime = runtime or {"device": "none", "dtype": "none"}
    expander = None
    if config.instance_model:
        from ..instances import InstanceFinder

        expander = InstanceFinder(config.instance_model, device=config.device, dtype=config.dtype)
    return Cascade(reasoner=reasoner, segmenter=segmenter, profile=config.profile, expander=expander), runtime


def _runtime_of(model) -> Dict[str, str]:
    return {"device": str(model.device), "dtype": str(model.dtype).replace("torch.", "")}


class _Place:
    """A reserved queue place; `free()` (idempotent) gives it back when the request ends before submit."""

    def __init__(self, service: Service):
        self.service = service
        self.held = True

    def free(self) -> None:
        if self.held:
            self.held = False
            self.service._free_place()
