"""GRPO fine-tuning of Qwen2.5-VL with TRL's GRPOTrainer, driven by one YAML file.

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

import dataclasses
import difflib
import importlib
import importlib.util
import json
import logging
import math
import os
import random
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from georeasoner_plugin.core.frames import FRAME_SMART_RESIZE, QWEN_PATCH_FACTOR, FrameError, FrameSpec
from georeasoner_plugin.core.profiles import PROFILES, Profile, get_profile

from .rewards import REWARD_SETS, REWARDS, make_mask_iou_reward, trl_reward

logger = logging.getLogger("training.train")

MASK_IOU_REWARD = "mask_iou"
FINETUNE_MODES = ("lora", "full")
LORA_TARGET_PRESETS = ("language-linear", "all-linear")
VLLM_MODES = ("colocate", "server")
MODEL_DTYPES = ("auto", "bfloat16", "float32")
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
REPORTERS = ("tensorboard", "none")
# TRL's loss aggregations. "grpo" (per-sequence mean of the token losses, then the group mean) is the
# objective of RemoteReasoner Eq. 2 and GRASP Eq. 4; TRL 1.16 itself defaults to the token-level "dapo".
LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo")
QUESTIONS_ALL = "all"
QUESTIONS_ONE_PER_IMAGE = "one_per_image_per_epoch"
QUESTION_MODES = (QUESTIONS_ALL, QUESTIONS_ONE_PER_IMAGE)
LATEST = "latest"
FINAL_DIR = "final"
CONFIG_SNAPSHOT = "config.yaml"
DATA_PROBLEMS_FILE = "data_problems.txt"
TENSORBOARD_ENV = "TENSORBOARD_LOGGING_DIR"
PROBLEMS_SHOWN = 20
# Qwen2.5-VL's processor refuses frames below one merged patch: 28 x 28 pixels.
MIN_FRAME_PIXELS = QWEN_PATCH_FACTOR * QWEN_PATCH_FACTOR


class ConfigError(ValueError):
    """A configuration the user has to fix; the message names the file and the key."""


class DatasetError(ValueError):
    """The prepared dataset cannot be used (missing, or no usable record)."""


# --------------------------------------------------------------------------- configuration

@dataclass
class DataSettings:
    train: str = ""  # the JSON-lines file written by `training prepare`
    max_samples: Optional[int] = None  # use only the first N usable records (smoke tests)
    image_min_pixels: Optional[int] = None  # override the profile's smart-resize bounds
    image_max_pixels: Optional[int] = None
    shuffle: bool = True
    # all: every record (one per question) each epoch; one_per_image_per_epoch: one question per
    # image each epoch, chosen from (seed, epoch, image_id), for data prepared with --questions all.
    questions: str = QUESTIONS_ALL


@dataclass
class FinetuneSettings:
    mode: str = "lora"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    # "language-linear": every linear layer of the language model (the papers' "all linear
    # layers"); "all-linear": also the vision tower's; or a list of module-name regexes.
    lora_targets: Union[str, List[str]] = "language-linear"
    train_vision_tower: bool = False
    model_dtype: str = "auto"
    attn_implementation: str = "sdpa"  # flash_attention_2 on GPUs that have the flash-attn package


@dataclass
class GenerationSettings:
    num_generations: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_completion_length: int = 1024
    use_vllm: bool = False
    vllm_mode: str = "colocate"
    vllm_server_host: str = "127.0.0.1"
    vllm_server_port: int = 8000
    vllm_gpu_memory_utilization: float = 0.3
    vllm_tensor_parallel_size: int = 1


@dataclass
class OptimizationSettings:
    learning_rate: float = 1e-6
    beta: float = 0.04  # KL coefficient against the starting model
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    # Completions (not prompts) per GPU per micro-step; prompts per optimizer step =
    # per_device_batch_size x GPUs x gradient_accumulation_steps / num_generations.
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    lr_scheduler: str = "constant"
    loss_type: str = "grpo"  # see LOSS_TYPES; always passed to TRL explicitly
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    bf16: Union[str, bool] = "auto"  # auto: on when a CUDA GPU with bf16 support is visible
    gradient_checkpointing: bool = True


@dataclass
class CheckpointSettings:
    save_steps: int = 100
    save_total_limit: Optional[int] = None
    resume_from_checkpoint: Optional[str] = None  # null, "latest" or a checkpoint folder


@dataclass
class LoggingSettings:
    logging_steps: int = 1
    report_to: List[str] = field(default_factory=lambda: ["tensorboard"])
    tensorboard_dir: Optional[str] = None  # default: <output_dir>/tensorboard
    log_completions: bool = False


@dataclass
class RewardSpec:
    name: str
    weight: float = 1.0


@dataclass
class TrainConfig:
    model: str = ""
    output_dir: str = ""
    data: DataSettings = field(default_factory=DataSettings)
    rewards: List[RewardSpec] = field(default_factory=list)
    profile: str = "georeasoner"
    # Replaces the profile's system prompt in training (a paper recipe's own, e.g. RemoteReasoner's).
    system_prompt: Optional[str] = None
    segmenter: Optional[str] = None  # SAM2 for the mask_iou reward
    seed: int = 42
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    optimization: OptimizationSettings = field(default_factory=OptimizationSettings)
    checkpoints: CheckpointSettings = field(default_factory=CheckpointSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    # Any other GRPOConfig field, passed through as is (e.g. loss_type, scale_rewards, num_iterations).
    trl: Dict[str, Any] = field(default_factory=dict)
    source: str = field(default="<config>", metadata={"internal": True})

    def to_dict(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("source", None)
        return data


_SECTIONS = {"data": DataSettings, "finetune": FinetuneSettings, "generation": GenerationSettings,
             "optimization": OptimizationSettings, "checkpoints": CheckpointSettings, "logging": LoggingSettings}
_REQUIRED = ("model", "output_dir", "data.train", "rewards")


def _fail(source: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {message}")


def _unknown_key(source: str, where: str, key: str, known: Sequence[str]) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"{source}: unknown key '{where}{key}'{hint}; known keys here: {', '.join(known)}")


def _as_int(value, source, key, minimum=None, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _fail(source, key, f"must be a whole number, got {value!r}")
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        raise _fail(source, key, f"must be a whole number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise _fail(source, key, f"must be a whole number, got {value!r}")
    number = int(number)
    if minimum is not None and number < minimum:
        raise _fail(source, key, f"must be at least {minimum}, got {number}")
    return number


def _as_float(value, source, key, minimum=None, maximum=None, strictly_positive=False, allow_none=False):
    if value is None and allow_none:
        return None
    # YAML 1.1 reads 1e-6 (no dot) as a string; accept numeric strings so the obvious spelling works.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _fail(source, key, f"must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise _fail(source, key, f"must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise _fail(source, key, f"must be a finite number, got {value!r}")
    if strictly_positive and number <= 0:
        raise _fail(source, key, f"must be greater than 0, got {number:g}")
    if minimum is not None and number < minimum:
        raise _fail(source, key, f"must be at least {minimum:g}, got {number:g}")
    if maximum is not None and number > maximum:
        raise _fail(source, key, f"must be at most {maximum:g}, got {number:g}")
    return number


def _as_bool(value, source, key):
    if not isinstance(value, bool):
        raise _fail(source, key, f"must be true or false, got {value!r}")
    return value


def _as_str(value, source, key, choices=None, allow_none=False):
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, key, f"must be a non-empty string, got {value!r}")
    if choices is not None and value not in choices:
        raise _fail(source, key, f"must be one of {', '.join(choices)}, got {value!r}")
    return value.strip()


def _section(cls, raw: Any, source: str, name: str):
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise _fail(source, name, f"must be a mapping of keys to values, got {type(raw).__name__}")
    known = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in known:
            raise _unknown_key(source, f"{name}.", str(key), known)
    return cls(**dict(raw))


def _rewards(raw: Any, source: str) -> List[RewardSpec]:
    """A reward set name, or a list of reward names / {name, weight} mappings."""
    if isinstance(raw, str):
        if raw not in REWARD_SETS:
            raise _fail(source, "rewards", f"{raw!r} is not a reward set ({', '.join(REWARD_SETS)}); "
                                           f"give a set name or a list of rewards")
        return [RewardSpec(name) for name in REWARD_SETS[raw]]
    if not isinstance(raw, list) or not raw:
        raise _fail(source, "rewards", "must be a reward set name or a non-empty list of rewards")
    specs = []
    for index, item in enumerate(raw):
        key = f"rewards[{index}]"
        if isinstance(item, str):
            specs.append(RewardSpec(_as_str(item, source, key)))
            continue
        if not isinstance(item, Mapping):
            raise _fail(source, key, f"must be a reward name or a mapping with 'name' and 'weight', got {item!r}")
        for sub in item:
            if sub not in ("name", "weight"):
                raise _unknown_key(source, f"{key}.", str(sub), ["name", "weight"])
        if "name" not in item:
            raise _fail(source, f"{key}.name", "is missing")
        specs.append(RewardSpec(_as_str(item["name"], source, f"{key}.name"),
                                _as_float(item.get("weight", 1.0), source, f"{key}.weight")))
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _fail(source, "rewards", f"{', '.join(duplicates)} listed twice (TRL logs rewards by name)")
    return specs


def _lookup(raw: Mapping[str, Any], dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def config_from_dict(raw: Any, source: str = "<config>") -> TrainConfig:
    """Validate a parsed YAML mapping; every problem is a ConfigError naming its key."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: the file must hold a mapping of keys (model, output_dir, data, rewards, ...), "
                          f"not {type(raw).__name__}")
    known = [f.name for f in dataclasses.fields(TrainConfig) if not f.metadata.get("internal")]
    for key in raw:
        if key not in known:
            raise _unknown_key(source, "", str(key), known)
    sections = {name: _section(cls, raw.get(name), source, name) for name, cls in _SECTIONS.items()}
    for required in _REQUIRED:
        if _lookup(raw, required) in (None, "", []):
            raise _fail(source, required, "is required")
    trl_options = raw.get("trl") or {}
    if not isinstance(trl_options, Mapping):
        raise _fail(source, "trl", "must be a mapping of GRPOConfig fields to values")
    config = TrainConfig(
        model=_as_str(raw["model"], source, "model"),
        output_dir=_as_str(raw["output_dir"], source, "output_dir"),
        rewards=_rewards(raw["rewards"], source),
        profile=_as_str(raw.get("profile", "georeasoner"), source, "profile", choices=sorted(PROFILES)),
        segmenter=_as_str(raw.get("segmenter"), source, "segmenter", allow_none=True),
        system_prompt=_as_str(raw.get("system_prompt"), source, "system_prompt", allow_none=True),
        seed=_as_int(raw.get("seed", 42), source, "seed", minimum=0),
        trl=dict(trl_options), source=source, **sections)
    _validate(config)
    return config


