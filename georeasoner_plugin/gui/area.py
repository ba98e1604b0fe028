"""Where to ask: the visible map, a whole raster, a drawn rectangle or polygon, the selected
features of a polygon layer (one question each, or all in one), or the extent of a layer; plus the
rubber band that shows the area on the canvas while a question is asked."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsGeometry,
    QgsMapLayerProxyModel,
    QgsPointXY,
    QgsRectangle,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.gui import QgsMapLayerComboBox, QgsMapTool, QgsRubberBand
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import QComboBox, QHBoxLayout, QPushButton, QWidget

from ..toolbelt.i18n import tr

VISIBLE, WHOLE_RASTER, RECTANGLE, POLYGON, FEATURES_EACH, FEATURES_ALL, LAYER_EXTENT = (
    "visible", "raster", "rectangle", "polygon", "features_each", "features_all", "layer_extent")


@dataclass
class Area:
    geometry: Optional[QgsGeometry]  # None: the visible map
    crs: QgsCoordinateReferenceSystem
    label: str


class AreaError(Exception):
    pass


class DrawAreaTool(QgsMapTool):
    """Left clicks add vertices (a rectangle: press, drag, release); right click or Enter ends."""

    drawn = pyqtSignal(object)  # QgsGeometry in the canvas CRS

    def __init__(self, canvas, rectangle: bool):
        super().__init__(canvas)
        self.rectangle = rectangle
        self.points: List[QgsPointXY] = []
        self.start: Optional[QgsPointXY] = None
        self.band = QgsRubberBand(canvas, QgsWkbTypes.GeometryType.PolygonGeometry)
        self.band.setColor(QColor(255, 140, 0, 200))
        self.band.setFillColor(QColor(255, 140, 0, 40))
        self.band.setWidth(2)

    def canvasPressEvent(self, event):  # noqa: N802
        if self.rectangle and event.button() == Qt.MouseButton.LeftButton:
            self.start = event.mapPoint()

    def canvasMoveEvent(self, event):  # noqa: N802
        if self.rectangle and self.start is not None:
            self._show(QgsGeometry.fromRect(QgsRectangle(self.start, event.mapPoint())))
        elif self.points:
            self._show(QgsGeometry.fromPolygonXY([self.points + [event.mapPoint()]]))

    def canvasReleaseEvent(self, event):  # noqa: N802
        if self.rectangle:
            if self.start is not None and event.button() == Qt.MouseButton.LeftButton:
                rect = QgsRectangle(self.start, event.mapPoint())
                self.start = None
                if rect.width() > 0 and rect.height() > 0:
                    self._finish(QgsGeometry.fromRect(rect))
            return
        if event.button() == Qt.MouseButton.LeftButton:
            self.points.append(event.mapPoint())
            self._show(QgsGeometry.fromPolygonXY([self.points]))
        elif event.button() == Qt.MouseButton.RightButton:
            self.finish_polygon()

    def keyPressEvent(self, event):  # noqa: N802
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.finish_polygon()
        elif event.key() == Qt.Key.Key_Escape:
            self.points = []
            self.band.reset(QgsWkbTypes.GeometryType.PolygonGeometry)

    def finish_polygon(self) -> None:
        if len(self.points) >= 3:
            geometry = QgsGeometry.fromPolygonXY([self.points])
            self._finish(geometry.makeValid() if not geometry.isGeosValid() else geometry)
        self.points = []

    def _show(self, geometry) -> None:
        self.band.setToGeometry(geometry, None)

    def _finish(self, geometry) -> None:
        self._show(geometry)
        self.drawn.emit(geometry)

    def deactivate(self):
        self.band.reset(QgsWkbTypes.GeometryType.PolygonGeometry)
        super().deactivate()


class AreaChooser(QWidget):
    """The dock's "Area" row: a mode, a layer (features / extent) and a Draw button."""

    def __init__(self, canvas, parent=None):
        super().__init__(parent)
        self.canvas = canvas
        self.drawn: Optional[QgsGeometry] = None
        self.drawn_crs = QgsCoordinateReferenceSystem()
        self.tool: Optional[DrawAreaTool] = None
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.mode = QComboBox(self)
        for key, title in ((VISIBLE, tr("Visible map extent")), (WHOLE_RASTER, tr("Whole raster")),
                           (RECTANGLE, tr("Drawn rectangle")), (POLYGON, tr("Drawn polygon")),
                           (FEATURES_EACH, tr("Selected features, one question each")),
                           (FEATURES_ALL, tr("Selected features, all in one")),
                           (LAYER_EXTENT, tr("Extent of a layer"))):
            self.mode.addItem(title, key)
        row.addWidget(self.mode, 1)
        self.layer = QgsMapLayerComboBox(self)
        self.layer.setFilters(QgsMapLayerProxyModel.Filter.PolygonLayer)
        row.addWidget(self.layer, 1)
        self.draw_button = QPushButton(tr("Draw"), self)
        self.draw_button.setToolTip(tr("Draw the area on the map (polygon: click the corners, right-click to end)"))
        self.draw_button.clicked.connect(self.start_drawing)
        row.addWidget(self.draw_button)
        self.mode.currentIndexChanged.connect(self._mode_changed)
        self._mode_changed()

    def current(self) -> str:
        return self.mode.currentData()

    def set_mode(self, key: str) -> None:
        self.mode.setCurrentIndex(self.mode.findData(key))

    def _mode_changed(self) -> None:
        mode = self.current()
        self.draw_button.setVisible(mode in (RECTANGLE, POLYGON))
        self.layer.setVisible(mode in (FEATURES_EACH, FEATURES_ALL, LAYER_EXTENT))
        self.layer.setFilters(QgsMapLayerProxyModel.Filter.PolygonLayer if mode in (FEATURES_EACH, FEATURES_ALL)
                              else QgsMapLayerProxyModel.Filter.All)
        if mode in (RECTANGLE, POLYGON) and self.drawn is None:
            self.start_drawing()

    def start_drawing(self) -> None:
        self.tool = DrawAreaTool(self.canvas, self.current() == RECTANGLE)
        self.tool.drawn.connect(self._drawn)
        self.canvas.setMapTool(self.tool)

    def _drawn(self, geometry) -> None:
        self.drawn = QgsGeometry(geometry)
        self.drawn_crs = self.canvas.mapSettings().destinationCrs()

    def areas(self, raster=None) -> List[Area]:
        """The areas to ask about (one question per area); raises AreaError with what to do."""
        mode = self.current()
        if mode == VISIBLE:
            return [Area(None, self.canvas.mapSettings().destinationCrs(), tr("visible map"))]
        if mode == WHOLE_RASTER:
            if raster is None:
                raise AreaError(tr("Choose the raster whose whole extent to ask about."))
            return [Area(QgsGeometry.fromRect(raster.extent()), raster.crs(), tr("whole {0}").format(raster.name()))]
        if mode in (RECTANGLE, POLYGON):
            if self.drawn is None or self.drawn.isEmpty():
                raise AreaError(tr("Draw the area on the map first (Draw, then click on the map)."))
            return [Area(QgsGeometry(self.drawn), self.drawn_crs, tr("drawn area"))]
        layer = self.layer.currentLayer()
        if layer is None:
            raise AreaError(tr("Choose a layer for the area."))
        if mode == LAYER_EXTENT:
            return [Area(QgsGeometry.fromRect(layer.extent()), layer.crs(), tr("extent of {0}").format(layer.name()))]
        if not isinstance(layer, QgsVectorLayer) or layer.geometryType() != QgsWkbTypes.GeometryType.PolygonGeometry:
            raise AreaError(tr("Choose a polygon layer for the area."))
        features = list(layer.getSelectedFeatures())
        if not features:
            raise AreaError(tr("Select one or more features of {0} first (Select Features tool).").format(layer.name()))
        if mode == FEATURES_ALL:
            union = QgsGeometry.unaryUnion([f.geometry() for f in features])
            return [Area(union, layer.crs(), tr("{0} features of {1}").format(len(features), layer.name()))]
        return [Area(QgsGeometry(f.geometry()), layer.crs(), tr("{0} #{1}").format(layer.name(), f.id()))
                for f in features]


class AreaBand:
    """The capture area(s) on the canvas while a question runs."""

    def __init__(self, canvas):
        self.canvas = canvas
        self.band: Optional[QgsRubberBand] = None

    def show(self, geometries) -> None:
        """geometries: (QgsGeometry, crs) pairs."""
        self.hide()
        self.band = QgsRubberBand(self.canvas, QgsWkbTypes.GeometryType.PolygonGeometry)
        self.band.setColor(QColor(255, 60, 200, 230))
        self.band.setFillColor(QColor(255, 60, 200, 25))
        self.band.setWidth(2)
        for geometry, crs in geometries:
            self.band.addGeometry(geometry, crs)

    def geometry(self) -> Optional[QgsGeometry]:
        return None if self.band is None else self.band.asGeometry()

    def hide(self) -> None:
        if self.band is not None:
            self.canvas.scene().removeItem(self.band)
            self.band = None
