from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..toolbelt.i18n import tr
from .ask_imagery import AskImageryAlgorithm
from .ask_tiled import AskTiledAlgorithm
from ..resources_path import icon_path


class GeoReasonerProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "georeasoner"

    def name(self) -> str:
        return tr("GeoReasoner")

    def longName(self) -> str:
        return self.name()

    def icon(self) -> QIcon:
        return QIcon(str(icon_path()))

    def loadAlgorithms(self) -> None:
        self.addAlgorithm(AskImageryAlgorithm())
        self.addAlgorithm(AskTiledAlgorithm())  # issue 10
