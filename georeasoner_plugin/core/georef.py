"""Pixel <-> map coordinates through one affine transform.

GDAL's geotransform convention, rotation/shear terms included:
    x = gt[0] + col * gt[1] + row * gt[2]
    y = gt[3] + col * gt[4] + row * gt[5]
(col, row) are continuous pixel coordinates with (0, 0) at the top-left *corner* of the image.
QGIS's canvas (QgsMapToPixel, possibly rotated) is expressed as the same six numbers by the plugin.
Pure Python so the plugin, the backend CLI and training use the same arithmetic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, List, Sequence, Tuple

from .protocol import Point, Polygon


class GeoreferenceError(ValueError):
    """A transform that cannot georeference (singular, or not finite)."""


@dataclass(frozen=True)
class GeoTransform:
    origin_x: float
    pixel_width: float
    row_rotation: float
    origin_y: float
    column_rotation: float
    pixel_height: float

    @classmethod
    def from_gdal(cls, gt: Sequence[float]) -> "GeoTransform":
        if len(gt) != 6:
            raise GeoreferenceError("a GDAL geotransform has six numbers")
        values = [float(v) for v in gt]
        if not all(math.isfinite(v) for v in values):
            raise GeoreferenceError(f"geotransform has non-finite numbers: {values}")
        transform = cls(*values)
        if transform.determinant() == 0:
            raise GeoreferenceError(f"geotransform {values} is singular (zero pixel size?)")
        return transform

    @classmethod
    def identity(cls) -> "GeoTransform":
        """Pixel space as 'map' space: x = col, y = row (used when an image has no CRS)."""
        return cls(0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @classmethod
    def from_corner_and_rotation(cls, ul_x: float, ul_y: float, pixel_size_x: float, pixel_size_y: float,
                                 rotation_degrees: float) -> "GeoTransform":
        """North-up pixels of the given size, turned clockwise by rotation_degrees about the
        top-left corner (how a rotated QGIS canvas or a rotated GeoTIFF is laid out)."""
        theta = math.radians(rotation_degrees)
        c, s = math.cos(theta), math.sin(theta)
        # Each pixel axis turned clockwise: columns run along (cos, -sin), rows along (-sin, -cos).
        return cls.from_gdal((ul_x, pixel_size_x * c, -pixel_size_y * s,
                              ul_y, -pixel_size_x * s, -pixel_size_y * c))

    def to_gdal(self) -> Tuple[float, float, float, float, float, float]:
        return (self.origin_x, self.pixel_width, self.row_rotation,
                self.origin_y, self.column_rotation, self.pixel_height)

    def determinant(self) -> float:
        return self.pixel_width * self.pixel_height - self.row_rotation * self.column_rotation

    def is_rotated(self) -> bool:
        return self.row_rotation != 0.0 or self.column_rotation != 0.0

    def pixel_to_map(self, col: float, row: float) -> Point:
        return (self.origin_x + col * self.pixel_width + row * self.row_rotation,
                self.origin_y + col * self.column_rotation + row * self.pixel_height)

    def map_to_pixel(self, x: float, y: float) -> Point:
        det = self.determinant()
        dx, dy = x - self.origin_x, y - self.origin_y
        return ((dx * self.pixel_height - dy * self.row_rotation) / det,
                (dy * self.pixel_width - dx * self.column_rotation) / det)

    def ring_to_map(self, ring: Iterable[Sequence[float]]) -> List[Point]:
        return [self.pixel_to_map(p[0], p[1]) for p in ring]

    def polygon_to_map(self, polygon: Polygon) -> Polygon:
        # An affine map with negative determinant (the usual north-up case) mirrors the plane and
        # flips ring orientation; callers that care (shapefile writers) re-orient on write.
        return Polygon(self.ring_to_map(polygon.exterior), [self.ring_to_map(h) for h in polygon.holes])

    def box_to_map_ring(self, box: Sequence[float]) -> List[Point]:
        """A pixel box as a closed map-space ring (a rotated transform gives a rotated rectangle)."""
        x1, y1, x2, y2 = box
        corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)]
        return [self.pixel_to_map(c, r) for c, r in corners]

    def pixel_area(self) -> float:
        return abs(self.determinant())

    def scaled(self, factor_x: float, factor_y: float) -> "GeoTransform":
        """Transform of the same area sampled with pixels factor times larger (decimated reads)."""
        return GeoTransform(self.origin_x, self.pixel_width * factor_x, self.row_rotation * factor_y,
                            self.origin_y, self.column_rotation * factor_x, self.pixel_height * factor_y)
