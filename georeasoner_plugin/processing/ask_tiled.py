"""Ask imagery over a raster (tiled): a question over a whole raster layer at native resolution.

The layer is read tile by tile through QGIS (any layer QGIS draws: files, WMS, XYZ), sent to the
backend as a tiled job, and the merged answer comes back as boxes, points and contours in the
layer's CRS. Works in the Modeler and `qgis_process`. Cancelling keeps the finished tiles.
"""
from __future__ import annotations

from qgis.core import (
    QgsFeatureSink,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterNumber,
    QgsWkbTypes,
)

from ..core.profiles import PROFILES, get_profile
from ..core.tiling import DEFAULT_OVERLAP, STRATEGIES, default_tile_size
from ..qgis_io.client import BackendClient, BackendError
from ..qgis_io.features import georeference, layer_fields
from ..qgis_io.tiled_job import ask_tiled
from ..toolbelt.i18n import tr
from .area_parameters import EXTENT, INPUT, QUESTION, RESOLUTION, add_area_parameters
from ..toolbelt.settings import Settings

PROFILE_NAMES = ["(backend default)"] + list(PROFILES)


class AskTiledAlgorithm(QgsProcessingAlgorithm):
    INPUT, QUESTION, EXTENT, RESOLUTION = INPUT, QUESTION, EXTENT, RESOLUTION  # area_parameters.py
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    PROFILE = "PROFILE"
    STRATEGY = "STRATEGY"
    BOXES = "BOXES"
    POINTS = "POINTS"
    CONTOURS = "CONTOURS"

    def name(self) -> str:
        return "ask_imagery_tiled"

    def displayName(self) -> str:
        return tr("Ask imagery over a raster (tiled)")

    def shortHelpString(self) -> str:
        return tr("Asks the GeoReasoner backend a question over a whole raster (or an extent) at native "
                  "resolution or the given ground resolution: the raster is read tile by tile, each tile is "
                  "answered, and objects cut by tile edges are merged into one. Returns boxes, points and "
                  "contours in the raster's CRS. Cancelling keeps the tiles already answered.")

    def createInstance(self):
        return AskTiledAlgorithm()

    def initAlgorithm(self, config=None) -> None:
        add_area_parameters(self, resolution_optional=False)
        self.addParameter(QgsProcessingParameterNumber(
            self.TILE_SIZE, tr("Tile size, pixels (0 = the profile's frame)"),
            QgsProcessingParameterNumber.Type.Integer, 0, False, 0, 8192))
        self.addParameter(QgsProcessingParameterNumber(
            self.OVERLAP, tr("Overlap between tiles, %"), QgsProcessingParameterNumber.Type.Double,
            DEFAULT_OVERLAP * 100, False, 0.0, 49.0))
        self.addParameter(QgsProcessingParameterEnum(self.PROFILE, tr("Prompt profile"), PROFILE_NAMES,
                                                     defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum(
            self.STRATEGY, tr("Strategy (focus: an overview first, then only the tiles meeting its boxes; needs a "
                              "local backend and a raster file)"), STRATEGIES, defaultValue=0))
        self.addParameter(QgsProcessingParameterFeatureSink(self.BOXES, tr("Boxes"),
                                                            QgsProcessing.SourceType.TypeVectorPolygon))
        self.addParameter(QgsProcessingParameterFeatureSink(self.POINTS, tr("Points"),
                                                            QgsProcessing.SourceType.TypeVectorPoint, optional=True))
        self.addParameter(QgsProcessingParameterFeatureSink(self.CONTOURS, tr("Contours"),
                                                            QgsProcessing.SourceType.TypeVectorPolygon))

    def processAlgorithm(self, parameters, context, feedback):
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        question = self.parameterAsString(parameters, self.QUESTION, context).strip()
        if layer is None:
            raise QgsProcessingException(tr("Invalid raster"))
        if not question:
            raise QgsProcessingException(tr("Type a question"))
        extent = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
        extent = None if extent.isNull() or extent.isEmpty() else extent
        resolution = self.parameterAsDouble(parameters, self.RESOLUTION, context)
        profile_index = self.parameterAsEnum(parameters, self.PROFILE, context)
        profile = "" if profile_index == 0 else PROFILE_NAMES[profile_index]
        settings = Settings.load()
        client = BackendClient.from_settings(settings, is_cancelled=feedback.isCanceled)
        tile_size = self.parameterAsInt(parameters, self.TILE_SIZE, context)
        if not tile_size:
            try:
                default = profile or client.info().get("default_profile") or "remotereasoner"
                tile_size = default_tile_size(get_profile(default).frame)
            except BackendError as exc:
                raise QgsProcessingException(str(exc)) from None
        overlap = self.parameterAsDouble(parameters, self.OVERLAP, context) / 100.0
        strategy = STRATEGIES[self.parameterAsEnum(parameters, self.STRATEGY, context)]
        if strategy == "focus" and (extent is not None or resolution):
            raise QgsProcessingException(tr("The focus strategy asks the whole raster at native resolution; clear "
                                            "the extent and the ground resolution, or use the grid strategy."))

        def on_progress(event):
            kind = event.get("event")
            if kind == "plan":
                feedback.pushInfo(tr("Asking {0} tile(s) of {1} px ({2}-tile grid)...")
                                  .format(event["total"], event["tile_size"], event["grid"]))
            elif kind == "progress" and event.get("what") == "focus":
                feedback.pushInfo(event.get("note", ""))
            elif kind == "tile" and event.get("total"):
                feedback.setProgress(100.0 * event["done"] / event["total"])
                eta = event.get("eta_s")
                feedback.setProgressText(tr("{0} / {1} tiles, {2} object(s) so far{3}").format(
                    event["done"], event["total"], event.get("objects_so_far", 0),
                    tr(", about {0:.0f} s left").format(eta) if eta is not None else ""))

        try:
            result = ask_tiled(layer, question, client, tile_size=tile_size, overlap=overlap, resolution=resolution,
                               extent=extent, profile=profile, on_progress=on_progress,
                               is_cancelled=feedback.isCanceled, strategy=strategy)
        except BackendError as exc:
            raise QgsProcessingException(str(exc)) from None
        for warning in result.warnings:
            feedback.pushWarning(warning)
        answer = result.answer
        geo = georeference(answer, result.transform, layer.crs(), [layer.name()], "raster",
                           context.transformContext(), context.ellipsoid() or "EPSG:7030")
        results = {}
        for key, kind, wkb in ((self.BOXES, "boxes", QgsWkbTypes.Type.Polygon),
                               (self.POINTS, "points", QgsWkbTypes.Type.Point),
                               (self.CONTOURS, "contours", QgsWkbTypes.Type.MultiPolygon)):
            sink, dest = self.parameterAsSink(parameters, key, context, layer_fields(kind), wkb, layer.crs())
            if sink is None:
                continue
            for feature in geo.features.get(kind, []):
                sink.addFeature(feature, QgsFeatureSink.Flag.FastInsert)
            results[key] = dest
        feedback.pushInfo(tr("{0} object(s) found over {1} tile(s).").format(
            len(answer.objects), sum(1 for t in answer.tiles if t.get("tile") != "plan")))
        return results
