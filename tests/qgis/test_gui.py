"""The dock (Enter asks, streamed stages, history, zoom) and the settings page with a local backend."""
import os
from pathlib import Path

from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest

from georeasoner_plugin.core.api import LISTENING_PREFIX, STAGE_DONE, STAGE_SEGMENT
from georeasoner_plugin.gui.dock import GeoReasonerDock
from georeasoner_plugin.gui.settings_page import GeoReasonerOptionsPage
from georeasoner_plugin.qgis_io.client import BackendClient
from georeasoner_plugin.qgis_io.local_backend import LocalBackend
from georeasoner_plugin.toolbelt.settings import Settings

from conftest import BACKEND_PY, RECORDED, wait_until


def test_dock_enter_asks_and_history_zooms(qgis_iface, replay_backend, settings_for, naip_path, tmp_path):
    settings_for(replay_backend, capture_source="canvas")
    project = QgsProject.instance()
    project.clear()
    layer = QgsRasterLayer(str(naip_path), "naip", "gdal")
    project.addMapLayer(layer)
    canvas = qgis_iface.mapCanvas()
    old_size = canvas.size()
    # the recorded answer is in the model frame of a 934 x 723 image: give the canvas that size
    window = qgis_iface.mainWindow()
    window.resize(1200, 900)
    window.show()  # a canvas updates its map settings' size only while shown (offscreen platform here)
    canvas.resize(936, 725)  # the frame takes one pixel on each side
    canvas.setDestinationCrs(layer.crs())
    canvas.setLayers([layer])
    canvas.setExtent(layer.extent())
    assert wait_until(lambda: canvas.mapSettings().outputSize().width() == 934, 10), canvas.mapSettings().outputSize()
    dock = GeoReasonerDock(qgis_iface)
    # the dock asks the backend's health and profiles by itself when it opens
    assert wait_until(lambda: dock.profile.count() > 1, 30), dock.models_label.text()
    assert dock.models_label.text().startswith("ready")
    stages = []
    dock.asker.stage.connect(stages.append)
    dock.question.setText("Which lakes could supply irrigation water?")
    QTest.keyClick(dock.question, Qt.Key.Key_Return)  # Enter asks
    assert dock.asker.is_busy() and not dock.ask_button.isEnabled()
    assert wait_until(lambda: not dock.asker.is_busy(), 120)
    assert "object(s) found" in dock.last_message, dock.last_message
    assert {STAGE_SEGMENT, STAGE_DONE} <= set(stages)
    assert "lakes" in dock.reasoning.toPlainText()
    assert dock.history.count() == 1
    # selecting a past answer zooms to it
    canvas.setExtent(layer.extent().buffered(50000))
    before = canvas.extent().width()
    dock.history.clearSelection()
    dock.history.item(0).setSelected(True)
    assert canvas.extent().width() < before
    dock.history_panel.delete([dock.history_panel.answers[dock.history.item(0).data(Qt.ItemDataRole.UserRole)]])
    dock.deleteLater()
    canvas.resize(old_size)
    window.hide()


def test_settings_page_fields(qgis_parent):
    saved = Settings.load()
    try:
        page = GeoReasonerOptionsPage(None, qgis_parent)
        # outputs are check boxes, as in the dock
        assert set(page.output_boxes) == {"boxes", "points", "masks", "contours"}
        page.output_boxes["masks"].setChecked(False)
        page.output_boxes["points"].setChecked(False)
        # the replay file and autostart have fields
        page.replay.setFilePath(str(RECORDED))
        page.autostart.setChecked(True)
        page.apply()
        s = Settings.load()
        assert s.output_list() == ["boxes", "contours"]
        assert s.reasoner_output == str(RECORDED) and s.autostart is True
        # typed settings entries under the plugin's node
        from qgis.core import QgsSettings
        assert QgsSettings().value("plugins/georeasoner/autostart") in (True, "true")
        # no large blank area under the token selector
        page.resize(700, 1400)
        page.show()
        assert page.auth.height() <= page.auth.minimumSizeHint().height() + 8
        page.hide()
    finally:
        saved.save()


def test_settings_page_and_local_backend(qgis_parent, tiny_models, tmp_path):
    saved = Settings.load()
    backend = LocalBackend()
    try:
        page = GeoReasonerOptionsPage(backend, qgis_parent)
        page.python.setFilePath(str(BACKEND_PY))
        page.segmenter.setText(str(tiny_models["segmenter"]))
        page.timeout.setValue(42)
        page.token_file.setFilePath(str(tmp_path / "token"))
        page.apply()
        s = Settings.load()
        assert s.timeout_s == 42 and s.python_path == str(BACKEND_PY)
        # replay the recorded answer (no reasoner weights needed) and start the local backend
        page.replay.setFilePath(str(RECORDED))
        page.start_backend()
        assert wait_until(lambda: backend.url, 240), backend.log_text()
        assert page.url.text() == backend.url
        client = BackendClient(backend.url, Path(tmp_path / "token").read_text().strip(), timeout_s=30)
        assert wait_until(lambda: client.health()["status"] == "ready", 240)
        assert LISTENING_PREFIX in page.log.toPlainText()
        # a backend started from QGIS is handed captures as files in a private folder, not uploads
        from georeasoner_plugin.qgis_io.image_encode import transport_for
        from georeasoner_plugin.qgis_io.local_backend import local_capture_dir

        folder = local_capture_dir()
        assert client.info()["shared_capture_dir"] == os.path.realpath(folder)
        assert (os.stat(folder).st_mode & 0o777) == 0o700
        assert transport_for(client) == "path"
        # the state comes from /v1/health, not from the process merely running
        assert wait_until(lambda: page.state.text().startswith("ready at"), 60), page.state.text()
        # the log follows new lines
        page.log.resize(400, 120)
        for n in range(300):
            page.add_log_line(f"line {n}")
        bar = page.log.verticalScrollBar()
        assert bar.maximum() > 0 and bar.value() == bar.maximum()
        page.stop_backend()
        assert not backend.is_running()
        # a backend whose models fail to load is not reported as running
        page.segmenter.setText(str(tmp_path / "no-such-sam2"))
        page.start_backend()
        assert wait_until(lambda: "failed" in page.state.text() or not backend.is_running(), 240), (
            page.state.text() + backend.log_text()[-1500:])
        assert not page.state.text().startswith(("ready", "running"))
        page.stop_backend()
    finally:
        backend.stop()
        saved.save()
