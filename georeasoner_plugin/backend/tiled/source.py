"""Tiles of a raster read window by window (rasterio), so memory follows the tile, not the raster.

The source keeps one dataset open for the whole run and reads only the windows of the plan; at
most the overview (one frame of the whole area, decimated) and a few tiles exist at once. Band
choice, nodata, alpha and palettes follow ``imagery.read_raster``; rasters that are not 8-bit are
stretched with *one* stretch for the whole raster (percentiles of the overview), so neighbouring
tiles keep the same colours.
"""
from __future__ import annotations

import os
import threading
import warnings
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NodataShadowWarning, NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from ...core.georef import GeoTransform
from ...core.tiling import Tile, TilePlan
from ..imagery import ImageryError, _apply_palette, _choose_bands, _georeferencing

# GDAL's block cache defaults to 5 % of the machine's memory and would grow with the raster (1.2 GB
# on a 24 GB machine over a 20,000^2 scene). Tiles are read once, so a small cache loses nothing.
# GDAL reads this once, at its first block read; a user's own GDAL_CACHEMAX wins.
os.environ.setdefault("GDAL_CACHEMAX", "64")

TileImage = Tuple[np.ndarray, Optional[np.ndarray]]  # (H, W, 3) uint8 RGB, (H, W) bool valid or None (all valid)
OVERVIEW_SIDE = 1024


