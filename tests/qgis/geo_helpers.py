"""Independent ground truth for georeferencing tests.

A 'twin' of a raster has the same size, geotransform and CRS, and each pixel's colour encodes its
own (col, row). Rendering the twin with the very map settings a capture used shows, for every
captured pixel, which raster pixel QGIS's renderer put there: a check that does not reuse the
plugin's transform arithmetic.
"""
from pathlib import Path

from osgeo import gdal
from qgis.core import (
    Qgis,
    QgsContrastEnhancement,
    QgsCoordinateTransform,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsMultiBandColorRenderer,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
)
from qgis.PyQt.QtGui import QColor


def make_twin(raster: Path, out: Path) -> Path:
    import numpy as np

    src = gdal.Open(str(raster))
    w, h = src.RasterXSize, src.RasterYSize
    ds = gdal.GetDriverByName("GTiff").Create(str(out), w, h, 3, gdal.GDT_Byte)
    ds.SetGeoTransform(src.GetGeoTransform())
    ds.SetProjection(src.GetProjection())
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    ds.GetRasterBand(1).WriteArray((cols & 255).astype("uint8"))
    ds.GetRasterBand(2).WriteArray((rows & 255).astype("uint8"))
    ds.GetRasterBand(3).WriteArray(((cols >> 8) | ((rows >> 8) << 4)).astype("uint8"))
    ds = None
    return out


def twin_layer(path: Path) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), "twin", "gdal")
    assert layer.isValid()
    renderer = QgsMultiBandColorRenderer(layer.dataProvider(), 1, 2, 3)
    for band in (1, 2, 3):
        ce = QgsContrastEnhancement(Qgis.DataType.Byte)
        ce.setContrastEnhancementAlgorithm(QgsContrastEnhancement.ContrastEnhancementAlgorithm.NoEnhancement)
        getattr(renderer, ["setRedContrastEnhancement", "setGreenContrastEnhancement",
                           "setBlueContrastEnhancement"][band - 1])(ce)
    layer.setRenderer(renderer)
    from qgis.core import QgsRasterProjector
    layer.pipe().projector().setPrecision(QgsRasterProjector.Precision.Exact)
    return layer


def render_twin(settings: QgsMapSettings, twin: QgsRasterLayer):
    s = QgsMapSettings(settings)
    s.setLayers([twin])
    s.setFlag(Qgis.MapSettingsFlag.Antialiasing, False)
    s.setFlag(Qgis.MapSettingsFlag.HighQualityImageTransforms, False)
    s.setBackgroundColor(QColor(0, 0, 0, 0))
    job = QgsMapRendererParallelJob(s)
    job.start()
    job.waitForFinished()
    return job.renderedImage()


def decode(image, x: int, y: int):
    """(col, row) of the twin pixel shown at image pixel (x, y), or None outside the raster."""
    c = image.pixelColor(x, y)
    if c.alpha() < 255:
        return None
    return c.red() | ((c.blue() & 15) << 8), c.green() | ((c.blue() >> 4) << 8)


_RASTERS = {}


def _raster_info(raster: Path):
    key = str(raster)
    if key not in _RASTERS:
        from qgis.core import QgsCoordinateReferenceSystem

        ds = gdal.Open(key)
        _RASTERS[key] = (QgsCoordinateReferenceSystem.fromWkt(ds.GetProjection()),
                         gdal.InvGeoTransform(ds.GetGeoTransform()))
    return _RASTERS[key]


def to_raster_pixel(point, crs, raster: Path, project=None):
    """Map point (in crs) -> continuous raster pixel through the raster's own geotransform."""
    project = project or QgsProject.instance()
    raster_crs, inv = _raster_info(raster)
    if crs != raster_crs:
        point = QgsCoordinateTransform(crs, raster_crs, project.transformContext()).transform(QgsPointXY(point))
    return gdal.ApplyGeoTransform(inv, point.x(), point.y())


def georef_errors(capture, truth, raster: Path, pixels):
    """Per captured pixel position (x, y): (d_col, d_row) in raster pixels between where the capture's
    transform puts it (through the raster's geotransform) and the centre of the raster pixel QGIS drew
    there. Positions outside the raster are skipped."""
    out = []
    for x, y in pixels:
        xi, yi = min(int(x), truth.width() - 1), min(int(y), truth.height() - 1)
        shown = decode(truth, xi, yi)
        if shown is None:
            continue
        mx, my = capture.transform.pixel_to_map(xi + 0.5, yi + 0.5)
        col, row = to_raster_pixel(QgsPointXY(mx, my), capture.crs, raster)
        out.append((col - (shown[0] + 0.5), row - (shown[1] + 0.5)))
    return out


def assert_within_one_pixel(errors, what=""):
    """No systematic offset, and within one raster pixel (QGIS's own nearest-neighbour resampling,
    twice for rotated maps, moves single samples by a fraction of a pixel more: all within 1.5)."""
    assert len(errors) >= 20, f"{what}: too few samples on the raster ({len(errors)})"
    n = len(errors)
    mean_c = sum(e[0] for e in errors) / n
    mean_r = sum(e[1] for e in errors) / n
    worst = [max(abs(c), abs(r)) for c, r in errors]
    within = sum(1 for w in worst if w <= 1.0) / n
    assert abs(mean_c) < 0.35 and abs(mean_r) < 0.35, f"{what}: systematic offset {mean_c:.2f}, {mean_r:.2f} px"
    assert within >= 0.98, f"{what}: only {within:.1%} of positions within one raster pixel"
    assert max(worst) <= 1.5, f"{what}: a position is {max(worst):.2f} raster pixels off"
