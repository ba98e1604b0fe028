"""What the model sees: the canvas as displayed, or one raster at native resolution.

Canvas: a copy of the canvas's map settings rendered on the GUI thread with the RenderBlocking,
Antialiasing and HighQualityImageTransforms flags, our own answer layers left out, georeferenced
from the very settings that were rendered (QgsMapToPixel, rotation included, as a GDAL-style
six-number transform).

Raster: the visible extent read through the layer's renderer (its band choice and stretch, pixels
from dataProvider().block()) at the raster's native resolution or a chosen ground resolution, on
the raster's own grid and in its own CRS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, List, Optional

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsMapLayer,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
)
from qgis.PyQt.QtCore import QBuffer, QByteArray, QIODevice, QSize
from qgis.PyQt.QtGui import QColor, QImage

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

    @property
    def width(self) -> int:
        return self.image.width()

    @property
    def height(self) -> int:
        return self.image.height()

    def png_bytes(self) -> bytes:
        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        self.image.save(buffer, "PNG")
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


def capture_canvas(map_settings: QgsMapSettings, exclude: Iterable[str] = (), max_size: int = 0) -> Capture:
    """Render a copy of `map_settings` (usually canvas.mapSettings()) without our answer layers."""
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
    warnings = []
    if max_size and max(size.width(), size.height()) > max_size:
        scale = max_size / max(size.width(), size.height())
        settings.setOutputSize(QSize(max(8, round(size.width() * scale)), max(8, round(size.height() * scale))))
        warnings.append(tr("The canvas was captured at {0} x {1} pixels (capture size limit).")
                        .format(settings.outputSize().width(), settings.outputSize().height()))
    settings.setFlag(Qgis.MapSettingsFlag.RenderBlocking, True)
    settings.setFlag(Qgis.MapSettingsFlag.Antialiasing, True)
    settings.setFlag(Qgis.MapSettingsFlag.HighQualityImageTransforms, True)
    settings.setFlag(Qgis.MapSettingsFlag.DrawLabeling, False)
    settings.setBackgroundColor(QColor(255, 255, 255))
    if not settings.hasValidSettings():
        raise CaptureError(tr("The map canvas has no valid extent or CRS to capture."))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    if image.isNull():
        raise CaptureError(tr("Rendering the map failed."))
    image = image.convertToFormat(QImage.Format.Format_RGB32)
    return Capture(image=image, transform=transform_from_map_settings(settings), crs=settings.destinationCrs(),
                   source="canvas", source_layers=[lyr.name() for lyr in layers], warnings=warnings,
                   map_settings=settings)


def capture_raster(layer: QgsRasterLayer, extent: QgsRectangle, extent_crs: QgsCoordinateReferenceSystem,
                   resolution: float = 0.0, max_size: int = 2048,
                   project: Optional[QgsProject] = None) -> Capture:
    """Read `layer` over `extent` (in `extent_crs`) at native (resolution 0) or the given ground
    resolution (layer map units per pixel), snapped to the raster's pixel grid."""
    if layer is None or not isinstance(layer, QgsRasterLayer) or not layer.isValid():
        raise CaptureError(tr("Choose a raster layer to read (the capture source is set to a raster)."))
    project = project or QgsProject.instance()
    crs = layer.crs()
    if extent_crs.isValid() and crs.isValid() and extent_crs != crs:
        ct = QgsCoordinateTransform(extent_crs, crs, project.transformContext())
        extent = ct.transformBoundingBox(extent)
    full = layer.extent()
    area = extent.intersect(full)
    if area.isEmpty() or area.width() <= 0 or area.height() <= 0:
        raise CaptureError(tr("The raster {0} does not cover the visible extent.").format(layer.name()))
    native_x, native_y = layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY()
    warnings = []
    if resolution and resolution > 0:
        res_x = res_y = float(resolution)
    else:
        res_x, res_y = native_x, native_y
        # snap to the raster's own pixel grid so captured pixels are raster pixels
        x0 = full.xMinimum() + math.floor((area.xMinimum() - full.xMinimum()) / native_x + 1e-9) * native_x
        x1 = full.xMinimum() + math.ceil((area.xMaximum() - full.xMinimum()) / native_x - 1e-9) * native_x
        y1 = full.yMaximum() - math.floor((full.yMaximum() - area.yMaximum()) / native_y + 1e-9) * native_y
        y0 = full.yMaximum() - math.ceil((full.yMaximum() - area.yMinimum()) / native_y - 1e-9) * native_y
        area = QgsRectangle(x0, y0, x1, y1)
    width = max(1, round(area.width() / res_x))
    height = max(1, round(area.height() / res_y))
    if max_size and max(width, height) > max_size:
        scale = max(width, height) / max_size
        res_x, res_y = res_x * scale, res_y * scale
        width, height = max(1, round(area.width() / res_x)), max(1, round(area.height() / res_y))
        warnings.append(tr("{0} was read at {1:.3g} map units per pixel instead of its native resolution (capture "
                           "size limit {2} px).").format(layer.name(), res_x, max_size))
    res_x, res_y = area.width() / width, area.height() / height
    renderer = layer.renderer()
    if renderer is None:
        raise CaptureError(tr("The raster {0} has no renderer.").format(layer.name()))
    block = renderer.block(1, area, width, height)
    if block is None or not block.isValid() or block.width() != width:
        raise CaptureError(tr("Reading the raster {0} failed.").format(layer.name()))
    image = block.image()
    if image.isNull():
        raise CaptureError(tr("Reading the raster {0} failed.").format(layer.name()))
    # Transparent (nodata) pixels become black; the model sees what QGIS shows on black.
    flat = QImage(image.size(), QImage.Format.Format_RGB32)
    flat.fill(QColor(0, 0, 0))
    from qgis.PyQt.QtGui import QPainter
    painter = QPainter(flat)
    painter.drawImage(0, 0, image)
    painter.end()
    transform = GeoTransform.from_gdal((area.xMinimum(), res_x, 0.0, area.yMaximum(), 0.0, -res_y))
    return Capture(image=flat, transform=transform, crs=crs, source="raster", source_layers=[layer.name()],
                   warnings=warnings)
