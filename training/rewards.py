"""GRPO rewards of the method family (RemoteReasoner, GRASP, Seg-Zero, Think2Seg-RS).

Every reward takes one completion (a string, or TRL's conversational form: a list of
{"role", "content"} messages) and the record's ground truth as keyword arguments, and returns a
float. Ground truth is in the MODEL FRAME (the profile's resized image), like the numbers the model
writes: ``gt_boxes`` = [[x1, y1, x2, y2], ...], ``gt_points`` = [[[x, y], [x, y]], ...] (one list
per object), ``profile`` = the prompt profile's name. Completions are parsed with the profile's own
parser (georeasoner_plugin.core), so the model is rewarded for exactly what inference reads.

Garbage completions (None, numbers, huge strings, broken JSON) never raise: an answer the parser
cannot use scores 0 on every accuracy reward, even on an empty target, because only an explicit
empty answer ("[]") means "nothing here". Malformed ground truth or an unknown profile is a dataset
or configuration bug and raises a ValueError naming it.

Equations (cited where each reward is defined):
- RemoteReasoner (Yao et al., Section 3.3): R = R_IoU + R_count + R_format (Eq. 6). R_IoU (Eq. 4)
  averages over the J ground-truth boxes; the text says "optimal Hungarian matching" while Eq. 4
  takes max over k for each ground-truth box independently (one box may serve several targets).
  Default: Hungarian (``remotereasoner_iou``); the formula's reading is ``remotereasoner_iou_max``.
  R_count is Eq. 5. R_format is strict: <think>...</think><answer>[[x1,y1,x2,y2], ...]</answer>.
- GRASP (Jiang et al., Section 3.3): five rewards, summed: reasoning format (1), prompt format (2,
  Fig. 3's schema exactly), box IoU > 0.5 (3, Eq. 5), box-centre distance (4, Eqs. 6-7:
  d = 1/2 (|dx| / w_g + |dy| / h_g), R = max(0, 1 - d / 0.5)) and points accuracy (5, Eqs. 8-9:
  d1 = L1(p1) / s_min, d2 = L1(p2) / s_max, S = (d1 + d2) / 2; 1 when both points are inside the GT
  box and S < 0.5). GRASP has no "no target" answer; ours is ``{}`` (read as an explicit empty
  answer), which scores full marks on every GRASP reward when the target is empty.

Choices where the papers leave room:
- Multi-object answers on single-object rewards (GRASP) are matched one-to-one by Hungarian
  assignment maximising the reward's own pairwise score and averaged over the J ground-truth
  objects. J = 0: 1 for an explicit empty answer, else 0.
- An accuracy reward never credits a completion without a closed <answer>...</answer> section
  (for profiles whose answers carry tags), whatever the tolerant parser could salvage from free text.
- A degenerate ground-truth box (a line) uses 1 pixel as its width or height in the normalisations.
"""
from __future__ import annotations

import ast
import json
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from georeasoner_plugin.core.frames import box_center, box_iou
from georeasoner_plugin.core.parsing import MAX_OUTPUT_CHARS, ParsedObject

from .mask_reward import SegmentPrompt, answer_prompts, make_mask_iou_reward  # noqa: F401 - part of this API
from .reward_base import (DEFAULT_TRAINING_PROFILE, GRASP_BOX_IOU, GRASP_POINT_L1, REPEATS_TOLERATED,  # noqa: F401
                          SCHEMA_STATUSES, SEGZERO_BOX_L1_PX, SEGZERO_IOU, SEGZERO_MAX_OBJECTS, SEGZERO_POINT_PX,
                          USABLE_STATUSES, _LAYOUT, _SENTENCE_END, Box, Point, _inside, _pair_matrix,
                          _parsed_for_accuracy, _predicted_objects, completion_text, count_score,
                          grasp_center_score, grasp_points_distance, grasp_points_score, ground_truth_boxes,
                          ground_truth_points, has_answer_section, hungarian_mean, max_over_k_mean,
                          normalised_center_distance, parse_completion, resolve_profile)

# --------------------------------------------------------------------------- RemoteReasoner

