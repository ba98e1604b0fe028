"""GRPO fine-tuning of Qwen2.5-VL with TRL's GRPOTrainer, driven by one YAML file: the run and `training train`.

The pieces, in the order ``run_training`` assembles them:
- ``load_config``: the YAML file (plus ``--set key=value`` overrides) -> ``TrainConfig``; unknown
  keys, wrong types and impossible values fail with ``ConfigError`` naming the key.
- ``load_records`` / ``build_dataset``: the JSON lines written by ``training prepare`` -> a
  datasets.Dataset in TRL's vision-language layout (a conversational ``prompt`` with an image
  placeholder, and an ``image`` column). The prompt and the model-frame ground truth are derived
  here from the pixel-space ground truth and the question, with the profile (and pixel bounds) of
  this config, so one prepared dataset trains any profile. Images are read and resized to the model
  frame lazily, one sample at a time, exactly as the cascade resizes them at inference.
- ``build_rewards``: reward names (training.rewards.REWARDS, the Think2Seg-style ``mask_iou``
  through a frozen SAM2, or ``module:function``) -> TRL reward functions + weights; TRL logs each
  one under ``rewards/<name>/mean``.
- ``load_policy``: the base model (safetensors only, no remote code), LoRA on the language model's
  linear layers by default, or full fine-tuning with the vision tower frozen unless asked.
- ``grpo_arguments``: GRPOConfig (lr 1e-6, generations, temperature, KL beta, bf16 on CUDA,
  gradient checkpointing, checkpoints every N steps, TensorBoard, vLLM colocate/server).

Frames: the processor's pixel bounds are pinned around the frames of the dataset, so Qwen's smart
resize is the identity on the already-resized images and the numbers the model writes are in the
frame the rewards compare against (checked on a sample before training starts).

Questions: ``data.questions: all`` trains on every record (one per question); with
``one_per_image_per_epoch`` each epoch takes one question per image (records grouped by
``image_id``), round-robin through a per-image order seeded by (seed, image_id), so an epoch is as
long as there are images and successive epochs ask an image's other questions.

Resume: checkpoints hold model (or adapter), optimizer, scheduler, RNG states and the step. The
sampler's shuffle order (and question choice) depends only on (seed, epoch), so the data position
after a resume is the one an uninterrupted run would have reached, also in later epochs. With
``num_iterations`` > 1 a resume in the middle of a generation batch regenerates completions instead
of reusing lost ones.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from georeasoner_plugin.core.exit_codes import EXIT_OK
from georeasoner_plugin.core.profiles import get_profile

from .config import QUESTIONS_ONE_PER_IMAGE, TrainConfig, check_reward_names, load_config, parse_override
from .data import (DatasetReport, ImageGroups, _main_process, build_dataset, frame_spec_for, image_groups,
                   load_records, pin_processor_frames,
                   pixel_bounds, report_data_problems, set_pixel_bounds)
from .errors import ConfigError, DatasetError
from .policy import build_rewards, load_policy
from .trainer import grpo_arguments, tensorboard_dir, trainer_class

logger = logging.getLogger("training.train")

LATEST = "latest"
FINAL_DIR = "final"
CONFIG_SNAPSHOT = "config.yaml"
TENSORBOARD_ENV = "TENSORBOARD_LOGGING_DIR"


def resolve_resume(config: TrainConfig) -> Optional[str]:
    """The checkpoint to resume from, or None for a fresh run; refuses to overwrite a run silently."""
    from transformers.trainer_utils import get_last_checkpoint

    output_dir = Path(config.output_dir)
    wanted = config.checkpoints.resume_from_checkpoint
    last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if wanted is None:
        if last is not None:
            raise ConfigError(f"{config.source}: output_dir {output_dir} already holds {Path(last).name}; resume it "
                              f"(--resume latest, or checkpoints.resume_from_checkpoint: latest) or choose another "
                              f"output_dir")
        return None
    if wanted == LATEST:
        if last is None:
            logger.warning("no checkpoint in %s yet: starting from step 0", output_dir)
        return last
    checkpoint = Path(wanted)
    if not (checkpoint / "trainer_state.json").is_file():
        raise ConfigError(f"{config.source}: checkpoints.resume_from_checkpoint: {checkpoint} is not a checkpoint "
                          f"folder (no trainer_state.json)")
    return str(checkpoint)


@dataclass
class TrainResult:
    output_dir: Path
    final_dir: Path
    global_step: int
    log_history: List[Dict[str, Any]]
    dataset_report: DatasetReport
    tensorboard_dir: Path
    trainer: Any = None


def describe_plan(config: TrainConfig, report: DatasetReport, resume: Optional[str],
                  groups: Optional[ImageGroups] = None) -> str:
    profile = get_profile(config.profile)
    spec = frame_spec_for(config)
    f, g, o = config.finetune, config.generation, config.optimization
    if f.mode == "lora":
        tuning = f"LoRA r={f.lora_r} alpha={f.lora_alpha} on {f.lora_targets}"
        if f.train_vision_tower:
            tuning += " + vision tower"
    else:
        tuning = "full fine-tuning" + (" incl. vision tower" if f.train_vision_tower else " (vision tower frozen)")
    rewards = ", ".join(f"{r.name} x{r.weight:g}" for r in config.rewards)
    lines = [
        f"model: {config.model}  ({tuning})",
        (f"profile: {profile.name}  frame: {spec.describe()}; frames here {report.frame_pixels[0]}.."
         f"{report.frame_pixels[1]} px"),
        f"data: {report.describe()}" + (f"; {groups.questions} question(s) on {len(groups.keys)} image(s), "
                                        f"one question per image per epoch" if groups is not None else ""),
        f"rewards: {rewards}",
        (f"GRPO: {g.num_generations} generations, temperature {g.temperature:g}, up to {g.max_completion_length} "
         f"tokens, beta {o.beta:g}, lr {o.learning_rate:g}, "
         f"generation with {'vLLM (' + g.vllm_mode + ')' if g.use_vllm else 'transformers'}"),
        f"output: {config.output_dir}" + (f"  (resuming {resume})" if resume else ""),
    ]
    return "\n".join(lines)


def _save_config_snapshot(config: TrainConfig) -> None:
    import yaml

    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / CONFIG_SNAPSHOT).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")


def run_training(config: TrainConfig, *, callbacks: Optional[Sequence[Any]] = None,
                 custom_rewards: Optional[Mapping[str, Callable[..., float]]] = None,
                 segmenter=None, print_plan: Callable[[str], None] = print) -> TrainResult:
    """Train as the config says; returns where the final model went and the logged history."""
    try:
        import trl  # noqa: F401
    except ImportError:
        raise ConfigError("TRL is not installed: pip install -e '.[train]' (installs trl, tensorboard)") from None
    check_reward_names(config, list(custom_rewards or {}))
    resume = resolve_resume(config)
    rows, report = load_records(config)
    output_dir = Path(config.output_dir)
    report_data_problems(report, output_dir)
    # GRPOConfig first: under DeepSpeed ZeRO-3 it must exist before the model is loaded, so the
    # weights are partitioned while loading instead of materialised whole on every GPU.
    reward_functions, reward_weights = build_rewards(config, custom_rewards, segmenter)
    arguments = grpo_arguments(config, reward_weights)
    groups = None
    if config.data.questions == QUESTIONS_ONE_PER_IMAGE:
        groups = image_groups(rows)
        prompts = arguments.generation_batch_size // arguments.num_generations
        if len(groups.keys) < prompts:
            raise DatasetError(f"{report.path}: {len(groups.keys)} image(s), fewer than the {prompts} prompts of one "
                               f"generation batch: with data.questions: {QUESTIONS_ONE_PER_IMAGE} an epoch has one "
                               f"prompt per image (lower optimization.per_device_batch_size or use more images)")
    model, processor, peft_config = load_policy(config)
    checkpoint_bounds = pixel_bounds(processor.image_processor)
    pin_processor_frames(processor, report, rows[0], config)
    dataset = build_dataset(rows, config)
    if _main_process():
        print_plan(describe_plan(config, report, resume, groups))

    # transformers 5 takes the TensorBoard folder from the environment only, read when the trainer is built.
    previous = os.environ.get(TENSORBOARD_ENV)
    os.environ[TENSORBOARD_ENV] = str(tensorboard_dir(config))
    try:
        trainer = trainer_class()(model=model, reward_funcs=reward_functions, args=arguments,
                                  train_dataset=dataset, processing_class=processor, peft_config=peft_config,
                                  callbacks=list(callbacks or []), image_groups=groups)
        if trainer.accelerator.is_main_process:
            _save_config_snapshot(config)
        trainer.train(resume_from_checkpoint=resume)
    finally:
        if previous is None:
            os.environ.pop(TENSORBOARD_ENV, None)
        else:
            os.environ[TENSORBOARD_ENV] = previous
    final_dir = output_dir / FINAL_DIR
    # The pins fit this dataset's frames only; the model keeps its checkpoint's own bounds.
    set_pixel_bounds(processor.image_processor, checkpoint_bounds)
    trainer.save_model(str(final_dir))
    if trainer.accelerator.is_main_process:
        processor.save_pretrained(str(final_dir))
    return TrainResult(output_dir=output_dir, final_dir=final_dir, global_step=trainer.state.global_step,
                       log_history=list(trainer.state.log_history), dataset_report=report,
                       tensorboard_dir=tensorboard_dir(config), trainer=trainer)


def main_train(config_path: str, overrides: Sequence[str] = (), resume: Optional[str] = None) -> TrainResult:
    """`training train`: load the config (+ overrides), then train."""
    parsed = dict(parse_override(item) for item in overrides)
    if resume is not None:
        parsed["checkpoints.resume_from_checkpoint"] = resume
    config = load_config(config_path, parsed)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # TRL 1.16 still calls the old name on every step under transformers 5.23: noise, not news.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    return run_training(config)


# --------------------------------------------------------------------------- CLI (`training train`)

def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="GRPO fine-tuning of Qwen2.5-VL from a YAML config",
                              description="Train with TRL's GRPOTrainer as CONFIG says (see training/configs/). "
                                          "Several GPUs: accelerate launch --config_file "
                                          "training/accelerate/<setup>.yaml -m training train CONFIG")
    p.add_argument("config", metavar="CONFIG", help="YAML training config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set optimization.max_steps=10 (repeatable)")
    p.add_argument("--resume", nargs="?", const=LATEST, default=None, metavar="CHECKPOINT",
                   help="resume from CHECKPOINT, or from the newest checkpoint in output_dir when none is given")


def run(args) -> int:
    """ConfigError and DatasetError (the user's to fix) reach training.cli, which prints one line."""
    result = main_train(args.config, args.overrides, args.resume)
    print(f"trained {result.global_step} step(s); final model: {result.final_dir}\n"
          f"logs: tensorboard --logdir {result.tensorboard_dir}\n"
          f"standalone model: training export {result.final_dir} --out DIR")
    return EXIT_OK
