"""Every answer lives in one GeoPackage: an `answers` table (question, reasoning, the whole answer
as JSON, transform, CRS) and, per answer, tables boxes_<id>, points_<id>, contours_<id> and a raster
mask_<id>. The project's layers point into it, so reopening a project brings every answer back.

The store sits next to the saved project (<project>_georeasoner.gpkg) or, for an unsaved project,
in the QGIS profile's data folder.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from osgeo import gdal, ogr
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsDistanceArea,
    QgsFeature,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsUnitTypes,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QMetaType

from ..core.georef import GeoTransform
from ..core.protocol import Answer
from ..toolbelt.i18n import tr

ANSWERS_TABLE = "answers"
KINDS = ("boxes", "points", "contours")
STORE_SUFFIX = "_georeasoner.gpkg"


class StoreError(Exception):
    """Writing or reading the answer store failed; the message says where and why."""


def _field(name: str, kind: str) -> QgsField:
    types = {"str": QMetaType.Type.QString, "int": QMetaType.Type.Int, "float": QMetaType.Type.Double}
    return QgsField(name, types[kind])


# Attribute names are shapefile-safe (<= 10 characters) so exports keep them unchanged.
FEATURE_FIELDS = [("answer_id", "str"), ("question", "str"), ("obj_index", "int"), ("score", "float"),
                  ("area_m2", "float"), ("model", "str"), ("profile", "str"), ("created", "str"),
                  ("source", "str")]
POINT_FIELDS = FEATURE_FIELDS + [("point_no", "int")]
ANSWER_FIELDS = [("answer_id", "str"), ("question", "str"), ("profile", "str"), ("model", "str"),
                 ("created", "str"), ("reasoning", "str"), ("source", "str"), ("capture", "str"),
                 ("crs", "str"), ("transform", "str"), ("tables", "str"), ("answer_json", "str")]


def fields_of(spec) -> QgsFields:
    fields = QgsFields()
    for name, kind in spec:
        fields.append(_field(name, kind))
    return fields


def short_id(answer_id: str) -> str:
    return "".join(ch for ch in answer_id if ch.isalnum())[:12].lower()


def model_label(answer: Answer) -> str:
    parts = [answer.models.get(k) for k in ("reasoner", "segmenter") if answer.models.get(k)]
    parts += [v for k, v in answer.models.items() if k not in ("reasoner", "segmenter")]
    return " + ".join(parts)


def store_path_for(project: QgsProject) -> Path:
    """<project folder>/<project name>_georeasoner.gpkg, or the profile's data folder when unsaved."""
    filename = project.fileName()
    if filename:
        path = Path(filename)
        return path.with_name(path.stem + STORE_SUFFIX)
    folder = Path(QgsApplication.qgisSettingsDirPath()) / "georeasoner"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / ("unsaved" + STORE_SUFFIX)


@dataclass
class StoredAnswer:
    answer: Answer
    store: Path
    tables: Dict[str, str]  # kind -> table name (boxes, points, contours, mask)
    crs: QgsCoordinateReferenceSystem
    transform: GeoTransform
    source: str = ""
    capture: str = ""
    extent: Optional[Sequence[float]] = None

    def uri(self, kind: str) -> str:
        table = self.tables[kind]
        if kind == "mask":
            return f"GPKG:{self.store}:{table}"
        return f"{self.store}|layername={table}"


@dataclass
class GeoreferencedAnswer:
    """An answer in map coordinates, with the features per layer (not yet written anywhere)."""
    answer: Answer
    crs: QgsCoordinateReferenceSystem
    transform: GeoTransform
    features: Dict[str, List[QgsFeature]] = field(default_factory=dict)
    source: str = ""
    capture: str = ""


