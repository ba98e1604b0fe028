"""Raster reading, mask vectorising and georeferenced writing, on real files (no mocks)."""
import io
import os
import struct
import tracemalloc
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import shapely
from affine import Affine
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from rasterio import features as rio_features
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from georeasoner_plugin.backend.imagery import (NO_CRS_WARNING, ImageryError, read_image_bytes, read_raster)
from georeasoner_plugin.backend.vectorize import mask_to_polygons, mask_to_rle, rle_to_mask
from georeasoner_plugin.backend.writers import OutputError, all_output_files, write_mask_geotiff, write_vectors
from georeasoner_plugin.core.fields import field_names
from georeasoner_plugin.core.georef import GeoTransform
from georeasoner_plugin.core.protocol import Answer, AnswerObject, MaskRLE

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
GEO = Affine(10, 0, 500000, 0, -10, 4000000)  # north-up, 10 m pixels
SAMPLES = {
    "naip_nd_2020.tif": ((723, 934), "EPSG:26914", False),
    "landsat_2020_wgs84.tif": ((377, 697), "EPSG:4326", False),
    "cog_wgs84.tif": ((206, 343), "EPSG:4326", True),
}


def shared_sample(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"sample imagery not found at {SHARED_DATA} (the shared data folder sits beside the "
                    f"project checkout as ../shared/data)")
    return path


def write_raster(path: Path, data: np.ndarray, **profile) -> Path:
    data = data if data.ndim == 3 else data[None]
    base = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
            "dtype": data.dtype.name}
    colorinterp = profile.pop("colorinterp", None)
    base.update(profile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # some rasters are meant to have none
        with rasterio.open(path, "w", **base) as dst:
            dst.write(data)
            if colorinterp:
                dst.colorinterp = colorinterp
    return path


# ---------------------------------------------------------------------------------------------
# Reading rasters


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_reads_shared_samples(name):
    path = shared_sample(name)
    shape, crs_name, stretched = SAMPLES[name]
    image = read_raster(path)
    with rasterio.open(path) as src:
        expected_transform = GeoTransform.from_gdal(src.transform.to_gdal())
        assert image.crs_wkt is not None and CRS.from_wkt(image.crs_wkt) == src.crs
    assert image.rgb.shape == shape + (3,) and image.rgb.dtype == np.uint8
    assert image.transform == expected_transform == image.source_transform
    assert image.crs_name == crs_name
    assert image.stretched is stretched
    assert image.bands == (1, 2, 3)
    assert image.decimation == (1.0, 1.0)
    assert (image.source_width, image.source_height) == (shape[1], shape[0])
    assert image.warnings == []
    assert image.rgb.std() > 10  # a real picture, not a flat or clipped one
    if stretched:
        assert image.rgb.min() == 0 and image.rgb.max() == 255


def test_8bit_bands_pass_unchanged():
    path = shared_sample("naip_nd_2020.tif")
    with rasterio.open(path) as src:
        raw = src.read([1, 2, 3])
    image = read_raster(path)
    assert np.array_equal(image.rgb, np.moveaxis(raw, 0, -1))


def expected_stretch(band, valid, low_pct=2, high_pct=98):
    low, high = np.percentile(band[valid].astype(np.float64), (low_pct, high_pct))
    scaled = np.nan_to_num((band.astype(np.float64) - low) * (255.0 / (high - low)))
    return np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)


