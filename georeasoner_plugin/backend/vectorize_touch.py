"""Masks whose different parts touch only at a corner, split so that OpenCV's 8-connected tracing
gives the 4-connected parts rasterio gives (the why is in ``vectorize``'s module docstring).

``split`` returns the pieces to trace. Most masks are one piece: no corner touch, or only touches
within one part. Otherwise the mask is labelled (4-connected) and

- parts that fill their bounding box (the runs of a one-pixel line, blocky specks) are written as
  that box;
- the other parts are copied, each alone, into a small *atlas* (shelves of bounding boxes one
  pixel apart, so nothing touches there), traced once, and every ring shifted back to its part.
  Tracing the atlas costs what the parts cost, not what the (often sparse, large) mask costs;
- where the atlas would be larger than the mask (parts nested in each other's boxes), the parts
  are coloured so that no two touching ones share a colour, and each colour is a full-size piece.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate
from typing import Dict, List, Optional, Set, Tuple

import cv2
import numpy as np

# Up to this many corner touches are first checked in a small window each (_joined_near), within
# _NEAR pixels, before labelling the whole mask.
_LOCAL_CHECKS = 64
_NEAR = 16


# Up to this many parts to trace, each is traced in its own bounding box (no atlas to build).
_FEW_PARTS = 8
# Up to this many pixels a mask is labelled at once (see split): measured crossover on the bench.
_SMALL = 128 * 128


@dataclass
class Piece:
    """0/1 uint8 image to trace. For an atlas, ``labels`` holds each pixel's part and ``shift`` the
    (x, y) to add to the corners of each part's rings; for a strip, ``slots`` holds the first
    column of each part and ``shift`` one row per part; otherwise ``shift`` is one (x, y) for all."""

    image: np.ndarray
    labels: Optional[np.ndarray] = None
    shift: Tuple[int, int] | np.ndarray = (0, 0)
    slots: Optional[np.ndarray] = None


def split(image: np.ndarray) -> Tuple[List[Piece], Optional[np.ndarray]]:
    """(pieces whose union is every pixel of ``image`` but those of the boxes; the boxes as rows of
    x, y, width, height, or None)."""
    if image.size <= _SMALL:
        # A small mask is labelled straight away, touches or not: the labelling with statistics
        # costs about what finding the corner touches costs, and then every part that fills its
        # box (single pixels included) is written as the box and the rest are traced apart.
        count, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(image, 4, cv2.CV_32S,
                                                                                cv2.CCL_BOLELLI)
        return _apart(image, count, labels, stats, None, None, True)
    binary = image.view(bool)
    nw, ne, sw, se = binary[:-1, :-1], binary[:-1, 1:], binary[1:, :-1], binary[1:, 1:]
    touch = (nw ^ ne) & (nw == se) & (ne == sw)  # 2x2 windows with foreground on one diagonal only
    where = np.flatnonzero(touch)  # far faster than np.nonzero on a 2-D view
    if where.size == 0:
        return [Piece(image)], None
    r, c = np.divmod(where, touch.shape[1])
    falling = nw[r, c]  # foreground at NW and SE, else at NE and SW
    if where.size <= _LOCAL_CHECKS and _joined_near(image, r, c, falling):
        return [Piece(image)], None
    # Bolelli's Spaghetti (4-connected variant): the same labels as SAUF, ~2x faster on large masks.
    count, labels = cv2.connectedComponentsWithAlgorithm(image, 4, cv2.CV_32S, cv2.CCL_BOLELLI)
    # The two foreground pixels of each touch: (r, c) and (r + 1, c + 1), or (r, c + 1) and (r + 1, c).
    first = labels[r, c + ~falling]
    second = labels[r + 1, c + falling]
    different = first != second
    if not different.any():
        return [Piece(image)], None
    return _apart(image, count, labels, None, first, second, False)


def _apart(image: np.ndarray, count: int, labels: np.ndarray, stats: Optional[np.ndarray],
           first: Optional[np.ndarray], second: Optional[np.ndarray], small: bool):
    """split's pieces and boxes once the mask is labelled (``first``, ``second``: the parts
    touching at each corner touch, needed only for layers; None on a small mask: any two parts
    may touch)."""
    if stats is None:
        stats, label, rows, cols = _label_boxes(image, labels, count)
    # Parts that fill their bounding box (the runs of a one-pixel line, blocky specks) are written
    # as that box: the statistics are at hand, and every part not traced makes the rest cheaper.
    is_rectangle = stats[:, 4] == stats[:, 2] * stats[:, 3]
    is_rectangle[0] = False  # background
    boxes = stats[is_rectangle, :4] if is_rectangle.any() else None
    traced = ~is_rectangle
    traced[0] = False
    ids = np.flatnonzero(traced)
    if ids.size == 0:
        return [], boxes
    if ids.size <= _FEW_PARTS:
        return [_strip(labels, stats, ids)], boxes
    if small:
        _, label, rows, cols = _label_boxes(image, labels, count)
    atlas = _atlas(image.shape, stats, traced, label, rows, cols)
    if atlas is not None:
        return [atlas], boxes
    if first is None:  # find the corner touches after all (an atlas larger than a small mask)
        binary = image.view(bool)
        nw, ne, sw, se = binary[:-1, :-1], binary[:-1, 1:], binary[1:, :-1], binary[1:, 1:]
        r, c = np.divmod(np.flatnonzero((nw ^ ne) & (nw == se) & (ne == sw)), image.shape[1] - 1)
        falling = nw[r, c]
        first, second = labels[r, c + ~falling], labels[r + 1, c + falling]
    different = (first != second) & ~(is_rectangle[first] | is_rectangle[second])
    return _colour_layers(labels, count, first[different].astype(np.int64), second[different].astype(np.int64),
                          is_rectangle), boxes


def _joined_near(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, falling: np.ndarray) -> bool:
    """Whether the two foreground pixels of every corner touch (2x2 windows at ``rows``, ``cols``)
    are 4-connected within a small window around it (then they are in the whole mask too).

    A few touches inside one object (holes meeting at a corner) would otherwise cost a labelling
    of the whole mask, some 10 ms on a 2048² one; each window costs microseconds."""
    height, width = image.shape
    for r, c, f in zip(rows.tolist(), cols.tolist(), falling.tolist()):
        top, left = max(r - _NEAR, 0), max(c - _NEAR, 0)
        window = np.ascontiguousarray(image[top:min(r + _NEAR + 2, height), left:min(c + _NEAR + 2, width)])
        _, labels = cv2.connectedComponents(window, connectivity=4)
        r, c = r - top, c - left
        a, b = (labels[r, c], labels[r + 1, c + 1]) if f else (labels[r, c + 1], labels[r + 1, c])
        if a != b:
            return False
    return True


def _label_boxes(image: np.ndarray, labels: np.ndarray, count: int):
    """(rows of x, y, width, height, area per label, row 0 (background) zero, like
    cv2.connectedComponentsWithStats's; the label, row and column of every foreground pixel,
    grouped by label). From the foreground pixels only: OpenCV's statistics pass visits every
    pixel and cost seven times the labelling itself on a sparse 2048² mask."""
    pixels = np.flatnonzero(image)
    label = labels.ravel()[pixels]
    order = np.argsort(label, kind="stable")  # raster order kept within a label: first/last are top/bottom
    label, pixels = label[order], pixels[order]
    rows, cols = np.divmod(pixels, image.shape[1])
    starts = np.flatnonzero(np.concatenate(([True], label[1:] != label[:-1])))
    ends = np.append(starts[1:], label.size)
    stats = np.zeros((count, 5), dtype=np.int64)
    left = np.minimum.reduceat(cols, starts)
    stats[label[starts]] = np.stack([left, rows[starts], np.maximum.reduceat(cols, starts) + 1 - left,
                                     rows[ends - 1] + 1 - rows[starts], ends - starts], axis=1)
    return stats, label, rows, cols


def _strip(labels: np.ndarray, stats: np.ndarray, ids: np.ndarray) -> Piece:
    """A few parts cut out of the labels side by side, one background column apart: an atlas
    without the packing and the per-pixel scatter (fixed costs that dominate small masks). A
    contour's part is found from the column it starts in (``slots``)."""
    boxes = stats[ids, :4].tolist()
    slots = list(accumulate([w + 1 for _, _, w, _ in boxes], initial=0))
    image = np.zeros((max(h for *_, h in boxes), slots[-1] - 1), np.uint8)
    for part, (x, y, w, h), slot in zip(ids.tolist(), boxes, slots):
        image[:h, slot:slot + w] = labels[y:y + h, x:x + w] == part
    shift = [(x - slot, y) for (x, y, _, _), slot in zip(boxes, slots)]
    return Piece(image, shift=np.array(shift, dtype=np.int64), slots=np.array(slots[:-1]))


