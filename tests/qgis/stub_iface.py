"""A small stand-in for QgisInterface for scripts run outside pytest-qgis."""
from unittest.mock import MagicMock

from qgis.gui import QgsMessageBar


class Iface:
    """The part of QgisInterface the plugin uses, keeping count of what is added and removed."""

    def __init__(self, window, canvas):
        self.window, self.canvas, self.bar = window, canvas, QgsMessageBar()  # off the window: not in shots
        self.icons, self.menu_entries = [], []
        self.registerOptionsWidgetFactory = MagicMock()
        self.unregisterOptionsWidgetFactory = MagicMock()

    def mainWindow(self):  # noqa: N802
        return self.window

    def mapCanvas(self):  # noqa: N802
        return self.canvas

    def messageBar(self):  # noqa: N802
        return self.bar

    def addDockWidget(self, area, dock):  # noqa: N802
        self.window.addDockWidget(area, dock)

    def removeDockWidget(self, dock):  # noqa: N802
        self.window.removeDockWidget(dock)

    def addToolBarIcon(self, action):  # noqa: N802
        self.icons.append(action)

    def removeToolBarIcon(self, action):  # noqa: N802
        self.icons.remove(action)

    def addPluginToMenu(self, name, action):  # noqa: N802
        self.menu_entries.append((name, action))

    def removePluginMenu(self, name, action):  # noqa: N802
        self.menu_entries.remove((name, action))
