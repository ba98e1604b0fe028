"""The dock's tiled questions: a whole raster layer, or the visible extent at the layer's ground
resolution, read tile by tile (`tiled_job.ask_tiled`) inside a QgsTask.

The task reads, uploads, follows the job, georeferences the merged answer with the job's transform
and writes it to the answer store, all off the GUI thread; only adding the layers happens on the GUI
thread (`TiledAsker._done`). Cancel stops reading new tiles, cancels the backend job and keeps the
tiles already answered (the answer's warnings say how many).
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from qgis.core import (QgsApplication, QgsCoordinateTransformContext, QgsProject, QgsRasterLayer, QgsRectangle,
                       QgsTask, QgsUnitTypes, QgsVectorLayer)
from qgis.PyQt.QtCore import QObject, pyqtSignal

from ..core.profiles import get_profile
from ..core.tiling import DEFAULT_OVERLAP, default_tile_size
from ..toolbelt.i18n import tr
from ..toolbelt.log import log
from .client import BackendClient, BackendError
from .features import layer_fields
from .layers import add_to_project, layer_title, remember_answer, style_layer
from .service import answer_title
from .store import AnswerStore, StoredAnswer, StoreError, georeference
from .tiled_job import TiledJobResult, ask_tiled

TILED_LAYER, TILED_EXTENT = "tiled_layer", "tiled_extent"  # the dock's two tiled "Read" modes


def ground_resolution_text(layer: Optional[QgsRasterLayer], resolution: float = 0.0) -> str:
    """'0.6 m/px' — the layer's native pixel size (or the chosen one) in its CRS units."""
    if layer is None or not layer.isValid():
        return tr("native")
    value = resolution if resolution and resolution > 0 else layer.rasterUnitsPerPixelX()
    unit = QgsUnitTypes.toAbbreviatedString(layer.crs().mapUnits()) or tr("units")
    return f"{value:.3g} {unit}/px"


