"""`make screenshot`: QGIS widgets on a virtual screen (Xvfb) with the GeoReasoner dock answering a
question over the NAIP image (tiny SAM2 + the recorded RemoteReasoner answer, served by a live
backend subprocess), saved as a PNG.

    xvfb-run -a .venv-qgis/bin/python tests/qgis/screenshot.py docs/screenshot.png
    xvfb-run -a .venv-qgis/bin/python tests/qgis/screenshot.py docs/screenshot-area.png --area
        (the area-of-interest tool: a polygon drawn over part of the image, asked about)
    xvfb-run -a .venv-qgis/bin/python tests/qgis/screenshot.py docs/screenshot-correct.png --correct
        (the correction tool: an object selected, a negative and a positive point added)
    xvfb-run -a .venv-qgis/bin/python tests/qgis/screenshot.py docs/screenshot-tiled.png --tiled
        (the "Whole layer (tiled)" mode; the one recorded answer is replayed for every tile, so the
        boxes show the mechanics, not a model's answer)
"""
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer  # noqa: E402

app = QgsApplication([], True)
app.initQgis()

from qgis.gui import QgsLayerTreeMapCanvasBridge, QgsLayerTreeView, QgsMapCanvas  # noqa: E402
from qgis.core import QgsLayerTreeModel  # noqa: E402
from qgis.PyQt.QtCore import QCoreApplication, Qt  # noqa: E402
from qgis.PyQt.QtWidgets import QDockWidget, QMainWindow  # noqa: E402

import conftest  # noqa: E402
from stub_iface import Iface  # noqa: E402

from georeasoner_plugin.gui.dock import GeoReasonerDock  # noqa: E402
from georeasoner_plugin.toolbelt.settings import Settings  # noqa: E402


