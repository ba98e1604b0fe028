"""Run in a fresh interpreter by test_plugin_package.py: install the built zip into a fresh profile's
plugin folder, load the plugin the way QGIS does (qgis.utils), unload it, report leftovers as JSON."""
import json
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
zip_path, profile_dir, locale = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
plugins = profile_dir / "python" / "plugins"
plugins.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(zip_path) as zf:
    zf.extractall(plugins)

from qgis.core import QgsApplication, QgsSettings  # noqa: E402

app = QgsApplication([], True, str(profile_dir.parent), profile_dir.name)
app.initQgis()
QgsSettings().setValue("locale/overrideFlag", True)
QgsSettings().setValue("locale/userLocale", locale)

from qgis.gui import QgsMapCanvas  # noqa: E402
from qgis.PyQt.QtCore import QCoreApplication  # noqa: E402
from qgis.PyQt.QtWidgets import QAction, QDockWidget, QMainWindow  # noqa: E402
from stub_iface import Iface  # noqa: E402
import qgis.utils  # noqa: E402



window = QMainWindow()
canvas = QgsMapCanvas(window)


iface = Iface(window, canvas)
qgis.utils.iface = iface
qgis.utils.plugin_paths = [str(plugins)]
sys.path.insert(0, str(plugins))
qgis.utils.updateAvailablePlugins()

report = {"available": "georeasoner_plugin" in qgis.utils.available_plugins}
report["metadata_name"] = qgis.utils.pluginMetadata("georeasoner_plugin", "name")
report["loaded"] = qgis.utils.loadPlugin("georeasoner_plugin")
report["started"] = qgis.utils.startPlugin("georeasoner_plugin")
import georeasoner_plugin  # noqa: E402

report["module_file"] = georeasoner_plugin.__file__
registry = QgsApplication.processingRegistry()
report["provider_loaded"] = registry.providerById("georeasoner") is not None
report["algorithm"] = registry.algorithmById("georeasoner:ask_imagery") is not None
docks = [d for d in window.findChildren(QDockWidget) if d.objectName() == "GeoReasonerDock"]
report["dock_loaded"] = len(docks)
actions = [a for a in window.findChildren(QAction) if a.objectName() == "GeoReasonerAction"]
report["action_loaded"] = len(actions)
report["action_text"] = actions[0].text() if actions else ""
report["options_factory_registered"] = iface.registerOptionsWidgetFactory.call_count
report["translated"] = QCoreApplication.translate("GeoReasoner", "Ask")
report["toolbar_icons"] = len(iface.icons)
report["menu_entries"] = len(iface.menu_entries)
report["help_url"] = qgis.utils.plugins["georeasoner_plugin"].help_url().toString()

report["unloaded"] = qgis.utils.unloadPlugin("georeasoner_plugin")
QCoreApplication.processEvents()
from qgis.PyQt.QtCore import QEvent  # noqa: E402

QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
report["provider_after"] = registry.providerById("georeasoner") is not None
report["dock_after"] = len([d for d in window.findChildren(QDockWidget) if d.objectName() == "GeoReasonerDock"])
report["action_after"] = len([a for a in window.findChildren(QAction) if a.objectName() == "GeoReasonerAction"])
report["options_factory_unregistered"] = iface.unregisterOptionsWidgetFactory.call_count
report["toolbar_icons_after"] = len(iface.icons)
report["menu_entries_after"] = len(iface.menu_entries)
report["translated_after"] = QCoreApplication.translate("GeoReasoner", "Ask")
report["modules_after"] = sorted(m for m in sys.modules if m.startswith("georeasoner_plugin"))
print("REPORT " + json.dumps(report))
app.exitQgis()
