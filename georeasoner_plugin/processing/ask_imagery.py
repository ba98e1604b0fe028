"""Ask imagery: a question about a raster over an extent; boxes, points, contours and the mask as
outputs, each optional (SAM2 runs only when the mask or the contours are asked for)."""
from __future__ import annotations

from typing import Dict, List

from osgeo import gdal
from qgis.core import (
    QgsFeatureSink,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterAuthConfig,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
    QgsWkbTypes,
)

from ..qgis_io.capture import prepare_raster
from ..qgis_io.client import AskRequest, BackendClient, BackendError
from ..qgis_io.features import georeference, layer_fields
from ..qgis_io.layers import remember_answer, style_layer
from ..qgis_io.service import Question, QuestionFailed, ask_one
from ..qgis_io.store import mask_dataset, store_path_for
from ..toolbelt.i18n import tr
from .area_parameters import EXTENT, INPUT, QUESTION, RESOLUTION, add_area_parameters
from ..toolbelt.settings import Settings

# output parameter -> (answer granularity, layer kind)
OUTPUTS = {"BOXES": ("boxes", "boxes"), "POINTS": ("points", "points"), "CONTOURS": ("contours", "contours"),
           "MASK": ("masks", "mask")}


class _Styler(QgsProcessingLayerPostProcessorInterface):
    """Styles an output layer as the dock styles answer layers."""

    def __init__(self, kind: str, objects: int):
        super().__init__()
        self.kind, self.objects = kind, objects

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        style_layer(layer, self.kind, self.objects)


