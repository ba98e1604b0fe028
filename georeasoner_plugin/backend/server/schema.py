"""The JSON shapes of the API (pydantic) and the OpenAPI text around them. Limits come from
core/api.py, the contract the QGIS client reads too."""
from __future__ import annotations

from typing import List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from ...core.api import ASK_FIELDS, MAX_QUESTION_CHARS, NDJSON_MEDIA_TYPE, STAGES, STREAM_EVENTS
from ...core.protocol import GRANULARITIES

Granularity = Literal["boxes", "points", "masks", "contours"]
assert set(Granularity.__args__) == set(GRANULARITIES)


def _bounds(name: str):
    return ASK_FIELDS[name][1], ASK_FIELDS[name][2]


class AskRequest(BaseModel):
    """The JSON of the `request` part of POST /v1/ask and /v1/ask/stream."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    question: str = Field(description=f"the question about the image (at most {MAX_QUESTION_CHARS} characters)")
    profile: Optional[str] = Field(None, description="prompt profile; null: the server's default")
    outputs: List[Granularity] = Field(default_factory=lambda: list(GRANULARITIES), min_length=_bounds("outputs")[0],
                                       max_length=_bounds("outputs")[1], description="which granularities to compute")
    max_new_tokens: int = Field(ASK_FIELDS["max_new_tokens"][0], ge=_bounds("max_new_tokens")[0],
                                le=_bounds("max_new_tokens")[1])
    temperature: float = Field(ASK_FIELDS["temperature"][0], ge=_bounds("temperature")[0],
                               le=_bounds("temperature")[1], description="0: greedy decoding")
    top_p: float = Field(ASK_FIELDS["top_p"][0], gt=_bounds("top_p")[0], le=_bounds("top_p")[1])
    seed: Optional[int] = Field(None, ge=_bounds("seed")[0], le=_bounds("seed")[1])
    simplify_tolerance: float = Field(ASK_FIELDS["simplify_tolerance"][0], ge=_bounds("simplify_tolerance")[0],
                                      le=_bounds("simplify_tolerance")[1],
                                      description="contour simplification, image pixels")
    min_area: float = Field(ASK_FIELDS["min_area"][0], ge=_bounds("min_area")[0], le=_bounds("min_area")[1],
                            description="contour parts and holes below this many pixels are dropped")
    image_path: Optional[str] = Field(None, min_length=_bounds("image_path")[0], max_length=_bounds("image_path")[1],
                                      description="instead of the image part: a capture file in the server's shared "
                                                  "capture folder (/v1/info shared_capture_dir; same machine only)")


assert set(AskRequest.model_fields) == set(ASK_FIELDS), "core/api.py ASK_FIELDS and AskRequest disagree"


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
    image_memory_bytes: int
    max_decodes: int
    header_timeout_s: float
    body_timeout_s: float
    keep_alive_s: float
    max_connections: int
    shutdown_grace_s: float


class InfoResponse(BaseModel):
    version: str
    protocol_version: int
    models: ModelsInfo
    profiles: List[ProfileInfo]
    default_profile: str
    device: str
    dtype: str
    replay: bool
    status: Literal["loading", "ready", "error"]
    detail: str
    image_formats: List[str]  # core/transport.py INFO_IMAGE_FORMATS: what uploads may be
    shared_capture_dir: Optional[str] = None  # INFO_SHARED_CAPTURE_DIR: present with --shared-capture-dir
    limits: LimitsInfo


class ErrorDetail(BaseModel):
    status: int
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "corrupt image"), (401, "missing or wrong bearer token"), (403, "foreign Host header"),
        (413, "body too large, or too many decoded pixels"), (415, "not multipart, or not a PNG/JPEG/TIFF image"),
        (422, "malformed request JSON or fields"), (429, "queue full (Retry-After)"),
        (502, "the remote reasoning server failed"),
        (503, "models loading (Retry-After), models failed, image memory busy (Retry-After) or shutting down"),
        (504, "per-request time limit reached"),
    )
}

ASK_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["request"],
                "properties": {
                    "image": {"type": "string", "format": "binary",
                              "description": "PNG, JPEG, TIFF or WebP bytes; required unless the request names "
                                             "an image_path in the server's shared capture folder"},
                    "request": {"$ref": "#/components/schemas/AskRequest"},
                },
            },
            "encoding": {"request": {"contentType": "application/json"},
                         "image": {"contentType": "image/png, image/jpeg, image/tiff, image/webp"}},
        }
    },
}

STREAM_EVENTS_DOC = (
    "One JSON object per line: {\"event\": \"queued\", \"position\": n} (requests ahead of this one, the running "
    "one included; repeated as it changes), {\"event\": \"stage\", \"stage\": name} (" + ", ".join(STAGES) + "), "
    "{\"event\": \"token\", \"text\": piece} (the model's output as it is generated; the pieces add up to the "
    "answer's raw_output), then exactly one final {\"event\": \"answer\", \"answer\": {...}} or {\"event\": "
    "\"error\", \"status\": int, \"message\": str}. Problems found before the stream starts (token, body, fields, "
    "image, queue full, models not ready) are ordinary HTTP errors."
)

STREAM_EVENT_SCHEMA = {
    "type": "object", "description": STREAM_EVENTS_DOC, "required": ["event"],
    "properties": {"event": {"type": "string", "enum": list(STREAM_EVENTS)},
                   "position": {"type": "integer"}, "stage": {"type": "string", "enum": list(STAGES)},
                   "text": {"type": "string"}, "answer": {"$ref": "#/components/schemas/Answer"},
                   "status": {"type": "integer"}, "message": {"type": "string"}},
}

__all__ = ["AskRequest", "HealthResponse", "InfoResponse", "ErrorBody", "ERROR_RESPONSES", "ASK_BODY",
           "STREAM_EVENTS_DOC", "STREAM_EVENT_SCHEMA", "NDJSON_MEDIA_TYPE"]
