"""The attribute schema of every answer feature, whoever writes it.

The backend's GeoPackage/shapefile writer and the QGIS plugin's store are thin adapters over this
module, so a GeoPackage from the CLI and a layer from the plugin carry the same columns with the
same values. Pure Python: QGIS, the backend and training import this very file.

Adding a field: append a ``Field`` to ``COMMON_FIELDS`` (or ``POINT_FIELDS``), fill it in
``feature_attributes``, and list the change in the CHANGELOG (it changes every output's columns).
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from .protocol import Answer, AnswerObject

# Field kinds, mapped to OGR / QVariant types by each adapter.
KIND_STR = "str"
KIND_INT = "int"
KIND_FLOAT = "float"
KIND_DATETIME = "datetime"
FIELD_KINDS = (KIND_STR, KIND_INT, KIND_FLOAT, KIND_DATETIME)

# Where an object came from: the model's answer, or an analyst's correction of it.
SOURCE_MODEL = "model"
SOURCE_EDITED = "edited"

# The role of a point prompt: the object's centre, a point on its edge (GRASP's second point),
# or any further point a profile emits.
POINT_ROLE_CENTRE = "centre"
POINT_ROLE_EDGE = "edge"
POINT_ROLE_EXTRA = "extra"


@dataclass(frozen=True)
class Field:
    name: str  # at most 10 characters: shapefiles (dBASE) truncate longer names
    kind: str
    description: str


COMMON_FIELDS: Tuple[Field, ...] = (
    Field("answer_id", KIND_STR, "identifier of the answer (one question asked once)"),
    Field("question", KIND_STR, "the question as asked"),
    Field("obj_index", KIND_INT, "index of the object within the answer, from 0"),
    Field("label", KIND_STR, "the model's short label for the object, when it gives one"),
    Field("score", KIND_FLOAT, "confidence in the object: the segmenter's mask score where a mask was made, "
                               "else box_score (a score the model wrote itself comes first)"),
    Field("box_score", KIND_FLOAT, "the reasoner's confidence in the object's box: the geometric mean of the "
                                   "probabilities of the tokens that wrote its coordinates"),
    Field("profile", KIND_STR, "prompt profile (answer format and frame) that was used"),
    Field("reasoner", KIND_STR, "reasoning model (checkpoint, endpoint model or replay)"),
    Field("segmenter", KIND_STR, "segmentation model, empty when none ran"),
    Field("source", KIND_STR, f"'{SOURCE_MODEL}' as answered, '{SOURCE_EDITED}' after a correction"),
    Field("raster", KIND_STR, "the source raster (layer name or file) the question was asked on"),
    Field("created", KIND_DATETIME, "when the answer was made (UTC)"),
    Field("area_m2", KIND_FLOAT, "area in square metres (polygons, where the CRS allows)"),
)
POINT_FIELDS: Tuple[Field, ...] = COMMON_FIELDS + (
    Field("point_no", KIND_INT, "index of the point within its object, from 0"),
    Field("point_role", KIND_STR, f"'{POINT_ROLE_CENTRE}', '{POINT_ROLE_EDGE}' or '{POINT_ROLE_EXTRA}'"),
)


def fields_for(layer: str) -> Tuple[Field, ...]:
    """The fields of one answer layer ('boxes', 'points', 'masks', 'contours')."""
    return POINT_FIELDS if layer == "points" else COMMON_FIELDS


def point_role(point_no: int, points_in_object: int) -> str:
    """First point = centre; a second point = edge (GRASP Section 4.1's outer-ring point); more = extra."""
    if point_no == 0:
        return POINT_ROLE_CENTRE
    if point_no == 1 and points_in_object == 2:
        return POINT_ROLE_EDGE
    return POINT_ROLE_EXTRA


def created_datetime(answer: Answer) -> _dt.datetime:
    """The answer's creation time as an aware UTC datetime (the protocol carries ISO 8601 text)."""
    text = answer.created.replace("Z", "+00:00")
    try:
        value = _dt.datetime.fromisoformat(text)
    except ValueError:
        return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    return value.astimezone(_dt.timezone.utc)


def feature_attributes(answer: Answer, obj: AnswerObject, raster: str = "", area_m2: Optional[float] = None,
                       source: str = SOURCE_MODEL, point_no: Optional[int] = None) -> Dict[str, Any]:
    """The attribute values of one feature, keyed by field name, in schema order.

    ``created`` is a ``datetime`` (adapters write it as a date-time column); everything else is a
    plain str / int / float / None.
    """
    values: Dict[str, Any] = {
        "answer_id": answer.answer_id,
        "question": answer.question,
        "obj_index": obj.index,
        "label": obj.label or "",
        "score": None if obj.score is None else float(obj.score),
        "box_score": None if obj.box_score is None else float(obj.box_score),
        "profile": answer.profile,
        "reasoner": answer.models.get("reasoner", ""),
        "segmenter": answer.models.get("segmenter", ""),
        "source": source,
        "raster": raster,
        "created": created_datetime(answer),
        "area_m2": area_m2,
    }
    if point_no is not None:
        values["point_no"] = point_no
        values["point_role"] = point_role(point_no, len(obj.points))
    return values


def field_names(layer: str) -> List[str]:
    return [f.name for f in fields_for(layer)]
