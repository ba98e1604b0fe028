"""Segmenter families side by side (issue 12): SAM2 and SAM 3 (tracker) tiny random models, image
encode and prompt decode times, and the embedding-cache effect of a second question on the same image.

Tiny random models: the numbers show that each stage runs and what the cache saves, not what the
real 0.9 B SAM 3 / 224 M SAM2.1-large cost on a GPU. The NAIP sample (934 x 723) with the four
recorded lakes when ../shared/data has it, a synthetic image of the same size otherwise.

    python -m bench.bench_families
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from georeasoner_plugin.backend.cascade import Cascade

ROOT = Path(__file__).resolve().parents[1]
NAIP = ROOT.parent / "shared" / "data" / "naip_nd_2020.tif"
RECORDED = {"remotereasoner": ROOT / "examples" / "naip_lakes_remotereasoner.txt",
            "qwen3": ROOT / "examples" / "naip_lakes_qwen3.txt"}
REPEATS = 3


def _image() -> np.ndarray:
    if NAIP.exists():
        from georeasoner_plugin.backend.imagery import read_raster

        return read_raster(NAIP).rgb
    return np.random.default_rng(0).integers(0, 255, (723, 934, 3), dtype=np.uint8)


def segmenter_rows(models: Dict[str, Path]) -> List[Dict[str, object]]:
    from georeasoner_plugin.backend.segmenter import Segmenter

    image = _image()
    rows = []
    for label, role, profile in (("SAM2 (tiny)", "segmenter", "remotereasoner"),
                                 ("SAM 3 tracker (tiny)", "segmenter_sam3", "qwen3")):
        started = time.perf_counter()
        segmenter = Segmenter(str(models[role]), device="cpu", cache_size=4)
        load = time.perf_counter() - started
        cascade = Cascade(segmenter=segmenter, profile=profile)
        raw = RECORDED[profile].read_text()
        first, second = [], []
        for repeat in range(REPEATS):
            segmenter.clear_cache()
            timings = cascade.run(image, "first question", raw_output=raw).answer.timings
            first.append((timings["encode"], timings["decode"]))
            timings = cascade.run(image, "second question", raw_output=raw).answer.timings
            second.append((timings["encode"], timings["decode"]))
        info = segmenter.cache_info()
        rows.append({
            "segmenter": label, "load": load,
            "encode": statistics.median(e for e, _ in first), "decode (4 objects)": statistics.median(d for _, d in first),
            "2nd question encode": statistics.median(e for e, _ in second),
            "2nd question total": statistics.median(e + d for e, d in second),
            "1st question total": statistics.median(e + d for e, d in first),
            "cache hits/misses": f"{info.hits}/{info.misses}",
        })
    return rows


def run(print_tables: bool = True) -> Dict[str, object]:
    from georeasoner_plugin.backend.tiny import make_tiny_models

    with tempfile.TemporaryDirectory() as tmp:
        models = make_tiny_models(Path(tmp) / "tiny", roles=("segmenter", "segmenter_sam3"))
        rows = segmenter_rows(models)
    if print_tables:
        columns = ["load", "encode", "decode (4 objects)", "1st question total", "2nd question encode",
                   "2nd question total", "cache hits/misses"]
        source = "NAIP sample" if NAIP.exists() else "synthetic 934 x 723 image (NAIP sample not found)"
        print(f"\nSAM2 vs SAM 3 tracker, tiny random models, {source}, median of {REPEATS} (milliseconds; "
              f"NOT representative of the real models on a GPU)")
        print("| " + " | ".join(["segmenter"] + columns) + " |")
        print("|" + "---|" * (len(columns) + 1))
        for row in rows:
            cells = [row[c] if isinstance(row[c], str) else f"{row[c] * 1000:.1f}" for c in columns]
            print("| " + " | ".join([row["segmenter"]] + cells) + " |")
    return {"segmenters": rows}


if __name__ == "__main__":
    run()