def _validate(config: TrainConfig) -> None:
    s = config.source
    d, f, g, o, c, log = (config.data, config.finetune, config.generation, config.optimization,
                          config.checkpoints, config.logging)
    d.train = _as_str(d.train, s, "data.train")
    d.max_samples = _as_int(d.max_samples, s, "data.max_samples", minimum=1, allow_none=True)
    d.image_min_pixels = _as_int(d.image_min_pixels, s, "data.image_min_pixels", minimum=MIN_FRAME_PIXELS,
                                 allow_none=True)
    d.image_max_pixels = _as_int(d.image_max_pixels, s, "data.image_max_pixels", minimum=MIN_FRAME_PIXELS,
                                 allow_none=True)
    d.shuffle = _as_bool(d.shuffle, s, "data.shuffle")
    d.questions = _as_str(d.questions, s, "data.questions", choices=QUESTION_MODES)
    f.mode = _as_str(f.mode, s, "finetune.mode", choices=FINETUNE_MODES)
    f.lora_r = _as_int(f.lora_r, s, "finetune.lora_r", minimum=1)
    f.lora_alpha = _as_int(f.lora_alpha, s, "finetune.lora_alpha", minimum=1)
    f.lora_dropout = _as_float(f.lora_dropout, s, "finetune.lora_dropout", minimum=0.0, maximum=0.9)
    if isinstance(f.lora_targets, list):
        if not f.lora_targets:
            raise _fail(s, "finetune.lora_targets", "an empty list adapts nothing")
        f.lora_targets = [_as_str(t, s, "finetune.lora_targets") for t in f.lora_targets]
    else:
        f.lora_targets = _as_str(f.lora_targets, s, "finetune.lora_targets", choices=LORA_TARGET_PRESETS)
    f.train_vision_tower = _as_bool(f.train_vision_tower, s, "finetune.train_vision_tower")
    f.model_dtype = _as_str(f.model_dtype, s, "finetune.model_dtype", choices=MODEL_DTYPES)
    f.attn_implementation = _as_str(f.attn_implementation, s, "finetune.attn_implementation",
                                    choices=ATTENTION_IMPLEMENTATIONS)
    g.num_generations = _as_int(g.num_generations, s, "generation.num_generations", minimum=2)
    g.temperature = _as_float(g.temperature, s, "generation.temperature", strictly_positive=True, maximum=5.0)
    g.top_p = _as_float(g.top_p, s, "generation.top_p", strictly_positive=True, maximum=1.0)
    g.max_completion_length = _as_int(g.max_completion_length, s, "generation.max_completion_length", minimum=1)
    g.use_vllm = _as_bool(g.use_vllm, s, "generation.use_vllm")
    g.vllm_mode = _as_str(g.vllm_mode, s, "generation.vllm_mode", choices=VLLM_MODES)
    g.vllm_server_host = _as_str(g.vllm_server_host, s, "generation.vllm_server_host")
    g.vllm_server_port = _as_int(g.vllm_server_port, s, "generation.vllm_server_port", minimum=1)
    g.vllm_gpu_memory_utilization = _as_float(g.vllm_gpu_memory_utilization, s,
                                              "generation.vllm_gpu_memory_utilization",
                                              strictly_positive=True, maximum=1.0)
    g.vllm_tensor_parallel_size = _as_int(g.vllm_tensor_parallel_size, s, "generation.vllm_tensor_parallel_size",
                                          minimum=1)
    o.learning_rate = _as_float(o.learning_rate, s, "optimization.learning_rate", strictly_positive=True, maximum=1.0)
    o.beta = _as_float(o.beta, s, "optimization.beta", minimum=0.0)
    o.epochs = _as_float(o.epochs, s, "optimization.epochs", strictly_positive=True)
    o.max_steps = _as_int(o.max_steps, s, "optimization.max_steps", minimum=-1)
    if o.max_steps == 0:
        raise _fail(s, "optimization.max_steps", "must be -1 (use epochs) or a positive number of steps")
    o.per_device_batch_size = _as_int(o.per_device_batch_size, s, "optimization.per_device_batch_size", minimum=1)
    o.gradient_accumulation_steps = _as_int(o.gradient_accumulation_steps, s,
                                            "optimization.gradient_accumulation_steps", minimum=1)
    o.lr_scheduler = _as_str(o.lr_scheduler, s, "optimization.lr_scheduler")
    o.loss_type = _as_str(o.loss_type, s, "optimization.loss_type", choices=LOSS_TYPES)
    o.warmup_ratio = _as_float(o.warmup_ratio, s, "optimization.warmup_ratio", minimum=0.0, maximum=0.99)
    o.weight_decay = _as_float(o.weight_decay, s, "optimization.weight_decay", minimum=0.0)
    o.max_grad_norm = _as_float(o.max_grad_norm, s, "optimization.max_grad_norm", minimum=0.0)
    if o.bf16 != "auto":
        o.bf16 = _as_bool(o.bf16, s, "optimization.bf16")
    o.gradient_checkpointing = _as_bool(o.gradient_checkpointing, s, "optimization.gradient_checkpointing")
    c.save_steps = _as_int(c.save_steps, s, "checkpoints.save_steps", minimum=1)
    c.save_total_limit = _as_int(c.save_total_limit, s, "checkpoints.save_total_limit", minimum=1, allow_none=True)
    c.resume_from_checkpoint = _as_str(c.resume_from_checkpoint, s, "checkpoints.resume_from_checkpoint",
                                       allow_none=True)
    log.logging_steps = _as_int(log.logging_steps, s, "logging.logging_steps", minimum=1)
    if isinstance(log.report_to, str):
        log.report_to = [log.report_to]
    if not isinstance(log.report_to, list):
        raise _fail(s, "logging.report_to", f"must be a list among {', '.join(REPORTERS)}, got {log.report_to!r}")
    log.report_to = [_as_str(r, s, "logging.report_to", choices=REPORTERS) for r in log.report_to]
    log.tensorboard_dir = _as_str(log.tensorboard_dir, s, "logging.tensorboard_dir", allow_none=True)
    log.log_completions = _as_bool(log.log_completions, s, "logging.log_completions")

    per_step = o.per_device_batch_size * o.gradient_accumulation_steps
    if per_step % g.num_generations:
        raise _fail(s, "optimization.per_device_batch_size",
                    f"per_device_batch_size x gradient_accumulation_steps ({per_step}) must be a multiple of "
                    f"generation.num_generations ({g.num_generations}): every prompt's group of completions "
                    f"has to be complete within a step")
    profile = get_profile(config.profile)
    if d.image_min_pixels is not None or d.image_max_pixels is not None:
        if profile.frame.kind != FRAME_SMART_RESIZE and not profile.frame.normalised:  # qwen3: smart resize too
            raise _fail(s, "data.image_max_pixels" if d.image_max_pixels is not None else "data.image_min_pixels",
                        f"profile {profile.name!r} uses a {profile.frame.describe()}; pixel bounds only apply to "
                        f"smart-resize profiles")
        low = d.image_min_pixels if d.image_min_pixels is not None else profile.frame.min_pixels
        high = d.image_max_pixels if d.image_max_pixels is not None else profile.frame.max_pixels
        if low > high:
            raise _fail(s, "data.image_min_pixels", f"{low} is above image_max_pixels ({high})")
    for spec in config.rewards:
        if spec.name == MASK_IOU_REWARD and not config.segmenter:
            raise _fail(s, "segmenter", "the mask_iou reward needs a SAM2 model: set 'segmenter' to a hub id or folder")
    from transformers import SchedulerType

    schedulers = [t.value for t in SchedulerType]
    if o.lr_scheduler not in schedulers:
        raise _fail(s, "optimization.lr_scheduler", f"must be one of {', '.join(schedulers)}, got {o.lr_scheduler!r}")
    _check_trl_passthrough(config)