def _atlas(shape, stats: np.ndarray, chosen: np.ndarray, label: np.ndarray, rows: np.ndarray,
           cols: np.ndarray) -> Optional[Piece]:
    """The chosen parts packed into shelves (tallest first, one background pixel between any two),
    or None when that would take more pixels than the mask itself."""
    ids = np.flatnonzero(chosen)
    widths, heights = stats[ids, 2], stats[ids, 3]
    limit = max(int(widths.max()), shape[1])
    order = np.argsort(-heights, kind="stable")
    slot_x = np.zeros(stats.shape[0], dtype=np.int64)
    slot_y = np.zeros(stats.shape[0], dtype=np.int64)
    x = y = shelf = 0
    # A loop over parts, not pixels (hand-written shelf packing: a few hundred parts at most here).
    for part, width, height in zip(ids[order].tolist(), widths[order].tolist(), heights[order].tolist()):
        if x + width > limit:
            x, y, shelf = 0, y + shelf + 1, 0
        slot_x[part], slot_y[part] = x, y
        x += width + 1
        shelf = max(shelf, height)
    atlas_height = y + shelf
    if atlas_height * limit > shape[0] * shape[1]:
        return None
    keep = chosen[label]
    part = label[keep]
    atlas_rows = slot_y[part] + rows[keep] - stats[part, 1]
    atlas_cols = slot_x[part] + cols[keep] - stats[part, 0]
    atlas = np.zeros((atlas_height, limit), np.uint8)
    atlas[atlas_rows, atlas_cols] = 1
    parts = np.zeros((atlas_height, limit), np.int32)
    parts[atlas_rows, atlas_cols] = part
    shift = np.stack([stats[:, 0] - slot_x, stats[:, 1] - slot_y], axis=1)
    return Piece(atlas, parts, shift)


