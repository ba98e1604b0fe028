"""The plugin's side of one correction (issue 14): what follows the backend's POST /v1/segment answer.

Run with QGIS's Python (``make bench`` does, when the QGIS venv exists):
``.venv-qgis/bin/python bench/bench_correct_qgis.py``. No backend: a stored answer of four objects on
a NAIP-sized capture (934 x 723, UTM), then one object replaced as a correction replaces it, timed
stage by stage:

- parse: the segment answer's JSON read into the object (mask run lengths, polygons);
- encode: the answer's JSON put together (only the changed object is encoded again);
- store: its features, its part of the mask raster and the answer row written to the GeoPackage;
- layers: the project's layers of the answer re-read.

Two kinds of object: a smooth one (an ellipse with one hole, a few hundred vertices, what SAM2 gives
for a lake or a field) and a speckled one (10 % noise in its box: what the tiny random SAM2 of the
tests gives, thousands of rings; the worst case). The backend's own non-model part of the same
correction is in bench_segment (run with the backend's Python). Target for the whole non-model
time of a correction: < 100 ms.
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

WIDTH, HEIGHT = 934, 723
BOXES = [(120, 80, 330, 260), (400, 300, 620, 520), (650, 90, 880, 250), (100, 420, 300, 680)]


def smooth(box, shift: float = 0.0):
    """(mask, polygon dicts) of an ellipse filling the box, with a hole, moved right by `shift` of its width."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2 + shift * (x2 - x1), (y1 + y2) / 2
    rx, ry = (x2 - x1) / 2 * 0.9, (y2 - y1) / 2 * 0.9
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    inside = ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1
    hole = ((xx + 0.5 - cx) / (rx / 4)) ** 2 + ((yy + 0.5 - cy) / (ry / 4)) ** 2 <= 1
    angles = np.linspace(0, 2 * np.pi, 240, endpoint=False)
    ring = [[float(cx + rx * np.cos(a)), float(cy + ry * np.sin(a))] for a in angles]
    inner = [[float(cx + rx / 4 * np.cos(a)), float(cy + ry / 4 * np.sin(a))] for a in angles[::-4]]
    return inside & ~hole, [{"exterior": ring, "holes": [inner]}]


def speckled(box, seed: int = 0):
    """(mask, polygon dicts) of 10 % noise in the box, one square ring per set pixel (a rasterio-like
    outline would merge touching pixels; the count of rings is what matters here)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[y1:y2, x1:x2] = np.random.default_rng(seed).random((y2 - y1, x2 - x1)) < 0.1
    rows, cols = np.nonzero(mask)
    polygons = [{"exterior": [[c, r], [c + 1, r], [c + 1, r + 1], [c, r + 1]], "holes": []}
                for r, c in zip(rows.tolist(), cols.tolist())]
    return mask, polygons


def segment_reply(mask, polygons) -> bytes:
    """The JSON of POST /v1/segment for one object, as the backend sends it."""
    from georeasoner_plugin.rle import mask_to_rle

    return json.dumps({"objects": [{"score": 0.9, "mask": mask_to_rle(mask).to_dict(), "polygons": polygons}],
                       "image_key": "0" * 32, "timings": {"model_s": 0.0, "other_s": 0.0, "cache_hit": True}}
                      ).encode("utf-8")


def run(repeats: int = 7) -> None:
    from qgis.core import QgsCoordinateReferenceSystem, QgsProject

    from georeasoner_plugin.core.georef import GeoTransform
    from georeasoner_plugin.core.protocol import Answer, AnswerObject, MaskRLE, Polygon
    from georeasoner_plugin.qgis_io.features import georeference
    from georeasoner_plugin.qgis_io.layers import add_to_project, refresh_answer_layers
    from georeasoner_plugin.qgis_io.store import AnswerStore
    from georeasoner_plugin.rle import mask_to_rle

    folder = Path(tempfile.mkdtemp(prefix="bench-correct-"))
    project = QgsProject.instance()
    crs = QgsCoordinateReferenceSystem("EPSG:26914")
    transform = GeoTransform.from_gdal((485899.0, 0.6, 0.0, 5207599.0, 0.0, -0.6))
    rows = []
    for kind, make in (("smooth (ellipse with a hole)", lambda box, n: smooth(box, 0.02 * (n % 3))),
                       ("speckled (tiny SAM2-like)", lambda box, n: speckled(box, n))):
        objects = []
        for index, box in enumerate(BOXES):
            mask, polygons = make(box, 0)
            objects.append(AnswerObject(index=index, box=tuple(float(v) for v in box), points=[],
                                        score=0.9, mask=mask_to_rle(mask),
                                        polygons=[Polygon.from_dict(p) for p in polygons]))
        answer = Answer("Which lakes could supply irrigation water?", "remotereasoner", WIDTH, HEIGHT, objects,
                        models={"reasoner": "bench"})
        store = AnswerStore(folder / f"{len(rows)}.gpkg")
        stored = store.add(georeference(answer, transform, crs, ["naip"], "raster"), "bench",
                           original_json=answer.to_json())
        add_to_project(stored, project)
        texts = {o.index: o.to_json() for o in stored.answer.objects}
        timings = []
        for n in range(repeats + 1):
            reply = segment_reply(*make(BOXES[1], n + 1))
            started = time.perf_counter()
            (out,) = json.loads(reply.decode("utf-8"))["objects"]
            obj = next(o for o in stored.answer.objects if o.index == 1)
            obj.mask = MaskRLE.from_dict(out["mask"])
            obj.polygons = [Polygon.from_dict(p) for p in out["polygons"]]
            obj.score = float(out["score"])
            parsed = time.perf_counter()
            texts[1] = obj.to_json()
            answer_json = stored.answer.to_json_from_objects([texts[o.index] for o in stored.answer.objects])
            encoded = time.perf_counter()
            stored = store.update_answer(stored, stored.answer, [1], stored.original_json, [1],
                                         answer_json=answer_json)
            written = time.perf_counter()
            refresh_answer_layers(stored.answer.answer_id, stored, project)
            done = time.perf_counter()
            if n:  # the first run warms GDAL's and QGIS's caches
                timings.append((parsed - started, encoded - parsed, written - encoded, done - written,
                                done - started))
        vertices = sum(len(p.exterior) + sum(len(h) for h in p.holes) for p in obj.polygons)
        rows.append((kind, vertices, [statistics.median(t[i] for t in timings) * 1000 for i in range(5)]))
    project.clear()
    print(f"\nPlugin side of one correction (934 x 723 capture, 4 objects, one replaced; ms, median of {repeats}; "
          "target for the whole non-model time: < 100 ms)")
    print("| object | vertices | parse | encode | store | layers | total |\n|---|---|---|---|---|---|---|")
    for kind, vertices, med in rows:
        print(f"| {kind} | {vertices} | " + " | ".join(f"{v:.0f}" for v in med) + " |")


def main() -> int:
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    try:
        run()
    finally:
        app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
