"""GeoReasoner: ask questions about imagery in QGIS and get georeferenced boxes, masks and contours."""

__version__ = "0.1.0"


def classFactory(iface):  # noqa: N802 - QGIS's entry point
    """Called by QGIS to load the plugin."""
    from .plugin import GeoReasonerPlugin

    return GeoReasonerPlugin(iface)
