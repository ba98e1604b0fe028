"""The backend writer's thin adapter over ``core.fields``: attribute columns for pyogrio.

``core/fields.py`` names the columns and computes their values; this module only turns them into
the column arrays ``pyogrio.raw.write`` takes, and measures areas. The QGIS store is the other
adapter over the same schema, so a GeoPackage from the CLI and a layer from the plugin carry the
same columns with the same values.

Areas are ellipsoidal (geodesic) square metres on the CRS's own ellipsoid, what QGIS's
``QgsDistanceArea`` gives the plugin: pyproj computes them with GeographicLib, and a planar area
would be off by the projection's scale error (large in Web Mercator). No CRS: no area.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.fields import KIND_DATETIME, KIND_FLOAT, KIND_INT, KIND_STR, feature_attributes, fields_for
from ..core.protocol import Answer, AnswerObject

DBF_TEXT_BYTES = 254  # dBASE limit for a character field
# GDAL's time-zone flag for UTC (pyogrio passes it through for date-time columns): written as "...Z".
_GDAL_TZ_UTC = 100

AreaFunction = Callable[[Any], Optional[float]]
Feature = Tuple[Any, Optional[int], AnswerObject]  # (shapely geometry, point number or None, object)


def area_function(crs_wkt: Optional[str]) -> AreaFunction:
    """geometry (shapely, in the CRS) -> ellipsoidal area in m², or None without a usable CRS."""
    if not crs_wkt:
        return lambda geometry: None
    try:
        from pyproj import CRS, Transformer
        from pyproj.exceptions import CRSError

        crs = CRS.from_wkt(crs_wkt)
        geodetic = crs.geodetic_crs
    except (ImportError, CRSError, ValueError):
        return lambda geometry: None
    if geodetic is None:  # an engineering / local CRS: no ellipsoid to measure on
        return lambda geometry: None
    geod = geodetic.get_geod()
    to_lonlat = Transformer.from_crs(crs, geodetic, always_xy=True)

    def ring_area(coords) -> float:
        xy = np.asarray(coords, dtype=np.float64)
        lon, lat = to_lonlat.transform(xy[:, 0], xy[:, 1])
        area, _ = geod.polygon_area_perimeter(lon, lat)
        return abs(float(area))

    def measure(geometry) -> Optional[float]:
        polygons = getattr(geometry, "geoms", [geometry])
        total = 0.0
        for polygon in polygons:
            if polygon.geom_type != "Polygon":
                return None
            total += ring_area(polygon.exterior.coords)
            total -= sum(ring_area(hole.coords) for hole in polygon.interiors)
        return total if math.isfinite(total) else None

    return measure


def attribute_rows(answer: Answer, layer: str, features: Sequence[Feature], crs_wkt: Optional[str],
                   raster: str = "") -> List[Dict[str, Any]]:
    """``core.fields.feature_attributes`` of every feature of one layer, areas measured on the CRS's
    ellipsoid (None for points and without a CRS): one dict per feature, in schema order."""
    area = area_function(crs_wkt) if layer != "points" else (lambda geometry: None)
    return [feature_attributes(answer, obj, raster=raster, point_no=point_no, area_m2=area(geometry))
            for geometry, point_no, obj in features]


def layer_columns(layer: str, answer: Answer, features: Sequence[Feature], *, shapefile: bool,
                  crs_wkt: Optional[str], raster: str = "") -> Tuple[List[str], list, list, Dict[str, np.ndarray]]:
    """(names, field_data, field_mask, gdal_tz_offsets) of one layer for pyogrio, in ``core.fields`` order."""
    records = attribute_rows(answer, layer, features, crs_wkt, raster)
    names: List[str] = []
    data: list = []
    masks: list = []
    tz_offsets: Dict[str, np.ndarray] = {}
    for field in fields_for(layer):
        values = [record[field.name] for record in records]
        names.append(field.name)
        missing = np.array([v is None for v in values], dtype=bool)
        if field.kind == KIND_INT:
            data.append(np.array([0 if v is None else v for v in values], dtype=np.int32))
        elif field.kind == KIND_FLOAT:
            data.append(np.array([np.nan if v is None else v for v in values], dtype=np.float64))
        elif field.kind == KIND_DATETIME and not shapefile:
            # UTC, naive for numpy; the GDAL time-zone flag makes the GeoPackage say "Z".
            data.append(np.array([None if v is None else np.datetime64(v.replace(tzinfo=None), "ms")
                                  for v in values], dtype="datetime64[ms]"))
            tz_offsets[field.name] = np.full(len(values), _GDAL_TZ_UTC, dtype=np.int32)
        else:
            if field.kind == KIND_DATETIME:  # dBASE has no date-time type: ISO 8601 text in UTC
                values = [None if v is None else v.strftime("%Y-%m-%dT%H:%M:%SZ") for v in values]
            elif field.kind != KIND_STR:
                raise ValueError(f"field {field.name}: unknown kind {field.kind!r}")
            if shapefile:
                values = [None if v is None else truncate_utf8(v, DBF_TEXT_BYTES) for v in values]
            data.append(np.array(values, dtype=object))
        masks.append(missing if missing.any() else None)
    return names, data, masks, tz_offsets


def truncate_utf8(text: str, limit: int) -> str:
    """At most ``limit`` bytes of UTF-8 without splitting a character (DBF widths are bytes)."""
    encoded = text.encode("utf-8")
    return text if len(encoded) <= limit else encoded[:limit].decode("utf-8", errors="ignore")