def _iou_matrix(completion, gt_boxes, profile) -> Optional[Tuple[np.ndarray, int]]:
    gt = ground_truth_boxes(gt_boxes)
    objects = _predicted_objects(completion, profile)
    if objects is None:
        return None
    return _pair_matrix(objects, len(gt), lambda o, j: box_iou(o.box, gt[j]) if o.box is not None else 0.0), len(gt)


def remotereasoner_iou_reward(completion, gt_boxes=None, profile=DEFAULT_TRAINING_PROFILE, **_) -> float:
    """RemoteReasoner R_IoU (Eq. 4), the text's reading: Hungarian-matched IoU summed over J."""
    matrix = _iou_matrix(completion, gt_boxes, profile)
    return 0.0 if matrix is None else hungarian_mean(*matrix)


def remotereasoner_iou_max_reward(completion, gt_boxes=None, profile=DEFAULT_TRAINING_PROFILE, **_) -> float:
    """RemoteReasoner R_IoU (Eq. 4), the formula's reading: mean over j of max over k of IoU."""
    matrix = _iou_matrix(completion, gt_boxes, profile)
    return 0.0 if matrix is None else max_over_k_mean(*matrix)


def remotereasoner_count_reward(completion, gt_boxes=None, profile=DEFAULT_TRAINING_PROFILE, **_) -> float:
    """count_score(J, K), K = the number of objects in a usable answer."""
    gt = ground_truth_boxes(gt_boxes)
    objects = _predicted_objects(completion, profile)
    if objects is None:
        return 0.0
    return count_score(len(gt), len(objects))


def think_answer_format_reward(completion, **_) -> float:
    """1 for exactly one <think>...</think> followed by exactly one <answer>...</answer>, nothing else."""
    text = completion_text(completion)[:MAX_OUTPUT_CHARS + 1]
    if len(text) > MAX_OUTPUT_CHARS:
        return 0.0
    single = all(text.count(tag) == 1 for tag in ("<think>", "</think>", "<answer>", "</answer>"))
    return 1.0 if single and _LAYOUT.fullmatch(text) else 0.0


def answer_schema_reward(completion, profile=DEFAULT_TRAINING_PROFILE, **_) -> float:
    """1 when every answered object has a box and exactly the profile's number of points.

    An explicit empty answer fits every schema; an answer the parser had to salvage (partial)
    does not.
    """
    prof = resolve_profile(profile)
    parsed = prof.parse(completion_text(completion))
    if parsed.status not in SCHEMA_STATUSES:
        return 0.0
    fits = all(o.box is not None and len(o.points) == prof.points_per_object for o in parsed.objects)
    return 1.0 if fits else 0.0


def _strict_answer(completion) -> Optional[str]:
    """The text between the tags of a completion laid out exactly as <think>..</think><answer>..</answer>."""
    text = completion_text(completion)
    if think_answer_format_reward(text) != 1.0:
        return None
    return text[text.index("<answer>") + len("<answer>"):text.index("</answer>")].strip()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numbers_list(value: Any, count: int) -> bool:
    return isinstance(value, list) and len(value) == count and all(_is_number(v) for v in value)


def remotereasoner_format_reward(completion, **_) -> float:
    """RemoteReasoner R_format (Section 3.3), strict: 1 only for
    <think>...</think><answer>[[x1,y1,x2,y2], ...]</answer>, the answer a JSON list of 4-number
    lists (``[]`` allowed). Prose, code fences, dicts, tuples, "none" and quoted numbers score 0.
    """
    answer = _strict_answer(completion)
    if answer is None:
        return 0.0
    try:
        value = json.loads(answer)
    except ValueError:
        return 0.0
    ok = isinstance(value, list) and all(_numbers_list(box, 4) for box in value)
    return 1.0 if ok else 0.0


GRASP_ANSWER_KEYS = ("bbox", "points 1", "points 2")


def read_grasp_answer(answer: str) -> Optional[dict]:
    """The answer as Fig. 3's dict (JSON, or the figure's own single-quoted form), else None."""
    stripped = answer.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        return None
    try:
        value = json.loads(stripped)
    except ValueError:
        try:
            value = ast.literal_eval(stripped)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
    return value if isinstance(value, dict) else None


