"""The "Ask imagery" Processing algorithm through processing.run and through qgis_process."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from osgeo import ogr
from qgis.core import QgsApplication, QgsProcessingFeedback

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "Which lakes could supply irrigation water?"


@pytest.fixture()
def provider(qgis_processing):
    from georeasoner_plugin.processing.provider import GeoReasonerProvider

    registry = QgsApplication.processingRegistry()
    p = GeoReasonerProvider()
    registry.addProvider(p)
    yield p
    registry.removeProvider(p)


def test_processing_run(provider, replay_backend, settings_for, naip_path, tmp_path):
    import processing

    settings_for(replay_backend)
    out = tmp_path / "out.gpkg"
    result = processing.run("georeasoner:ask_imagery", {
        "INPUT": str(naip_path), "QUESTION": QUESTION, "RESOLUTION": 0, "PROFILE": 0,
        "BOXES": f"ogr:dbname='{out}' table=\"boxes\" (geom)",
        "POINTS": str(tmp_path / "points.gpkg"),
        "CONTOURS": str(tmp_path / "contours.shp"),
    }, feedback=QgsProcessingFeedback())  # an explicit feedback: the stub iface has no real message bar
    ds = ogr.Open(str(out))  # keep the data source alive while its layer is used
    boxes = ds.GetLayerByName("boxes")
    assert boxes.GetFeatureCount() == 4
    srs = boxes.GetSpatialRef()
    srs.AutoIdentifyEPSG()
    assert srs.GetAuthorityCode(None) == "26914"
    # read at native resolution over the whole raster: the boxes lie inside the raster's extent
    from osgeo import gdal
    gt = gdal.Open(str(naip_path)).GetGeoTransform()
    minx, maxx, miny, maxy = boxes.GetExtent()
    assert gt[0] <= minx < maxx <= gt[0] + 934 * gt[1] and gt[3] + 723 * gt[5] <= miny < maxy <= gt[3]
    contours = ogr.Open(str(tmp_path / "contours.shp"))
    assert contours.GetLayer(0).GetFeatureCount() >= 1
    assert result["BOXES"].startswith(str(out))
    points_ds = ogr.Open(str(tmp_path / "points.gpkg"))
    assert points_ds.GetLayer(0).GetFeatureCount() == 4  # remotereasoner: each box centre, the point SAM2 got


def test_qgis_process(replay_backend, naip_path, tmp_path):
    qgis_process = shutil.which("qgis_process")
    if not qgis_process:
        pytest.skip("qgis_process is not installed (Debian package qgis)")
    out = subprocess.run([sys.executable, str(ROOT / "build.py"), "--out", str(tmp_path / "dist")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    (plugin_zip,) = (tmp_path / "dist").glob("*.zip")
    config_root = tmp_path / "qgis-config"  # a fresh profile root (QGIS_CUSTOM_CONFIG_PATH)
    profile = config_root / "profiles" / "default"
    plugins = profile / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(plugin_zip) as zf:
        zf.extractall(plugins)
    ini = profile / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text(f"[georeasoner]\nbackend_url={replay_backend.url}\ntoken_file={replay_backend.token_file}\n")
    env = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(config_root), QT_QPA_PLATFORM="offscreen", PYTHONPATH="")
    enable = subprocess.run([qgis_process, "plugins", "enable", "georeasoner_plugin"], capture_output=True,
                            text=True, env=env, timeout=300)
    assert enable.returncode == 0, enable.stdout + enable.stderr
    out_gpkg = tmp_path / "qp.gpkg"
    run = subprocess.run([qgis_process, "--json", "run", "georeasoner:ask_imagery", "--",
                          f"INPUT={naip_path}", f"QUESTION={QUESTION}", "PROFILE=0",
                          f"BOXES={out_gpkg}", f"CONTOURS={tmp_path / 'qp_contours.gpkg'}"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(run.stdout[run.stdout.index("{"):])
    assert Path(report["results"]["BOXES"].split("|")[0]).exists()
    ds = ogr.Open(str(out_gpkg))
    assert ds.GetLayer(0).GetFeatureCount() == 4
