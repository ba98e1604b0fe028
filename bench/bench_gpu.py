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
import json
import platform
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from bench.gpu_configs import MODELS, BenchModel, get_model

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


def _free(*objects) -> None:
    del objects
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
        _free(buffer)
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
    _free(model, inputs)
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
    _free(model)
    return row


# ------------------------------------------------------------------- the product's own classes

def _save_reasoner(model_spec: BenchModel, plan: Plan, folder: Path, tiny_dir: Path) -> Path:
    """The random model saved as a checkpoint the product loads, with the tiny models' processor
    (tokenizer + Qwen2.5-VL image processor; patch 14, merge 2 as released); the config's special
    token ids are set to that tokenizer's."""
    from transformers import AutoProcessor, GenerationConfig

    processor = AutoProcessor.from_pretrained(tiny_dir, local_files_only=True)
    tokenizer = processor.tokenizer
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    model = _build(model_spec, plan, ids)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.config.text_config.eos_token_id = eos
    model.generation_config = GenerationConfig(eos_token_id=[eos], pad_token_id=eos, do_sample=False)
    out = folder / model_spec.key
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    _free(model)
    return out


def _save_segmenter(plan: Plan, folder: Path) -> Path:
    from transformers import Sam2Processor
    from transformers.models.sam2.image_processing_sam2 import Sam2ImageProcessor

    model = _build(get_model("sam2.1-hiera-large"), plan)
    out = folder / "sam2.1-hiera-large"
    model.save_pretrained(out, safe_serialization=True)
    size = int(model.config.prompt_encoder_config.image_size)
    Sam2Processor(image_processor=Sam2ImageProcessor(size={"height": size, "width": size},
                                                     mask_size={"height": size // 4, "width": size // 4}),
                  target_size=size).save_pretrained(out)
    _free(model)
    return out


class _ForcedLength:
    """The product's Reasoner, made to write exactly ``tokens`` tokens (random weights rarely stop on
    their own and would not write a parsable answer); it then hands the cascade a recorded
    20-object answer so that segmentation, vectorising and writing run on realistic objects."""

    def __init__(self, reasoner, tokens: int, answer: str):
        self.inner, self.answer, self.name = reasoner, answer, reasoner.name
        reasoner.model.generation_config.min_new_tokens = tokens

    def generate(self, image, messages, **options):
        self.inner.generate(image, messages, **options)
        return self.answer


def question_latency(plan: Plan, reasoner_dir: Path, segmenter_dir: Path, folder: Path) -> List[Dict[str, Any]]:
    import numpy as np

    from bench.bench_cascade import _twenty_object_answer
    from georeasoner_plugin.backend.cascade import AskOptions, Cascade
    from georeasoner_plugin.backend.reasoner import Reasoner
    from georeasoner_plugin.backend.segmenter import Segmenter
    from georeasoner_plugin.backend.writers import write_vectors
    from georeasoner_plugin.core.georef import GeoTransform

    rows = []
    load: Dict[str, Any] = {}
    with _peak_memory(plan.device, load):
        (reasoner, segmenter), load_s = _timed(lambda: (Reasoner(reasoner_dir, device=plan.device, dtype=_dtype(plan)),
                                                       Segmenter(segmenter_dir, device=plan.device, dtype=_dtype(plan))),
                                              plan.device)
        raw, _ = _twenty_object_answer(plan.capture)
        cascade = Cascade(reasoner=_ForcedLength(reasoner, plan.answer_tokens, raw), segmenter=segmenter,
                          profile="remotereasoner")
        image = (np.random.default_rng(0).random((plan.capture, plan.capture, 3)) * 255).astype(np.uint8)
        options = AskOptions(max_new_tokens=plan.answer_tokens, granularities=("boxes", "points", "contours"))
        transform = GeoTransform.from_gdal((485899.0, 1.0, 0.0, 5209246.0, 0.0, -1.0))
        cascade.ask(image[: plan.capture // 2, : plan.capture // 2].copy(), QUESTION, options=options)  # warm-up
        for label in ("cold (new image)", "warm (embedding cached)"):
            result, total = _timed(lambda: cascade.ask(image, QUESTION, options=options), plan.device)
            _, write_s = _timed(lambda: write_vectors(result.answer, transform, None, folder / "q.gpkg",
                                                      overwrite=True), "cpu")
            timings = dict(result.answer.timings)
            rows.append({"case": label, **{k: v * 1000 for k, v in timings.items()}, "write": write_s * 1000,
                         "total": (total + write_s) * 1000, "objects": len(result.answer.objects)})
    for row in rows:
        row["load_s"] = load_s
        row["peak_gib"] = load["peak_gib"]
    _free(cascade, reasoner, segmenter)
    return rows


def tiled_path(plan: Plan, reasoner_dir: Path, segmenter_dir: Path) -> Dict[str, Any]:
    """Tiles per second of capture-sized tiles through reasoner (short answer) + SAM2 encoding."""
    import math

    import numpy as np
    from PIL import Image

    from georeasoner_plugin.backend.reasoner import Reasoner
    from georeasoner_plugin.backend.segmenter import Segmenter
    from georeasoner_plugin.core.profiles import get_profile

    profile = get_profile("remotereasoner")
    reasoner = Reasoner(reasoner_dir, device=plan.device, dtype=_dtype(plan))
    reasoner.model.generation_config.min_new_tokens = plan.tile_answer_tokens
    segmenter = Segmenter(segmenter_dir, device=plan.device, dtype=_dtype(plan), cache_size=0)
    frame = profile.frame.frame_for(plan.capture, plan.capture)
    rng = np.random.default_rng(1)
    tiles = [(rng.random((plan.capture, plan.capture, 3)) * 255).astype(np.uint8) for _ in range(plan.tiles_measured)]

    def one(tile):
        model_image = Image.fromarray(tile).resize((frame.frame_width, frame.frame_height))
        reasoner.generate(model_image, profile.messages(QUESTION), max_new_tokens=plan.tile_answer_tokens)
        segmenter._embed(tile)  # the per-tile half of SAM2 (prompts differ per tile, the encoder does not)

    one(tiles[0])  # warm-up
    _, elapsed = _timed(lambda: [one(t) for t in tiles], plan.device)
    per_second = len(tiles) / elapsed
    count = math.ceil(plan.scene / plan.capture) ** 2
    _free(reasoner, segmenter)
    return {"tile_px": plan.capture, "answer_tokens": plan.tile_answer_tokens, "tiles_measured": len(tiles),
            "tiles_per_s": per_second, "scene_px": plan.scene, "scene_tiles": count, "scene_s": count / per_second}


def grpo_step(plan: Plan, config_name: str, model_dir: Path, folder: Path) -> Dict[str, Any]:
    """One optimizer step of training/train.py's GRPO with the shipped config's batch settings."""
    import yaml

    from bench.grpo_data import synthetic_split
    from training.train import config_from_dict, run_training

    raw = yaml.safe_load((ROOT / "training" / "configs" / f"{config_name}.yaml").read_text())
    data = synthetic_split(folder / f"data-{config_name}", plan.capture)
    raw.update(model=str(model_dir), output_dir=str(folder / f"run-{model_dir.name}-{config_name}"))
    raw["data"] = {"train": str(data)}
    raw["optimization"].update(max_steps=1, epochs=1)
    raw["logging"] = {"logging_steps": 1, "report_to": ["none"]}
    raw["trl"] = {"disable_tqdm": True}
    raw["checkpoints"] = {"save_steps": 1000}
    if plan.dry_run:
        raw["generation"].update(max_completion_length=4, num_generations=2)
        raw["optimization"].update(per_device_batch_size=2, gradient_accumulation_steps=1)
        raw["optimization"].update(bf16=False, gradient_checkpointing=False)
        raw["data"].update(image_min_pixels=56 * 56, image_max_pixels=112 * 112)
    config = config_from_dict(raw, f"{config_name}.yaml")
    timer = _GenerationTimer(plan.device)
    row: Dict[str, Any] = {"config": config_name, "num_generations": config.generation.num_generations,
                           "per_device_batch_size": config.optimization.per_device_batch_size,
                           "gradient_accumulation_steps": config.optimization.gradient_accumulation_steps,
                           "max_completion_length": config.generation.max_completion_length}
    with _peak_memory(plan.device, row), timer:
        result, row["step_s"] = _timed(lambda: run_training(config, print_plan=lambda _: None), plan.device)
    row["generation_s"] = timer.total
    row["generation_share"] = timer.total / row["step_s"] if row["step_s"] else None
    row["steps_done"] = result.global_step
    _free(result)
    return row


class _GenerationTimer:
    """Sums the wall time of every generate() of any model while active (TRL generates through
    the unwrapped model's generate; the class method is wrapped, so every instance is covered)."""

    def __init__(self, device: str):
        self.device, self.total = device, 0.0

    def __enter__(self):
        from transformers import GenerationMixin

        self.original = GenerationMixin.generate
        timer = self

        def timed(model, *args, **kwargs):
            _sync(timer.device)
            started = time.perf_counter()
            try:
                return timer.original(model, *args, **kwargs)
            finally:
                _sync(timer.device)
                timer.total += time.perf_counter() - started

        GenerationMixin.generate = timed
        return self

    def __exit__(self, *exc):
        from transformers import GenerationMixin

        GenerationMixin.generate = self.original


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


def _finish(results: Dict[str, Any], json_path: Optional[Path], print_table: bool) -> None:
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    if print_table:
        print(markdown(results))


def _cell(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(results: Dict[str, Any]) -> str:
    """One markdown table of every figure (a row per measured thing), then what was skipped."""
    env = results.get("environment", {})
    lines = []
    if env:
        lines.append(f"GPU bench {env.get('date')}: {env.get('gpu', env.get('device'))}, driver {env.get('driver', '-')}, "
                     f"torch {env.get('torch')}, transformers {env.get('transformers')}"
                     + (" (DRY RUN: tiny configs on the CPU, figures mean nothing)" if env.get("dry_run") else "")
                     + (f"; bandwidth {_cell(env.get('bandwidth_datasheet_gbs'), 0)} GB/s data sheet, "
                        f"{_cell(env.get('bandwidth_measured_gbs'), 0)} GB/s measured copy"
                        if env.get("bandwidth_measured_gbs") else ""))
        lines.append("")
    lines += ["| part | model / case | figures | peak GiB |", "|---|---|---|---|"]
    for row in results.get("reasoners", []):
        floor = (f"; floor {_cell(row['floor_ms_per_pass'])} ms/pass = {_cell(row['decode_floor_tok_s'])} tok/s "
                 f"(decode at {_cell(row['decode_vs_floor'], 2)} of it)") if "floor_ms_per_pass" in row else ""
        lines.append(f"| reasoner | {row['model']} ({_cell(row['weights_gib'], 2)} GiB bf16) | prefill "
                     f"{row['prompt_tokens']} tokens {_cell(row['prefill_ms'])} ms, decode {_cell(row['decode_tok_s'])} "
                     f"tok/s, {row['answer_tokens']}-token answer {_cell(row['answer_s'], 2)} s{floor} | "
                     f"{_cell(row['peak_gib'], 2)} |")
    for row in results.get("segmenters", []):
        decodes = ", ".join(f"{key[7:-3]} objects {_cell(value)} ms" for key, value in row.items()
                            if key.startswith("decode_"))
        extra = f"decode {decodes}" if decodes else f"text-prompted detection {_cell(row.get('detect_ms'))} ms"
        lines.append(f"| segmenter | {row['model']} ({_cell(row['weights_gib'], 2)} GiB) | encode "
                     f"{_cell(row['encode_ms'])} ms, {extra} | {_cell(row['peak_gib'], 2)} |")
    for row in results.get("question", []):
        stages = ", ".join(f"{k} {_cell(row[k])}" for k in ("preprocess", "reason", "parse", "encode", "decode",
                                                              "vectorize", "write") if k in row)
        lines.append(f"| question, {row['objects']} objects | qwen2.5-vl-7b + sam2.1-l, {row['case']} | {stages}; "
                     f"total {_cell(row['total'])} ms (load {_cell(row['load_s'])} s) | {_cell(row['peak_gib'], 2)} |")
    for row in results.get("tiles", []):
        lines.append(f"| tiled path | {row['tile_px']} px tiles, {row['answer_tokens']}-token answers | "
                     f"{_cell(row['tiles_per_s'], 2)} tiles/s; a {row['scene_px']} px scene = {row['scene_tiles']} "
                     f"tiles = {_cell(row['scene_s'])} s | - |")
    for row in results.get("grpo", []):
        lines.append(f"| GRPO step, LoRA | {row['model']}, {row['config']} ({row['num_generations']} generations, "
                     f"{row['per_device_batch_size']} x {row['gradient_accumulation_steps']} per step, up to "
                     f"{row['max_completion_length']} tokens) | step {_cell(row['step_s'])} s, generation "
                     f"{_cell((row['generation_share'] or 0) * 100, 0)} % | {_cell(row['peak_gib'], 2)} |")
    for skipped in results.get("skipped", []):
        lines.append(f"| skipped | {skipped['part']} | {skipped['reason']} | - |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny configs on the CPU: checks the code, not speed")
    parser.add_argument("--json", type=Path, default=ROOT / "out" / "bench-gpu.json", help="where the JSON goes")
    parser.add_argument("--parts", nargs="+", choices=PARTS,
                        help="measure only these parts")
    args = parser.parse_args(argv)
    run(dry_run=args.dry_run, json_path=args.json, parts=args.parts)
    return 0