def check_reward_names(config: TrainConfig, custom: Sequence[str] = ()) -> None:
    """Every configured reward must be known (REWARDS, mask_iou, module:function or a custom name)."""
    known = list(REWARDS) + [MASK_IOU_REWARD] + list(custom)
    for index, spec in enumerate(config.rewards):
        if spec.name in known or ":" in spec.name:
            continue
        close = difflib.get_close_matches(spec.name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise _fail(config.source, f"rewards[{index}]", f"unknown reward {spec.name!r}{hint}; known: "
                                                       f"{', '.join(known)}, or module:function")


# GRPOConfig fields this config sets itself: overriding them through `trl:` would be ambiguous.
_MANAGED_TRL_FIELDS = {
    "output_dir", "seed", "learning_rate", "beta", "num_train_epochs", "max_steps", "per_device_train_batch_size",
    "gradient_accumulation_steps", "lr_scheduler_type", "warmup_steps", "weight_decay", "max_grad_norm", "bf16",
    "fp16", "gradient_checkpointing", "activation_checkpointing", "num_generations", "temperature", "top_p",
    "max_completion_length", "use_vllm", "vllm_mode", "vllm_server_host", "vllm_server_port",
    "vllm_gpu_memory_utilization", "vllm_tensor_parallel_size", "save_steps", "save_strategy", "save_total_limit",
    "logging_steps", "report_to", "log_completions", "reward_weights", "shuffle_dataset", "remove_unused_columns",
    "loss_type",
}


def _check_trl_passthrough(config: TrainConfig) -> None:
    if not config.trl:
        return
    try:
        from trl import GRPOConfig
    except ImportError:  # checked again, with install advice, when training starts
        return
    known = {f.name for f in dataclasses.fields(GRPOConfig)}
    for key in config.trl:
        if key in _MANAGED_TRL_FIELDS:
            raise _fail(config.source, f"trl.{key}", "is set by this config's own keys; use those instead")
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise _fail(config.source, f"trl.{key}", f"is not a GRPOConfig field{hint}")


def parse_override(text: str) -> Tuple[str, Any]:
    """'section.key=value' -> ('section.key', YAML-parsed value)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. optimization.max_steps=10")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: the value is not valid YAML: {exc}") from None
    return key.strip(), parsed


def apply_overrides(raw: Dict[str, Any], overrides: Mapping[str, Any]) -> Dict[str, Any]:
    merged = json.loads(json.dumps(raw, default=str))  # a deep copy of plain data
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = merged
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {dotted}: '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return merged


def load_config(path: Union[str, os.PathLike], overrides: Optional[Mapping[str, Any]] = None) -> TrainConfig:
    """Read and validate a YAML training config; ConfigError names the file and the bad key."""
    import yaml

    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read the config: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if raw is None:
        raise ConfigError(f"{source}: the config file is empty")
    if overrides:
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: the file must hold a mapping of keys")
        raw = apply_overrides(raw, overrides)
    return config_from_dict(raw, source)


# --------------------------------------------------------------------------- dataset

@dataclass
class DataProblem:
    where: str  # file:line
    detail: str


@dataclass
class DatasetReport:
    path: Path
    lines: int = 0
    used: int = 0
    problems: List[DataProblem] = field(default_factory=list)
    frame_pixels: Tuple[int, int] = (0, 0)  # smallest and largest frame, in pixels

    def describe(self) -> str:
        text = f"{self.path}: {self.used} record(s) used of {self.lines} line(s)"
        if self.problems:
            text += f", {len(self.problems)} skipped"
        return text


def frame_spec_for_profile(profile: Profile, min_pixels: Optional[int] = None,
                           max_pixels: Optional[int] = None) -> FrameSpec:
    """The profile's frame, with other pixel bounds where given."""
    spec = profile.frame
    if min_pixels is None and max_pixels is None:
        return spec
    return dataclasses.replace(spec, min_pixels=min_pixels if min_pixels is not None else spec.min_pixels,
                               max_pixels=max_pixels if max_pixels is not None else spec.max_pixels)


def frame_spec_for(config: TrainConfig) -> FrameSpec:
    """The profile's frame, with the config's pixel bounds where it sets them."""
    return frame_spec_for_profile(get_profile(config.profile), config.data.image_min_pixels,
                                  config.data.image_max_pixels)


def training_profile(config: TrainConfig) -> Profile:
    """The profile the prompts are written with; the config's system_prompt replaces the profile's."""
    profile = get_profile(config.profile)
    return dataclasses.replace(profile, system_prompt=config.system_prompt) if config.system_prompt else profile


def _round2(values) -> List[float]:
    return [round(float(v), 2) for v in values]


def ground_truth_in_frame(frame, boxes_px, points_px) -> Tuple[List[List[float]], List[List[List[float]]]]:
    """Pixel-space boxes and points in the model frame, as the rewards compare them (2 decimals)."""
    if any(not isinstance(b, (list, tuple)) or len(b) != 4 for b in boxes_px) or \
            any(not isinstance(p, (list, tuple)) or len(p) != 2 for pts in points_px for p in pts):
        raise ValueError("gt_boxes_px needs [x1, y1, x2, y2] per object and gt_points_px [x, y] per point")
    try:
        boxes = [_round2(frame.box_to_frame(b)) for b in boxes_px]
        points = [[_round2(frame.to_frame(*p)) for p in object_points] for object_points in points_px]
    except (TypeError, ValueError):
        raise ValueError("malformed ground truth in gt_boxes_px / gt_points_px") from None
    return boxes, points


def record_ground_truth(record: Mapping[str, Any], profile: Profile) -> Tuple[Any, Any]:
    """(boxes, points) in pixels that this profile trains on.

    GRASP (Section 4.1) trains on one box and two points per target mask (``mask_object_px``,
    written by training.prepare); the multi-object profiles on one per connected part.
    """
    from .prepare import uses_whole_mask_object

    if uses_whole_mask_object(profile.name) and "mask_object_px" in record:
        whole = record["mask_object_px"]
        if whole is None:
            return [], []
        if not isinstance(whole, dict) or "box" not in whole or "points" not in whole:
            raise ValueError("mask_object_px must be null or {\"box\": [...], \"points\": [...]}")
        return [whole["box"]], [whole["points"]]
    return record["gt_boxes_px"], record["gt_points_px"]


def _record_to_row(record: Mapping[str, Any], profile: Profile, spec: FrameSpec, need_mask: bool) -> Dict[str, Any]:
    """One training row from one prepared record; ValueError says what is wrong with it."""
    missing = [k for k in ("question", "image", "image_width", "image_height", "gt_boxes_px", "gt_points_px")
               if k not in record]
    if need_mask and "mask" not in record:
        missing.append("mask")
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)}")
    question = record["question"]
    if not isinstance(question, str) or not question.strip():
        raise ValueError("the question is empty")
    width, height = record["image_width"], record["image_height"]
    if isinstance(width, bool) or isinstance(height, bool) or not isinstance(width, int) \
            or not isinstance(height, int) or width <= 0 or height <= 0:
        raise ValueError(f"bad image size {width!r} x {height!r}")
    image = Path(str(record["image"]))
    if not image.is_file():
        raise ValueError(f"image not found: {image}")
    mask = Path(str(record.get("mask") or ""))
    if need_mask and not mask.is_file():
        raise ValueError(f"mask not found: {mask}")
    question_index = record.get("question_index")
    if isinstance(question_index, bool) or not isinstance(question_index, int):
        question_index = -1  # unknown: the file's order decides
    boxes_px, points_px = record_ground_truth(record, profile)
    if not isinstance(boxes_px, list) or not isinstance(points_px, list) or len(points_px) != len(boxes_px):
        raise ValueError("gt_boxes_px and gt_points_px must be lists with one entry per object")
    try:
        frame = spec.frame_for(width, height)
    except FrameError as exc:
        raise ValueError(str(exc)) from None
    boxes, points = ground_truth_in_frame(frame, boxes_px, points_px)
    return {
        "id": str(record.get("id", "")),
        # Questions on one image share it (records without an image_id are grouped by image file).
        "image_id": str(record.get("image_id") or image),
        "question_index": question_index,
        "question": " ".join(question.split()),
        "source_image": str(image),
        "mask": str(mask) if need_mask else str(record.get("mask") or ""),
        "image_width": width,
        "image_height": height,
        "frame_width": frame.frame_width,
        "frame_height": frame.frame_height,
        "profile": profile.name,
        # JSON text keeps the Arrow schema flat whatever the number of objects.
        "gt_boxes": json.dumps(boxes),
        "gt_points": json.dumps(points),
    }


