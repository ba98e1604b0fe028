"""Small QGIS-side helpers: logging, typed settings, translation."""
