"""Binary masks -> polygons with holes (on pixel corners); run lengths come from ``georeasoner_plugin.rle``.

Protocol convention: pixel (col, row) covers [col, col+1) x [row, row+1) and polygon vertices lie
on pixel corners, so a polygon rasterised back (pixel centre inside) gives the very same mask and
its area equals the number of mask pixels.

Why the tracing is not plain ``cv2.findContours(mask)``: OpenCV follows the *centres* of boundary
pixels, so a contour of a single pixel is one point and every polygon comes out half a pixel too
small all round. Instead the mask is traced at twice the resolution (every pixel a 2x2 block, plus a
one-pixel zero frame). Each traced sub-pixel sits in one quadrant of its source pixel; a sub-pixel
on the border always faces the background with that quadrant's outer sides, so the pixel corner of
its quadrant lies on the true boundary: sub-pixel coordinate ``u`` (in the framed, doubled image)
maps to corner ``u // 2``. Diagonal steps at concave corners map both ends to the same corner and
collapse; the chain of corners is then the exact pixel-edge boundary (collinear points dropped).

Why masks are sometimes split into layers first: OpenCV joins foreground pixels that touch only at
a corner (8-connectivity). Two such pixels would come back as one ring passing twice through the
shared corner, and a ring of objects closed only by corner touches as a shell with a hole that
cuts its interior in two; both are invalid polygons. Pixel regions are 4-connected (they share
edges), so when a mask has corner-only touches between different 4-connected components, those
components are traced apart from each other (``vectorize_touch``: packed side by side in a small
atlas, or coloured into layers). Touches inside one 4-connected component are harmless (a hole
meeting its shell at one point is valid), so ordinary masks take a single pass.

Large masks holding a few separate objects are traced object box by object box (``_clusters``),
so the doubled image covers the objects, not the space between them.
"""
from __future__ import annotations

import gc
import threading
from typing import Dict, List, Tuple

import cv2
import numpy as np
import shapely
from scipy.sparse.csgraph import connected_components
from shapely.geometry.polygon import orient

from ..core.protocol import Polygon
from ..rle import as_binary_mask, mask_to_rle, rle_to_mask  # re-exported: the one run-length codec lives there
from .vectorize_touch import _SMALL, split

__all__ = ["mask_to_polygons", "mask_to_rle", "rle_to_mask"]

# Up to this many contour points a mask takes the plain-Python ring cleaning (cheaper than the
# fixed cost of the numpy one; measured crossover on the bench's masks).
_FEW_POINTS = 600
# Masks up to this many pixels are vectorised with OpenCV single-threaded (_opencv_one_thread_enter).
_ONE_THREAD = 512 * 512
# Boxes of at least this many pixels are split into the boxes of their separate objects
# (_clusters) when there are 2 to _MAX_CLUSTERS of them and their boxes fill at most
# _CLUSTER_SHARE of it (one outer trace costs ~3 ms on a 4096² mask; speckle would cost more).
_CLUSTER_FROM = 1024 * 1024
_MAX_CLUSTERS = 64
_CLUSTER_SHARE = 0.5
_FOUR_NEIGHBOURS = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], np.uint8)  # dilation: max of the 4 neighbours


