"""A tolerant reader of reasoning-model output.

Reasoning models write free text around their answer and get its syntax slightly wrong often
enough to matter: Python quotes instead of JSON, trailing commas, a code fence, a bare box
instead of a list of boxes, an answer cut off by the token limit. parse_model_output() never
raises: it returns what it could use, a status, and one line per thing it had to drop or repair,
so the user (and the training rewards) can see exactly what went wrong.

Coordinates stay in the model's frame here; frames.map_objects_to_image() maps them.
"""
from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, TypeGuard

from .protocol import (PARSE_EMPTY, PARSE_INVALID, PARSE_NO_ANSWER, PARSE_OK, PARSE_PARTIAL, Box, Point)

MAX_OUTPUT_CHARS = 100_000
MAX_OBJECTS = 100
MAX_COORDINATE = 1_000_000.0

BOX_KEYS = ("bbox_2d", "bbox", "box", "bounding_box", "box_2d")
SINGLE_POINT_KEYS = ("point_2d", "point", "center", "centre")
POINT_LIST_KEYS = ("positive_points", "points", "point_list")
# GRASP writes its two points as separate keys: 'points 1', 'points 2' (also seen: 'point1').
NUMBERED_POINT_KEY = re.compile(r"^points?[ _-]?(\d+)$", re.IGNORECASE)
LABEL_KEYS = ("label", "name", "category")
SCORE_KEYS = ("score", "confidence")

# Tags are located in one linear pass; a lazy "<think>(.*?)</think>" regex rescans to the end of
# the text from every unclosed tag, which is quadratic on degenerate output ("<think>" * 10000).
_TAG = re.compile(r"<(/?)(think|answer)>", re.IGNORECASE)
_Tag = Tuple[int, int, bool, str]  # (start, end, closing, name) of one think/answer tag
_FENCE = re.compile(r"```[ \t]*(?:json|python|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([\]}])")
_QWEN_BOX_TOKENS = re.compile(
    r"<\|box_start\|>\s*\(\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\)\s*,\s*"
    r"\(\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\)\s*<\|box_end\|>")
_FLAT_NUMBER_LIST = re.compile(r"\[\s*(-?\d+(?:\.\d+)?(?:\s*,\s*-?\d+(?:\.\d+)?){3})\s*\]")


@dataclass
class ParsedObject:
    box: Optional[Box] = None
    points: List[Point] = field(default_factory=list)
    label: Optional[str] = None
    score: Optional[float] = None  # a score the model wrote itself ("score"/"confidence" key)
    # Never set by the parser: the reasoner's token probabilities over the box (core.confidence).
    box_score: Optional[float] = None


@dataclass
class ParsedAnswer:
    reasoning: str
    answer_text: Optional[str]
    objects: List[ParsedObject]
    status: str
    problems: List[str] = field(default_factory=list)
    has_think: bool = False
    has_answer_tags: bool = False

    @property
    def usable(self) -> bool:
        return self.status in (PARSE_OK, PARSE_EMPTY, PARSE_PARTIAL)


def parse_model_output(text: Any, expects_think: bool = True) -> ParsedAnswer:
    """Read reasoning, objects and a status from a raw model output. Never raises."""
    try:
        return _parse(text, expects_think)
    except Exception as exc:  # noqa: BLE001 - a parser bug must cost one answer, never the whole request
        return ParsedAnswer("", None, [], PARSE_INVALID, [f"internal parser error: {type(exc).__name__}: {exc}"])


