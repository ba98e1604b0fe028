"""The answer protocol shared by QGIS, the backend and training.

Pure Python, no third-party imports: QGIS's interpreter, the backend venv and the training
code import this very file.

Pixel convention (everywhere in the protocol): x grows to the right, y downwards, in pixels of
the *captured image* (not the model's resized frame). (0, 0) is the top-left corner of the
top-left pixel, so pixel (col, row) covers [col, col+1) x [row, row+1) and a box around the whole
image is (0, 0, width, height). Polygon vertices lie on pixel corners.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

PROTOCOL_VERSION = 1

Point = Tuple[float, float]
Ring = List[Point]
Box = Tuple[float, float, float, float]

# What the parser made of the raw model output.
PARSE_OK = "ok"  # every item understood
PARSE_EMPTY = "empty"  # the model said explicitly: nothing matches
PARSE_PARTIAL = "partial"  # some items used, others dropped (see parse_problems)
PARSE_NO_ANSWER = "no_answer"  # no answer section or nothing answer-like at all
PARSE_INVALID = "invalid"  # an answer section that could not be read
PARSE_STATUSES = (PARSE_OK, PARSE_EMPTY, PARSE_PARTIAL, PARSE_NO_ANSWER, PARSE_INVALID)

GRANULARITIES = ("boxes", "points", "masks", "contours")


class ProtocolError(ValueError):
    """A document that does not follow the answer protocol."""


@dataclass
class Polygon:
    """One polygon part: an outer ring and zero or more holes, vertices in image pixels."""

    exterior: Ring
    holes: List[Ring] = field(default_factory=list)

    def area(self) -> float:
        return abs(ring_signed_area(self.exterior)) - sum(abs(ring_signed_area(h)) for h in self.holes)

    def to_dict(self) -> Dict[str, Any]:
        return {"exterior": [list(p) for p in self.exterior], "holes": [[list(p) for p in h] for h in self.holes]}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Polygon":
        return cls(
            exterior=_ring(data.get("exterior"), "exterior", "polygon vertex"),
            holes=[_ring(h, "hole", "hole vertex") for h in _list(data.get("holes", []), "holes")],
        )


@dataclass
class MaskRLE:
    """A binary mask as row-major run lengths, starting with a run of zeros (may be 0 long)."""

    width: int
    height: int
    counts: List[int]

    def to_dict(self) -> Dict[str, Any]:
        return {"width": self.width, "height": self.height, "counts": list(self.counts)}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "MaskRLE":
        width, height = int(data["width"]), int(data["height"])
        counts = [int(c) for c in _list(data.get("counts"), "mask counts")]
        if any(c < 0 for c in counts) or sum(counts) != width * height:
            raise ProtocolError("mask run lengths do not add up to width x height")
        return cls(width, height, counts)

    @classmethod
    def encode(cls, rows: Sequence[Sequence[Any]]) -> "MaskRLE":
        """Encode a mask given as rows of truthy values (pure Python, for small masks; the vectorised
        codec for both sides is ``georeasoner_plugin.rle``)."""
        height = len(rows)
        width = len(rows[0]) if height else 0
        counts: List[int] = []
        current, run = False, 0
        for row in rows:
            for value in row:
                value = bool(value)
                if value == current:
                    run += 1
                else:
                    counts.append(run)
                    current, run = value, 1
        counts.append(run)
        return cls(width, height, counts)

    def area(self) -> int:
        return sum(self.counts[1::2])


@dataclass
class AnswerObject:
    """One object of an answer, in pixels of the captured image."""

    index: int
    box: Optional[Box] = None
    points: List[Point] = field(default_factory=list)
    # The object's confidence: the segmenter's mask score where a mask was made, else box_score (a
    # score the model wrote into its answer comes first).
    score: Optional[float] = None
    label: Optional[str] = None
    polygons: List[Polygon] = field(default_factory=list)
    mask: Optional[MaskRLE] = None
    # Tiled answers only: the tiles the object was found in and its score in each,
    # [{"tile": "r0c1", "score": 0.93}, ...]; absent from the JSON when empty.
    tiles: List[Dict[str, Any]] = field(default_factory=list)
    # The reasoner's confidence in the box: geometric mean of the probabilities of the tokens that
    # wrote its coordinates (core/confidence.py); None when the reasoner gave no probabilities.
    # Absent from the JSON when None, so answers from before it load unchanged.
    box_score: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        data = {
            "index": self.index,
            "box": list(self.box) if self.box is not None else None,
            "points": [list(p) for p in self.points],
            "score": self.score,
            "label": self.label,
            "polygons": [p.to_dict() for p in self.polygons],
            "mask": self.mask.to_dict() if self.mask is not None else None,
        }
        if self.box_score is not None:
            data["box_score"] = self.box_score
        if self.tiles:
            data["tiles"] = [dict(t) for t in self.tiles]
        return data

    def to_json(self) -> str:
        """This object as it appears in Answer.to_json (see Answer.to_json_from_objects)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "AnswerObject":
        box = data.get("box")
        if box is not None:
            values = [_number(v, "box coordinate") for v in _list(box, "box")]
            if len(values) != 4:
                raise ProtocolError("a box has four numbers: x1, y1, x2, y2")
            box = tuple(values)
        score = data.get("score")
        box_score = data.get("box_score")
        return cls(
            index=int(data.get("index", 0)),
            box=box,
            points=[_point(p, "point") for p in _list(data.get("points", []), "points")],
            score=None if score is None else _number(score, "score"),
            label=data.get("label"),
            polygons=[Polygon.from_dict(p) for p in _list(data.get("polygons", []), "polygons")],
            mask=MaskRLE.from_dict(data["mask"]) if data.get("mask") else None,
            tiles=[dict(t) for t in _list(data.get("tiles", []), "tiles")],
            box_score=None if box_score is None else _number(box_score, "box_score"),
        )


