"""What the cascade needs from a reasoning model: the ``ReasonerProtocol`` both reasoners implement.

Two implementations: ``reasoner.Reasoner`` (Qwen-VL in this process, torch) and
``remote_reasoner.RemoteReasoner`` (an OpenAI-compatible endpoint, httpx). The cascade, the
server and training's evaluation only use what this Protocol names, so either one (or a replay) can
stand behind them. Light on purpose: no torch, no transformers, no httpx here.

Frame contract: ``generate()`` receives the image already resized to the profile's model frame
(``cascade.resize_to_frame``); an image that is not one raises :class:`FrameMismatchError`, the one
error for that mistake whichever reasoner runs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple, runtime_checkable

from ..core.frames import FrameError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from PIL.Image import Image

__all__ = ["FrameMismatchError", "ReasonerProtocol", "check_frame", "check_generation", "token_char_spans"]

Messages = List[Dict[str, Any]]


class FrameMismatchError(FrameError):
    """The image handed to a reasoner is not in a model frame, or the model's processor did not keep it."""


@runtime_checkable
class ReasonerProtocol(Protocol):
    """A reasoning model answering about one image at a time."""

    name: str  # what the answer's models["reasoner"] says
    last_timings: Dict[str, Any]  # of the last generate(): preprocess_s, reason_s, cancelled...

    def generate(self, image: "Image", messages: Messages, *, max_new_tokens: int = 512,
                 temperature: float = 0.0, top_p: float = 1.0, top_k: Optional[int] = None,
                 seed: Optional[int] = None, on_token: Optional[Callable[[str], None]] = None,
                 should_stop: Optional[Callable[[], bool]] = None) -> str:
        """The model's raw answer text (new text only). ``on_token`` gets the pieces as they are
        generated (they add up to the result); ``should_stop`` is polled and ends generation early.

        A reasoner that knows its tokens' probabilities returns a ``core.confidence.ScoredText`` (a
        ``str`` carrying them, from which the cascade computes each box's ``box_score``); a plain
        ``str`` means no probabilities."""
        ...


def check_frame(width: int, height: int, factors: Sequence[int]) -> None:
    """FrameMismatchError unless both sides are positive multiples of one of ``factors``."""
    if width <= 0 or height <= 0 or not any(width % f == 0 and height % f == 0 for f in factors):
        raise FrameMismatchError(
            f"image is {width} x {height} pixels, not a model frame: both sides must be positive multiples of "
            f"{' or '.join(map(str, factors))}. Resize it with the profile's frame (cascade.resize_to_frame) first.")


def check_generation(max_new_tokens: int, temperature: float) -> None:
    """ValueError for generation settings no reasoner accepts."""
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    if temperature < 0:
        raise ValueError("temperature must be >= 0 (0 = greedy)")


def token_char_spans(decode: Callable[[Sequence[int]], str], ids: Sequence[int]) -> List[Tuple[int, int]]:
    """[start, end) of each generated token in ``decode(ids)``, the text the reasoner returns.

    Tokens are decoded a few at a time from the last point where the text so far ended on a whole
    character (byte-level BPE: decode(a + b) == decode(a) + decode(b) there), so the cost is linear
    rather than one decode of every prefix. Tokens that only together make a character (an emoji
    split over three byte tokens) share that character's span; special tokens decode to nothing and
    get an empty span. If the pieces do not add up to the whole text (a tokenizer whose decode is not
    concatenative), every prefix is decoded instead: exact, quadratic, rare.
    """
    ids = [int(i) for i in ids]
    spans: List[Tuple[int, int]] = []
    base, base_len = 0, 0  # first token not yet placed; characters placed so far
    for i in range(len(ids)):
        piece = decode(ids[base:i + 1])
        if piece.endswith("\ufffd") and i + 1 < len(ids):
            continue  # an incomplete character: place it with the token that completes it
        spans.extend([(base_len, base_len + len(piece))] * (i + 1 - base))
        base, base_len = i + 1, base_len + len(piece)
    if base_len == len(decode(ids)):
        return spans
    spans, previous = [], 0
    for i in range(len(ids)):
        end = len(decode(ids[:i + 1]))
        spans.append((min(previous, end), end))
        previous = end
    return spans
