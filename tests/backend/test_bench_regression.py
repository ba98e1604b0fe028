"""The regression check of `make bench`: ratios against the baseline, and which stage moved."""
from bench.regression import MOVED, compare, table


def result(**ratios):
    median = {name: 10.0 for name in ["preprocess", "parse", "vectorize", "georeference", "write", "decode PNG",
                                      "decode TIFF", "decode WebP lossless", "vectorizer small", "shapes small"]}
    ratio = {name: 0.1 for name in median}
    ratio.update(ratios)
    return {"median_ms": median, "ratio_to_reference": ratio, "vectorizer_vs_shapes": {"small": 0.4},
            "encoded_bytes": {"PNG": 1 << 20, "TIFF": 1 << 22, "WEBP": 1 << 20}, "rounds": 3, "date": "2026-01-01"}


def test_a_stage_that_moved_is_named_with_its_factor_and_noise_is_not():
    baseline = result()
    assert compare(result(write=0.1 * (MOVED - 0.1)), baseline) == []
    moved = compare(result(write=0.1 * 2, parse=0.1 / 2, **{"shapes small": 0.9}), baseline)
    assert len(moved) == 2  # rasterio's own time is the yardstick, never reported as ours
    assert moved[0].startswith("parse: 0.50x faster") and moved[1].startswith("write: 2.00x slower")
    assert compare(result(), None) == []


def test_table_puts_targets_beside_figures():
    text = table(result(), result())
    # georeferencing is the writer's first step: listed, not counted twice in the total
    assert "| georeference (part of write) | 10.0 |" in text
    assert "| **non-model total** | **40.0** | <= 50 ms | ok |" in text
    assert "| vectorizer small | 10.00 | <= 0.5 x shapes | 0.40x ok |" in text
    assert text.count("1.00x") >= 5  # change against the baseline per stage


def test_every_stage_runs_the_production_code_once():
    """`make bench` measures the code as it is: one round of every stage, no baseline written."""
    from bench.regression import measure

    current = measure(rounds=1)
    assert {"preprocess", "parse", "vectorize", "georeference", "write", "decode TIFF"} <= set(current["median_ms"])
    assert all(value > 0 for value in current["vectorizer_vs_shapes"].values())
