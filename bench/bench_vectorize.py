"""Vectorizer benchmark: GeoReasoner's mask_to_polygons against rasterio.features.shapes (GDAL).

Both run on the same masks; the table shows the best CPU time of a few interleaved runs of each, their ratio, and how
far apart the geometries are (area of the symmetric difference over the area of the union; 0 means
identical). Run: ``python bench/bench_vectorize.py`` or call ``run()``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

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


def thin_lines(size: int, count: int = 30, seed: int = 0) -> np.ndarray:
    """One-pixel lines at every angle (roads, ditches): 8-connected steps, corner touches everywhere."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(count):
        p, q = rng.integers(0, size, 2), rng.integers(0, size, 2)
        cv2.line(mask, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), 1, 1)
    return mask.astype(bool)


def object_with_holes(size: int, holes: int = 1000, seed: int = 0) -> np.ndarray:
    """One huge object with ``holes`` small holes (a field with trees, a lake with islands inverted)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    margin = size // 20
    mask[margin:-margin, margin:-margin] = 1
    for x, y in rng.integers(2 * margin, size - 2 * margin, (holes, 2)):
        cv2.circle(mask, (int(x), int(y)), int(rng.integers(1, 4)), 0, -1)
    return mask.astype(bool)


def bench_cases():
    """(name, mask, repeats): every mask type and size the targets are about."""
    return [
        ("64 x 64, 3 blobs", blobs_with_holes(64, count=3), 200),
        ("256 x 256, 5 blobs", blobs_with_holes(256, count=5), 50),
        ("1024 x 1024, 20 blobs with holes", blobs_with_holes(1024), 7),
        ("2048 x 2048, 20 blobs with holes", blobs_with_holes(2048), 5),
        ("4096 x 4096, 20 blobs with holes", blobs_with_holes(4096), 3),
        ("128 x 128 speckle (10 %)", speckle(128), 30),
        ("512 x 512 speckle (10 %)", speckle(512), 3),
        ("512 x 512, 30 thin lines", thin_lines(512), 7),
        ("2048 x 2048, 30 thin lines", thin_lines(2048), 3),
        ("2048 x 2048, 1 object, 1000 holes", object_with_holes(2048), 3),
    ]


def best_times(first: Callable[[], object], second: Callable[[], object], repeat: int) -> Tuple[float, float]:
    """Best CPU time of this process of each function over ``repeat`` interleaved rounds (a busy
    machine disturbs CPU time far less than wall time, and a load that comes and goes hits both
    alike when their runs alternate; both functions are single-threaded here)."""
    first(), second()  # warm-up (imports, allocator)
    best = [float("inf"), float("inf")]
    for _ in range(repeat):
        for index, function in enumerate((first, second)):
            start = time.process_time()
            function()
            best[index] = min(best[index], time.process_time() - start)
    return best[0], best[1]


def geometry_disagreement(mask: np.ndarray) -> float:
    ours = shapely.union_all([shapely.Polygon(p.exterior, p.holes) for p in mask_to_polygons(mask)])
    theirs = shapely.union_all([shapely.geometry.shape(g) for g, _ in features.shapes(
        mask.view(np.uint8), mask=mask, transform=Affine.identity())])
    union = shapely.union(ours, theirs).area
    return shapely.symmetric_difference(ours, theirs).area / union if union else 0.0


def run(print_table: bool = True) -> List[Dict[str, object]]:
    rows = []
    for name, mask, repeat in bench_cases():
        ours, theirs = best_times(lambda: mask_to_polygons(mask),
                                  lambda: list(features.shapes(mask.view(np.uint8), mask=mask)), repeat)
        rows.append({
            "mask": name,
            "parts": len(mask_to_polygons(mask)),
            "mask_to_polygons_ms": ours * 1000,
            "rasterio_shapes_ms": theirs * 1000,
            "ratio": ours / theirs,
            "disagreement": geometry_disagreement(mask),
        })
    if print_table:
        print("Vectorizer against rasterio.features.shapes (target: ratio <= 0.50 on every mask, geometry identical)")
        header = f"{'mask':34} {'parts':>6} {'ours ms':>9} {'shapes ms':>10} {'ratio':>6} {'symdiff/union':>14}"
        print(header)
        print("-" * len(header))
        for row in rows:
            verdict = "ok" if row["ratio"] <= 0.5 and row["disagreement"] == 0 else "MISSED"
            print(f"{row['mask']:34} {row['parts']:6d} {row['mask_to_polygons_ms']:9.2f} "
                  f"{row['rasterio_shapes_ms']:10.2f} {row['ratio']:6.2f} {row['disagreement']:14.2e} {verdict}")
    return rows


if __name__ == "__main__":
    run()
