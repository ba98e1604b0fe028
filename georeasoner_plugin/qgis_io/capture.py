"""What the model sees: the map as displayed, or one raster at its own resolution, over an area.

Canvas: a copy of the canvas's map settings rendered with the Antialiasing and
HighQualityImageTransforms flags, our own answer layers left out, georeferenced from the very
settings that were rendered (QgsMapToPixel, rotation included, as a GDAL-style six-number transform).

Raster: the area read through the layer's renderer (its band choice and stretch) at the raster's
native resolution or a chosen ground resolution, on the raster's own grid and in its own CRS.

Area of interest: the capture covers the area's bounding box; pixels outside the area are nodata
(black). A `CaptureSpec` is prepared on the GUI thread (layer clones, a copy of the map settings)
and run in a QgsTask, so a large read never blocks QGIS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, List, Optional

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsGeometry,
    QgsMapLayer,
    QgsMapRendererCustomPainterJob,
    QgsMapSettings,
    QgsPointXY,
    QgsRasterLayer,
    QgsRectangle,
)
from qgis.PyQt.QtCore import QBuffer, QByteArray, QIODevice, QPointF, QSize, Qt
from qgis.PyQt.QtGui import QColor, QImage, QPainter, QPainterPath, QPolygonF

from ..core.georef import GeoTransform
from ..toolbelt.i18n import tr

ANSWER_PROPERTY = "georeasoner/answer_id"


class CaptureError(Exception):
    """Nothing to capture, or the capture failed; the message is for the analyst."""


@dataclass
class Capture:
    image: QImage
    transform: GeoTransform  # captured pixel (col, row), corner convention -> map (x, y) in crs
    crs: QgsCoordinateReferenceSystem
    source: str  # "canvas" or "raster"
    source_layers: List[str] = field(default_factory=list)  # names of the layers in the image
    warnings: List[str] = field(default_factory=list)
    map_settings: Optional[QgsMapSettings] = None  # the settings rendered (canvas captures)
    area_wkt: str = ""  # the area of interest in crs ("" = the whole image)

    @property
    def width(self) -> int:
        return self.image.width()

    @property
    def height(self) -> int:
        return self.image.height()

    def footprint(self) -> QgsGeometry:
        """The captured area in crs: the area of interest, else the image's four corners."""
        if self.area_wkt:
            return QgsGeometry.fromWkt(self.area_wkt)
        w, h = self.width, self.height
        ring = [QgsPointXY(*self.transform.pixel_to_map(c, r)) for c, r in ((0, 0), (w, 0), (w, h), (0, h), (0, 0))]
        return QgsGeometry.fromPolygonXY([ring])

    def png_bytes(self) -> bytes:
        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        self.image.save(buffer, "PNG", 89)  # zlib level 1: ~4x faster than Qt's default, ~15% larger
        buffer.close()
        return bytes(data)


def is_answer_layer(layer: QgsMapLayer) -> bool:
    return bool(layer.customProperty(ANSWER_PROPERTY, ""))


def transform_from_map_settings(settings: QgsMapSettings) -> GeoTransform:
    """The six numbers that take a pixel of the rendered image to map coordinates."""
    m2p = settings.mapToPixel()
    w, h = max(1, settings.outputSize().width()), max(1, settings.outputSize().height())
    o = m2p.toMapCoordinates(0, 0)
    c = m2p.toMapCoordinates(w, 0)  # far corners: the per-pixel steps carry less rounding
    r = m2p.toMapCoordinates(0, h)
    return GeoTransform.from_gdal((o.x(), (c.x() - o.x()) / w, (r.x() - o.x()) / h,
                                   o.y(), (c.y() - o.y()) / w, (r.y() - o.y()) / h))


def _area_in(area: Optional[QgsGeometry], area_crs, crs, context) -> Optional[QgsGeometry]:
    if area is None or area.isEmpty():
        return None
    geom = QgsGeometry(area)
    if area_crs is not None and area_crs.isValid() and crs.isValid() and area_crs != crs:
        geom.transform(QgsCoordinateTransform(area_crs, crs, context or QgsCoordinateTransformContext()))
    return geom


