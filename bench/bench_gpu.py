"""`make bench-gpu` / `python -m bench gpu [--dry-run]`: the product's models at real size on a GPU.

Every model is built from its published config (bench/gpu_configs.py) with random weights in bf16:
speed and memory do not depend on weight values, so no download is needed. Measured:

- reasoners (Qwen2.5-VL-3B/-7B, Qwen3-VL-8B): prefill of a 1024 x 1024 capture and decode speed
  of a 250-token answer (length forced with min_new_tokens), each beside the memory-bandwidth
  floor (weight bytes / bandwidth), and peak GPU memory;
- segmenters (SAM2.1 Hiera-L, SAM 3 where transformers has it): image encoding, and SAM2's batched
  mask decoding for 1, 5 and 20 objects;
- one whole question, stage by stage, through the product's own Reasoner, Segmenter and Cascade
  (Qwen2.5-VL-7B + SAM2.1-L, 20 objects), cold and with the image-embedding cache warm;
- the tiled path: 1024 px tiles per second (reasoner prefill + short answer + SAM2 encoding per
  tile), and what a 10,000 x 10,000 scene costs at that rate;
- one GRPO step with LoRA on Qwen2.5-VL-3B and -7B, batches as in training/configs'
  qwen7b-lora-1x24gb and -1x80gb: step time, generation share, peak memory.

``--dry-run`` runs the very same code on the CPU with every config shrunk to tiny size (seconds):
the test suite covers it. Parts whose packages are missing are skipped with the reason.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import platform
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from bench.gpu_configs import MODELS, BenchModel, get_model
from bench.gpu_report import _finish, markdown  # noqa: F401 - markdown is part of this module's API

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "Which lakes could supply irrigation water to the fields around them?"
# Peak memory bandwidth (bytes/s) from the vendors' data sheets, by a substring of the device name.
# A measured device-to-device copy is reported beside it; the floor uses the data-sheet figure.
BANDWIDTH = (("H200", 4.8e12), ("H100 SXM", 3.35e12), ("H100 NVL", 3.9e12), ("H100", 2.0e12),
             ("A100-SXM4-80GB", 2.039e12), ("A100 80GB", 1.935e12), ("A100", 1.555e12), ("L40S", 0.864e12),
             ("L4", 0.3e12), ("A10G", 0.6e12), ("RTX 4090", 1.008e12), ("RTX 3090", 0.936e12),
             ("RTX A5000", 0.768e12), ("RTX 6000 Ada", 0.96e12))


PARTS = ("reasoners", "segmenters", "question", "tiles", "grpo")


@dataclass
class Plan:
    """Sizes of one run: the real ones on a GPU, small ones for --dry-run on the CPU."""

    dry_run: bool
    device: str
    capture: int = 1024  # px, square capture
    answer_tokens: int = 250
    repeats: int = 3
    objects: tuple = (1, 5, 20)
    scene: int = 10_000
    tile_answer_tokens: int = 32
    tiles_measured: int = 4
    grpo_models: tuple = ("qwen2.5-vl-3b", "qwen2.5-vl-7b")
    grpo_configs: tuple = ("qwen7b-lora-1x24gb", "qwen7b-lora-1x80gb")

    @classmethod
    def for_run(cls, dry_run: bool, device: str) -> "Plan":
        if dry_run:
            # one GRPO run: every config and model takes the same code path
            return cls(True, device, capture=224, answer_tokens=6, repeats=1, scene=2_000, tile_answer_tokens=2,
                       tiles_measured=1, grpo_models=("qwen2.5-vl-3b",), grpo_configs=("qwen7b-lora-1x24gb",))
        return cls(False, device)


def _torch():
    import torch

    return torch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        _torch().cuda.synchronize()


def _timed(function: Callable[[], Any], device: str) -> tuple:
    _sync(device)
    started = time.perf_counter()
    value = function()
    _sync(device)
    return value, time.perf_counter() - started


def _median(function: Callable[[], Any], device: str, repeats: int) -> float:
    function()  # warm-up: kernels, allocator, autotuning
    return statistics.median(_timed(function, device)[1] for _ in range(repeats))


@contextlib.contextmanager
def _peak_memory(device: str, into: Dict[str, Any], key: str = "peak_gib"):
    torch = _torch()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        yield
    finally:
        into[key] = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def _free() -> None:
    """Collect garbage (trainers and models hold reference cycles) and return cached GPU memory;
    callers drop their own references first."""
    gc.collect()
    torch = _torch()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _dtype(plan: Plan):
    # bf16 as served; the CPU dry run uses float32 (CPU bf16 kernels are slow and prove nothing more)
    torch = _torch()
    return torch.float32 if plan.dry_run else torch.bfloat16


def _build(model: BenchModel, plan: Plan, token_ids: Optional[Dict[str, int]] = None):
    import transformers

    torch = _torch()
    config = model.build_config(plan.dry_run)
    for name, value in (token_ids or {}).items():
        setattr(config, name, value)
    torch.manual_seed(0)
    with torch.device(plan.device):
        built = getattr(transformers, model.model_class)._from_config(config, dtype=_dtype(plan))
    return built.eval()


def _weight_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def environment(plan: Plan) -> Dict[str, Any]:
    torch = _torch()
    info: Dict[str, Any] = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "torch": torch.__version__,
                            "python": platform.python_version(), "device": plan.device, "dry_run": plan.dry_run}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    if plan.device.startswith("cuda"):
        properties = torch.cuda.get_device_properties(0)
        info.update(gpu=properties.name, gpu_memory_gib=properties.total_memory / 2**30, cuda=torch.version.cuda)
        try:
            import subprocess

            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=20).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            info["driver"] = None
        info["bandwidth_datasheet_gbs"] = next((bw / 1e9 for name, bw in BANDWIDTH if name in properties.name), None)
        buffer = torch.empty(2**30 // 2, dtype=torch.bfloat16, device=plan.device)
        copy = _median(lambda: buffer.clone(), plan.device, 5)
        info["bandwidth_measured_gbs"] = 2 * buffer.numel() * 2 / copy / 1e9  # read + write
        del buffer
        _free()
    return info


# ------------------------------------------------------------------------------------ reasoners

def _qwen_inputs(model, plan: Plan, side: Optional[int] = None):
    """A chat-shaped prompt around one capture, as the processor would lay it out: ~60 text tokens,
    the image's merged patches, the question and the assistant turn; pixel patches are random."""
    torch = _torch()
    config = model.config
    vision = config.vision_config
    patch, merge = int(vision.patch_size), int(vision.spatial_merge_size)
    factor = patch * merge
    side = side or plan.capture
    grid = max(1, round(side / factor)) * merge  # patches per side after the processor's smart resize
    patches = grid * grid
    image_tokens = patches // (merge * merge)
    generator = torch.Generator().manual_seed(0)
    top = min(100000, int(config.text_config.vocab_size) - 100)
    text = lambda n: torch.randint(10, top, (n,), generator=generator)  # noqa: E731
    ids = torch.cat([text(60), torch.tensor([config.vision_start_token_id]),
                     torch.full((image_tokens,), config.image_token_id), torch.tensor([config.vision_end_token_id]),
                     text(40)])[None]
    channels = 3 * int(vision.temporal_patch_size) * patch * patch
    return {"input_ids": ids.to(plan.device), "attention_mask": torch.ones_like(ids).to(plan.device),
            "pixel_values": torch.randn(patches, channels, generator=generator).to(plan.device, _dtype(plan)),
            "image_grid_thw": torch.tensor([[1, grid, grid]]).to(plan.device)}


