"""Texts and label helpers of the dock: what each stage of a question is called, wrapping labels."""
from __future__ import annotations

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QLabel, QSizePolicy

from ..core.api import (CLIENT_STAGE_CAPTURE, CLIENT_STAGE_SENDING, CLIENT_STAGE_STORE, EVENT_QUEUED, STAGE_DONE,
                        STAGE_PARSE, STAGE_PREPROCESS, STAGE_REASON, STAGE_SEGMENT, STAGE_VECTORIZE)

STAGE_TITLES = {
    CLIENT_STAGE_CAPTURE: "capturing the image",
    CLIENT_STAGE_SENDING: "sending the image",
    EVENT_QUEUED: "waiting in the backend's queue",
    STAGE_PREPROCESS: "preparing the image",
    STAGE_REASON: "reasoning",
    STAGE_PARSE: "reading the answer",
    STAGE_SEGMENT: "segmenting (SAM2)",
    STAGE_VECTORIZE: "tracing contours",
    CLIENT_STAGE_STORE: "storing the answer",
    STAGE_DONE: "done",
}


def wrapping_label(text: str, parent) -> QLabel:
    """A label that wraps and never widens the dock, however long its text."""
    label = QLabel(text, parent)
    label.setWordWrap(True)
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
    label.setOpenExternalLinks(True)
    return label
