"""POST /v1/segment: re-segment objects of an image from prompts (the plugin's correction tool).

The body is multipart/form-data like /v1/ask: a file part `image` (the very image an answer was
made from, so SAM2's embedding comes from the segmenter's cache) and a JSON part `request`:

    {"objects": [{"box": [x1, y1, x2, y2] | null, "points": [[x, y], ...], "labels": [1, 0, ...]}],
     "simplify_tolerance": 0.0, "min_area": 0.0, "image_key": "<32 hex digits>" | null}

in pixels of the image; label 1 is a positive point, 0 a negative one. A correction after the
first names its image instead of sending it again: `image_key` (core.api.image_key of the image's
bytes, also in every answer) with no `image` part. When the server no longer holds that image
(restarted, or newer images pushed it out) it answers 409 `image_not_cached`, and the client sends
the image again. The answer has one entry per object, in order: {"score", "mask" (run lengths, as
in the answer protocol), "polygons"}, "image_key", and "timings" (model_s, other_s, cache_hit).
The token, Host and body-size rules of the app apply.

Install with `install(app, service)` where the app is built (one line).
"""
from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from typing import List, Optional

from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool

from ..core.api import CODE_IMAGE_NOT_CACHED, IMAGE_KEY_PATTERN, SEGMENT_PATH, image_key

MAX_SEGMENT_OBJECTS = 64
MAX_POINTS_PER_OBJECT = 32


class SegmentObject(BaseModel):
    model_config = ConfigDict(extra="forbid")
    box: Optional[List[float]] = None
    points: List[List[float]] = Field(default_factory=list, max_length=MAX_POINTS_PER_OBJECT)
    labels: List[int] = Field(default_factory=list, max_length=MAX_POINTS_PER_OBJECT)

    @field_validator("box")
    @classmethod
    def _box(cls, value):
        if value is not None and len(value) != 4:
            raise ValueError("a box has four numbers: x1, y1, x2, y2")
        return value

    @field_validator("points")
    @classmethod
    def _points(cls, value):
        if any(len(p) != 2 for p in value):
            raise ValueError("a point has two numbers: x, y")
        return value


class SegmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    objects: List[SegmentObject] = Field(min_length=1, max_length=MAX_SEGMENT_OBJECTS)
    simplify_tolerance: float = Field(0.0, ge=0.0)
    min_area: float = Field(0.0, ge=0.0)
    image_key: Optional[str] = Field(None, pattern=IMAGE_KEY_PATTERN)


def _prompts(request: SegmentRequest, width: int, height: int):
    from .segmenter import SamPrompt
    from .server import ApiError

    prompts = []
    for number, obj in enumerate(request.objects, start=1):
        labels = list(obj.labels) or [1] * len(obj.points)
        if len(labels) != len(obj.points) or any(lab not in (0, 1) for lab in labels):
            raise ApiError(422, "invalid_request", f"object {number}: give one label per point, 1 (positive) or "
                                                   f"0 (negative)")
        if obj.box is None and 1 not in labels:
            raise ApiError(422, "invalid_request", f"object {number} needs a box or at least one positive point")
        for x, y in obj.points:
            if not (0 <= x <= width and 0 <= y <= height):
                raise ApiError(422, "invalid_request", f"object {number}: point ({x}, {y}) is outside the "
                                                       f"{width} x {height} image")
        prompts.append(SamPrompt(box=tuple(obj.box) if obj.box is not None else None,
                                 points=[tuple(p) for p in obj.points], labels=labels))
    return prompts


def make_router(service) -> APIRouter:
    router = APIRouter()
    decoded = _DecodedImages(service)

    @router.post(SEGMENT_PATH, tags=["ask"], summary="Masks and polygons for prompted objects of an image")
    async def segment(request: Request):
        from .server import ApiError
        from .server.forms import ClientGone, read_form

        service.check_ready()
        segmenter = getattr(service.cascade, "segmenter", None)
        if segmenter is None:
            raise ApiError(409, "no_segmenter", "this server runs without a segmentation model (SAM2); start it "
                                                "with --segmenter to correct objects")
        try:
            form = await read_form(request, service.config.max_body_bytes)
        except ClientGone as exc:
            raise ApiError(499, "client_gone", str(exc)) from None
        try:
            data = await form["image"].read() if form["image"] is not None else None
        finally:
            await form["form"].close()
        try:
            body = SegmentRequest.model_validate_json(form["request"])
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
            raise ApiError(422, "invalid_request", f"the segment request is not valid: {problems}") from None
        if data is not None:
            key = image_key(data)
            if body.image_key not in (None, key):
                raise ApiError(422, "invalid_request", "image_key does not name the image sent with it; send "
                                                       "one or the other")
            image = await run_in_threadpool(decoded.get, data, key)
        elif body.image_key is not None:
            key, image = body.image_key, decoded.cached(body.image_key)
            if image is None:
                raise ApiError(409, CODE_IMAGE_NOT_CACHED, "this server no longer holds the image (it restarted, "
                                                           "or newer images took its place); send the image again")
        else:
            raise ApiError(422, "malformed_form", "send the image (a file part named 'image') or name one this "
                                                  "server holds (image_key in the request)")
        height, width = image.shape[:2]
        prompts = _prompts(body, width, height)
        result = await run_in_threadpool(_run, segmenter, image, prompts, body, key)
        # Serialised here, in the worker thread: FastAPI's encoder walks every vertex of a plain dict
        # in Python, which cost more than the model on a detailed mask.
        return Response(result, media_type="application/json")

    return router


