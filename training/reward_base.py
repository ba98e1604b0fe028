"""What every training reward reads and shares: the completion's text and parse, the ground truth,
the matching of several objects, and the papers' pure per-object scores (GRASP Eqs. 6-9).

training.rewards builds the rewards on these; see its docstring for the equations and choices.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from georeasoner_plugin.core.frames import box_center
from georeasoner_plugin.core.parsing import MAX_OUTPUT_CHARS, ParsedAnswer, ParsedObject
from georeasoner_plugin.core.profiles import (Profile, get_profile)
from georeasoner_plugin.core.protocol import PARSE_EMPTY, PARSE_OK, PARSE_PARTIAL

# The profile training uses when none is named: GeoReasoner's own (core.profiles.DEFAULT_PROFILE,
# "remotereasoner", is what inference uses when none is named).
DEFAULT_TRAINING_PROFILE = "georeasoner"
USABLE_STATUSES = (PARSE_OK, PARSE_EMPTY, PARSE_PARTIAL)
SCHEMA_STATUSES = (PARSE_OK, PARSE_EMPTY)

# GRASP thresholds (paper): box IoU > 0.5; centre distance reward max(0, 1 - d / 0.5); mean L1 < 0.5.
GRASP_BOX_IOU = 0.5
GRASP_CENTER_SCALE = 0.5
GRASP_POINT_L1 = 0.5
# Seg-Zero / VisionReasoner accuracy reward (pixels of the model frame; 840 x 840 in the originals).
SEGZERO_IOU = 0.5
SEGZERO_BOX_L1_PX = 10.0
SEGZERO_POINT_PX = 30.0
SEGZERO_MAX_OBJECTS = 120
# Seg-Zero's non-repetition reward fails from the second repeated sentence on.
REPEATS_TOLERATED = 1

Box = Tuple[float, float, float, float]
Point = Tuple[float, float]

_LAYOUT = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")

# --------------------------------------------------------------------------- inputs

def completion_text(completion: Any) -> str:
    """The assistant's text of a completion: a string, or TRL's list of chat messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return _content_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        parts = []
        for message in completion:
            if isinstance(message, str):
                parts.append(message)
            elif isinstance(message, Mapping) and message.get("role", "assistant") == "assistant":
                parts.append(_content_text(message.get("content")))
        return "".join(parts)
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):  # multimodal parts: [{"type": "text", "text": ...}]
        return "".join(p["text"] for p in content
                       if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    return ""


def resolve_profile(profile: Any) -> Profile:
    if isinstance(profile, Profile):
        return profile
    if profile is None:
        return get_profile(DEFAULT_TRAINING_PROFILE)
    try:
        return get_profile(str(profile))
    except KeyError as exc:
        raise ValueError(str(exc)) from None


def parse_completion(completion: Any, profile: Any = DEFAULT_TRAINING_PROFILE) -> ParsedAnswer:
    return resolve_profile(profile).parse(completion_text(completion))


def has_answer_section(text: str) -> bool:
    """True when the text holds an opening <answer> followed by a closing </answer> (any case)."""
    lowered = text[:MAX_OUTPUT_CHARS].lower()
    start = lowered.find("<answer>")
    return start >= 0 and lowered.find("</answer>", start + len("<answer>")) >= 0


def _parsed_for_accuracy(completion, profile) -> Optional[ParsedAnswer]:
    """The parsed answer an accuracy reward may score, or None (which scores 0, see the module doc).

    Profiles that answer inside tags get no credit without a closed <answer>...</answer> section,
    however much the tolerant parser could read from the free text.
    """
    prof = resolve_profile(profile)
    text = completion_text(completion)
    if prof.expects_think and not has_answer_section(text):
        return None
    parsed = prof.parse(text)
    return parsed if parsed.status in USABLE_STATUSES else None


def _predicted_objects(completion, profile) -> Optional[List[ParsedObject]]:
    """The parsed objects, or None when the answer is unusable (which scores 0, see the module doc)."""
    parsed = _parsed_for_accuracy(completion, profile)
    return list(parsed.objects) if parsed is not None else None


def _maybe_json(value: Any) -> Any:
    # Some dataset tools flatten nested lists into JSON strings; accept those too.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError(f"ground truth {value[:80]!r} is neither a list nor JSON") from None
    return value


def _numbers(raw: Any, count: int, what: str) -> Tuple[float, ...]:
    if not isinstance(raw, (list, tuple)) or len(raw) != count:
        raise ValueError(f"ground-truth {what} must be {count} numbers, got {raw!r}")
    values = tuple(float(v) for v in raw)
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"ground-truth {what} has a non-finite number: {raw!r}")
    return values


def ground_truth_boxes(gt_boxes: Any) -> List[Box]:
    boxes = _maybe_json(gt_boxes)
    if boxes is None:
        return []
    if not isinstance(boxes, (list, tuple)):
        raise ValueError(f"gt_boxes must be a list of [x1, y1, x2, y2], got {type(boxes).__name__}")
    return [_numbers(b, 4, "box") for b in boxes]


