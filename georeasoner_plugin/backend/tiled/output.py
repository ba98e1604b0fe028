"""The merged answer's mask GeoTIFF on the plan grid, rasterised block by block.

A scene mask can be far larger than memory should hold (20,000^2 pixels), so the merged polygons
are burnt into one 512-pixel block at a time (rasterio.features.rasterize, pixel centre inside),
querying only the polygons meeting that block. Polygons lie on pixel corners, so this gives back
exactly the pixels the segmenter marked.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import rasterize
from rasterio.windows import Window
from shapely.strtree import STRtree

from ...core.georef import GeoTransform
from ...core.protocol import Answer
from ..writers import OutputError
from .merge import multipolygon

BLOCK = 512


def write_plan_mask(answer: Answer, transform: GeoTransform, crs_wkt: Optional[str], path,
                    overwrite: bool = False) -> Path:
    """uint8 GeoTIFF, 1 = inside an object, 0 = background, on the answer's (plan) grid."""
    target = Path(os.fspath(path))
    if target.exists() and not overwrite:
        raise OutputError(f"{target} already exists; pass --overwrite to replace it")
    geoms = [g for g in (multipolygon(o) for o in answer.objects) if g is not None]
    tree = STRtree(geoms) if geoms else None
    width, height = answer.image_width, answer.image_height
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "uint8", "nodata": 255,
               "compress": "deflate", "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "BIGTIFF": "IF_SAFER"}
    if crs_wkt:
        profile["crs"] = crs_wkt
    if transform != GeoTransform.identity():
        profile["transform"] = Affine.from_gdal(*transform.to_gdal())
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(staged, "w", **profile) as out:
                for row in range(0, height, BLOCK):
                    rows = min(BLOCK, height - row)
                    for col in range(0, width, BLOCK):
                        cols = min(BLOCK, width - col)
                        block = np.zeros((rows, cols), dtype=np.uint8)
                        if tree is not None:
                            hits = tree.query(shapely.box(col, row, col + cols, row + rows), predicate="intersects")
                            if len(hits):
                                block = rasterize([(geoms[i], 1) for i in hits], out_shape=(rows, cols),
                                                  transform=Affine.translation(col, row), fill=0, dtype="uint8")
                        out.write(block, 1, window=Window(col, row, cols, rows))
        os.replace(staged, target)
    except OSError as exc:
        staged.unlink(missing_ok=True)
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return target
