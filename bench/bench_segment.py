"""POST /v1/segment (the plugin's correction tool): model time vs everything else for one object
re-segmented from the cached embedding of a NAIP-sized image (934 x 723), tiny SAM2 on this machine.
"Other" is the request's wall time minus SAM2's encode+decode: multipart parsing, PNG decoding,
prompt checks, contour tracing, run-length encoding and JSON. Two rows: the image sent with the
request (the first correction of an answer) and named by its key (every later one). Target for the
non-model part of a whole correction, this and the plugin's side together: < 100 ms.

Run: ``python bench/bench_segment.py`` or call ``run()``.
"""
from __future__ import annotations

import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import Image


def run(repeats: int = 10) -> None:
    from starlette.testclient import TestClient

    from georeasoner_plugin.backend.cascade import Cascade
    from georeasoner_plugin.backend.segmenter import Segmenter
    from georeasoner_plugin.backend.server import Service, ServiceConfig, create_app
    from georeasoner_plugin.backend.tiny import make_tiny_models
    from georeasoner_plugin.core.api import image_key

    folder = Path(tempfile.mkdtemp(prefix="bench-segment-"))
    segmenter = Segmenter(str(make_tiny_models(folder)["segmenter"]), device="cpu", cache_size=4)
    service = Service(ServiceConfig(recorded_output="<answer>[]</answer>", segmenter="tiny"),
                      loader=lambda cfg: (Cascade(segmenter=segmenter), {"device": "cpu", "dtype": "float32"}))
    service.start()
    while service.state != "ready":
        time.sleep(0.01)
    image = np.random.default_rng(0).integers(0, 255, (723, 934, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    png = buffer.getvalue()
    token = "bench-token-0123456789abcdef"
    key = image_key(png)
    with TestClient(create_app(service, token=token), base_url="http://127.0.0.1") as client:
        results = {}
        for mode in ("image sent", "image named by key"):
            rows = []
            for n in range(repeats + 1):
                request = {"objects": [{"box": [490, 240, 565, 295], "points": [[527, 268], [500 + n, 250]],
                                        "labels": [1, 0]}], "image_key": key}
                files = {"request": (None, json.dumps(request), "application/json")}
                if mode == "image sent":
                    files["image"] = ("a.png", png, "image/png")
                started = time.perf_counter()
                r = client.post("/v1/segment", headers={"Authorization": f"Bearer {token}"}, files=files)
                wall = time.perf_counter() - started
                r.raise_for_status()
                t = r.json()["timings"]
                if n:  # the first request encodes the image; corrections hit the cache
                    rows.append((wall, t["model_s"], wall - t["model_s"], t["other_s"], t["cache_hit"],
                                 sum(len(p["exterior"]) for p in r.json()["objects"][0]["polygons"])))
            results[mode] = rows
    service.close()
    print(f"\nCorrection of one object (POST /v1/segment, 934 x 723 PNG of {len(png) // 1024} KiB, cached embedding; "
          f"ms, median of {repeats}). The tiny random SAM2 gives speckled masks (thousands of vertices), the "
          "worst case for everything after the model; the plugin's side is in bench_correct_qgis.")
    print("| image | request | SAM2 decode | non-model (request) | of which vectorising | cache hits | vertices |\n"
          "|---|---|---|---|---|---|---|")
    for mode, rows in results.items():
        med = [statistics.median(r[i] for r in rows) * 1000 for i in range(4)]
        print(f"| {mode} | {med[0]:.0f} | {med[1]:.0f} | {med[2]:.0f} | {med[3]:.0f} | "
              f"{sum(r[4] for r in rows)}/{len(rows)} | {rows[-1][5]} |")
    print(f"The same non-model stages on a smooth mask (an ellipse with a hole, as SAM2 gives for a lake): "
          f"{smooth_mask_stages():.1f} ms")


def smooth_mask_stages(repeats: int = 20) -> float:
    """ms (median) of the route's non-model stages (polygons, run lengths, JSON) on a smooth mask of
    the bench image's size: an ellipse with a hole, what SAM2 gives for a lake; the tiny SAM2 cannot."""
    from georeasoner_plugin.backend.vectorize import mask_to_polygons, mask_to_rle

    yy, xx = np.mgrid[0:723, 0:934]
    outer = ((xx - 527) / 60.0) ** 2 + ((yy - 268) / 40.0) ** 2 <= 1
    mask = outer & ~(((xx - 527) / 15.0) ** 2 + ((yy - 268) / 10.0) ** 2 <= 1)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        polygons = mask_to_polygons(mask, 0.0, 0.0)
        json.dumps({"objects": [{"score": 0.9, "mask": mask_to_rle(mask).to_dict(),
                                 "polygons": [p.to_dict() for p in polygons]}]})
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


if __name__ == "__main__":
    run()
