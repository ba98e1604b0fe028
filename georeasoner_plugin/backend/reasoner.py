"""Qwen2.5-VL / Qwen3-VL in-process: one image and chat messages in, the model's raw answer text out.

The checkpoint's config.json (model_type) picks the class: models.REASONER_FAMILIES.

Frame contract: the caller resizes the image to the profile's model frame (core.frames) before
calling generate(). The processor is told to keep that size, and the grid it reports is checked
against the image, because the answer's pixel coordinates are only meaningful in that frame.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable, Dict, List, Optional, Union

import torch
from transformers.generation import (BaseStreamer, LogitsProcessor, LogitsProcessorList, StoppingCriteria,
                                     StoppingCriteriaList, TemperatureLogitsWarper, TopKLogitsWarper,
                                     TopPLogitsWarper)

from ..core.confidence import ScoredText, TokenLogprob
from .models import REASONER_FAMILIES, ModelLoadError, load_model_and_processor
from .reasoning import FrameMismatchError, check_frame, check_generation, token_char_spans

# Checkpoints that load with the Qwen2.5-VL class (kept for callers that name it); every reasoner
# model_type GeoReasoner loads is a key of models.REASONER_FAMILIES.
QWEN_VL_MODEL_TYPES = ("qwen2_5_vl", "qwen2_vl")


__all__ = ["FrameMismatchError", "Reasoner"]  # FrameMismatchError: reasoning.py's, the one for both reasoners


class _StopWhenAsked(StoppingCriteria):
    """Stopping criterion polling should_stop() once per generated token (cancelled requests)."""

    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop
        self.triggered = False

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        stop = bool(self.should_stop())
        self.triggered = self.triggered or stop
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class ChosenTokenLogprobs(LogitsProcessor):
    """Records log p of every token generate() chooses, under the distribution it chose from.

    It must be the last processor: generation_options() puts it after the sampling warpers, so it
    sees the temperature-scaled, top-k/top-p-cut distribution a sampled token was drawn from, and
    greedy, the model's own distribution (after any processors the checkpoint's generation_config
    adds). The scores pass through unchanged. Only one step's log-softmax is held (batch x
    vocabulary): the token chosen from it is read from input_ids at the next step, or from the
    output for the last one (finish()).
    """

    def __init__(self):
        self.held: Optional[torch.Tensor] = None
        self.steps: List[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.held is not None:
            self.steps.append(self.held.gather(1, input_ids[:, -1:]).squeeze(1))
        self.held = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, chosen: torch.Tensor) -> Optional[torch.Tensor]:
        """(batch, new tokens) log-probabilities of ``chosen`` (the generated ids); None if the steps
        seen do not line up with them."""
        count = chosen.shape[1]
        steps = list(self.steps[:count])
        if len(steps) == count - 1 and self.held is not None:
            steps.append(self.held.gather(1, chosen[:, count - 1:count]).squeeze(1))
        self.held = None
        if len(steps) != count:
            return None
        return torch.stack(steps, dim=1) if steps else chosen.new_zeros(chosen.shape, dtype=torch.float32)


def generation_options(max_new_tokens: int, temperature: float, top_p: float, top_k: Optional[int],
                       recorder: ChosenTokenLogprobs) -> dict:
    """generate() keyword arguments for greedy (temperature 0) or sampled decoding, with ``recorder`` last.

    Sampling: generate() appends its own warpers *after* a caller's logits processors, where the
    recorder would see the untempered scores; so the warpers are passed as ours, in the order
    generate() applies them (temperature, top-k, top-p), and generate() is told to add none. The
    sampling itself is unchanged. Explicit values also override the checkpoint's generation_config
    (Qwen ships top_k=1 and top_p=0.001, which would silently make sampling greedy); top_k=0 or None
    means no top-k cut.
    """
    options = dict(max_new_tokens=int(max_new_tokens), do_sample=temperature > 0)
    processors: List[LogitsProcessor] = []
    if temperature > 0:
        options.update(temperature=1.0, top_p=1.0, top_k=0)
        if float(temperature) != 1.0:
            processors.append(TemperatureLogitsWarper(float(temperature)))
        if top_k:
            processors.append(TopKLogitsWarper(top_k=int(top_k)))
        if float(top_p) < 1.0:
            processors.append(TopPLogitsWarper(top_p=float(top_p)))
    else:
        options.update(temperature=None, top_p=None, top_k=None)
    options["logits_processor"] = LogitsProcessorList(processors + [recorder])
    return options


def scored_text(tokenizer, ids: List[int], logprobs: Optional[List[float]]) -> ScoredText:
    """The decoded answer carrying each token's character span and log-probability."""
    def decode(part):
        return tokenizer.decode(part, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    text = decode(ids)
    if logprobs is None:
        return ScoredText(text, None, ids)
    spans = token_char_spans(decode, ids)
    return ScoredText(text, [TokenLogprob(s, e, float(lp)) for (s, e), lp in zip(spans, logprobs)], ids)


class _TextPieceStreamer(BaseStreamer):
    """Calls on_token with each new piece of decoded text, on the generating thread.

    Text is re-decoded from all new tokens, so a piece is exactly the growth of the decoded text:
    the pieces always add up to the final answer. A piece ending in an incomplete UTF-8 sequence
    (U+FFFD) is held back until the next token completes it.
    """

    def __init__(self, tokenizer, on_token: Callable[[str], None]):
        self.tokenizer = tokenizer
        self.on_token = on_token
        self.token_ids: List[int] = []
        self.emitted = ""
        self.prompt_seen = False

    def _decoded(self) -> str:
        return self.tokenizer.decode(self.token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() pushes the prompt first
            self.prompt_seen = True
            return
        self.token_ids.extend(int(t) for t in value.reshape(-1).tolist())
        text = self._decoded()
        if text.endswith("\ufffd") or not text.startswith(self.emitted):
            return
        self._emit(text)

    def end(self) -> None:
        text = self._decoded()
        if text.startswith(self.emitted):
            self._emit(text)

    def _emit(self, text: str) -> None:
        piece = text[len(self.emitted):]
        if piece:
            self.emitted = text
            self.on_token(piece)


class Reasoner:  # implements reasoning.ReasonerProtocol
    """Qwen2.5-VL or Qwen3-VL (optionally with a LoRA adapter) answering about one image at a time."""

    def __init__(self, model: Union[str, os.PathLike], adapter: Optional[Union[str, os.PathLike]] = None,
                 device: Union[str, torch.device] = "auto", dtype: Union[str, torch.dtype] = "auto",
                 revision: Optional[str] = None):
        loaded = load_model_and_processor(model, families=REASONER_FAMILIES, role="reasoner", adapter=adapter,
                                          revision=revision, device=device, dtype=dtype)
        self.family = loaded.family
        self.name = loaded.name
        self.model = loaded.model
        self.processor = loaded.processor
        self.model_dir = loaded.model_dir
        self.adapter_dir = loaded.adapter_dir
        self.device = loaded.device
        self.dtype = loaded.dtype
        image_processor = self.processor.image_processor
        self.patch_size = int(image_processor.patch_size)
        self.merge_size = int(image_processor.merge_size)
        self.frame_factor = self.patch_size * self.merge_size
        if self.frame_factor != self.family.frame_factor:
            # The profiles' frames use the family's factor (28 for Qwen2.5-VL, 32 for Qwen3-VL); another
            # factor would make the processor resize every frame and move every answer.
            raise ModelLoadError(
                f"{self.name}: patch {self.patch_size} x merge {self.merge_size} gives a frame factor of "
                f"{self.frame_factor}, but {self.family.name} frames use {self.family.frame_factor}")
        self.last_timings: Dict[str, float] = {}
        # generate() keeps per-call state on the model (rope deltas, caches): one request at a time.
        self._lock = threading.Lock()

    def _check_frame(self, width: int, height: int) -> None:
        check_frame(width, height, (self.patch_size * self.merge_size,))

    def prepare_inputs(self, image, messages: List[Dict]):
        """Tokenised prompt and pixel patches for this image, kept at its exact size (the frame)."""
        width, height = image.size
        self._check_frame(width, height)
        if image.mode != "RGB":
            image = image.convert("RGB")
        image_parts = sum(1 for message in messages if isinstance(message.get("content"), list)
                          for part in message["content"] if isinstance(part, dict) and part.get("type") == "image")
        if image_parts != 1:
            raise ValueError(f"the messages must hold exactly one image part, not {image_parts}")
        # Pixel bounds pinned to this image's own pixel count make the processor's smart resize the
        # identity for it (sides already multiples of 28): the model sees exactly the caller's frame.
        pixels = width * height
        inputs = self.processor.apply_chat_template(
            messages,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            # The analyst's question is user text: control tokens typed into it (<|im_end|>,
            # <|image_pad|>, ...) are encoded as plain text, so they can neither open a new turn nor
            # claim image placeholders.
            sanitize_control_tokens=True,
            processor_kwargs={"images": [image],
                              "images_kwargs": {"size": {"shortest_edge": pixels, "longest_edge": pixels}}},
        )
        grid = inputs["image_grid_thw"]
        _, grid_h, grid_w = (int(v) for v in grid[0].tolist())
        seen = (grid_h * self.patch_size, grid_w * self.patch_size)
        if seen != (height, width):
            raise FrameMismatchError(
                f"the processor resized the {width} x {height} frame to {seen[1]} x {seen[0]}; answers would "
                f"land on the wrong pixels")
        return inputs

    @torch.inference_mode()
    def generate(self, image, messages: List[Dict], *, max_new_tokens: int = 512, temperature: float = 0.0,
                 top_p: float = 1.0, top_k: Optional[int] = None, seed: Optional[int] = None,
                 on_token: Optional[Callable[[str], None]] = None,
                 should_stop: Optional[Callable[[], bool]] = None) -> ScoredText:
        """The model's answer (new text only, special tokens removed) about `image` (already in the frame),
        as a ScoredText: each generated token's id, characters and log-probability come with it."""
        check_generation(max_new_tokens, temperature)
        with self._lock:
            started = time.perf_counter()
            inputs = self.prepare_inputs(image, messages).to(self.device)
            prepared = time.perf_counter()

            recorder = ChosenTokenLogprobs()
            options = generation_options(max_new_tokens, temperature, top_p, top_k, recorder)
            stopper = _StopWhenAsked(should_stop) if should_stop is not None else None
            if stopper is not None:
                options["stopping_criteria"] = StoppingCriteriaList([stopper])
            if on_token is not None:
                options["streamer"] = _TextPieceStreamer(self.processor.tokenizer, on_token)

            prompt_length = inputs["input_ids"].shape[1]
            with torch.random.fork_rng(devices=self._rng_devices(), enabled=seed is not None):
                if seed is not None:
                    torch.manual_seed(int(seed))
                output = self.model.generate(**inputs, **options)
            new_tokens = output[0, prompt_length:]
            logprobs = recorder.finish(new_tokens[None, :])
            text = scored_text(self.processor.tokenizer, new_tokens.tolist(),
                               None if logprobs is None else logprobs[0].tolist())
            finished = time.perf_counter()
            self.last_timings = {
                "preprocess_s": prepared - started,
                "reason_s": finished - prepared,
                "new_tokens": int(new_tokens.shape[0]),
                "cancelled": bool(stopper and stopper.triggered),
            }
            return text

    def _rng_devices(self) -> list:
        return [self.device.index or 0] if self.device.type == "cuda" else []