def load_records(config: TrainConfig) -> Tuple[List[Dict[str, Any]], DatasetReport]:
    """Training rows from the prepared JSONL; bad lines are skipped and reported with file:line."""
    path = Path(config.data.train)
    if not path.is_file():
        raise DatasetError(f"{path}: prepared dataset not found (run `training prepare` first, or fix data.train)")
    profile = get_profile(config.profile)
    spec = frame_spec_for(config)
    need_mask = any(r.name == MASK_IOU_REWARD for r in config.rewards)
    report = DatasetReport(path)
    rows: List[Dict[str, Any]] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            report.lines += 1
            if config.data.max_samples is not None and len(rows) >= config.data.max_samples:
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError(f"a JSON {type(record).__name__}, not an object")
                rows.append(_record_to_row(record, profile, spec, need_mask))
            except ValueError as exc:
                report.problems.append(DataProblem(where, str(exc)))
    report.used = len(rows)
    if not rows:
        detail = f"; first problem: {report.problems[0].where}: {report.problems[0].detail}" if report.problems else ""
        raise DatasetError(f"{path}: no usable record ({report.lines} line(s), "
                           f"{len(report.problems)} problem(s)){detail}")
    pixels = [r["frame_width"] * r["frame_height"] for r in rows]
    report.frame_pixels = (min(pixels), max(pixels))
    return rows, report