def mask_to_polygons(mask: np.ndarray, simplify_tolerance: float = 0.0, min_area: float = 0.0) -> List[Polygon]:
    """Polygons (one per 4-connected region) of the True pixels of a 2-D mask.

    Vertices lie on pixel corners, in pixels of the mask. Rings are closed (first vertex repeated
    last); exteriors have positive and holes negative shoelace area in (col, row) coordinates.
    Regions inside holes come back as polygons of their own. ``simplify_tolerance`` (pixels)
    applies topology-preserving Douglas-Peucker, which only drops vertices, so the rest stay on
    pixel corners. Holes, then parts, smaller than ``min_area`` pixels are dropped.
    """
    binary = as_binary_mask(mask)
    if simplify_tolerance < 0 or min_area < 0:
        raise ValueError("simplify_tolerance and min_area must not be negative")
    if binary.size == 0:
        return []
    # Python's cyclic garbage collector is paused while the output is built. A noisy mask becomes
    # tens of thousands of small lists, tuples and Polygons; every 700 of them triggered a
    # collection pass, and the older generations were rescanned again and again (the whole heap,
    # torch included, in the server): half the time on the speckle bench. Nothing built here forms
    # a reference cycle, so there is nothing for it to find; it resumes as it was (other threads:
    # only the call that paused it starts it again). Plain try/finally, not context managers:
    # their cost showed on the 64² bench mask.
    collecting = gc.isenabled()
    gc.disable()
    one_thread = binary.size <= _ONE_THREAD
    if one_thread:
        _opencv_one_thread_enter()
    try:
        return _polygons(binary, simplify_tolerance, min_area)
    finally:
        if one_thread:
            _opencv_one_thread_exit()
        if collecting:
            gc.enable()


# OpenCV's own thread pool is off while a small mask is vectorised. There a parallel OpenCV call
# (the labelling above all) hands out microseconds of work, and the pool's workers then
# spin-wait: measured as process CPU time, the vectorizer cost twice its wall time on the bench's
# 64² mask. The setting is process-wide, so concurrent callers share one counter: the first one
# in saves it, the last one out puts it back.
_threads_lock = threading.Lock()
_threads_users = 0
_threads_before = 0


def _opencv_one_thread_enter() -> None:
    global _threads_users, _threads_before
    with _threads_lock:
        if _threads_users == 0:
            _threads_before = cv2.getNumThreads()
            cv2.setNumThreads(1)
        _threads_users += 1


def _opencv_one_thread_exit() -> None:
    global _threads_users
    with _threads_lock:
        _threads_users -= 1
        if _threads_users == 0:
            cv2.setNumThreads(_threads_before)


def _polygons(binary: np.ndarray, simplify_tolerance: float, min_area: float) -> List[Polygon]:
    image = np.ascontiguousarray(binary).view(np.uint8)
    # SAM2 masks are full-image arrays around small objects: work on the foreground's bounding box
    # only, so the cost follows the object, not the image.
    x0, y0, box_width, box_height = _bounding_box(image)
    if not (box_width and box_height):
        return []
    found = []  # (contours, parent of each, corner shift: (x, y) or one row per contour)
    boxes = []  # (x, y, width, height) of parts written as their bounding box
    for left, top, width, height in _clusters(image, x0, y0, box_width, box_height):
        _trace(np.array(image[top:top + height, left:left + width], order="C"), left, top, found, boxes)
    if not found:
        polygons, tops, lefts = [], [], []
    elif sum(len(c) for contours, *_ in found for c in contours) <= _FEW_POINTS:
        polygons, tops, lefts = _few_rings_to_polygons(found, min_area)
    else:
        traced = [_clean_rings(*layer) for layer in found]
        polygons, tops, lefts = _Rings.concatenate(traced).to_polygons(min_area)
    if boxes:
        polygons, tops, lefts = _merge_boxes(polygons, tops, lefts, np.concatenate(boxes).astype(np.int64), min_area)
    if simplify_tolerance > 0 and polygons:
        polygons = _simplify(polygons, simplify_tolerance)
    return polygons