def ground_truth_points(gt_points: Any, object_count: int) -> List[List[Point]]:
    """One list of points per ground-truth object ([] where the record has none)."""
    points = _maybe_json(gt_points)
    if points is None:
        return [[] for _ in range(object_count)]
    if not isinstance(points, (list, tuple)) or len(points) != object_count:
        raise ValueError(f"gt_points must hold one list of points per ground-truth box ({object_count}), "
                         f"got {points!r}")
    return [[_numbers(p, 2, "point") for p in object_points] for object_points in points]


# --------------------------------------------------------------------------- pure scores

def count_score(gt_count: int, pred_count: int) -> float:
    """RemoteReasoner's count reward: 1 if J = K = 0, 0 if J = 0 < K, else exp(-2 |K - J| / J)."""
    if gt_count == 0:
        return 1.0 if pred_count == 0 else 0.0
    return math.exp(-2.0 * abs(pred_count - gt_count) / gt_count)


def max_over_k_mean(scores: np.ndarray, gt_count: int) -> float:
    """RemoteReasoner Eq. 4 as written: mean over ground truth j of max over predictions k.

    One prediction may serve several ground-truth boxes. J = 0: 1 when nothing was predicted, else 0.
    """
    pred_count = scores.shape[0]
    if gt_count == 0:
        return 1.0 if pred_count == 0 else 0.0
    if pred_count == 0:
        return 0.0
    return float(scores.max(axis=0).sum()) / gt_count


def hungarian_mean(scores: np.ndarray, gt_count: int) -> float:
    """Best one-to-one sum of a (K predicted, J ground truth) score matrix, divided by J.

    J = 0 gives 1 when nothing was predicted and 0 otherwise.
    """
    pred_count = scores.shape[0]
    if gt_count == 0:
        return 1.0 if pred_count == 0 else 0.0
    if pred_count == 0:
        return 0.0
    rows, cols = linear_sum_assignment(scores, maximize=True)
    return float(scores[rows, cols].sum()) / gt_count


def _pair_matrix(objects: Sequence[ParsedObject], gt_count: int, score: Callable[[ParsedObject, int], float]) -> np.ndarray:
    matrix = np.zeros((len(objects), gt_count), dtype=float)
    for i, obj in enumerate(objects):
        for j in range(gt_count):
            matrix[i, j] = score(obj, j)
    return matrix


def _box_scale(box: Box) -> Tuple[float, float]:
    # A degenerate ground-truth box (a line) still needs a finite scale: one pixel at least.
    return max(box[2] - box[0], 1.0), max(box[3] - box[1], 1.0)


def normalised_center_distance(pred_box: Sequence[float], gt_box: Box) -> float:
    """GRASP Eq. 6: d = 1/2 (|cx_p - cx_g| / w_g + |cy_p - cy_g| / h_g)."""
    (px, py), (gx, gy) = box_center(pred_box), box_center(gt_box)
    width, height = _box_scale(gt_box)
    return 0.5 * (abs(px - gx) / width + abs(py - gy) / height)


def grasp_center_score(pred_box: Sequence[float], gt_box: Box) -> float:
    """GRASP Eq. 7: max(0, 1 - d / 0.5)."""
    return max(0.0, 1.0 - normalised_center_distance(pred_box, gt_box) / GRASP_CENTER_SCALE)


def _inside(point: Sequence[float], box: Sequence[float]) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def grasp_points_distance(pred_points: Sequence[Point], gt_box: Box, gt_points: Sequence[Point]) -> float:
    """GRASP Eqs. 8-9: S = (d1 + d2) / 2, d1 = L1(p1 - p1_gt) / s_min, d2 = L1(p2 - p2_gt) / s_max."""
    width, height = _box_scale(gt_box)
    s_min, s_max = min(width, height), max(width, height)
    (p1, p2), (g1, g2) = pred_points[:2], gt_points[:2]
    d1 = (abs(p1[0] - g1[0]) + abs(p1[1] - g1[1])) / s_min
    d2 = (abs(p2[0] - g2[0]) + abs(p2[1] - g2[1])) / s_max
    return (d1 + d2) / 2.0


def grasp_points_score(pred_points: Sequence[Point], gt_box: Box, gt_points: Sequence[Point]) -> float:
    """GRASP reward (5): 1 when both predicted points lie in the GT box (edges included) and S < 0.5.

    Point k is compared with ground-truth point k (the paper's p1 = centre, p2 = edge point). A
    ground truth without points can only check that both points are inside its box.
    """
    if len(pred_points) < 2 or not all(_inside(p, gt_box) for p in pred_points[:2]):
        return 0.0
    if not gt_points:
        return 1.0
    if len(gt_points) < 2:
        raise ValueError(f"GRASP ground truth needs two points per object, got {list(gt_points)!r}")
    return 1.0 if grasp_points_distance(pred_points, gt_box, gt_points) < GRASP_POINT_L1 else 0.0