def test_uint16_with_nodata_is_stretched_on_valid_pixels_only(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.integers(1000, 3000, size=(3, 60, 80)).astype(np.uint16)
    data[:, :10, :] = 0  # nodata rows: would drag the 2nd percentile to 0 if they counted
    data[:, 30, 40] = 65000  # one bright outlier clips to 255
    path = write_raster(tmp_path / "u16.tif", data, nodata=0, crs="EPSG:32633",
                        transform=Affine(10, 0, 500000, 0, -10, 4000000))
    image = read_raster(path)
    assert image.stretched
    assert image.valid is not None
    assert not image.valid[:10].any() and image.valid[10:].all()
    assert (image.rgb[:10] == 0).all()
    for b in range(3):
        want = expected_stretch(data[b], image.valid)
        assert np.array_equal(image.rgb[10:, :, b], want[10:])
    assert image.rgb[30, 40].tolist() == [255, 255, 255]


def test_float_with_nan_and_alpha_band(tmp_path):
    rng = np.random.default_rng(4)
    rgb = rng.normal(0.2, 0.05, size=(3, 50, 70)).astype(np.float32)
    alpha = np.full((1, 50, 70), 255, dtype=np.float32)
    alpha[0, :, :15] = 0
    rgb[:, :, :15] = 1e9  # hidden by alpha: must not enter the stretch
    rgb[1, 20, 30] = np.nan
    data = np.concatenate([rgb, alpha])
    path = write_raster(tmp_path / "f32_alpha.tif", data, crs="EPSG:4326",
                        transform=Affine(0.001, 0, 10, 0, -0.001, 50),
                        colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha])
    image = read_raster(path)
    assert image.bands == (1, 2, 3) and image.stretched
    assert image.valid is not None
    assert not image.valid[:, :15].any() and image.valid[:, 15:].all()
    assert (image.rgb[:, :15] == 0).all()
    band_valid = image.valid.copy()
    assert np.array_equal(image.rgb[..., 0], np.where(band_valid, expected_stretch(rgb[0], band_valid), 0))
    green_valid = band_valid.copy()
    green_valid[20, 30] = False
    assert image.rgb[20, 30, 1] == 0
    assert np.array_equal(image.rgb[..., 1][green_valid], expected_stretch(rgb[1], green_valid)[green_valid])


def test_nodata_value_of_signed_grey_band(tmp_path):
    data = np.arange(-500, 500, dtype=np.int16).reshape(20, 50)
    data[0, :5] = -9999
    path = write_raster(tmp_path / "i16.tif", data, nodata=-9999, crs="EPSG:3857",
                        transform=GEO)
    image = read_raster(path)
    assert image.bands == (1,) and image.stretched
    assert np.array_equal(image.rgb[..., 0], image.rgb[..., 2])  # grey replicated
    assert not image.valid[0, :5].any() and image.valid.sum() == data.size - 5
    assert image.rgb[..., 0][image.valid].min() == 0 and image.rgb[..., 0].max() == 255


def test_constant_band_does_not_divide_by_zero(tmp_path):
    data = np.full((3, 20, 20), 1234, dtype=np.uint16)
    data[2] = np.arange(400, dtype=np.uint16).reshape(20, 20)
    path = write_raster(tmp_path / "flat.tif", data, crs="EPSG:4326", transform=GEO)
    image = read_raster(path)
    assert (image.rgb[..., 0] == 0).all() and (image.rgb[..., 1] == 0).all()
    assert image.rgb[..., 2].max() == 255
    assert any("constant" in w for w in image.warnings)


def test_band_choice_by_colour_interpretation_and_explicit_bands(tmp_path):
    data = np.stack([np.full((8, 8), v, dtype=np.uint8) for v in (10, 20, 30, 40)])
    path = write_raster(tmp_path / "bgrn.tif", data, crs="EPSG:4326", transform=GEO,
                        colorinterp=[ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined])
    image = read_raster(path)
    assert image.bands == (3, 2, 1) and image.rgb[0, 0].tolist() == [30, 20, 10]
    false_colour = read_raster(path, bands=[4, 3, 2])
    assert false_colour.bands == (4, 3, 2) and false_colour.rgb[0, 0].tolist() == [40, 30, 20]
    grey = read_raster(path, bands=[4])
    assert grey.rgb[0, 0].tolist() == [40, 40, 40]


def test_two_band_raster_uses_the_first_with_a_warning(tmp_path):
    data = np.stack([np.full((8, 8), 7, dtype=np.uint8), np.full((8, 8), 9, dtype=np.uint8)])
    path = write_raster(tmp_path / "two.tif", data, crs="EPSG:4326", transform=GEO)
    image = read_raster(path)
    assert image.bands == (1,) and image.rgb[0, 0].tolist() == [7, 7, 7]
    assert any("two bands" in w for w in image.warnings)


def test_raster_without_crs_is_read_in_pixel_space(tmp_path):
    path = write_raster(tmp_path / "plain.tif", np.zeros((3, 30, 40), dtype=np.uint8) + 5)
    image = read_raster(path)
    assert image.crs_wkt is None and image.crs_name is None
    assert image.transform == GeoTransform.identity() == image.source_transform
    assert NO_CRS_WARNING in image.warnings
    decimated = read_raster(path, max_size=20)
    assert decimated.rgb.shape == (15, 20, 3)
    assert decimated.transform == GeoTransform.identity().scaled(2.0, 2.0)
    assert decimated.transform.pixel_to_map(20, 15) == (40.0, 30.0)