class StreamCancellingClient(BackendClient):
    """A client whose cancel check aborts only the job's event stream: the short calls (upload, cancel,
    result) always finish, so a cancel still fetches the answer of the tiles already done."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cancel_requested = lambda: False
        self._streaming = False
        self.is_cancelled = lambda: self._streaming and self.cancel_requested()

    def _request(self, method, path, body=None, content_type="", timeout_s=None, on_data=None, stream=False):
        self._streaming = stream
        try:
            return super()._request(method, path, body, content_type, timeout_s, on_data, stream)
        finally:
            self._streaming = False


@dataclass
class TiledQuestion:
    layer: QgsRasterLayer
    question: str
    extent: Optional[QgsRectangle]  # layer CRS; None = the whole layer
    resolution: float  # 0 = the layer's own pixels
    tile_size: int
    overlap: float
    profile: str
    outputs: list
    store_path: Path
    transform_context: QgsCoordinateTransformContext
    ellipsoid: str
    area_label: str
    partial_every_s: float = 2.0  # how often the preview of the tiles answered so far may refresh


class TiledTask(QgsTask):
    progress_event = pyqtSignal(dict)
    partial = pyqtSignal(object)  # GeoreferencedAnswer of the tiles answered so far

    def __init__(self, client: StreamCancellingClient, question: TiledQuestion, done):
        super().__init__(tr("GeoReasoner (tiled): {0}").format(question.question[:60]), QgsTask.Flag.CanCancel)
        self.client = client
        self.question = question
        self.done = done
        self.result: Optional[TiledJobResult] = None
        self.stored: Optional[StoredAnswer] = None
        self.error = ""
        self.error_kind = ""
        self.error_detail = ""  # the traceback of an unexpected error

    def run(self) -> bool:
        q = self.question
        self.client.cancel_requested = self.isCanceled
        try:
            self.result = ask_tiled(q.layer, q.question, self.client, tile_size=q.tile_size, overlap=q.overlap,
                                    resolution=q.resolution, extent=q.extent, profile=q.profile, outputs=q.outputs,
                                    on_progress=self._on_progress, is_cancelled=self.isCanceled,
                                    on_partial=self._on_partial, partial_every_s=q.partial_every_s)
            answer = self.result.answer
            if not self.result.complete and not any(t.get("tile") != "plan" for t in answer.tiles):
                self.error, self.error_kind = tr("Cancelled before any tile was answered; nothing was added."), \
                    "cancelled"
                return False
            answer.warnings = list(self.result.warnings)
            geo = georeference(answer, self.result.transform, q.layer.crs(), [q.layer.name()], "raster",
                               q.transform_context, q.ellipsoid)
            self.stored = AnswerStore(q.store_path, q.transform_context).add(
                geo, answer_title(answer.question or q.question, q.area_label))
            return True
        except BackendError as exc:
            self.error, self.error_kind = str(exc), exc.kind
        except StoreError as exc:
            self.error, self.error_kind = str(exc), "store"
        except Exception as exc:  # noqa: BLE001 - a task must not raise
            self.error, self.error_kind = tr("Unexpected error: {0}").format(exc), "bug"
            self.error_detail = traceback.format_exc()  # a bug: the log gets where it happened
        return False

    def _on_partial(self, answer, transform) -> None:
        q = self.question
        self.partial.emit(georeference(answer, transform, q.layer.crs(), [q.layer.name()], "raster",
                                       q.transform_context, q.ellipsoid))

    def _on_progress(self, event: dict) -> None:
        if event.get("event") == "tile" and event.get("total"):
            self.setProgress(100.0 * event["done"] / event["total"])
        self.progress_event.emit(event)

    def finished(self, result: bool) -> None:
        self.done(self)


def progress_text(event: dict) -> str:
    """'7 / 25 tiles, 12 object(s) so far, about 40 s left' (the dock's status line)."""
    kind = event.get("event")
    if kind == "plan":
        return tr("asking {0} tile(s) of {1} px...").format(event["total"], event["tile_size"])
    if kind == "tile" and event.get("total"):
        eta = event.get("eta_s")
        return tr("{0} / {1} tiles, {2} object(s) so far{3}").format(
            event["done"], event["total"], event.get("objects_so_far", 0),
            tr(", about {0:.0f} s left").format(eta) if eta is not None else "")
    return ""


class TiledAsker(QObject):
    """Runs one tiled question at a time and reports through signals (GUI thread)."""

    progress = pyqtSignal(str)
    answered = pyqtSignal(object)  # StoredAnswer
    failed = pyqtSignal(str, str)  # message, kind
    busy_changed = pyqtSignal(bool)

    def __init__(self, project: Optional[QgsProject] = None, parent=None):
        super().__init__(parent)
        self.project = project or QgsProject.instance()
        self.task: Optional[TiledTask] = None
        self.tile_size = 0  # 0: the profile's frame decides (core.tiling.default_tile_size)
        self.overlap = DEFAULT_OVERLAP
        self.partial_every_s = 2.0
        self.events = []  # the progress events of the last question (tests and the log read them)
        self.started = 0.0
        self._preview = {}  # kind -> id of the memory layer showing the tiles answered so far
        self._filling = False  # _on_partial is running (a nested event loop may call back in)
        self._pending_partial = None
        self._pending_done: Optional[TiledTask] = None
        self.previews = 0  # how many times the preview filled in during the last question
        self.preview_problems = []  # why a preview stayed empty (shown in the log)
        self.last_error_detail = ""  # the traceback of the last unexpected error (also in the log)

    def is_busy(self) -> bool:
        return self.task is not None

    def tile_size_for(self, profile: str) -> int:
        if self.tile_size:
            return self.tile_size
        return default_tile_size(get_profile(profile or "remotereasoner").frame)

    def start(self, client: StreamCancellingClient, question: TiledQuestion) -> TiledTask:
        if self.task is not None:
            raise RuntimeError("a question is already running")
        self.events = []
        self.previews = 0
        self.preview_problems = []
        self.started = time.monotonic()
        self.task = TiledTask(client, question, self._done)
        self.task.progress_event.connect(self._on_event)
        self.task.partial.connect(self._on_partial)
        self.busy_changed.emit(True)
        self.progress.emit(tr("reading {0} tile by tile...").format(question.layer.name()))
        QgsApplication.taskManager().addTask(self.task)
        return self.task

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _on_event(self, event: dict) -> None:
        self.events.append(event)
        text = progress_text(event)
        if text:
            self.progress.emit(text)

    @property
    def preview_ids(self) -> list:
        """The memory layers showing the tiles answered so far (removed when the question ends)."""
        return list(self._preview.values())

    def _on_partial(self, geo) -> None:
        """Show the tiles answered so far (GUI thread). Adding or removing a layer lets QGIS run a
        nested event loop, which can deliver the next partial answer, or the end of the question,
        in the middle of this one: those wait until this one is done (the newest partial wins)."""
        if self._filling:
            self._pending_partial = geo
            return
        self._filling = True
        try:
            while geo is not None:
                self._fill_preview(geo)
                geo, self._pending_partial = self._pending_partial, None
        finally:
            self._filling = False
        if self._pending_done is not None:
            task, self._pending_done = self._pending_done, None
            self._done(task)

    def _fill_preview(self, geo) -> None:
        """The preview layers' features become the tiles answered so far: one memory layer per kind,
        made the first time the kind has features and refilled after (no layer churn, no flicker)."""
        geometry = {"boxes": "Polygon", "points": "Point", "contours": "MultiPolygon"}
        for kind, features in geo.features.items():
            if kind not in geometry or not features or self.task is None:
                continue
            layer = self.project.mapLayer(self._preview.get(kind, ""))
            if layer is None:
                layer = QgsVectorLayer(f"{geometry[kind]}?crs={geo.crs.authid() or 'EPSG:4326'}",
                                       tr("{0} (tiles so far)").format(layer_title(kind)), "memory")
                if not geo.crs.authid():
                    layer.setCrs(geo.crs)
                layer.dataProvider().addAttributes(layer_fields(kind).toList())
                layer.updateFields()
                self._preview[kind] = layer.id()
                if self.project.addMapLayer(layer) is None:
                    self._preview.pop(kind)
                    continue
            provider = layer.dataProvider()
            provider.truncate()
            added, _ = provider.addFeatures(features)
            if not added:  # the preview is a convenience: say why it stays empty, keep asking
                self.preview_problems.append(tr("The preview of {0} could not be filled in: {1}").format(
                    kind, "; ".join(provider.errors()[-3:]) or "-"))
                log(self.preview_problems[-1], "warning")
            layer.updateExtents()
            style_layer(layer, kind, len(features))
            layer.triggerRepaint()
        self.previews += 1

    def _remove_preview(self) -> None:
        ids = [i for i in self._preview.values() if self.project.mapLayer(i) is not None]
        self._preview = {}
        if ids:
            self.project.removeMapLayers(ids)

    def _done(self, task: TiledTask) -> None:
        if self._filling:  # delivered by a nested event loop while the preview fills in: right after it
            self._pending_done = task
            return
        self.task = None
        self._remove_preview()
        try:
            if task.stored is not None:
                try:
                    add_to_project(task.stored, self.project)
                    remember_answer(self.project, task.stored.answer.answer_id)
                    self.project.setDirty(True)
                except StoreError as exc:
                    self.failed.emit(str(exc), "store")
                    return
                self.answered.emit(task.stored)
                if task.result is not None and not task.result.complete:
                    cancelled = [w for w in task.result.warnings if w.startswith(tr("Cancelled"))]
                    self.failed.emit(cancelled[0] if cancelled else tr("Cancelled: the answer holds the tiles "
                                                                       "finished before the cancel."), "cancelled")
            elif task.error:
                log(task.error + ("\n" + task.error_detail if task.error_detail else ""), "warning")
                self.last_error_detail = task.error_detail
                self.failed.emit(task.error, task.error_kind or "error")
            elif task.isCanceled():
                self.failed.emit(tr("Cancelled before any tile was answered."), "cancelled")
        finally:
            self.busy_changed.emit(False)
