"""Pure-Python code shared by the QGIS plugin, the backend and training (no third-party imports)."""
