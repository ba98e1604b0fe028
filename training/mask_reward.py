"""Think2Seg-RS's reward: the IoU of a frozen segmenter's mask with the ground-truth mask.

The segmenter is injected (torch stays out of this module); the answer is prompted exactly as the
cascade prompts SAM2 at inference, so the reward scores what inference will produce.
"""
from __future__ import annotations

from typing import Any, Callable, List, NamedTuple, Optional, Tuple

import numpy as np

from georeasoner_plugin.core.frames import map_objects_to_image
from georeasoner_plugin.core.parsing import ParsedAnswer
from georeasoner_plugin.core.profiles import (Profile)
from georeasoner_plugin.core.protocol import PARSE_EMPTY

from .reward_base import DEFAULT_TRAINING_PROFILE, Box, Point, _parsed_for_accuracy, resolve_profile

# --------------------------------------------------------------------------- mask IoU (frozen SAM2)

class SegmentPrompt(NamedTuple):
    """One object's SAM prompt in pixels of the image handed to ``segment``."""

    box: Optional[Box]
    points: List[Point]


Segment = Callable[[Any, List[SegmentPrompt]], Any]


def answer_prompts(completion, image_width: int, image_height: int, profile=DEFAULT_TRAINING_PROFILE,
                   frame_width: Optional[int] = None, frame_height: Optional[int] = None) -> Optional[List[SegmentPrompt]]:
    """SAM prompts in image pixels for a completion; None when the answer is unusable."""
    prof = resolve_profile(profile)
    parsed = _parsed_for_accuracy(completion, prof)
    if parsed is None:
        return None
    return _prompts(parsed, prof, image_width, image_height, frame_width, frame_height)


def _prompts(parsed: ParsedAnswer, prof: Profile, image_width, image_height, frame_width, frame_height):
    if frame_width and frame_height:
        # The profile's frame kind keeps Qwen3-VL's 0-1000 answer frame (issue 12).
        frame = prof.frame.model_frame(int(image_width), int(image_height), int(frame_width), int(frame_height))
    else:
        frame = prof.frame.frame_for(int(image_width), int(image_height))
    mapped, _ = map_objects_to_image(parsed.objects, frame)
    # The same prompting as the cascade's, so the reward scores what inference will produce.
    return [SegmentPrompt(m.box, prof.sam_points(m.box, m.points)) for m in prof.drop_duplicates(mapped)]


def _load_mask(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        array = value
    elif value is None:
        raise ValueError("the mask IoU reward needs the record's ground-truth mask (column 'mask' or 'gt_mask')")
    elif hasattr(value, "size") and hasattr(value, "mode"):  # a PIL image
        array = np.asarray(value)
    else:
        from PIL import Image

        with Image.open(value) as img:
            array = np.asarray(img)
    if array.ndim == 3:
        array = array.any(axis=2)
    return array != 0


def _load_image(value: Any) -> Any:
    if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
        from PIL import Image

        with Image.open(value) as img:
            return np.asarray(img.convert("RGB"))
    if hasattr(value, "size") and hasattr(value, "mode"):
        return np.asarray(value.convert("RGB"))
    return value


def _union_of_masks(masks: Any, shape: Tuple[int, int]) -> np.ndarray:
    union = np.zeros(shape, dtype=bool)
    if masks is None:
        return union
    if isinstance(masks, np.ndarray) and masks.ndim == 2:
        masks = [masks]
    for mask in masks:
        array = np.asarray(getattr(mask, "mask", mask))
        if array.shape != shape:
            raise ValueError(f"segment() returned a mask of shape {array.shape}, the target is {shape}")
        union |= array.astype(bool)
    return union


def make_mask_iou_reward(segment: Segment, empty_target_reward: float = 1.0, name: str = "mask_iou"):
    """Think2Seg-RS's reward: IoU of the frozen segmenter's mask with the ground-truth mask.

    ``segment(image, prompts) -> masks`` is injected (torch stays out of this module): ``image``
    is an RGB uint8 array (paths and PIL images are loaded first), ``prompts`` a list of
    SegmentPrompt in its pixels; it returns one mask per prompt (arrays, a stacked array, or
    objects with a ``.mask``). Masks are OR-merged. An explicit empty answer on an empty target
    scores ``empty_target_reward``; an unusable answer scores 0; an answer whose objects all fall
    outside the image counts as predicting nothing where something was claimed, which scores 0.
    """

    def mask_iou_reward(completion, mask=None, gt_mask=None, image=None, profile=DEFAULT_TRAINING_PROFILE,
                        frame_width=None, frame_height=None, **_) -> float:
        target = _load_mask(gt_mask if gt_mask is not None else mask)
        height, width = target.shape
        prof = resolve_profile(profile)
        parsed = _parsed_for_accuracy(completion, prof)
        if parsed is None:
            return 0.0
        if parsed.status == PARSE_EMPTY:
            return float(empty_target_reward) if not target.any() else 0.0
        prompts = _prompts(parsed, prof, width, height, frame_width, frame_height)
        if not prompts:
            return 0.0
        predicted = _union_of_masks(segment(_load_image(image), prompts), target.shape)
        union = np.count_nonzero(predicted | target)
        return float(np.count_nonzero(predicted & target)) / union if union else 0.0

    mask_iou_reward.__name__ = name
    return mask_iou_reward