def _clusters(image: np.ndarray, x0: int, y0: int, width: int, height: int) -> List[Tuple[int, int, int, int]]:
    """Disjoint rectangles (x, y, width, height) that together hold every foreground pixel of the
    box given, no 8-connected part split between two: the box itself, or on a large box with a
    few separate objects, the merged bounding boxes of its outermost 8-connected parts.

    Tracing runs at twice the resolution over whatever it is given; 20 blobs in a 4096² mask fill
    a tenth of it, so tracing their boxes alone costs a tenth (one outer trace finds them)."""
    whole = [(x0, y0, width, height)]
    if width * height < _CLUSTER_FROM:
        return whole
    contours, _ = cv2.findContours(image[y0:y0 + height, x0:x0 + width], cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not 2 <= len(contours) <= _MAX_CLUSTERS:
        return whole
    rects = np.array([cv2.boundingRect(contour) for contour in contours], dtype=np.int64)
    lo, hi = rects[:, :2], rects[:, :2] + rects[:, 2:]
    while True:  # boxes that share a pixel merged into their common box, until none do
        overlap = np.all((lo[:, None] < hi[None]) & (lo[None] < hi[:, None]), axis=2)
        count, group = connected_components(overlap, directed=False)
        if count == lo.shape[0]:
            break
        order = np.argsort(group, kind="stable")
        starts = np.flatnonzero(np.concatenate(([True], np.diff(group[order]) != 0)))
        lo = np.minimum.reduceat(lo[order], starts)
        hi = np.maximum.reduceat(hi[order], starts)
    if np.prod(hi - lo, axis=1).sum() > _CLUSTER_SHARE * width * height:
        return whole
    return [(x0 + x, y0 + y, w, h) for (x, y), (w, h) in zip(lo.tolist(), (hi - lo).tolist())]


def _trace(image: np.ndarray, x0: int, y0: int, found: list, boxes: list) -> None:
    """Trace the (writable, C-ordered) crop whose pixel (0, 0) is mask pixel (x0, y0): contours
    appended to ``found``, parts written as boxes (mask coordinates) to ``boxes``."""
    # Pixels without a 4-neighbour (speckle, the steps of a one-pixel diagonal line) are parts of
    # their own whose polygon is their unit square: written down directly instead of traced.
    # Taking them out changes no other part (they share no edge with one) and removes corner
    # touches, so fewer layers need tracing.
    # (A small mask skips this: split labels it at once and writes every part that fills its box.)
    single = None if image.size <= _SMALL else (
        image > cv2.dilate(image, _FOUR_NEIGHBOURS, borderType=cv2.BORDER_CONSTANT, borderValue=0))
    if single is not None and cv2.countNonZero(single.view(np.uint8)):
        rows, cols = np.divmod(np.flatnonzero(single), single.shape[1])  # far faster than 2-D np.nonzero
        boxes.append(np.stack([cols + x0, rows + y0, np.ones_like(cols), np.ones_like(cols)], axis=1))
        image[single] = 0
    pieces, rectangles = split(image) if cv2.countNonZero(image) else ([], None)
    if rectangles is not None and len(rectangles):
        boxes.append(rectangles + np.array([x0, y0, 0, 0]))
    for piece in pieces:
        if piece.labels is not None or piece.slots is not None:  # atlas or strip: each contour
            contours, hierarchy = _find_contours(piece.image)  # shifted back to where its part lies
            if contours:
                first = (np.array([contour[0, 0] for contour in contours]) - 1) // 2  # sub-pixel -> pixel
                part = (piece.labels[first[:, 1], first[:, 0]] if piece.slots is None
                        else np.searchsorted(piece.slots, first[:, 0], side="right") - 1)
                found.append((contours, hierarchy[0][:, 3], piece.shift[part] + np.array([x0, y0])))
            continue
        # Tracing only the bounding box of the foreground keeps the doubled image small.
        left, top, width, height = cv2.boundingRect(piece.image)
        if width and height:
            contours, hierarchy = _find_contours(np.ascontiguousarray(piece.image[top:top + height, left:left + width]))
            x, y = piece.shift
            found.append((contours, hierarchy[0][:, 3], np.array([x0 + x + left, y0 + y + top])))


def _bounding_box(image: np.ndarray) -> Tuple[int, int, int, int]:
    """(x, y, width, height) of the non-zero pixels, like cv2.boundingRect but faster on a large,
    mostly empty mask: rows are tested eight bytes at a time, columns only within those rows."""
    height, width = image.shape
    if image.size <= 256 * 256:  # OpenCV's is cheaper on a small mask (fewer calls)
        return cv2.boundingRect(image)
    rows_any = image.view(np.uint64).any(axis=1) if width % 8 == 0 else image.any(axis=1)
    rows = np.flatnonzero(rows_any)
    if rows.size == 0:
        return 0, 0, 0, 0
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(image[top:bottom].any(axis=0))
    return int(cols[0]), top, int(cols[-1]) + 1 - int(cols[0]), bottom - top


def _merge_boxes(polygons: List[Polygon], tops, lefts, boxes: np.ndarray, min_area: float):
    """Parts that fill their bounding box (rows of x, y, width, height), written as that box and
    merged into the parts' order (top, then left of the bounding box; traced parts first on a
    tie); rings as the tracer writes them (exterior positive). Boxes under min_area are dropped."""
    boxes = boxes[boxes[:, 2] * boxes[:, 3] >= min_area]
    boxes = boxes[np.lexsort((boxes[:, 0], boxes[:, 1]))]
    # Corners of every box in two numpy passes, then one Polygon per four corner tuples (the
    # closing vertex is the first tuple again): speckle makes tens of thousands of these.
    x, y, w, h = boxes.astype(float).T
    corners = iter(list(zip(np.stack([x + w, x + w, x, x], axis=1).ravel().tolist(),
                            np.stack([y, y + h, y + h, y], axis=1).ravel().tolist())))
    squares = [Polygon([a, b, c, d, a], []) for a, b, c, d in zip(corners, corners, corners, corners)]
    top = np.concatenate([np.asarray(tops, dtype=np.int64), boxes[:, 1]])
    left = np.concatenate([np.asarray(lefts, dtype=np.int64), boxes[:, 0]])
    merged = polygons + squares
    order = np.lexsort((left, top))
    return [merged[i] for i in order.tolist()], top[order], left[order]


class _Rings:
    """Every traced ring of a mask in flat arrays, so cleaning, orienting and filtering run as a
    few numpy passes rather than one per ring (noisy masks hold tens of thousands of specks)."""

    def __init__(self, points: np.ndarray, lengths: np.ndarray, parent: np.ndarray):
        self.points = points  # (N, 2) int64 pixel corners, rings one after another, not closed
        self.lengths = lengths  # points per ring
        self.parent = parent  # -1 for an exterior, else the index of the exterior a hole is in

    @classmethod
    def concatenate(cls, parts: List["_Rings"]) -> "_Rings":
        if len(parts) == 1:
            return parts[0]
        offsets = np.cumsum([0] + [p.lengths.size for p in parts[:-1]])
        return cls(np.concatenate([p.points for p in parts]),
                   np.concatenate([p.lengths for p in parts]),
                   np.concatenate([np.where(p.parent >= 0, p.parent + o, -1) for p, o in zip(parts, offsets)]))

    def starts(self) -> np.ndarray:
        return np.cumsum(self.lengths) - self.lengths

    def keep_points(self, keep: np.ndarray) -> None:
        ring = np.repeat(np.arange(self.lengths.size), self.lengths)
        self.points = self.points[keep]
        self.lengths = np.bincount(ring[keep], minlength=self.lengths.size)

    def doubled_signed_areas(self) -> np.ndarray:
        _, nxt = _neighbour_indices(self.lengths)
        p, q = self.points, self.points[nxt]
        return np.add.reduceat(p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1], self.starts())

    def reverse(self, which: np.ndarray) -> None:
        starts = self.starts()
        ring = np.repeat(np.arange(self.lengths.size), self.lengths)
        index = np.arange(self.points.shape[0])
        order = index.copy()
        chosen = which[ring]
        r = ring[chosen]
        order[chosen] = starts[r] + self.lengths[r] - 1 - (index[chosen] - starts[r])
        self.points = self.points[order]

    def to_polygons(self, min_area: float) -> Tuple[List[Polygon], np.ndarray, np.ndarray]:
        """(polygons in output order, top and left of each one's bounding box)."""
        is_hole = self.parent >= 0
        areas = np.abs(self.doubled_signed_areas()) / 2.0
        kept_hole = is_hole & (areas >= min_area)
        hole_area_of_part = np.bincount(self.parent[kept_hole], weights=areas[kept_hole],
                                        minlength=self.lengths.size)
        kept_part = ~is_hole & (areas - hole_area_of_part >= min_area)
        kept_hole &= kept_part[np.where(is_hole, self.parent, 0)]

        # Parts ordered by the top-left corner of their bounding box (deterministic output);
        # holes grouped by the part they belong to.
        starts = self.starts()
        top = np.minimum.reduceat(self.points[:, 1], starts)
        left = np.minimum.reduceat(self.points[:, 0], starts)
        parts = np.flatnonzero(kept_part)
        parts = parts[np.lexsort((left[parts], top[parts]))]
        holes = np.flatnonzero(kept_hole)
        holes = holes[np.argsort(self.parent[holes], kind="stable")]
        holes_by_part: Dict[int, List[int]] = {}
        for hole, owner in zip(holes.tolist(), self.parent[holes].tolist()):
            holes_by_part.setdefault(owner, []).append(hole)

        # Every ring closed (first corner repeated) in one gather, converted to Python floats in
        # one pass; each ring is then a plain list slice (no per-ring numpy call or append).
        closed_lengths = self.lengths + 1
        closed_starts = np.cumsum(closed_lengths) - closed_lengths
        ring = np.repeat(np.arange(self.lengths.size), closed_lengths)
        position = np.arange(int(closed_lengths.sum())) - closed_starts[ring]
        source = starts[ring] + np.where(position == self.lengths[ring], 0, position)
        gathered = self.points[source].astype(float)
        corners = list(zip(gathered[:, 0].tolist(), gathered[:, 1].tolist()))
        bounds = list(zip(closed_starts.tolist(), (closed_starts + closed_lengths).tolist()))
        polygons = [Polygon(corners[slice(*bounds[i])], [corners[slice(*bounds[h])] for h in holes_by_part.get(i, ())])
                    for i in parts.tolist()]
        return polygons, top[parts], left[parts]


