"""The dock's questions, one at a time: `service.ask_one` (capture, network, georeferencing, store
writing) runs in a QgsTask; only adding the finished answer's layers happens on the GUI thread,
and only once the whole answer is stored, so a failure or a cancel leaves no half-made layers.
"""
from __future__ import annotations

import traceback
from typing import List, Optional

from qgis.core import QgsApplication, QgsProject, QgsTask
from qgis.PyQt.QtCore import QObject, pyqtSignal

from ..core.api import CLIENT_STAGE_CAPTURE, EVENT_QUEUED, EVENT_STAGE, EVENT_TOKEN
from ..toolbelt.i18n import tr
from ..toolbelt.log import log
from .client import BackendClient
from .layers import add_to_project, remember_answer
from .service import Question, QuestionFailed, Result, ask_one
from .store import StoredAnswer, StoreError


class AskTask(QgsTask):
    """One or more questions (one per area) asked in a row; events reach the GUI thread queued."""

    stream_event = pyqtSignal(dict)

    def __init__(self, client: BackendClient, questions: List[Question], done):
        super().__init__(tr("GeoReasoner: {0}").format(questions[0].request.question[:60]), QgsTask.Flag.CanCancel)
        self.client = client
        self.questions = questions
        self.done = done
        self.results: List[Result] = []
        self.error = ""
        self.error_kind = ""
        self.error_detail = ""  # the traceback of an unexpected error

    def run(self) -> bool:
        self.client.is_cancelled = self.isCanceled
        try:
            for n, question in enumerate(self.questions):
                if self.isCanceled():
                    break
                if len(self.questions) > 1:
                    self.stream_event.emit({"event": "stage", "stage": "area", "n": n + 1, "of": len(self.questions)})
                self.results.append(ask_one(self.client, question, self._on_event))
            return not self.isCanceled()
        except QuestionFailed as exc:
            self.error, self.error_kind = str(exc), exc.kind
        except Exception as exc:  # noqa: BLE001 - a task must not raise
            self.error, self.error_kind = tr("Unexpected error: {0}").format(exc), "bug"
            self.error_detail = traceback.format_exc()  # a bug: the log gets where it happened
        return False

    def _on_event(self, event: dict) -> None:
        if event.get("event") == "stage":
            self.setProgress(min(95.0, self.progress() + 10.0))
        self.stream_event.emit(event)

    def finished(self, result: bool) -> None:
        if self.isCanceled() and not self.error:
            self.error, self.error_kind = tr("Cancelled."), "cancelled"
        if self.error_detail:
            log(self.error_detail, "warning")
        self.done(self.results, self.error, self.error_kind)


class Asker(QObject):
    """Runs questions one at a time and reports through signals (GUI thread)."""

    stage = pyqtSignal(str)
    token = pyqtSignal(str)
    queued = pyqtSignal(int)
    answered = pyqtSignal(object)  # StoredAnswer (once per area)
    failed = pyqtSignal(str, str)  # message, kind
    busy_changed = pyqtSignal(bool)

    def __init__(self, project: Optional[QgsProject] = None, parent=None):
        super().__init__(parent)
        self.project = project or QgsProject.instance()
        self.task: Optional[AskTask] = None

    def is_busy(self) -> bool:
        return self.task is not None

    def start(self, client: BackendClient, questions) -> AskTask:
        if self.task is not None:
            raise RuntimeError("a question is already running")
        questions = questions if isinstance(questions, list) else [questions]
        self.task = AskTask(client, questions, self._done)
        self.task.stream_event.connect(self._on_event)
        self.busy_changed.emit(True)
        self.stage.emit(CLIENT_STAGE_CAPTURE)
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

    def _done(self, results: List[Result], error: str, kind: str) -> None:
        self.task = None
        try:
            for result in results:  # what finished before a failure or a cancel is kept
                try:
                    self.answered.emit(self.add_layers(result.stored))
                except StoreError as exc:
                    self.failed.emit(str(exc), "store")
                    return
            if error:
                log(error, "warning")
                self.failed.emit(error, kind or "error")
        finally:
            self.busy_changed.emit(False)

    def add_layers(self, stored: StoredAnswer) -> StoredAnswer:
        add_to_project(stored, self.project)
        remember_answer(self.project, stored.answer.answer_id)
        self.project.setDirty(True)
        return stored