@dataclass
class ImageGroups:
    """The rows of each image: ``members[i]`` are row indices of image ``keys[i]``, by question index."""
    keys: List[str]
    members: List[List[int]]

    @property
    def questions(self) -> int:
        return sum(len(m) for m in self.members)


def image_groups(rows: Sequence[Mapping[str, Any]]) -> ImageGroups:
    """Group rows by image_id, images in order of first appearance, each image's rows by question index."""
    by_image: Dict[str, List[int]] = {}
    for index, row in enumerate(rows):
        by_image.setdefault(str(row["image_id"]), []).append(index)
    members = [sorted(indices, key=lambda i: (rows[i]["question_index"], i)) for indices in by_image.values()]
    return ImageGroups(keys=list(by_image), members=members)


def frame_image(path: str, frame_width: int, frame_height: int, frame_kind: str):
    """The image as the model sees it: RGB, resized to the frame exactly as the cascade does."""
    import numpy as np
    from PIL import Image

    from georeasoner_plugin.backend.cascade import _resize_to_frame

    with Image.open(path) as img:
        array = np.asarray(img.convert("RGB"))
    return _resize_to_frame(array, frame_width, frame_height, frame_kind)


def build_dataset(rows: List[Dict[str, Any]], config: TrainConfig):
    """A datasets.Dataset whose items carry TRL's `prompt` and `image`, read from disk on access."""
    from datasets import Dataset

    profile = training_profile(config)
    kind = profile.frame.kind
    dataset = Dataset.from_list(rows)

    def materialise(batch: Dict[str, list]) -> Dict[str, list]:
        out = dict(batch)
        out["prompt"] = [profile.messages(q) for q in batch["question"]]
        out["image"] = [frame_image(p, w, h, kind) for p, w, h in
                        zip(batch["source_image"], batch["frame_width"], batch["frame_height"], strict=True)]
        out["gt_boxes"] = [json.loads(b) for b in batch["gt_boxes"]]
        out["gt_points"] = [json.loads(p) for p in batch["gt_points"]]
        return out

    dataset.set_transform(materialise)
    return dataset


