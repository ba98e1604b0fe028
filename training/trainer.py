"""TRL's GRPOTrainer as GeoReasoner runs it: seeded samplers (exact resume, one question per image per
epoch) and the GRPOConfig built from a TrainConfig."""
from __future__ import annotations

import dataclasses
import importlib.util
import random
from pathlib import Path
from typing import List, Optional, Sequence

from .config import TrainConfig
from .data import ImageGroups
from .errors import ConfigError
from .policy import use_bf16


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

