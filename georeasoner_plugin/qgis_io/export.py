"""Export chosen answers as shapefile sets or one GeoPackage, in a chosen CRS, with the masks as
GeoTIFFs when asked.

Shapefiles: one set per layer and answer (.shp .shx .dbf .prj .cpg, UTF-8); attribute names are
already within 10 characters; text longer than a .dbf field holds (254 bytes) is cut there and the
full question and reasoning go to a sidecar <name>_answer.txt beside the set.
GeoPackage: the layers plus an `answers` table (question, reasoning, models, created) per answer.
Masks: <name>_mask.tif beside the export (the GeoPackage's folder), in the mask's own CRS.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional, Sequence

from osgeo import gdal
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProject,
    QgsVectorFileWriter,
    QgsVectorLayer,
)

from ..core.files import atomic_write_text
from ..toolbelt.i18n import tr
from .store import KINDS, StoredAnswer

SHAPEFILE_SIDECARS = (".shp", ".shx", ".dbf", ".prj", ".cpg")


class ExportError(Exception):
    pass


class ExistingFilesError(ExportError):
    """Export would overwrite files; `files` lists them (ask, then call again with overwrite=True)."""

    def __init__(self, files: List[Path]):
        super().__init__(tr("These files exist already: {0}").format(", ".join(str(f) for f in files)))
        self.files = files


def slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    return (s[:limit].strip("_") or "answer")


def mask_folder(destination: Path, fmt: str) -> Path:
    return destination.parent if fmt == "gpkg" else destination


def planned_files(answers: Sequence[StoredAnswer], destination: Path, fmt: str, masks: bool = False) -> List[Path]:
    files = []
    if masks:
        files += [mask_folder(destination, fmt) / f"{_base_name(s)}_mask.tif" for s in answers if "mask" in s.tables]
    if fmt == "gpkg":
        return [destination] + files
    for stored in answers:
        base = _base_name(stored)
        for kind in KINDS:
            if kind in stored.tables:
                files += [destination / f"{base}_{kind}{ext}" for ext in SHAPEFILE_SIDECARS]
        files.append(destination / f"{base}_answer.txt")
    return files


def _base_name(stored: StoredAnswer) -> str:
    return f"{slug(stored.answer.question, 30)}_{stored.answer.answer_id[:8]}"


def export_answers(answers: Sequence[StoredAnswer], destination: Path, fmt: str = "shp",
                   crs: Optional[QgsCoordinateReferenceSystem] = None, overwrite: bool = False,
                   project: Optional[QgsProject] = None, masks: bool = False) -> List[Path]:
    """Write the answers; fmt 'shp' (destination is a folder) or 'gpkg' (destination is a file).
    crs None keeps each answer's own (source) CRS; masks=True adds each mask as a GeoTIFF."""
    project = project or QgsProject.instance()
    destination = Path(destination)
    if fmt not in ("shp", "gpkg"):
        raise ExportError(tr("Unknown export format {0}").format(fmt))
    existing = [f for f in planned_files(answers, destination, fmt, masks) if f.exists()]
    if existing and not overwrite:
        raise ExistingFilesError(existing)
    if fmt == "gpkg" and destination.exists():
        destination.unlink()
    if fmt == "shp":
        destination.mkdir(parents=True, exist_ok=True)
    else:
        destination.parent.mkdir(parents=True, exist_ok=True)
    for f in existing:
        if f.exists():
            f.unlink()
    written: List[Path] = []
    for stored in answers:
        base = _base_name(stored)
        for kind in KINDS:
            if kind not in stored.tables:
                continue
            layer = QgsVectorLayer(stored.uri(kind), kind, "ogr")
            if not layer.isValid():
                raise ExportError(tr("Cannot open {0} of answer {1} in {2}").format(kind, stored.answer.answer_id,
                                                                                  stored.store))
            options = QgsVectorFileWriter.SaveVectorOptions()
            options.fileEncoding = "UTF-8"
            # the GeoPackage's own feature id is not an attribute of the answer
            options.attributes = [i for i, f in enumerate(layer.fields()) if f.name() != "fid"]
            target_crs = crs if crs is not None and crs.isValid() else layer.crs()
            if target_crs != layer.crs():
                options.ct = QgsCoordinateTransform(layer.crs(), target_crs, project.transformContext())
            if fmt == "shp":
                options.driverName = "ESRI Shapefile"
                options.layerOptions = ["ENCODING=UTF-8"]
                path = destination / f"{base}_{kind}.shp"
                options.actionOnExistingFile = QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteFile
            else:
                options.driverName = "GPKG"
                options.layerName = f"{base[:40]}_{kind}"
                path = destination
                options.actionOnExistingFile = (QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteLayer
                                                if destination.exists() else
                                                QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteFile)
            error, message, _, _ = QgsVectorFileWriter.writeAsVectorFormatV3(layer, str(path),
                                                                             project.transformContext(), options)
            if error != QgsVectorFileWriter.WriterError.NoError:
                raise ExportError(tr("Export to {0} failed: {1}").format(path, message))
            if fmt == "shp":
                written += [path.with_suffix(ext) for ext in SHAPEFILE_SIDECARS if path.with_suffix(ext).exists()]
            elif path not in written:
                written.append(path)
        if fmt == "shp":
            sidecar = destination / f"{base}_answer.txt"
            atomic_write_text(sidecar, _answer_text(stored))
            written.append(sidecar)
        if masks and "mask" in stored.tables:
            written.append(_export_mask(stored, mask_folder(destination, fmt) / f"{base}_mask.tif"))
    if fmt == "gpkg" and answers:
        _write_answers_table(answers, destination, project)
    return written


