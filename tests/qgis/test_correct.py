"""Issue 14, capability 11: correct an answer. A negative point, then a positive point, then undo:
the mask and the contour change and come back; a stored correction is marked `edited`, keeps the
model's original answer and survives a restart. Tiny SAM2 behind a live replay backend."""
import json
import os
import subprocess
import sys
from pathlib import Path

from osgeo import gdal
from qgis.core import QgsPointXY, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt

from georeasoner_plugin.gui.dock import GeoReasonerDock
from georeasoner_plugin.qgis_io.asker import Asker
from georeasoner_plugin.qgis_io.capture import prepare_raster
from georeasoner_plugin.qgis_io.client import AskRequest, BackendClient
from georeasoner_plugin.qgis_io.layers import answer_layers
from georeasoner_plugin.qgis_io.service import Question
from georeasoner_plugin.qgis_io.store import AnswerStore, store_path_for

from test_end_to_end import ask_and_wait

ROOT = Path(__file__).resolve().parents[2]


def state(stored, project, index):
    """(mask pixels of the object, WKT of its contour) as stored and as the project's layer shows it."""
    mask = gdal.Open(f"GPKG:{stored.store}:{stored.tables['mask']}").ReadAsArray()
    (contours,) = [lyr for lyr in answer_layers(stored.answer.answer_id, project)
                   if lyr.customProperty("georeasoner/kind") == "contours"]
    wkts = [f.geometry().asWkt(1) for f in contours.getFeatures() if f["obj_index"] == index]
    return (mask == index + 1).sum(), tuple(wkts)


def test_negative_positive_undo_and_restart(qgis_iface, replay_backend, settings_for, naip_path, tmp_path):
    settings_for(replay_backend)
    project = QgsProject.instance()
    project.clear()
    naip = QgsRasterLayer(str(naip_path), "naip", "gdal")
    project.addMapLayer(naip)
    assert project.write(str(tmp_path / "correct.qgz"))
    qgis_iface.mapCanvas().setDestinationCrs(naip.crs())
    client = BackendClient(replay_backend.url, replay_backend.token, timeout_s=120)
    spec = prepare_raster(naip, naip.extent(), naip.crs(), transform_context=project.transformContext())
    results = ask_and_wait(Asker(project), client, Question(
        AskRequest("Which lakes could supply irrigation water?", b"", outputs=["boxes", "points", "masks", "contours"]),
        spec, store_path_for(project), project.transformContext()))
    stored = results["stored"]
    dock = GeoReasonerDock(qgis_iface)
    try:
        tool = dock.correct(stored)
        assert tool is not None, dock.last_message
        obj = [o for o in stored.answer.objects if o.index == 1][0]
        x1, y1, x2, y2 = obj.box

        def at(fx, fy):
            return QgsPointXY(*stored.transform.pixel_to_map(x1 + fx * (x2 - x1), y1 + fy * (y2 - y1)))

        tool.click(at(0.5, 0.5))  # select the object
        assert tool.selected == 1
        original = state(stored, project, 1)
        tool.click(at(0.5, 0.5), Qt.MouseButton.RightButton)  # a negative point in its middle
        negative = state(tool.corrector.stored, project, 1)
        tool.click(at(0.2, 0.8), Qt.MouseButton.LeftButton)  # then a positive one
        positive = state(tool.corrector.stored, project, 1)
        assert negative != original and positive != negative, (original[0], negative[0], positive[0])
        tool.undo()
        assert state(tool.corrector.stored, project, 1) == negative
        tool.undo()
        assert state(tool.corrector.stored, project, 1) == original
        # a correction that stays: drag a new box over the lake's north half
        tool.box(at(0.0, 0.0), at(1.0, 0.5))
        corrected = state(tool.corrector.stored, project, 1)
        assert corrected != original
        timings = tool.corrector.last_timings
        print(f"correction: request {timings['request_s'] * 1000:.0f} ms (model {timings['model_s'] * 1000:.0f} ms), "
              f"store {timings['store_s'] * 1000:.0f} ms, layers {timings['layers_s'] * 1000:.0f} ms")
        row = AnswerStore(stored.store).get(stored.answer.answer_id)
        assert row.edited == (1,) and json.loads(row.original_json)["objects"][1]["box"] == list(obj.box)
        assert project.write()
    finally:
        dock.deleteLater()
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    result = subprocess.run([sys.executable, str(Path(__file__).with_name("reopen_project.py")),
                             str(tmp_path / "correct.qgz"), str(ROOT)], capture_output=True, text=True, env=env,
                            timeout=300)
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("REPORT ")]
    assert lines, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads(lines[-1][7:])
    (group,) = [g for g in report["groups"] if g["answer_id"] == stored.answer.answer_id]
    contours = [layer for layer in group["layers"] if layer["kind"] == "contours"][0]
    assert contours["sources"] == {"0": "model", "1": "edited", "2": "model", "3": "model"}
