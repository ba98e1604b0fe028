"""Every answer lives in one GeoPackage: an `answers` table (title, question, reasoning, the whole
answer as JSON, transform, CRS, area of interest) and, per answer, tables boxes_<id>, points_<id>,
contours_<id> and a raster mask_<id>. The project's layers point into it (relative paths), so a
reopened, moved or shared project folder brings every answer back.

The store sits next to the saved project (<project>_georeasoner.gpkg). Before a project's first
save its answers go to the profile's data folder; `move_answers_into` moves them beside the project
when it is saved. Feature attributes follow core/fields.py; this module is a thin adapter over it.
Writing runs in a QgsTask: nothing here touches the project or the GUI.
"""
from __future__ import annotations

import base64
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Dict, List, Optional, Sequence

from osgeo import gdal, ogr
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransformContext,
    QgsExpression,
    QgsFeature,
    QgsFeatureRequest,
    QgsProject,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)

from qgis.PyQt.QtCore import Qt

from ..core.fields import KIND_DATETIME, KIND_STR
from ..core.georef import GeoTransform
from ..core.protocol import Answer
from ..toolbelt.i18n import tr
from .features import KINDS, GeoreferencedAnswer, georeference, layer_fields, model_label, qdatetime, qgs_fields

__all__ = ["AnswerStore", "StoredAnswer", "StoreError", "georeference", "GeoreferencedAnswer", "store_path_for",
           "model_label", "KINDS", "ANSWERS_TABLE", "STORE_SUFFIX", "short_id", "unsaved_store_path"]

ANSWERS_TABLE = "answers"
STORE_SUFFIX = "_georeasoner.gpkg"
ANSWER_FIELDS = [("answer_id", KIND_STR), ("title", KIND_STR), ("question", KIND_STR), ("profile", KIND_STR),
                 ("model", KIND_STR), ("created", KIND_DATETIME), ("reasoning", KIND_STR), ("source", KIND_STR),
                 ("capture", KIND_STR), ("area_wkt", KIND_STR), ("crs", KIND_STR), ("transform", KIND_STR),
                 ("tables", KIND_STR), ("edited", KIND_STR), ("original_json", KIND_STR), ("answer_json", KIND_STR),
                 ("image_png", KIND_STR)]  # the captured image (base64 PNG): corrections re-segment it
GEOMETRY = {"boxes": QgsWkbTypes.Type.Polygon, "points": QgsWkbTypes.Type.Point,
            "contours": QgsWkbTypes.Type.MultiPolygon}


class StoreError(Exception):
    """Writing or reading the answer store failed; the message says where and why."""


def short_id(answer_id: str) -> str:
    return "".join(ch for ch in answer_id if ch.isalnum())[:12].lower()


def unsaved_store_path() -> Path:
    folder = Path(QgsApplication.qgisSettingsDirPath()) / "georeasoner"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / ("unsaved" + STORE_SUFFIX)


def store_path_for(project: QgsProject) -> Path:
    """<project folder>/<project name>_georeasoner.gpkg, or the profile's data folder when unsaved."""
    filename = project.fileName()
    if filename:
        path = Path(filename)
        return path.with_name(path.stem + STORE_SUFFIX)
    return unsaved_store_path()


@dataclass
class StoredAnswer:
    answer: Answer
    store: Path
    tables: Dict[str, str]  # kind -> table name (boxes, points, contours, mask)
    crs: QgsCoordinateReferenceSystem
    transform: GeoTransform
    source: str = ""
    capture: str = ""
    title: str = ""
    area_wkt: str = ""
    edited: Sequence[int] = ()
    original_json: str = ""  # the model's answer before any correction ("" = never corrected)

    def uri(self, kind: str) -> str:
        table = self.tables[kind]
        if kind == "mask":
            return f"GPKG:{self.store}:{table}"
        return f"{self.store}|layername={table}"


