"""The parameters both Processing algorithms open with: the raster, the question, the extent and
the ground resolution (one definition, so the two read the same to a user and to a model)."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingParameterExtent,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ..toolbelt.i18n import tr

INPUT = "INPUT"
QUESTION = "QUESTION"
EXTENT = "EXTENT"
RESOLUTION = "RESOLUTION"


def add_area_parameters(algorithm, resolution_optional: bool) -> None:
    """INPUT (raster), QUESTION, EXTENT (empty: the whole raster), RESOLUTION (0: native)."""
    algorithm.addParameter(QgsProcessingParameterRasterLayer(INPUT, tr("Raster")))
    algorithm.addParameter(QgsProcessingParameterString(QUESTION, tr("Question")))
    algorithm.addParameter(QgsProcessingParameterExtent(EXTENT, tr("Extent (empty: the whole raster)"),
                                                        optional=True))
    algorithm.addParameter(QgsProcessingParameterNumber(
        RESOLUTION, tr("Ground resolution, raster units per pixel (0 = native)"),
        QgsProcessingParameterNumber.Type.Double, 0.0, resolution_optional, 0.0))
