"""Georeferenced outputs: answers as GeoPackage / shapefiles, masks as GeoTIFF.

Vertices are mapped with ``GeoTransform.pixel_to_map`` and written as they are (no reprojection,
no rounding), in the CRS of the imagery. Every write is all-or-nothing: files are produced in a
hidden temporary folder next to the target and moved into place only when all of them are
complete; existing files are never touched unless ``overwrite`` is set, and if moving fails
half-way the previous files are put back.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from itertools import chain
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pyogrio.raw
import rasterio
import rasterio.errors
import shapely
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from shapely.geometry import MultiPolygon as ShapelyMultiPolygon
from shapely.geometry import Polygon as ShapelyPolygon
from shapely.geometry.polygon import orient

from ..core.fields import fields_for
from ..core.georef import GeoTransform
from ..core.protocol import Answer
from .attributes import attribute_rows, layer_columns
from .gpkg import GpkgLayer, write_geopackage

__all__ = ["OutputError", "LAYERS", "MAX_MASK_PIXELS", "write_vectors", "write_mask_geotiff", "vector_targets",
           "all_output_files"]

LAYERS = ("boxes", "points", "contours")
_GEOMETRY_TYPES = {"boxes": "Polygon", "points": "Point", "contours": "MultiPolygon"}
_SHAPEFILE_MEMBERS = (".shp", ".shx", ".dbf", ".prj", ".cpg")
# Derived files of an older shapefile / GeoTIFF that would describe stale data after an overwrite.
_STALE_SHAPEFILE_SIDECARS = (".qix", ".sbn", ".sbx", ".shp.xml", ".qmd")
_STALE_RASTER_SIDECARS = (".aux.xml", ".ovr", ".msk")
_MASK_NODATA = 255
_MASK_BLOCK = 512
# 2^34 pixels (a 131,072 x 131,072 scene): beyond this a full-resolution mask is refused (clip first).
MAX_MASK_PIXELS = 2**34


class OutputError(RuntimeError):
    """An output that cannot be written (exists, unwritable folder, unsupported format...)."""


def vector_targets(out_path, layers: Sequence[str] = LAYERS) -> Tuple[str, Dict[str, Path]]:
    """("GPKG" | "ESRI Shapefile", {layer: file}) for an output path, as write_vectors uses it."""
    text = os.fspath(out_path)
    path = Path(text)
    if path.suffix.lower() == ".gpkg":
        return "GPKG", {layer: path for layer in layers}
    if path.suffix.lower() == ".shp":
        return "ESRI Shapefile", {layer: path.with_name(f"{path.stem}_{layer}.shp") for layer in layers}
    # A pathlib.Path cannot keep a trailing '/', so a name without a suffix also means a folder.
    if text.endswith(("/", os.sep)) or path.is_dir() or not path.suffix:
        return "ESRI Shapefile", {layer: path / f"{layer}.shp" for layer in layers}
    raise OutputError(f"{text}: choose a .gpkg file, a .shp file or a folder for the output")


def write_vectors(answer: Answer, transform: GeoTransform, crs_wkt: Optional[str], out_path,
                  layers: Sequence[str] = LAYERS, overwrite: bool = False, raster: str = "") -> List[Path]:
    """Write the answer's boxes, points and contours in map coordinates.

    ``out_path`` ending in .gpkg: one GeoPackage with one layer per granularity. Ending in .shp:
    ``<stem>_boxes.shp`` etc. beside it. A folder (existing, ending with '/', or without a suffix):
    ``boxes.shp`` etc. inside it (created if missing). Empty layers are written with their fields.
    Returns the files a user opens: the GeoPackage, or the .shp of each layer. Attributes are
    core.fields' (``raster`` names the source raster). A GeoPackage is written in one transaction
    as GeoPackage 1.2 (backend/gpkg.py); shapefiles go through GDAL (pyogrio).
    """
    layers = tuple(layers)
    unknown = [layer for layer in layers if layer not in LAYERS]
    if unknown or not layers or len(set(layers)) != len(layers):
        raise OutputError(f"layers must be distinct names among {list(LAYERS)}, got {list(layers)}")
    driver, targets = vector_targets(out_path, layers)
    folder = next(iter(targets.values())).parent
    if driver == "GPKG":
        members = [targets[layers[0]]]
    else:
        members = [targets[layer].with_suffix(ext) for layer in layers for ext in _SHAPEFILE_MEMBERS]
    _refuse_existing(members, overwrite)
    stale = [] if driver == "GPKG" else [
        targets[layer].with_suffix(ext) for layer in layers for ext in _STALE_SHAPEFILE_SIDECARS]

    features = _features(answer, transform)
    created_folder = _make_folder(folder)
    try:
        with _Staging(folder) as staging:
            if driver == "GPKG":
                name = targets[layers[0]].name
                try:
                    write_geopackage(staging.path(name), [_geopackage_layer(layer, answer, features[layer], crs_wkt,
                                                                            raster) for layer in layers], crs_wkt)
                except Exception as exc:  # sqlite3 errors, text that is not valid Unicode...
                    raise OutputError(f"could not write {name}: {exc}") from exc
            for layer in layers if driver != "GPKG" else ():
                staged = staging.path(targets[layer].name)
                try:
                    _write_shapefile(staged, layer, answer, features[layer], crs_wkt, raster)
                except Exception as exc:  # pyogrio's own error types, text that is not valid Unicode...
                    raise OutputError(f"could not write the {layer} layer of {targets[layer].name}: {exc}") from exc
            produced = {staging.path(m.name): m for m in members if staging.path(m.name).exists()}
            # A member this write did not produce (.prj without a CRS) must not survive from before.
            stale += [m for m in members if staging.path(m.name) not in produced]
            staging.commit(produced, overwrite, stale)
    except BaseException:
        if created_folder:
            shutil.rmtree(created_folder, ignore_errors=True)
        raise
    return [targets[layers[0]]] if driver == "GPKG" else [targets[layer] for layer in layers]


def all_output_files(paths: Iterable[Path]) -> List[Path]:
    """Every file on disk behind the given outputs: a .shp expands to its .shx/.dbf/.prj/.cpg
    (for listing or removing a whole result; write_vectors returns only the files users open)."""
    files: List[Path] = []
    for path in map(Path, paths):
        members = [path.with_suffix(ext) for ext in _SHAPEFILE_MEMBERS] if path.suffix.lower() == ".shp" else [path]
        files += [m for m in members if m.exists()]
    return files


def write_mask_geotiff(mask: np.ndarray, raster, path, overwrite: bool = False) -> Path:
    """Write a mask on the grid of ``raster`` (a RasterImage) as a GeoTIFF on the *source* grid.

    uint8, 1 = target, 0 = background, 255 (nodata) where the raster has no data; tiled and
    DEFLATE-compressed. A mask of a decimated read is upsampled (nearest) to the source resolution
    block by block, so the full-resolution mask never exists in memory. Blocks that are entirely
    nodata are not written at all (a sparse GeoTIFF: GDAL reads a missing block as nodata), so a
    huge, mostly empty scene costs what its data covers; blocks entirely background share one
    array. Sources larger than MAX_MASK_PIXELS are refused with what to do instead.
    """
    mask = np.asarray(mask)
    if mask.shape != (raster.height, raster.width):
        raise ValueError(f"the mask is {mask.shape[1]} x {mask.shape[0]} pixels but the raster was read as "
                         f"{raster.width} x {raster.height}")
    width, height = raster.source_width, raster.source_height
    if width * height > MAX_MASK_PIXELS:
        raise OutputError(f"the source raster is {width} x {height} pixels; a mask at its full resolution would hold "
                          f"{width * height:,} pixels, more than the {MAX_MASK_PIXELS:,} this writer accepts. Clip "
                          f"the raster to the area of interest (e.g. gdal_translate -projwin) or ask on a "
                          f"resampled copy (gdalwarp -tr)")
    target = Path(os.fspath(path))
    _refuse_existing([target], overwrite)
    codes = mask.astype(bool).view(np.uint8).copy()
    if raster.valid is not None:
        codes[~raster.valid] = _MASK_NODATA
    # Per read-grid pixel: 1 where the code is not nodata / not background. Summed-area tables
    # answer "is this block all nodata / all background?" in O(1) per block.
    has_data = _summed_area(codes != _MASK_NODATA)
    has_target = _summed_area(codes == 1)

    # Source pixel c has its centre at c + 0.5; the read-grid pixel holding that centre is its
    # nearest neighbour (how GDAL samples a decimated nearest read too).
    scale_x, scale_y = raster.width / width, raster.height / height
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "uint8",
        "nodata": _MASK_NODATA, "compress": "deflate", "tiled": True, "SPARSE_OK": "TRUE",
        "blockxsize": _MASK_BLOCK, "blockysize": _MASK_BLOCK, "BIGTIFF": "IF_SAFER",
    }
    if raster.crs_wkt:
        profile["crs"] = raster.crs_wkt
    if raster.source_transform != GeoTransform.identity():  # pixel space: no geotransform at all
        profile["transform"] = Affine.from_gdal(*raster.source_transform.to_gdal())
    background = np.zeros((_MASK_BLOCK, _MASK_BLOCK), np.uint8)
    created_folder = _make_folder(target.parent)
    try:
        with _Staging(target.parent) as staging:
            staged = staging.path(target.name)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                out = rasterio.open(staged, "w", **profile)
            with out:
                for row in range(0, height, _MASK_BLOCK):
                    rows = min(_MASK_BLOCK, height - row)
                    src_rows = np.minimum(((np.arange(row, row + rows) + 0.5) * scale_y).astype(np.int64),
                                          raster.height - 1)
                    r0, r1 = int(src_rows[0]), int(src_rows[-1]) + 1
                    for col in range(0, width, _MASK_BLOCK):
                        cols = min(_MASK_BLOCK, width - col)
                        c0 = min(int((col + 0.5) * scale_x), raster.width - 1)
                        c1 = min(int((col + cols - 0.5) * scale_x), raster.width - 1) + 1
                        window = Window(col, row, cols, rows)
                        if not _box_sum(has_data, r0, r1, c0, c1):
                            continue  # all nodata: left out of the sparse file
                        if not _box_sum(has_target, r0, r1, c0, c1) and \
                                _box_sum(has_data, r0, r1, c0, c1) == (r1 - r0) * (c1 - c0):
                            out.write(background[:rows, :cols], 1, window=window)
                            continue
                        src_cols = np.minimum(((np.arange(col, col + cols) + 0.5) * scale_x).astype(np.int64),
                                              raster.width - 1)
                        out.write(codes[np.ix_(src_rows, src_cols)], 1, window=window)
            stale = [target.with_name(target.name + ext) for ext in _STALE_RASTER_SIDECARS]
            staging.commit({staged: target}, overwrite, stale)
    except rasterio.errors.RasterioIOError as exc:
        if created_folder:
            shutil.rmtree(created_folder, ignore_errors=True)
        raise OutputError(f"could not write {target.name} ({exc}); check the free space in {target.parent}") from exc
    except BaseException:
        if created_folder:
            shutil.rmtree(created_folder, ignore_errors=True)
        raise
    return target


def _summed_area(flags: np.ndarray) -> np.ndarray:
    table = np.zeros((flags.shape[0] + 1, flags.shape[1] + 1), np.int64)
    np.cumsum(np.cumsum(flags, axis=0, dtype=np.int64), axis=1, out=table[1:, 1:])
    return table


def _box_sum(table: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> int:
    return int(table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0])


def _features(answer: Answer, transform: GeoTransform) -> Dict[str, list]:
    """Per layer: (geometry, point index or None, object) for every feature of the answer."""
    boxes, points = [], []
    for obj in answer.objects:
        if obj.box is not None:
            boxes.append((shapely.Polygon(transform.box_to_map_ring(obj.box)), None, obj))
        for n, (col, row) in enumerate(obj.points):
            points.append((shapely.Point(transform.pixel_to_map(col, row)), n, obj))
    return {"boxes": boxes, "points": points, "contours": _contours(answer, transform)}


def _contours(answer: Answer, transform: GeoTransform) -> list:
    """Every object's polygons in map coordinates, all vertices mapped in one numpy pass.

    The same arithmetic as GeoTransform.pixel_to_map, in the same order (bit-for-bit the same
    values); a Python call per vertex or per ring cost more than the GeoPackage write itself. Rings
    with fewer than three distinct vertices (no area) are left out, and a polygon without its
    exterior with them."""
    rings: List[list] = []
    layout = []
    for obj in answer.objects:
        polygons = []
        for polygon in obj.polygons:
            if len(set(polygon.exterior)) < 3:
                continue
            exterior = len(rings)
            rings.append(_closed(polygon.exterior))
            holes = []
            for hole in polygon.holes:
                if len(set(hole)) >= 3:
                    holes.append(len(rings))
                    rings.append(_closed(hole))
            polygons.append((exterior, holes))
        layout.append((obj, polygons))
    if not rings:
        return []
    total = sum(len(ring) for ring in rings)
    pixels = np.fromiter(chain.from_iterable(chain.from_iterable(rings)), dtype=np.float64, count=2 * total)
    pixels = pixels.reshape(-1, 2)
    col, row = pixels[:, 0], pixels[:, 1]
    t = transform
    mapped = np.column_stack([t.origin_x + col * t.pixel_width + row * t.row_rotation,
                              t.origin_y + col * t.column_rotation + row * t.pixel_height])
    # Rings, polygons (first ring the exterior) and multipolygons, each built in one shapely call.
    ring_of_vertex = np.repeat(np.arange(len(rings)), [len(ring) for ring in rings])
    polygon_of_ring, object_of_polygon, objects = [], [], []
    for obj, polygons in layout:
        if not polygons:
            continue
        for exterior, holes in polygons:
            polygon_of_ring += [len(object_of_polygon)] * (1 + len(holes))
            object_of_polygon.append(len(objects))
        objects.append(obj)
    shapes = shapely.polygons(shapely.linearrings(mapped, indices=ring_of_vertex), indices=polygon_of_ring)
    multis = shapely.multipolygons(shapes, indices=object_of_polygon)
    return [(multi, None, obj) for multi, obj in zip(multis.tolist(), objects)]


def _closed(ring: list) -> list:
    return ring if ring[0] == ring[-1] else list(ring) + [ring[0]]


def _attributes(answer: Answer, layer: str, features: list, crs_wkt: Optional[str], raster: str) -> List[dict]:
    """core.fields' values of every feature of one layer (ellipsoidal area in m² where the CRS allows)."""
    return attribute_rows(answer, layer, features, crs_wkt, raster)


