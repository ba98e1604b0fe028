"""Cascade benchmark: per-stage times on the NAIP sample at 1x, 2x and 4x, the embedding-cache
effect of a second question, and the non-model stages for 20 objects at growing image sizes.

Model stages run the tiny random models (their times say nothing about a 7B model on a GPU; they
show that the stage runs and how it scales). Non-model stages (read, preprocess, parse, vectorize,
georeference, write) are the real production code and are what the targets are about:
all non-model stages together <= 50 ms for a 1024x1024 image with 20 objects on one core, linear
in pixels.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import rasterio
from rasterio.enums import Resampling

from bench.bench_vectorize import blobs_with_holes
from georeasoner_plugin.backend.cascade import AskOptions, Cascade, resize_to_frame
from georeasoner_plugin.backend.imagery import read_raster
from georeasoner_plugin.backend.writers import write_mask_geotiff, write_vectors
from georeasoner_plugin.backend.vectorize import mask_to_polygons
from georeasoner_plugin.core.frames import map_objects_to_image
from georeasoner_plugin.core.georef import GeoTransform
from georeasoner_plugin.core.profiles import get_profile
from georeasoner_plugin.core.protocol import Answer, AnswerObject

ROOT = Path(__file__).resolve().parents[1]
NAIP = ROOT.parent / "shared" / "data" / "naip_nd_2020.tif"
RECORDED = (ROOT / "examples" / "naip_lakes_remotereasoner.txt").read_text()
QUESTION = "Which lakes could supply irrigation water to the fields around them?"


def _upsampled(source: Path, factor: int, folder: Path) -> Path:
    if factor == 1:
        return source
    target = folder / f"naip_x{factor}.tif"
    with rasterio.open(source) as src:
        profile = src.profile.copy()
        data = src.read(out_shape=(src.count, src.height * factor, src.width * factor), resampling=Resampling.bilinear)
        profile.update(width=src.width * factor, height=src.height * factor,
                       transform=src.transform * src.transform.scale(1 / factor, 1 / factor))
    with rasterio.open(target, "w", **profile) as dst:
        dst.write(data)
    return target


def _timed(function):
    started = time.perf_counter()
    value = function()
    return value, time.perf_counter() - started


def _georeference(answer: Answer, transform: GeoTransform) -> list:
    """Every vertex of the answer mapped to the CRS, as the writers do before building geometries."""
    mapped: list = []
    for obj in answer.objects:
        if obj.box is not None:
            mapped.append(transform.box_to_map_ring(obj.box))
        mapped += [transform.pixel_to_map(col, row) for col, row in obj.points]
        mapped += [transform.polygon_to_map(polygon) for polygon in obj.polygons]
    return mapped


def naip_stages(models: Dict[str, Path], folder: Path) -> List[Dict[str, object]]:
    from georeasoner_plugin.backend.reasoner import Reasoner
    from georeasoner_plugin.backend.segmenter import Segmenter

    (reasoner, segmenter), load_s = _timed(lambda: (Reasoner(models["reasoner"]), Segmenter(models["segmenter"])))
    cascade = Cascade(reasoner=reasoner, segmenter=segmenter, profile="remotereasoner")
    rows = []
    for factor in (1, 2, 4):
        path = _upsampled(NAIP, factor, folder)
        raster, read_s = _timed(lambda: read_raster(path, max_size=8192))
        generated = cascade.run(raster.rgb, QUESTION, options=AskOptions(max_new_tokens=32, seed=0,
                                                                         granularities=("boxes",)))
        result = cascade.run(raster.rgb, QUESTION, raw_output=RECORDED, valid=raster.valid)
        answer = result.answer
        _, georef_s = _timed(lambda: _georeference(answer, raster.transform))
        out = folder / f"x{factor}.gpkg"

        def write():
            write_vectors(answer, raster.transform, raster.crs_wkt, out, overwrite=True)
            write_mask_geotiff(result.union_mask(answer.image_height, answer.image_width), raster,
                               folder / f"x{factor}_mask.tif", overwrite=True)
        _, write_s = _timed(write)
        t = answer.timings
        rows.append({"image": f"NAIP x{factor} ({raster.width}x{raster.height})", "load": load_s if factor == 1 else None,
                     "read": read_s, "preprocess": generated.answer.timings.get("preprocess"),
                     "reason": generated.answer.timings.get("reason"), "parse": t.get("parse"),
                     "encode": t.get("encode"), "decode": t.get("decode"), "vectorize": t.get("vectorize"),
                     "georeference": georef_s, "write": write_s})
    return rows


def cache_effect(models: Dict[str, Path]) -> Dict[str, float]:
    from georeasoner_plugin.backend.segmenter import Segmenter

    segmenter = Segmenter(models["segmenter"])
    cascade = Cascade(segmenter=segmenter, profile="remotereasoner")
    raster = read_raster(NAIP)
    first = cascade.run(raster.rgb, "first question", raw_output=RECORDED).answer.timings
    second = cascade.run(raster.rgb, "second question", raw_output=RECORDED).answer.timings
    return {"first_encode": first["encode"], "second_encode": second["encode"],
            "first_total": first["encode"] + first["decode"], "second_total": second["encode"] + second["decode"]}


def _twenty_object_answer(size: int):
    """A recorded 20-box answer and 20 masks like SAM2's, for the non-model stages."""
    union = blobs_with_holes(size, count=26, seed=1)
    import cv2
    count, labels, stats, _ = cv2.connectedComponentsWithStats(union.view(np.uint8), connectivity=4)
    order = np.argsort(-stats[1:, cv2.CC_STAT_AREA])[:20] + 1
    masks = [labels == i for i in order]
    frame = get_profile("remotereasoner").frame.frame_for(size, size)
    boxes = []
    for i in order:
        x, y, w, h = stats[i, :4]
        fx1, fy1, fx2, fy2 = frame.box_to_frame((x, y, x + w, y + h))
        boxes.append(f"[{round(fx1)},{round(fy1)},{round(fx2)},{round(fy2)}]")
    raw = "<think>twenty objects</think><answer>[" + ",".join(boxes) + "]</answer>"
    return raw, masks