def test_big_raster_is_read_decimated_without_loading_full_resolution(tmp_path):
    n = 6000
    path = tmp_path / "big.tif"
    profile = {"driver": "GTiff", "width": n, "height": n, "count": 1, "dtype": "uint8", "crs": "EPSG:32614",
               "transform": Affine(0.5, 0, 400000, 0, -0.5, 5000000), "tiled": True, "blockxsize": 512,
               "blockysize": 512, "compress": "deflate"}
    cols = np.arange(n)
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, n, 1000):
            rows = np.arange(top, top + 1000)
            checker = ((rows[:, None] // 600 + cols[None, :] // 600) % 2 * 200 + 20).astype(np.uint8)
            dst.write(checker, 1, window=Window(0, top, n, 1000))
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews([2, 4, 8], Resampling.nearest)

    tracemalloc.start()
    try:
        image = read_raster(path, max_size=1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20e6  # the full-resolution band alone would be 36 MB
    assert image.rgb.shape == (1024, 1024, 3)
    assert image.decimation == (n / 1024, n / 1024)
    assert image.transform == GeoTransform(400000, 0.5 * n / 1024, 0, 5000000, 0, -0.5 * n / 1024)
    assert image.source_transform == GeoTransform(400000, 0.5, 0, 5000000, 0, -0.5)
    assert image.transform.pixel_to_map(1024, 1024) == (400000 + 0.5 * n, 5000000 - 0.5 * n)
    # Checker squares are 600 source pixels = 102.4 read pixels: sample well inside squares.
    assert image.rgb[51, 51, 0] == 20 and image.rgb[51, 153, 0] == 220 and image.rgb[153, 153, 0] == 20


def test_reading_errors(tmp_path):
    with pytest.raises(ImageryError, match="no such file"):
        read_raster(tmp_path / "missing.tif")
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(ImageryError, match="not a raster GDAL can read"):
        read_raster(text)
    path = write_raster(tmp_path / "rgb.tif", np.zeros((3, 4, 4), dtype=np.uint8), crs="EPSG:4326",
                        transform=GEO)
    with pytest.raises(ImageryError, match="band 4 does not exist; the raster has 3 bands"):
        read_raster(path, bands=[1, 2, 4])
    with pytest.raises(ImageryError, match="band 0 does not exist"):
        read_raster(path, bands=[0])
    with pytest.raises(ImageryError, match="one band .* or three bands"):
        read_raster(path, bands=[1, 2])
    empty = write_raster(tmp_path / "nodata.tif", np.zeros((4, 4), dtype=np.uint16), nodata=0,
                         crs="EPSG:4326", transform=GEO)
    with pytest.raises(ImageryError, match="every pixel .* is nodata"):
        read_raster(empty)


def png_bytes(array: np.ndarray, mode=None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size but holds almost no data (a decompression bomb's header)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_read_image_bytes():
    rgb = np.random.default_rng(5).integers(0, 256, size=(12, 17, 3), dtype=np.uint8)
    assert np.array_equal(read_image_bytes(png_bytes(rgb)), rgb)
    rgba = np.dstack([rgb, np.full((12, 17), 128, np.uint8)])
    assert np.array_equal(read_image_bytes(png_bytes(rgba)), rgb)
    jpeg = io.BytesIO()
    Image.fromarray(rgb).save(jpeg, format="JPEG")
    assert read_image_bytes(jpeg.getvalue()).shape == (12, 17, 3)
    tiff = io.BytesIO()
    Image.fromarray(rgb).save(tiff, format="TIFF")
    assert np.array_equal(read_image_bytes(tiff.getvalue()), rgb)
    deep = (np.arange(12 * 17, dtype=np.uint16).reshape(12, 17) * 200)
    grey = read_image_bytes(png_bytes(deep))
    assert grey.dtype == np.uint8 and grey.shape == (12, 17, 3) and grey.min() == 0 and grey.max() == 255

    with pytest.raises(ImageryError, match="too large to decode safely"):
        read_image_bytes(png_header_only(50000, 50000))  # beyond Pillow's own bomb limit
    with pytest.raises(ImageryError, match="more than the limit"):
        read_image_bytes(png_header_only(9000, 9000))  # beyond ours
    with pytest.raises(ImageryError, match="more than the limit"):
        read_image_bytes(png_bytes(rgb), max_pixels=100)
    with pytest.raises(ImageryError, match="not an image"):
        read_image_bytes(b"definitely not an image")
    with pytest.raises(ImageryError, match="empty"):
        read_image_bytes(b"")
    with pytest.raises(ImageryError, match="could not be decoded"):
        read_image_bytes(png_bytes(rgb)[:60])


# ---------------------------------------------------------------------------------------------
# Vectorising masks


def check_polygons(mask: np.ndarray, polygons) -> None:
    """Exact round trip: area, rasterised-back pixels, validity, and agreement with GDAL."""
    shapes = [shapely.Polygon(p.exterior, p.holes) for p in polygons]
    for shape, polygon in zip(shapes, polygons):
        assert shape.is_valid, shapely.is_valid_reason(shape)
        assert polygon.exterior[0] == polygon.exterior[-1]
        for x, y in polygon.exterior + [v for h in polygon.holes for v in h]:
            assert x == int(x) and y == int(y)  # on pixel corners
    union = shapely.MultiPolygon(shapes) if shapes else shapely.MultiPolygon()
    assert union.is_valid, shapely.is_valid_reason(union)
    assert sum(p.area() for p in polygons) == mask.sum()
    if not mask.any():
        assert polygons == []
        return
    back = rio_features.rasterize([(s, 1) for s in shapes], out_shape=mask.shape, transform=Affine.identity(),
                                  dtype="uint8").astype(bool)
    intersection, union_px = (back & mask).sum(), (back | mask).sum()
    assert intersection / union_px == 1.0
    reference = shapely.union_all([shapely.geometry.shape(g) for g, _ in rio_features.shapes(
        mask.astype(np.uint8), mask=mask, transform=Affine.identity())])
    assert shapely.symmetric_difference(reference, union).area == 0


def blob_mask(seed: int, size: int = 256, count: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(count):
        cx, cy = (int(v) for v in rng.integers(10, size - 10, 2))
        radius = int(rng.integers(4, size // 8))
        axes = (radius, max(2, int(radius * rng.uniform(0.4, 1.6))))
        cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        if radius > 8:
            cv2.circle(mask, (cx, cy), radius // 3, 0, -1)
    return mask.astype(bool)


@pytest.mark.parametrize("seed", range(6))
def test_random_blobs_round_trip(seed):
    mask = blob_mask(seed)
    polygons = mask_to_polygons(mask)
    check_polygons(mask, polygons)
    assert any(p.holes for p in polygons)


def test_holes_and_islands_in_holes():
    mask = np.zeros((40, 40), bool)
    mask[2:38, 2:38] = True
    mask[8:32, 8:32] = False  # hole
    mask[14:26, 14:26] = True  # island in the hole
    mask[18:22, 18:22] = False  # hole in the island
    mask[19, 19] = True  # single-pixel island in that hole
    polygons = mask_to_polygons(mask)
    check_polygons(mask, polygons)
    assert [len(p.holes) for p in polygons] == [1, 1, 0]
    assert [p.area() for p in polygons] == [36 * 36 - 24 * 24, 12 * 12 - 16, 1]
    assert polygons[2].exterior == [(20.0, 19.0), (20.0, 20.0), (19.0, 20.0), (19.0, 19.0), (20.0, 19.0)]


@pytest.mark.parametrize("rows", [
    ["10", "01"],  # two pixels touching at a corner
    ["01", "10"],
    ["111", "101", "110"],  # a hole touching the outside at a corner
    ["1110", "1001", "1110"],  # a C closed only by corner touches: no hole, two parts
    ["0110", "1001", "1001", "0110"],  # a ring of corner touches around a hole
    ["10101", "01010", "10101", "01010"],  # checkerboard
    ["1100", "1101", "0011", "0111"],
])
def test_corner_touches_give_valid_polygons(rows):
    mask = np.array([[c == "1" for c in row] for row in rows])
    polygons = mask_to_polygons(mask)
    check_polygons(mask, polygons)


def test_single_pixel_full_and_empty_masks():
    single = np.zeros((5, 7), bool)
    single[2, 3] = True
    polygons = mask_to_polygons(single)
    assert len(polygons) == 1 and polygons[0].holes == []
    assert sorted(set(polygons[0].exterior)) == [(3.0, 2.0), (3.0, 3.0), (4.0, 2.0), (4.0, 3.0)]
    full = np.ones((6, 9), bool)
    polygons = mask_to_polygons(full)
    assert len(polygons) == 1 and sorted(set(polygons[0].exterior)) == [(0.0, 0.0), (0.0, 6.0), (9.0, 0.0), (9.0, 6.0)]
    check_polygons(full, polygons)
    assert mask_to_polygons(np.zeros((6, 9), bool)) == []
    assert mask_to_polygons(np.zeros((0, 9), bool)) == []
    assert mask_to_polygons(np.array([[0, 255], [0, 0]], np.uint8))[0].area() == 1  # any non-zero is True


@settings(max_examples=250, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 14), st.integers(1, 14))))
def test_property_exact_round_trip(mask):
    check_polygons(mask, mask_to_polygons(mask))


@settings(max_examples=60, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 24), st.integers(1, 24)),
              elements=st.sampled_from([False, True, True])))
def test_property_dense_masks_and_rle(mask):
    check_polygons(mask, mask_to_polygons(mask))
    rle = mask_to_rle(mask)
    assert rle.counts == MaskRLE.encode(mask.tolist()).counts
    assert np.array_equal(rle_to_mask(rle), mask)


def test_simplify_and_min_area():
    mask = np.zeros((120, 120), np.uint8)
    cv2.circle(mask, (60, 60), 45, 1, -1)
    cv2.circle(mask, (60, 60), 12, 0, -1)
    mask[30, 60] = 0  # a one-pixel hole
    mask[100:103, 2:4] = 1  # a 6-pixel speck
    mask = mask.astype(bool)
    exact = mask_to_polygons(mask)
    assert [len(p.holes) for p in exact] == [2, 0]
    simplified = mask_to_polygons(mask, simplify_tolerance=1.5)
    assert len(simplified) == 2
    assert len(simplified[0].exterior) < len(exact[0].exterior) / 3
    for polygon in simplified:
        shape = shapely.Polygon(polygon.exterior, polygon.holes)
        assert shape.is_valid
        assert all(x == int(x) and y == int(y) for x, y in polygon.exterior)  # still pixel corners
    assert abs(simplified[0].area() - exact[0].area()) / exact[0].area() < 0.02
    pruned = mask_to_polygons(mask, min_area=10)
    assert len(pruned) == 1 and len(pruned[0].holes) == 1
    assert pruned[0].area() == exact[0].area() + 1


def test_rle_round_trip_and_convention():
    mask = np.array([[1, 1, 0], [0, 1, 1]], bool)
    rle = mask_to_rle(mask)
    assert (rle.width, rle.height, rle.counts) == (3, 2, [0, 2, 2, 2])
    assert np.array_equal(rle_to_mask(rle), mask)
    assert mask_to_rle(np.zeros((2, 2), bool)).counts == [4]
    assert rle.area() == 4
    with pytest.raises(ValueError):
        rle_to_mask(MaskRLE(3, 2, [1, 2]))


# ---------------------------------------------------------------------------------------------
# Georeferenced outputs


def known_answer(width: int, height: int) -> Answer:
    mask = np.zeros((height, width), bool)
    mask[height // 4: height // 2, width // 5: width // 2] = True
    mask[height // 3: height // 3 + 3, width // 4: width // 4 + 4] = False  # a hole
    mask[height - 6: height - 3, 2:5] = True  # a second part
    return Answer(
        question="Which lakes could supply irrigation water? — «ünïcode»",
        profile="remotereasoner", image_width=width, image_height=height,
        objects=[
            AnswerObject(index=0, box=(width / 5, height / 4, width / 2, height / 2),
                         points=[(width * 0.35 + 0.25, height * 0.3 + 0.5), (width / 5 + 1.5, height / 4 + 2.0)],
                         score=0.87, label="lake", polygons=mask_to_polygons(mask)),
            AnswerObject(index=1, box=(1, 2, 9, 7), points=[(5, 4.5)], score=None, label=None),
        ],
        models={"reasoner": "tiny-qwen", "segmenter": "tiny-sam2"},
    )


def pixel_vertices(answer: Answer):
    """Per layer, the pixel-space vertices every written geometry must come from."""
    boxes, points, contours = [], [], []
    for obj in answer.objects:
        if obj.box:
            x1, y1, x2, y2 = obj.box
            boxes += [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
        points += list(obj.points)
        for polygon in obj.polygons:
            contours += polygon.exterior + [v for h in polygon.holes for v in h]
    return {"boxes": boxes, "points": points, "contours": contours}


def assert_vertices_exact(geometries, pixel_points, affine: Affine):
    expected = np.array([affine @ (c, r) for c, r in pixel_points])
    written = np.concatenate([shapely.get_coordinates(g) for g in geometries])
    assert np.isfinite(written).all()
    scale = np.abs(expected).max()
    # Every written vertex is the map image of one pixel vertex, and every pixel vertex is written.
    distances = np.abs(written[:, None, :] - expected[None, :, :]).max(axis=2)
    assert (distances.min(axis=1) <= 1e-9 * scale).all()
    assert (distances.min(axis=0) <= 1e-9 * scale).all()


def read_layer(path: Path, layer=None):
    meta, _, wkb, field_data = pyogrio.raw.read(path, layer=layer)
    geometries = shapely.from_wkb(wkb)
    return meta, geometries, dict(zip(meta["fields"], field_data))


def rotated_raster(tmp_path: Path) -> Path:
    affine = Affine.translation(500000, 4000000) @ Affine.rotation(30) @ Affine.scale(10, -10)
    data = np.random.default_rng(6).integers(0, 255, size=(3, 48, 64), dtype=np.uint8)
    return write_raster(tmp_path / "rotated.tif", data, crs="EPSG:32633", transform=affine)


@pytest.mark.parametrize("source", ["naip_nd_2020.tif", "landsat_2020_wgs84.tif", "rotated"])
@pytest.mark.parametrize("suffix", [".gpkg", ".shp"])
def test_vectors_land_exactly_on_the_raster_grid(tmp_path, source, suffix):
    path = rotated_raster(tmp_path) if source == "rotated" else shared_sample(source)
    image = read_raster(path)
    answer = known_answer(image.width, image.height)
    written = write_vectors(answer, image.transform, image.crs_wkt, tmp_path / f"out{suffix}")
    with rasterio.open(path) as src:
        affine, crs = src.transform, src.crs
    if source == "rotated":
        assert image.transform.is_rotated()
    expected = pixel_vertices(answer)
    for layer in ("boxes", "points", "contours"):
        if suffix == ".gpkg":
            meta, geometries, fields = read_layer(written[0], layer)
        else:
            meta, geometries, fields = read_layer(tmp_path / f"out_{layer}.shp")
        assert CRS.from_user_input(meta["crs"]) == crs
        assert_vertices_exact(geometries, expected[layer], affine)
        assert all(shapely.is_valid(geometries))
        assert set(fields["answer_id"]) == {answer.answer_id}
        assert set(fields["question"]) == {answer.question}
    _, boxes, fields = read_layer(written[0], "boxes") if suffix == ".gpkg" else read_layer(written[0])
    assert list(fields["obj_index"]) == [0, 1] and fields["label"][0] == "lake"
    assert fields["label"][1] in ("", None)  # no label: '' (a shapefile reads it back as null)
    assert fields["score"][0] == pytest.approx(0.87) and np.isnan(fields["score"][1])
    box_area = (image.width / 2 - image.width / 5) * (image.height / 2 - image.height / 4)
    assert boxes[0].area == pytest.approx(box_area * abs(affine.determinant), rel=1e-9)
    _, contours, _ = read_layer(written[0], "contours") if suffix == ".gpkg" \
        else read_layer(tmp_path / "out_contours.shp")
    pixel_area = sum(p.area() for p in answer.objects[0].polygons)
    assert contours[0].area == pytest.approx(pixel_area * abs(affine.determinant), rel=1e-9)
    assert len(contours[0].geoms) == 2 and sum(len(p.interiors) for p in contours[0].geoms) == 1


def test_decimated_read_georeferences_on_the_source_grid(tmp_path):
    path = shared_sample("naip_nd_2020.tif")
    image = read_raster(path, max_size=300)
    assert image.rgb.shape[1] == 300 and image.decimation[0] > 3
    answer = known_answer(image.width, image.height)
    out = write_vectors(answer, image.transform, image.crs_wkt, tmp_path / "dec.gpkg")[0]
    with rasterio.open(path) as src:
        affine = src.transform
    dx, dy = image.decimation
    for layer, vertices in pixel_vertices(answer).items():
        _, geometries, _ = read_layer(out, layer)
        assert_vertices_exact(geometries, [(c * dx, r * dy) for c, r in vertices], affine)


def test_pixel_space_outputs_without_crs(tmp_path):
    path = write_raster(tmp_path / "plain.tif", np.zeros((3, 30, 40), dtype=np.uint8))
    image = read_raster(path)
    answer = known_answer(image.width, image.height)
    written = write_vectors(answer, image.transform, image.crs_wkt, tmp_path / "plain_out.shp")
    assert not (tmp_path / "plain_out_boxes.prj").exists()
    meta, geometries, _ = read_layer(written[0])
    assert meta["crs"] is None
    assert_vertices_exact(geometries, pixel_vertices(answer)["boxes"], Affine.identity())


def test_shapefile_set_and_geopackage_layers(tmp_path):
    answer = known_answer(100, 80)
    transform = GeoTransform(1000.0, 2.0, 0.0, 5000.0, 0.0, -2.0)
    wkt = CRS.from_epsg(32614).to_wkt()
    shp = write_vectors(answer, transform, wkt, tmp_path / "set.shp")
    assert [p.name for p in shp] == ["set_boxes.shp", "set_points.shp", "set_contours.shp"]
    for layer in ("boxes", "points", "contours"):
        for ext in (".shp", ".shx", ".dbf", ".prj", ".cpg"):
            assert (tmp_path / f"set_{layer}{ext}").exists()
        assert (tmp_path / f"set_{layer}.cpg").read_text().strip().upper() in ("UTF-8", "UTF8")
        fields = pyogrio.read_info(tmp_path / f"set_{layer}.shp")["fields"]
        assert all(len(name) <= 10 for name in fields)
        assert list(fields) == field_names(layer)
    assert sorted(os.listdir(tmp_path)) == sorted(f"set_{layer}{ext}" for layer in ("boxes", "points", "contours")
                                                  for ext in (".shp", ".shx", ".dbf", ".prj", ".cpg"))
    assert sorted(p.name for p in all_output_files(shp)) == sorted(os.listdir(tmp_path))
    gpkg = write_vectors(answer, transform, wkt, tmp_path / "all.gpkg")[0]
    assert [name for name, _ in pyogrio.list_layers(gpkg)] == ["boxes", "points", "contours"]
    _, _, fields = read_layer(gpkg, "points")
    assert list(fields["point_no"]) == [0, 1, 0] and list(fields["obj_index"]) == [0, 0, 1]
    assert list(fields["point_role"]) == ["centre", "edge", "centre"]
    assert set(fields["reasoner"]) == {"tiny-qwen"} and set(fields["segmenter"]) == {"tiny-sam2"}
    folder = write_vectors(answer, transform, wkt, str(tmp_path / "folder") + "/", layers=("contours",))
    assert folder == [tmp_path / "folder" / "contours.shp"] and folder[0].exists()
    suffixless = write_vectors(answer, transform, wkt, tmp_path / "nested" / "run1", layers=("boxes",))
    assert suffixless == [tmp_path / "nested" / "run1" / "boxes.shp"] and suffixless[0].exists()
    with pytest.raises(OutputError, match="choose a .gpkg file"):
        write_vectors(answer, transform, wkt, tmp_path / "out.geojson")


def test_empty_layers_are_written_with_their_fields(tmp_path):
    answer = Answer(question="Any airports?", profile="qwen", image_width=10, image_height=10)
    gpkg = write_vectors(answer, GeoTransform.identity(), None, tmp_path / "none.gpkg")[0]
    assert [name for name, _ in pyogrio.list_layers(gpkg)] == ["boxes", "points", "contours"]
    for layer in ("boxes", "points", "contours"):
        info = pyogrio.read_info(gpkg, layer=layer)
        assert info["features"] == 0 and "answer_id" in list(info["fields"])
    shp = write_vectors(answer, GeoTransform.identity(), None, tmp_path / "none.shp")
    assert all(pyogrio.read_info(p)["features"] == 0 for p in shp)


def test_overwrite_refusal_leaves_existing_files_untouched(tmp_path):
    answer = known_answer(50, 40)
    transform = GeoTransform(0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    existing = tmp_path / "keep_points.dbf"
    existing.write_bytes(b"precious")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(OutputError, match="keep_points.dbf already exists"):
        write_vectors(answer, transform, None, tmp_path / "keep.shp")
    assert existing.read_bytes() == b"precious" and sorted(os.listdir(tmp_path)) == before

    gpkg = tmp_path / "keep.gpkg"
    gpkg.write_bytes(b"also precious")
    with pytest.raises(OutputError, match="already exists"):
        write_vectors(answer, transform, None, gpkg)
    assert gpkg.read_bytes() == b"also precious"
    write_vectors(answer, transform, None, gpkg, overwrite=True)
    assert len(pyogrio.list_layers(gpkg)) == 3
    assert sorted(os.listdir(tmp_path)) == sorted(before + ["keep.gpkg"])


def test_failure_mid_write_leaves_nothing_behind(tmp_path):
    answer = known_answer(50, 40)
    # Boxes and points write fine; the contour of this object has a label that cannot be
    # encoded as UTF-8, so the last layer fails after the others were already written.
    answer.objects.append(AnswerObject(index=2, label="broken \ud800 label",
                                       polygons=mask_to_polygons(np.ones((3, 3), bool))))
    answer.objects[0].label = "fine"
    transform = GeoTransform(0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    for name in ("broken.gpkg", "broken.shp", "newdir/"):
        with pytest.raises(OutputError, match="contours"):
            write_vectors(answer, transform, None, f"{tmp_path}/{name}")
        assert os.listdir(tmp_path) == []

    # An existing target that is in the way (a folder) is refused before anything is written.
    (tmp_path / "blocked_points.shp").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        write_vectors(known_answer(50, 40), transform, None, tmp_path / "blocked.shp", overwrite=True)
    assert os.listdir(tmp_path) == ["blocked_points.shp"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write into read-only folders")
def test_unwritable_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="cannot write"):
            write_vectors(known_answer(50, 40), GeoTransform.identity(), None, locked / "out.gpkg")
        assert os.listdir(locked) == []
    finally:
        locked.chmod(0o700)


def test_mask_geotiff_on_the_source_grid_native_and_decimated(tmp_path):
    path = shared_sample("naip_nd_2020.tif")
    with rasterio.open(path) as src:
        source_profile = (src.width, src.height, src.transform, src.crs)
    native = read_raster(path)
    mask = np.zeros((native.height, native.width), bool)
    mask[100:200, 300:450] = True
    out = write_mask_geotiff(mask, native, tmp_path / "native.tif")
    with rasterio.open(out) as dst:
        assert (dst.width, dst.height, dst.transform, dst.crs) == source_profile
        assert dst.dtypes == ("uint8",) and dst.nodata == 255 and dst.compression.name.lower() == "deflate"
        assert dst.profile["tiled"]
        assert np.array_equal(dst.read(1), mask.astype(np.uint8))

    decimated = read_raster(path, max_size=300)
    small = np.zeros((decimated.height, decimated.width), bool)
    small[30:60, 100:150] = True
    out = write_mask_geotiff(small, decimated, tmp_path / "decimated.tif")
    with rasterio.open(out) as dst:
        assert (dst.width, dst.height, dst.transform, dst.crs) == source_profile
        written = dst.read(1)
    # Each source pixel takes the value of the read pixel its centre falls in.
    rows = ((np.arange(source_profile[1]) + 0.5) * decimated.height / source_profile[1]).astype(int)
    cols = ((np.arange(source_profile[0]) + 0.5) * decimated.width / source_profile[0]).astype(int)
    assert np.array_equal(written, small[np.ix_(rows, cols)].astype(np.uint8))
    with pytest.raises(OutputError, match="already exists"):
        write_mask_geotiff(small, decimated, out)
    write_mask_geotiff(~small, decimated, out, overwrite=True)
    with rasterio.open(out) as dst:
        assert dst.read(1).sum() == (~small[np.ix_(rows, cols)]).sum()


def test_mask_geotiff_marks_nodata(tmp_path):
    data = np.random.default_rng(7).integers(1, 255, size=(3, 40, 60)).astype(np.uint8)
    data[:, :, :10] = 0
    path = write_raster(tmp_path / "nd.tif", data, nodata=0, crs="EPSG:32633",
                        transform=Affine(2, 0, 300000, 0, -2, 4500000))
    image = read_raster(path, max_size=30)
    mask = np.ones((image.height, image.width), bool)
    out = write_mask_geotiff(mask, image, tmp_path / "nd_mask.tif")
    with rasterio.open(out) as dst:
        written = dst.read(1)
        assert dst.shape == (40, 60) and dst.transform == Affine(2, 0, 300000, 0, -2, 4500000)
    assert (written[:, :10] == 255).all() and (written[:, 10:] == 1).all()