def _colour_layers(labels: np.ndarray, count: int, first: np.ndarray, second: np.ndarray,
                   is_rectangle: np.ndarray) -> List[Piece]:
    """Full-size pieces, one per colour of a greedy colouring of the touch graph (parts that touch
    at a corner get different colours; untouched parts all colour 0; boxes none)."""
    # Unordered pairs as one integer each: a 1-D unique is far cheaper than a row-wise one.
    codes = np.unique(np.minimum(first, second) * count + np.maximum(first, second))
    neighbours: Dict[int, Set[int]] = {}
    for a, b in zip((codes // count).tolist(), (codes % count).tolist()):
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    colour = np.zeros(count, dtype=np.int32)
    colour[0] = -1  # background
    colour[is_rectangle] = -1  # written as their boxes
    assigned: Dict[int, int] = {}
    # The touch graph is near-planar, so a handful of colours suffice.
    for node in sorted(neighbours, key=lambda n: -len(neighbours[n])):
        taken = {assigned[n] for n in neighbours[node] if n in assigned}
        choice = 0
        while choice in taken:
            choice += 1
        assigned[node] = choice
        colour[node] = choice
    layer_of_pixel = colour[labels]
    return [Piece((layer_of_pixel == k).view(np.uint8)) for k in range(int(colour.max()) + 1)]
