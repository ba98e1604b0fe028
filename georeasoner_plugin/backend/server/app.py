"""The FastAPI application: the routes of /v1 behind the security gate.

Routers of other features are included in `create_app` at the marked place ("routers").
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
from typing import Any, Dict

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ... import __version__
from ...core.api import (API_PREFIX, ASK_PATH, ASK_STREAM_PATH, EVENT_ANSWER, FINAL_EVENTS, HEALTH_PATH, INFO_PATH,
                         MAX_QUESTION_CHARS, NDJSON_MEDIA_TYPE, OPENAPI_PATH, PUBLIC_PATHS)
from ...core.parsing import MAX_OBJECTS
from ...core.profiles import PROFILES
from ...core.protocol import PROTOCOL_VERSION
from .errors import ApiError, error_event, error_response, public_event, sentence as _sentence
from .forms import read_form as _read_form, validate_request as _validate
from .gate import Gate
from .images import decode_image
from .schema import (ASK_BODY as _ASK_BODY, ERROR_RESPONSES as _ERROR_RESPONSES, STREAM_EVENT_SCHEMA,
                     STREAM_EVENTS_DOC as _STREAM_EVENTS_DOC, AskRequest, HealthResponse, InfoResponse)
from .service import Job, Service

log = logging.getLogger("georeasoner.server")
NDJSON = NDJSON_MEDIA_TYPE


def create_app(service: Service, *, token: str, loopback_only: bool = True) -> FastAPI:
    """The ASGI application; `service` owns the models and the queue."""
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
        return {"status": service.state, "detail": service.detail, "version": __version__}

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

    @app.post(ASK_PATH, tags=["ask"], summary="Answer a question about an image",
              response_class=Response, responses=ask_responses, openapi_extra={"requestBody": _ASK_BODY})
    async def ask(request: Request):
        job = await _accept(request, streaming=False)
        event = await _final_event(request, job)
        if event["event"] == EVENT_ANSWER:
            body = json.dumps(event["answer"], ensure_ascii=False, allow_nan=False).encode("utf-8")
            return Response(body, media_type="application/json")
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
                finished = event["event"] in FINAL_EVENTS
                yield (json.dumps(public_event(event), ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
        finally:
            if not finished:
                service.cancel(job, "the client disconnected from the stream")

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
