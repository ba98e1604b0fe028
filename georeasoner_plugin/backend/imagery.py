"""Rasters and image bytes -> 8-bit RGB for the models, with the georeferencing of what was read.

Everything GDAL can open is read through rasterio. Large rasters are read decimated (GDAL picks
overviews when the file has them), so a 40 000 x 40 000 orthophoto never sits in memory at full
resolution; ``RasterImage.transform`` always describes the returned pixel grid, and the source
grid is kept alongside so results can be written back at full resolution.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
import rasterio
from affine import Affine
from PIL import Image, UnidentifiedImageError
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NodataShadowWarning, NotGeoreferencedWarning, RasterioIOError

from ..core.georef import GeoTransform

__all__ = ["ImageryError", "RasterImage", "read_raster", "read_image_bytes", "stretch_to_uint8",
           "NO_CRS_WARNING", "DEFAULT_MAX_IMAGE_PIXELS"]

NO_CRS_WARNING = "no CRS: outputs are in pixel coordinates"
DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192
# Pillow modes decoded through Pillow's own RGB conversion; any other mode is stretched like a raster.
_STRIP_PIXELS = 1 << 20
EIGHT_BIT_MODES = ("RGB", "L", "RGBA", "LA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1")
# Percentiles are estimated from at most this many valid values per band: plenty for a 2/98 %
# stretch, and it keeps float rasters of millions of pixels from being sorted in full.
_PERCENTILE_SAMPLE = 1_000_000


class ImageryError(ValueError):
    """An image or raster that cannot be used, with a message saying what to do about it."""


@dataclass
class RasterImage:
    """An 8-bit RGB view of a raster plus everything needed to georeference results on it."""

    rgb: np.ndarray  # (height, width, 3) uint8
    valid: Optional[np.ndarray]  # (height, width) bool, False where the raster has no data; None: all valid
    transform: GeoTransform  # of the returned pixel grid (decimated reads included)
    crs_wkt: Optional[str]
    crs_name: Optional[str]  # "EPSG:26914", or None when unknown / absent
    source_path: str
    source_width: int
    source_height: int
    source_transform: GeoTransform  # of the full-resolution raster
    decimation: Tuple[float, float] = (1.0, 1.0)  # source pixels per returned pixel, x and y
    bands: Tuple[int, ...] = (1, 2, 3)  # 1-based band indexes shown as R, G, B (one: grey)
    stretched: bool = False
    warnings: List[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def is_decimated(self) -> bool:
        return (self.width, self.height) != (self.source_width, self.source_height)


def read_raster(path, bands: Optional[Sequence[int]] = None, max_size: int = 2048,
                stretch_percentiles: Tuple[float, float] = (2, 98)) -> RasterImage:
    """Read a GDAL-readable raster as 8-bit RGB, at most ``max_size`` pixels on its long side.

    Bands: ``bands`` (1 or 3 one-based indexes) when given; else the bands whose colour
    interpretation is red, green and blue; else the first three bands that are not alpha (one band:
    grey; two bands: the first, with a warning; a paletted band is expanded through its colour
    table). 8-bit bands pass unchanged; other types are stretched per band between the given
    percentiles of the valid pixels.
    """
    source = os.fspath(path)
    is_gdal_virtual = source.startswith("/vsi") or "://" in source
    if not is_gdal_virtual and not os.path.exists(source):
        raise ImageryError(f"{source}: no such file")
    if int(max_size) < 1:
        raise ImageryError(f"max_size must be at least 1 pixel, got {max_size}")
    low, high = (float(p) for p in stretch_percentiles)
    if not 0 <= low < high <= 100:
        raise ImageryError(f"stretch percentiles must satisfy 0 <= low < high <= 100, got {stretch_percentiles}")

    messages: List[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(source)
    except RasterioIOError as exc:
        if os.path.isdir(source):
            raise ImageryError(f"{source}: is a folder, not a raster GDAL can read (pick the raster file inside it)") from exc
        raise ImageryError(
            f"{source}: not a raster GDAL can read ({exc}); check the file is a complete GeoTIFF, JPEG2000, "
            f"VRT or another GDAL raster format") from exc

    with dataset:
        if dataset.count == 0 or dataset.width == 0 or dataset.height == 0:
            if dataset.subdatasets:
                listed = ", ".join(dataset.subdatasets[:5])
                raise ImageryError(f"{source}: a container of several rasters; open one of its subdatasets: {listed}")
            raise ImageryError(f"{source}: the raster is empty ({dataset.width} x {dataset.height} pixels, "
                               f"{dataset.count} bands)")

        interpretation = list(dataset.colorinterp)
        chosen, palette = _choose_bands(dataset.count, interpretation, bands, source, messages)
        width, height = dataset.width, dataset.height
        out_width, out_height = _decimated_size(width, height, int(max_size))
        shape = (out_height, out_width)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            data, band_masks = _read_pixels(dataset, source, chosen, interpretation, shape)

        if np.issubdtype(data.dtype, np.floating):
            finite = np.isfinite(data)
            band_masks = finite if band_masks is None else band_masks & finite
        valid = None
        if band_masks is not None:
            valid = band_masks.any(axis=0)
            if not valid.any():
                raise ImageryError(f"{source}: every pixel of bands {list(chosen)} is nodata (or masked); "
                                   f"check the nodata value and the band selection")
            if valid.all():
                valid = None

        if palette is not None:
            rgb = _apply_palette(data[0], dataset.colormap(palette))
            stretched = False
        else:
            rgb, stretched = _to_rgb(data, band_masks, (low, high), chosen, messages)
        if valid is not None:
            rgb[~valid] = 0

        source_transform, crs_wkt, crs_name = _georeferencing(dataset, source, messages)

    decimation = (width / out_width, height / out_height)
    return RasterImage(
        rgb=np.ascontiguousarray(rgb),
        valid=valid,
        transform=source_transform.scaled(*decimation) if decimation != (1.0, 1.0) else source_transform,
        crs_wkt=crs_wkt,
        crs_name=crs_name,
        source_path=source,
        source_width=width,
        source_height=height,
        source_transform=source_transform,
        decimation=decimation,
        bands=tuple(chosen),
        stretched=stretched,
        warnings=messages,
    )


def read_image_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode PNG / JPEG / TIFF / WebP (any format Pillow reads) bytes into an (H, W, 3) uint8 array.

    The size is checked from the header before any pixel is decoded, so a small file claiming
    a huge image (a decompression bomb) is refused instead of exhausting memory. 16-bit and float
    images are stretched like rasters; alpha is dropped (the pixels under it are kept as they are).
    """
    if not data:
        raise ImageryError("the image is empty (0 bytes)")
    return read_image_file(io.BytesIO(data), max_pixels)