def _export_mask(stored: StoredAnswer, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = gdal.Translate(str(path), f"GPKG:{stored.store}:{stored.tables['mask']}", format="GTiff",
                         creationOptions=["COMPRESS=DEFLATE"], noData=0)
    if out is None:
        raise ExportError(tr("Writing the mask GeoTIFF {0} failed: {1}").format(path, gdal.GetLastErrorMsg()))
    out = None  # noqa: F841 - closes the file
    return path


def _write_answers_table(answers: Sequence[StoredAnswer], destination: Path, project: QgsProject) -> None:
    """One row per answer (question, reasoning, models, when, source, CRS) in the GeoPackage."""
    from qgis.core import QgsFeature, QgsWkbTypes

    from ..core.fields import KIND_DATETIME, KIND_INT, KIND_STR
    from .features import qdatetime, qgs_fields

    spec = [("answer_id", KIND_STR), ("title", KIND_STR), ("question", KIND_STR), ("reasoning", KIND_STR),
            ("profile", KIND_STR), ("reasoner", KIND_STR), ("segmenter", KIND_STR), ("created", KIND_DATETIME),
            ("raster", KIND_STR), ("area_wkt", KIND_STR), ("objects", KIND_INT)]
    fields = qgs_fields(spec)
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = "answers"
    options.fileEncoding = "UTF-8"
    options.actionOnExistingFile = QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteLayer
    writer = QgsVectorFileWriter.create(str(destination), fields, QgsWkbTypes.Type.NoGeometry,
                                        QgsCoordinateReferenceSystem(), project.transformContext(), options)
    if writer.hasError() != QgsVectorFileWriter.WriterError.NoError:
        raise ExportError(tr("Export to {0} failed: {1}").format(destination, writer.errorMessage()))
    for stored in answers:
        a = stored.answer
        f = QgsFeature(fields)
        values = {"answer_id": a.answer_id, "title": stored.title, "question": a.question, "reasoning": a.reasoning,
                  "profile": a.profile, "reasoner": a.models.get("reasoner", ""),
                  "segmenter": a.models.get("segmenter", ""), "created": qdatetime(a.created),
                  "raster": stored.source, "area_wkt": stored.area_wkt, "objects": len(a.objects)}
        for name, _ in spec:
            f[name] = values[name]
        writer.addFeature(f)
    del writer


def _answer_text(stored: StoredAnswer) -> str:
    a = stored.answer
    lines = [f"answer_id: {a.answer_id}", f"question: {a.question}", f"profile: {a.profile}",
             f"models: {', '.join(f'{k}={v}' for k, v in a.models.items())}", f"created: {a.created}",
             f"source: {stored.source}", f"crs: {stored.crs.authid() or stored.crs.description()}",
             f"objects: {len(a.objects)}", "", "reasoning:", a.reasoning or "(none)", ""]
    return "\n".join(lines)