def _generate(model, inputs, tokens: int):
    eos = model.config.text_config.eos_token_id if hasattr(model.config, "text_config") else None
    return model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                          eos_token_id=eos, pad_token_id=eos)


def reasoner_speed(model_spec: BenchModel, plan: Plan, bandwidth: Optional[float]) -> Dict[str, Any]:
    torch = _torch()
    row: Dict[str, Any] = {"model": model_spec.key, "source": model_spec.facts["source"]}
    with _peak_memory(plan.device, row):
        (model, build_s) = _timed(lambda: _build(model_spec, plan), plan.device)
        row["build_s"] = build_s
        row["weights_gib"] = _weight_bytes(model) / 2**30
        inputs = _qwen_inputs(model, plan)
        row["prompt_tokens"] = int(inputs["input_ids"].shape[1])
        with torch.inference_mode():
            prefill = _median(lambda: _generate(model, inputs, 1), plan.device, plan.repeats)
            whole = _median(lambda: _generate(model, inputs, plan.answer_tokens), plan.device, plan.repeats)
    row["prefill_ms"] = prefill * 1000
    row["answer_tokens"] = plan.answer_tokens
    row["decode_tok_s"] = (plan.answer_tokens - 1) / max(whole - prefill, 1e-9)
    row["answer_s"] = whole
    if bandwidth:
        floor = _weight_bytes(model) / bandwidth
        row["floor_ms_per_pass"] = floor * 1000  # one read of every weight
        row["decode_floor_tok_s"] = 1 / floor
        row["decode_vs_floor"] = row["decode_tok_s"] / row["decode_floor_tok_s"]
        row["prefill_vs_floor"] = prefill / floor
    model = inputs = None  # release before collecting (closures above hold these names)
    _free()
    return row