def prepare_canvas(map_settings: QgsMapSettings, exclude: Iterable[str] = (), max_size: int = 0,
                   area: Optional[QgsGeometry] = None, area_crs=None,
                   transform_context: Optional[QgsCoordinateTransformContext] = None) -> "CaptureSpec":
    """GUI thread: what to render (a copy of `map_settings` without our answer layers), over `area`
    (its bounding box at the canvas's scale) when given."""
    settings = QgsMapSettings(map_settings)
    excluded = set(exclude)
    layers = [lyr for lyr in settings.layers()
              if lyr is not None and lyr.id() not in excluded and not is_answer_layer(lyr)]
    if not layers:
        raise CaptureError(tr("The map shows nothing to ask about: add imagery (a raster layer) to the map first."))
    size = settings.outputSize()
    if size.width() < 8 or size.height() < 8:
        raise CaptureError(tr("The map canvas is too small to capture."))
    settings.setLayers(layers)
    settings.setDevicePixelRatio(1.0)
    geom = _area_in(area, area_crs, settings.destinationCrs(), transform_context)
    if geom is not None:
        box = geom.boundingBox()
        units = settings.mapUnitsPerPixel()
        settings.setRotation(0.0)
        settings.setOutputSize(QSize(max(8, round(box.width() / units)), max(8, round(box.height() / units))))
        settings.setExtent(box)
        size = settings.outputSize()
    warnings = []
    if max_size and max(size.width(), size.height()) > max_size:
        scale = max_size / max(size.width(), size.height())
        settings.setOutputSize(QSize(max(8, round(size.width() * scale)), max(8, round(size.height() * scale))))
        warnings.append(tr("The map was captured at {0} x {1} pixels (capture size limit).")
                        .format(settings.outputSize().width(), settings.outputSize().height()))
    settings.setFlag(Qgis.MapSettingsFlag.RenderBlocking, True)
    settings.setFlag(Qgis.MapSettingsFlag.Antialiasing, True)
    settings.setFlag(Qgis.MapSettingsFlag.HighQualityImageTransforms, True)
    settings.setFlag(Qgis.MapSettingsFlag.DrawLabeling, False)
    settings.setBackgroundColor(QColor(255, 255, 255))
    if not settings.hasValidSettings():
        raise CaptureError(tr("The map canvas has no valid extent or CRS to capture."))
    spec = CaptureSpec("canvas", settings=settings, area=geom, warnings=warnings, names=[lyr.name() for lyr in layers])
    # Layer renderers are made here, on the GUI thread; the rendering itself runs wherever run() is called.
    spec.image = QImage(settings.outputSize(), QImage.Format.Format_ARGB32_Premultiplied)
    spec.image.fill(settings.backgroundColor())
    spec.painter = QPainter(spec.image)
    spec.job = QgsMapRendererCustomPainterJob(settings, spec.painter)
    spec.job.prepare()
    return spec


def capture_canvas(map_settings: QgsMapSettings, exclude: Iterable[str] = (), max_size: int = 0,
                   area: Optional[QgsGeometry] = None, area_crs=None) -> Capture:
    return prepare_canvas(map_settings, exclude, max_size, area, area_crs).run()


def prepare_raster(layer: QgsRasterLayer, extent: QgsRectangle, extent_crs: QgsCoordinateReferenceSystem,
                   resolution: float = 0.0, max_size: int = 2048,
                   transform_context: Optional[QgsCoordinateTransformContext] = None,
                   area: Optional[QgsGeometry] = None, area_crs=None) -> "CaptureSpec":
    """GUI thread: which part of `layer` to read (over `extent` in `extent_crs`, or the area of
    interest's bounding box), at native (resolution 0) or the given ground resolution (layer map
    units per pixel), snapped to the raster's pixel grid."""
    if layer is None or not isinstance(layer, QgsRasterLayer) or not layer.isValid():
        raise CaptureError(tr("Choose a raster layer to read (the capture reads a raster)."))
    context = transform_context or QgsCoordinateTransformContext()
    crs = layer.crs()
    geom = _area_in(area, area_crs, crs, context)
    if geom is not None:
        extent = geom.boundingBox()
    elif extent_crs.isValid() and crs.isValid() and extent_crs != crs:
        extent = QgsCoordinateTransform(extent_crs, crs, context).transformBoundingBox(extent)
    full = layer.extent()
    area_box = extent.intersect(full)
    if area_box.isEmpty() or area_box.width() <= 0 or area_box.height() <= 0:
        what = tr("the area of interest") if geom is not None else tr("the visible extent")
        raise CaptureError(tr("The raster {0} does not cover {1}. Pan the map to the raster, or choose "
                              "another area.").format(layer.name(), what))
    native_x, native_y = layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY()
    warnings = []
    if resolution and resolution > 0:
        res_x = res_y = float(resolution)
    else:
        res_x, res_y = native_x, native_y
        # snap to the raster's own pixel grid so captured pixels are raster pixels
        x0 = full.xMinimum() + math.floor((area_box.xMinimum() - full.xMinimum()) / native_x + 1e-9) * native_x
        x1 = full.xMinimum() + math.ceil((area_box.xMaximum() - full.xMinimum()) / native_x - 1e-9) * native_x
        y1 = full.yMaximum() - math.floor((full.yMaximum() - area_box.yMaximum()) / native_y + 1e-9) * native_y
        y0 = full.yMaximum() - math.ceil((full.yMaximum() - area_box.yMinimum()) / native_y - 1e-9) * native_y
        area_box = QgsRectangle(x0, y0, x1, y1)
    width = max(1, round(area_box.width() / res_x))
    height = max(1, round(area_box.height() / res_y))
    if max_size and max(width, height) > max_size:
        scale = max(width, height) / max_size
        res_x, res_y = res_x * scale, res_y * scale
        width, height = max(1, round(area_box.width() / res_x)), max(1, round(area_box.height() / res_y))
        warnings.append(tr("{0} was read at {1:.3g} map units per pixel instead of its native resolution (capture "
                           "size limit {2} px).").format(layer.name(), res_x, max_size))
    if layer.renderer() is None:
        raise CaptureError(tr("The raster {0} has no renderer.").format(layer.name()))
    clone = layer.clone()  # the task reads through its own provider: thread-safe
    return CaptureSpec("raster", layer=clone, extent=area_box, width=width, height=height, crs=crs, area=geom,
                       warnings=warnings, names=[layer.name()])


