"""Run in a fresh QGIS (a 'restart') by test_store_export.py: open a saved project, report what came back."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, sys.argv[2])  # the repository (the plugin package)

from qgis.core import QgsApplication, QgsProject  # noqa: E402

app = QgsApplication([], True)
app.initQgis()
from qgis.gui import QgsMapCanvas  # noqa: E402
from qgis.PyQt.QtWidgets import QMainWindow  # noqa: E402
from stub_iface import Iface  # noqa: E402

from georeasoner_plugin.gui.dock import GeoReasonerDock  # noqa: E402

window = QMainWindow()
canvas = QgsMapCanvas(window)
dock = GeoReasonerDock(Iface(window, canvas), window)
project = QgsProject.instance()
ok = project.read(sys.argv[1])
report = {"read": ok, "groups": [], "history": []}
for group in project.layerTreeRoot().findGroups(True):
    answer_id = group.customProperty("georeasoner/answer_id", "")
    if not answer_id:
        continue
    layers = []
    for node in group.findLayers():
        layer = node.layer()
        layers.append({"name": layer.name(), "valid": layer.isValid(),
                       "kind": layer.customProperty("georeasoner/kind", ""),
                       "count": layer.featureCount() if hasattr(layer, "featureCount") else -1,
                       "crs": layer.crs().authid(), "source": layer.source().replace("GPKG:", ""),
                       "sources": {str(f["obj_index"]): f["source"] for f in layer.getFeatures()}
                       if hasattr(layer, "getFeatures") else {}})
    report["groups"].append({"name": group.name(), "answer_id": answer_id, "layers": layers})
for i in range(dock.history.count()):
    item = dock.history.item(i)
    answer_id = item.data(0x0100)
    stored = dock.history_panel.answers[answer_id]
    report["history"].append({"answer_id": answer_id, "reasoning": stored.answer.reasoning,
                              "objects": len(stored.answer.objects)})
print("REPORT " + json.dumps(report))
app.exitQgis()
