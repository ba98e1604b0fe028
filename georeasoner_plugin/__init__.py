"""GeoReasoner: ask questions about imagery in QGIS and get georeferenced boxes, masks and contours."""

__version__ = "0.1.0"