_BOUND_ATTRIBUTES = ("size", "min_pixels", "max_pixels")


def pixel_bounds(image_processor) -> Dict[str, Any]:
    return {name: getattr(image_processor, name) for name in _BOUND_ATTRIBUTES if hasattr(image_processor, name)}


def set_pixel_bounds(image_processor, bounds: Mapping[str, Any]) -> None:
    for name, value in bounds.items():
        if hasattr(image_processor, name):
            setattr(image_processor, name, dict(value) if isinstance(value, dict) else value)


def pin_processor_frames(processor, report: DatasetReport, sample_row: Mapping[str, Any], config: TrainConfig) -> None:
    """Make the processor keep every frame of the dataset as it is, and check it on one sample."""
    low, high = report.frame_pixels
    image_processor = processor.image_processor
    set_pixel_bounds(image_processor, {"size": {"shortest_edge": int(low), "longest_edge": int(high)},
                                       "min_pixels": int(low), "max_pixels": int(high)})
    image = frame_image(sample_row["source_image"], sample_row["frame_width"], sample_row["frame_height"],
                        get_profile(config.profile).frame.kind)
    grid = image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0].tolist()
    patch = int(image_processor.patch_size)
    seen = (int(grid[2]) * patch, int(grid[1]) * patch)
    if seen != image.size:
        raise ConfigError(f"{config.source}: the processor resizes the {image.size[0]} x {image.size[1]} frame to "
                          f"{seen[0]} x {seen[1]}; rewards would compare coordinates of different frames")


def _main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def report_data_problems(report: DatasetReport, output_dir: Path) -> None:
    if not report.problems or not _main_process():
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    listing = output_dir / DATA_PROBLEMS_FILE
    listing.write_text("".join(f"{p.where}: {p.detail}\n" for p in report.problems), encoding="utf-8")
    shown = min(PROBLEMS_SHOWN, len(report.problems))
    logger.warning("%d record(s) skipped; the first %d:", len(report.problems), shown)
    for problem in report.problems[:PROBLEMS_SHOWN]:
        logger.warning("  %s: %s", problem.where, problem.detail)
    logger.warning("all of them: %s", listing)


# --------------------------------------------------------------------------- rewards

def _import_reward(spec: str, source: str) -> Callable[..., float]:
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{source}: rewards: cannot import {module_name!r} for reward {spec!r}: {exc}") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ConfigError(f"{source}: rewards: {module_name} has no function {attribute!r}")
    return function


class _SamSegment:
    """rewards.make_mask_iou_reward's ``segment`` on backend.segmenter.Segmenter, prompted like the cascade."""

    def __init__(self, segmenter, profile: Profile):
        self.segmenter = segmenter
        self.multimask = profile.sam_multimask

    def __call__(self, image, prompts):
        from georeasoner_plugin.backend.segmenter import SamPrompt

        return self.segmenter.segment(image, [SamPrompt(box=p.box, points=list(p.points)) for p in prompts],
                                      multimask=self.multimask)


def _mask_reward_on_source_image(batch_reward: Callable[..., List[float]]) -> Callable[..., List[float]]:
    # The dataset's `image` column is the frame-resized copy the model sees; SAM2 and the mask IoU
    # work on the original image, whose pixels the ground-truth mask shares.
    def reward(completions, **columns):
        if "source_image" in columns:
            columns["image"] = columns.pop("source_image")
        return batch_reward(completions, **columns)

    reward.__name__ = reward.__qualname__ = batch_reward.__name__
    return reward


def load_segmenter(config: TrainConfig):
    from accelerate import PartialState

    from georeasoner_plugin.backend.segmenter import Segmenter

    # Each process scores its own completions with its own frozen copy on its own device.
    return Segmenter(config.segmenter, device=PartialState().device, cache_size=8)


def build_rewards(config: TrainConfig, custom: Optional[Mapping[str, Callable[..., float]]] = None,
                  segmenter=None) -> Tuple[List[Callable[..., List[float]]], List[float]]:
    """TRL reward functions (named after the config's rewards) and their weights.

    ``custom`` maps extra names to per-completion rewards ``fn(completion, **record) -> float``
    (for programmatic use; the YAML form is ``module:function``).
    """
    custom = dict(custom or {})
    functions, weights = [], []
    for spec in config.rewards:
        if spec.name in custom:
            function = trl_reward(custom[spec.name], name=spec.name)
        elif spec.name in REWARDS:
            function = trl_reward(spec.name)
        elif spec.name == MASK_IOU_REWARD:
            if segmenter is None:
                segmenter = load_segmenter(config)
            single = make_mask_iou_reward(_SamSegment(segmenter, get_profile(config.profile)), name=MASK_IOU_REWARD)
            function = _mask_reward_on_source_image(trl_reward(single, name=MASK_IOU_REWARD))
        else:
            label = spec.name.rpartition(":")[2] or spec.name
            function = trl_reward(_import_reward(spec.name, config.source), name=label)
        functions.append(function)
        weights.append(spec.weight)
    return functions, weights