def _find_contours(layer: np.ndarray):
    """OpenCV's contours (two-level hierarchy) of a layer traced at twice its resolution, framed."""
    height, width = layer.shape
    doubled = np.zeros((2 * height + 2, 2 * width + 2), dtype=np.uint8)
    # Resized straight into the framed buffer (OpenCV writes into the numpy view): no second copy.
    cv2.resize(layer, (2 * width, 2 * height), dst=doubled[1:-1, 1:-1], interpolation=cv2.INTER_NEAREST)
    return cv2.findContours(doubled, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)


def _corners(contours, lengths: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """(N, 2) int64 pixel corners of every contour point, shifted (one (x, y), or one per contour).

    The one-sub-pixel frame puts sub-pixel u in source pixel (u - 1) // 2, and the corner of its
    quadrant is u // 2 (see the module docstring)."""
    points = np.concatenate(contours).reshape(-1, 2).astype(np.int64) // 2
    return points + (np.repeat(shift, lengths, axis=0) if shift.ndim == 2 else shift)


def _clean_rings(contours, parent: np.ndarray, shift: np.ndarray) -> "_Rings":
    lengths = np.fromiter(map(len, contours), dtype=np.int64, count=len(contours))
    points = _corners(contours, lengths, shift)
    rings = _Rings(points, lengths, parent.astype(np.int64))

    prev, _ = _neighbour_indices(rings.lengths)
    rings.keep_points(np.any(rings.points != rings.points[prev], axis=1))  # collapsed diagonal steps
    prev, nxt = _neighbour_indices(rings.lengths)
    before, after = rings.points - rings.points[prev], rings.points[nxt] - rings.points
    rings.keep_points(before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0] != 0)  # mid-edge points
    rings.reverse((rings.doubled_signed_areas() > 0) == (rings.parent >= 0))  # exteriors positive
    return rings


