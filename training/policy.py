"""The policy and its rewards: the base model (LoRA or full fine-tuning) and the TRL reward functions.

Reward names are training.rewards.REWARDS, the Think2Seg-style ``mask_iou`` through a frozen SAM2,
or ``module:function``; TRL logs each under ``rewards/<name>/mean``. The model is loaded from
safetensors only (no remote code), LoRA on the language model's linear layers by default, or full
fine-tuning with the vision tower frozen unless asked.
"""
from __future__ import annotations

import importlib
import logging
import os
from typing import Callable, List, Mapping, Optional, Tuple, Union

from georeasoner_plugin.core.profiles import PROFILES, Profile, get_profile

from .config import MASK_IOU_REWARD, TrainConfig
from .errors import ConfigError
from .mask_reward import make_mask_iou_reward
from .rewards import REWARDS, trl_reward

logger = logging.getLogger("training.train")


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

