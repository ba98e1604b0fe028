"""`python -m bench gpu --dry-run`: the GPU bench's code, run on the CPU with every config at tiny size.

The figures of a dry run mean nothing; what is checked is that every part builds its models from
the published configs, runs through the product's own classes, and reports rows, not skips. The
real-size configs are built on the meta device (no memory) to check them against the parameter
counts the releases publish.
"""
import json
import math

import pytest

pytest.importorskip("peft")
pytest.importorskip("trl")
torch = pytest.importorskip("torch")

from bench import bench_gpu  # noqa: E402
from bench.gpu_configs import MODELS  # noqa: E402

# Parameters of the released checkpoints (model cards / safetensors index), in billions. The
# transformers SAM2/SAM3 image models leave out the video memory modules of the release.
PUBLISHED_BILLIONS = {"qwen2.5-vl-3b": 3.75, "qwen2.5-vl-7b": 8.29, "qwen3-vl-8b": 8.77,
                      "sam2.1-hiera-large": 0.217, "sam3": 0.84}


@pytest.mark.parametrize("spec", MODELS, ids=lambda m: m.key)
def test_real_size_configs_have_the_published_parameter_counts(spec):
    if spec.check_import():
        pytest.skip(spec.check_import())
    import transformers

    with torch.device("meta"):
        model = getattr(transformers, spec.model_class)._from_config(spec.build_config(False), dtype=torch.bfloat16)
    billions = sum(p.numel() for p in model.parameters()) / 1e9
    assert billions == pytest.approx(PUBLISHED_BILLIONS[spec.key], rel=0.01)


def test_dry_run_measures_every_part_and_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench-gpu.json"
    assert bench_gpu.main(["--dry-run", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert results["environment"]["dry_run"] is True
    expected_skips = [m.key for m in MODELS if m.check_import()]
    assert [s["part"] for s in results["skipped"]] == expected_skips, results["skipped"]
    assert {r["model"] for r in results["reasoners"]} == {m.key for m in MODELS if m.kind == "reasoner"} - set(expected_skips)
    for row in results["reasoners"]:
        assert row["prefill_ms"] > 0 and row["decode_tok_s"] > 0 and row["prompt_tokens"] > 100
    sam2 = next(r for r in results["segmenters"] if r["model"] == "sam2.1-hiera-large")
    assert {"encode_ms", "decode_1_ms", "decode_5_ms", "decode_20_ms"} <= set(sam2)
    cold, warm = results["question"]
    assert cold["objects"] == warm["objects"] == 20
    assert {"reason", "encode", "decode", "vectorize", "write"} <= set(cold)
    assert warm["encode"] < cold["encode"]  # the embedding cache hit skips the image encoder
    tiles = results["tiles"][0]
    assert tiles["tiles_per_s"] > 0 and tiles["scene_tiles"] == math.ceil(tiles["scene_px"] / tiles["tile_px"]) ** 2
    grpo = results["grpo"][0]
    assert grpo["steps_done"] == 1 and 0 < grpo["generation_share"] < 1
    assert "| part | model / case | figures | peak GiB |" in table and "DRY RUN" in table
    assert table.count("| reasoner |") == len(results["reasoners"])


def test_without_cuda_a_real_run_skips_with_the_reason(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    results = bench_gpu.run(json_path=tmp_path / "r.json")
    assert results["skipped"][0]["reason"].startswith("no CUDA device")
    assert "--dry-run" in capsys.readouterr().out
