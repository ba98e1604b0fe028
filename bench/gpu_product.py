"""The GPU bench's parts that run the product's own classes: a whole question through Reasoner,
Segmenter and Cascade, the tiled path, and a GRPO step through training/train.py. Models are
built from their published configs (bench/gpu_configs.py) and saved as checkpoints the product
loads; see bench/bench_gpu.py for what is measured and why weights do not matter.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List

from bench.bench_gpu import QUESTION, ROOT, Plan, _build, _dtype, _free, _peak_memory, _sync, _timed
from bench.gpu_configs import BenchModel, get_model


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
    del model
    _free()
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
    del model
    _free()
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
        cascade.run(image[: plan.capture // 2, : plan.capture // 2].copy(), QUESTION, options=options)  # warm-up
        for label in ("cold (new image)", "warm (embedding cached)"):
            result, total = _timed(lambda: cascade.run(image, QUESTION, options=options), plan.device)
            _, write_s = _timed(lambda: write_vectors(result.answer, transform, None, folder / "q.gpkg",
                                                      overwrite=True), "cpu")
            timings = dict(result.answer.timings)
            rows.append({"case": label, **{k: v * 1000 for k, v in timings.items()}, "write": write_s * 1000,
                         "total": (total + write_s) * 1000, "objects": len(result.answer.objects)})
    for row in rows:
        row["load_s"] = load_s
        row["peak_gib"] = load["peak_gib"]
    cascade = reasoner = segmenter = None
    _free()
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
    reasoner = segmenter = None
    _free()
    return {"tile_px": plan.capture, "answer_tokens": plan.tile_answer_tokens, "tiles_measured": len(tiles),
            "tiles_per_s": per_second, "scene_px": plan.scene, "scene_tiles": count, "scene_s": count / per_second}


def grpo_step(plan: Plan, config_name: str, model_dir: Path, folder: Path) -> Dict[str, Any]:
    """One optimizer step of training/train.py's GRPO with the shipped config's batch settings."""
    import yaml

    from bench.grpo_data import synthetic_split
    from training.config import config_from_dict
    from training.train import run_training

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
    del result  # the trainer holds the policy and its optimizer: release them before the next model
    _free()
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


