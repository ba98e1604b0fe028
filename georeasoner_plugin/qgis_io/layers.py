"""Answer layers in the project: one group per answer, named after the question, styled."""
from __future__ import annotations

from typing import List, Optional

from qgis.core import (
    QgsFillSymbol,
    QgsLayerTreeGroup,
    QgsMapLayer,
    QgsMarkerSymbol,
    QgsPalettedRasterRenderer,
    QgsProject,
    QgsRasterLayer,
    QgsRasterRange,
    QgsRectangle,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

from ..toolbelt.i18n import tr
from .capture import ANSWER_PROPERTY
from .store import StoredAnswer, StoreError

KIND_PROPERTY = "georeasoner/kind"
GROUP_PROPERTY = "georeasoner/group"


def layer_title(kind: str) -> str:
    return {"boxes": tr("Boxes"), "points": tr("Points"), "contours": tr("Contours"), "mask": tr("Mask")}[kind]


def group_title(question: str) -> str:
    text = " ".join(question.split())
    return text if len(text) <= 80 else text[:77] + "..."


def make_layers(stored: StoredAnswer) -> List[QgsMapLayer]:
    """Layers for one stored answer, styled, all valid (raises StoreError otherwise)."""
    layers: List[QgsMapLayer] = []
    for kind in ("mask", "contours", "boxes", "points"):
        if kind not in stored.tables:
            continue
        if kind == "mask":
            layer = QgsRasterLayer(stored.uri(kind), layer_title(kind), "gdal")
        else:
            layer = QgsVectorLayer(stored.uri(kind), layer_title(kind), "ogr")
        if not layer.isValid():
            raise StoreError(tr("The {0} layer of this answer cannot be opened from {1}.").format(kind, stored.store))
        layer.setCustomProperty(ANSWER_PROPERTY, stored.answer.answer_id)
        layer.setCustomProperty(KIND_PROPERTY, kind)
        style_layer(layer, kind, len(stored.answer.objects))
        layers.append(layer)
    return layers


def style_layer(layer: QgsMapLayer, kind: str, objects: int = 1) -> None:
    if kind == "boxes":
        symbol = QgsFillSymbol.createSimple({"color": "0,0,0,0", "outline_color": "255,200,0,255",
                                             "outline_width": "0.6", "outline_style": "dash"})
        layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    elif kind == "contours":
        symbol = QgsFillSymbol.createSimple({"color": "0,170,255,60", "outline_color": "0,120,255,255",
                                             "outline_width": "0.6"})
        layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    elif kind == "points":
        symbol = QgsMarkerSymbol.createSimple({"name": "cross2", "color": "255,40,40,255", "size": "3",
                                               "outline_color": "255,40,40,255", "outline_width": "0.4"})
        layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    elif kind == "mask":
        provider = layer.dataProvider()
        provider.setUserNoDataValue(1, [QgsRasterRange(0, 0)])
        classes = [QgsPalettedRasterRenderer.Class(v, QColor.fromHsv((v * 67) % 360, 200, 255), tr("object {0}").format(v - 1))
                   for v in range(1, max(1, min(objects, 255)) + 1)]
        renderer = QgsPalettedRasterRenderer(provider, 1, classes)
        renderer.setOpacity(0.5)
        layer.setRenderer(renderer)
    layer.triggerRepaint()


def add_to_project(stored: StoredAnswer, project: Optional[QgsProject] = None) -> QgsLayerTreeGroup:
    """Add the answer's layers under a new top group named after the question."""
    project = project or QgsProject.instance()
    layers = make_layers(stored)  # all or nothing: every layer is valid before any is added
    root = project.layerTreeRoot()
    group = root.insertGroup(0, group_title(stored.answer.question))
    group.setCustomProperty(ANSWER_PROPERTY, stored.answer.answer_id)
    for layer in layers[::-1]:
        project.addMapLayer(layer, False)
        group.insertLayer(0, layer)
    return group


def find_group(answer_id: str, project: Optional[QgsProject] = None) -> Optional[QgsLayerTreeGroup]:
    project = project or QgsProject.instance()
    for group in project.layerTreeRoot().findGroups(True):
        if group.customProperty(ANSWER_PROPERTY, "") == answer_id:
            return group
    return None


def answer_layers(answer_id: str, project: Optional[QgsProject] = None) -> List[QgsMapLayer]:
    project = project or QgsProject.instance()
    return [lyr for lyr in project.mapLayers().values() if lyr.customProperty(ANSWER_PROPERTY, "") == answer_id]


def answer_extent(answer_id: str, crs, project: Optional[QgsProject] = None) -> QgsRectangle:
    """Extent of the answer's layers in `crs` (empty when none)."""
    from qgis.core import QgsCoordinateTransform

    project = project or QgsProject.instance()
    extent = QgsRectangle()
    for layer in answer_layers(answer_id, project):
        e = layer.extent()
        if e.isEmpty():
            continue
        if layer.crs() != crs and layer.crs().isValid() and crs.isValid():
            e = QgsCoordinateTransform(layer.crs(), crs, project.transformContext()).transformBoundingBox(e)
        extent = QgsRectangle(e) if extent.isEmpty() else extent
        extent.combineExtentWith(e)
    return extent
