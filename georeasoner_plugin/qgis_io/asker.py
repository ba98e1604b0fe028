"""One question, start to end: capture -> backend (in a QgsTask) -> georeference -> store -> layers.

The capture happens on the GUI thread before the task starts; the network call runs in the task;
georeferencing, writing the GeoPackage and adding layers happen back on the GUI thread, and only
once the whole answer is there, so a failure or a cancel leaves no half-made layers.
"""
from __future__ import annotations

from typing import Callable, Optional

from qgis.core import QgsApplication, QgsProject, QgsTask
from qgis.PyQt.QtCore import QObject, pyqtSignal

from ..core.api import EVENT_QUEUED, EVENT_STAGE, EVENT_TOKEN
from ..core.protocol import PARSE_INVALID, PARSE_NO_ANSWER, Answer
from ..toolbelt.i18n import tr
from ..toolbelt.log import log
from .capture import Capture
from .client import AskRequest, BackendClient, BackendError
from .layers import add_to_project
from .store import AnswerStore, StoredAnswer, StoreError, georeference, store_path_for

# The plugin's own first stage, before the backend's (core/api.py STAGES).
STAGE_SENDING = "sending"


class AskTask(QgsTask):
    """The network part of one question; events arrive through `event` (queued to the GUI thread)."""

    stream_event = pyqtSignal(dict)

    def __init__(self, client: BackendClient, request: AskRequest, done: Callable[[Optional[Answer], str, str], None]):
        super().__init__(tr("GeoReasoner: {0}").format(request.question[:60]), QgsTask.Flag.CanCancel)
        self.client = client
        self.request = request
        self.done = done
        self.answer: Optional[Answer] = None
        self.error = ""
        self.error_kind = ""

    def run(self) -> bool:
        self.client.is_cancelled = self.isCanceled
        try:
            self.answer = self.client.ask_stream(self.request, self._on_event)
            return True
        except BackendError as exc:
            self.error, self.error_kind = str(exc), exc.kind
        except Exception as exc:  # noqa: BLE001 - a task must not raise
            self.error, self.error_kind = tr("Unexpected error: {0}").format(exc), "bug"
        return False

    def _on_event(self, event: dict) -> None:
        if event.get("event") == "stage":
            self.setProgress(min(95.0, self.progress() + 10.0))
        self.stream_event.emit(event)

    def finished(self, result: bool) -> None:
        if self.isCanceled() and not self.error:
            self.error, self.error_kind = tr("Cancelled."), "cancelled"
        self.done(self.answer if result else None, self.error, self.error_kind)


class Asker(QObject):
    """Runs questions one at a time and reports through signals (GUI thread)."""

    stage = pyqtSignal(str)
    token = pyqtSignal(str)
    queued = pyqtSignal(int)
    answered = pyqtSignal(object)  # StoredAnswer
    failed = pyqtSignal(str, str)  # message, kind
    busy_changed = pyqtSignal(bool)

    def __init__(self, project: Optional[QgsProject] = None, parent=None):
        super().__init__(parent)
        self.project = project or QgsProject.instance()
        self.task: Optional[AskTask] = None
        self.capture: Optional[Capture] = None
        self.store_path_override = None

    def is_busy(self) -> bool:
        return self.task is not None

    def ask(self, client: BackendClient, request: AskRequest, capture: Capture) -> AskTask:
        if self.task is not None:
            raise RuntimeError("a question is already running")
        self.capture = capture
        self.task = AskTask(client, request, self._done)
        self.task.stream_event.connect(self._on_event)
        self.busy_changed.emit(True)
        self.stage.emit(STAGE_SENDING)
        QgsApplication.taskManager().addTask(self.task)
        return self.task

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _on_event(self, event: dict) -> None:
        kind = event.get("event")
        if kind == EVENT_TOKEN:
            self.token.emit(str(event.get("text", "")))
        elif kind == EVENT_STAGE:
            self.stage.emit(str(event.get("stage", "")))
        elif kind == EVENT_QUEUED:
            self.queued.emit(int(event.get("position", 0)))

    def _done(self, answer: Optional[Answer], error: str, kind: str) -> None:
        capture, self.task, self.capture = self.capture, None, None
        try:
            if answer is None:
                log(error, "warning")
                self.failed.emit(error or tr("The question failed."), kind or "error")
                return
            if answer.parse_status in (PARSE_INVALID, PARSE_NO_ANSWER):
                problems = "; ".join(answer.parse_problems) or tr("no answer found")
                self.failed.emit(tr("The model's answer could not be read ({0}): {1}. Nothing was added. "
                                    "Rephrase the question, or check that the profile matches the model.")
                                 .format(answer.parse_status, problems), "parse")
                return
            try:
                stored = self.store_answer(answer, capture)
            except StoreError as exc:
                self.failed.emit(str(exc), "store")
                return
            self.answered.emit(stored)
        finally:
            self.busy_changed.emit(False)

    def store_answer(self, answer: Answer, capture: Capture) -> StoredAnswer:
        geo = georeference(answer, capture.transform, capture.crs, capture.source_layers, capture.source, self.project)
        path = self.store_path_override or store_path_for(self.project)
        stored = AnswerStore(path).add(geo)
        add_to_project(stored, self.project)
        self.project.setDirty(True)
        return stored
