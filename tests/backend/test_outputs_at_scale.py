"""Outputs QGIS reads cleanly, and the mask GeoTIFF of a huge, mostly empty scene.

The GeoPackage check opens the CLI's output with the GDAL of the system Python, the one QGIS uses
(GDAL 3.6 on Debian 12 with QGIS 3.40), and requires that opening and reading every feature
raises no warning or error at all.
"""
import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from georeasoner_plugin.backend import cli
from georeasoner_plugin.backend.gpkg import srs_of_wkt
from georeasoner_plugin.backend.imagery import read_raster
from georeasoner_plugin.backend.writers import MAX_MASK_PIXELS, OutputError, write_mask_geotiff
from georeasoner_plugin.core.fields import field_names

ROOT = Path(__file__).resolve().parents[2]
NAIP = ROOT.parent / "shared" / "data" / "naip_nd_2020.tif"
RECORDED = ROOT / "examples" / "naip_lakes_remotereasoner.txt"
SYSTEM_PYTHON = Path("/usr/bin/python3")

# Runs in the system Python: every GDAL message while opening and reading the file, the layers'
# fields with their types, feature counts and the GeoPackage version GDAL sees.
_GDAL_READER = r"""
import json, sys
from osgeo import gdal, ogr
messages = []
gdal.PushErrorHandler(lambda level, number, text: messages.append([level, number, text]))
ds = gdal.OpenEx(sys.argv[1], gdal.OF_VECTOR)
layers = {}
for i in range(ds.GetLayerCount()):
    layer = ds.GetLayer(i)
    layer_fields = [[f.GetName(), f.GetTypeName()] for f in layer.schema]
    count = 0
    for feature in layer:
        count += 1
        feature.GetGeometryRef().ExportToWkb()
        [feature.GetField(k) for k in range(feature.GetFieldCount())]
    layers[layer.GetName()] = {"fields": layer_fields, "features": count,
                               "srs": layer.GetSpatialRef().GetAuthorityCode(None) if layer.GetSpatialRef() else None}
version = ds.GetMetadataItem("VERSION") if ds.GetMetadata() is not None else None
ds = None
print(json.dumps({"gdal": gdal.__version__, "messages": messages, "layers": layers}))
"""


def system_gdal_available() -> str:
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} not found (QGIS's Python; installed by the project's set-up)"
    probe = subprocess.run([str(SYSTEM_PYTHON), "-c", "from osgeo import gdal"], capture_output=True, text=True)
    if probe.returncode:
        return "the system Python has no GDAL bindings (python3-gdal, installed with QGIS by the set-up)"
    return ""


@pytest.mark.skipif(not NAIP.exists(), reason=f"sample imagery not found at {NAIP.parent} (../shared/data)")
@pytest.mark.skipif(bool(system_gdal_available()), reason=system_gdal_available() or "ok")
def test_cli_geopackage_opens_without_a_warning_in_qgis_gdal(tmp_path, tiny_models, capsys):
    out = tmp_path / "lakes.gpkg"
    code = cli.main(["ask", str(NAIP), "Which lakes could supply irrigation water?", "-o", str(out),
                     "--reasoner-output", str(RECORDED), "--segmenter", str(tiny_models["segmenter"])])
    assert code == 0, capsys.readouterr().err
    header = out.read_bytes()[:100]
    assert header[68:72] == b"GPKG" and int.from_bytes(header[60:64], "big") == 10200  # GeoPackage 1.2
    report = json.loads(subprocess.run([str(SYSTEM_PYTHON), "-c", _GDAL_READER, str(out)], capture_output=True,
                                       text=True, check=True).stdout)
    assert report["messages"] == [], report
    assert set(report["layers"]) == {"boxes", "points", "contours"}
    with rasterio.open(NAIP) as src:
        epsg = str(src.crs.to_epsg())
    for name, layer in report["layers"].items():
        assert [f for f, _ in layer["fields"]] == field_names(name)
        assert dict(layer["fields"])["created"] == "DateTime"
        assert layer["features"] > 0 and layer["srs"] == epsg
    assert report["layers"]["boxes"]["features"] == 4