def pump(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QCoreApplication.processEvents()
        time.sleep(0.02)


def draw_polygon(canvas, tool, map_points):
    """Clicks through the tool's own handlers, then a right click to end, as a user does."""
    from qgis.core import QgsPointXY
    from qgis.gui import QgsMapMouseEvent
    from qgis.PyQt.QtCore import QEvent, QPoint

    m2p = canvas.mapSettings().mapToPixel()
    clicks = [(p, Qt.MouseButton.LeftButton) for p in map_points] + [(map_points[0], Qt.MouseButton.RightButton)]
    for (x, y), button in clicks:
        d = m2p.transform(QgsPointXY(x, y))
        pos = QPoint(round(d.x()), round(d.y()))
        tool.canvasPressEvent(QgsMapMouseEvent(canvas, QEvent.Type.MouseButtonPress, pos, button))
        tool.canvasReleaseEvent(QgsMapMouseEvent(canvas, QEvent.Type.MouseButtonRelease, pos, button))


def main(out: Path, area: bool = False, correct: bool = False, tiled: bool = False) -> int:
    if not conftest.NAIP.is_file():
        print(f"screenshot: {conftest.NAIP} is absent", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="georeasoner-shot-"))
    tiny = conftest.TINY_DIR / "tiny-sam2"
    if not tiny.is_dir():
        import subprocess
        subprocess.run([str(conftest.BACKEND_PY), "-m", "georeasoner_plugin.backend.cli", "make-tiny",
                        str(conftest.TINY_DIR)], cwd=conftest.ROOT, check=True)
    recorded = conftest.RECORDED
    if tiled:  # a hand-written answer that lands inside every 448 px tile (the NAIP one is for the whole image)
        recorded = work / "per-tile.txt"
        recorded.write_text("<think>Hand-written illustration, replayed for every tile.</think>"
                            "<answer>[[140,150,300,290]]</answer>", encoding="utf-8")
    backend = conftest.Backend(["--reasoner-output", str(recorded), "--segmenter", str(tiny)], work)
    try:
        Settings.load().replace(backend_url=backend.url, token_file=str(backend.token_file), authcfg="",
                                capture_source="raster", outputs="boxes,points").save()
        window = QMainWindow()
        window.setWindowTitle("QGIS 3.40 - GeoReasoner")
        window.resize(1480, 920)
        canvas = QgsMapCanvas(window)
        window.setCentralWidget(canvas)
        project = QgsProject.instance()
        view = QgsLayerTreeView(window)
        view.setModel(QgsLayerTreeModel(project.layerTreeRoot(), window))
        QgsLayerTreeMapCanvasBridge(project.layerTreeRoot(), canvas, window)
        layers_dock = QDockWidget("Layers", window)
        layers_dock.setWidget(view)
        window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, layers_dock)
        naip = QgsRasterLayer(str(conftest.NAIP), "naip_nd_2020", "gdal")
        project.addMapLayer(naip)
        canvas.setDestinationCrs(naip.crs())
        canvas.setExtent(naip.extent())
        iface = Iface(window, canvas)
        project.write(str(work / "shot.qgz"))  # the answers go to the store beside this project
        dock = GeoReasonerDock(iface, window)
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        window.resizeDocks([layers_dock, dock], [260, 430], Qt.Orientation.Horizontal)
        window.show()
        pump(1.0)
        canvas.setExtent(naip.extent())
        canvas.refresh()
        pump(1.5)
        dock.source.setCurrentIndex(1)  # the raster at native resolution: the recorded answer's own frame
        dock.raster.setLayer(naip)
        if tiled:
            from georeasoner_plugin.qgis_io.tiled_task import TILED_LAYER

            dock.source.setCurrentIndex(dock.source.findData(TILED_LAYER))
            dock.raster.setLayer(naip)
            dock.tiled.tile_size = 448  # a 3 x 2 grid over the 934 x 723 sample
        # Boxes and points only: the tiny random SAM2 of this workplace draws meaningless masks over the
        # whole image, while the boxes are the recorded RemoteReasoner answer (the four lakes).
        for granularity, box in dock.output_boxes.items():
            box.setChecked(granularity in ("boxes", "points") or (correct and granularity == "contours"))
        dock.question.setText("Which lakes could supply irrigation water to the fields around them?")
        if area:
            from georeasoner_plugin.gui.area import POLYGON

            e = naip.extent()
            dock.area.set_mode(POLYGON)
            # from the raster's top-left corner: the replayed answer is in pixels of the capture
            draw_polygon(canvas, dock.area.tool, [(e.xMinimum() + fx * e.width(), e.yMaximum() - fy * e.height())
                                                  for fx, fy in ((0, 0), (1, 0), (1, 0.6), (0.45, 0.62), (0.3, 0.4),
                                                                 (0, 0.3))])
            pump(0.5)
        dock.ask()
        deadline = time.monotonic() + 180
        while (dock.asker.is_busy() or dock.tiled.is_busy()) and time.monotonic() < deadline:
            pump(0.1)
        canvas.refresh()
        pump(3.0)
        if correct:
            stored = list(dock.history_panel.answers.values())[-1]
            dock.history_panel.select(stored.answer.answer_id)
            tool = dock.correct(stored)
            obj = [o for o in stored.answer.objects if o.index == 1][0]
            x1, y1, x2, y2 = obj.box

            def at(fx, fy):
                from qgis.core import QgsPointXY
                return QgsPointXY(*stored.transform.pixel_to_map(x1 + fx * (x2 - x1), y1 + fy * (y2 - y1)))

            tool.click(at(0.5, 0.5))
            tool.click(at(0.75, 0.3), Qt.MouseButton.RightButton)
            tool.click(at(0.35, 0.6), Qt.MouseButton.LeftButton)
            e = stored.transform
            canvas.setExtent(__import__("qgis.core", fromlist=["QgsRectangle"]).QgsRectangle(
                *e.pixel_to_map(x1 - 120, y2 + 90), *e.pixel_to_map(x2 + 120, y1 - 90)))
            canvas.refresh()
            pump(3.0)
        out.parent.mkdir(parents=True, exist_ok=True)
        window.grab().save(str(out))
        print(f"screenshot: {out} ({dock.last_message})")
        return 0
    finally:
        backend.stop()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    sys.exit(main(Path(args[0] if args else "docs/screenshot.png"), area="--area" in sys.argv,
                  correct="--correct" in sys.argv, tiled="--tiled" in sys.argv))
