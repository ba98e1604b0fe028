"""An answer in map coordinates: QGIS features whose attributes follow core/fields.py (the one
attribute schema of every answer feature). Safe to run in a QgsTask (no project access)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransformContext,
    QgsDistanceArea,
    QgsFeature,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsPointXY,
    QgsUnitTypes,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QDateTime, QMetaType, Qt

from ..core.fields import KIND_DATETIME, KIND_FLOAT, KIND_INT, KIND_STR, SOURCE_MODEL, feature_attributes, fields_for
from ..core.georef import GeoTransform
from ..core.protocol import Answer

KINDS = ("boxes", "points", "contours")
_QT_TYPES = {KIND_STR: QMetaType.Type.QString, KIND_INT: QMetaType.Type.Int, KIND_FLOAT: QMetaType.Type.Double,
             KIND_DATETIME: QMetaType.Type.QDateTime}


def qgs_fields(spec: Iterable) -> QgsFields:
    """QgsFields of a core.fields schema (Field objects) or of (name, kind) pairs."""
    out = QgsFields()
    for item in spec:
        name, kind = (item.name, item.kind) if hasattr(item, "name") else item
        out.append(QgsField(name, _QT_TYPES[kind]))
    return out


def layer_fields(kind: str) -> QgsFields:
    return qgs_fields(fields_for(kind))


def qdatetime(value) -> QDateTime:
    """A Python datetime (or ISO text) as a UTC QDateTime."""
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    result = QDateTime.fromString(text.replace("+00:00", "Z"), Qt.DateFormat.ISODate)
    return result.toUTC() if result.isValid() else result


def model_label(answer: Answer) -> str:
    parts = [answer.models.get(k) for k in ("reasoner", "segmenter") if answer.models.get(k)]
    parts += [v for k, v in answer.models.items() if k not in ("reasoner", "segmenter")]
    return " + ".join(parts)


@dataclass
class GeoreferencedAnswer:
    """An answer in map coordinates, with the features per layer (not yet written anywhere)."""
    answer: Answer
    crs: QgsCoordinateReferenceSystem
    transform: GeoTransform
    features: Dict[str, List[QgsFeature]] = field(default_factory=dict)
    source: str = ""  # source raster / layer names
    capture: str = ""  # capture mode
    area_wkt: str = ""  # the area of interest (in crs), when one limited the capture
    edited: Sequence[int] = ()  # indices of objects an analyst corrected


def georeference(answer: Answer, transform: GeoTransform, crs: QgsCoordinateReferenceSystem,
                 source_layers: Sequence[str] = (), capture: str = "canvas",
                 transform_context: Optional[QgsCoordinateTransformContext] = None, ellipsoid: str = "EPSG:7030",
                 area_wkt: str = "", edited: Sequence[int] = ()) -> GeoreferencedAnswer:
    """Map-space features for the Boxes, Points and Contours layers, with ellipsoidal areas."""
    area = QgsDistanceArea()
    area.setSourceCrs(crs, transform_context or QgsCoordinateTransformContext())
    area.setEllipsoid(ellipsoid if ellipsoid and ellipsoid != "NONE" else "EPSG:7030")
    source = ", ".join(source_layers)
    edited_set = set(edited)

    def square_metres(geometry: QgsGeometry) -> Optional[float]:
        if not crs.isValid() or geometry.type() != QgsWkbTypes.GeometryType.PolygonGeometry:
            return None
        value = area.convertAreaMeasurement(area.measureArea(geometry), QgsUnitTypes.AreaUnit.AreaSquareMeters)
        return float(value) if math.isfinite(value) else None

    def feature(kind, geometry, obj, point_no=None) -> QgsFeature:
        f = QgsFeature(layer_fields(kind))
        f.setGeometry(geometry)
        values = feature_attributes(answer, obj, raster=source, area_m2=square_metres(geometry),
                                    source="edited" if obj.index in edited_set else SOURCE_MODEL, point_no=point_no)
        for name, value in values.items():
            f[name] = qdatetime(value) if name == "created" else value
        return f

    def pt(p) -> QgsPointXY:
        return QgsPointXY(p[0], p[1])

    out = GeoreferencedAnswer(answer, crs, transform, {k: [] for k in KINDS}, source, capture, area_wkt,
                              tuple(edited))
    for obj in answer.objects:
        if obj.box is not None and "boxes" in answer.granularities:
            ring = [pt(p) for p in transform.box_to_map_ring(obj.box)]
            out.features["boxes"].append(feature("boxes", QgsGeometry.fromPolygonXY([ring]), obj))
        if "points" in answer.granularities:
            for n, p in enumerate(obj.points):
                geom = QgsGeometry.fromPointXY(pt(transform.pixel_to_map(p[0], p[1])))
                out.features["points"].append(feature("points", geom, obj, n))
        if obj.polygons and "contours" in answer.granularities:
            parts = []
            for poly in obj.polygons:
                mp = transform.polygon_to_map(poly)
                parts.append([[pt(p) for p in _closed(mp.exterior)]] + [[pt(p) for p in _closed(h)] for h in mp.holes])
            out.features["contours"].append(feature("contours", QgsGeometry.fromMultiPolygonXY(parts), obj))
    return out


def _closed(ring):
    ring = list(ring)
    if ring and ring[0] != ring[-1]:
        ring.append(ring[0])
    return ring
