"""The correction map tool: click an object to select it; then left click = positive point, right
click = negative point, drag = a new box (with nothing selected: a new object); Delete removes the
selected object, Ctrl+Z undoes, Esc deselects, Shift+click selects another object."""
from __future__ import annotations

import time
from typing import Optional

from qgis.core import QgsCoordinateTransform, QgsGeometry, QgsPointXY, QgsProject, QgsWkbTypes
from qgis.gui import QgsMapTool, QgsRubberBand
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor

from ..qgis_io.client import BackendError
from ..qgis_io.correct import CorrectionError, Corrector
from ..qgis_io.layers import refresh_answer_layers
from ..toolbelt.i18n import tr

DRAG_PIXELS = 6


class CorrectTool(QgsMapTool):
    message = pyqtSignal(str, bool)  # text, is_error

    def __init__(self, canvas, corrector: Corrector, project: Optional[QgsProject] = None):
        super().__init__(canvas)
        self.corrector = corrector
        self.project = project or QgsProject.instance()
        self.selected: Optional[int] = None
        self.press_pos = None
        self.press_point: Optional[QgsPointXY] = None
        self.band = QgsRubberBand(canvas, QgsWkbTypes.GeometryType.PolygonGeometry)
        self.band.setColor(QColor(0, 230, 255, 230))
        self.band.setFillColor(QColor(0, 230, 255, 30))
        self.band.setWidth(2)
        self.point_bands = {}
        for label, color in ((1, QColor(40, 220, 40)), (0, QColor(255, 40, 40))):
            band = QgsRubberBand(canvas, QgsWkbTypes.GeometryType.PointGeometry)
            band.setColor(color)
            band.setIcon(QgsRubberBand.IconType.ICON_CIRCLE if label else QgsRubberBand.IconType.ICON_X)
            band.setIconSize(12)
            band.setWidth(3)
            self.point_bands[label] = band

    # -- coordinates ---------------------------------------------------------------------------------
    def to_answer(self, point: QgsPointXY) -> QgsPointXY:
        crs = self.canvas().mapSettings().destinationCrs()
        if crs == self.corrector.stored.crs or not self.corrector.stored.crs.isValid():
            return QgsPointXY(point)
        ct = QgsCoordinateTransform(crs, self.corrector.stored.crs, self.project.transformContext())
        return ct.transform(point)

    # -- events --------------------------------------------------------------------------------------
    def canvasPressEvent(self, event):  # noqa: N802
        self.press_pos, self.press_point = event.pos(), event.mapPoint()

    def canvasReleaseEvent(self, event):  # noqa: N802
        if self.press_point is None:
            return
        start, end = self.press_point, event.mapPoint()
        dragged = (event.pos() - self.press_pos).manhattanLength() > DRAG_PIXELS
        self.press_point = None
        if dragged and event.button() == Qt.MouseButton.LeftButton:
            self.box(start, end)
        else:
            self.click(end, event.button(), bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier))

    def keyPressEvent(self, event):  # noqa: N802
        if event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace) and self.selected is not None:
            self._do(lambda: self.corrector.delete_object(self.selected), tr("Object deleted."))
            self.selected = None
            self.show_selection()
        elif event.key() == Qt.Key.Key_Z and event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.undo()
        elif event.key() == Qt.Key.Key_Escape:
            self.selected = None
            self.show_selection()

    # -- actions (also called directly) -------------------------------------------------------------
    def click(self, point: QgsPointXY, button=Qt.MouseButton.LeftButton, reselect: bool = False) -> None:
        p = self.to_answer(point)
        if self.selected is None or reselect:
            self.selected = self.corrector.object_at(p.x(), p.y())
            self.show_selection()
            if self.selected is None:
                self.message.emit(tr("No object here. Click an object of the answer, or drag a box to add one."),
                                  False)
            else:
                self.message.emit(tr("Object {0} selected: left click adds a point inside it, right click a point "
                                     "outside it, a drag gives it a new box.").format(self.selected), False)
            return
        positive = button != Qt.MouseButton.RightButton
        self._do(lambda: self.corrector.add_point(self.selected, p.x(), p.y(), positive),
                 tr("Positive point added.") if positive else tr("Negative point added."))

    def box(self, start: QgsPointXY, end: QgsPointXY) -> None:
        a, b = self.to_answer(start), self.to_answer(end)
        result = {}

        def run():
            result["index"] = self.corrector.set_box(self.selected, a.x(), a.y(), b.x(), b.y())

        self._do(run, tr("New box.") if self.selected is not None else tr("Object added."))
        if "index" in result:
            self.selected = result["index"]
            self.show_selection()

    def undo(self) -> None:
        self._do(lambda: self.corrector.undo() or None, tr("Undone."))

    def _do(self, change, done_text: str) -> None:
        try:
            change()
        except (BackendError, CorrectionError) as exc:
            self.message.emit(str(exc), True)
            return
        refreshed = time.perf_counter()
        refresh_answer_layers(self.corrector.answer.answer_id, self.corrector.stored, self.project)
        self.corrector.last_timings["layers_s"] = time.perf_counter() - refreshed
        self.show_selection()
        self.message.emit(done_text, False)

    def show_selection(self) -> None:
        """The selected object's box (cyan) and its prompt points (green: positive, red: negative)."""
        self.band.reset(QgsWkbTypes.GeometryType.PolygonGeometry)
        for band in self.point_bands.values():
            band.reset(QgsWkbTypes.GeometryType.PointGeometry)
        if self.selected is None:
            return
        stored = self.corrector.stored
        prompt = self.corrector.prompts.get(self.selected)
        for (col, row), label in zip(prompt.points, prompt.labels) if prompt else ():
            self.point_bands[1 if label else 0].addPoint(QgsPointXY(*stored.transform.pixel_to_map(col, row)))
        for obj in stored.answer.objects:
            if obj.index == self.selected and obj.box is not None:
                ring = [QgsPointXY(*p) for p in stored.transform.box_to_map_ring(obj.box)]
                self.band.setToGeometry(QgsGeometry.fromPolygonXY([ring]), stored.crs)

    def deactivate(self):
        self.band.reset(QgsWkbTypes.GeometryType.PolygonGeometry)
        for band in self.point_bands.values():
            band.reset(QgsWkbTypes.GeometryType.PointGeometry)
        super().deactivate()