def _parse(text: Any, expects_think: bool) -> ParsedAnswer:
    problems: List[str] = []
    if not isinstance(text, str):
        return ParsedAnswer("", None, [], PARSE_INVALID, [f"model output is not text but {type(text).__name__}"])
    if len(text) > MAX_OUTPUT_CHARS:
        problems.append(f"model output is {len(text)} characters long; only the first {MAX_OUTPUT_CHARS} were read")
        text = text[:MAX_OUTPUT_CHARS]
    text = text.replace("\x00", "")

    tags = [(m.start(), m.end(), m.group(1) == "/", m.group(2).lower()) for m in _TAG.finditer(text)]
    reasoning, has_think, think_span = _extract_reasoning(text, tags)
    if expects_think and not has_think:
        problems.append("no <think>...</think> section")

    answer_text, has_answer_tags = _extract_answer(text, tags)
    if answer_text is None:
        rest = text[:think_span[0]] + text[think_span[1]:] if think_span else text
        answer_text = rest.strip()
        if expects_think:
            problems.append("no <answer>...</answer> section; looked for an answer in the free text")
    answer_text = answer_text.strip()
    if not answer_text:
        return ParsedAnswer(reasoning, answer_text, [], PARSE_NO_ANSWER, problems + ["the answer is empty"],
                            has_think, has_answer_tags)

    value, read_problems, salvaged = _read_literal(answer_text)
    problems.extend(read_problems)
    if value is _NOTHING:
        status = PARSE_INVALID if has_answer_tags else PARSE_NO_ANSWER
        problems.append(f"could not read boxes or points from the answer: {_preview(answer_text)}")
        return ParsedAnswer(reasoning, answer_text, [], status, problems, has_think, has_answer_tags)

    items, shape_problem = _as_items(value)
    if shape_problem:
        problems.append(shape_problem)
        return ParsedAnswer(reasoning, answer_text, [], PARSE_INVALID, problems, has_think, has_answer_tags)
    if not items:
        return ParsedAnswer(reasoning, answer_text, [], PARSE_EMPTY, problems, has_think, has_answer_tags)

    objects: List[ParsedObject] = []
    dropped = 0
    if len(items) > MAX_OBJECTS:
        problems.append(f"answer lists {len(items)} objects; only the first {MAX_OBJECTS} were used")
        items = items[:MAX_OBJECTS]
        dropped += 1
    for number, item in enumerate(items, start=1):
        obj, item_problems = _read_item(item, number)
        problems.extend(item_problems)
        if obj is None:
            dropped += 1
        else:
            objects.append(obj)
    if not objects:
        status = PARSE_INVALID
    elif dropped or salvaged:
        status = PARSE_PARTIAL
    else:
        status = PARSE_OK
    return ParsedAnswer(reasoning, answer_text, objects, status, problems, has_think, has_answer_tags)


def _extract_reasoning(text: str, tags: Sequence[_Tag]) -> Tuple[str, bool, Optional[Tuple[int, int]]]:
    """(reasoning, properly closed, span of the whole think section or None)."""
    opening = next((t for t in tags if t[3] == "think" and not t[2]), None)
    if opening is None:
        return "", False, None
    closing = next((t for t in tags if t[3] == "think" and t[2] and t[0] >= opening[1]), None)
    if closing is not None:
        return text[opening[1]:closing[0]].strip(), True, (opening[0], closing[1])
    # Opened, never closed: the reasoning runs up to the answer or the end.
    answer = next((t for t in tags if t[3] == "answer" and not t[2] and t[0] >= opening[1]), None)
    end = answer[0] if answer else len(text)
    return text[opening[1]:end].strip(), False, (opening[0], end)


def answer_span(tags: Sequence[_Tag], length: int) -> Optional[Tuple[int, int]]:
    """[start, end) of the last complete <answer> section's content, else of what follows an unclosed
    one (cut off by the token limit); None without an <answer> tag. core.confidence finds the boxes'
    characters in the same place."""
    closing = next((t for t in reversed(tags) if t[3] == "answer" and t[2]), None)
    if closing is not None:
        opening = next((t for t in reversed(tags) if t[3] == "answer" and not t[2] and t[1] <= closing[0]), None)
        if opening is not None:
            return opening[1], closing[0]
    opening = next((t for t in reversed(tags) if t[3] == "answer" and not t[2]), None)
    return (opening[1], length) if opening is not None else None