class AnswerStore:
    def __init__(self, path: Path, transform_context: Optional[QgsCoordinateTransformContext] = None):
        self.path = Path(path)
        self.context = transform_context or QgsCoordinateTransformContext()

    # -- writing --------------------------------------------------------------------------------
    def add(self, geo: GeoreferencedAnswer, title: str = "", original_json: str = "",
            image_png: bytes = b"") -> StoredAnswer:
        """Write every table of one answer; on any failure remove what was written and raise."""
        answer = geo.answer
        sid = short_id(answer.answer_id)
        tables: Dict[str, str] = {}
        written: List[str] = []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            for kind in KINDS:
                if kind not in answer.granularities:
                    continue
                table = f"{kind}_{sid}"
                self._write_features(table, layer_fields(kind), GEOMETRY[kind], geo.features.get(kind, []), geo.crs)
                written.append(table)
                tables[kind] = table
            if "masks" in answer.granularities and any(o.mask is not None for o in answer.objects):
                table = f"mask_{sid}"
                self._write_mask(table, answer, geo.transform, geo.crs)
                written.append(table)
                tables["mask"] = table
            self._write_answer_row(geo, tables, title, original_json, image_png)
        except Exception as exc:  # noqa: BLE001 - leave nothing half-made behind
            self._drop_tables(written)
            if isinstance(exc, StoreError):
                raise
            raise StoreError(tr("Could not write the answer to {0}: {1}").format(self.path, exc)) from exc
        return StoredAnswer(answer, self.path, tables, geo.crs, geo.transform, geo.source, geo.capture, title,
                            geo.area_wkt, tuple(geo.edited), original_json)

    def _write_features(self, table, fields, geometry_type, features, crs, append=False) -> None:
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = "GPKG"
        options.layerName = table
        options.fileEncoding = "UTF-8"
        if append:
            options.actionOnExistingFile = QgsVectorFileWriter.ActionOnExistingFile.AppendToLayerNoNewFields
        elif self.path.exists():
            options.actionOnExistingFile = QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteLayer
        else:
            options.actionOnExistingFile = QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteFile
        writer = QgsVectorFileWriter.create(str(self.path), fields, geometry_type, crs, self.context, options)
        if writer.hasError() != QgsVectorFileWriter.WriterError.NoError:
            raise StoreError(tr("Could not write table {0} to {1}: {2}").format(table, self.path, writer.errorMessage()))
        for f in features:
            out = QgsFeature(fields)
            out.setGeometry(f.geometry())
            out.setAttributes(f.attributes())
            writer.addFeature(out)
        message = writer.errorMessage()
        del writer  # closes the file
        if message:
            raise StoreError(tr("Could not write table {0} to {1}: {2}").format(table, self.path, message))

    def _write_answer_row(self, geo: GeoreferencedAnswer, tables: Dict[str, str], title: str,
                          original_json: str, image_png: bytes = b"") -> None:
        answer = geo.answer
        fields = qgs_fields(ANSWER_FIELDS)
        f = QgsFeature(fields)
        values = {"answer_id": answer.answer_id, "title": title, "question": answer.question,
                  "profile": answer.profile, "model": model_label(answer),
                  "created": qdatetime(answer.created), "reasoning": answer.reasoning,
                  "source": geo.source, "capture": geo.capture, "area_wkt": geo.area_wkt, "crs": geo.crs.toWkt(),
                  "transform": json.dumps(list(geo.transform.to_gdal())), "tables": json.dumps(tables),
                  "edited": json.dumps(sorted(geo.edited)), "original_json": original_json,
                  "answer_json": answer.to_json(), "image_png": base64.b64encode(image_png).decode("ascii")}
        for name, _ in ANSWER_FIELDS:
            f[name] = values[name]
        self._write_features(ANSWERS_TABLE, fields, QgsWkbTypes.Type.NoGeometry, [f], QgsCoordinateReferenceSystem(),
                             append=ANSWERS_TABLE in self.tables())

    def _write_mask(self, table: str, answer: Answer, transform: GeoTransform, crs) -> None:
        mem = mask_dataset(answer, transform, crs)
        if transform.is_rotated():
            # GDAL's warper takes the rotated geotransform to a north-up grid of the same pixel size.
            size = transform.pixel_area() ** 0.5
            mem = gdal.Warp("", mem, format="MEM", xRes=size, yRes=size, resampleAlg="near", dstNodata=0)
        options = ["RASTER_TABLE=" + table, "APPEND_SUBDATASET=YES", "TILE_FORMAT=PNG"]
        out = gdal.GetDriverByName("GPKG").CreateCopy(str(self.path), mem, options=options)
        if out is None:
            raise StoreError(tr("Could not write the mask raster to {0}: {1}").format(self.path, gdal.GetLastErrorMsg()))
        out = None  # noqa: F841 - closes the dataset

    def _drop_tables(self, tables: Sequence[str]) -> None:
        if not tables or not self.path.exists():
            return
        ds = ogr.Open(str(self.path), 1)
        if ds is None:
            return
        for name in tables:
            for i in range(ds.GetLayerCount()):
                if ds.GetLayerByIndex(i).GetName() == name:
                    ds.DeleteLayer(i)
                    break
            else:
                for sql in (f'DROP TABLE IF EXISTS "{name}"',
                            f"DELETE FROM gpkg_contents WHERE table_name = '{name}'",
                            f"DELETE FROM gpkg_tile_matrix WHERE table_name = '{name}'",
                            f"DELETE FROM gpkg_tile_matrix_set WHERE table_name = '{name}'"):
                    ds.ExecuteSQL(sql)
        ds = None  # noqa: F841

    def _sql(self, statement: str) -> None:
        ds = ogr.Open(str(self.path), 1)
        if ds is None:
            raise StoreError(tr("Cannot open the answer store {0} for writing.").format(self.path))
        ds.ExecuteSQL(statement)
        ds = None  # noqa: F841

    def remove(self, answer_id: str) -> None:
        """Drop an answer's tables and its row."""
        for row in self.answers([answer_id]):
            self._drop_tables(list(row["tables"].values()))
        if self.path.exists():
            self._sql(f"DELETE FROM {ANSWERS_TABLE} WHERE answer_id = {_quote(answer_id)}")

    def rename(self, answer_id: str, title: str) -> None:
        self._sql(f"UPDATE {ANSWERS_TABLE} SET title = {_quote(title)} WHERE answer_id = {_quote(answer_id)}")

    def image_png(self, answer_id: str) -> bytes:
        """The image the answer was made from ("" for answers stored before images were kept)."""
        ds = ogr.Open(str(self.path))
        if ds is None:
            return b""
        sql = ds.ExecuteSQL(f"SELECT image_png FROM {ANSWERS_TABLE} WHERE answer_id = {_quote(answer_id)}")
        try:
            feature = sql.GetNextFeature() if sql is not None else None
            text = feature.GetField(0) if feature is not None else None
        except Exception:  # noqa: BLE001 - a store from before the column existed
            text = None
        finally:
            if sql is not None:
                ds.ReleaseResultSet(sql)
        return base64.b64decode(text) if text else b""

    def update_answer(self, stored: StoredAnswer, answer: Answer, edited: Sequence[int], original_json: str,
                      changed: Sequence[int], answer_json: str = "") -> StoredAnswer:
        """Rewrite the objects `changed` (indices) of a stored answer in place: their features in the
        vector tables, their part of the mask raster, and the answer row (the answer, which objects
        were edited, the model's original answer). answer_json: answer.to_json() when the caller has
        it already (a correction puts it together from the objects it did not change)."""
        previous = {o.index: o for o in stored.answer.objects if o.index in changed}
        changed_only = dataclasses.replace(answer, objects=[o for o in answer.objects if o.index in changed])
        geo = georeference(changed_only, stored.transform, stored.crs, [stored.source] if stored.source else [],
                           stored.capture, self.context, area_wkt=stored.area_wkt, edited=edited)
        mask_table = stored.tables.get("mask")
        # One dataset for the vector tables and the mask raster, one transaction: the answer changes
        # all at once (or not at all), with one sync to disk (tens of ms each) instead of several.
        ds = gdal.OpenEx(f"GPKG:{self.path}:{mask_table}" if mask_table else str(self.path),
                         gdal.OF_UPDATE | gdal.OF_VECTOR | (gdal.OF_RASTER if mask_table else 0))
        if ds is None:
            raise StoreError(tr("Cannot open the answer store {0} for writing.").format(self.path))
        try:
            ds.StartTransaction()
            try:
                for kind in KINDS:
                    table = stored.tables.get(kind)
                    layer = ds.GetLayerByName(table) if table else None
                    if layer is not None:
                        self._replace_features(ds, layer, table, geo.features.get(kind, []), changed)
                columns = {"answer_json": answer_json or answer.to_json(), "edited": json.dumps(sorted(edited))}
                if original_json != stored.original_json:
                    columns["original_json"] = original_json
                self._update_answer_row(ds, answer.answer_id, columns)
                if mask_table:
                    self._rewrite_mask(ds, stored, answer, [o for o in answer.objects if o.index in changed]
                                       + list(previous.values()))
                    ds.FlushCache()
            except BaseException:
                ds.RollbackTransaction()
                raise
            if ds.CommitTransaction() != 0:
                raise StoreError(tr("Could not update the answer in {0}: {1}").format(self.path,
                                                                                    gdal.GetLastErrorMsg()))
        finally:
            ds = None  # noqa: F841
        return dataclasses.replace(stored, answer=answer, edited=tuple(sorted(edited)), original_json=original_json)

    @staticmethod
    def _replace_features(ds, layer, table: str, features, changed: Sequence[int]) -> None:
        wanted = ",".join(str(int(i)) for i in changed)
        ds.ExecuteSQL(f'DELETE FROM "{table}" WHERE obj_index IN ({wanted})')
        defn = layer.GetLayerDefn()
        for f in features:
            if f["obj_index"] not in changed:
                continue
            out = ogr.Feature(defn)
            for name in f.fields().names():
                value = f[name]
                if value is None or (hasattr(value, "isNull") and value.isNull()) or defn.GetFieldIndex(name) < 0:
                    continue  # NULL, or a column this (older) store's table does not have
                out.SetField(name, value.toString(Qt.DateFormat.ISODate) if hasattr(value, "toString") else value)
            out.SetGeometry(ogr.CreateGeometryFromWkb(bytes(f.geometry().asWkb())))
            layer.CreateFeature(out)

    def _update_answer_row(self, ds, answer_id: str, columns: Dict[str, str]) -> None:
        # Through the layer, not SQL: an answer's JSON can be megabytes, which SQL would need spelled
        # out as a literal and parsed again. Ignored fields (the image) are neither read nor rewritten.
        layer = ds.GetLayerByName(ANSWERS_TABLE)
        names = [layer.GetLayerDefn().GetFieldDefn(i).GetName() for i in range(layer.GetLayerDefn().GetFieldCount())]
        layer.SetIgnoredFields([n for n in names if n not in columns and n != "answer_id"])
        layer.SetAttributeFilter(f"answer_id = {_quote(answer_id)}")
        row = layer.GetNextFeature()
        if row is None:
            raise StoreError(tr("The answer {0} is not in {1} any more.").format(answer_id, self.path))
        for name, value in columns.items():
            row.SetField(name, value)
        if layer.SetFeature(row) != 0:
            raise StoreError(tr("Could not update the answer in {0}: {1}").format(self.path, gdal.GetLastErrorMsg()))

    def _rewrite_mask(self, target, stored: StoredAnswer, answer: Answer, touched: Sequence) -> None:
        """Rewrite the mask raster (`target`, open for update) where the `touched` objects (before and
        after the change) lie; a rotated capture is warped, so its mask is written whole."""
        mem = mask_dataset(answer, stored.transform, stored.crs)
        window = None
        if stored.transform.is_rotated():
            size = stored.transform.pixel_area() ** 0.5
            mem = gdal.Warp("", mem, format="MEM", xRes=size, yRes=size, resampleAlg="near", dstNodata=0)
        else:
            window = mask_window([o.mask for o in touched if o.mask is not None], mem.RasterXSize, mem.RasterYSize)
            if window is None:
                return
        if target.RasterCount != 1 or (target.RasterXSize, target.RasterYSize) != (mem.RasterXSize, mem.RasterYSize):
            raise StoreError(tr("Could not update the mask of this answer in {0}.").format(self.path))
        x0, y0, x1, y1 = window or (0, 0, mem.RasterXSize, mem.RasterYSize)
        pixels = mem.GetRasterBand(1).ReadAsArray(x0, y0, x1 - x0, y1 - y0)
        target.GetRasterBand(1).WriteArray(pixels, x0, y0)

    def copy_answer(self, answer_id: str, target: "AnswerStore") -> Optional[StoredAnswer]:
        """Copy one answer (row and tables) into another store; None when this store lacks it."""
        row = next(iter(self.answers([answer_id])), None)
        if row is None:
            return None
        target.path.parent.mkdir(parents=True, exist_ok=True)
        for kind, table in row["tables"].items():
            if kind == "mask":
                out = gdal.Translate(str(target.path), f"GPKG:{self.path}:{table}", format="GPKG",
                                     creationOptions=["RASTER_TABLE=" + table, "APPEND_SUBDATASET=YES",
                                                      "TILE_FORMAT=PNG"])
            else:
                out = gdal.VectorTranslate(str(target.path), str(self.path), layers=[table], format="GPKG",
                                           accessMode="update" if target.path.exists() else None)
            if out is None:
                raise StoreError(tr("Could not copy {0} into {1}: {2}").format(table, target.path, gdal.GetLastErrorMsg()))
            out = None  # noqa: F841
        out = gdal.VectorTranslate(str(target.path), str(self.path), layers=[ANSWERS_TABLE], format="GPKG",
                                   accessMode="append", where=f"answer_id = {_quote(answer_id)}")
        if out is None:
            raise StoreError(tr("Could not copy the answer into {0}: {1}").format(target.path, gdal.GetLastErrorMsg()))
        out = None  # noqa: F841
        return target.get(answer_id)

    # -- reading --------------------------------------------------------------------------------
    def tables(self) -> List[str]:
        if not self.path.exists():
            return []
        ds = ogr.Open(str(self.path))
        if ds is None:
            return []
        names = [ds.GetLayerByIndex(i).GetName() for i in range(ds.GetLayerCount())]
        ds = None  # noqa: F841
        return names

    def answers(self, ids: Optional[Collection[str]] = None) -> List[Dict]:
        """Rows of the answers table, oldest first, with tables/transform decoded; only those of
        `ids` when given (the store of unsaved projects holds every answer ever asked in one)."""
        if ANSWERS_TABLE not in self.tables() or (ids is not None and not ids):
            return []
        layer = QgsVectorLayer(f"{self.path}|layername={ANSWERS_TABLE}", ANSWERS_TABLE, "ogr")
        names = layer.fields().names()
        wanted = [name for name, _ in ANSWER_FIELDS if name in names and name != "image_png"]
        request = QgsFeatureRequest().setSubsetOfAttributes(wanted, layer.fields())  # not the images
        if ids is not None:  # filtered by the provider (SQLite), before any answer's JSON reaches Python
            request.setFilterExpression('"answer_id" IN ({0})'.format(", ".join(QgsExpression.quotedValue(i)
                                                                                for i in sorted(ids))))
        rows = []
        for f in layer.getFeatures(request):
            row = {name: (f[name] if name in wanted else None) for name, _ in ANSWER_FIELDS}
            for key in ("tables", "transform", "edited"):
                row[key] = json.loads(row[key] or ("{}" if key == "tables" else "[]"))
            created = row["created"]
            row["created"] = created.toString("yyyy-MM-ddTHH:mm:ss") if hasattr(created, "toString") else str(created)
            rows.append(row)
        rows.sort(key=lambda r: r["created"])
        return rows

    def get(self, answer_id: str) -> Optional[StoredAnswer]:
        for row in self.answers([answer_id]):
            return self._stored(row)
        return None

    def all(self, ids: Optional[Collection[str]] = None) -> List[StoredAnswer]:
        """Every stored answer, or only those of `ids`."""
        return [self._stored(r) for r in self.answers(ids)]

    def _stored(self, row: Dict) -> StoredAnswer:
        answer = Answer.from_json(row["answer_json"])
        crs = QgsCoordinateReferenceSystem.fromWkt(row["crs"]) if row["crs"] else QgsCoordinateReferenceSystem()
        return StoredAnswer(answer, self.path, dict(row["tables"]), crs, GeoTransform.from_gdal(row["transform"]),
                            row["source"] or "", row["capture"] or "", _text(row["title"]), _text(row["area_wkt"]),
                            tuple(row["edited"]), _text(row["original_json"]))


