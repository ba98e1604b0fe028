"""The FastAPI application: the routes of /v1 behind the security gate.

Routers of other features are included in `create_app` at the marked place ("routers").
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
from typing import Any, Dict, Sequence

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ... import __version__
from ...core.api import (API_PREFIX, ASK_PATH, ASK_STREAM_PATH, EVENT_ANSWER, FINAL_EVENTS, HEALTH_PATH, INFO_PATH,
                         MAX_QUESTION_CHARS, NDJSON_MEDIA_TYPE, OPENAPI_PATH, PUBLIC_PATHS,
                         SERVER_TIMING_HEADER)
from ...core.parsing import MAX_OBJECTS
from ...core.profiles import PROFILES
from ...core.protocol import PROTOCOL_VERSION
from ...core.transport import INFO_IMAGE_FORMATS, INFO_SHARED_CAPTURE_DIR
from ..image_transport import decodable_formats
from ..jobs_routes import install_jobs
from ..segment_routes import install as install_segment_routes
from .errors import ApiError, error_event, error_response, public_event, sentence as _sentence
from .admission import decode_cost
from .forms import ClientGone, read_form as _read_form, validate_request as _validate
from .gate import Gate
from .images import decode_image_file, image_source, probe_image
from .schema import (ASK_BODY as _ASK_BODY, ERROR_RESPONSES as _ERROR_RESPONSES, STREAM_EVENT_SCHEMA,
                     STREAM_EVENTS_DOC as _STREAM_EVENTS_DOC, AskRequest, HealthResponse, InfoResponse)
from .service import Job, Service

log = logging.getLogger("georeasoner.server")
NDJSON = NDJSON_MEDIA_TYPE


def create_app(service: Service, *, token: str, loopback_only: bool = True,
               routers: Sequence[APIRouter] = ()) -> Gate:
    """The ASGI application; `service` owns the models and the queue.

    `routers` (further features: jobs, segment, ...) are included after the routes here, at the place
    marked "routers"; they sit behind the same Gate (token, Host, body size). A router that takes
    images should admit them like `_accept` does: `service.reserve_place()` before reading the body,
    `images.probe_image` + `admission.decode_cost` + `service.budget` before decoding.
    """
    config = service.config
    app = FastAPI(title="GeoReasoner backend", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=OPENAPI_PATH, redirect_slashes=False,
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

    @app.get(HEALTH_PATH, response_model=HealthResponse, tags=["service"],
             summary="Model state; no token needed", responses={403: _ERROR_RESPONSES[403]})
    async def health():
        # No token here: the detail names no model, path or URL (the reason of a failure is in /v1/info).
        return {"status": service.state, "detail": service.public_detail(), "version": __version__}

    @app.get(INFO_PATH, response_model=InfoResponse, tags=["service"],
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
            "status": service.state,
            "detail": service.detail,
            INFO_IMAGE_FORMATS: decodable_formats(),
            **({INFO_SHARED_CAPTURE_DIR: config.shared_capture_dir} if config.shared_capture_dir else {}),
            "limits": {
                "max_body_bytes": config.max_body_bytes,
                "max_image_pixels": config.max_image_pixels,
                "max_question_chars": MAX_QUESTION_CHARS,
                "max_objects": MAX_OBJECTS,
                "queue_size": config.queue_size,
                "request_timeout_s": config.timeout_s,
                "image_memory_bytes": config.image_memory_bytes,
                "max_decodes": config.max_decodes,
                "header_timeout_s": config.header_timeout_s,
                "body_timeout_s": config.body_timeout_s,
                "keep_alive_s": config.keep_alive_s,
                "max_connections": config.max_connections,
                "shutdown_grace_s": config.shutdown_grace_s,
            },
        }

    ask_responses = dict(_ERROR_RESPONSES)
    ask_responses[200] = {"description": f"the answer (core answer protocol version {PROTOCOL_VERSION}, pixels of "
                                         f"the sent image)",
                          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Answer"}}},
                          "headers": {SERVER_TIMING_HEADER: {
                              "description": "the server's stages in ms: read (body read and parsed), decode, "
                                             "queue (waiting for the worker), run (the cascade)",
                              "schema": {"type": "string"}}}}

    @app.post(ASK_PATH, tags=["ask"], summary="Answer a question about an image",
              response_class=Response, responses=ask_responses, openapi_extra={"requestBody": _ASK_BODY})
    async def ask(request: Request):
        job = await _accept(request, streaming=False)
        event = await _final_event(request, job)
        if event["event"] == EVENT_ANSWER:
            body = json.dumps(event["answer"], ensure_ascii=False, allow_nan=False).encode("utf-8")
            return Response(body, media_type="application/json", headers={SERVER_TIMING_HEADER: job.server_timing()})
        return error_response(event["status"], event["_code"], event["message"], event["_headers"])

    stream_responses = dict(_ERROR_RESPONSES)
    stream_responses[200] = {"description": _STREAM_EVENTS_DOC,
                             "content": {NDJSON: {"schema": {"$ref": "#/components/schemas/StreamEvent"}}}}

    @app.post(ASK_STREAM_PATH, tags=["ask"], summary="Answer with progress, tokens, then the answer",
              response_class=StreamingResponse, responses=stream_responses,
              openapi_extra={"requestBody": _ASK_BODY})
    async def ask_stream(request: Request):
        job = await _accept(request, streaming=True)
        return StreamingResponse(_event_lines(job), media_type=NDJSON,
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    decode_slots = asyncio.Semaphore(config.max_decodes)

    async def _accept(request: Request, streaming: bool) -> Job:
        """Admission before work: a free place before the body is read, the image's header before its
        pixels, its decoded size charged against the memory budget, at most N decodes at once."""
        service.check_ready()
        place = service.reserve_place()  # 429 (or 503 shutting_down) before a byte of the body is read
        started = time.perf_counter()
        reservation = None
        form = shared = None
        try:
            try:
                fields = await _read_form(request, config.max_body_bytes, budget=service.budget)
            except ClientGone as exc:
                log.info("request %s %s aborted by the client during the upload (%d bytes received)",
                         request.method, request.url.path, exc.received)
                raise ApiError(499, "client_gone", "the client disconnected during the upload") from None
            form, part = fields["form"], fields["image"]
            read = time.perf_counter()
            ask_request, question, options = _validate(fields["request"])
            if part is not None and ask_request.image_path is None:
                upload = part.stream()
            else:  # a shared capture (opened in a thread: a file system call), or a 422
                upload = shared = await run_in_threadpool(image_source, part, ask_request.image_path,
                                                          config.shared_capture_dir)
            # An upload in memory is probed here (its header is a few kilobytes, parsed in well under a
            # millisecond); a file is probed in a thread, like any disk read.
            in_memory = shared is None and part.in_memory
            if in_memory:
                header = probe_image(upload, config.max_image_pixels)
            else:
                header = await run_in_threadpool(probe_image, upload, config.max_image_pixels)
            cost = decode_cost(header.width, header.height, header.eight_bit, raw=header.raw_offset is not None)
            if cost > config.image_memory_bytes:
                raise ApiError(413, "image_too_large", f"decoding this {header.width} x {header.height} image needs "
                                                       f"about {cost // 2**20} MiB, more than this server's image "
                                                       f"memory ({config.image_memory_bytes // 2**20} MiB); send a "
                                                       f"smaller image or start it with a larger --image-memory-mb")
            reservation = service.budget.try_reserve(cost)
            if reservation is None:
                retry_after = service.retry_after_s()
                raise ApiError(503, "images_busy", f"the server holds as many decoded images as its memory budget "
                                                   f"allows ({config.image_memory_bytes // 2**20} MiB); ask again in "
                                                   f"about {retry_after} s, or send a smaller image",
                               {"Retry-After": str(retry_after)})
            if in_memory and header.raw_offset is not None:
                # Pixels stored as they are decoded, in memory: the image is a view of the upload (no
                # decoding, no copy), so it neither needs a decode slot nor a thread.
                image = decode_image_file(upload, header, config.max_image_pixels)
            else:
                async with decode_slots:
                    service.stats["decoding"] += 1
                    service.stats["decoding_peak"] = max(service.stats["decoding_peak"], service.stats["decoding"])
                    try:
                        image = await run_in_threadpool(decode_image_file, upload, header, config.max_image_pixels)
                    finally:
                        service.stats["decoding"] -= 1
            reservation.shrink(image.nbytes)
            job = Job(asyncio.get_running_loop(), image, question, ask_request.profile, options, streaming,
                      config.timeout_s)
            job.timings = {"read": read - started, "decode": time.perf_counter() - read}
            job.reservation, reservation = reservation, None
            try:
                service.submit(job, place)
            except ApiError:
                job.release()
                raise
            return job
        finally:
            place.free()
            if reservation is not None:
                reservation.release()
            if form is not None:
                await form.close()
            if shared is not None:
                shared.close()

    async def _final_event(request: Request, job: Job) -> dict:
        """The job's answer or error; cancels the job when the client leaves or time runs out."""
        watcher = asyncio.create_task(_watch_disconnect(request, job))
        finished = False
        try:
            while True:
                event = await _next_event(job)
                if event["event"] in FINAL_EVENTS:
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
        # Short waits, so a deadline moved by a shutdown is seen within a second.
        while True:
            remaining = job.deadline - time.monotonic() + 0.5
            if remaining <= 0:
                service.cancel(job, "the server is shutting down" if job.shutting_down else "time limit reached")
                return job.timeout_error()
            try:
                return await asyncio.wait_for(job.events.get(), timeout=min(remaining, 1.0))
            except asyncio.TimeoutError:
                continue

    async def _event_lines(job: Job):
        finished = False
        try:
            while not finished:
                event = await _next_event(job)
                finished = event["event"] in FINAL_EVENTS
                yield (json.dumps(public_event(event), ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
        finally:
            if not finished:
                service.cancel(job, "the client disconnected from the stream")

    # ---- routers: further features are included here ----
    install_jobs(app, service)  # tiled jobs, /v1/jobs (issue 10)
    install_segment_routes(app, service)  # corrections on the cached image, POST /v1/segment (issue 14)
    for router in routers:
        app.include_router(router)

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
        schemas["StreamEvent"] = STREAM_EVENT_SCHEMA
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, operations in schema.get("paths", {}).items():
            if path not in PUBLIC_PATHS:
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
    return Gate(app, token=token, loopback_only=loopback_only, max_body_bytes=config.max_body_bytes)
