"""Correcting an answer the way SAM users expect: per object, positive/negative points or a new box
re-segment it from the backend's cached embedding of the same image (`POST /v1/segment`); objects
can be added and deleted; every change can be undone. Corrected objects are stored with
`source: edited`; the model's original answer is kept in the store (`original_json`)."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..core.protocol import Answer, AnswerObject, MaskRLE, Polygon
from ..toolbelt.i18n import tr
from .client import BackendClient
from .store import AnswerStore, StoredAnswer, StoreError


@dataclass
class Prompt:
    box: Optional[Tuple[float, float, float, float]] = None
    points: List[Tuple[float, float]] = field(default_factory=list)
    labels: List[int] = field(default_factory=list)

    def to_json(self) -> Dict:
        return {"box": list(self.box) if self.box else None, "points": [list(p) for p in self.points],
                "labels": list(self.labels)}


class CorrectionError(Exception):
    pass


class Corrector:
    """The editing state of one stored answer; each change is written to the store at once."""

    def __init__(self, stored: StoredAnswer, client: BackendClient):
        self.stored = stored
        self.client = client
        self.store = AnswerStore(stored.store)
        self.image = self.store.image_png(stored.answer.answer_id)
        if not self.image:
            raise CorrectionError(tr("This answer was stored without its image (an older plugin); ask the "
                                     "question again to correct it."))
        self.original_json = stored.original_json or stored.answer.to_json()
        self.edited = set(stored.edited)
        self.prompts: Dict[int, Prompt] = {}
        self.undo_stack: List[_Checkpoint] = []
        self.object_texts: Dict[int, str] = {}  # index -> AnswerObject.to_json, kept for unchanged objects
        self.last_timings: Dict[str, float] = {}
        self.image_sent = False  # after the first correction the backend holds the image: send its key

    @property
    def answer(self) -> Answer:
        return self.stored.answer

    def pixel(self, x: float, y: float) -> Tuple[float, float]:
        """Map (answer CRS) -> image pixel."""
        return self.stored.transform.map_to_pixel(x, y)

    def object_at(self, x: float, y: float) -> Optional[int]:
        """Index of the object at the map point: among the objects whose box holds it, the one whose
        mask covers it (else the smallest box); with no box there, an object whose mask covers it."""
        col, row = self.pixel(x, y)

        def covers(obj):
            return obj.mask is not None and _mask_value(obj.mask, int(col), int(row))

        boxed = [o for o in self.answer.objects
                 if o.box is not None and o.box[0] <= col <= o.box[2] and o.box[1] <= row <= o.box[3]]
        if boxed:
            boxed.sort(key=lambda o: (not covers(o), (o.box[2] - o.box[0]) * (o.box[3] - o.box[1])))
            return boxed[0].index
        return next((o.index for o in self.answer.objects if covers(o)), None)

    def prompt_of(self, index: int) -> Prompt:
        if index not in self.prompts:
            obj = self._object(index)
            self.prompts[index] = Prompt(tuple(obj.box) if obj.box else None, [tuple(p) for p in obj.points],
                                         [1] * len(obj.points))
        return self.prompts[index]

    # -- changes -----------------------------------------------------------------------------------
    def add_point(self, index: int, x: float, y: float, positive: bool) -> None:
        prompt = copy.deepcopy(self.prompt_of(index))
        prompt.points.append(self.pixel(x, y))
        prompt.labels.append(1 if positive else 0)
        self._resegment(index, prompt)

    def set_box(self, index: Optional[int], x1: float, y1: float, x2: float, y2: float) -> int:
        """A new box for object `index`, or a new object (index None); returns the object's index."""
        (c1, r1), (c2, r2) = self.pixel(x1, y1), self.pixel(x2, y2)
        box = (min(c1, c2), min(r1, r2), max(c1, c2), max(r1, r2))
        if index is None:
            index = max([o.index for o in self.answer.objects], default=-1) + 1
            self._checkpoint(index)
            self.answer.objects.append(AnswerObject(index=index, box=box))
            self.prompts[index] = Prompt(box)
            self._resegment(index, Prompt(box), checkpoint=False)
            return index
        prompt = copy.deepcopy(self.prompt_of(index))
        prompt.box = box
        self._resegment(index, prompt)
        return index

    def delete_object(self, index: int) -> None:
        self._checkpoint(index)
        self.answer.objects = [o for o in self.answer.objects if o.index != index]
        self.edited.discard(index)
        self.prompts.pop(index, None)
        self.object_texts.pop(index, None)
        self._write([index])

    def undo(self) -> bool:
        if not self.undo_stack:
            return False
        checkpoint = self.undo_stack.pop()
        self.answer.objects = checkpoint.objects
        self.answer.granularities = checkpoint.granularities
        self.edited, self.prompts = set(checkpoint.edited), checkpoint.prompts
        self.object_texts = checkpoint.object_texts
        self._write([checkpoint.index])
        return True

    # -- internals ---------------------------------------------------------------------------------
    def _object(self, index: int) -> AnswerObject:
        for obj in self.answer.objects:
            if obj.index == index:
                return obj
        raise CorrectionError(tr("Object {0} is not in this answer.").format(index))

    def _checkpoint(self, index: int) -> None:
        # A change replaces an object's attributes, never mutates them: shallow copies keep the state.
        self.undo_stack.append(_Checkpoint(index, [copy.copy(o) for o in self.answer.objects],
                                           list(self.answer.granularities), sorted(self.edited),
                                           copy.deepcopy(self.prompts), dict(self.object_texts)))

    def _resegment(self, index: int, prompt: Prompt, checkpoint: bool = True) -> None:
        started = time.perf_counter()
        result = self.client.segment(self.image, [prompt.to_json()], image_held=self.image_sent)
        self.image_sent = True
        answered = time.perf_counter()
        (out,) = result["objects"]
        if checkpoint:
            self._checkpoint(index)
        self.object_texts.pop(index, None)
        obj = self._object(index)
        obj.mask = MaskRLE.from_dict(out["mask"])
        obj.polygons = [Polygon.from_dict(p) for p in out["polygons"]]
        obj.score = float(out["score"])
        if prompt.box is not None and tuple(prompt.box) != tuple(obj.box or ()):
            obj.box, obj.box_score = prompt.box, None  # the analyst's box, not the reasoner's
        self.prompts[index] = prompt
        self.edited.add(index)
        for granularity in ("masks", "contours"):
            if granularity not in self.answer.granularities:
                self.answer.granularities.append(granularity)
        self._write([index])
        timings = result.get("timings", {})
        self.last_timings = {"request_s": answered - started, "model_s": float(timings.get("model_s", 0.0)),
                             "store_s": time.perf_counter() - answered}

    def _write(self, changed: List[int]) -> None:
        for index in changed:
            self.object_texts.pop(index, None)
        texts = []
        for obj in self.answer.objects:
            if obj.index not in self.object_texts:
                self.object_texts[obj.index] = obj.to_json()
            texts.append(self.object_texts[obj.index])
        try:
            self.stored = self.store.update_answer(self.stored, self.answer, sorted(self.edited), self.original_json,
                                                   changed, answer_json=self.answer.to_json_from_objects(texts))
        except StoreError as exc:
            raise CorrectionError(str(exc)) from None


@dataclass
class _Checkpoint:
    """The state before one change (undo): `index` is the object the change touched."""
    index: int
    objects: List[AnswerObject]
    granularities: List[str]
    edited: List[int]
    prompts: Dict[int, Prompt]
    object_texts: Dict[int, str]


def _mask_value(mask: MaskRLE, col: int, row: int) -> bool:
    if not (0 <= col < mask.width and 0 <= row < mask.height):
        return False
    target, pos = row * mask.width + col, 0
    for n, count in enumerate(mask.counts):
        if pos + count > target:
            return n % 2 == 1
        pos += count
    return False
