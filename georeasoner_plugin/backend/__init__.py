"""The torch side of GeoReasoner: models, the cascade, the CLI and the HTTP service.

Never imported inside QGIS: QGIS ships its own numpy and native libraries.
"""
