"""Answer layers in the project: one group per answer (question, time, area), styled, the reasoning
in each layer's metadata; the project remembers its answers (history) and moves them beside itself
when saved (portability)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from qgis.core import (
    QgsCoordinateTransform,
    QgsFillSymbol,
    QgsLayerMetadata,
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
from qgis.PyQt.QtCore import QCoreApplication, QObject, QTimer, pyqtSignal
from qgis.PyQt.QtGui import QColor

from ..toolbelt.i18n import tr
from .capture import ANSWER_PROPERTY
from .store import AnswerStore, StoredAnswer, StoreError, store_path_for

KIND_PROPERTY = "georeasoner/kind"
SCOPE, ANSWERS_KEY = "georeasoner", "answers"


class _Answers(QObject):
    """Tells the dock that a project's list of answers changed (e.g. a Processing run added one)."""
    changed = pyqtSignal()


ANSWERS = _Answers()


def layer_title(kind: str) -> str:
    return {"boxes": tr("Boxes"), "points": tr("Points"), "contours": tr("Contours"), "mask": tr("Mask")}[kind]


def group_title(stored: StoredAnswer) -> str:
    if stored.title:
        return stored.title
    text = " ".join(stored.answer.question.split())
    return text if len(text) <= 80 else text[:77] + "..."


def answer_metadata(stored: StoredAnswer) -> QgsLayerMetadata:
    """The question as title, the reasoning as abstract: Layer Properties > Metadata shows both."""
    a = stored.answer
    metadata = QgsLayerMetadata()
    metadata.setIdentifier(a.answer_id)
    metadata.setTitle(a.question)
    metadata.setAbstract(a.reasoning or a.raw_output)
    metadata.setKeywords({"georeasoner": [a.profile] + [v for v in a.models.values() if v]})
    metadata.setCrs(stored.crs)
    return metadata


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
        layer.setMetadata(answer_metadata(stored))
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
        classes = [QgsPalettedRasterRenderer.Class(v, QColor.fromHsv((v * 67) % 360, 200, 255),
                                                   tr("object {0}").format(v - 1))
                   for v in range(1, max(1, min(objects, 255)) + 1)]
        renderer = QgsPalettedRasterRenderer(provider, 1, classes)
        renderer.setOpacity(0.5)
        layer.setRenderer(renderer)
    layer.triggerRepaint()


def add_to_project(stored: StoredAnswer, project: Optional[QgsProject] = None) -> QgsLayerTreeGroup:
    """Add the answer's layers under a new top group named after the question, time and area."""
    project = project or QgsProject.instance()
    layers = make_layers(stored)  # all or nothing: every layer is valid before any is added
    root = project.layerTreeRoot()
    group = root.insertGroup(0, group_title(stored))
    group.setCustomProperty(ANSWER_PROPERTY, stored.answer.answer_id)
    for layer in layers[::-1]:
        project.addMapLayer(layer, False)
        group.insertLayer(0, layer)
    return group


def refresh_answer_layers(answer_id: str, stored: StoredAnswer, project: Optional[QgsProject] = None) -> None:
    """After a correction: every layer of the answer re-reads its table; the mask keeps one colour per
    object (objects may have been added)."""
    project = project or QgsProject.instance()
    for layer in answer_layers(answer_id, project):
        layer.dataProvider().reloadData()
        kind = layer.customProperty(KIND_PROPERTY, "")
        if kind == "mask":
            style_layer(layer, kind, max([o.index + 1 for o in stored.answer.objects], default=1))
        layer.setMetadata(answer_metadata(stored))
        layer.triggerRepaint()


def remove_from_project(answer_id: str, project: Optional[QgsProject] = None) -> None:
    project = project or QgsProject.instance()
    project.removeMapLayers([lyr.id() for lyr in answer_layers(answer_id, project)])
    group = find_group(answer_id, project)
    if group is not None and group.parent() is not None:
        group.parent().removeChildNode(group)


# -- the project's answers (history) ----------------------------------------------------------------
def project_answer_ids(project: QgsProject) -> List[str]:
    ids, _ = project.readListEntry(SCOPE, ANSWERS_KEY, [])
    present = [lyr.customProperty(ANSWER_PROPERTY, "") for lyr in project.mapLayers().values()]
    out = list(ids or [])
    out += [i for i in present if i and i not in out]  # projects saved before the list existed
    return out


def remember_answer(project: QgsProject, answer_id: str) -> None:
    ids, _ = project.readListEntry(SCOPE, ANSWERS_KEY, [])
    if answer_id not in (ids or []):
        project.writeEntry(SCOPE, ANSWERS_KEY, list(ids or []) + [answer_id])
        project.setDirty(True)
        ANSWERS.changed.emit()


