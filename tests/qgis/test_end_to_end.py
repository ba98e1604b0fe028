"""End to end against a live backend subprocess: ask over NAIP, layers land where they should."""
import json

import pytest
from qgis.core import QgsProject, QgsRasterLayer

from georeasoner_plugin.qgis_io.asker import Asker
from georeasoner_plugin.qgis_io.capture import prepare_canvas
from georeasoner_plugin.qgis_io.client import AskRequest, BackendClient
from georeasoner_plugin.qgis_io.layers import answer_layers, find_group
from georeasoner_plugin.qgis_io.service import Question

from conftest import wait_until
from geo_helpers import assert_within_one_pixel, georef_errors, make_twin, render_twin, twin_layer
from test_capture import CONFIGS, map_settings_for


@pytest.fixture(scope="module")
def twin_path(naip_path, tmp_path_factory):
    return make_twin(naip_path, tmp_path_factory.mktemp("twin") / "twin.tif")


def ask_and_wait(asker, client, questions, timeout=180):
    """Ask through the dock's Asker (the task does capture, network and store); collect the answers."""
    results = {"all": []}
    asker.answered.connect(lambda stored: (results.setdefault("stored", stored), results["all"].append(stored)))
    asker.failed.connect(lambda msg, kind: results.setdefault("error", (msg, kind)))
    task = asker.start(client, questions)
    assert wait_until(lambda: not asker.is_busy(), timeout), "no answer in time"
    results["captures"] = [r.capture for r in task.results]
    return results


def test_health_and_info(replay_backend):
    client = BackendClient(replay_backend.url, replay_backend.token, timeout_s=30)
    assert client.health()["status"] == "ready"
    info = client.info()
    assert "remotereasoner" in [p["name"] for p in info["profiles"]]
    bad = BackendClient(replay_backend.url, "wrong-token", timeout_s=30)
    with pytest.raises(Exception, match="token"):
        bad.info()


@pytest.mark.parametrize("config", ["raster_crs", "web_mercator", "rotated"])
def test_ask_naip_layers_land_on_the_raster(config, replay_backend, naip_path, twin_path, tmp_path):
    project = QgsProject.instance()
    project.clear()
    naip = QgsRasterLayer(str(naip_path), "naip", "gdal")
    project.addMapLayer(naip)
    crs_id, rotation = CONFIGS[config]
    # The recorded answer is in the model frame of a 934 x 723 image (NAIP's size): capture that size.
    # In the raster's CRS the capture is the raster itself, so the four lakes are the real lakes;
    # reprojected and rotated captures zoom in so canvas pixels are finer than raster pixels.
    zoom = 1.0 if config == "raster_crs" else 0.5
    settings = map_settings_for(naip, crs_id, rotation, size=(934, 723), zoom=zoom)
    client = BackendClient(replay_backend.url, replay_backend.token, timeout_s=120)
    request = AskRequest(question="Which lakes could supply irrigation water?", image_bytes=b"",
                         profile="remotereasoner")
    asker = Asker(project)
    results = ask_and_wait(asker, client, Question(request, prepare_canvas(settings), tmp_path / "answers.gpkg"))
    assert "error" not in results, results.get("error")
    stored = results["stored"]
    (capture,) = results["captures"]
    answer = stored.answer
    assert len(answer.objects) == 4  # the four lakes of the recorded answer
    assert "lakes" in answer.reasoning
    group = find_group(answer.answer_id, project)
    assert group is not None and group.name().startswith("Which lakes")
    layers = {lyr.customProperty("georeasoner/kind"): lyr for lyr in answer_layers(answer.answer_id, project)}
    assert set(layers) == {"boxes", "points", "contours", "mask"}
    boxes = layers["boxes"]
    assert boxes.crs().authid() == crs_id
    assert boxes.featureCount() == len(answer.objects)
    names = boxes.fields().names()
    from georeasoner_plugin.core.fields import field_names
    assert [n for n in names if n != "fid"] == field_names("boxes")

    # 1) the layer's vertices are the answer's pixels through the capture's transform
    truth = render_twin(capture.map_settings, twin_layer(twin_path))
    positions = []
    for feature in boxes.getFeatures():
        obj = answer.objects[[o.index for o in answer.objects].index(feature["obj_index"])]
        x1, y1, x2, y2 = obj.box
        ring = feature.geometry().asPolygon()[0]
        for (px, py), vertex in zip([(x1, y1), (x2, y1), (x2, y2), (x1, y2)], ring):
            mx, my = capture.transform.pixel_to_map(px, py)
            assert abs(vertex.x() - mx) < 1e-6 * max(1.0, abs(mx)) and abs(vertex.y() - my) < 1e-6 * max(1.0, abs(my))
            positions.append((min(px, capture.width - 0.5), min(py, capture.height - 0.5)))
        assert feature["area_m2"] > 0
    for feature in layers["contours"].getFeatures():
        for part in feature.geometry().asMultiPolygon():
            for vertex in part[0][::7]:
                px, py = capture.transform.map_to_pixel(vertex.x(), vertex.y())
                positions.append((min(max(px, 0), capture.width - 0.5), min(max(py, 0), capture.height - 0.5)))
    # 2) ... and those pixels sit where the raster's geotransform puts them (QGIS's renderer as witness)
    assert_within_one_pixel(georef_errors(capture, truth, naip_path, positions), config)

    # the reasoning and the whole answer are kept in the store
    from georeasoner_plugin.qgis_io.store import AnswerStore
    rows = AnswerStore(stored.store).answers()
    assert rows[-1]["reasoning"] == answer.reasoning
    assert json.loads(rows[-1]["answer_json"])["answer_id"] == answer.answer_id