@dataclass
class Answer:
    """Everything one question produced, in pixel space of the captured image."""

    question: str
    profile: str
    image_width: int
    image_height: int
    objects: List[AnswerObject] = field(default_factory=list)
    reasoning: str = ""
    raw_output: str = ""
    parse_status: str = PARSE_OK
    parse_problems: List[str] = field(default_factory=list)
    models: Dict[str, str] = field(default_factory=dict)
    granularities: List[str] = field(default_factory=lambda: list(GRANULARITIES))
    timings: Dict[str, float] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    answer_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    version: int = PROTOCOL_VERSION
    # Tiled answers only: one entry per tile asked, {"tile", "window": [x, y, w, h], "reasoning",
    # "parse_status", "objects"}, and the plan's summary; absent from the JSON when empty.
    tiles: List[Dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        data = {
            "version": self.version,
            "answer_id": self.answer_id,
            "created": self.created,
            "question": self.question,
            "profile": self.profile,
            "models": dict(self.models),
            "image": {"width": self.image_width, "height": self.image_height},
            "granularities": list(self.granularities),
            "reasoning": self.reasoning,
            "raw_output": self.raw_output,
            "parse": {"status": self.parse_status, "problems": list(self.parse_problems)},
            "timings": dict(self.timings),
            "warnings": list(self.warnings),
            "objects": [o.to_dict() for o in self.objects],
        }
        if self.tiles:
            data["tiles"] = [dict(t) for t in self.tiles]
        return data

    def to_json(self, indent: Optional[int] = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    def to_json_from_objects(self, object_texts: Sequence[str]) -> str:
        """to_json() put together from each object's own text (AnswerObject.to_json, in the order of
        `objects`): a correction that changes one object of a large answer encodes only that one."""
        data = dataclasses.replace(self, objects=[], tiles=[]).to_dict()
        del data["objects"]
        head = json.dumps(data, ensure_ascii=False, allow_nan=False)
        tail = '"objects": [' + ", ".join(object_texts) + "]"
        if self.tiles:
            tail += ', "tiles": ' + json.dumps([dict(t) for t in self.tiles], ensure_ascii=False, allow_nan=False)
        return head[:-1] + ", " + tail + "}"

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Answer":
        if not isinstance(data, dict):
            raise ProtocolError("an answer is a JSON object")
        version = data.get("version")
        if version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"answer protocol version {version!r} is not supported (this GeoReasoner speaks version "
                f"{PROTOCOL_VERSION}); update the plugin and the backend to the same release"
            )
        try:
            image = data["image"]
            parse = data.get("parse", {})
            status = parse.get("status", PARSE_OK)
            if status not in PARSE_STATUSES:
                raise ProtocolError(f"unknown parse status {status!r}")
            return cls(
                question=str(data["question"]),
                profile=str(data["profile"]),
                image_width=int(image["width"]),
                image_height=int(image["height"]),
                objects=[AnswerObject.from_dict(o) for o in _list(data.get("objects", []), "objects")],
                reasoning=str(data.get("reasoning", "")),
                raw_output=str(data.get("raw_output", "")),
                parse_status=status,
                parse_problems=[str(p) for p in parse.get("problems", [])],
                models={str(k): str(v) for k, v in dict(data.get("models", {})).items()},
                granularities=[str(g) for g in data.get("granularities", GRANULARITIES)],
                timings={str(k): float(v) for k, v in dict(data.get("timings", {})).items()},
                warnings=[str(w) for w in data.get("warnings", [])],
                answer_id=str(data.get("answer_id") or uuid.uuid4().hex),
                created=str(data.get("created", "")),
                version=version,
                tiles=[dict(t) for t in _list(data.get("tiles", []), "tiles")],
            )
        except ProtocolError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed answer document: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> "Answer":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ProtocolError(f"answer is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def ring_signed_area(ring: Iterable[Point]) -> float:
    """Shoelace area; positive for counter-clockwise rings in a y-up frame."""
    pts = list(ring)
    if len(pts) < 3:
        return 0.0
    total = 0.0
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
        total += x0 * y1 - x1 * y0
    return total / 2.0


def _list(value: Any, what: str) -> List[Any]:
    if not isinstance(value, (list, tuple)):
        raise ProtocolError(f"{what} must be a list")
    return list(value)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        number = math.inf
    if not math.isfinite(number):
        raise ProtocolError(f"{what} must be finite")
    return number


def _ring(value: Any, what: str, vertex: str) -> Ring:
    """A list of [x, y] numbers; one pass over well-formed input (a SAM2 mask's contour can have tens
    of thousands of vertices), the vertex-by-vertex check only to name what is wrong."""
    items = _list(value, what)
    try:
        ring = [(float(x), float(y)) for x, y in items]
        well_formed = all(type(x) in _NUMBER_TYPES and type(y) in _NUMBER_TYPES for x, y in items) and \
            all(math.isfinite(x) and math.isfinite(y) for x, y in ring)
    except (TypeError, ValueError, OverflowError):
        well_formed = False
    if well_formed:
        return ring
    return [_point(p, vertex) for p in items]


_NUMBER_TYPES = (int, float)  # exact types: bool (a subclass of int) and strings are not coordinates


def _point(value: Any, what: str) -> Point:
    items = _list(value, what)
    if len(items) != 2:
        raise ProtocolError(f"{what} has two numbers")
    return (_number(items[0], what), _number(items[1], what))