def _geometries(features: list, exterior_clockwise: bool) -> list:
    # The orientation each format expects: counter-clockwise exteriors for GeoPackage (OGC simple
    # features), clockwise for shapefiles. Reordering leaves every vertex value as is.
    return [_orient(geometry, exterior_clockwise) for geometry, _, _ in features]


def _geopackage_layer(layer: str, answer: Answer, features: list, crs_wkt: Optional[str], raster: str) -> GpkgLayer:
    schema = fields_for(layer)
    rows = []
    created_text = {}  # one answer, one creation time: formatted once
    for values in _attributes(answer, layer, features, crs_wkt, raster):
        created = values["created"]
        if created not in created_text:
            created_text[created] = created.strftime("%Y-%m-%dT%H:%M:%S.") + f"{created.microsecond // 1000:03d}Z"
        values["created"] = created_text[created]
        rows.append([values[f.name] for f in schema])
    return GpkgLayer(layer, _GEOMETRY_TYPES[layer].upper(), [(f.name, f.kind) for f in schema],
                     _geometries(features, exterior_clockwise=False), rows)


def _write_shapefile(path: Path, layer: str, answer: Answer, features: list, crs_wkt: Optional[str],
                     raster: str) -> None:
    wkb = np.array([shapely.to_wkb(g) for g in _geometries(features, exterior_clockwise=True)], dtype=object)
    names, field_data, masks, _ = layer_columns(layer, answer, features, shapefile=True,
                                                crs_wkt=crs_wkt, raster=raster)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'crs' was not provided")  # pixel space, on purpose
        pyogrio.raw.write(str(path), wkb, field_data, names, field_mask=masks,
                          driver="ESRI Shapefile", geometry_type=_GEOMETRY_TYPES[layer], crs=crs_wkt,
                          encoding="UTF-8", promote_to_multi=layer == "contours")