class RasterTileSource:
    """Windowed reads of one raster on a tile plan's grid."""

    def __init__(self, path, bands: Optional[Sequence[int]] = None):
        self.path = os.fspath(path)
        self.warnings: List[str] = []
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._dataset = rasterio.open(self.path)
        except RasterioIOError as exc:
            raise ImageryError(f"{self.path}: not a raster GDAL can read ({exc}); check the file is a complete "
                               f"GeoTIFF, JPEG2000, VRT or another GDAL raster format") from exc
        ds = self._dataset
        if ds.count == 0 or ds.width == 0 or ds.height == 0:
            ds.close()
            raise ImageryError(f"{self.path}: the raster is empty ({ds.width} x {ds.height} pixels)")
        self._interp = list(ds.colorinterp)
        self.bands, self._palette = _choose_bands(ds.count, self._interp, bands, self.path, self.warnings)
        self.width, self.height = ds.width, ds.height
        self.transform, self.crs_wkt, self.crs_name = _georeferencing(ds, self.path, self.warnings)
        self._all_valid = all(MaskFlags.all_valid in ds.mask_flag_enums[b - 1] for b in self.bands)
        self._is_byte = all(ds.dtypes[b - 1] == "uint8" for b in self.bands)
        self._stretch: Optional[List[Tuple[float, float]]] = None
        self._lock = threading.Lock()  # a GDAL dataset handle is not safe across threads
        # Polygons (shapely, plan pixels) limiting the area (--mask-layer): pixels outside are nodata.
        self.limit_geometries: Optional[list] = None

    def close(self) -> None:
        self._dataset.close()

    def __enter__(self) -> "RasterTileSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def pixel_size(self) -> Tuple[float, float]:
        t = self.transform
        return (float(np.hypot(t.pixel_width, t.column_rotation)), float(np.hypot(t.row_rotation, t.pixel_height)))

    # -- reading
    def _read_window(self, window: Window, shape: Tuple[int, int], resampled: bool) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        ds = self._dataset
        resampling = Resampling.bilinear if resampled else Resampling.nearest
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                warnings.simplefilter("ignore", NodataShadowWarning)
                data = ds.read(indexes=list(self.bands), window=window, out_shape=(len(self.bands),) + shape,
                               resampling=resampling)
                masks = None
                if not self._all_valid:
                    masks = np.stack([ds.read_masks(b, window=window, out_shape=shape, resampling=Resampling.nearest) != 0
                                      for b in self.bands])
        except RasterioIOError as exc:
            raise ImageryError(f"{self.path}: reading window {window} failed ({exc}); the file may be truncated "
                               f"or corrupt") from exc
        if np.issubdtype(data.dtype, np.floating):
            finite = np.isfinite(data)
            masks = finite if masks is None else masks & finite
        return data, masks

    def _to_rgb(self, data: np.ndarray, masks: Optional[np.ndarray]) -> TileImage:
        valid = None if masks is None else masks.any(axis=0)
        if self._palette is not None:
            rgb = _apply_palette(data[0], self._dataset.colormap(self._palette))
        elif self._is_byte:
            bands = list(data)
            rgb = np.stack(bands * 3 if len(bands) == 1 else bands, axis=-1)
        else:
            if self._stretch is None:
                raise RuntimeError("stretch not prepared; call prepare() first")
            out = []
            for band, (low, high) in zip(data, self._stretch):
                if high <= low:
                    out.append(np.zeros(band.shape, dtype=np.uint8))
                    continue
                scaled = (band.astype(np.float32) - low) * (255.0 / (high - low))
                np.clip(scaled, 0.0, 255.0, out=scaled)
                scaled[~np.isfinite(scaled)] = 0.0
                out.append(np.rint(scaled).astype(np.uint8))
            rgb = np.stack(out * 3 if len(out) == 1 else out, axis=-1)
        rgb = np.ascontiguousarray(rgb)
        if valid is not None:
            if valid.all():
                valid = None
            else:
                rgb[~valid] = 0
        return rgb, valid

    def prepare(self, plan: TilePlan) -> None:
        """One stretch for every tile of a non-8-bit raster, from a decimated read of the plan area."""
        if self._is_byte or self._palette is not None or self._stretch is not None:
            return
        with self._lock:
            data, masks = self._read_area(plan, OVERVIEW_SIDE)
        stretch = []
        for i, band in enumerate(data):
            values = band[masks[i]] if masks is not None else band.ravel()
            values = values[np.isfinite(values)] if np.issubdtype(values.dtype, np.floating) else values
            if values.size == 0:
                stretch.append((0.0, 0.0))
                self.warnings.append(f"band {self.bands[i]} has no valid pixels; shown black")
                continue
            low, high = (float(v) for v in np.percentile(values.astype(np.float64), (2, 98)))
            if high <= low:
                low, high = float(values.min()), float(values.max())
            stretch.append((low, high))
        self._stretch = stretch

    def _read_area(self, plan: TilePlan, long_side: int):
        from ...core.tiling import overview_size
        width, height = overview_size(plan, long_side)
        window = Window(plan.source_x, plan.source_y, plan.width * plan.scale_x, plan.height * plan.scale_y)
        return self._read_window(window, (height, width), True)

    def overview(self, plan: TilePlan, long_side: int) -> TileImage:
        """The whole plan area decimated to ``long_side`` pixels on its long side."""
        self.prepare(plan)
        with self._lock:
            data, masks = self._read_area(plan, long_side)
        return self._to_rgb(data, masks)

    def read(self, plan: TilePlan, tile: Tile) -> TileImage:
        col, row, width, height = plan.source_window(tile)
        resampled = (plan.scale_x, plan.scale_y) != (1.0, 1.0)
        with self._lock:
            data, masks = self._read_window(Window(col, row, width, height), (tile.height, tile.width), resampled)
        rgb, valid = self._to_rgb(data, masks)
        if self.limit_geometries:
            from affine import Affine
            from rasterio.features import geometry_mask
            inside = geometry_mask(self.limit_geometries, out_shape=(tile.height, tile.width),
                                   transform=Affine.translation(tile.x, tile.y), invert=True)
            valid = mask_valid(valid, inside.shape, inside)
            if valid is not None:
                rgb[~valid] = 0
        return rgb, valid

    def iter_tiles(self, plan: TilePlan, todo: Iterable[Tile],
                   should_stop) -> Iterator[Tuple[Tile, np.ndarray, Optional[np.ndarray]]]:
        self.prepare(plan)
        for tile in todo:
            if should_stop():
                return
            rgb, valid = self.read(plan, tile)
            yield tile, rgb, valid

    def plan_transform(self, plan: TilePlan) -> GeoTransform:
        return GeoTransform.from_gdal(plan.plan_transform(self.transform.to_gdal()))


def mask_valid(valid: Optional[np.ndarray], shape: Tuple[int, int], inside: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """Combine a tile's data mask with an 'inside the mask layer' mask (either may be None = all)."""
    if inside is None:
        return valid
    combined = inside if valid is None else (valid & inside)
    return None if combined.all() else combined
