"""Masks <-> run-length encoding (``core.protocol.MaskRLE``): the one vectorised codec.

numpy only, so both sides import this very module: the backend (cascade, training evaluation) and
the QGIS plugin (its store rasterises answer masks; QGIS ships numpy). ``core`` stays pure Python
and only carries the run lengths; decoding them a pixel at a time in Python is what this replaces.

Convention (the protocol's): row-major runs over ``width x height`` pixels, starting with a run of
zeros that may be 0 long.
"""
from __future__ import annotations

from typing import Iterable, Optional, Tuple

import numpy as np

from .core.protocol import MaskRLE

__all__ = ["as_binary_mask", "mask_to_rle", "rle_bounds", "rle_to_mask", "rle_label_image"]


def mask_to_rle(mask: np.ndarray) -> MaskRLE:
    """Row-major run lengths of a 2-D mask (non-zero = inside), starting with a run of zeros."""
    binary = as_binary_mask(mask)
    height, width = binary.shape
    flat = binary.ravel()
    if flat.size == 0:
        return MaskRLE(width, height, [0])
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate(([0], changes, [flat.size]))
    counts = np.diff(edges)
    if flat[0]:
        counts = np.concatenate(([0], counts))
    return MaskRLE(width, height, counts.tolist())


def rle_to_mask(rle: MaskRLE) -> np.ndarray:
    """The (height, width) bool mask of a run-length encoding; ValueError if the runs do not fit."""
    counts = np.asarray(rle.counts, dtype=np.int64)
    if counts.ndim != 1 or (counts < 0).any() or int(counts.sum()) != rle.width * rle.height:
        raise ValueError(f"run lengths do not add up to {rle.width} x {rle.height} pixels")
    values = (np.arange(counts.size) % 2).astype(bool)
    return np.repeat(values, counts).reshape(rle.height, rle.width)


def rle_bounds(rle: MaskRLE) -> Optional[Tuple[int, int, int, int]]:
    """(x0, y0, x1, y1), end exclusive, of the pixels a mask covers, from its runs without decoding
    it (a correction rewrites only this part of a raster); None for an empty mask."""
    counts = np.asarray(rle.counts, dtype=np.int64)
    ends = np.cumsum(counts)
    first, last = (ends - counts)[1::2], ends[1::2] - 1  # runs of ones: first and last pixel
    keep = last >= first
    if not keep.any() or rle.width <= 0:
        return None
    first, last = first[keep], last[keep]
    rows_first, rows_last = first // rle.width, last // rle.width
    one_row = rows_first == rows_last  # a run over a row end covers every column in between
    x0 = int(np.where(one_row, first % rle.width, 0).min())
    x1 = int(np.where(one_row, last % rle.width, rle.width - 1).max()) + 1
    return x0, int(rows_first.min()), x1, int(rows_last.max()) + 1


def rle_label_image(masks: Iterable[Tuple[int, MaskRLE]], width: int, height: int) -> np.ndarray:
    """One uint8 (height, width) image of several masks: each mask's pixels get its value (1..255),
    later masks over earlier ones, 0 elsewhere. Masks of another size are skipped."""
    labels = np.zeros((height, width), dtype=np.uint8)
    for value, rle in masks:
        if (rle.width, rle.height) != (width, height):
            continue
        labels[rle_to_mask(rle)] = min(255, max(1, int(value)))
    return labels


def as_binary_mask(mask: np.ndarray) -> np.ndarray:
    """A 2-D mask as bool (non-zero = inside); ValueError for any other shape."""
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"a mask is a 2-D array, got shape {array.shape}")
    return array if array.dtype == bool else array != 0