def _orient(geometry, exterior_clockwise: bool):
    sign = -1.0 if exterior_clockwise else 1.0
    if isinstance(geometry, ShapelyPolygon):
        return orient(geometry, sign)
    if isinstance(geometry, ShapelyMultiPolygon):
        return ShapelyMultiPolygon([orient(p, sign) for p in geometry.geoms])
    return geometry


def _refuse_existing(paths: Iterable[Path], overwrite: bool) -> None:
    for path in paths:
        if path.is_dir():
            raise OutputError(f"{path} is a folder; choose another output name")
        if not overwrite and (path.exists() or path.is_symlink()):
            raise OutputError(f"{path} already exists; choose another name or allow overwriting")


def _make_folder(folder: Path) -> Optional[Path]:
    """Create ``folder`` if missing; returns the top-most folder created (to remove on failure)."""
    if folder.is_dir():
        return None
    if folder.exists():
        raise OutputError(f"{folder} is a file, not a folder")
    top = folder
    while not top.parent.exists():
        top = top.parent
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder {folder}: {exc.strerror or exc}") from exc
    return top


class _Staging:
    """A hidden temporary folder beside the targets (same file system, so moves are renames)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.dir: Optional[Path] = None

    def __enter__(self) -> "_Staging":
        try:
            self.dir = Path(tempfile.mkdtemp(prefix=".georeasoner-", dir=self.folder))
        except OSError as exc:
            raise OutputError(f"cannot write in {self.folder}: {exc.strerror or exc}") from exc
        return self

    def __exit__(self, *exc_info) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, name: str) -> Path:
        return self.dir / name

    def commit(self, moves: Dict[Path, Path], overwrite: bool, stale: Sequence[Path] = ()) -> None:
        """Move staged files onto their targets; on any failure put everything back as it was."""
        _refuse_existing(moves.values(), overwrite)  # again: something may have appeared meanwhile
        replaced: List[Tuple[Path, Path]] = []
        placed: List[Path] = []
        try:
            for n, (staged, target) in enumerate(moves.items()):
                if target.exists() or target.is_symlink():
                    backup = self.dir / f".previous-{n}"
                    os.replace(target, backup)
                    replaced.append((backup, target))
                os.replace(staged, target)
                placed.append(target)
        except BaseException as exc:
            for target in placed:
                target.unlink(missing_ok=True)
            for backup, target in replaced:
                os.replace(backup, target)
            if isinstance(exc, OSError):
                raise OutputError(f"could not move the new files into {self.folder} ({exc}); "
                                  f"nothing was changed") from exc
            raise
        if overwrite:
            for path in stale:
                if path.is_file() and path not in placed:
                    try:
                        path.unlink()
                    except OSError:
                        pass