def _text(value) -> str:
    return "" if value is None or (hasattr(value, "isNull") and value.isNull()) else str(value)


def _quote(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def mask_window(masks: Sequence, width: int, height: int) -> Optional[tuple]:
    """(x0, y0, x1, y1): the pixels any of the masks covers (None when none covers any)."""
    from ..rle import rle_bounds  # numpy only: QGIS's own numpy

    bounds = [b for b in (rle_bounds(m) for m in masks if (m.width, m.height) == (width, height)) if b]
    if not bounds:
        return None
    return (min(b[0] for b in bounds), min(b[1] for b in bounds), max(b[2] for b in bounds),
            max(b[3] for b in bounds))


def mask_dataset(answer: Answer, transform: GeoTransform, crs):
    """The union of the objects' masks as a one-band MEM dataset (object index + 1; 0 = none)."""
    from ..rle import rle_label_image  # numpy only: QGIS's own numpy

    width, height = answer.image_width, answer.image_height
    union = rle_label_image([(obj.index + 1, obj.mask) for obj in answer.objects if obj.mask is not None],
                            width, height)
    mem = gdal.GetDriverByName("MEM").Create("", width, height, 1, gdal.GDT_Byte)
    mem.SetGeoTransform(transform.to_gdal())
    if crs.isValid():
        mem.SetProjection(crs.toWkt())
    band = mem.GetRasterBand(1)
    band.WriteArray(union)
    band.SetNoDataValue(0)
    return mem