def read_image_file(stream, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, formats=None) -> np.ndarray:
    """read_image_bytes for a binary file object (a spooled upload), read from its start."""
    stream.seek(0)
    try:
        with warnings.catch_warnings():
            # Our own limit below replaces Pillow's global warning/limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream, formats=formats)
            width, height = image.size
            if width <= 0 or height <= 0:
                raise ImageryError(f"the image has no pixels ({width} x {height})")
            if width * height > max_pixels:
                raise ImageryError(
                    f"the image is {width} x {height} pixels, more than the limit of {max_pixels} pixels; "
                    f"send a smaller image or read the raster from a file")
            image.load()
    except ImageryError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageryError(f"the image is too large to decode safely: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageryError("the bytes are not an image Pillow can read (PNG, JPEG, TIFF, ...)") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageryError(f"the image could not be decoded (truncated or corrupt?): {exc}") from exc

    if image.mode == "RGB":
        # One copy out of Pillow's buffer (an uncompressed 2048 x 2048 TIFF: no inflate, one memcpy).
        return np.array(image, dtype=np.uint8)
    if image.mode in EIGHT_BIT_MODES:
        # Converted strip by strip into the result: the peak is the source pixels plus the (H, W, 3)
        # array (4 bytes per pixel for a 1-bit PNG), not also a full RGBX copy and its bytes (11).
        width, height = image.size
        rgb = np.empty((height, width, 3), dtype=np.uint8)
        step = max(1, _STRIP_PIXELS // width)
        for top in range(0, height, step):
            bottom = min(height, top + step)
            rgb[top:bottom] = np.asarray(image.crop((0, top, width, bottom)).convert("RGB"))
        image.close()
        return rgb
    # 16-bit / 32-bit integer and float images: Pillow's own conversion would clip them to 0..255.
    array = np.asarray(image)
    if array.ndim == 3:
        array = array[..., :3]
    bands = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    finite = np.isfinite(bands) if np.issubdtype(bands.dtype, np.floating) else None
    rgb, _ = _to_rgb(bands, finite, (2.0, 98.0), tuple(range(1, bands.shape[0] + 1)), [])
    return rgb


def stretch_to_uint8(band: np.ndarray, valid: Optional[np.ndarray] = None,
                     percentiles: Tuple[float, float] = (2, 98)) -> Tuple[np.ndarray, Optional[float], Optional[float]]:
    """Linear stretch of one band to 0..255 between percentiles of its valid values.

    Returns (uint8 band, low, high); low/high are None when the band has no valid value. A
    constant band (low == high after falling back to min/max) comes back as zeros.
    """
    values = band[valid] if valid is not None else band.ravel()
    if values.size == 0:
        return np.zeros(band.shape, dtype=np.uint8), None, None
    if values.size > _PERCENTILE_SAMPLE:
        values = values[:: values.size // _PERCENTILE_SAMPLE + 1]
    values = values.astype(np.float64, copy=False)
    low, high = (float(v) for v in np.percentile(values, percentiles))
    if high <= low:  # mostly one value: stretch over the full range instead
        low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(band.shape, dtype=np.uint8), low, high
    scaled = (band.astype(np.float64) - low) * (255.0 / (high - low))
    np.clip(scaled, 0.0, 255.0, out=scaled)
    scaled[~np.isfinite(scaled)] = 0.0
    return np.rint(scaled).astype(np.uint8), low, high


def _read_pixels(dataset, source: str, chosen: Tuple[int, ...], interpretation: list,
                 shape: Tuple[int, int]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """The chosen bands at ``shape`` (GDAL uses overviews when it can) and, unless every pixel is
    valid, per-band validity from nodata, the dataset mask and an alpha band."""
    try:
        data = dataset.read(indexes=chosen, out_shape=(len(chosen),) + shape, resampling=Resampling.nearest)
        all_valid = all(MaskFlags.all_valid in dataset.mask_flag_enums[b - 1] for b in chosen)
        with warnings.catch_warnings():
            # Nodata taking precedence over an alpha band is GDAL's documented rule; the alpha band
            # is still applied below, so the warning tells the user nothing actionable.
            warnings.simplefilter("ignore", NodataShadowWarning)
            band_masks = None if all_valid else np.stack([
                dataset.read_masks(b, out_shape=shape, resampling=Resampling.nearest) != 0 for b in chosen])
        # GDAL turns only 8/16-bit alpha bands into masks; any other alpha band is applied here.
        alpha_bands = [i + 1 for i, ci in enumerate(interpretation) if ci == ColorInterp.alpha]
        if alpha_bands and alpha_bands[0] not in chosen:
            alpha = dataset.read(alpha_bands[0], out_shape=shape, resampling=Resampling.nearest)
            opaque = np.broadcast_to(alpha > 0, (len(chosen),) + shape)
            band_masks = opaque.copy() if band_masks is None else band_masks & opaque
    except RasterioIOError as exc:
        raise ImageryError(f"{source}: reading the pixels failed ({exc}); the file may be truncated or "
                           f"corrupt") from exc
    return data, band_masks


def _choose_bands(count: int, interpretation: list, bands, source: str,
                  messages: List[str]) -> Tuple[Tuple[int, ...], Optional[int]]:
    """(1-based band indexes, the band to expand through its colour table or None)."""
    if bands is not None:
        chosen = (int(bands),) if isinstance(bands, (int, np.integer)) else tuple(int(b) for b in bands)
        if len(chosen) not in (1, 3):
            raise ImageryError(f"give one band (grey) or three bands (red, green, blue), got {list(chosen)}")
        for b in chosen:
            if not 1 <= b <= count:
                raise ImageryError(f"{source}: band {b} does not exist; the raster has {count} band"
                                   f"{'s' if count != 1 else ''} (numbered 1 to {count})")
    else:
        colour = {ci: i + 1 for i, ci in reversed(list(enumerate(interpretation)))}
        if all(ci in colour for ci in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)):
            chosen = (colour[ColorInterp.red], colour[ColorInterp.green], colour[ColorInterp.blue])
        else:
            usable = [i + 1 for i, ci in enumerate(interpretation) if ci != ColorInterp.alpha] or [1]
            if len(usable) >= 3:
                chosen = tuple(usable[:3])
            elif len(usable) == 2:
                chosen = (usable[0],)
                messages.append(f"the raster has two bands; showing band {usable[0]} as grey "
                                f"(choose bands explicitly to use another)")
            else:
                chosen = (usable[0],)
    palette = chosen[0] if len(chosen) == 1 and interpretation[chosen[0] - 1] == ColorInterp.palette else None
    return chosen, palette


def _decimated_size(width: int, height: int, max_size: int) -> Tuple[int, int]:
    long_side = max(width, height)
    if long_side <= max_size:
        return width, height
    factor = long_side / max_size
    return max(1, min(max_size, round(width / factor))), max(1, min(max_size, round(height / factor)))


def _to_rgb(data: np.ndarray, band_masks: Optional[np.ndarray], percentiles: Tuple[float, float],
            chosen: Sequence[int], messages: List[str]) -> Tuple[np.ndarray, bool]:
    if data.dtype == np.uint8:
        bands = list(data)
        stretched = False
    else:
        bands = []
        for i, band in enumerate(data):
            mask = None if band_masks is None else band_masks[i]
            out, low, high = stretch_to_uint8(band, mask, percentiles)
            if mask is not None:
                out[~mask] = 0
            if low is None:
                messages.append(f"band {chosen[i]} has no valid pixels; shown black")
            elif high <= low:
                messages.append(f"band {chosen[i]} is constant ({low:g}); shown black")
            bands.append(out)
        stretched = True
    if len(bands) == 1:
        bands = bands * 3
    return np.stack(bands, axis=-1), stretched


def _apply_palette(band: np.ndarray, colormap: dict) -> np.ndarray:
    size = max(int(band.max()) + 1, max(colormap) + 1 if colormap else 1)
    table = np.zeros((size, 3), dtype=np.uint8)
    for value, rgba in colormap.items():
        table[value] = rgba[:3]
    return table[band.astype(np.int64)]


def _georeferencing(dataset, source: str, messages: List[str]):
    affine = dataset.transform
    has_transform = affine != Affine.identity()
    crs = dataset.crs
    if not has_transform:
        if dataset.gcps[0]:
            messages.append(f"{NO_CRS_WARNING} (the raster is georeferenced by ground control points, which "
                            f"GeoReasoner does not use; warp it first, e.g. gdalwarp -r near in.tif out.tif)")
        elif dataset.rpcs:
            messages.append(f"{NO_CRS_WARNING} (the raster has RPCs only; orthorectify it first, e.g. gdalwarp -rpc)")
        else:
            messages.append(NO_CRS_WARNING)
        # Without a geotransform a CRS would place pixel coordinates on the map as if they were
        # map units, so it is dropped.
        return GeoTransform.identity(), None, None
    transform = GeoTransform.from_gdal(affine.to_gdal())
    if crs is None:
        messages.append("no CRS: outputs keep the raster's map coordinates but carry no coordinate reference "
                        "system; assign one (e.g. gdal_edit.py -a_srs EPSG:xxxx) to place them on a map")
        return transform, None, None
    return transform, crs.to_wkt(), _crs_name(crs)


def _crs_name(crs) -> Optional[str]:
    try:
        epsg = crs.to_epsg()
        if epsg:
            return f"EPSG:{epsg}"
        authority = crs.to_authority()
        if authority:
            return f"{authority[0]}:{authority[1]}"
    except Exception:  # noqa: BLE001 - an unusual CRS without an authority is still usable through its WKT
        pass
    return None