class AskImageryAlgorithm(QgsProcessingAlgorithm):
    INPUT, QUESTION, EXTENT, RESOLUTION = INPUT, QUESTION, EXTENT, RESOLUTION  # area_parameters.py
    PROFILE = "PROFILE"
    BACKEND_URL = "BACKEND_URL"
    AUTHCFG = "AUTHCFG"

    def __init__(self):
        super().__init__()
        self._stylers: List[_Styler] = []
        self._answer_id = ""

    def name(self) -> str:
        return "ask_imagery"

    def displayName(self) -> str:
        return tr("Ask imagery")

    def shortHelpString(self) -> str:
        return tr("Asks the GeoReasoner backend a question about a raster (read at native resolution, or at the "
                  "given ground resolution, over the extent) and returns the answer's boxes, points, contours "
                  "and mask in the raster's CRS. Every output is optional; SAM2 runs only when the contours or "
                  "the mask are asked for. The backend is BACKEND_URL (default: Options > GeoReasoner); the token "
                  "comes from AUTHCFG (an authentication config whose password is the token), else the token "
                  "file of the settings, else the file named by GEOREASONER_TOKEN_FILE, else the local "
                  "backend's default token file. PROFILE is a profile name the backend lists in /v1/info "
                  "(empty: the backend's default).")

    def createInstance(self):
        return AskImageryAlgorithm()

    def initAlgorithm(self, config=None) -> None:
        add_area_parameters(self, resolution_optional=True)
        self.addParameter(QgsProcessingParameterString(self.PROFILE, tr("Prompt profile (empty: backend default)"),
                                                       "", optional=True))
        self.addParameter(QgsProcessingParameterString(self.BACKEND_URL, tr("Backend URL"),
                                                       Settings.load().backend_url, optional=True))
        self.addParameter(QgsProcessingParameterAuthConfig(self.AUTHCFG, tr("Token (authentication config)"),
                                                           optional=True))
        for key, title, kind in (("BOXES", tr("Boxes"), QgsProcessing.SourceType.TypeVectorPolygon),
                                 ("POINTS", tr("Points"), QgsProcessing.SourceType.TypeVectorPoint),
                                 ("CONTOURS", tr("Contours"), QgsProcessing.SourceType.TypeVectorPolygon)):
            self.addParameter(QgsProcessingParameterFeatureSink(key, title, kind, optional=True,
                                                                createByDefault=False))
        self.addParameter(QgsProcessingParameterRasterDestination("MASK", tr("Mask"), optional=True,
                                                                  createByDefault=False))

    def _requested(self, parameters) -> List[str]:
        return [key for key in OUTPUTS if parameters.get(key) not in (None, "")]

    def _profile(self, client: BackendClient, text: str) -> str:
        """A profile name the backend offers (its /v1/info), or "" for its default."""
        text = text.strip()
        if not text:
            return ""
        try:
            names = [p.get("name") for p in client.info().get("profiles", [])]
        except BackendError as exc:
            raise QgsProcessingException(str(exc)) from None
        if text.isdigit():  # an index as in older versions: 0 = the backend's default
            index = int(text)
            if 0 <= index <= len(names):
                return "" if index == 0 else names[index - 1]
        if text not in names:
            raise QgsProcessingException(tr("The backend has no profile {0}; it offers: {1}.")
                                         .format(text, ", ".join(names)))
        return text

    def processAlgorithm(self, parameters, context, feedback):
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        question = self.parameterAsString(parameters, self.QUESTION, context).strip()
        if layer is None:
            raise QgsProcessingException(tr("Invalid raster"))
        if not question:
            raise QgsProcessingException(tr("Type a question"))
        requested = self._requested(parameters)
        if not requested:
            raise QgsProcessingException(tr("Choose at least one output (BOXES, POINTS, CONTOURS or MASK)."))
        extent = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
        if extent.isNull() or extent.isEmpty():
            extent = layer.extent()
        settings = Settings.load()
        url = self.parameterAsString(parameters, self.BACKEND_URL, context).strip() or settings.backend_url
        authcfg = self.parameterAsString(parameters, self.AUTHCFG, context).strip() or None
        client = BackendClient.from_settings(settings, url=url, authcfg=authcfg, is_cancelled=feedback.isCanceled)
        profile = self._profile(client, self.parameterAsString(parameters, self.PROFILE, context))
        spec = prepare_raster(layer, extent, layer.crs(), self.parameterAsDouble(parameters, self.RESOLUTION, context),
                              settings.max_image_size, context.transformContext())
        request = AskRequest(question=question, image_bytes=b"", profile=profile,
                             outputs=[OUTPUTS[k][0] for k in requested])
        from qgis.utils import iface  # None under qgis_process: the answer then goes to the outputs only

        project = context.project()
        store = store_path_for(project) if iface is not None and project is not None else None
        job = Question(request, spec, store, context.transformContext(), context.ellipsoid() or "EPSG:7030",
                       tr("Processing"))
        feedback.pushInfo(tr("Asking the backend at {0} about {1} ({2})...").format(url, layer.name(),
                                                                                  ", ".join(request.outputs)))
        reasoning = _LineLog(feedback)
        try:
            result = ask_one(client, job, lambda e: self._on_event(e, feedback, reasoning))
        except QuestionFailed as exc:
            raise QgsProcessingException(str(exc)) from None
        reasoning.flush()
        answer, capture = result.answer, result.capture
        for warning in capture.warnings + answer.warnings:
            feedback.pushWarning(warning)
        geo = georeference(answer, capture.transform, capture.crs, capture.source_layers, "raster",
                           context.transformContext(), context.ellipsoid() or "EPSG:7030")
        results: Dict[str, str] = {}
        self._stylers = []
        for key in requested:
            granularity, kind = OUTPUTS[key]
            if key == "MASK":
                dest = self.parameterAsOutputLayer(parameters, key, context)
                out = gdal.Translate(dest, mask_dataset(answer, capture.transform, capture.crs), noData=0)
                if out is None:
                    raise QgsProcessingException(tr("Writing the mask {0} failed: {1}").format(dest, gdal.GetLastErrorMsg()))
                out = None  # noqa: F841
            else:
                wkb = {"boxes": QgsWkbTypes.Type.Polygon, "points": QgsWkbTypes.Type.Point,
                       "contours": QgsWkbTypes.Type.MultiPolygon}[kind]
                sink, dest = self.parameterAsSink(parameters, key, context, layer_fields(kind), wkb, capture.crs)
                if sink is None:
                    continue
                for feature in geo.features.get(kind, []):
                    sink.addFeature(feature, QgsFeatureSink.Flag.FastInsert)
            results[key] = dest
            if context.willLoadLayerOnCompletion(dest):
                styler = _Styler(kind, len(answer.objects))
                self._stylers.append(styler)
                context.layerToLoadOnCompletionDetails(dest).setPostProcessor(styler)
        self._answer_id = answer.answer_id if result.stored is not None else ""
        feedback.pushInfo(tr("{0} object(s) found.").format(len(answer.objects)))
        return results

    def postProcessAlgorithm(self, context, feedback):
        """GUI thread: the stored answer joins the project's history (the dock lists it)."""
        if self._answer_id and context.project() is not None:
            remember_answer(context.project(), self._answer_id)
        return {}

    @staticmethod
    def _on_event(event, feedback, reasoning) -> None:
        kind = event.get("event")
        if kind == "stage":
            feedback.setProgressText(str(event.get("stage")))
        elif kind == "token":
            reasoning.add(str(event.get("text", "")))


class _LineLog:
    """The streamed reasoning into the Processing log, a line at a time."""

    def __init__(self, feedback):
        self.feedback, self.buffer = feedback, ""

    def add(self, text: str) -> None:
        self.buffer += text
        while "\n" in self.buffer or len(self.buffer) > 160:
            cut = self.buffer.find("\n")
            cut = cut if 0 <= cut <= 160 else 160
            line, self.buffer = self.buffer[:cut], self.buffer[cut:].lstrip("\n")
            if line.strip():
                self.feedback.pushInfo(line)

    def flush(self) -> None:
        if self.buffer.strip():
            self.feedback.pushInfo(self.buffer)
        self.buffer = ""

