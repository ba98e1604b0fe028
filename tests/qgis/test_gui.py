"""The dock (Enter asks, streamed stages, history, zoom) and the settings page with a local backend."""
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
        s.replace(reasoner_output=str(RECORDED)).save()
        page.start_backend()
        assert wait_until(lambda: backend.url, 240), backend.log_text()
        assert page.url.text() == backend.url
        client = BackendClient(backend.url, Path(tmp_path / "token").read_text().strip(), timeout_s=30)
        assert wait_until(lambda: client.health()["status"] == "ready", 240)
        assert LISTENING_PREFIX in page.log.toPlainText()
        page.stop_backend()
        assert not backend.is_running()
    finally:
        backend.stop()
        saved.save()