# --------------------------------------------------------------------------- model

def _cuda_bf16() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _deepspeed_requested() -> bool:
    # accelerate launch with a DeepSpeed config exports this to every process.
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true", "yes")


def use_bf16(config: TrainConfig) -> bool:
    if config.optimization.bf16 == "auto":
        return _cuda_bf16()
    if config.optimization.bf16 and not _cuda_bf16():
        import torch

        if torch.cuda.is_available():
            raise ConfigError(f"{config.source}: optimization.bf16: this GPU has no bfloat16 support; set it to false")
    return bool(config.optimization.bf16)


def model_dtype(config: TrainConfig):
    import torch

    choice = config.finetune.model_dtype
    if choice == "bfloat16":
        return torch.bfloat16
    if choice == "float32":
        return torch.float32
    # bf16 weights lose updates of lr 1e-6 (a relative change far below bf16's 3 significant digits);
    # full fine-tuning keeps float32 weights unless DeepSpeed keeps float32 master copies itself.
    if use_bf16(config) and (config.finetune.mode == "lora" or _deepspeed_requested()):
        return torch.bfloat16
    return torch.float32


def _module_prefix(model, module) -> str:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name
    raise ConfigError("the model's language model / vision tower is not among its modules")


def _linear_leaf_names(model, prefix: str) -> List[str]:
    import torch

    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if name.startswith(prefix + ".") and isinstance(module, torch.nn.Linear)})


def _escape(prefix: str) -> str:
    return prefix.replace(".", r"\.")


def lora_target_regex(model, config: TrainConfig) -> Union[str, List[str]]:
    """peft target_modules: a full-match regex over module names (or the user's list)."""
    targets = config.finetune.lora_targets
    if isinstance(targets, list):
        return targets
    parts = []
    language = _module_prefix(model, model.model.language_model)
    parts.append(rf"{_escape(language)}\..*\.({'|'.join(_linear_leaf_names(model, language))})")
    if targets == "all-linear" or config.finetune.train_vision_tower:
        visual = _module_prefix(model, model.model.visual)
        parts.append(rf"{_escape(visual)}\..*\.({'|'.join(_linear_leaf_names(model, visual))})")
    return "|".join(f"(?:{p})" for p in parts) if len(parts) > 1 else parts[0]


def load_policy(config: TrainConfig):
    """(model, processor, peft_config or None) for the config's base model."""
    from transformers import AutoProcessor

    from georeasoner_plugin.backend.models import ModelLoadError, reasoner_family

    try:
        # The checkpoint's model_type picks the class (Qwen2.5-VL, Qwen3-VL dense or MoE; issue 12).
        model_dir, family = reasoner_family(config.model)
    except ModelLoadError as exc:
        raise ConfigError(f"{config.source}: model: {exc}") from None
    if family.frame_factor != get_profile(config.profile).frame.factor:
        fitting = ", ".join(p.name for p in PROFILES.values() if p.frame.factor == family.frame_factor)
        raise ConfigError(f"{config.source}: profile: {config.profile!r} is made for another model family than "
                          f"{config.model!r} ({family.name}); use one of: {fitting}")
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
    processor.tokenizer.padding_side = "left"
    model = family.model_class().from_pretrained(
        model_dir, dtype=model_dtype(config), attn_implementation=config.finetune.attn_implementation,
        use_safetensors=True, trust_remote_code=False, local_files_only=True)

    peft_config = None
    if config.finetune.mode == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=config.finetune.lora_r, lora_alpha=config.finetune.lora_alpha,
                                 lora_dropout=config.finetune.lora_dropout, bias="none", task_type="CAUSAL_LM",
                                 target_modules=lora_target_regex(model, config))
    elif not config.finetune.train_vision_tower:
        for parameter in model.model.visual.parameters():
            parameter.requires_grad_(False)
    return model, processor, peft_config


# --------------------------------------------------------------------------- trainer

def _epoch_seeded_sampler_class():
    from trl.trainer.utils import RepeatSampler

    class EpochSeededRepeatSampler(RepeatSampler):
        """TRL's RepeatSampler whose shuffle order depends only on (seed, epoch).

        TRL's own sampler draws each epoch's order from one generator seeded once, so a run resumed
        in epoch k would replay epoch 0's order; the Trainer tells samplers the epoch instead.
        """

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.epoch = 0
            self.set_epoch(0)

        def set_epoch(self, epoch: int) -> None:
            self.epoch = int(epoch)
            if self.shuffle:
                self.generator.manual_seed((self.seed or 0) + self.epoch)

    return EpochSeededRepeatSampler


def _question_per_image_sampler_class():
    base = _epoch_seeded_sampler_class()

    class QuestionPerImageSampler(base):
        """Per epoch, one record (question) per image; TRL's chunking and repeats over the images.

        Image i of n questions asks, in epoch e, question ``order_i[e % n]``, where ``order_i`` is a
        permutation seeded by (seed, image key): successive epochs take different questions until all
        were asked. The images are shuffled by (seed, epoch) like the records of the parent sampler,
        so an epoch has ``len(groups.keys)`` prompts and a resumed run takes the same ones.
        """

        def __init__(self, data_source, groups: ImageGroups, *args, **kwargs):
            super().__init__(data_source, *args, **kwargs)
            if len(groups.keys) != len(groups.members) or any(not m for m in groups.members):
                raise ValueError("every image needs at least one record")
            if groups.questions != len(data_source):
                raise ValueError(f"the image groups hold {groups.questions} record(s), the dataset "
                                 f"{len(data_source)}")
            self.groups = groups
            self.num_samples = len(groups.members)  # what the parent shuffles, chunks and counts: images
            self.question_orders = []
            for key, members in zip(groups.keys, groups.members, strict=True):
                order = list(range(len(members)))
                random.Random(f"{self.seed or 0}:{key}").shuffle(order)
                self.question_orders.append(order)

        def records_for_epoch(self, epoch: int) -> List[int]:
            """The record index each image uses in this epoch (in image order)."""
            return [members[order[epoch % len(members)]]
                    for members, order in zip(self.groups.members, self.question_orders, strict=True)]

        def __iter__(self):
            self.set_epoch(self.epoch)  # the same order however often an epoch is iterated
            chosen = self.records_for_epoch(self.epoch)
            for image in super().__iter__():
                yield chosen[image]

    return QuestionPerImageSampler