def grasp_prompt_format_reward(completion, **_) -> float:
    """GRASP prompt-format reward (2): the <answer> holds exactly Fig. 3's schema.

    One object {'bbox': [4 numbers], 'points 1': [x, y], 'points 2': [x, y]} with nothing else
    (JSON or the figure's single quotes), or ``{}``, our explicit "no target" answer (GRASP has none).
    The completion must also have the think/answer layout of reward (1).
    """
    answer = _strict_answer(completion)
    value = None if answer is None else read_grasp_answer(answer)
    if value is None:
        return 0.0
    if not value:
        return 1.0
    ok = (set(value) == set(GRASP_ANSWER_KEYS) and _numbers_list(value["bbox"], 4)
          and _numbers_list(value["points 1"], 2) and _numbers_list(value["points 2"], 2))
    return 1.0 if ok else 0.0


# --------------------------------------------------------------------------- GRASP

def grasp_box_iou_reward(completion, gt_boxes=None, profile=DEFAULT_TRAINING_PROFILE, **_) -> float:
    """GRASP reward (3), Eq. 5: share of ground-truth boxes matched by a predicted box with IoU > 0.5."""
    gt = ground_truth_boxes(gt_boxes)
    objects = _predicted_objects(completion, profile)
    if objects is None:
        return 0.0
    scores = _pair_matrix(objects, len(gt),
                          lambda o, j: float(o.box is not None and box_iou(o.box, gt[j]) > GRASP_BOX_IOU))
    return hungarian_mean(scores, len(gt))


def grasp_center_distance_reward(completion, gt_boxes=None, profile=DEFAULT_TRAINING_PROFILE, **_) -> float:
    """GRASP reward (4), Eqs. 6-7 per object, matched and averaged over ground truth."""
    gt = ground_truth_boxes(gt_boxes)
    objects = _predicted_objects(completion, profile)
    if objects is None:
        return 0.0

    def score(obj: ParsedObject, j: int) -> float:
        return 0.0 if obj.box is None else grasp_center_score(obj.box, gt[j])

    return hungarian_mean(_pair_matrix(objects, len(gt), score), len(gt))


def grasp_points_reward(completion, gt_boxes=None, gt_points=None, profile=DEFAULT_TRAINING_PROFILE, **_) -> float:
    """GRASP reward (5), Eqs. 8-9 per matched object (grasp_points_score), averaged over ground truth."""
    gt = ground_truth_boxes(gt_boxes)
    gt_pts = ground_truth_points(gt_points, len(gt))
    objects = _predicted_objects(completion, profile)
    if objects is None:
        return 0.0
    scores = _pair_matrix(objects, len(gt), lambda o, j: grasp_points_score(o.points, gt[j], gt_pts[j]))
    return hungarian_mean(scores, len(gt))


# --------------------------------------------------------------------------- Seg-Zero

def segzero_accuracy_reward(completion, gt_boxes=None, gt_points=None, profile=DEFAULT_TRAINING_PROFILE, **_) -> float:
    """Seg-Zero / VisionReasoner accuracy, in [0, 3] like the original.

    Pair cost 3 - [IoU > 0.5] - [mean |box coordinate difference| < 10 px] - [the predicted
    point is within 30 px of the GT point and inside the predicted box]; Hungarian matching;
    score = sum over matches of (3 - cost) / max(M, N); at most 120 objects on either side.
    The first point of an object is its Seg-Zero point; a GT object without points uses its box
    centre. Differences from the original: both sides empty scores 3 (the original fails and
    scores 0, teaching models never to answer "nothing"), and box IoU is the continuous one of
    core.frames (the original adds 1 pixel to widths).
    """
    all_gt = ground_truth_boxes(gt_boxes)
    gt = all_gt[:SEGZERO_MAX_OBJECTS]
    gt_pts = ground_truth_points(gt_points, len(all_gt))[:SEGZERO_MAX_OBJECTS]
    objects = _predicted_objects(completion, profile)
    if objects is None:
        return 0.0
    objects = objects[:SEGZERO_MAX_OBJECTS]
    if not gt or not objects:
        return 3.0 if not gt and not objects else 0.0

    def score(obj: ParsedObject, j: int) -> float:
        if obj.box is None:
            return 0.0
        gt_point = gt_pts[j][0] if gt_pts[j] else box_center(gt[j])
        iou_hit = box_iou(obj.box, gt[j]) > SEGZERO_IOU
        l1_hit = sum(abs(a - b) for a, b in zip(obj.box, gt[j])) / 4.0 < SEGZERO_BOX_L1_PX
        point_hit = bool(obj.points) and (math.dist(obj.points[0], gt_point) < SEGZERO_POINT_PX
                                          and _inside(obj.points[0], obj.box))
        return float(iou_hit) + float(l1_hit) + float(point_hit)

    scores = _pair_matrix(objects, len(gt), score)
    rows, cols = linear_sum_assignment(scores, maximize=True)
    return float(scores[rows, cols].sum()) / max(len(objects), len(gt))


