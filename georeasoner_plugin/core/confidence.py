"""The reasoner's confidence in each box it wrote: ``box_score``.

A reasoner that can say how likely each generated token was returns its text as a
:class:`ScoredText` (a ``str``, so every caller that wants text alone is unaffected) carrying one
:class:`TokenLogprob` per generated token: the token's character span in the text and its natural
log-probability. :func:`box_scores` finds, for each parsed object, the characters where its box's
four numbers were written and scores the box with the geometric mean of the probabilities of the
tokens overlapping them, ``exp(mean(log p))`` (length-normalised, so a box written in many tokens
is not penalised for that).

The parser itself is not changed (training rewards share it): the spans are found afterwards, by
looking for the parsed values in the part of the raw text the parser read its answer from.
Pure Python: QGIS, the backend and training import this very file.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

from .parsing import _FENCE, _TAG, MAX_OUTPUT_CHARS, _extract_reasoning, answer_span

Span = Tuple[int, int]  # [start, end) character offsets in the raw output

# One number as a model writes it (JSON, Python literal or Qwen's box tokens). Not part of a word:
# "bbox_2d" or "points 1" hold digits too; the separator rule below rejects the latter.
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])")
# What may stand between the four numbers of one box: commas, spaces, quotes and the parentheses
# of Qwen's "(x1,y1),(x2,y2)" box tokens; never a square bracket (that would run into the next box).
_BOX_SEPARATOR = re.compile(r"""^[\s,()"']*$""")


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its characters [start, end) in the output text and log p (natural log)."""

    start: int
    end: int
    logprob: float


class ScoredText(str):
    """A reasoner's raw output text that also carries its tokens' log-probabilities.

    ``token_logprobs`` is None when the reasoner could not say (a server without logprobs, a
    recorded answer); ``token_ids`` holds the generated ids where the reasoner knows them.
    """

    token_logprobs: Optional[Tuple[TokenLogprob, ...]]
    token_ids: Tuple[int, ...]

    def __new__(cls, text: str, token_logprobs: Optional[Sequence[TokenLogprob]] = None,
                token_ids: Sequence[int] = ()) -> "ScoredText":
        obj = super().__new__(cls, text)
        obj.token_logprobs = tuple(token_logprobs) if token_logprobs is not None else None
        obj.token_ids = tuple(int(i) for i in token_ids)
        return obj


def token_logprobs_of(text: Any) -> Optional[Tuple[TokenLogprob, ...]]:
    """The token log-probabilities a reasoner attached to its output, None for plain text."""
    return getattr(text, "token_logprobs", None)


def answer_regions(text: str) -> List[Span]:
    """The parts of the raw text the parser reads its answer from (``parsing._parse``'s rules)."""
    text = text[:MAX_OUTPUT_CHARS]
    tags = [(m.start(), m.end(), m.group(1) == "/", m.group(2).lower()) for m in _TAG.finditer(text)]
    answer = answer_span(tags, len(text))
    if answer is not None:
        return [answer]
    _, _, think = _extract_reasoning(text, tags)
    if think is None:
        return [(0, len(text))]
    return [(0, think[0]), (think[1], len(text))]


def _fenced(text: str, region: Span) -> Span:
    """Within a region, the last code fence's content when there is one (the parser reads that)."""
    matches = list(_FENCE.finditer(text, region[0], region[1]))
    return (matches[-1].start(1), matches[-1].end(1)) if matches else region


def _written_box(values: Sequence[float]) -> Tuple[float, float, float, float]:
    x1, y1, x2, y2 = values
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))  # the parser reorders swapped corners


def box_spans(text: str, objects: Sequence[Any]) -> List[Optional[Span]]:
    """For each parsed object (in the parser's order), the characters of the raw text where its box's
    four numbers were written, from the first digit to the last; None for an object without a box
    or whose box cannot be found in the text.

    Boxes are matched in order, each after the previous one's end, by value: four numbers in a row
    with only commas, spaces, quotes or parentheses between them, equal to the parsed box once swapped
    corners are put back in order. This survives every repair the parser makes (quotes, trailing
    commas, salvaged pieces, Qwen's box tokens) because none of them changes the digits.
    """
    text = str(text)
    numbers: List[Tuple[int, int, float]] = []
    for region in answer_regions(text):
        start, end = _fenced(text, region)
        numbers.extend((m.start(), m.end(), float(m.group())) for m in _NUMBER.finditer(text, start, end))
    spans: List[Optional[Span]] = []
    cursor = 0  # index into numbers of the first one not used by an earlier box
    for obj in objects:
        box = getattr(obj, "box", None)
        found = None
        if box is not None:
            target = tuple(float(v) for v in box)
            for i in range(cursor, len(numbers) - 3):
                window = numbers[i:i + 4]
                if _written_box([n[2] for n in window]) != target:
                    continue
                if all(_BOX_SEPARATOR.match(text[a[1]:b[0]]) for a, b in zip(window, window[1:])):
                    found = (window[0][0], window[3][1])
                    cursor = i + 4
                    break
        spans.append(found)
    return spans


def span_score(tokens: Sequence[TokenLogprob], span: Optional[Span]) -> Optional[float]:
    """exp(mean(log p)) of the tokens overlapping ``span``; None without a span or tokens on it."""
    if span is None:
        return None
    logprobs = [t.logprob for t in tokens if t.start < span[1] and t.end > span[0]]
    if not logprobs or not all(math.isfinite(v) for v in logprobs):
        return None
    return min(1.0, math.exp(sum(logprobs) / len(logprobs)))


def box_scores(text: str, objects: Sequence[Any],
               tokens: Optional[Sequence[TokenLogprob]]) -> List[Optional[float]]:
    """``box_score`` of each parsed object (None throughout when the reasoner gave no probabilities)."""
    if tokens is None:
        return [None] * len(objects)
    return [span_score(tokens, span) for span in box_spans(text, objects)]


def annotate_box_scores(text: Any, objects: Sequence[Any]) -> None:
    """Set ``box_score`` on each parsed object from the token log-probabilities ``text`` carries."""
    for obj, score in zip(objects, box_scores(str(text), objects, token_logprobs_of(text))):
        obj.box_score = score