def georeference(answer: Answer, transform: GeoTransform, crs: QgsCoordinateReferenceSystem,
                 source_layers: Sequence[str] = (), capture: str = "canvas",
                 project: Optional[QgsProject] = None) -> GeoreferencedAnswer:
    """Map-space features for the Boxes, Points and Contours layers, with ellipsoidal areas."""
    project = project or QgsProject.instance()
    area = QgsDistanceArea()
    area.setSourceCrs(crs, project.transformContext())
    ellipsoid = project.ellipsoid()
    area.setEllipsoid(ellipsoid if ellipsoid and ellipsoid != "NONE" else "EPSG:7030")
    source = ", ".join(source_layers)
    common = {"answer_id": answer.answer_id, "question": answer.question, "model": model_label(answer),
              "profile": answer.profile, "created": answer.created, "source": source}

    def square_metres(geometry: QgsGeometry) -> Optional[float]:
        if not crs.isValid():
            return None
        value = area.measureArea(geometry)
        value = area.convertAreaMeasurement(value, QgsUnitTypes.AreaUnit.AreaSquareMeters)
        return float(value) if math.isfinite(value) else None

    def feature(spec, geometry, obj, extra=None) -> QgsFeature:
        f = QgsFeature(fields_of(spec))
        f.setGeometry(geometry)
        values = dict(common, obj_index=obj.index, score=obj.score,
                      area_m2=square_metres(geometry) if geometry.type() == QgsWkbTypes.GeometryType.PolygonGeometry
                      else None)
        values.update(extra or {})
        for name, _ in spec:
            f[name] = values.get(name)
        return f

    def pt(p) -> QgsPointXY:
        return QgsPointXY(p[0], p[1])

    out = GeoreferencedAnswer(answer, crs, transform, {k: [] for k in KINDS}, source, capture)
    for obj in answer.objects:
        if obj.box is not None and "boxes" in answer.granularities:
            ring = [pt(p) for p in transform.box_to_map_ring(obj.box)]
            out.features["boxes"].append(feature(FEATURE_FIELDS, QgsGeometry.fromPolygonXY([ring]), obj))
        if "points" in answer.granularities:
            for n, p in enumerate(obj.points):
                geom = QgsGeometry.fromPointXY(pt(transform.pixel_to_map(p[0], p[1])))
                out.features["points"].append(feature(POINT_FIELDS, geom, obj, {"point_no": n}))
        if obj.polygons and "contours" in answer.granularities:
            parts = []
            for poly in obj.polygons:
                mp = transform.polygon_to_map(poly)
                rings = [[pt(p) for p in _closed(mp.exterior)]] + [[pt(p) for p in _closed(h)] for h in mp.holes]
                parts.append(rings)
            geom = QgsGeometry.fromMultiPolygonXY(parts)
            out.features["contours"].append(feature(FEATURE_FIELDS, geom, obj))
    return out


def _closed(ring):
    ring = list(ring)
    if ring and ring[0] != ring[-1]:
        ring.append(ring[0])
    return ring


