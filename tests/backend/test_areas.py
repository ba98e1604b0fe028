"""Ellipsoidal areas of the backend's writer (backend/attributes.py) against GeographicLib's exact
area of the same polygon, in projected and geographic CRSs: contours with many vertices take the
planar-area-times-local-scale path, and must agree with the exact area."""
import math

import numpy as np
import pytest

pyproj = pytest.importorskip("pyproj")
shapely = pytest.importorskip("shapely")
from shapely.geometry import MultiPolygon, Polygon  # noqa: E402

from georeasoner_plugin.backend.attributes import LOCAL_SCALE_VERTICES, area_function  # noqa: E402


def exact_area(geometry, crs) -> float:
    source = pyproj.CRS.from_user_input(crs)
    geodetic = source.geodetic_crs
    to_lonlat = pyproj.Transformer.from_crs(source, geodetic, always_xy=True)
    geod = geodetic.get_geod()
    total = 0.0
    for polygon in getattr(geometry, "geoms", [geometry]):
        for ring, sign in [(polygon.exterior, 1)] + [(hole, -1) for hole in polygon.interiors]:
            xy = np.asarray(ring.coords)
            lon, lat = to_lonlat.transform(xy[:, 0], xy[:, 1])
            total += sign * abs(geod.polygon_area_perimeter(lon, lat)[0])
    return total


def staircase_blob(cx, cy, radius, step, hole=True):
    """A pixel-staircase outline (a vertex at every corner, like a mask's contour), with a hole."""
    def ring(r):
        angles = np.linspace(0, 2 * np.pi, 400, endpoint=False)
        xs = np.round((cx + r * np.cos(angles)) / step) * step
        ys = np.round((cy + r * np.sin(angles)) / step) * step
        points = []
        for x, y in zip(xs, ys):
            if points and points[-1][0] != x and points[-1][1] != y:
                points.append((x, points[-1][1]))  # the staircase's corner
            points.append((x, y))
        return points
    return Polygon(ring(radius), [ring(radius * 0.4)] if hole else [])


@pytest.mark.parametrize("crs,cx,cy,radius,step,rel", [
    ("EPSG:32614", 485_000.0, 5_209_000.0, 300.0, 0.6, 1e-7),       # NAIP-like, UTM 14N: a 600 m lake
    ("EPSG:32614", 700_000.0, 5_209_000.0, 5_000.0, 10.0, 1e-6),    # 10 km, far from the central meridian
    ("EPSG:3857", 1_113_000.0, 8_400_000.0, 2_000.0, 2.0, 1e-5),   # Web Mercator at ~60 degrees N
    ("EPSG:4326", 10.0, 60.0, 0.02, 0.00005, 1e-5),                # degrees
    ("EPSG:3413", 0.0, -1_500_000.0, 3_000.0, 5.0, 1e-5),          # polar stereographic north
])
def test_many_vertex_contours_agree_with_the_exact_ellipsoidal_area(crs, cx, cy, radius, step, rel):
    blob = staircase_blob(cx, cy, radius, step)
    assert shapely.get_num_coordinates(blob) > LOCAL_SCALE_VERTICES  # the fast path is the one tested
    measured, exact = area_function(pyproj.CRS.from_user_input(crs).to_wkt())(blob), exact_area(blob, crs)
    assert measured == pytest.approx(exact, rel=rel)
    assert measured != exact  # the local-scale estimate ran, not the vertex-by-vertex fallback
    two = MultiPolygon([blob, staircase_blob(cx + 3 * radius, cy, radius / 2, step, hole=False)])
    assert area_function(pyproj.CRS.from_user_input(crs).to_wkt())(two) == pytest.approx(exact_area(two, crs), rel=rel)


def test_a_continental_object_and_a_small_one_are_measured_exactly():
    crs = "EPSG:3857"
    wkt = pyproj.CRS.from_user_input(crs).to_wkt()
    huge = staircase_blob(0.0, 6_000_000.0, 1_500_000.0, 10_000.0)  # the scale varies by far more than 0.1 %
    assert area_function(wkt)(huge) == pytest.approx(exact_area(huge, crs), rel=1e-12)
    box = Polygon([(0, 6e6), (100, 6e6), (100, 6e6 + 100), (0, 6e6 + 100)])
    assert area_function(wkt)(box) == pytest.approx(exact_area(box, crs), rel=1e-12)
    assert not math.isnan(area_function(wkt)(box))
