""""Ask imagery over a raster (tiled)": the layer read tile by tile through QGIS, sent as a backend job.

Real QGIS, a real backend subprocess (the recorded NAIP answer replayed for every tile, tiny SAM2),
real GeoPackage outputs.
"""
from pathlib import Path

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