class AnswerStore:
    def __init__(self, path: Path):
        self.path = Path(path)

    # -- writing --------------------------------------------------------------------------------
    def add(self, geo: GeoreferencedAnswer) -> StoredAnswer:
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
                geom_type = {"boxes": "Polygon", "points": "Point", "contours": "MultiPolygon"}[kind]
                spec = POINT_FIELDS if kind == "points" else FEATURE_FIELDS
                self._write_table(table, geom_type, spec, geo.features.get(kind, []), geo.crs)
                written.append(table)
                tables[kind] = table
            if "masks" in answer.granularities and any(o.mask is not None for o in answer.objects):
                table = f"mask_{sid}"
                self._write_mask(table, answer, geo.transform, geo.crs)
                written.append(table)
                tables["mask"] = table
            self._write_answer_row(geo, tables)
        except Exception as exc:  # noqa: BLE001 - leave nothing half-made behind
            self._drop_tables(written)
            if isinstance(exc, StoreError):
                raise
            raise StoreError(tr("Could not write the answer to {0}: {1}").format(self.path, exc)) from exc
        return StoredAnswer(answer, self.path, tables, geo.crs, geo.transform, geo.source, geo.capture)

    def _writer_options(self, table: str) -> QgsVectorFileWriter.SaveVectorOptions:
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = "GPKG"
        options.layerName = table
        options.fileEncoding = "UTF-8"
        options.actionOnExistingFile = (QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteLayer
                                        if self.path.exists() else
                                        QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteFile)
        return options

    def _write_table(self, table, geom_type, spec, features, crs) -> None:
        uri = f"{geom_type}?crs={crs.authid()}" if crs.authid() else geom_type
        layer = QgsVectorLayer(uri, table, "memory")
        if not crs.authid() and crs.isValid():
            layer.setCrs(crs)
        layer.dataProvider().addAttributes(list(fields_of(spec)))
        layer.updateFields()
        layer.dataProvider().addFeatures(features)
        self._write_layer(layer, table)

    def _write_layer(self, layer, table, append=False) -> None:
        options = self._writer_options(table)
        if append:
            options.actionOnExistingFile = QgsVectorFileWriter.ActionOnExistingFile.AppendToLayerNoNewFields
        error, message, _, _ = QgsVectorFileWriter.writeAsVectorFormatV3(
            layer, str(self.path), QgsProject.instance().transformContext(), options)
        if error != QgsVectorFileWriter.WriterError.NoError:
            raise StoreError(tr("Could not write table {0} to {1}: {2}").format(table, self.path, message))

    def _write_answer_row(self, geo: GeoreferencedAnswer, tables: Dict[str, str]) -> None:
        answer = geo.answer
        layer = QgsVectorLayer("None", ANSWERS_TABLE, "memory")
        layer.dataProvider().addAttributes(list(fields_of(ANSWER_FIELDS)))
        layer.updateFields()
        f = QgsFeature(layer.fields())
        values = {"answer_id": answer.answer_id, "question": answer.question, "profile": answer.profile,
                  "model": model_label(answer), "created": answer.created, "reasoning": answer.reasoning,
                  "source": geo.source, "capture": geo.capture, "crs": geo.crs.toWkt(),
                  "transform": json.dumps(list(geo.transform.to_gdal())), "tables": json.dumps(tables),
                  "answer_json": answer.to_json()}
        for name, _ in ANSWER_FIELDS:
            f[name] = values[name]
        layer.dataProvider().addFeatures([f])
        self._write_layer(layer, ANSWERS_TABLE, append=ANSWERS_TABLE in self.tables())

    def _write_mask(self, table: str, answer: Answer, transform: GeoTransform, crs) -> None:
        width, height = answer.image_width, answer.image_height
        union = bytearray(width * height)
        for obj in answer.objects:
            if obj.mask is None or obj.mask.width != width or obj.mask.height != height:
                continue
            value = min(255, obj.index + 1)
            pos, bit = 0, 0
            for count in obj.mask.counts:
                if bit and count:
                    union[pos:pos + count] = bytes([value]) * count
                pos += count
                bit = 1 - bit
        data, gt, w, h = bytes(union), transform.to_gdal(), width, height
        if transform.is_rotated():
            data, gt, w, h = _north_up(union, width, height, transform)
        mem = gdal.GetDriverByName("MEM").Create("", w, h, 1, gdal.GDT_Byte)
        mem.SetGeoTransform(gt)
        if crs.isValid():
            mem.SetProjection(crs.toWkt())
        mem.GetRasterBand(1).WriteRaster(0, 0, w, h, data)
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

    def remove(self, answer_id: str) -> None:
        """Drop an answer's tables and its row."""
        rows = [r for r in self.answers() if r["answer_id"] == answer_id]
        for row in rows:
            self._drop_tables(list(row["tables"].values()))
        ds = ogr.Open(str(self.path), 1)
        if ds is not None:
            ds.ExecuteSQL(f"DELETE FROM {ANSWERS_TABLE} WHERE answer_id = '{answer_id}'")
            ds = None  # noqa: F841

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

    def answers(self) -> List[Dict]:
        """Rows of the answers table, oldest first, with tables/transform decoded."""
        if ANSWERS_TABLE not in self.tables():
            return []
        layer = QgsVectorLayer(f"{self.path}|layername={ANSWERS_TABLE}", ANSWERS_TABLE, "ogr")
        rows = []
        for f in layer.getFeatures():
            row = {name: f[name] for name, _ in ANSWER_FIELDS}
            row["tables"] = json.loads(row["tables"] or "{}")
            row["transform"] = json.loads(row["transform"] or "[]")
            rows.append(row)
        rows.sort(key=lambda r: str(r["created"]))
        return rows

    def get(self, answer_id: str) -> Optional[StoredAnswer]:
        for row in self.answers():
            if row["answer_id"] == answer_id:
                return self._stored(row)
        return None

    def all(self) -> List[StoredAnswer]:
        return [self._stored(r) for r in self.answers()]

    def _stored(self, row: Dict) -> StoredAnswer:
        answer = Answer.from_json(row["answer_json"])
        crs = QgsCoordinateReferenceSystem.fromWkt(row["crs"]) if row["crs"] else QgsCoordinateReferenceSystem()
        return StoredAnswer(answer, self.path, dict(row["tables"]), crs, GeoTransform.from_gdal(row["transform"]),
                            row["source"] or "", row["capture"] or "")


def _north_up(data: bytearray, width: int, height: int, transform: GeoTransform):
    """Nearest-neighbour resample of a rotated pixel grid onto a north-up grid of the same pixel area."""
    import numpy as np  # QGIS's own numpy

    src = np.frombuffer(bytes(data), dtype=np.uint8).reshape(height, width)
    corners = [transform.pixel_to_map(c, r) for c, r in ((0, 0), (width, 0), (0, height), (width, height))]
    xs, ys = [p[0] for p in corners], [p[1] for p in corners]
    size = math.sqrt(transform.pixel_area())
    w = max(1, int(math.ceil((max(xs) - min(xs)) / size)))
    h = max(1, int(math.ceil((max(ys) - min(ys)) / size)))
    x0, y0 = min(xs), max(ys)
    cols = x0 + (np.arange(w) + 0.5) * size
    rows = y0 - (np.arange(h) + 0.5) * size
    gx, gy = np.meshgrid(cols, rows)
    det = transform.determinant()
    dx, dy = gx - transform.origin_x, gy - transform.origin_y
    pc = (dx * transform.pixel_height - dy * transform.row_rotation) / det
    pr = (dy * transform.pixel_width - dx * transform.column_rotation) / det
    ci, ri = np.floor(pc).astype(int), np.floor(pr).astype(int)
    inside = (ci >= 0) & (ci < width) & (ri >= 0) & (ri < height)
    out = np.zeros((h, w), dtype=np.uint8)
    out[inside] = src[ri[inside], ci[inside]]
    return out.tobytes(), (x0, size, 0.0, y0, 0.0, -size), w, h
