"""Ask imagery: a question about a raster over an extent; boxes, points and contours as outputs."""
from __future__ import annotations

from qgis.core import (
    QgsFeatureSink,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsWkbTypes,
)

from ..core.profiles import PROFILES
from ..qgis_io.capture import CaptureError, capture_raster
from ..qgis_io.client import AskRequest, BackendClient, BackendError
from ..qgis_io.store import FEATURE_FIELDS, POINT_FIELDS, fields_of, georeference
from ..toolbelt.i18n import tr
from ..toolbelt.settings import Settings

PROFILE_NAMES = ["(backend default)"] + list(PROFILES)


class AskImageryAlgorithm(QgsProcessingAlgorithm):
    INPUT = "INPUT"
    QUESTION = "QUESTION"
    EXTENT = "EXTENT"
    RESOLUTION = "RESOLUTION"
    PROFILE = "PROFILE"
    BOXES = "BOXES"
    POINTS = "POINTS"
    CONTOURS = "CONTOURS"

    def name(self) -> str:
        return "ask_imagery"

    def displayName(self) -> str:
        return tr("Ask imagery")

    def shortHelpString(self) -> str:
        return tr("Asks the GeoReasoner backend a question about a raster (read at native resolution, or "
                  "at the given ground resolution, over the extent) and returns the answer's boxes, points "
                  "and contours in the raster's CRS. The backend address and token come from "
                  "Options > GeoReasoner.")

    def createInstance(self):
        return AskImageryAlgorithm()

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, tr("Raster")))
        self.addParameter(QgsProcessingParameterString(self.QUESTION, tr("Question")))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, tr("Extent (empty: the whole raster)"),
                                                       optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.RESOLUTION, tr("Ground resolution, raster units per pixel (0 = native)"),
            QgsProcessingParameterNumber.Type.Double, 0.0, False, 0.0))
        self.addParameter(QgsProcessingParameterEnum(self.PROFILE, tr("Prompt profile"), PROFILE_NAMES,
                                                     defaultValue=0))
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
        if extent.isNull() or extent.isEmpty():
            extent = layer.extent()
        resolution = self.parameterAsDouble(parameters, self.RESOLUTION, context)
        profile_index = self.parameterAsEnum(parameters, self.PROFILE, context)
        profile = "" if profile_index == 0 else PROFILE_NAMES[profile_index]
        settings = Settings.load()
        try:
            capture = capture_raster(layer, extent, layer.crs(), resolution, settings.max_image_size,
                                     context.project())
        except CaptureError as exc:
            raise QgsProcessingException(str(exc)) from None
        for warning in capture.warnings:
            feedback.pushWarning(warning)
        feedback.pushInfo(tr("Asking the backend at {0} about a {1} x {2} px image...")
                          .format(settings.backend_url, capture.width, capture.height))
        client = BackendClient.from_settings(settings, is_cancelled=feedback.isCanceled)
        request = AskRequest(question=question, image_bytes=capture.png_bytes(), profile=profile,
                             outputs=["boxes", "points", "contours"])

        def on_event(event):
            if event.get("event") == "stage":
                feedback.setProgressText(str(event.get("stage")))
            elif event.get("event") == "token":
                pass

        try:
            answer = client.ask_stream(request, on_event)
        except BackendError as exc:
            raise QgsProcessingException(str(exc)) from None
        feedback.pushInfo(tr("Reasoning: {0}").format(answer.reasoning or "-"))
        geo = georeference(answer, capture.transform, capture.crs, capture.source_layers, "raster",
                           context.project())
        results = {}
        for key, kind, spec, wkb in ((self.BOXES, "boxes", FEATURE_FIELDS, QgsWkbTypes.Type.Polygon),
                                     (self.POINTS, "points", POINT_FIELDS, QgsWkbTypes.Type.Point),
                                     (self.CONTOURS, "contours", FEATURE_FIELDS, QgsWkbTypes.Type.MultiPolygon)):
            sink, dest = self.parameterAsSink(parameters, key, context, fields_of(spec), wkb, capture.crs)
            if sink is None:
                continue
            for feature in geo.features.get(kind, []):
                sink.addFeature(feature, QgsFeatureSink.Flag.FastInsert)
            results[key] = dest
        feedback.pushInfo(tr("{0} object(s) found.").format(len(answer.objects)))
        return results
