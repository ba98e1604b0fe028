"""The backend writer's thin adapter over ``core.fields``: attribute columns for pyogrio.

``core/fields.py`` names the columns and computes their values; this module only turns them into
the column arrays ``pyogrio.raw.write`` takes, and measures areas. The QGIS store is the other
adapter over the same schema, so a GeoPackage from the CLI and a layer from the plugin carry the
same columns with the same values.

Areas are ellipsoidal (geodesic) square metres on the CRS's own ellipsoid, what QGIS's
``QgsDistanceArea`` gives the plugin: pyproj computes them with GeographicLib, and a planar area
would be off by the projection's scale error (large in Web Mercator). No CRS: no area.

GeographicLib costs ~0.9 us per vertex, and a mask's contour has a vertex at every pixel corner
along its edge (thousands): measuring 20 objects cost more than writing the GeoPackage. A contour of
more than LOCAL_SCALE_VERTICES vertices is therefore measured, part by part, as its planar area
(exact, shapely) times the projection's area scale at the part's centroid, itself measured
geodesically on a small square. The first-order term of the scale's variation integrates to zero
about the centroid, so the error is of second order (tests/backend/test_areas.py against the exact
area: 4e-10 for a 600 m lake in UTM, 2e-7 for a 10 km object 200 km off the central meridian, 4e-8
in Web Mercator at 60 degrees N, 6e-8 in polar stereographic). Where the scale changes by more than
LOCAL_SCALE_SPREAD across a part's bounding box (continental objects), the exact path is taken.
Hand-written because no library offers a faster ellipsoidal area.
"""
from __future__ import annotations

import functools
import math
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import shapely

from ..core.fields import KIND_DATETIME, KIND_FLOAT, KIND_INT, KIND_STR, feature_attributes, fields_for
from ..core.protocol import Answer, AnswerObject

LOCAL_SCALE_VERTICES = 64  # above: planar area x the area scale at the centroid (module docstring)
LOCAL_SCALE_SPREAD = 1e-3  # the scale may differ by this fraction at the box's corners, else exact
DBF_TEXT_BYTES = 254  # dBASE limit for a character field
# GDAL's time-zone flag for UTC (pyogrio passes it through for date-time columns): written as "...Z".
_GDAL_TZ_UTC = 100

AreaFunction = Callable[[Any], Optional[float]]
Feature = Tuple[Any, Optional[int], AnswerObject]  # (shapely geometry, point number or None, object)


@functools.lru_cache(maxsize=16)
def _geodesy(crs_wkt: str, thread: int) -> Optional[Tuple[Any, Any]]:
    """(Geod, Transformer to the CRS's geographic CRS) of a CRS, made once per CRS and thread (a
    Transformer takes ~17 ms to make, more than writing a 20-object GeoPackage; one per thread since
    a pyproj object is best not shared between threads); None without an ellipsoid."""
    try:
        from pyproj import CRS, Transformer
        from pyproj.exceptions import CRSError

        crs = CRS.from_wkt(crs_wkt)
        geodetic = crs.geodetic_crs
    except (ImportError, CRSError, ValueError):
        return None
    if geodetic is None:  # an engineering / local CRS: no ellipsoid to measure on
        return None
    return geodetic.get_geod(), Transformer.from_crs(crs, geodetic, always_xy=True)


def area_function(crs_wkt: Optional[str]) -> AreaFunction:
    """geometry (shapely, in the CRS) -> ellipsoidal area in m², or None without a usable CRS."""
    geodesy = _geodesy(crs_wkt, threading.get_ident()) if crs_wkt else None
    if geodesy is None:
        return lambda geometry: None
    geod, to_lonlat = geodesy

    def ring_area(coords) -> float:
        xy = np.asarray(coords, dtype=np.float64)
        lon, lat = to_lonlat.transform(xy[:, 0], xy[:, 1])
        area, _ = geod.polygon_area_perimeter(lon, lat)
        return abs(float(area))

    def exact(polygon) -> float:
        return ring_area(polygon.exterior.coords) - sum(ring_area(hole.coords) for hole in polygon.interiors)

    def scale_at(x: float, y: float, half: float) -> float:
        """Ellipsoidal m² per planar CRS unit² at (x, y), from a square of side 2 * half."""
        square = ((x - half, y - half), (x + half, y - half), (x + half, y + half), (x - half, y + half))
        return ring_area(square) / (4.0 * half * half)

    def local_scale(geometry) -> Optional[float]:
        """The area scale at the centroid, or None where it varies too much for the estimate."""
        left, bottom, right, top = geometry.bounds
        half = max(right - left, top - bottom) / 64.0
        if not half > 0:
            return None
        centre = geometry.centroid
        at_centre = scale_at(centre.x, centre.y, half)
        corners = (scale_at(left, bottom, half), scale_at(right, top, half))
        if not at_centre > 0 or any(abs(c - at_centre) > LOCAL_SCALE_SPREAD * at_centre for c in corners):
            return None
        return at_centre

    def part_area(polygon) -> float:  # each part about its own centroid: parts may lie far apart
        scale = local_scale(polygon) if shapely.get_num_coordinates(polygon) > LOCAL_SCALE_VERTICES else None
        return polygon.area * scale if scale is not None else exact(polygon)

    def measure(geometry) -> Optional[float]:
        polygons = getattr(geometry, "geoms", [geometry])
        if any(polygon.geom_type != "Polygon" for polygon in polygons):
            return None
        total = sum(part_area(polygon) for polygon in polygons)
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
