"""Issue 14, the analyst's workflow in the dock: capture area, messages, history, export, options page,
Advanced fold, areas of interest. One live replay backend (the recorded NAIP answer) for all."""
import datetime as dt
from pathlib import Path

import pytest
from osgeo import gdal, ogr
from qgis.core import (
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.gui import QgsMapMouseEvent
from qgis.PyQt.QtCore import QEvent, QMetaType, QPoint, Qt

from georeasoner_plugin.gui import area as area_mod
from georeasoner_plugin.gui.dock import GeoReasonerDock
from georeasoner_plugin.qgis_io.client import BackendClient, BackendError
from georeasoner_plugin.qgis_io.layers import answer_layers, find_group, project_answer_ids
from georeasoner_plugin.qgis_io.store import AnswerStore

from conftest import wait_until

QUESTION = "Which lakes could supply irrigation water?"


@pytest.fixture()
def naip_project(qgis_iface, naip_path):
    project = QgsProject.instance()
    project.clear()
    layer = QgsRasterLayer(str(naip_path), "naip", "gdal")
    project.addMapLayer(layer)
    canvas = qgis_iface.mapCanvas()
    window = qgis_iface.mainWindow()
    window.resize(1200, 900)
    window.show()
    canvas.resize(936, 725)
    canvas.setDestinationCrs(layer.crs())
    canvas.setLayers([layer])
    canvas.setExtent(layer.extent())
    wait_until(lambda: canvas.mapSettings().outputSize().width() == 934, 10)
    yield project, layer, canvas
    window.hide()


@pytest.fixture()
def dock(qgis_iface, naip_project, replay_backend, settings_for):
    settings_for(replay_backend, capture_source="raster", outputs="boxes,points,masks,contours",
                 zoom_to_answer=False)
    widget = GeoReasonerDock(qgis_iface)
    widget.question.setText(QUESTION)
    widget.raster.setLayer(naip_project[1])
    yield widget
    widget.asker.cancel()
    wait_until(lambda: not widget.asker.is_busy(), 30)
    widget.area_band.hide()
    widget.deleteLater()


def ask(dock, timeout=120):
    dock.ask()
    assert wait_until(lambda: not dock.asker.is_busy(), timeout), "the question did not end"


def draw(canvas, tool, map_points, button=Qt.MouseButton.LeftButton):
    """Clicks on the canvas through the tool's own event handlers (map points -> device pixels)."""
    m2p = canvas.mapSettings().mapToPixel()
    for x, y in map_points:
        p = m2p.transform(QgsPointXY(x, y))
        pos = QPoint(round(p.x()), round(p.y()))
        tool.canvasPressEvent(QgsMapMouseEvent(canvas, QEvent.Type.MouseButtonPress, pos, button))
        tool.canvasReleaseEvent(QgsMapMouseEvent(canvas, QEvent.Type.MouseButtonRelease, pos, button))


def test_capture_area_shown_and_named_zoom_optional_and_store_types(dock, naip_project):
    project, naip, canvas = naip_project
    # defect 1: honest names, and the area is its own choice
    assert "native resolution" not in " ".join(dock.source.itemText(i) for i in range(dock.source.count()))
    assert dock.area.current() == area_mod.VISIBLE
    before = canvas.extent()
    dock.ask()
    # defect 8: ask() only prepared the capture; reading, sending and storing happen in the task
    task = dock.asker.task
    assert task is not None and task.questions[0].spec.source == "raster" and not task.results
    band = dock.area_band.geometry()
    assert band is not None and not band.isEmpty(), "the capture area is shown while asking"
    assert band.boundingBox().width() > 0.9 * naip.extent().width()
    assert wait_until(lambda: not dock.asker.is_busy(), 120)
    assert "object(s) found" in dock.last_message, dock.last_message
    assert dock.area_band.geometry() is None, "the band goes when the question ends"
    assert canvas.extent() == before, "no automatic zoom unless asked for"
    (stored,) = [dock.history_panel.answers[i] for i in dock.history_panel.answers]
    assert task.results[0].stored is not None  # the store was written by the task
    # defect 9: name with time and area; typed store; reasoning in the metadata
    group = find_group(stored.answer.answer_id, project)
    assert group.name().startswith(QUESTION + " (") and "visible map" in group.name()
    boxes = [lyr for lyr in answer_layers(stored.answer.answer_id, project)
             if lyr.customProperty("georeasoner/kind") == "boxes"][0]
    fields = boxes.fields()
    assert fields.field("created").type() == QMetaType.Type.QDateTime
    assert fields.field("score").type() == QMetaType.Type.Double
    created = next(boxes.getFeatures())["created"]
    assert abs(created.toSecsSinceEpoch() - dt.datetime.now(dt.timezone.utc).timestamp()) < 600
    assert boxes.metadata().abstract() == stored.answer.reasoning and "lake" in boxes.metadata().abstract()
    # the Raster picker offers source rasters only (defect 3)
    names = [dock.raster.itemText(i) for i in range(dock.raster.count())]
    assert names == ["naip"], names
    # zoom to the answer when asked for
    dock.zoom.setChecked(True)
    ask(dock)
    assert canvas.extent() != before, "zoomed to the answer"
    # names carry the time (to the second) and the area, so repeated questions can be told apart
    import re
    titles = [dock.history.item(i).text() for i in range(dock.history.count())]
    assert all(re.search(r"\(\d\d:\d\d:\d\d, visible map\)", t) for t in titles), titles
    dock.zoom.setChecked(False)
    # rename and delete from the history
    first, second = [dock.history_panel.answers[dock.history.item(i).data(Qt.ItemDataRole.UserRole)] for i in range(2)]
    dock.history_panel.rename(first, "North-east lakes")
    assert find_group(first.answer.answer_id, project).name() == "North-east lakes"
    assert AnswerStore(first.store).get(first.answer.answer_id).title == "North-east lakes"
    assert "North-east lakes" in dock.history.item(0).text()
    dock.history_panel.delete([first, second])
    assert dock.history.count() == 0 and not answer_layers(first.answer.answer_id, project)
    assert AnswerStore(first.store).get(first.answer.answer_id) is None
    assert first.answer.answer_id not in project_answer_ids(project)


def test_boxes_outside_the_capture_are_named_as_such(dock, naip_project):
    project, naip, canvas = naip_project
    # the recorded answer's lakes lie right of x = 490 of a 934 px frame: a narrow west strip has none
    e = naip.extent()
    strip = QgsRectangle(e.xMinimum(), e.yMinimum(), e.xMinimum() + e.width() * 0.3, e.yMaximum())
    dock.area.set_mode(area_mod.RECTANGLE)
    draw(canvas, dock.area.tool, [(strip.xMinimum(), strip.yMaximum())])  # press/release at one point: nothing
    assert dock.area.drawn is None
    tool = dock.area.tool
    m2p = canvas.mapSettings().mapToPixel()
    a, b = m2p.transform(QgsPointXY(strip.xMinimum(), strip.yMaximum())), m2p.transform(
        QgsPointXY(strip.xMaximum(), strip.yMinimum()))
    tool.canvasPressEvent(QgsMapMouseEvent(canvas, QEvent.Type.MouseButtonPress, QPoint(round(a.x()), round(a.y())),
                                           Qt.MouseButton.LeftButton))
    tool.canvasReleaseEvent(QgsMapMouseEvent(canvas, QEvent.Type.MouseButtonRelease,
                                             QPoint(round(b.x()), round(b.y())), Qt.MouseButton.LeftButton))
    assert dock.area.drawn is not None
    ask(dock)
    assert "outside the captured area" in dock.last_message, dock.last_message
    assert "Rephrase" not in dock.last_message


def test_drawn_polygon_limits_the_capture_and_notes_show(dock, naip_project):
    project, naip, canvas = naip_project
    e = naip.extent()
    # a triangle over the west two thirds of the raster
    corners = [(e.xMinimum(), e.yMaximum()), (e.xMinimum() + e.width() * 0.66, e.yMaximum()),
               (e.xMinimum(), e.yMinimum())]
    dock.area.set_mode(area_mod.POLYGON)
    draw(canvas, dock.area.tool, corners)
    draw(canvas, dock.area.tool, [corners[0]], Qt.MouseButton.RightButton)
    (question,) = dock.questions(QUESTION)
    capture = question.spec.run()
    assert capture.width == pytest.approx(0.66 * 934, abs=3) and capture.height == pytest.approx(723, abs=2)
    image = capture.image
    assert image.pixelColor(capture.width - 3, capture.height - 3).getRgb()[:3] == (0, 0, 0)  # outside: nodata
    inside = [image.pixelColor(x, 20).getRgb()[:3] for x in range(5, 60, 5)]
    assert any(rgb != (0, 0, 0) for rgb in inside)
    assert QgsGeometry.fromWkt(capture.area_wkt).area() == pytest.approx(0.5 * 0.66 * e.width() * e.height(), rel=0.02)
    ask(dock)
    (stored,) = dock.history_panel.answers.values()
    assert stored.area_wkt and QgsGeometry.fromWkt(stored.area_wkt).area() > 0  # stored with the answer
    # boxes beyond the capture were dropped by the backend: its notes show under the answer
    assert not dock.notes.isHidden() and "outside the image" in dock.notes.text(), dock.notes.text()
    dock.history_panel.delete(list(dock.history_panel.answers.values()))


def test_two_selected_fields_give_two_answers(dock, naip_project):
    project, naip, canvas = naip_project
    e = naip.extent()
    fields = QgsVectorLayer(f"Polygon?crs={naip.crs().authid()}", "fields", "memory")
    feats = []
    for y0, y1 in ((0.5, 1.0), (0.0, 0.5)):  # north half, south half
        f = QgsFeature()
        f.setGeometry(QgsGeometry.fromRect(QgsRectangle(e.xMinimum(), e.yMinimum() + y0 * e.height(), e.xMaximum(),
                                                        e.yMinimum() + y1 * e.height())))
        feats.append(f)
    fields.dataProvider().addFeatures(feats)
    project.addMapLayer(fields)
    fields.selectAll()
    dock.area.set_mode(area_mod.FEATURES_EACH)
    dock.area.layer.setLayer(fields)
    ask(dock, 180)
    answers = list(dock.history_panel.answers.values())
    assert len(answers) == 2, dock.last_message
    assert {a.title.split(", ")[-1] for a in answers} == {"fields #1)", "fields #2)"}
    areas = sorted(QgsGeometry.fromWkt(a.area_wkt).boundingBox().yMinimum() for a in answers)
    assert areas[0] < areas[1]
    dock.history_panel.delete(answers)


def test_dock_feedback(dock, naip_project, qgis_iface, settings_for, replay_backend):
    # health and models on open, without pressing Refresh
    assert wait_until(lambda: dock.models_label.text().startswith("ready"), 30), dock.models_label.text()
    # the idle progress bar is hidden
    assert dock.progress.isHidden()
    # long messages wrap instead of widening the dock
    width = dock.widget().minimumSizeHint().width()
    dock.show_message("x" * 3000 + " " + "y" * 3000)
    assert dock.widget().minimumSizeHint().width() == width
    # one message of ours in the bar at a time
    bar = qgis_iface.messageBar()
    bar.clearWidgets()  # earlier tests' docks left theirs
    for n in range(6):
        dock.show_message(f"message {n}")
    bar = qgis_iface.messageBar()
    assert len([i for i in bar.items() if i.title() == "GeoReasoner"]) == 1
    # "Cancelling..." does not stick when the task ends inside cancel()
    dock.ask()
    dock.cancel()
    assert wait_until(lambda: not dock.asker.is_busy(), 60)
    assert dock.status.text() != "Cancelling..."
    # the start hint names the README's command; the 401 message says it once
    settings_for(None, backend_url="http://127.0.0.1:9")
    dock.ask()
    assert wait_until(lambda: not dock.asker.is_busy(), 30)
    assert "georeasoner serve" in dock.last_message
    with pytest.raises(BackendError) as info:
        BackendClient(replay_backend.url, "wrong", timeout_s=20).info()
    text = str(info.value)
    assert "wrong token" not in text and text.count("refused the token") == 1


def test_advanced_fold_goes_into_the_request(dock):
    from qgis.gui import QgsCollapsibleGroupBox
    assert dock.findChild(QgsCollapsibleGroupBox, "advanced").isCollapsed()
    dock.min_area.setValue(12.5)
    dock.simplify.setValue(1.5)
    dock.temperature.setValue(0.7)
    dock.seed.setValue(42)
    dock.max_tokens.setValue(256)
    body = dock.request(QUESTION).request_json()
    assert (body["min_area"], body["simplify_tolerance"], body["temperature"], body["seed"],
            body["max_new_tokens"]) == (12.5, 1.5, 0.7, 42, 256)
    dock.seed.setValue(-1)
    assert "seed" not in dock.request(QUESTION).request_json()


def test_export_one_dialog_reasoning_masks_and_link(dock, naip_project, tmp_path):
    ask(dock)
    (stored,) = dock.history_panel.answers.values()
    target = tmp_path / "out" / "lakes.gpkg"
    written = dock.export([stored], target, "gpkg", masks=True)
    assert target in written
    ds = ogr.Open(str(target))
    table = ds.GetLayerByName("answers")
    row = table.GetNextFeature()
    assert row.GetField("reasoning") == stored.answer.reasoning
    (tif,) = [p for p in written if p.suffix == ".tif"]
    mask = gdal.Open(str(tif))
    assert mask.GetRasterBand(1).ReadAsArray().max() >= 1
    assert mask.GetGeoTransform()[1] == pytest.approx(gdal.Open(str(naip_project[1].source())).GetGeoTransform()[1])
    assert "Exported 1 answer(s)" in dock.last_message and Path(target.parent).as_uri() in dock.last_message
    from georeasoner_plugin.gui.export_dialog import ExportDialog
    dialog = ExportDialog(1, naip_project[0], dock)
    assert dialog.format.count() == 2 and dialog.masks.isChecked()  # format, CRS, path, masks: one dialog
    dock.history_panel.delete([stored])
