"""QGIS-side input/output: capture, backend client, layers and their store, export."""
