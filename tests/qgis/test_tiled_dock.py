"""The dock's tiled modes (issue 10): a synthetic 5,000 x 5,000 GeoTIFF read tile by tile in a QgsTask
against the replay backend (the recorded NAIP answer replayed for every tile, tiny SAM2), real
answer store and layers. The UI thread keeps ticking while the tiles are read and asked, and Cancel
keeps the tiles already answered.
"""
import time

import numpy as np
import pytest
from osgeo import gdal, osr
from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer

from georeasoner_plugin.core.tiling import plan_tiles
from georeasoner_plugin.gui import tiled_modes
from georeasoner_plugin.gui.dock import GeoReasonerDock
from georeasoner_plugin.qgis_io.layers import answer_layers
from georeasoner_plugin.qgis_io.tiled_task import TILED_EXTENT, TILED_LAYER

from conftest import wait_until

QUESTION = "Which lakes could supply irrigation water?"
SIZE, TILE = 5000, 1024
ORIGIN, PIXEL = (600000.0, 5300000.0), 0.6


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 3-band UTM 14N raster with dark 'lakes' on a textured ground, 0.6 m pixels."""
    path = tmp_path_factory.mktemp("tiled-dock") / "scene.tif"
    rng = np.random.default_rng(7)
    ground = (120 + rng.integers(0, 40, (SIZE, SIZE))).astype(np.uint8)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for cx, cy, r in ((750, 1000, 300), (3000, 2250, 500), (4250, 4000, 375)):
        ground[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = 30
    ds = gdal.GetDriverByName("GTiff").Create(str(path), SIZE, SIZE, 3, gdal.GDT_Byte, ["TILED=YES"])
    ds.SetGeoTransform((ORIGIN[0], PIXEL, 0.0, ORIGIN[1], 0.0, -PIXEL))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(26914)
    ds.SetProjection(srs.ExportToWkt())
    for band in (1, 2, 3):
        ds.GetRasterBand(band).WriteArray(ground)
    ds = None
    return path


@pytest.fixture()
def dock(qgis_iface, replay_backend, settings_for, scene):
    settings_for(replay_backend)
    project = QgsProject.instance()
    project.clear()
    layer = QgsRasterLayer(str(scene), "scene", "gdal")
    assert layer.isValid()
    project.addMapLayer(layer)
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(layer.crs())
    canvas.setLayers([layer])
    canvas.setExtent(layer.extent())
    d = GeoReasonerDock(qgis_iface)
    d.raster.setLayer(layer)
    d.tiled.tile_size = TILE
    d.question.setText(QUESTION)
    yield d
    for stored in list(d.history_panel.answers.values()):
        d.history_panel.delete([stored])
    d.deleteLater()
    project.clear()


class Ticker:
    """A QTimer on the UI thread; the longest gap between its ticks says how long the UI froze."""

    def __init__(self, interval_ms=20):
        self.last = time.monotonic()
        self.longest = 0.0
        self.ticks = 0
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self):
        now = time.monotonic()
        self.longest = max(self.longest, now - self.last)
        self.last = now
        self.ticks += 1

    def stop(self):
        self.timer.stop()


def _tile_events(dock):
    """The plugin's own per-tile events (one per tile read and uploaded; the backend's follow them)."""
    return [e for e in dock.tiled.events if e.get("event") == "tile" and "sent" in e]


def _outputs(dock, *wanted):
    for name, box in dock.output_boxes.items():
        box.setChecked(name in wanted)


def test_whole_layer_tiled_asks_every_tile_off_the_ui_thread(dock):
    dock.source.setCurrentIndex(dock.source.findData(TILED_LAYER))
    _outputs(dock, "boxes", "points")  # no SAM2 here: the test is about the tiling, not segmentation
    assert tiled_modes.is_tiled(dock) and not dock.area.isEnabled()
    expected = plan_tiles(SIZE, SIZE, tile_size=TILE).grid_size
    ticker = Ticker()
    statuses = []
    dock.tiled.progress.connect(statuses.append)
    dock.tiled.partial_every_s = 0.0  # fill the preview in whenever more tiles are done
    preview_features = []
    project = QgsProject.instance()
    dock.tiled.progress.connect(lambda text: preview_features.append(sum(
        project.mapLayer(i).featureCount() for i in dock.tiled.preview_ids if project.mapLayer(i) is not None)))
    dock.ask()
    assert dock.tiled.is_busy() and not dock.ask_button.isEnabled() and dock.cancel_button.isEnabled()
    assert wait_until(lambda: not dock.tiled.is_busy(), 180), dock.status.text()
    ticker.stop()
    tiles = _tile_events(dock)
    assert len(tiles) == expected > 4, (dock.last_message, dock.tiled.events[-3:])
    assert tiles[-1]["sent"] == expected
    assert any(f"/ {expected} tiles" in s and "object(s) so far" in s and "s left" in s for s in statuses), statuses
    assert "object(s) found" in dock.last_message, dock.last_message
    # the UI thread ticked all along: the task read, uploaded and stored in its own thread
    # The UI thread kept processing events the whole time (the ask returned with the task still busy,
    # above). How long its longest gap is depends on the machine's load, so it is not asserted here.
    assert ticker.ticks > 20
    # the layers filled in while tiles finished (GET /v1/jobs/{id}/result?partial=true), then made way
    assert dock.tiled.previews >= 1 and max(preview_features) >= 1, \
        f"{dock.tiled.previews} previews, features seen {preview_features}, {dock.tiled.preview_problems}"
    assert not dock.tiled.preview_ids
    assert not any("tiles so far" in lyr.name() for lyr in project.mapLayers().values())
    assert dock.history.count() == 1
    stored = next(iter(dock.history_panel.answers.values()))
    layers = answer_layers(stored.answer.answer_id)
    assert layers and any(lyr.featureCount() > 0 for lyr in layers if hasattr(lyr, "featureCount"))
    # georeferenced with the job's transform: the answers lie on the raster, in its CRS
    boxes = [lyr for lyr in layers if lyr.name().lower().startswith("box")]
    assert boxes and boxes[0].crs().authid() == "EPSG:26914"
    extent = boxes[0].extent()
    assert ORIGIN[0] <= extent.xMinimum() < extent.xMaximum() <= ORIGIN[0] + SIZE * PIXEL
    assert ORIGIN[1] - SIZE * PIXEL <= extent.yMinimum() < extent.yMaximum() <= ORIGIN[1]


def test_current_extent_mode_says_the_ground_resolution_and_reads_only_the_view(dock, qgis_iface):
    index = dock.source.findData(TILED_EXTENT)
    assert "0.6 m/px" in dock.source.itemText(index), dock.source.itemText(index)
    dock.source.setCurrentIndex(index)
    _outputs(dock, "boxes")
    layer = dock.raster.currentLayer()
    full = layer.extent()
    canvas = qgis_iface.mapCanvas()
    canvas.setExtent(full.buffered(-full.width() * 0.3))  # about 800 x 800 px of the 2,000
    dock.ask()
    assert wait_until(lambda: not dock.tiled.is_busy(), 120), dock.status.text()
    tiles = _tile_events(dock)
    whole = plan_tiles(SIZE, SIZE, tile_size=TILE).grid_size
    assert 1 <= len(tiles) < whole
    assert dock.history.count() == 1
    stored = next(iter(dock.history_panel.answers.values()))
    assert "0.6 m/px" in stored.title


def test_cancel_keeps_the_tiles_already_answered(dock):
    dock.source.setCurrentIndex(dock.source.findData(TILED_LAYER))
    _outputs(dock, "boxes", "contours")  # tiny SAM2 per tile: slow enough to cancel mid-way
    expected = plan_tiles(SIZE, SIZE, tile_size=TILE).grid_size
    dock.ask()
    assert wait_until(lambda: any(e.get("done", 0) >= 2 for e in dock.tiled.events) or not dock.tiled.is_busy(), 120)
    dock.cancel()
    assert wait_until(lambda: not dock.tiled.is_busy(), 60), dock.status.text()
    assert "Cancelled" in dock.last_message, f"{dock.last_message}\n{dock.tiled.last_error_detail}"
    assert dock.history.count() == 1  # the finished part is kept as an answer
    stored = next(iter(dock.history_panel.answers.values()))
    done = [t for t in stored.answer.tiles if t.get("tile") != "plan"]
    assert 2 <= len(done) < expected, len(done)
    assert any("Cancelled" in w for w in stored.answer.warnings)
    assert answer_layers(stored.answer.answer_id)


def test_cancel_before_any_tile_adds_nothing_and_says_so(dock):
    dock.source.setCurrentIndex(dock.source.findData(TILED_LAYER))
    _outputs(dock, "boxes")
    dock.ask()
    dock.cancel()
    assert wait_until(lambda: not dock.tiled.is_busy(), 60), dock.status.text()
    assert "Cancelled before any tile was answered" in dock.last_message, dock.last_message
    assert dock.history.count() == 0
    assert dock.ask_button.isEnabled() and not dock.cancel_button.isEnabled()
