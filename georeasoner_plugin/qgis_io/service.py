"""Ask one question, start to end, in any thread: capture -> backend -> georeference -> store.

The dock (through a QgsTask, see asker.py) and the Processing algorithm both use `ask_one`, so a
question behaves the same wherever it is asked. Adding layers to the project is the caller's part
(GUI thread).
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from qgis.core import QgsCoordinateTransformContext

from ..core.api import CLIENT_STAGE_STORE, EVENT_STAGE
from ..core.protocol import PARSE_INVALID, PARSE_NO_ANSWER, Answer
from ..toolbelt.i18n import tr
from .capture import Capture, CaptureError, CaptureSpec
from .client import AskRequest, BackendClient, BackendError
from .image_encode import encode_image, forget_backend, shared_capture_dir, transport_for, write_shared_capture
from .store import AnswerStore, StoredAnswer, StoreError, georeference


class QuestionFailed(Exception):
    """The question produced nothing; str() says why and what to do, `kind` says which step failed."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind  # capture | parse | outside | store | down | timeout | cancelled | ... (BackendError kinds)


@dataclass
class Question:
    request: AskRequest  # image_bytes (and their name and type) are filled in from the capture
    spec: CaptureSpec
    store_path: Optional[Path] = None  # None: do not store (headless Processing)
    transform_context: Optional[QgsCoordinateTransformContext] = None
    ellipsoid: str = "EPSG:7030"
    area_label: str = ""  # how the area was chosen ("visible map", "drawn area", "field 3", ...)


@dataclass
class Result:
    answer: Answer
    capture: Capture
    stored: Optional[StoredAnswer]
    title: str


def answer_title(question: str, area_label: str, when: Optional[_dt.datetime] = None) -> str:
    """Group and history name: the question, the local time and the area, so repeats differ."""
    text = " ".join(question.split())
    text = text if len(text) <= 60 else text[:57] + "..."
    when = when or _dt.datetime.now()
    return f"{text} ({when.strftime('%H:%M:%S')}, {area_label})" if area_label else f"{text} ({when.strftime('%H:%M:%S')})"


def check_readable(answer: Answer, capture: Capture) -> None:
    """Raise QuestionFailed when nothing usable came back, telling a capture problem from a model one."""
    if answer.parse_status not in (PARSE_INVALID, PARSE_NO_ANSWER):
        return
    problems = "; ".join(answer.parse_problems) or tr("no answer found")
    if any("outside the image" in p for p in answer.parse_problems):
        raise QuestionFailed(tr("Every box of the answer lies outside the captured area ({0} x {1} px of {2}), so "
                                "nothing was added. What you asked about is probably outside that area: zoom out "
                                "or pan to it, or choose a larger area, then ask again.")
                             .format(capture.width, capture.height, ", ".join(capture.source_layers) or capture.source),
                             "outside")
    raise QuestionFailed(tr("The model's answer could not be read ({0}): {1}. Nothing was added. Rephrase the "
                            "question, or check that the profile matches the model.")
                         .format(answer.parse_status, problems), "parse")


def _send(client: BackendClient, request: AskRequest, capture: Capture, transport: str, on_event) -> Answer:
    """Ask with the capture in `transport`; once more as an upload when the backend refuses a shared
    path (400/422), or as PNG when it cannot read the format (415: restarted without it)."""
    shared = ""
    if transport == "path":
        try:
            shared = write_shared_capture(capture.image, shared_capture_dir(client))
        except OSError:  # folder gone or full: upload the same TIFF instead
            transport = "tiff"
    request.image_path = shared
    if not shared:
        request.image_bytes, request.image_name, request.image_type = encode_image(capture.image, transport)
    try:
        return client.ask_stream(request, on_event)
    except BackendError as exc:
        fallback = "tiff" if shared and exc.status in (400, 422) else "png" if exc.status == 415 else ""
        if not fallback or (fallback == "png" and request.image_type == "image/png"):
            raise QuestionFailed(str(exc), exc.kind) from None
        forget_backend(client.base_url)
    finally:
        if shared:
            _remove(shared)
    return _send(client, request, capture, fallback, on_event)


def _remove(path: str) -> None:
    try:
        Path(path).unlink()
    except OSError:
        pass


def ask_one(client: BackendClient, question: Question, on_event: Callable[[dict], None] = lambda e: None,
            on_capture: Callable[[Capture], None] = lambda c: None) -> Result:
    try:
        capture = question.spec.run()
    except CaptureError as exc:
        raise QuestionFailed(str(exc), "capture") from None
    on_capture(capture)
    request = question.request
    # The transport the backend's /v1/info calls for (core/transport.py): a file in its shared folder or an
    # uncompressed TIFF on loopback, lossless WebP or PNG to a remote backend; the same pixels in every case.
    answer = _send(client, request, capture, transport_for(client), on_event)
    check_readable(answer, capture)
    title = answer_title(answer.question, question.area_label)
    stored = None
    if question.store_path is not None:
        on_event({"event": EVENT_STAGE, "stage": CLIENT_STAGE_STORE})
        geo = georeference(answer, capture.transform, capture.crs, capture.source_layers, capture.source,
                           question.transform_context, question.ellipsoid, capture.area_wkt)
        try:
            stored = AnswerStore(Path(question.store_path), question.transform_context).add(
                geo, title, image_png=capture.png_bytes())
        except StoreError as exc:
            raise QuestionFailed(str(exc), "store") from None
    return Result(answer, capture, stored, title)