def forget_answer(project: QgsProject, answer_id: str) -> None:
    ids, _ = project.readListEntry(SCOPE, ANSWERS_KEY, [])
    project.writeEntry(SCOPE, ANSWERS_KEY, [i for i in (ids or []) if i != answer_id])


def layer_store(layer: QgsMapLayer) -> Optional[Path]:
    """The store file an answer layer reads from."""
    source = layer.source().split("|")[0]
    if source.startswith("GPKG:"):
        source = source[5:].rsplit(":", 1)[0]
    return Path(source) if source else None


def stores_of(project: QgsProject) -> List[Path]:
    """The project's own store first, then any other store its answer layers point to."""
    out = [store_path_for(project)]
    for layer in project.mapLayers().values():
        if layer.customProperty(ANSWER_PROPERTY, ""):
            path = layer_store(layer)
            if path is not None and path not in out:
                out.append(path)
    return out


def move_answers_into_project_store(project: QgsProject) -> int:
    """Copy every answer of the project that lives in another store (the unsaved-projects store, or
    the store of the project's old location) into the project's own store, point the layers there,
    and drop the copy in the unsaved-projects store. Returns how many answers moved."""
    if not project.fileName():
        return 0
    target = AnswerStore(store_path_for(project), project.transformContext())
    from .store import unsaved_store_path

    unsaved = unsaved_store_path()
    moved = 0
    for answer_id in project_answer_ids(project):
        layers = answer_layers(answer_id, project)
        origin = None
        if target.get(answer_id) is not None:
            sources = {layer_store(lyr) for lyr in layers}
            if sources <= {target.path}:
                continue
            stored = target.get(answer_id)
        else:
            source_paths = [layer_store(lyr) for lyr in layers] or [unsaved]
            origin = next((AnswerStore(p) for p in source_paths if p and p.exists()
                           and AnswerStore(p).get(answer_id) is not None), None)
            if origin is None:
                continue
            stored = origin.copy_answer(answer_id, target)
        moved += 1
        for layer in layers:
            kind = layer.customProperty(KIND_PROPERTY, "")
            if kind in stored.tables:
                provider = "gdal" if kind == "mask" else "ogr"
                layer.setDataSource(stored.uri(kind), layer.name(), provider)
                style_layer(layer, kind, len(stored.answer.objects))
        if origin is not None and origin.path == unsaved:
            origin.remove(answer_id)  # the unsaved-projects store keeps no copy
    return moved


class UnsavedAnswers(QObject):
    """Drops a never-saved project's answers from the unsaved-projects store when the project is
    closed (new project, another one opened, changes discarded): nothing can open them again, and
    that store would otherwise grow with every answer ever asked in an unsaved project. The store is
    shared by every QGIS of the profile, so only this project's answers go."""

    def __init__(self, project: QgsProject, parent: Optional[QObject] = None):
        super().__init__(parent)
        self.project = project
        self._closing: List[str] = []
        project.aboutToBeCleared.connect(self._about_to_clear)
        project.cleared.connect(self._cleared)

    def _about_to_clear(self) -> None:
        if QCoreApplication.closingDown():  # QGIS is exiting: its providers may be gone already
            self._closing = []
            return
        self._closing = [] if self.project.fileName() else project_answer_ids(self.project)

    def _cleared(self) -> None:
        # Later, from the event loop: the layers' providers have let go of the store by then, and a
        # QGIS that is exiting runs no event loop any more (the answers then stay, as after a crash).
        if self._closing and not QCoreApplication.closingDown():
            QTimer.singleShot(0, self._drop_closed)

    def _drop_closed(self) -> None:
        from ..toolbelt.log import log
        from .store import unsaved_store_path

        ids, self._closing = self._closing, []
        store = AnswerStore(unsaved_store_path())
        if not ids or not store.path.exists():
            return
        for answer_id in ids:
            try:
                store.remove(answer_id)
            except Exception as exc:  # noqa: BLE001 - a leftover answer is not worth an error dialog
                log(f"could not drop answer {answer_id} of the closed unsaved project: {exc}")


# -- finding answers in the project ---------------------------------------------------------------
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


def source_rasters(project: QgsProject) -> List[QgsMapLayer]:
    """Raster layers the analyst can ask about: not our own mask layers."""
    return [lyr for lyr in project.mapLayers().values()
            if isinstance(lyr, QgsRasterLayer) and not lyr.customProperty(ANSWER_PROPERTY, "")]
