"""Tiled reasoning over whole rasters (issue 10): throughput of the non-model stages, peak memory
against raster size, and the efficiency of the concurrent OpenAI-compatible endpoint path.

The reasoner and segmenter are the rule-based stand-ins of tests/backend/tiled_standins.py (no
model runs), so the numbers are those of GeoReasoner's own code: windowed reads, the bounded
pipeline, vectorising and merging. Run alone with ``python -m bench.bench_tiled``; set
BENCH_TILED_SIZES=1000,5000 to skip the 20,000^2 raster (it takes minutes to write and run).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests" / "backend"
PROBE = TESTS / "tiled_memory_probe.py"
LATENCY_S = 0.2
SLOTS = 8


def _standins():
    sys.path.insert(0, str(TESTS))
    import tiled_standins  # noqa: E402 - test-only stand-ins, shared with the tests
    return tiled_standins


def _probe(path: Path, size: int, make: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if make:
        subprocess.run([sys.executable, str(PROBE), str(path), "1024", "--make", str(size)], env=env, check=True,
                       capture_output=True)
    done = subprocess.run([sys.executable, str(PROBE), str(path), "1024", "--concurrency", "4"], env=env,
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def stages(folder: Path) -> None:
    """Tiles per second of each non-model stage on a 5,000^2 raster of 1,024 px tiles."""
    from georeasoner_plugin.backend.tiled.engine import TiledEngine, TiledRequest
    from georeasoner_plugin.backend.tiled.merge import merge_records
    from georeasoner_plugin.backend.tiled.source import RasterTileSource
    from georeasoner_plugin.core.profiles import get_profile
    from georeasoner_plugin.core.tiling import plan_tiles

    s = _standins()
    path = folder / "stages.tif"
    subprocess.run([sys.executable, str(PROBE), str(path), "1024", "--make", "5000"], check=True, capture_output=True,
                   env=dict(os.environ, PYTHONPATH=str(ROOT)))
    print("\nTiled: non-model stages on a 5,000^2 3-band raster, 1,024 px tiles (stand-in reasoner/segmenter)")
    print("| stage | tiles | seconds | tiles/s |\n|---|---|---|---|")
    with RasterTileSource(path) as source:
        plan = plan_tiles(source.width, source.height, tile_size=1024)
        tiles = plan.tiles
        started = time.perf_counter()
        images = [source.read(plan, t) for t in tiles[:12]]
        read_s = time.perf_counter() - started
        print(f"| windowed read | 12 | {read_s:.2f} | {12 / read_s:.1f} |")
        engine = TiledEngine(s.DarkShapeReasoner(), s.ThresholdSegmenter())
        prof = get_profile("remotereasoner")
        request = TiledRequest("Which dark shapes are there?")
        raws = [engine._reason(prof, request, rgb, lambda: False) for rgb, _ in images]
        started = time.perf_counter()
        records = [engine._segment(prof, request, t, rgb, valid, raw)
                   for t, (rgb, valid), raw in zip(tiles, images, raws)]
        seg_s = time.perf_counter() - started
        print(f"| parse + segment (stand-in) + vectorise | 12 | {seg_s:.2f} | {12 / seg_s:.1f} |")
        for r in records:
            r.pop("_seconds", None)
        started = time.perf_counter()
        for _ in range(10):
            merge_records(records)
        merge_s = (time.perf_counter() - started) / 10
        print(f"| merge | 12 | {merge_s:.3f} | {12 / merge_s:.0f} |")
        started = time.perf_counter()
        result = engine.run(source, plan, TiledRequest("Which dark shapes are there?", concurrency=2))
        whole_s = time.perf_counter() - started
        print(f"| whole pipeline (stand-ins) | {plan.grid_size} | {whole_s:.2f} | {plan.grid_size / whole_s:.1f} |")
        assert len(result.answer.objects) == 49


def memory(folder: Path) -> None:
    sizes = [int(v) for v in os.environ.get("BENCH_TILED_SIZES", "1000,5000,20000").split(",")]
    print("\nTiled: peak RSS against raster size (3-band uint8 tiled GeoTIFF, 1,024 px tiles, concurrency 4; "
          "target: 20,000^2 under 1,536 MB)")
    print("| raster | tiles | baseline MB | peak MB | seconds |\n|---|---|---|---|---|")
    for size in sizes:
        path = folder / f"mem_{size}.tif"
        result = _probe(path, size, make=True)
        print(f"| {size:,}^2 | {result['tiles']} | {result['baseline_mb']:.0f} | {result['peak_mb']:.0f} | "
              f"{result['seconds']:.1f} |", flush=True)
        path.unlink()


class _SlowEndpoint(BaseHTTPRequestHandler):
    """A fake OpenAI-compatible endpoint: a fixed 200 ms per request, 8 requests served at once."""

    protocol_version = "HTTP/1.0"
    slots = threading.BoundedSemaphore(SLOTS)

    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_GET(self):  # noqa: N802
        body = json.dumps({"data": [{"id": "fake"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.slots:
            time.sleep(LATENCY_S)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        chunk = {"choices": [{"delta": {"content": "<think>nothing</think><answer>[]</answer>"}}]}
        self.wfile.write(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode())


def endpoint_efficiency(folder: Path) -> None:
    from georeasoner_plugin.backend.remote_reasoner import RemoteReasoner
    from georeasoner_plugin.backend.tiled.engine import TiledEngine, TiledRequest
    from georeasoner_plugin.backend.tiled.source import RasterTileSource
    from georeasoner_plugin.core.tiling import plan_tiles

    path = folder / "endpoint.tif"
    subprocess.run([sys.executable, str(PROBE), str(path), "1024", "--make", "4096"], check=True, capture_output=True,
                   env=dict(os.environ, PYTHONPATH=str(ROOT)))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowEndpoint)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    ideal = SLOTS / LATENCY_S
    print(f"\nTiled: concurrent endpoint path against a fake OpenAI-compatible endpoint ({LATENCY_S * 1000:.0f} ms "
          f"per request, {SLOTS} slots; ideal {ideal:.0f} tiles/s; target efficiency >= 0.9)")
    print("| tile px | tiles | concurrency | seconds | tiles/s | efficiency |\n|---|---|---|---|---|---|")
    try:
        for tile_size, concurrency in ((256, 8), (256, 16), (512, 8)):
            reasoner = RemoteReasoner(url, "fake")
            with RasterTileSource(path) as source:
                plan = plan_tiles(source.width, source.height, tile_size=tile_size, overlap=0.0)
                started = time.perf_counter()
                TiledEngine(reasoner).run(source, plan, TiledRequest("anything?", options=_boxes_only(),
                                                                     concurrency=concurrency))
                seconds = time.perf_counter() - started
            rate = plan.grid_size / seconds
            print(f"| {tile_size} | {plan.grid_size} | {concurrency} | {seconds:.2f} | {rate:.1f} | "
                  f"{rate / ideal:.2f} |", flush=True)
            reasoner.close()
    finally:
        server.shutdown()


def _boxes_only():
    from georeasoner_plugin.backend.cascade import AskOptions
    return AskOptions(granularities=("boxes", "points"))


def run() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-tiled-") as tmp:
        folder = Path(tmp)
        stages(folder)
        endpoint_efficiency(folder)
        memory(folder)


if __name__ == "__main__":
    run()