def _extract_answer(text: str, tags: Sequence[_Tag]) -> Tuple[Optional[str], bool]:
    span = answer_span(tags, len(text))
    return (None, False) if span is None else (text[span[0]:span[1]], True)


class _Nothing:
    pass


_NOTHING = _Nothing()


def _read_literal(answer: str) -> Tuple[Any, List[str], bool]:
    """(value, problems, salvaged): the Python/JSON value in the answer, repairing common slips.

    value is _NOTHING when nothing could be read; salvaged is True when only pieces of a broken
    answer were recovered (the answer then counts as partial, not ok)."""
    problems: List[str] = []
    fenced = _FENCE.findall(answer)
    if fenced:
        answer = fenced[-1]
    elif "```" in answer:
        answer = answer.replace("```json", "").replace("```", "")
    candidate = _outer_structure(answer)
    if candidate is not None:
        for attempt in (candidate, _TRAILING_COMMA.sub(r"\1", candidate)):
            try:
                value = json.loads(attempt)
                if attempt is not candidate:
                    problems.append("answer has trailing commas; read it leniently")
                return value, problems, False
            except (ValueError, RecursionError):
                pass
            try:
                value = ast.literal_eval(attempt)
                if attempt is not candidate or "'" in candidate or "(" in candidate:
                    problems.append("answer is not strict JSON (quotes, tuples or trailing commas); read it leniently")
                return value, problems, False
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                pass
    # Salvage: an answer cut off mid-list, or several objects not wrapped in a list.
    objects = []
    for chunk in re.findall(r"\{[^{}]*\}", answer):
        try:
            objects.append(ast.literal_eval(_TRAILING_COMMA.sub(r"\1", chunk)))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    if objects:
        problems.append("answer is not one well-formed list; used the complete objects found in it")
        return objects, problems, True
    boxes = [[float(v) for v in m] for m in _QWEN_BOX_TOKENS.findall(answer)]
    if boxes:
        problems.append("answer uses <|box_start|> tokens instead of JSON; read them")
        return boxes, problems, False
    flat = [[float(v) for v in m.split(",")] for m in _FLAT_NUMBER_LIST.findall(answer)]
    if flat:
        problems.append("answer is not one well-formed list; used the complete boxes found in it")
        return flat, problems, True
    stripped = answer.strip().strip(".").strip().lower()
    if stripped in ("none", "null", "no", "nothing", "[]", "no target", "not found"):
        return [], problems, False
    return _NOTHING, problems, False


def _outer_structure(text: str) -> Optional[str]:
    starts = [i for i in (text.find("["), text.find("{")) if i >= 0]
    if not starts:
        return None
    start = min(starts)
    end = max(text.rfind("]"), text.rfind("}"))
    if end <= start:
        return None
    return text[start:end + 1]


def _as_items(value: Any) -> Tuple[List[Any], Optional[str]]:
    if isinstance(value, dict) and not value:
        # GRASP's "no target" answer: the paper (Fig. 3) defines none, so an empty object is ours.
        return [], None
    if isinstance(value, dict):
        for key in ("objects", "answer", "boxes", "results"):
            if isinstance(value.get(key), list) and not _has_any(value, BOX_KEYS):
                return list(value[key]), None
        return [value], None
    if isinstance(value, (list, tuple)):
        items = list(value)
        if len(items) == 4 and all(_is_number(v) for v in items):
            return [items], None  # a bare flat box
        return items, None
    return [], f"answer is a {type(value).__name__}, not a list of objects: {_preview(repr(value))}"