# ------------------------------------------------------------------------------------ segmenters

def segmenter_speed(model_spec: BenchModel, plan: Plan) -> Dict[str, Any]:
    torch = _torch()
    row: Dict[str, Any] = {"model": model_spec.key, "source": model_spec.facts["source"]}
    with _peak_memory(plan.device, row):
        model, row["build_s"] = _timed(lambda: _build(model_spec, plan), plan.device)
        row["weights_gib"] = _weight_bytes(model) / 2**30
        if model_spec.key.startswith("sam2"):
            size = int(model.config.prompt_encoder_config.image_size)
            pixels = torch.randn(1, 3, size, size, device=plan.device, dtype=_dtype(plan))
            with torch.inference_mode():
                row["encode_ms"] = _median(lambda: model.get_image_embeddings(pixels), plan.device, plan.repeats) * 1000
                embeddings = model.get_image_embeddings(pixels)
                for count in plan.objects:
                    boxes = torch.tensor([[[100.0, 120.0, 400.0, 380.0]] * count], device=plan.device)
                    points = torch.tensor([[[[250.0, 250.0]]] * count], device=plan.device)
                    labels = torch.ones(1, count, 1, dtype=torch.long, device=plan.device)
                    row[f"decode_{count}_ms"] = _median(
                        lambda: model(image_embeddings=embeddings, input_boxes=boxes, input_points=points,
                                      input_labels=labels, multimask_output=False),
                        plan.device, plan.repeats) * 1000
        else:  # SAM 3: image encoding, then one text-prompted detection over it
            size = int(model.config.vision_config.backbone_config.image_size)
            pixels = torch.randn(1, 3, size, size, device=plan.device, dtype=_dtype(plan))
            ids = torch.randint(0, 1000, (1, 8), device=plan.device)
            with torch.inference_mode():
                row["encode_ms"] = _median(lambda: model.get_vision_features(pixel_values=pixels),
                                           plan.device, plan.repeats) * 1000
                row["detect_ms"] = _median(lambda: model(pixel_values=pixels, input_ids=ids), plan.device,
                                           plan.repeats) * 1000
    model = None
    _free()
    return row


# ------------------------------------------------------------------------------------ the run

def _attempt(results: Dict[str, Any], section: str, name: str, function: Callable[[], Any]) -> None:
    try:
        value = function()
    except ImportError as exc:
        results["skipped"].append({"part": f"{section}: {name}", "reason": f"missing package: {exc}"})
        return
    except Exception as exc:  # noqa: BLE001 - one failing part must not hide the others' numbers
        if plan_is_dry(results):
            raise
        results["skipped"].append({"part": f"{section}: {name}", "reason": f"{type(exc).__name__}: {exc}"[:300]})
        return
    if isinstance(value, list):
        results[section].extend(value)
    elif value is not None:
        results[section].append(value)