def non_model_stages(folder: Path) -> List[Dict[str, object]]:
    """Production code of every non-model stage for 20 objects, on one core."""
    rows = []
    profile = get_profile("remotereasoner")
    transform = GeoTransform.from_gdal((485899.0, 5.0, 0.0, 5209246.0, 0.0, -5.0))
    for size in (512, 1024, 2048):
        raw, masks = _twenty_object_answer(size)
        image = np.zeros((size, size, 3), np.uint8)
        frame = profile.frame.frame_for(size, size)
        best: Dict[str, float] = {}
        for _ in range(3):
            timings = {}
            _, timings["preprocess"] = _timed(lambda: resize_to_frame(image, frame.frame_width, frame.frame_height,
                                                                       profile.frame.kind))
            (parsed, mapped), timings["parse"] = _timed(
                lambda: (lambda p: (p, map_objects_to_image(p.objects, frame)[0]))(profile.parse(raw)))
            polygons, timings["vectorize"] = _timed(lambda: [mask_to_polygons(m) for m in masks])
            answer = Answer(question="q", profile=profile.name, image_width=size, image_height=size,
                            objects=[AnswerObject(index=i, box=m.box, points=profile.sam_points(m.box, m.points),
                                                  polygons=polys) for i, (m, polys) in enumerate(zip(mapped, polygons))])
            _, timings["georeference"] = _timed(lambda: _georeference(answer, transform))
            _, timings["write"] = _timed(lambda: write_vectors(answer, transform, None, folder / f"n{size}.gpkg",
                                                               overwrite=True))
            for key, value in timings.items():
                best[key] = min(best.get(key, float("inf")), value)
        best["total"] = sum(best.values())
        rows.append({"image": f"{size}x{size}, {len(masks)} objects", **best,
                     "total per Mpx": best["total"] / (size * size / 1e6)})
    return rows


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:8.1f}"


def print_table(title: str, rows: List[Dict[str, object]], columns: List[str]) -> None:
    print(f"\n{title} (milliseconds)")
    print("| " + " | ".join(["case"] + columns) + " |")
    print("|" + "---|" * (len(columns) + 1))
    for row in rows:
        print("| " + " | ".join([str(row["image"])] + [_fmt(row.get(c)) for c in columns]) + " |")


def run(print_tables: bool = True) -> Dict[str, object]:
    from georeasoner_plugin.backend.tiny import make_tiny_models

    results: Dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if hasattr(os, "sched_setaffinity"):
            original = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {min(original)})
            try:
                results["non_model"] = non_model_stages(folder)
            finally:
                os.sched_setaffinity(0, original)
        else:
            results["non_model"] = non_model_stages(folder)
        if NAIP.exists():
            models = make_tiny_models(folder / "tiny")
            results["naip"] = naip_stages(models, folder)
            results["cache"] = cache_effect(models)
    if print_tables:
        print_table("Non-model stages, 20 objects, one core (target: total <= 50 ms at 1024x1024, linear in pixels)",
                    results["non_model"], ["preprocess", "parse", "vectorize", "georeference", "write", "total",
                                           "total per Mpx"])
        if "naip" in results:
            print_table("NAIP sample, tiny random models (model stages are NOT representative of 7B on a GPU)",
                        results["naip"], ["load", "read", "preprocess", "reason", "parse", "encode", "decode",
                                          "vectorize", "georeference", "write"])
            cache = results["cache"]
            print(f"\nSAM2 image-embedding cache (tiny SAM2): first question encode {cache['first_encode'] * 1000:.1f} ms, "
                  f"second question encode {cache['second_encode'] * 1000:.1f} ms "
                  f"(segmentation total {cache['first_total'] * 1000:.1f} -> {cache['second_total'] * 1000:.1f} ms)")
        else:
            print(f"\n(NAIP rows skipped: {NAIP} not found)")
    return results


if __name__ == "__main__":
    run()