def _few_rings_to_polygons(found, min_area: float):
    """_clean_rings + _Rings.to_polygons in plain Python, for masks with few contour points.

    Hand-written twice on purpose: the numpy path costs some eighty array calls per mask whatever
    its size, which dominated small masks; this one costs a few microseconds per point. Same
    rules, same output (the tests compare both paths on the same masks)."""
    rings: List[list] = []
    parents: List[int] = []
    areas: List[float] = []
    for contours, parent, shift in found:
        offset = len(rings)
        lengths = [len(contour) for contour in contours]
        flat = list(map(tuple, _corners(contours, np.array(lengths), shift).astype(float).tolist()))
        start = 0
        for length, owner in zip(lengths, parent.tolist()):
            traced = flat[start:start + length]
            start += length
            before = traced[-1]
            collapsed = []  # collapsed diagonal steps dropped
            for point in traced:
                if point != before:
                    collapsed.append(point)
                before = point
            # Mid-edge points dropped and the doubled signed area summed in one plain loop (a
            # third of the time of list comprehensions over shifted copies).
            ring, doubled = [], 0.0
            if len(collapsed) > 2:
                ax, ay = collapsed[-1]
                for point, (bx, by) in zip(collapsed, collapsed[1:] + collapsed[:1]):
                    px, py = point
                    if (px - ax) * (by - py) != (py - ay) * (bx - px):
                        ring.append(point)
                    doubled += px * by - bx * py
                    ax, ay = px, py
            if (doubled > 0) == (owner >= 0):  # exteriors positive, holes negative
                ring.reverse()
            rings.append(ring)
            parents.append(owner + offset if owner >= 0 else -1)
            areas.append(abs(doubled) / 2.0)
    hole_area: Dict[int, float] = {}
    for index, owner in enumerate(parents):
        if owner >= 0 and areas[index] >= min_area:
            hole_area[owner] = hole_area.get(owner, 0.0) + areas[index]
    kept = {i for i, owner in enumerate(parents) if owner < 0 and areas[i] - hole_area.get(i, 0.0) >= min_area}
    holes_by_part: Dict[int, List[int]] = {}
    for index, owner in enumerate(parents):
        if owner >= 0 and owner in kept and areas[index] >= min_area:
            holes_by_part.setdefault(owner, []).append(index)
    tops, lefts = {}, {}
    for i in kept:
        xs, ys = zip(*rings[i])
        tops[i], lefts[i] = min(ys), min(xs)
    order = sorted(kept, key=lambda i: (tops[i], lefts[i], i))

    def closed(index: int) -> list:
        return rings[index] + rings[index][:1]

    polygons = [Polygon(closed(i), [closed(h) for h in holes_by_part.get(i, ())]) for i in order]
    return polygons, np.array([tops[i] for i in order], np.int64), np.array([lefts[i] for i in order], np.int64)


def _neighbour_indices(lengths: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Index of the previous and of the next point of every point, wrapping within its ring."""
    total = int(lengths.sum())
    starts = np.cumsum(lengths) - lengths
    ends = starts + lengths - 1
    index = np.arange(total)
    prev, nxt = index - 1, index + 1
    prev[starts] = ends
    nxt[ends] = starts
    return prev, nxt


def _simplify(polygons: List[Polygon], tolerance: float) -> List[Polygon]:
    shapes = np.array([shapely.Polygon(p.exterior, p.holes) for p in polygons], dtype=object)
    simplified = shapely.simplify(shapes, tolerance, preserve_topology=True)
    out = []
    for shape in simplified:
        if shape.is_empty:
            continue
        shape = orient(shape, 1.0)  # exterior positive, as traced
        out.append(Polygon([tuple(p) for p in shape.exterior.coords],
                           [[tuple(p) for p in hole.coords] for hole in shape.interiors]))
    return out