class _DecodedImages:
    """Corrections send the same image again and again: decode it once (a few recent images kept per
    service, keyed by a digest of the bytes). Like an ask (issue 13), the header is read before any
    pixel and the decoded size is charged against the service's image memory budget, for as long as
    the image stays here."""

    SIZE = 4

    def __init__(self, service):
        self.service = service
        self.images: "OrderedDict[str, tuple]" = OrderedDict()  # digest -> (image, its reservation)
        self.lock = threading.Lock()  # requests run in the thread pool

    def get(self, data: bytes, key: str):
        with self.lock:
            return self._get(data, key)

    def cached(self, key: str):
        """The decoded image of that key, or None when it is not held (any more)."""
        with self.lock:
            if key not in self.images:
                return None
            self.images.move_to_end(key)
            return self.images[key][0]

    def _drop_oldest(self) -> None:
        self.images.popitem(last=False)[1][1].release()

    def _get(self, data: bytes, key: str):
        import io

        from .server import ApiError
        from .server.admission import decode_cost
        from .server.images import decode_image_file, probe_image

        if key in self.images:
            self.images.move_to_end(key)
            return self.images[key][0]
        service, config = self.service, self.service.config
        stream = io.BytesIO(data)
        header = probe_image(stream, config.max_image_pixels)
        cost = decode_cost(header.width, header.height, header.eight_bit)
        if cost > config.image_memory_bytes:
            raise ApiError(413, "image_too_large", f"decoding this {header.width} x {header.height} image needs "
                                                   f"about {cost // 2**20} MiB, more than this server's image memory "
                                                   f"({config.image_memory_bytes // 2**20} MiB); send a smaller image")
        reservation = service.budget.try_reserve(cost)
        while reservation is None and self.images:  # room held by this cache goes first
            self._drop_oldest()
            reservation = service.budget.try_reserve(cost)
        if reservation is None:
            retry_after = service.retry_after_s()
            raise ApiError(503, "images_busy", "the server holds as many decoded images as its memory budget "
                                               f"allows; correct again in about {retry_after} s",
                           {"Retry-After": str(retry_after)})
        try:
            image = decode_image_file(stream, header, config.max_image_pixels)
        except BaseException:
            reservation.release()
            raise
        reservation.shrink(image.nbytes)
        self.images[key] = (image, reservation)
        while len(self.images) > self.SIZE:
            self._drop_oldest()
        return image


def _run(segmenter, image, prompts, body: SegmentRequest, key: str) -> bytes:
    from .vectorize import mask_to_polygons, mask_to_rle

    started = time.perf_counter()
    results = segmenter.segment(image, prompts)
    segmented = time.perf_counter()
    timings = dict(segmenter.last_timings)
    objects = []
    for result in results:
        polygons = mask_to_polygons(result.mask, body.simplify_tolerance, body.min_area)
        objects.append({"score": result.score, "mask": mask_to_rle(result.mask).to_dict(),
                        "polygons": [p.to_dict() for p in polygons]})
    model_s = timings.get("encode_s", 0.0) + timings.get("decode_s", 0.0)
    other_s = (segmented - started - model_s) + (time.perf_counter() - segmented)
    return json.dumps({"objects": objects, "image_key": key,
                       "timings": {"model_s": model_s, "other_s": other_s,
                                   "cache_hit": bool(timings.get("cache_hit"))}}).encode("utf-8")


def install(app: FastAPI, service) -> None:
    """Add POST /v1/segment to the app (call where the app is built)."""
    app.include_router(make_router(service))
