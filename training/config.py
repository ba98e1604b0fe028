"""The training configuration: one YAML file (plus ``--set key=value`` overrides) -> ``TrainConfig``.

The sections are pydantic models. Every field is checked by a small validator that writes the
message users see ("must be a whole number, got 2.5"); ``config_from_dict`` turns pydantic's first
error into one ``ConfigError`` naming the file and the dotted key, with a did-you-mean hint for
unknown keys. Checks that involve several keys (group sizes, pixel bounds, the segmenter of the
mask reward, TRL pass-through) run after the fields are valid.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
from typing import Annotated, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError

from georeasoner_plugin.core.frames import FRAME_SMART_RESIZE, QWEN_PATCH_FACTOR
from georeasoner_plugin.core.profiles import PROFILES, get_profile

from .config_fields import Bool, Float, Int, Str, check_bool, check_str, as_config_error, problem
from .errors import ConfigError
from .rewards import DEFAULT_TRAINING_PROFILE, REWARD_SETS, REWARDS

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
EPOCH_QUESTION_MODES = (QUESTIONS_ALL, QUESTIONS_ONE_PER_IMAGE)
# Qwen2.5-VL's processor refuses frames below one merged patch: 28 x 28 pixels.
MIN_FRAME_PIXELS = QWEN_PATCH_FACTOR * QWEN_PATCH_FACTOR
REQUIRED = ("model", "output_dir", "data.train", "rewards")


def _lora_targets(value: Any) -> Union[str, List[str]]:
    if isinstance(value, list):
        if not value:
            raise problem("an empty list adapts nothing")
        return [check_str(t) for t in value]
    return check_str(value, LORA_TARGET_PRESETS)


def _bf16(value: Any) -> Union[str, bool]:
    return value if value == "auto" else check_bool(value)


def _report_to(value: Any) -> List[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise problem(f"must be a list among {', '.join(REPORTERS)}, got {value!r}")
    return [check_str(r, REPORTERS) for r in value]


# --------------------------------------------------------------------------- the sections

class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=False)


class DataSettings(_Section):
    train: Str() = ""  # the JSON-lines file written by `training prepare`
    max_samples: Int(1, optional=True) = None  # use only the first N usable records (smoke tests)
    image_min_pixels: Int(MIN_FRAME_PIXELS, optional=True) = None  # override the profile's bounds
    image_max_pixels: Int(MIN_FRAME_PIXELS, optional=True) = None
    shuffle: Bool = True
    # all: every record (one per question) each epoch; one_per_image_per_epoch: one question per
    # image each epoch, chosen from (seed, epoch, image_id), for data prepared with --questions all.
    questions: Str(EPOCH_QUESTION_MODES) = QUESTIONS_ALL


class FinetuneSettings(_Section):
    mode: Str(FINETUNE_MODES) = "lora"
    lora_r: Int(1) = 8
    lora_alpha: Int(1) = 16
    lora_dropout: Float(minimum=0.0, maximum=0.9) = 0.05
    # "language-linear": every linear layer of the language model (the papers' "all linear
    # layers"); "all-linear": also the vision tower's; or a list of module-name regexes.
    lora_targets: Annotated[Union[str, List[str]], BeforeValidator(_lora_targets)] = "language-linear"
    train_vision_tower: Bool = False
    model_dtype: Str(MODEL_DTYPES) = "auto"
    attn_implementation: Str(ATTENTION_IMPLEMENTATIONS) = "sdpa"  # flash_attention_2 with flash-attn


class GenerationSettings(_Section):
    num_generations: Int(2) = 8
    temperature: Float(strictly_positive=True, maximum=5.0) = 1.0
    top_p: Float(strictly_positive=True, maximum=1.0) = 1.0
    max_completion_length: Int(1) = 1024
    use_vllm: Bool = False
    vllm_mode: Str(VLLM_MODES) = "colocate"
    vllm_server_host: Str() = "127.0.0.1"
    vllm_server_port: Int(1) = 8000
    vllm_gpu_memory_utilization: Float(strictly_positive=True, maximum=1.0) = 0.3
    vllm_tensor_parallel_size: Int(1) = 1


class OptimizationSettings(_Section):
    learning_rate: Float(strictly_positive=True, maximum=1.0) = 1e-6
    loss_type: Str(LOSS_TYPES) = "grpo"  # always passed to TRL explicitly
    beta: Float(minimum=0.0) = 0.04  # KL coefficient against the starting model
    epochs: Float(strictly_positive=True) = 1.0
    max_steps: Int(-1) = -1  # > 0 overrides epochs
    # Completions (not prompts) per GPU per micro-step; prompts per optimizer step =
    # per_device_batch_size x GPUs x gradient_accumulation_steps / num_generations.
    per_device_batch_size: Int(1) = 8
    gradient_accumulation_steps: Int(1) = 1
    lr_scheduler: Str() = "constant"
    warmup_ratio: Float(minimum=0.0, maximum=0.99) = 0.0
    weight_decay: Float(minimum=0.0) = 0.0
    max_grad_norm: Float(minimum=0.0) = 1.0
    bf16: Annotated[Union[str, bool], BeforeValidator(_bf16)] = "auto"  # auto: on with a bf16 CUDA GPU
    gradient_checkpointing: Bool = True


class CheckpointSettings(_Section):
    save_steps: Int(1) = 100
    save_total_limit: Int(1, optional=True) = None
    resume_from_checkpoint: Str(optional=True) = None  # null, "latest" or a checkpoint folder


class LoggingSettings(_Section):
    logging_steps: Int(1) = 1
    report_to: Annotated[List[str], BeforeValidator(_report_to)] = Field(default_factory=lambda: ["tensorboard"])
    tensorboard_dir: Str(optional=True) = None  # default: <output_dir>/tensorboard
    log_completions: Bool = False


class RewardSpec(_Section):
    name: Str()
    weight: Float() = 1.0


def _rewards(raw: Any) -> List[Any]:
    """A reward set name, or a list of reward names / {name, weight} mappings."""
    if isinstance(raw, str):
        if raw not in REWARD_SETS:
            raise problem(f"{raw!r} is not a reward set ({', '.join(REWARD_SETS)}); give a set name or a list "
                           "of rewards")
        return [{"name": name} for name in REWARD_SETS[raw]]
    if not isinstance(raw, list) or not raw:
        raise problem("must be a reward set name or a non-empty list of rewards")
    items = []
    for index, item in enumerate(raw):
        if not isinstance(item, (str, Mapping)):
            raise problem(f"item {index} must be a reward name or a mapping with 'name' and 'weight', got {item!r}")
        items.append({"name": item} if isinstance(item, str) else item)
    return items


class TrainConfig(_Section):
    model: Str()
    output_dir: Str()
    data: DataSettings = Field(default_factory=DataSettings)
    rewards: Annotated[List[RewardSpec], BeforeValidator(_rewards)]
    profile: Str(sorted(PROFILES)) = DEFAULT_TRAINING_PROFILE
    # Replaces the profile's system prompt in training (a paper recipe's own, e.g. RemoteReasoner's).
    system_prompt: Str(optional=True) = None
    segmenter: Str(optional=True) = None  # SAM2 for the mask_iou reward
    seed: Int(0) = 42
    finetune: FinetuneSettings = Field(default_factory=FinetuneSettings)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    optimization: OptimizationSettings = Field(default_factory=OptimizationSettings)
    checkpoints: CheckpointSettings = Field(default_factory=CheckpointSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    # Any other GRPOConfig field, passed through as is (e.g. scale_rewards, num_iterations).
    trl: Dict[str, Any] = Field(default_factory=dict)
    _source: str = PrivateAttr(default="<config>")

    @property
    def source(self) -> str:
        """The file the config came from, for messages."""
        return self._source

    def to_dict(self) -> Dict[str, Any]:
        return self.model_dump()


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
    unknown = [k for k in raw if k not in TrainConfig.model_fields]
    if not unknown:  # an empty value of a required key reads as missing, not as a type error
        for required in REQUIRED:
            parent = _lookup(raw, required.rpartition(".")[0]) if "." in required else raw
            if isinstance(parent, Mapping) and parent.get(required.rpartition(".")[2]) in (None, "", []):
                raise ConfigError(f"{source}: {required}: is required")
    cleaned = {k: v for k, v in raw.items() if not (k in ("data", "finetune", "generation", "optimization",
                                                          "checkpoints", "logging", "trl") and v is None)}
    try:
        config = TrainConfig.model_validate(cleaned)
    except ValidationError as exc:
        raise as_config_error(exc, source, TrainConfig, {"rewards": RewardSpec}) from None
    config._source = source
    _check_combinations(config)
    return config


# --------------------------------------------------------------------------- checks across keys

def _fail(source: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {message}")


def _check_combinations(config: TrainConfig) -> None:
    s, d, g, o = config.source, config.data, config.generation, config.optimization
    names = [r.name for r in config.rewards]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _fail(s, "rewards", f"{', '.join(duplicates)} listed twice (TRL logs rewards by name)")
    if o.max_steps == 0:
        raise _fail(s, "optimization.max_steps", "must be -1 (use epochs) or a positive number of steps")
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
    if MASK_IOU_REWARD in names and not config.segmenter:
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
MANAGED_TRL_FIELDS = {
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
        if key in MANAGED_TRL_FIELDS:
            raise _fail(config.source, f"trl.{key}", "is set by this config's own keys; use those instead")
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise _fail(config.source, f"trl.{key}", f"is not a GRPOConfig field{hint}")


# --------------------------------------------------------------------------- files and overrides

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
