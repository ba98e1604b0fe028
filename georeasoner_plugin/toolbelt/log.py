"""Logging to QGIS's message log (View > Panels > Log Messages, tab "GeoReasoner")."""
from __future__ import annotations

from qgis.core import Qgis, QgsMessageLog

TAG = "GeoReasoner"


def log(message: str, level: str = "info") -> None:
    levels = {
        "info": Qgis.MessageLevel.Info,
        "warning": Qgis.MessageLevel.Warning,
        "critical": Qgis.MessageLevel.Critical,
        "success": Qgis.MessageLevel.Success,
    }
    QgsMessageLog.logMessage(str(message), TAG, levels.get(level, Qgis.MessageLevel.Info), notifyUser=False)
