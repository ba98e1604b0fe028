"""Answers persist with the project (save, restart QGIS, reopen) and export to shapefile/GeoPackage."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from osgeo import ogr
from qgis.core import QgsCoordinateReferenceSystem, QgsProject, QgsRasterLayer

from georeasoner_plugin.qgis_io.asker import Asker
from georeasoner_plugin.qgis_io.capture import prepare_raster
from georeasoner_plugin.qgis_io.client import AskRequest, BackendClient
from georeasoner_plugin.qgis_io.export import ExistingFilesError, export_answers
from georeasoner_plugin.qgis_io.service import Question
from georeasoner_plugin.qgis_io.store import store_path_for

from test_end_to_end import ask_and_wait

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def saved_answer(replay_backend, naip_path, tmp_path_factory):
    """A project saved with one answer read from the raster at native resolution (source CRS)."""
    folder = tmp_path_factory.mktemp("project")
    project = QgsProject.instance()
    project.clear()
    naip = QgsRasterLayer(str(naip_path), "naip", "gdal")
    project.addMapLayer(naip)
    project.setCrs(naip.crs())
    path = folder / "lakes.qgz"
    assert project.write(str(path))
    spec = prepare_raster(naip, naip.extent(), naip.crs(), transform_context=project.transformContext())
    assert (spec.width, spec.height) == (934, 723)  # the raster's own grid
    client = BackendClient(replay_backend.url, replay_backend.token, timeout_s=120)
    asker = Asker(project)
    results = ask_and_wait(asker, client, Question(AskRequest("Which lakes could supply irrigation water?", b""),
                                                   spec, store_path_for(project), project.transformContext()))
    assert "error" not in results, results.get("error")
    assert project.write(str(path))
    stored = results["stored"]
    assert stored.store == folder / "lakes_georeasoner.gpkg"  # next to the saved project
    return path, stored


def test_reopen_after_restart_brings_everything_back(saved_answer):
    path, stored = saved_answer
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    result = subprocess.run([sys.executable, str(Path(__file__).with_name("reopen_project.py")), str(path), str(ROOT)],
                            capture_output=True, text=True, env=env, timeout=300)
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("REPORT ")]
    assert lines, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads(lines[-1][7:])
    assert report["read"]
    (group,) = [g for g in report["groups"] if g["answer_id"] == stored.answer.answer_id]
    assert group["name"].startswith("Which lakes could supply irrigation water? (")
    kinds = {layer["kind"]: layer for layer in group["layers"]}
    assert set(kinds) == {"boxes", "points", "contours", "mask"}
    assert all(layer["valid"] for layer in group["layers"])
    assert kinds["boxes"]["count"] == 4 and kinds["boxes"]["crs"] == "EPSG:26914"
    (entry,) = [h for h in report["history"] if h["answer_id"] == stored.answer.answer_id]
    assert entry["reasoning"] == stored.answer.reasoning and "lake" in entry["reasoning"]
    assert entry["objects"] == 4


def test_export_shapefiles_in_source_crs(saved_answer, tmp_path):
    _, stored = saved_answer
    out = tmp_path / "shp"
    files = export_answers([stored], out, "shp")
    boxes = [f for f in files if f.name.endswith("_boxes.shp")][0]
    for ext in (".shp", ".shx", ".dbf", ".prj", ".cpg"):
        assert boxes.with_suffix(ext).is_file()
    assert boxes.with_suffix(".cpg").read_text().strip().upper().replace("-", "") == "UTF8"
    ds = ogr.Open(str(boxes))
    layer = ds.GetLayer(0)
    srs = layer.GetSpatialRef()
    srs.AutoIdentifyEPSG()
    assert srs.GetAuthorityCode(None) == "26914"
    names = [layer.GetLayerDefn().GetFieldDefn(i).GetName() for i in range(layer.GetLayerDefn().GetFieldCount())]
    from georeasoner_plugin.core.fields import field_names
    assert names == field_names("boxes")
    assert layer.GetFeatureCount() == 4
    feature = layer.GetNextFeature()
    assert feature.GetField("answer_id") == stored.answer.answer_id
    assert feature.GetField("area_m2") > 0
    sidecar = [f for f in files if f.name.endswith("_answer.txt")][0]
    assert stored.answer.reasoning in sidecar.read_text(encoding="utf-8")
    contours = ogr.Open(str([f for f in files if f.name.endswith("_contours.shp")][0]))
    assert contours.GetLayer(0).GetFeatureCount() >= 1
    # asks before overwriting
    with pytest.raises(ExistingFilesError):
        export_answers([stored], out, "shp")
    assert export_answers([stored], out, "shp", overwrite=True)


def test_export_geopackage_in_chosen_crs(saved_answer, tmp_path):
    _, stored = saved_answer
    target = tmp_path / "lakes_4326.gpkg"
    export_answers([stored], target, "gpkg", crs=QgsCoordinateReferenceSystem("EPSG:4326"))
    ds = ogr.Open(str(target))
    names = [ds.GetLayer(i).GetName() for i in range(ds.GetLayerCount())]
    assert any(n.endswith("_boxes") for n in names) and any(n.endswith("_contours") for n in names)
    layer = [ds.GetLayer(i) for i in range(ds.GetLayerCount()) if ds.GetLayer(i).GetName().endswith("_boxes")][0]
    srs = layer.GetSpatialRef()
    srs.AutoIdentifyEPSG()
    assert srs.GetAuthorityCode(None) == "4326"
    minx, maxx, miny, maxy = layer.GetExtent()
    assert -100 < minx < maxx < -98 and 46 < miny < maxy < 48  # North Dakota
    with pytest.raises(ExistingFilesError):
        export_answers([stored], target, "gpkg")
