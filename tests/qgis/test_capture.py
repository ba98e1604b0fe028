"""Capture and georeferencing against QGIS's own renderer (no backend needed)."""

import pytest
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsMapSettings,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
)
from qgis.PyQt.QtCore import QSize

from georeasoner_plugin.qgis_io.capture import CaptureError, capture_canvas, capture_raster

from geo_helpers import assert_within_one_pixel, georef_errors, make_twin, render_twin, twin_layer

CONFIGS = {
    "raster_crs": ("EPSG:26914", 0.0),
    "web_mercator": ("EPSG:3857", 0.0),
    "rotated": ("EPSG:26914", 30.0),
    "web_mercator_rotated": ("EPSG:3857", -17.0),
}


def map_settings_for(layer, crs_id, rotation, size=(500, 400), zoom=0.3):
    crs = QgsCoordinateReferenceSystem(crs_id)
    s = QgsMapSettings()
    s.setLayers([layer])
    s.setDestinationCrs(crs)
    s.setOutputSize(QSize(*size))
    s.setRotation(rotation)
    from qgis.core import QgsCoordinateTransform
    extent = QgsCoordinateTransform(layer.crs(), crs, QgsProject.instance()).transformBoundingBox(layer.extent())
    extent.scale(zoom)
    s.setExtent(extent)
    return s


@pytest.fixture(scope="module")
def twin_path(naip_path, tmp_path_factory):
    return make_twin(naip_path, tmp_path_factory.mktemp("twin") / "twin.tif")


@pytest.fixture()
def twin(twin_path):
    # function scope: pytest-qgis deletes layers that fixtures hand out after each test
    return twin_layer(twin_path)


@pytest.fixture()
def naip_layer(naip_path):
    layer = QgsRasterLayer(str(naip_path), "naip", "gdal")
    assert layer.isValid()
    return layer


@pytest.mark.parametrize("config", list(CONFIGS))
def test_canvas_capture_georeference_matches_renderer(config, naip_layer, twin, naip_path):
    crs_id, rotation = CONFIGS[config]
    capture = capture_canvas(map_settings_for(naip_layer, crs_id, rotation))
    assert capture.width == 500 and capture.height == 400
    assert capture.crs.authid() == crs_id
    truth = render_twin(capture.map_settings, twin)
    errors = georef_errors(capture, truth, naip_path, [(x + 0.5, y + 0.5) for y in range(5, capture.height - 5, 11)
                                                       for x in range(5, capture.width - 5, 13)])
    assert_within_one_pixel(errors, config)


def test_capture_excludes_answer_layers_and_refuses_empty(naip_layer):
    from georeasoner_plugin.qgis_io.capture import ANSWER_PROPERTY

    s = map_settings_for(naip_layer, "EPSG:26914", 0)
    clone = naip_layer.clone()
    clone.setCustomProperty(ANSWER_PROPERTY, "abc")
    s.setLayers([clone])
    with pytest.raises(CaptureError, match="add imagery"):
        capture_canvas(s)
    s.setLayers([clone, naip_layer])
    capture = capture_canvas(s)
    assert capture.source_layers == ["naip"]


def test_canvas_capture_size_limit(naip_layer):
    capture = capture_canvas(map_settings_for(naip_layer, "EPSG:26914", 0, size=(800, 400)), max_size=400)
    assert (capture.width, capture.height) == (400, 200)
    # still covers the same map extent
    s = map_settings_for(naip_layer, "EPSG:26914", 0, size=(800, 400))
    x0, y0 = capture.transform.pixel_to_map(0, 0)
    assert abs(x0 - s.visibleExtent().xMinimum()) < 1e-6 and abs(y0 - s.visibleExtent().yMaximum()) < 1e-6


def test_raster_capture_native_grid(naip_layer, naip_path):
    from osgeo import gdal

    gt = gdal.Open(str(naip_path)).GetGeoTransform()
    # an extent in EPSG:3857 around the middle of the raster
    from qgis.core import QgsCoordinateTransform
    merc = QgsCoordinateReferenceSystem("EPSG:3857")
    inner = QgsRectangle(naip_layer.extent())
    inner.scale(0.5)
    extent = QgsCoordinateTransform(naip_layer.crs(), merc, QgsProject.instance()).transformBoundingBox(inner)
    capture = capture_raster(naip_layer, extent, merc)
    t = capture.transform
    assert capture.crs == naip_layer.crs()
    assert t.pixel_width == pytest.approx(gt[1]) and t.pixel_height == pytest.approx(gt[5])
    # origin on the raster's pixel grid
    col0 = (t.origin_x - gt[0]) / gt[1]
    row0 = (t.origin_y - gt[3]) / gt[5]
    assert abs(col0 - round(col0)) < 1e-6 and abs(row0 - round(row0)) < 1e-6
    # pixels are the raster's own: compare a few with a direct GDAL read (band 1 = red, shown as red)
    ds = gdal.Open(str(naip_path))
    for (x, y) in ((3, 4), (100, 50), (capture.width - 2, capture.height - 3)):
        value = ds.GetRasterBand(1).ReadRaster(int(col0) + x, int(row0) + y, 1, 1)[0]
        shown = capture.image.pixelColor(x, y).red()
        renderer = naip_layer.renderer()
        if renderer.redContrastEnhancement() is None:
            assert shown == value
    # a coarser ground resolution and a capture limit
    coarse = capture_raster(naip_layer, extent, merc, resolution=20.0)
    assert coarse.transform.pixel_width == pytest.approx(20.0, rel=0.05)
    with pytest.raises(CaptureError):
        far = QgsRectangle(0, 0, 10, 10)
        capture_raster(naip_layer, far, naip_layer.crs())
