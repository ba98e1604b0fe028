"""The dock's two tiled "Read" modes (issue 10): "Whole layer (tiled)" and "Current extent at ground
resolution ..." (the visible map, read tile by tile at the raster's own pixel size, or the chosen
ground resolution). The work runs in `qgis_io.tiled_task`; this module only adds the choices to the
dock, builds the question from its widgets and routes the signals, so the dock needs a few lines."""
from __future__ import annotations

from qgis.core import Qgis, QgsCoordinateTransform, QgsRasterLayer

from ..qgis_io.capture import CaptureError
from ..qgis_io.store import store_path_for
from ..qgis_io.tiled_task import (TILED_EXTENT, TILED_LAYER, StreamCancellingClient, TiledAsker, TiledQuestion,
                                  ground_resolution_text)
from ..toolbelt.i18n import tr
from ..toolbelt.settings import Settings

TILED_MODES = (TILED_LAYER, TILED_EXTENT)


def install(dock) -> None:
    """Add the two modes to dock.source and a TiledAsker (dock.tiled) wired to the dock's status."""
    dock.source.addItem(tr("Whole layer (tiled)"), TILED_LAYER)
    dock.source.addItem(tr("Current extent at ground resolution (tiled)"), TILED_EXTENT)
    dock.tiled = TiledAsker(dock.project, dock)
    dock.tiled.progress.connect(lambda text: dock.status.text() == tr("Cancelling...") or dock.status.setText(text))
    dock.tiled.answered.connect(dock._on_answered)
    dock.tiled.failed.connect(dock._on_failed)
    dock.tiled.busy_changed.connect(dock._set_busy)
    dock.raster.layerChanged.connect(lambda *a: update_labels(dock))
    dock.resolution.valueChanged.connect(lambda *a: update_labels(dock))
    dock.source.currentIndexChanged.connect(lambda *a: _mode_changed(dock))
    update_labels(dock)
    _mode_changed(dock)


def is_tiled(dock) -> bool:
    return dock.source.currentData() in TILED_MODES


def _mode_changed(dock) -> None:
    tiled = is_tiled(dock)
    dock.resolution.setEnabled(dock.source.currentData() in ("raster", TILED_EXTENT))
    dock.area.setEnabled(not tiled)  # the area is the mode's own: the whole layer or the visible map
    dock.area.setToolTip(tr("The tiled modes read the whole layer or the visible map") if tiled else "")


def update_labels(dock) -> None:
    """The extent mode's label says the ground resolution it reads at (the layer's own, or the chosen one)."""
    layer = dock.raster.currentLayer()
    layer = layer if isinstance(layer, QgsRasterLayer) else None
    index = dock.source.findData(TILED_EXTENT)
    if index >= 0:
        dock.source.setItemText(index, tr("Current extent at ground resolution {0} (tiled)").format(
            ground_resolution_text(layer, dock.resolution.value())))


def start(dock, question: str) -> None:
    """Start the tiled question for the dock's current mode (GUI thread; the work runs in a QgsTask)."""
    layer = dock.raster.currentLayer()
    if not isinstance(layer, QgsRasterLayer):
        raise CaptureError(tr("Choose a raster layer to read tile by tile."))
    settings = Settings.load()
    mode = dock.source.currentData()
    extent, label = None, tr("whole layer")
    resolution = dock.resolution.value() if mode == TILED_EXTENT else 0.0
    if mode == TILED_EXTENT:
        canvas = dock.iface.mapCanvas()
        to_layer = QgsCoordinateTransform(canvas.mapSettings().destinationCrs(), layer.crs(),
                                          dock.project.transformContext())
        extent = to_layer.transformBoundingBox(canvas.extent()).intersect(layer.extent())
        if extent.isEmpty():
            raise CaptureError(tr("The visible map does not overlap {0}: pan or zoom to it, or choose "
                                  "\"Whole layer (tiled)\".").format(layer.name()))
        label = tr("visible extent at {0}").format(ground_resolution_text(layer, resolution))
    profile = dock.profile.currentData() or settings.profile or (dock.info or {}).get("default_profile", "")
    q = TiledQuestion(layer=layer, question=question, extent=extent, resolution=resolution,
                      tile_size=dock.tiled.tile_size_for(profile), overlap=dock.tiled.overlap,
                      profile=dock.profile.currentData() or settings.profile, outputs=dock.selected_outputs(),
                      store_path=store_path_for(dock.project), transform_context=dock.project.transformContext(),
                      ellipsoid=dock.project.ellipsoid(), area_label=label,
                      partial_every_s=dock.tiled.partial_every_s)
    client = StreamCancellingClient.from_settings(settings)
    dock.reasoning.clear()
    dock.notes.setVisible(False)
    dock.tiled.start(client, q)
    dock.show_message(tr("Reading {0} tile by tile ({1} px tiles, {2})...").format(
        layer.name(), q.tile_size, ground_resolution_text(layer, resolution)), Qgis.MessageLevel.Info)