def trainer_class():
    from trl import GRPOTrainer

    sampler_class = _epoch_seeded_sampler_class()
    per_image_class = _question_per_image_sampler_class()

    class GeoGRPOTrainer(GRPOTrainer):
        def __init__(self, *args, image_groups: Optional[ImageGroups] = None, **kwargs):
            # Set: each epoch takes one question per image (data.questions: one_per_image_per_epoch).
            self.image_groups = image_groups
            super().__init__(*args, **kwargs)

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            # Qwen2.5-VL saves its weights under the published (legacy) names and renames them on
            # from_pretrained; Trainer's resume calls load_state_dict on the raw file, matches no key
            # and only warns (transformers#43701, open in 5.23), so a full fine-tuning run would go on
            # from the base weights. Reload through from_pretrained instead. DeepSpeed and FSDP restore
            # their own sharded states and adapters load through peft, both unaffected.
            from peft import PeftModel

            target = self.model if model is None else model
            checkpoint = Path(resume_from_checkpoint)
            full_weights = (checkpoint / "model.safetensors").is_file() or \
                (checkpoint / "model.safetensors.index.json").is_file()
            if (self.is_deepspeed_enabled or self.is_fsdp_enabled or isinstance(target, PeftModel)
                    or not full_weights):
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            reloaded = type(target).from_pretrained(checkpoint, dtype=target.dtype, use_safetensors=True,
                                                    trust_remote_code=False, local_files_only=True)
            target.load_state_dict(reloaded.state_dict(), strict=True)
            del reloaded
            return None

        def _get_train_sampler(self, dataset=None):
            dataset = self.train_dataset if dataset is None else dataset
            options = dict(
                mini_repeat_count=self.num_generations,
                batch_size=self.args.generation_batch_size // self.num_generations,
                repeat_count=self.num_iterations * self.args.steps_per_generation,
                shuffle=self.shuffle_dataset,
                seed=self.args.seed,
            )
            if self.image_groups is not None:
                return per_image_class(dataset, self.image_groups, **options)
            return sampler_class(data_source=dataset, **options)

    return GeoGRPOTrainer


def tensorboard_dir(config: TrainConfig) -> Path:
    return Path(config.logging.tensorboard_dir or Path(config.output_dir) / "tensorboard")


def grpo_arguments(config: TrainConfig, reward_weights: Sequence[float]):
    from trl import GRPOConfig

    g, o, c, log = config.generation, config.optimization, config.checkpoints, config.logging
    bf16 = use_bf16(config)
    report_to = [r for r in log.report_to if r != "none"]
    if "tensorboard" in report_to and importlib.util.find_spec("tensorboard") is None \
            and importlib.util.find_spec("tensorboardX") is None:
        raise ConfigError(f"{config.source}: logging.report_to: tensorboard is not installed "
                          f"(pip install -e '.[train]'), or set report_to: [none]")
    if g.use_vllm and importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"{config.source}: generation.use_vllm: vLLM is not installed here (it needs a CUDA GPU: "
                          f"pip install vllm); set generation.use_vllm: false to generate with transformers")
    options = dict(
        output_dir=str(config.output_dir),
        seed=config.seed,
        learning_rate=o.learning_rate,
        beta=o.beta,
        num_train_epochs=o.epochs,
        max_steps=o.max_steps,
        per_device_train_batch_size=o.per_device_batch_size,
        gradient_accumulation_steps=o.gradient_accumulation_steps,
        lr_scheduler_type=o.lr_scheduler,
        loss_type=o.loss_type,
        warmup_steps=o.warmup_ratio,
        weight_decay=o.weight_decay,
        max_grad_norm=o.max_grad_norm,
        bf16=bf16,
        fp16=False,
        num_generations=g.num_generations,
        temperature=g.temperature,
        top_p=g.top_p,
        max_completion_length=g.max_completion_length,
        reward_weights=list(reward_weights),
        shuffle_dataset=config.data.shuffle,
        remove_unused_columns=False,  # the rewards read the ground-truth columns
        dataloader_pin_memory=False,  # items are PIL images and lists: nothing to pin
        save_strategy="steps",
        save_steps=c.save_steps,
        save_total_limit=c.save_total_limit,
        logging_steps=log.logging_steps,
        report_to=report_to or "none",
        log_completions=log.log_completions,
        use_vllm=g.use_vllm,
        vllm_mode=g.vllm_mode,
        vllm_server_host=g.vllm_server_host,
        vllm_server_port=g.vllm_server_port,
        vllm_gpu_memory_utilization=g.vllm_gpu_memory_utilization,
        vllm_tensor_parallel_size=g.vllm_tensor_parallel_size,
    )
    known = {f.name for f in dataclasses.fields(GRPOConfig)}
    # transformers 5.x renamed gradient checkpointing; setting the new name avoids its deprecation path.
    checkpointing_key = "activation_checkpointing" if "activation_checkpointing" in known else "gradient_checkpointing"
    options[checkpointing_key] = o.gradient_checkpointing
    options.update(config.trl)
    try:
        return GRPOConfig(**options)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{config.source}: the trainer rejected these settings: {exc}") from None


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
    from .cli import EXIT_OK, UserError

    try:
        result = main_train(args.config, args.overrides, args.resume)
    except (ConfigError, DatasetError) as exc:
        raise UserError(str(exc)) from None
    print(f"trained {result.global_step} step(s); final model: {result.final_dir}\n"
          f"logs: tensorboard --logdir {result.tensorboard_dir}\n"
          f"standalone model: training export {result.final_dir} --out DIR")
    return EXIT_OK