def _read_item(item: Any, number: int) -> Tuple[Optional[ParsedObject], List[str]]:
    problems: List[str] = []
    if isinstance(item, (list, tuple)):
        if len(item) == 4:
            box, problem = _read_box(item)
            if box is None:
                return None, [f"object {number}: {problem}; dropped"]
            if problem:
                problems.append(f"object {number}: {problem}")
            return ParsedObject(box=box), problems
        if len(item) == 2:
            point, problem = _read_point(item)
            if point is None:
                return None, [f"object {number}: {problem}; dropped"]
            return ParsedObject(points=[point]), [f"object {number}: a point without a box"]
        return None, [f"object {number}: {_preview(repr(item))} is neither a box nor an object; dropped"]
    if not isinstance(item, dict):
        return None, [f"object {number}: {_preview(repr(item))} is neither a box nor an object; dropped"]

    obj = ParsedObject()
    keys = {str(k).strip().lower(): v for k, v in item.items()}
    box_key = next((k for k in BOX_KEYS if k in keys), None)
    if box_key is not None:
        box, problem = _read_box(keys[box_key])
        if box is None:
            problems.append(f"object {number}: {box_key} {problem}")
        else:
            obj.box = box
            if problem:
                problems.append(f"object {number}: {problem}")
    raw_points: List[Any] = []
    for key in SINGLE_POINT_KEYS:
        if key in keys:
            raw_points.append(keys[key])
    for key in POINT_LIST_KEYS:
        if key in keys:
            value = keys[key]
            if isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value):
                raw_points.append(value)
            elif isinstance(value, (list, tuple)):
                raw_points.extend(value)
            else:
                problems.append(f"object {number}: {key} is not a list of points")
    numbered = sorted((int(match.group(1)), k) for k in keys if (match := NUMBERED_POINT_KEY.match(k)))
    raw_points.extend(keys[k] for _, k in numbered)
    for raw in raw_points:
        point, problem = _read_point(raw)
        if point is None:
            problems.append(f"object {number}: point {problem}; dropped")
        else:
            obj.points.append(point)
    label = next((keys[k] for k in LABEL_KEYS if k in keys), None)
    if isinstance(label, str):
        obj.label = label[:200]
    score = next((keys[k] for k in SCORE_KEYS if k in keys), None)
    if _is_number(score) and math.isfinite(float(score)):
        obj.score = float(score)
    if obj.box is None and not obj.points:
        problems.append(f"object {number}: no usable box or point in {_preview(repr(item))}; dropped")
        return None, problems
    return obj, problems


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _coordinate(value: Any) -> Tuple[Optional[float], Optional[str]]:
    note = None
    if isinstance(value, str):
        try:
            value = float(value.strip())
            note = "coordinates written as text"
        except ValueError:
            return None, f"{_preview(repr(value))} is not a number"
    if not _is_number(value):
        return None, f"{_preview(repr(value))} is not a number"
    value = float(value)
    if not math.isfinite(value) or abs(value) > MAX_COORDINATE:
        return None, f"{value!r} is not a usable coordinate"
    return value, note


def _read_numbers(raw: Any, count: int) -> Tuple[Optional[List[float]], Optional[str]]:
    if not isinstance(raw, (list, tuple)):
        return None, f"{_preview(repr(raw))} is not a list of {count} numbers"
    if len(raw) == 1 and isinstance(raw[0], (list, tuple)):
        raw = raw[0]  # [[x1, y1, x2, y2]] where one box was meant
    if len(raw) != count:
        return None, f"{_preview(repr(raw))} does not have {count} numbers"
    values, notes = [], None
    for v in raw:
        number, note = _coordinate(v)
        if number is None:
            return None, note
        notes = notes or note
        values.append(number)
    return values, notes


def _read_box(raw: Any) -> Tuple[Optional[Box], Optional[str]]:
    values, note = _read_numbers(raw, 4)
    if values is None:
        return None, note
    x1, y1, x2, y2 = values
    if x1 > x2 or y1 > y2:
        note = "box corners were swapped; reordered"
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
    return (x1, y1, x2, y2), note


def _read_point(raw: Any) -> Tuple[Optional[Point], Optional[str]]:
    values, note = _read_numbers(raw, 2)
    if values is None:
        return None, note
    return (values[0], values[1]), None


def _has_any(mapping: Dict[str, Any], keys: Sequence[str]) -> bool:
    return any(k in mapping for k in keys)


def _preview(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