# --------------------------------------------------------------------------- reasoning quality

def _sentences(text: str) -> List[str]:
    return [" ".join(s.split()).lower() for s in _SENTENCE_END.split(text) if s.strip()]


def reasoning_penalty(completion, profile=DEFAULT_TRAINING_PROFILE, penalty: float = 0.5, **_) -> float:
    """-penalty for empty reasoning, -penalty for repeated sentences (Seg-Zero: two repeats or more).

    Never positive, so it only pushes away from degenerate outputs and cannot be farmed. The
    reasoning is the <think> section, or the whole text when there is none.
    """
    text = completion_text(completion)[:MAX_OUTPUT_CHARS]
    parsed = resolve_profile(profile).parse(text)
    reasoning = parsed.reasoning if parsed.has_think or parsed.reasoning else text
    total = 0.0
    if not reasoning.strip():
        total -= penalty
    sentences = _sentences(reasoning)
    if len(sentences) - len(set(sentences)) > REPEATS_TOLERATED:
        total -= penalty
    return total


# --------------------------------------------------------------------------- registry, TRL

REWARDS: Dict[str, Callable[..., float]] = {
    "remotereasoner_iou": remotereasoner_iou_reward,
    "remotereasoner_iou_max": remotereasoner_iou_max_reward,
    "remotereasoner_count": remotereasoner_count_reward,
    "remotereasoner_format": remotereasoner_format_reward,
    "think_answer_format": think_answer_format_reward,
    "answer_schema": answer_schema_reward,
    "grasp_prompt_format": grasp_prompt_format_reward,
    "grasp_box_iou": grasp_box_iou_reward,
    "grasp_center_distance": grasp_center_distance_reward,
    "grasp_points": grasp_points_reward,
    "segzero_accuracy": segzero_accuracy_reward,
    "reasoning_penalty": reasoning_penalty,
}

# The published recipes, by reward name (the mask IoU reward needs a segmenter: add it by hand).
# RemoteReasoner Eq. 6 (R_IoU + R_count + R_format); GRASP Section 3.3's five rewards, summed.
REWARD_SETS: Dict[str, Tuple[str, ...]] = {
    "remotereasoner": ("remotereasoner_iou", "remotereasoner_count", "remotereasoner_format"),
    "grasp": ("think_answer_format", "grasp_prompt_format", "grasp_box_iou", "grasp_center_distance",
              "grasp_points"),
    "segzero": ("think_answer_format", "answer_schema", "segzero_accuracy", "reasoning_penalty"),
}


def trl_reward(reward, name: Optional[str] = None) -> Callable[..., List[float]]:
    """A TRL reward function ``fn(completions, **columns) -> list[float]`` from one of ours.

    TRL passes each dataset column as a list aligned with ``completions``; values that are not
    such lists (e.g. ``trainer_state``) are handed to every call unchanged.
    """
    if isinstance(reward, str):
        if reward not in REWARDS:
            raise ValueError(f"unknown reward {reward!r}; known rewards: {', '.join(REWARDS)}")
        single, label = REWARDS[reward], name or reward
    else:
        single, label = reward, name or getattr(reward, "__name__", "reward")

    def batch(completions, **columns) -> List[float]:
        count = len(completions)
        scores = []
        for index, completion in enumerate(completions):
            row = {key: value[index] if isinstance(value, (list, tuple)) and len(value) == count else value
                   for key, value in columns.items()}
            scores.append(float(single(completion, **row)))
        return scores

    batch.__name__ = label  # TRL logs each reward under its function's name
    batch.__qualname__ = label
    return batch


def trl_rewards(names: Sequence[str]) -> List[Callable[..., List[float]]]:
    return [trl_reward(n) for n in names]
