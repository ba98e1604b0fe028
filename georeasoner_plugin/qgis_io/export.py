"""Export chosen answers as shapefile sets or one GeoPackage, in a chosen CRS.

Shapefiles: one set per layer and answer (.shp .shx .dbf .prj .cpg, UTF-8); attribute names are
already within 10 characters; text longer than a .dbf field holds (254 bytes) is cut there and the
full question and reasoning go to a sidecar <name>_answer.txt beside the set.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional, Sequence

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


def planned_files(answers: Sequence[StoredAnswer], destination: Path, fmt: str) -> List[Path]:
    if fmt == "gpkg":
        return [destination]
    files = []
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
                   project: Optional[QgsProject] = None) -> List[Path]:
    """Write the answers; fmt 'shp' (destination is a folder) or 'gpkg' (destination is a file).
    crs None keeps each answer's own (source) CRS."""
    project = project or QgsProject.instance()
    destination = Path(destination)
    if fmt not in ("shp", "gpkg"):
        raise ExportError(tr("Unknown export format {0}").format(fmt))
    existing = [f for f in planned_files(answers, destination, fmt) if f.exists()]
    if existing and not overwrite:
        raise ExistingFilesError(existing)
    if fmt == "gpkg" and destination.exists():
        destination.unlink()
    if fmt == "shp":
        destination.mkdir(parents=True, exist_ok=True)
        for f in existing:
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
    return written


def _answer_text(stored: StoredAnswer) -> str:
    a = stored.answer
    lines = [f"answer_id: {a.answer_id}", f"question: {a.question}", f"profile: {a.profile}",
             f"models: {', '.join(f'{k}={v}' for k, v in a.models.items())}", f"created: {a.created}",
             f"source: {stored.source}", f"crs: {stored.crs.authid() or stored.crs.description()}",
             f"objects: {len(a.objects)}", "", "reasoning:", a.reasoning or "(none)", ""]
    return "\n".join(lines)