def test_srs_of_wkt_takes_the_root_authority_or_a_custom_id():
    wkt1 = ('PROJCS["NAD83 / UTM zone 14N",GEOGCS["NAD83",DATUM["North_American_Datum_1983",SPHEROID["GRS 1980",'
            '6378137,298.257222101,AUTHORITY["EPSG","7019"]],AUTHORITY["EPSG","6269"]],PRIMEM["Greenwich",0],'
            'UNIT["degree",0.0174532925199433],AUTHORITY["EPSG","4269"]],PROJECTION["Transverse_Mercator"],'
            'UNIT["metre",1,AUTHORITY["EPSG","9001"]],AUTHORITY["EPSG","26914"]]')
    assert srs_of_wkt(wkt1)[:3] == (26914, "EPSG", 26914)
    assert srs_of_wkt(wkt1.rsplit(',AUTHORITY["EPSG","26914"]', 1)[0] + "]")[:2] == (100000, "NONE")
    assert srs_of_wkt(None)[:2] == (-1, "NONE")


def _sparse_scene(path: Path, size: int, data_at: int) -> Path:
    """A size x size GeoTIFF of nodata with one 512 x 512 block of data: sparse, a few kB on disk."""
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8", "nodata": 0,
               "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate", "SPARSE_OK": "TRUE",
               "crs": "EPSG:32614", "transform": Affine(0.5, 0, 500000, 0, -0.5, 5000000), "BIGTIFF": "YES"}
    block = np.random.default_rng(3).integers(1, 255, (3, 512, 512), dtype=np.uint8)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(block, window=Window(data_at, data_at, 512, 512))
    return path


def test_mask_of_a_sparse_50000_pixel_scene_stays_sparse(tmp_path):
    size, data_at = 50_000, 25_088  # data_at: a multiple of 512, so the data is exactly one block
    scene = _sparse_scene(tmp_path / "scene.tif", size, data_at)
    assert scene.stat().st_size < 1_000_000
    image = read_raster(scene, max_size=2048)
    assert image.is_decimated and image.valid is not None and image.valid.sum() > 0
    mask = image.valid.copy()  # "everything with data is the target"
    started = time.perf_counter()
    out = write_mask_geotiff(mask, image, tmp_path / "scene_mask.tif")
    elapsed = time.perf_counter() - started
    with rasterio.open(out) as dst:
        assert (dst.width, dst.height, dst.nodata) == (size, size, 255)
        assert dst.transform == Affine(0.5, 0, 500000, 0, -0.5, 5000000)
        window = dst.read(1, window=Window(data_at - 256, data_at - 256, 1024, 1024))
        corner = dst.read(1, window=Window(0, 0, 600, 600))
    assert (corner == 255).all()  # blocks left out read back as nodata
    assert (window == 1).sum() > 0 and set(np.unique(window)) <= {1, 255}
    # Only blocks around the data were written: the file is tiny, not 2.5 G pixels of zeros.
    assert out.stat().st_size < 2_000_000, (out.stat().st_size, elapsed)


def test_mask_of_an_oversized_source_is_refused_with_what_to_do(tmp_path):
    image = read_raster(_sparse_scene(tmp_path / "small.tif", 1024, 0), max_size=64)
    side = int(MAX_MASK_PIXELS ** 0.5) + 1
    image.source_width = image.source_height = side
    with pytest.raises(OutputError, match="Clip the raster"):
        write_mask_geotiff(np.zeros((image.height, image.width), bool), image, tmp_path / "huge.tif")
    assert not (tmp_path / "huge.tif").exists()
    shutil.rmtree(tmp_path, ignore_errors=True)
