"""box_score end to end: token probabilities from the real (tiny, random) reasoners, through the cascade.

The tiny model's weights are random, so its answers are nonsense; what it says does not matter here,
only that the probabilities it reports are those of the tokens it chose. Where a known box is needed,
a recorded raw output is read by the real parser, and the probabilities come from the tiny model
itself, scoring that very output (teacher forcing): the cascade path is then exactly the path of a
live answer, with a box that is known.
"""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from georeasoner_plugin.backend.reasoner import scored_text  # noqa: E402
from georeasoner_plugin.backend.reasoning import token_char_spans  # noqa: E402
from georeasoner_plugin.core.confidence import ScoredText, box_spans  # noqa: E402
from georeasoner_plugin.core.profiles import GEOREASONER  # noqa: E402

MESSAGES = GEOREASONER.messages("Which lakes could irrigate the fields east of the road?")


def noise_image(width, height, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@torch.inference_mode()
def recomputed_logprobs(reasoner, image, messages, new_ids, temperature=1.0):
    """log p of each generated id from one forward pass of the model over prompt + answer (no cache)."""
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


def test_greedy_probabilities_are_those_of_the_chosen_tokens(tiny_reasoner):
    image = noise_image(56, 84, seed=3)
    pieces = []
    text = tiny_reasoner.generate(image, MESSAGES, max_new_tokens=16, on_token=pieces.append)
    assert isinstance(text, ScoredText) and "".join(pieces) == text  # streaming still works
    ids = list(text.token_ids)
    assert len(ids) == tiny_reasoner.last_timings["new_tokens"] == len(text.token_logprobs)
    probabilities = [math.exp(t.logprob) for t in text.token_logprobs]
    assert all(0.0 < p <= 1.0 for p in probabilities)
    expected = recomputed_logprobs(tiny_reasoner, image, MESSAGES, ids)
    assert [t.logprob for t in text.token_logprobs] == pytest.approx(expected, abs=1e-4)
    # Greedy: each token is the most likely one, so no other token's recomputed p is higher.
    assert tiny_reasoner.generate(image, MESSAGES, max_new_tokens=16) == text
    # The spans tile the text: in order, contiguous, and the distinct ones add up to it (tokens that
    # only together make a character - random weights write broken UTF-8 too - share its span).
    spans = list(dict.fromkeys((t.start, t.end) for t in text.token_logprobs))
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])) and spans[0][0] == 0
    assert "".join(text[s:e] for s, e in spans) == text


def test_sampled_probabilities_are_of_the_tempered_distribution_sampled_from(tiny_reasoner):
    image = noise_image(56, 56, seed=4)
    text = tiny_reasoner.generate(image, MESSAGES, max_new_tokens=12, temperature=1.7, top_p=1.0, seed=11)
    expected = recomputed_logprobs(tiny_reasoner, image, MESSAGES, list(text.token_ids), temperature=1.7)
    assert [t.logprob for t in text.token_logprobs] == pytest.approx(expected, abs=1e-4)
    untempered = recomputed_logprobs(tiny_reasoner, image, MESSAGES, list(text.token_ids))
    assert [t.logprob for t in text.token_logprobs] != pytest.approx(untempered, abs=1e-4)


def test_token_spans_of_the_real_tokenizer_on_an_answer_with_a_multibyte_character(tiny_reasoner):
    tokenizer = tiny_reasoner.processor.tokenizer
    answer = "<think>Lake 🌊 east</think><answer>[[12,30,250,198]]</answer>"
    ids = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.convert_tokens_to_ids("<|im_end|>")]

    def decode(part):
        return tokenizer.decode(part, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    spans = token_char_spans(decode, ids)
    assert decode(ids) == answer and len(spans) == len(ids)
    assert spans[-1] == (len(answer), len(answer))  # <|im_end|>: special, no characters
    wave = answer.index("🌊")
    on_wave = [s for s in spans if s[0] <= wave < s[1]]
    assert on_wave and all(s == (wave, wave + 1) for s in on_wave)  # the wave's byte tokens share it
    for i, (start, end) in enumerate(spans):
        if end > start and (start, end) != (wave, wave + 1):
            assert decode([ids[i]]) == answer[start:end]
    text = scored_text(tokenizer, ids, [-0.1] * len(ids))
    assert text == answer and box_spans(text, GEOREASONER.parse(text).objects) == [(answer.index("12,"),
                                                                                   answer.index("]]"))]
