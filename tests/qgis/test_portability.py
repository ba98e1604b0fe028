"""Issue 14, defect 2: answers asked before the first save move beside the project when it is saved,
and a moved project folder still opens with every answer, its history and its reasoning."""
import json
import os
import re
import zipfile
import shutil
import subprocess
import sys
from pathlib import Path

from qgis.core import QgsProject, QgsRasterLayer

from georeasoner_plugin.gui.dock import GeoReasonerDock
from georeasoner_plugin.qgis_io.asker import Asker
from georeasoner_plugin.qgis_io.capture import prepare_raster
from georeasoner_plugin.qgis_io.client import AskRequest, BackendClient
from georeasoner_plugin.qgis_io.layers import answer_layers, layer_store
from georeasoner_plugin.qgis_io.service import Question
from georeasoner_plugin.qgis_io.store import AnswerStore, store_path_for, unsaved_store_path

from conftest import wait_until
from test_end_to_end import ask_and_wait

ROOT = Path(__file__).resolve().parents[2]


def test_ask_before_first_save_save_move_reopen(qgis_iface, replay_backend, naip_path, tmp_path):
    project = QgsProject.instance()
    project.clear()
    folder = tmp_path / "fields"
    folder.mkdir()
    raster = folder / "naip.tif"  # the imagery travels with the project folder
    shutil.copy(naip_path, raster)
    naip = QgsRasterLayer(str(raster), "naip", "gdal")
    project.addMapLayer(naip)
    dock = GeoReasonerDock(qgis_iface)  # the plugin's dock watches the project being saved
    try:
        assert store_path_for(project) == unsaved_store_path()
        client = BackendClient(replay_backend.url, replay_backend.token, timeout_s=120)
        spec = prepare_raster(naip, naip.extent(), naip.crs(), transform_context=project.transformContext())
        results = ask_and_wait(Asker(project), client, Question(AskRequest("Which lakes could supply irrigation water?",
                                                                           b""), spec, store_path_for(project)))
        stored = results["stored"]
        answer_id = stored.answer.answer_id
        assert stored.store == unsaved_store_path()

        assert project.write(str(folder / "lakes.qgz"))
        own = folder / "lakes_georeasoner.gpkg"
        assert AnswerStore(own).get(answer_id) is not None, dock.last_message
        assert AnswerStore(unsaved_store_path()).get(answer_id) is None, "and left the unsaved-projects store"
        assert {layer_store(lyr) for lyr in answer_layers(answer_id, project)} == {own}
        assert dock.history.count() == 1, dock.last_message

        def saved_sources():
            with zipfile.ZipFile(folder / "lakes.qgz") as zf:
                xml = zf.read([n for n in zf.namelist() if n.endswith(".qgs")][0]).decode()
            return [s for s in re.findall(r"<datasource>([^<]*)</datasource>", xml) if "georeasoner.gpkg" in s]

        # the project file is written again right after, pointing at its own store, relatively
        assert wait_until(lambda: saved_sources() and not [s for s in saved_sources() if "unsaved" in s], 20), \
            saved_sources()
        assert all(s.replace("GPKG:", "").startswith("./lakes_georeasoner.gpkg") for s in saved_sources())
    finally:
        dock.deleteLater()
        project.clear()

    moved = tmp_path / "shared" / "fields-copy"
    moved.parent.mkdir()
    shutil.move(str(folder), str(moved))
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    result = subprocess.run([sys.executable, str(Path(__file__).with_name("reopen_project.py")),
                             str(moved / "lakes.qgz"), str(ROOT)], capture_output=True, text=True, env=env, timeout=300)
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("REPORT ")]
    assert lines, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads(lines[-1][7:])
    (group,) = [g for g in report["groups"] if g["answer_id"] == answer_id]
    assert {layer["kind"] for layer in group["layers"]} == {"boxes", "points", "contours", "mask"}
    assert all(layer["valid"] for layer in group["layers"]), group
    assert all(layer["source"].startswith(str(moved)) for layer in group["layers"]), group
    (entry,) = report["history"]
    assert entry["answer_id"] == answer_id and "lake" in entry["reasoning"] and entry["objects"] == 4
