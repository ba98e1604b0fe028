"""A reasoner for tests that answers with a recorded output, scored by the real tiny reasoner.

The tiny reasoner's random weights never write a readable box, so a test that needs a known box
cannot get one from it. ``RecordedAnswerScorer`` answers with a recorded raw output (read later by
the real parser, like any answer) and attaches the probabilities the real tiny model gives that very
output for this image and these messages (teacher forcing: one forward pass over prompt + answer).
Everything after it - the ScoredText, the span of each box, box_score, the writers - is the path of
a live answer.
"""
from __future__ import annotations

from typing import List

import torch

from georeasoner_plugin.backend.reasoner import scored_text


@torch.inference_mode()
def teacher_forced_logprobs(reasoner, image, messages, new_ids: List[int], temperature: float = 1.0) -> List[float]:
    """log p of each of ``new_ids`` after the prompt, from one forward pass of ``reasoner``'s model
    (no cache), under softmax(logits / temperature)."""
    inputs = reasoner.prepare_inputs(image, messages)
    prompt = inputs["input_ids"]
    ids = torch.cat([prompt, torch.tensor([new_ids], dtype=prompt.dtype)], dim=1)
    inputs["input_ids"] = ids
    inputs["attention_mask"] = torch.ones_like(ids)
    if "mm_token_type_ids" in inputs:  # the answer's tokens are text (type 0)
        types = inputs["mm_token_type_ids"]
        inputs["mm_token_type_ids"] = torch.cat([types, types.new_zeros((1, len(new_ids)))], dim=1)
    logits = reasoner.model(**inputs).logits[0].float()
    start = prompt.shape[1] - 1
    steps = torch.log_softmax(logits[start:start + len(new_ids)] / temperature, dim=-1)
    return steps.gather(1, torch.tensor(new_ids)[:, None]).squeeze(1).tolist()


class RecordedAnswerScorer:  # implements reasoning.ReasonerProtocol
    def __init__(self, reasoner, recorded: str):
        self.inner = reasoner
        self.recorded = recorded
        self.name = "recorded answer scored by the tiny reasoner"
        self.family = reasoner.family
        self.frame_factor = reasoner.frame_factor
        self.last_timings = {}
        self.calls = 0

    def token_ids(self) -> List[int]:
        tokenizer = self.inner.processor.tokenizer
        return tokenizer.encode(self.recorded, add_special_tokens=False)

    def generate(self, image, messages, *, on_token=None, should_stop=None, **options):
        self.calls += 1
        ids = self.token_ids()
        with self.inner._lock:
            logprobs = teacher_forced_logprobs(self.inner, image, messages, ids)
        text = scored_text(self.inner.processor.tokenizer, ids, logprobs)
        assert text == self.recorded, "the tiny tokenizer does not give the recorded text back"
        if on_token is not None:
            on_token(str(text))
        return text
