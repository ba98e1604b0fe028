"""The plugin object QGIS loads: actions, dock, Processing provider, options page, translation."""
from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis, QgsApplication
from qgis.PyQt.QtCore import QCoreApplication, Qt, QUrl
from qgis.PyQt.QtGui import QDesktopServices, QIcon
from qgis.PyQt.QtWidgets import QAction

from .resources_path import icon_path
from .toolbelt.i18n import install_translator, tr


HOMEPAGE = "https://github.com/georeasoner/georeasoner#readme"


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

        self.help_action = None

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
        self.help_action = QAction(tr("GeoReasoner help (README)"), self.iface.mainWindow())
        self.help_action.setObjectName("GeoReasonerHelp")
        self.help_action.triggered.connect(self.open_help)
        self.iface.addPluginToMenu(tr("&GeoReasoner"), self.help_action)
        self.options_factory = GeoReasonerOptionsFactory(self.local_backend)
        self.iface.registerOptionsWidgetFactory(self.options_factory)
        self._autostart()

    def help_url(self) -> QUrl:
        """The README shipped with the plugin, else the project's home page."""
        readme = Path(__file__).resolve().parent / "README.md"
        if readme.is_file():
            return QUrl.fromLocalFile(str(readme))
        return QUrl(HOMEPAGE)

    def open_help(self) -> bool:
        return QDesktopServices.openUrl(self.help_url())

    def _autostart(self) -> None:
        from .toolbelt.settings import Settings

        settings = Settings.load()
        if not settings.autostart:
            return
        try:
            self.local_backend.start(settings)
        except RuntimeError as exc:
            self.iface.messageBar().pushMessage(tr("GeoReasoner"), str(exc), Qgis.MessageLevel.Warning, 10)

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
            self.iface.removeDockWidget(self.dock)
            self.dock.setParent(None)
            self.dock.deleteLater()
            self.dock = None
        if self.help_action is not None:
            self.iface.removePluginMenu(tr("&GeoReasoner"), self.help_action)
            self.help_action.deleteLater()
            self.help_action = None
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
        from .toolbelt.settings import unregister

        unregister()
