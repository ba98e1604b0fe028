"""The plugin object QGIS loads: actions, dock, Processing provider, options page, translation."""
from __future__ import annotations

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QCoreApplication, Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .resources_path import icon_path
from .toolbelt.i18n import install_translator, tr


class GeoReasonerPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.translator = None
        self.action = None
        self.dock = None
        self.provider = None
        self.options_factory = None
        self.local_backend = None
        self.setup_panel = None
        self.starter = None

    # Processing: QGIS calls initProcessing() for plugins with hasProcessingProvider=yes (qgis_process too)
    def initProcessing(self) -> None:
        if self.provider is None:
            from .processing.provider import GeoReasonerProvider

            self.provider = GeoReasonerProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        self.translator = install_translator()
        from .gui.dock import GeoReasonerDock
        from .gui.settings_page import GeoReasonerOptionsFactory
        from .qgis_io.local_backend import LocalBackend

        self.initProcessing()
        self.local_backend = LocalBackend()
        self.dock = GeoReasonerDock(self.iface, self.iface.mainWindow())
        self._add_setup_panel()
        self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        self.action = QAction(QIcon(str(icon_path())), tr("GeoReasoner: ask the map"), self.iface.mainWindow())
        self.action.setObjectName("GeoReasonerAction")
        self.action.setCheckable(True)
        self.action.setChecked(True)
        self.action.toggled.connect(self.dock.setVisible)
        self.dock.visibilityChanged.connect(self.action.setChecked)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToMenu(tr("&GeoReasoner"), self.action)
        self.options_factory = GeoReasonerOptionsFactory(self.local_backend)
        self.iface.registerOptionsWidgetFactory(self.options_factory)

    def _add_setup_panel(self) -> None:
        """The set-up panel on top of the dock; the first Ask starts a configured local backend."""
        from .gui.setup_panel import SetupPanel
        from .qgis_io.autostart import BackendStarter

        self.starter = BackendStarter(self.local_backend)
        self.setup_panel = SetupPanel(self.local_backend, self.starter, self.dock)
        self.dock.widget().layout().insertWidget(0, self.setup_panel)
        self.dock.before_ask = self.starter.before_ask
        self.starter.state_changed.connect(lambda _phase, message: self.dock.status.setText(message))
        if not self.setup_panel.configured():  # not "Ready." while there is nothing to ask
            self.dock.status.setText(self.setup_panel.state.text())

    def unload(self) -> None:
        if getattr(self, "starter", None) is not None:
            self.starter.stop()
            self.starter = None
        if self.dock is not None:
            if self.dock.asker.is_busy():
                self.dock.asker.cancel()
            try:
                QgsProject_instance().readProject.disconnect(self.dock.reload_history)
                QgsProject_instance().cleared.disconnect(self.dock.reload_history)
            except (TypeError, RuntimeError):
                pass
            self.iface.removeDockWidget(self.dock)
            self.dock.setParent(None)
            self.dock.deleteLater()
            self.dock = None
        if self.action is not None:
            self.iface.removePluginMenu(tr("&GeoReasoner"), self.action)
            self.iface.removeToolBarIcon(self.action)
            self.action.deleteLater()
            self.action = None
        if self.options_factory is not None:
            self.iface.unregisterOptionsWidgetFactory(self.options_factory)
            self.options_factory = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        if self.local_backend is not None:
            self.local_backend.stop()
            self.local_backend = None
        if self.translator is not None:
            QCoreApplication.removeTranslator(self.translator)
            self.translator = None


def QgsProject_instance():  # noqa: N802 - small indirection so unload works after QGIS cleared things
    from qgis.core import QgsProject

    return QgsProject.instance()
