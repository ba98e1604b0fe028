"""Masks <-> run-length encoding (``core.protocol.MaskRLE``): the one vectorised codec.

numpy only, so both sides import this very module: the backend (cascade, training evaluation) and
the QGIS plugin (its store rasterises answer masks; QGIS ships numpy). ``core`` stays pure Python
and only carries the run lengths; decoding them a pixel at a time in Python is what this replaces.

Convention (the protocol's): row-major runs over ``width x height`` pixels, starting with a run of
zeros that may be 0 long.
"""
from __future__ import annotations

from typing import Iterable, Tuple

import numpy as np

from .core.protocol import MaskRLE

__all__ = ["as_binary_mask", "mask_to_rle", "rle_to_mask", "rle_label_image"]


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
