""""Ask imagery over a raster (tiled)": the layer read tile by tile through QGIS, sent as a backend job.

Real QGIS, a real backend subprocess (the recorded NAIP answer replayed for every tile, tiny SAM2),
real GeoPackage outputs.
"""

import pytest
from osgeo import gdal, ogr
from qgis.core import QgsApplication, QgsProcessingFeedback, QgsRasterLayer

from georeasoner_plugin.core.tiling import plan_tiles

QUESTION = "Which lakes could supply irrigation water?"


@pytest.fixture()
def provider(qgis_processing):
    from georeasoner_plugin.processing.provider import GeoReasonerProvider

    registry = QgsApplication.processingRegistry()
    p = GeoReasonerProvider()
    registry.addProvider(p)
    yield p
    registry.removeProvider(p)


class Recorder(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.infos, self.progress = [], []

    def pushInfo(self, info):  # noqa: N802 - QGIS naming
        self.infos.append(info)
        super().pushInfo(info)

    def setProgressText(self, text):  # noqa: N802
        self.progress.append(text)
        super().setProgressText(text)


def test_tiled_algorithm_asks_every_tile_and_lands_on_the_raster(provider, replay_backend, settings_for, naip_path,
                                                                  tmp_path):
    import processing

    settings_for(replay_backend)
    out = tmp_path / "tiled.gpkg"
    feedback = Recorder()
    processing.run("georeasoner:ask_imagery_tiled", {
        "INPUT": str(naip_path), "QUESTION": QUESTION, "TILE_SIZE": 512, "OVERLAP": 12.5, "RESOLUTION": 0,
        "PROFILE": 0, "BOXES": f"ogr:dbname='{out}' table=\"boxes\" (geom)",
        "POINTS": str(tmp_path / "points.gpkg"), "CONTOURS": str(tmp_path / "contours.gpkg"),
    }, feedback=feedback)
    raster = gdal.Open(str(naip_path))
    expected = plan_tiles(raster.RasterXSize, raster.RasterYSize, tile_size=512).grid_size
    assert any(f"Asking {expected} tile(s) of 512 px" in i for i in feedback.infos), feedback.infos
    assert any(f"{expected} / {expected} tiles" in p for p in feedback.progress), feedback.progress
    ds = ogr.Open(str(out))
    boxes = ds.GetLayerByName("boxes")
    assert boxes.GetFeatureCount() >= 1
    srs = boxes.GetSpatialRef()
    srs.AutoIdentifyEPSG()
    assert srs.GetAuthorityCode(None) == "26914"
    gt = raster.GetGeoTransform()
    minx, maxx, miny, maxy = boxes.GetExtent()
    assert gt[0] <= minx < maxx <= gt[0] + raster.RasterXSize * gt[1]
    assert gt[3] + raster.RasterYSize * gt[5] <= miny < maxy <= gt[3]


def test_the_plugin_plans_the_same_windows_as_the_backend(naip_path):
    from georeasoner_plugin.qgis_io.tiled_job import layer_plan

    layer = QgsRasterLayer(str(naip_path), "naip")
    plan, transform = layer_plan(layer, None, 512, 0.125)
    raster = gdal.Open(str(naip_path))
    assert plan.tiles == plan_tiles(raster.RasterXSize, raster.RasterYSize, tile_size=512).tiles
    assert transform.to_gdal() == pytest.approx(raster.GetGeoTransform())


def test_focus_strategy_lets_the_local_backend_read_the_file(provider, replay_backend, settings_for, naip_path,
                                                             tmp_path):
    import processing

    settings_for(replay_backend)
    out = tmp_path / "focus.gpkg"
    feedback = Recorder()
    processing.run("georeasoner:ask_imagery_tiled", {
        "INPUT": str(naip_path), "QUESTION": QUESTION, "TILE_SIZE": 512, "STRATEGY": 1,
        "BOXES": str(out), "CONTOURS": "TEMPORARY_OUTPUT",
    }, feedback=feedback)
    raster = gdal.Open(str(naip_path))
    grid = plan_tiles(raster.RasterXSize, raster.RasterYSize, tile_size=512).grid_size
    # The replayed answer keeps one box inside the overview's frame (east edge): two tiles meet it.
    assert f"focus: 2 of {grid} tiles meet the overview's boxes" in feedback.infos, feedback.infos
    assert ogr.Open(str(out)).GetLayer(0).GetFeatureCount() >= 1


def test_an_extent_in_another_crs_lands_on_the_raster_grid(naip_path):
    """An EPSG:3857 extent over the UTM raster: the plan's pixels are the raster's own pixels, and the
    plan covers the requested area to within one pixel."""
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsProject, QgsRectangle

    from georeasoner_plugin.qgis_io.tiled_job import layer_plan

    layer = QgsRasterLayer(str(naip_path), "naip")
    full = layer.extent()
    centre = full.center()
    wanted = QgsRectangle(centre.x() - 150, centre.y() - 100, centre.x() + 150, centre.y() + 100)
    to_web = QgsCoordinateTransform(layer.crs(), QgsCoordinateReferenceSystem("EPSG:3857"), QgsProject.instance())
    web_extent = to_web.transformBoundingBox(wanted)
    back = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:3857"), layer.crs(), QgsProject.instance())
    in_layer_crs = back.transformBoundingBox(web_extent)  # what parameterAsExtent(..., layer.crs()) gives
    plan, transform = layer_plan(layer, in_layer_crs, 128, 0.125)
    gt = gdal.Open(str(naip_path)).GetGeoTransform()
    col = (transform.origin_x - gt[0]) / gt[1]
    row = (transform.origin_y - gt[3]) / gt[5]
    assert abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6
    assert (transform.pixel_width, transform.pixel_height) == pytest.approx((gt[1], gt[5]))
    x0, y0 = transform.pixel_to_map(0, 0)
    x1, y1 = transform.pixel_to_map(plan.width, plan.height)
    assert abs(x0 - in_layer_crs.xMinimum()) <= gt[1] and abs(x1 - in_layer_crs.xMaximum()) <= gt[1]
    assert abs(y0 - in_layer_crs.yMaximum()) <= -gt[5] and abs(y1 - in_layer_crs.yMinimum()) <= -gt[5]
