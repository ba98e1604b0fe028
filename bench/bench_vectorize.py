"""Vectorizer benchmark: GeoReasoner's mask_to_polygons against rasterio.features.shapes (GDAL).

Both run on the same masks; the table shows the best of a few runs of each, their ratio, and how
far apart the geometries are (area of the symmetric difference over the area of the union; 0 means
identical). Run: ``python bench/bench_vectorize.py`` or call ``run()``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import shapely
from affine import Affine
from rasterio import features

from georeasoner_plugin.backend.vectorize import mask_to_polygons


def blobs_with_holes(size: int, count: int = 20, seed: int = 0) -> np.ndarray:
    """``count`` ellipses (some overlapping), most with a hole, like SAM2 masks of lakes and fields."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(count):
        cx, cy = (int(v) for v in rng.integers(size // 16, size - size // 16, 2))
        radius = int(rng.integers(size // 70, size // 20))
        axes = (radius, max(2, int(radius * rng.uniform(0.5, 1.5))))
        cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        cv2.circle(mask, (cx, cy), radius // 3, 0, -1)
    return mask.astype(bool)


def speckle(size: int, density: float = 0.1, seed: int = 0) -> np.ndarray:
    """Salt noise: the worst case (tens of thousands of one-pixel parts)."""
    return np.random.default_rng(seed).random((size, size)) < density


def best_time(function: Callable[[], object], repeat: int) -> float:
    function()  # warm-up (imports, allocator)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def geometry_disagreement(mask: np.ndarray) -> float:
    ours = shapely.union_all([shapely.Polygon(p.exterior, p.holes) for p in mask_to_polygons(mask)])
    theirs = shapely.union_all([shapely.geometry.shape(g) for g, _ in features.shapes(
        mask.view(np.uint8), mask=mask, transform=Affine.identity())])
    union = shapely.union(ours, theirs).area
    return shapely.symmetric_difference(ours, theirs).area / union if union else 0.0


def run(print_table: bool = True) -> List[Dict[str, object]]:
    cases = [
        ("1024 x 1024, 20 blobs with holes", blobs_with_holes(1024), 7),
        ("2048 x 2048, 20 blobs with holes", blobs_with_holes(2048), 5),
        ("4096 x 4096, 20 blobs with holes", blobs_with_holes(4096), 3),
        ("512 x 512 speckle (10 %)", speckle(512), 3),
    ]
    rows = []
    for name, mask, repeat in cases:
        ours = best_time(lambda: mask_to_polygons(mask), repeat)
        theirs = best_time(lambda: list(features.shapes(mask.view(np.uint8), mask=mask)), repeat)
        rows.append({
            "mask": name,
            "parts": len(mask_to_polygons(mask)),
            "mask_to_polygons_ms": ours * 1000,
            "rasterio_shapes_ms": theirs * 1000,
            "ratio": ours / theirs,
            "disagreement": geometry_disagreement(mask),
        })
    if print_table:
        header = f"{'mask':34} {'parts':>6} {'ours ms':>9} {'shapes ms':>10} {'ratio':>6} {'symdiff/union':>14}"
        print(header)
        print("-" * len(header))
        for row in rows:
            print(f"{row['mask']:34} {row['parts']:6d} {row['mask_to_polygons_ms']:9.1f} "
                  f"{row['rasterio_shapes_ms']:10.1f} {row['ratio']:6.2f} {row['disagreement']:14.2e}")
    return rows


if __name__ == "__main__":
    run()