def capture_raster(layer: QgsRasterLayer, extent: QgsRectangle, extent_crs: QgsCoordinateReferenceSystem,
                   resolution: float = 0.0, max_size: int = 2048, project=None,
                   area: Optional[QgsGeometry] = None, area_crs=None) -> Capture:
    context = project.transformContext() if project is not None else None
    return prepare_raster(layer, extent, extent_crs, resolution, max_size, context, area, area_crs).run()


@dataclass
class CaptureSpec:
    """A capture prepared on the GUI thread; `run()` does the reading/rendering in any thread."""
    source: str  # canvas | raster
    settings: Optional[QgsMapSettings] = None
    layer: Optional[QgsRasterLayer] = None
    extent: Optional[QgsRectangle] = None
    width: int = 0
    height: int = 0
    crs: Optional[QgsCoordinateReferenceSystem] = None
    area: Optional[QgsGeometry] = None  # area of interest in the capture's CRS
    warnings: List[str] = field(default_factory=list)
    names: List[str] = field(default_factory=list)
    image: Optional[QImage] = None  # canvas: the image, painter and prepared job
    painter: Optional[QPainter] = None
    job: Optional[QgsMapRendererCustomPainterJob] = None

    def capture_crs(self) -> QgsCoordinateReferenceSystem:
        return self.settings.destinationCrs() if self.source == "canvas" else self.crs

    def footprint(self) -> QgsGeometry:
        """The area the capture will cover, in capture_crs(), for the rubber band."""
        if self.area is not None:
            return QgsGeometry(self.area)
        if self.source == "canvas":
            return QgsGeometry.fromQPolygonF(self.settings.visiblePolygon())
        return QgsGeometry.fromRect(self.extent)

    def run(self) -> Capture:
        if self.source == "canvas":
            image, transform, crs = self._render()
        else:
            image, transform, crs = self._read()
        image = self._clip(image, transform)
        return Capture(image=image, transform=transform, crs=crs, source=self.source, source_layers=list(self.names),
                       warnings=list(self.warnings), map_settings=self.settings,
                       area_wkt=self.area.asWkt() if self.area is not None else "")

    def _render(self):
        if self.job is None:
            raise CaptureError(tr("This map capture has been used already."))
        self.job.renderPrepared()
        self.painter.end()
        image, self.job, self.painter = self.image, None, None
        if image.isNull():
            raise CaptureError(tr("Rendering the map failed."))
        return (image.convertToFormat(QImage.Format.Format_RGB32), transform_from_map_settings(self.settings),
                self.settings.destinationCrs())

    def _read(self):
        renderer = self.layer.renderer()
        block = renderer.block(1, self.extent, self.width, self.height)
        if block is None or not block.isValid() or block.width() != self.width:
            raise CaptureError(tr("Reading the raster {0} failed.").format(self.layer.name()))
        image = block.image()
        if image.isNull():
            raise CaptureError(tr("Reading the raster {0} failed.").format(self.layer.name()))
        res_x, res_y = self.extent.width() / self.width, self.extent.height() / self.height
        transform = GeoTransform.from_gdal((self.extent.xMinimum(), res_x, 0.0, self.extent.yMaximum(), 0.0, -res_y))
        return image, transform, self.crs

    def _clip(self, image: QImage, transform: GeoTransform) -> QImage:
        """Transparent (nodata) pixels and pixels outside the area of interest become black."""
        flat = QImage(image.size(), QImage.Format.Format_RGB32)
        flat.fill(QColor(0, 0, 0))
        painter = QPainter(flat)
        if self.area is not None:
            path = QPainterPath()
            path.setFillRule(Qt.FillRule.OddEvenFill)
            for part in (self.area.asMultiPolygon() if self.area.isMultipart() else [self.area.asPolygon()]):
                for ring in part:
                    path.addPolygon(QPolygonF([QPointF(*transform.map_to_pixel(p.x(), p.y())) for p in ring]))
            painter.setClipPath(path)
        painter.drawImage(0, 0, image)
        painter.end()
        return flat
