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
import re
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from georeasoner_plugin.core.frames import box_center, box_iou, map_objects_to_image
from georeasoner_plugin.core.parsing import MAX_OUTPUT_CHARS, ParsedAnswer, ParsedObject
from georeasoner_plugin.core.profiles import (Profile, get_profile)
from georeasoner_plugin.core.protocol import PARSE_EMPTY, PARSE_OK, PARSE_PARTIAL

DEFAULT_PROFILE = "georeasoner"
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
        return get_profile(DEFAULT_PROFILE)
    try:
        return get_profile(str(profile))
    except KeyError as exc:
        raise ValueError(str(exc)) from None


def parse_completion(completion: Any, profile: Any = DEFAULT_PROFILE) -> ParsedAnswer:
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


# --------------------------------------------------------------------------- RemoteReasoner

def _iou_matrix(completion, gt_boxes, profile) -> Optional[Tuple[np.ndarray, int]]:
    gt = ground_truth_boxes(gt_boxes)
    objects = _predicted_objects(completion, profile)
    if objects is None:
        return None
    return _pair_matrix(objects, len(gt), lambda o, j: box_iou(o.box, gt[j]) if o.box is not None else 0.0), len(gt)


def remotereasoner_iou_reward(completion, gt_boxes=None, profile=DEFAULT_PROFILE, **_) -> float:
    """RemoteReasoner R_IoU (Eq. 4), the text's reading: Hungarian-matched IoU summed over J."""
    matrix = _iou_matrix(completion, gt_boxes, profile)
    return 0.0 if matrix is None else hungarian_mean(*matrix)


def remotereasoner_iou_max_reward(completion, gt_boxes=None, profile=DEFAULT_PROFILE, **_) -> float:
    """RemoteReasoner R_IoU (Eq. 4), the formula's reading: mean over j of max over k of IoU."""
    matrix = _iou_matrix(completion, gt_boxes, profile)
    return 0.0 if matrix is None else max_over_k_mean(*matrix)


def remotereasoner_count_reward(completion, gt_boxes=None, profile=DEFAULT_PROFILE, **_) -> float:
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


def answer_schema_reward(completion, profile=DEFAULT_PROFILE, **_) -> float:
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

def grasp_box_iou_reward(completion, gt_boxes=None, profile=DEFAULT_PROFILE, **_) -> float:
    """GRASP reward (3), Eq. 5: share of ground-truth boxes matched by a predicted box with IoU > 0.5."""
    gt = ground_truth_boxes(gt_boxes)
    objects = _predicted_objects(completion, profile)
    if objects is None:
        return 0.0
    scores = _pair_matrix(objects, len(gt),
                          lambda o, j: float(o.box is not None and box_iou(o.box, gt[j]) > GRASP_BOX_IOU))
    return hungarian_mean(scores, len(gt))


def grasp_center_distance_reward(completion, gt_boxes=None, profile=DEFAULT_PROFILE, **_) -> float:
    """GRASP reward (4), Eqs. 6-7 per object, matched and averaged over ground truth."""
    gt = ground_truth_boxes(gt_boxes)
    objects = _predicted_objects(completion, profile)
    if objects is None:
        return 0.0

    def score(obj: ParsedObject, j: int) -> float:
        return 0.0 if obj.box is None else grasp_center_score(obj.box, gt[j])

    return hungarian_mean(_pair_matrix(objects, len(gt), score), len(gt))


def grasp_points_reward(completion, gt_boxes=None, gt_points=None, profile=DEFAULT_PROFILE, **_) -> float:
    """GRASP reward (5), Eqs. 8-9 per matched object (grasp_points_score), averaged over ground truth."""
    gt = ground_truth_boxes(gt_boxes)
    gt_pts = ground_truth_points(gt_points, len(gt))
    objects = _predicted_objects(completion, profile)
    if objects is None:
        return 0.0
    scores = _pair_matrix(objects, len(gt), lambda o, j: grasp_points_score(o.points, gt[j], gt_pts[j]))
    return hungarian_mean(scores, len(gt))


# --------------------------------------------------------------------------- Seg-Zero

def segzero_accuracy_reward(completion, gt_boxes=None, gt_points=None, profile=DEFAULT_PROFILE, **_) -> float:
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


def reasoning_penalty(completion, profile=DEFAULT_PROFILE, penalty: float = 0.5, **_) -> float:
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


# --------------------------------------------------------------------------- mask IoU (frozen SAM2)

class SegmentPrompt(NamedTuple):
    """One object's SAM prompt in pixels of the image handed to ``segment``."""

    box: Optional[Box]
    points: List[Point]


Segment = Callable[[Any, List[SegmentPrompt]], Any]


def answer_prompts(completion, image_width: int, image_height: int, profile=DEFAULT_PROFILE,
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

    def mask_iou_reward(completion, mask=None, gt_mask=None, image=None, profile=DEFAULT_PROFILE,
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
