"""The torch side of GeoReasoner: models, cascade, CLI and (later) the HTTP service.

Never imported inside QGIS: QGIS ships its own numpy and native libraries.
"""