def plan_is_dry(results: Dict[str, Any]) -> bool:
    return bool(results["environment"].get("dry_run"))


def run(dry_run: bool = False, json_path: Optional[Path] = None, parts: Optional[List[str]] = None,
        print_table: bool = True) -> Dict[str, Any]:
    try:
        torch = _torch()
    except ImportError:
        results = {"skipped": [{"part": "everything", "reason": "torch is not installed"}]}
        _finish(results, json_path, print_table)
        return results
    if not dry_run and not torch.cuda.is_available():
        results = {"skipped": [{"part": "everything", "reason": "no CUDA device (run with --dry-run to check the "
                                                             "code on the CPU at tiny size)"}]}
        _finish(results, json_path, print_table)
        return results
    plan = Plan.for_run(dry_run, "cpu" if dry_run else "cuda")
    parts = parts or list(PARTS)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    results: Dict[str, Any] = {"environment": environment(plan), "reasoners": [], "segmenters": [], "question": [],
                               "tiles": [], "grpo": [], "skipped": []}
    bandwidth = None
    if plan.device.startswith("cuda"):
        bandwidth = (results["environment"]["bandwidth_datasheet_gbs"]
                     or results["environment"]["bandwidth_measured_gbs"]) * 1e9
    for spec in MODELS:
        problem = spec.check_import()
        if problem:
            results["skipped"].append({"part": spec.key, "reason": problem})
            continue
        if spec.kind == "reasoner" and "reasoners" in parts:
            _attempt(results, "reasoners", spec.key, lambda: reasoner_speed(spec, plan, bandwidth))
        if spec.kind == "segmenter" and "segmenters" in parts:
            _attempt(results, "segmenters", spec.key, lambda: segmenter_speed(spec, plan))
    product_parts = [p for p in ("question", "tiles", "grpo") if p in parts]
    if product_parts:
        with tempfile.TemporaryDirectory(prefix="georeasoner-bench-gpu-") as tmp:
            _product_parts(plan, Path(tmp), product_parts, results)
    _finish(results, json_path, print_table)
    return results


def _product_parts(plan: Plan, folder: Path, parts: List[str], results: Dict[str, Any]) -> None:
    from bench.gpu_product import _save_reasoner, _save_segmenter, grpo_step, question_latency, tiled_path
    from georeasoner_plugin.backend.tiny import make_tiny_qwen

    tiny_dir = make_tiny_qwen(folder / "tiny-processor")
    segmenter_dir = _save_segmenter(plan, folder)
    seven = get_model("qwen2.5-vl-7b")
    if "question" in parts or "tiles" in parts:
        reasoner_dir = _save_reasoner(seven, plan, folder, tiny_dir)
        if "question" in parts:
            _attempt(results, "question", seven.key, lambda: question_latency(plan, reasoner_dir, segmenter_dir, folder))
        if "tiles" in parts:
            _attempt(results, "tiles", seven.key, lambda: tiled_path(plan, reasoner_dir, segmenter_dir))
        shutil.rmtree(reasoner_dir, ignore_errors=True)  # 16 GB at real size: one checkpoint on disk at a time
    if "grpo" in parts:
        try:
            import peft  # noqa: F401
            import trl  # noqa: F401
        except ImportError as exc:
            results["skipped"].append({"part": "grpo", "reason": f"missing package {exc.name} (pip install -e '.[train]')"})
            return
        for key in plan.grpo_models:
            model_dir = _save_reasoner(get_model(key), plan, folder, tiny_dir)
            for config_name in plan.grpo_configs:
                _attempt(results, "grpo", f"{key} {config_name}",
                         lambda: dict(grpo_step(plan, config_name, model_dir, folder), model=key))
            shutil.rmtree(model_dir, ignore_errors=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny configs on the CPU: checks the code, not speed")
    parser.add_argument("--json", type=Path, default=ROOT / "out" / "bench-gpu.json", help="where the JSON goes")
    parser.add_argument("--parts", nargs="+", choices=PARTS,
                        help="measure only these parts")
    args = parser.parse_args(argv)
    run(dry_run=args.dry_run, json_path=args.json, parts=args.parts)
    return 0
