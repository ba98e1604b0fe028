"""Target mask -> objects: GRASP's one box and two points per mask (Section 4.1, Fig. 5), and one
object per 8-connected part for the multi-object methods. Coordinates are image pixels; points are
pixel centres (col + 0.5, row + 0.5). training.prepare's docstring states the rules.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np
from scipy import ndimage

from georeasoner_plugin.backend.vectorize import mask_to_polygons

DEFAULT_MIN_AREA = 16  # pixels; smaller specks in the labels are annotation noise, not objects
# Profiles whose paper trains one box + two points per target mask (GRASP Section 4.1); the others
# train one object per connected part.
WHOLE_MASK_PROFILES = ("grasp",)

# Pillow refuses images above ~179 megapixels as a decompression-bomb guard; EarthReason's largest
# (7,617 px a side, ~58 megapixels) is far below, so the guard stays on.

Point = Tuple[float, float]
Box = Tuple[float, float, float, float]



@dataclass
class MaskObject:
    box: Box  # image pixels
    points: List[Point]  # image pixels, GRASP order
    area: int
    inscribed_radius: float
    polygons: List[Dict[str, Any]]


def uses_whole_mask_object(profile_name: str) -> bool:
    return profile_name in WHOLE_MASK_PROFILES


def point_generator(seed: int, split: str, image_id: str) -> np.random.Generator:
    """The seeded generator p2 is drawn with; depends only on (seed, split, image id)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(f"{split}:{image_id}".encode("utf-8"))])


# --------------------------------------------------------------------------- mask -> objects

def grasp_points(component: np.ndarray, rng: Optional[np.random.Generator] = None) -> Tuple[Point, Point, float]:
    """(p1, p2, inscribed radius) of a mask (GRASP Section 4.1), in its array's pixel centres.

    ``rng`` draws p2 from the outer ring; None uses a generator seeded with 0.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    component = np.asarray(component, dtype=bool)
    depth = ndimage.distance_transform_edt(np.pad(component, 1))[1:-1, 1:-1]
    rows, cols = np.nonzero(component)
    if rows.size == 0:
        raise ValueError("the component is empty")
    depths = depth[rows, cols]

    radius = float(depths.max())
    tied = np.flatnonzero(depths == radius)
    centroid_row, centroid_col = rows[tied].mean(), cols[tied].mean()
    to_centroid = (rows[tied] - centroid_row) ** 2 + (cols[tied] - centroid_col) ** 2
    first = tied[np.lexsort((cols[tied], rows[tied], to_centroid))[0]]
    first_row, first_col = rows[first], cols[first]

    from_first = np.hypot(rows - first_row, cols - first_col)
    beyond = np.flatnonzero(from_first > radius)
    if beyond.size:
        second = beyond[int(rng.integers(beyond.size))]
    else:  # lexsort: the last key sorts first; negated so that the farthest comes first.
        edge = np.flatnonzero(depths <= 1.0)  # 4-neighbour of the outside: the boundary pixels
        second = edge[np.lexsort((cols[edge], rows[edge], -from_first[edge]))[0]]
    return ((float(first_col) + 0.5, float(first_row) + 0.5),
            (float(cols[second]) + 0.5, float(rows[second]) + 0.5), radius)


def whole_mask_object(mask: np.ndarray, rng: Optional[np.random.Generator] = None) -> Optional[MaskObject]:
    """GRASP's one object for the whole target mask (Section 4.1), or None for an empty mask.

    The box spans the extreme foreground pixels of the whole mask; p1 and p2 are found over all of
    its pixels, whatever the parts. Contours are left to the per-part objects.
    """
    binary = np.asarray(mask) != 0
    rows, cols = np.nonzero(binary)
    if rows.size == 0:
        return None
    top, bottom, left, right = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    (c1, r1), (c2, r2), radius = grasp_points(binary[top:bottom, left:right], rng)
    return MaskObject(box=(float(left), float(top), float(right), float(bottom)),
                      points=[(c1 + left, r1 + top), (c2 + left, r2 + top)],
                      area=int(rows.size), inscribed_radius=radius, polygons=[])


def mask_objects(mask: np.ndarray, min_area: int = DEFAULT_MIN_AREA,
                 rng: Optional[np.random.Generator] = None) -> Tuple[List[MaskObject], int]:
    """(one object per 8-connected part, number of parts dropped for being smaller than min_area)."""
    rng = np.random.default_rng(0) if rng is None else rng
    binary = (np.asarray(mask) != 0).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8, ltype=cv2.CV_32S)
    objects: List[MaskObject] = []
    dropped = 0
    for label in range(1, count):
        left, top, width, height, area = (int(v) for v in stats[label])
        if area < min_area:
            dropped += 1
            continue
        component = labels[top:top + height, left:left + width] == label
        (c1, r1), (c2, r2), radius = grasp_points(component, rng)
        polygons = []
        for polygon in mask_to_polygons(component):
            polygons.append({
                "exterior": _shift_ring(polygon.exterior, left, top),
                "holes": [_shift_ring(h, left, top) for h in polygon.holes],
            })
        objects.append(MaskObject(
            box=(float(left), float(top), float(left + width), float(top + height)),
            points=[(c1 + left, r1 + top), (c2 + left, r2 + top)],
            area=area, inscribed_radius=radius, polygons=polygons))
    # Largest first: the order a model is taught to list objects in, and stable across runs.
    objects.sort(key=lambda o: (-o.area, o.box[1], o.box[0]))
    return objects, dropped


def _shift_ring(ring, left: int, top: int) -> List[List[int]]:
    # Vertices are pixel corners, hence integers: written as such to keep the dataset small.
    return [[int(round(x)) + left, int(round(y)) + top] for x, y in ring]


