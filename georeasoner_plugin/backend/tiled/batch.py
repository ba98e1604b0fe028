"""In-process batched generation: several tiles through one Qwen2.5-VL ``generate`` call.

Tiles of one plan share the frame size and the question, so their prompts tokenise to the same
length and batch without padding surprises (left padding is asked for anyway). Each image keeps
the reasoner's pinned pixel bounds, so the model sees exactly the frame the parser maps back from.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional


def supports_batches(reasoner) -> bool:
    """An in-process Reasoner (model + processor on this machine); remote ones use concurrency instead."""
    return all(hasattr(reasoner, name) for name in ("model", "processor", "_check_frame", "_lock"))


def generate_batch(reasoner, images: List, messages: List[Dict], *, max_new_tokens: int = 512,
                   temperature: float = 0.0, top_p: float = 1.0, seed: Optional[int] = None,
                   should_stop: Optional[Callable[[], bool]] = None) -> List[str]:
    """One answer per image (all in the same frame size), in order; greedy unless temperature > 0.
    Each is a ``ScoredText`` carrying its tokens' probabilities (padding after the end: no characters)."""
    import torch
    from transformers import StoppingCriteriaList

    from ..reasoner import ChosenTokenLogprobs, _StopWhenAsked, generation_options, scored_text

    if not images:
        return []
    sizes = {im.size for im in images}
    if len(sizes) != 1:
        raise ValueError(f"a batch holds images of one frame size, got {sorted(sizes)}")
    width, height = images[0].size
    reasoner._check_frame(width, height)
    images = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
    pixels = width * height
    with reasoner._lock, torch.inference_mode():
        started = time.perf_counter()
        inputs = reasoner.processor.apply_chat_template(
            [messages] * len(images), add_generation_prompt=True, tokenize=True, return_dict=True,
            return_tensors="pt", sanitize_control_tokens=True,
            processor_kwargs={"images": [[im] for im in images], "padding": True, "padding_side": "left",
                              "images_kwargs": {"size": {"shortest_edge": pixels, "longest_edge": pixels}}},
        ).to(reasoner.device)
        recorder = ChosenTokenLogprobs()
        options = generation_options(max_new_tokens, temperature, top_p, 0, recorder)
        if should_stop is not None:
            options["stopping_criteria"] = StoppingCriteriaList([_StopWhenAsked(should_stop)])
        prompt_length = inputs["input_ids"].shape[1]
        with torch.random.fork_rng(devices=reasoner._rng_devices(), enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(int(seed))
            output = reasoner.model.generate(**inputs, **options)
        new_tokens = output[:, prompt_length:]
        logprobs = recorder.finish(new_tokens)
        texts = [scored_text(reasoner.processor.tokenizer, row.tolist(), None if logprobs is None else lp.tolist())
                 for row, lp in zip(new_tokens, logprobs if logprobs is not None else [None] * len(new_tokens))]
        reasoner.last_timings = {"reason_s": time.perf_counter() - started, "batch": len(images)}
    return texts
