"""Run the tiled engine over a raster in a fresh process and print its memory: used by
test_tiled_memory.py and bench/bench_tiled.py.

    python tests/backend/tiled_memory_probe.py RASTER [TILE_SIZE] [--make N]

--make N first writes an N x N, 3-band, tiled GeoTIFF at RASTER (strip by strip, so making it
costs no memory either), with a dark shape every 700 px. Prints one JSON line: baseline RSS after
the imports, peak RSS (VmHWM), tiles, objects, seconds.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from georeasoner_plugin.backend.tiled.engine import TiledEngine, TiledRequest  # noqa: E402
from georeasoner_plugin.backend.tiled.source import RasterTileSource  # noqa: E402
from georeasoner_plugin.core.tiling import plan_tiles  # noqa: E402
from tiled_standins import DarkShapeReasoner, ThresholdSegmenter  # noqa: E402


def status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def make_raster(path: str, size: int) -> None:
    import rasterio
    from rasterio.windows import Window
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8", "tiled": True,
               "blockxsize": 512, "blockysize": 512, "compress": "deflate", "zlevel": 1, "BIGTIFF": "IF_SAFER",
               "crs": "EPSG:32633", "transform": rasterio.Affine(1, 0, 500000, 0, -1, 4_500_000)}
    strip = 512
    with rasterio.open(path, "w", **profile) as out:
        for row in range(0, size, strip):
            rows = min(strip, size - row)
            block = np.full((rows, size), 190, dtype=np.uint8)
            r = np.arange(row, row + rows)[:, None] % 700
            c = np.arange(size)[None, :] % 700
            block[(r > 300) & (r < 420) & (c > 300) & (c < 460)] = 40
            out.write(np.broadcast_to(block, (3, rows, size)), window=Window(0, row, size, rows))


def main() -> None:
    path = sys.argv[1]
    tile = int(sys.argv[2]) if len(sys.argv) > 2 and not sys.argv[2].startswith("--") else 1024
    concurrency = int(sys.argv[sys.argv.index("--concurrency") + 1]) if "--concurrency" in sys.argv else 4
    if "--make" in sys.argv:
        make_raster(path, int(sys.argv[sys.argv.index("--make") + 1]))
    baseline = status_kb("VmRSS")
    started = time.perf_counter()
    with RasterTileSource(path) as source:
        plan = plan_tiles(source.width, source.height, tile_size=tile)
        result = TiledEngine(DarkShapeReasoner(), ThresholdSegmenter()).run(
            source, plan, TiledRequest("Which dark shapes are there?", concurrency=concurrency))
    print(json.dumps({"baseline_mb": baseline / 1024, "peak_mb": status_kb("VmHWM") / 1024,
                      "tiles": plan.grid_size, "objects": len(result.answer.objects),
                      "seconds": time.perf_counter() - started, "timings": result.timings}))


if __name__ == "__main__":
    main()
