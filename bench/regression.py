"""The CPU table of `make bench`: every non-model stage beside its target, and a regression check.

Absolute times depend on the machine and on what else runs on it, so the regression check compares
*ratios*: each stage's time over a fixed reference workload (numpy, zlib and plain Python, the mix
the stages themselves run), both measured in the same rounds, interleaved, and summarised by the
median over rounds. Times are CPU time of this process (time.process_time) on one core, which a
busy machine disturbs far less than wall time. The ratios are compared with those kept in
bench/baseline.json; a stage whose ratio moved by more than MOVED is named, with the factor.
``python -m bench --update-baseline`` records the current ratios as the new baseline.
"""
from __future__ import annotations

import io
import json
import os
import platform
import statistics
import tempfile
import time
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

BASELINE = Path(__file__).with_name("baseline.json")
# A ratio this much larger (or smaller) than the baseline's counts as moved. On a shared 2-core
# machine rasterio's own ratios wander by up to ~1.3x between runs, so smaller moves are noise.
MOVED = 1.5
ROUNDS = 9
NON_MODEL_TARGET_MS = 50.0  # 1024 x 1024, 20 objects, all non-model stages, one core
VECTORIZER_TARGET = 0.5  # mask_to_polygons / rasterio.features.shapes
# Transport: decoding what the client sent; an uncompressed TIFF or a shared file costs no inflate.
TRANSPORT_SIZE = 2048


def reference_workload() -> None:
    """Fixed work the stage times are divided by (its own cost follows the machine, not our code)."""
    rng = np.random.default_rng(0)
    np.sort(rng.random(200_000))
    zlib.compress(rng.integers(0, 16, 1_000_000, dtype=np.uint8).tobytes(), 6)
    total = 0
    for i in range(100_000):
        total += i % 7
    return None


def _stages(folder: Path) -> Tuple[List[Tuple[str, Callable[[], object]]], Dict[str, object]]:
    """(name, callable) of every measured stage, built once; the callables rerun the production code."""
    from bench.bench_cascade import _twenty_object_answer
    from bench.bench_vectorize import blobs_with_holes, object_with_holes, speckle, thin_lines
    from georeasoner_plugin.backend.cascade import resize_to_frame
    from georeasoner_plugin.backend.imagery import read_image_bytes
    from georeasoner_plugin.backend.vectorize import mask_to_polygons
    from georeasoner_plugin.backend.writers import _features as georeference_features
    from georeasoner_plugin.backend.writers import write_vectors
    from georeasoner_plugin.core.frames import map_objects_to_image
    from georeasoner_plugin.core.georef import GeoTransform
    from georeasoner_plugin.core.profiles import get_profile
    from georeasoner_plugin.core.protocol import Answer, AnswerObject
    from PIL import Image
    from rasterio import features

    size = 1024
    profile = get_profile("remotereasoner")
    transform = GeoTransform.from_gdal((485899.0, 1.0, 0.0, 5209246.0, 0.0, -1.0))
    wkt = ('PROJCS["NAD83 / UTM zone 14N",GEOGCS["NAD83",DATUM["North_American_Datum_1983",SPHEROID["GRS 1980",'
           '6378137,298.257222101]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],'
           'PROJECTION["Transverse_Mercator"],PARAMETER["central_meridian",-99],PARAMETER["scale_factor",0.9996],'
           'PARAMETER["false_easting",500000],UNIT["metre",1],AUTHORITY["EPSG","26914"]]')
    raw, masks = _twenty_object_answer(size)
    image = (np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8)
    frame = profile.frame.frame_for(size, size)
    mapped = map_objects_to_image(profile.parse(raw).objects, frame)[0]
    answer = Answer(question="q", profile=profile.name, image_width=size, image_height=size,
                    objects=[AnswerObject(index=i, box=m.box, points=profile.sam_points(m.box, m.points),
                                          polygons=mask_to_polygons(mask))
                             for i, (m, mask) in enumerate(zip(mapped, masks))])
    capture = np.ascontiguousarray(np.tile(image, (2, 2, 1))[:TRANSPORT_SIZE, :TRANSPORT_SIZE])
    encoded = {}
    for fmt, options in (("PNG", {"compress_level": 1}), ("TIFF", {}), ("WEBP", {"lossless": True, "method": 0})):
        buffer = io.BytesIO()
        Image.fromarray(capture).save(buffer, format=fmt, **options)
        encoded[fmt] = buffer.getvalue()
    stages = [
        ("preprocess", lambda: resize_to_frame(image, frame.frame_width, frame.frame_height, profile.frame.kind)),
        ("parse", lambda: map_objects_to_image(profile.parse(raw).objects, frame)),
        ("vectorize", lambda: [mask_to_polygons(m) for m in masks]),
        ("georeference", lambda: georeference_features(answer, transform)),  # the writer's own step
        ("write", lambda: write_vectors(answer, transform, wkt, folder / "bench.gpkg", overwrite=True)),
        ("decode PNG", lambda: read_image_bytes(encoded["PNG"])),
        ("decode TIFF", lambda: read_image_bytes(encoded["TIFF"])),
        ("decode WebP lossless", lambda: read_image_bytes(encoded["WEBP"])),
    ]
    for name, mask in (("64 blobs", blobs_with_holes(64, count=3)), ("1024 blobs", blobs_with_holes(1024)),
                       ("512 speckle", speckle(512)), ("512 thin lines", thin_lines(512)),
                       ("2048 1000 holes", object_with_holes(2048))):
        stages.append((f"vectorizer {name}", lambda mask=mask: mask_to_polygons(mask)))
        stages.append((f"shapes {name}", lambda mask=mask: list(features.shapes(mask.view(np.uint8), mask=mask))))
    sizes = {fmt: len(data) for fmt, data in encoded.items()}
    return stages, sizes


