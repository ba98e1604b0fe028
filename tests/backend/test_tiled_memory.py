"""Bounded memory: peak RSS of a tiled run follows the tiles in flight, not the raster's size.

The issue's target is a 20,000^2 3-band raster under 1.5 GB, measured in `make bench`. Here two
rasters made by the probe (strip by strip, in their own process), 3,000^2 and 5,000^2, are run in
fresh processes; the larger may need at most the proportional share of that budget for its extra
pixels (1.5 GB x 16 M / 400 M px = 61 MB), and in fact must stay within a quarter of its extra raw
pixel bytes. GDAL's block cache is pinned to 8 MB so the comparison sees our memory, not GDAL's
cache filling up (the engine's default cache is 64 MB, a constant).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).resolve().parent / "tiled_memory_probe.py"


def probe(path: Path, size: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), GDAL_CACHEMAX="8")
    subprocess.run([sys.executable, str(PROBE), str(path), "1024", "--make", str(size)], env=env, check=True,
                   capture_output=True)  # the raster is made in its own process
    done = subprocess.run([sys.executable, str(PROBE), str(path), "1024", "--concurrency", "2"], env=env,
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_peak_memory_follows_the_tiles_not_the_raster(tmp_path):
    small = probe(tmp_path / "small.tif", 3000)
    large = probe(tmp_path / "large.tif", 5000)
    assert (small["tiles"], large["tiles"]) == (16, 36) and large["objects"] == 49
    extra_pixels = 5000 ** 2 - 3000 ** 2
    budget_mb = min(1.5 * 1024 * extra_pixels / 20_000 ** 2, 0.25 * 3 * extra_pixels / 2 ** 20)
    grown = large["peak_mb"] - small["peak_mb"]
    assert grown < budget_mb, f"peak RSS grew by {grown:.0f} MB from 3,000^2 to 5,000^2 (limit {budget_mb:.0f} MB)"