def measure(rounds: int = ROUNDS) -> Dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="georeasoner-bench-") as tmp:
        stages, sizes = _stages(Path(tmp))
        everything = [("reference", reference_workload)] + stages
        for _, function in everything:  # warm-up
            function()
        times: Dict[str, List[float]] = {name: [] for name, _ in everything}
        ratios: Dict[str, List[float]] = {name: [] for name, _ in stages}
        for _ in range(rounds):
            this_round = {}
            for name, function in everything:
                started = time.process_time()
                function()
                this_round[name] = time.process_time() - started
                times[name].append(this_round[name])
            for name, _ in stages:
                ratios[name].append(this_round[name] / max(this_round["reference"], 1e-9))
    median_ms = {name: statistics.median(values) * 1000 for name, values in times.items()}
    ratio = {name: statistics.median(values) for name, values in ratios.items()}
    vectorizer = {}
    for name in [n for n in median_ms if n.startswith("vectorizer ")]:
        case = name[len("vectorizer "):]
        vectorizer[case] = statistics.median(a / max(b, 1e-9) for a, b in zip(times[name], times[f"shapes {case}"]))
    return {"median_ms": median_ms, "ratio_to_reference": ratio, "vectorizer_vs_shapes": vectorizer,
            "encoded_bytes": sizes, "rounds": rounds, "machine": platform.machine(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d", time.gmtime())}


def compare(current: Dict[str, object], baseline: Optional[Dict[str, object]]) -> List[str]:
    """One line per stage whose ratio moved by more than MOVED (faster or slower) since the baseline."""
    if not baseline:
        return []
    moved = []
    before, now = baseline.get("ratio_to_reference", {}), current["ratio_to_reference"]
    for name, value in now.items():
        old = before.get(name)
        if not old or name.startswith("shapes "):  # rasterio's times are the vectorizer's yardstick, not ours
            continue
        factor = value / old
        if factor > MOVED or factor < 1 / MOVED:
            direction = "slower" if factor > 1 else "faster"
            moved.append(f"{name}: {factor:.2f}x {direction} than the baseline "
                         f"(ratio to the reference {old:.3f} -> {value:.3f})")
    return moved


def table(current: Dict[str, object], baseline: Optional[Dict[str, object]]) -> str:
    median, ratio = current["median_ms"], current["ratio_to_reference"]
    base = (baseline or {}).get("ratio_to_reference", {})
    non_model = ["preprocess", "parse", "vectorize", "georeference", "write"]
    total = sum(median[n] for n in non_model if n != "georeference")  # the writer georeferences: in "write"
    lines = [f"CPU stages, one core, CPU time, medians of {current['rounds']} interleaved rounds "
             f"(1024 x 1024 image, 20 objects)",
             "| stage | ms | target | | ratio to reference | baseline ratio | change |", "|---|---|---|---|---|---|---|"]

    def change(name):
        return f"{ratio[name] / base[name]:.2f}x" if base.get(name) else "-"

    for name in non_model:
        label = "georeference (part of write)" if name == "georeference" else name
        lines.append(f"| {label} | {median[name]:.1f} | | | {ratio[name]:.3f} | {base.get(name, 0) or '-'} | "
                     f"{change(name)} |")
    lines.append(f"| **non-model total** | **{total:.1f}** | <= {NON_MODEL_TARGET_MS:.0f} ms | "
                 f"{'ok' if total <= NON_MODEL_TARGET_MS else 'MISSED'} | | | |")
    for fmt in ("PNG", "TIFF", "WebP lossless"):
        name = f"decode {fmt}"
        size = current["encoded_bytes"]["WEBP" if fmt.startswith("WebP") else fmt] / 2**20
        lines.append(f"| {name} {TRANSPORT_SIZE} px ({size:.1f} MB) | {median[name]:.1f} | "
                     f"{'no inflate' if fmt == 'TIFF' else ''} | | {ratio[name]:.3f} | {base.get(name, 0) or '-'} | "
                     f"{change(name)} |")
    for case, value in current["vectorizer_vs_shapes"].items():
        name = f"vectorizer {case}"
        lines.append(f"| vectorizer {case} | {median[name]:.2f} | <= {VECTORIZER_TARGET} x shapes | "
                     f"{value:.2f}x {'ok' if value <= VECTORIZER_TARGET else 'MISSED'} | {ratio[name]:.3f} | "
                     f"{base.get(name, 0) or '-'} | {change(name)} |")
    return "\n".join(lines)


def main(update: bool = False) -> Dict[str, object]:
    original = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if original:
        os.sched_setaffinity(0, {min(original)})
    try:
        current = measure()
    finally:
        if original:
            os.sched_setaffinity(0, original)
    baseline = json.loads(BASELINE.read_text()) if BASELINE.exists() else None
    print(table(current, baseline))
    moved = compare(current, baseline)
    if baseline is None:
        print(f"\nno {BASELINE.name} yet: run `python -m bench --update-baseline` to record one")
    elif moved:
        print("\nRegression check: these stages moved against bench/baseline.json:\n  " + "\n  ".join(moved))
    else:
        print(f"\nRegression check: no stage moved by more than {MOVED:.2f}x against bench/baseline.json "
              f"({baseline.get('date')})")
    if update:
        rounded = dict(current, ratio_to_reference={k: round(v, 4) for k, v in current["ratio_to_reference"].items()},
                       median_ms={k: round(v, 3) for k, v in current["median_ms"].items()},
                       vectorizer_vs_shapes={k: round(v, 3) for k, v in current["vectorizer_vs_shapes"].items()})
        BASELINE.write_text(json.dumps(rounded, indent=2, sort_keys=True) + "\n")
        print(f"baseline written to {BASELINE}")
    current["moved"] = moved
    return current


if __name__ == "__main__":
    main()
