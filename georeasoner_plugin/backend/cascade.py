"""The reasoning cascade: one reasoner pass gives boxes, points, masks and contours.

reasoner (Qwen2.5-VL, in-process or remote) -> profile parser -> frame mapping -> SAM2 -> vectorizer

Everything here is in pixels of the captured image; georeferencing belongs to the callers (CLI,
HTTP clients) because only they know the image's transform.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from ..core.api import (MAX_IMAGE_PIXELS, MAX_QUESTION_CHARS, STAGE_DONE, STAGE_PARSE,  # noqa: F401 - re-exported
                        STAGE_PREPROCESS, STAGE_REASON, STAGE_SEGMENT, STAGE_VECTORIZE, QuestionError, check_question)
from ..core.confidence import annotate_box_scores
from ..core.frames import FRAME_FIXED, FrameError, map_objects_to_image
from ..core.profiles import PROFILES, Profile, get_profile
from ..core.protocol import GRANULARITIES, PARSE_INVALID, PARSE_OK, PARSE_PARTIAL, Answer, AnswerObject
from .reasoning import ReasonerProtocol
from .vectorize import mask_to_polygons, mask_to_rle


EventCallback = Callable[[str, dict], None]


class CascadeError(ValueError):
    """A request the cascade cannot run, with a message for the user."""


class AskCancelled(RuntimeError):
    """The caller asked to stop (client gone, task cancelled). Not asyncio.CancelledError: the server
    runs the cascade on a worker thread and must tell a stopped question from a cancelled task."""


@dataclass
class AskOptions:
    granularities: Sequence[str] = GRANULARITIES
    max_new_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    seed: Optional[int] = None
    simplify_tolerance: float = 0.0  # pixels of the captured image
    min_area: float = 0.0  # pixels; smaller parts and holes are dropped
    min_box_size: float = 1.0  # pixels; boxes thinner than this after clipping are dropped

    def validate(self) -> None:
        unknown = [g for g in self.granularities if g not in GRANULARITIES]
        if unknown or not self.granularities:
            raise CascadeError(f"outputs must be among {', '.join(GRANULARITIES)}; got {', '.join(unknown) or 'none'}")
        if not 1 <= self.max_new_tokens <= 8192:
            raise CascadeError("max_new_tokens must be between 1 and 8192")
        if not 0.0 <= self.temperature <= 2.0:
            raise CascadeError("temperature must be between 0 and 2")
        if not 0.0 < self.top_p <= 1.0:
            raise CascadeError("top_p must be in (0, 1]")
        if self.simplify_tolerance < 0 or self.min_area < 0:
            raise CascadeError("simplify tolerance and minimum area cannot be negative")


@dataclass
class CascadeResult:
    answer: Answer
    masks: List[np.ndarray] = field(default_factory=list)  # one bool (H, W) mask per object

    def union_mask(self, height: int, width: int) -> np.ndarray:
        union = np.zeros((height, width), dtype=bool)
        for mask in self.masks:
            union |= mask
        return union


class Cascade:
    """Runs questions against one reasoner and one segmenter (either may be absent)."""

    def __init__(self, reasoner: Optional[ReasonerProtocol] = None, segmenter=None, profile: str = "remotereasoner",
                 expander=None):
        self.reasoner = reasoner
        self.segmenter = segmenter
        self.default_profile = get_profile(profile)
        # instances.InstanceFinder (SAM 3's detector) for --expand instances; None: off (the default).
        self.expander = expander

    def run(self, image: np.ndarray, question: str, *, profile: Optional[str] = None,
            options: Optional[AskOptions] = None, raw_output: Optional[str] = None,
            valid: Optional[np.ndarray] = None, on_event: Optional[EventCallback] = None,
            should_stop: Optional[Callable[[], bool]] = None) -> CascadeResult:
        """Answer `question` about `image` (H, W, 3 uint8).

        raw_output replays a recorded model answer instead of running the reasoner (re-segmenting
        a saved answer, tests). valid (H, W bool) marks pixels with data; masks never cover nodata.

        Each object's box_score is the reasoner's confidence in its box (core/confidence.py), when
        the reasoner returned its tokens' probabilities (a ScoredText; a replayed plain string has
        none). Its score is a score the model wrote itself, else the segmenter's mask score where a
        mask was made, else box_score.
        """
        options = options or AskOptions()
        options.validate()
        prof = get_profile(profile) if profile else self.default_profile
        question = _check_question(question)
        height, width = _check_image(image)
        emit = on_event or (lambda kind, data: None)
        stop = should_stop or (lambda: False)
        timings: Dict[str, float] = {}
        warnings: List[str] = []

        try:
            frame = prof.frame.frame_for(width, height)
        except FrameError as exc:
            raise CascadeError(str(exc)) from exc

        if raw_output is None:
            if self.reasoner is None:
                raise CascadeError("no reasoning model is loaded; pass a model or a recorded answer")
            _check_profile_fits_reasoner(prof, self.reasoner)
            emit("stage", {"stage": STAGE_PREPROCESS})
            started = time.perf_counter()
            model_image = resize_to_frame(image, frame.frame_width, frame.frame_height, prof.frame.kind)
            timings["preprocess"] = time.perf_counter() - started
            emit("stage", {"stage": STAGE_REASON})
            started = time.perf_counter()
            raw_output = self.reasoner.generate(
                model_image, prof.messages(question), max_new_tokens=options.max_new_tokens,
                temperature=options.temperature, top_p=options.top_p, seed=options.seed,
                on_token=(lambda piece: emit("token", {"text": piece})), should_stop=stop)
            timings["reason"] = time.perf_counter() - started
            if stop():
                raise AskCancelled("cancelled during reasoning")
            reasoner_name = getattr(self.reasoner, "name", "reasoner")
        else:
            reasoner_name = "recorded answer"

        emit("stage", {"stage": STAGE_PARSE})
        started = time.perf_counter()
        parsed = prof.parse(raw_output)
        annotate_box_scores(raw_output, parsed.objects)
        raw_output = str(raw_output)  # the text alone goes into the answer
        mapped, map_warnings = map_objects_to_image(parsed.objects, frame, options.min_box_size)
        warnings.extend(map_warnings)
        parse_status, parse_problems = parsed.status, list(parsed.problems)
        if parsed.objects and not mapped:
            # Readable, but nothing on the image: as unusable as an unreadable answer.
            parse_status = PARSE_INVALID
            parse_problems.append(f"all {len(parsed.objects)} object(s) are empty or outside the image")
        elif len(mapped) < len(parsed.objects) and parse_status == PARSE_OK:
            parse_status = PARSE_PARTIAL
        deduplicated = prof.drop_duplicates(mapped)
        if len(deduplicated) < len(mapped):
            warnings.append(f"{len(mapped) - len(deduplicated)} duplicate box(es) removed (IoU > {prof.dedupe_iou})")
        mapped = deduplicated
        objects = [AnswerObject(index=i, box=m.box, points=prof.sam_points(m.box, m.points), label=m.label,
                                score=m.score, box_score=m.box_score)
                   for i, m in enumerate(mapped)]
        timings["parse"] = time.perf_counter() - started

        masks: List[np.ndarray] = []
        known_masks: List[Optional[np.ndarray]] = [None] * len(objects)
        if self.expander is not None and objects:
            if stop():
                raise AskCancelled("cancelled before segmentation")
            emit("stage", {"stage": STAGE_SEGMENT})
            objects, known_masks = self._expand(image, question, objects, valid, warnings, timings)
        wants_pixels = any(g in options.granularities for g in ("masks", "contours"))
        if wants_pixels and objects:
            if self.segmenter is None and any(m is None for m in known_masks):
                raise CascadeError("masks and contours need a segmentation model; none is loaded")
            if stop():
                raise AskCancelled("cancelled before segmentation")
            emit("stage", {"stage": STAGE_SEGMENT})
            masks = self._segment(image, objects, prof, valid, timings, known_masks)
            if "contours" in options.granularities:
                emit("stage", {"stage": STAGE_VECTORIZE})
                started = time.perf_counter()
                for obj, mask in zip(objects, masks):
                    obj.polygons = mask_to_polygons(mask, options.simplify_tolerance, options.min_area)
                timings["vectorize"] = time.perf_counter() - started
            if "masks" in options.granularities:
                for obj, mask in zip(objects, masks):
                    obj.mask = mask_to_rle(mask)
        for obj in objects:
            if obj.score is None:  # no score written, no mask made: the reasoner's own confidence
                obj.score = obj.box_score
        if "boxes" not in options.granularities:
            for obj in objects:
                obj.box = None
        if "points" not in options.granularities:
            for obj in objects:
                obj.points = []

        models = {"reasoner": reasoner_name}
        if wants_pixels and self.segmenter is not None:
            models["segmenter"] = getattr(self.segmenter, "name", "segmenter")
        if self.expander is not None:
            models["instances"] = getattr(self.expander, "name", "instances")
        answer = Answer(
            question=question, profile=prof.name, image_width=width, image_height=height, objects=objects,
            reasoning=parsed.reasoning, raw_output=raw_output, parse_status=parse_status,
            parse_problems=parse_problems, models=models, granularities=list(options.granularities),
            timings=timings, warnings=warnings)
        emit("stage", {"stage": STAGE_DONE})
        return CascadeResult(answer=answer, masks=masks)

    def _segment(self, image, objects, prof: Profile, valid, timings, known_masks=None) -> List[np.ndarray]:
        """One mask per object: the known (expanded) ones as they are, the rest in one SAM batch."""
        from .segmenter import SamPrompt  # torch only when segmenting

        known_masks = known_masks or [None] * len(objects)
        todo = [i for i, known in enumerate(known_masks) if known is None]
        masks: List[Optional[np.ndarray]] = list(known_masks)
        if not todo:
            return masks
        prompts = [SamPrompt(box=objects[i].box, points=list(objects[i].points)) for i in todo]
        started = time.perf_counter()
        results = self.segmenter.segment(image, prompts, multimask=prof.sam_multimask)
        elapsed = time.perf_counter() - started
        seg_timings = getattr(self.segmenter, "last_timings", {}) or {}
        timings["encode"] = float(seg_timings.get("encode_s", 0.0))
        timings["decode"] = float(seg_timings.get("decode_s", elapsed - timings["encode"]))
        for i, result in zip(todo, results):
            mask = np.asarray(result.mask, dtype=bool)
            if valid is not None:
                mask = mask & valid
            masks[i] = mask
            if objects[i].score is None:
                objects[i].score = float(result.score)
        return masks

    def _expand(self, image, question, objects, valid, warnings, timings):
        """(objects, known masks): each labelled object replaced by SAM 3's instances of its phrase."""
        from .instances import asks_for_all, clean_phrase, select_instances

        phrases = [clean_phrase(o.label) for o in objects]
        wanted = [p for p in dict.fromkeys(phrases) if p]
        if not wanted:
            warnings.append("instance expansion: the answer names no object (no label), nothing was expanded")
            return objects, [None] * len(objects)
        whole = asks_for_all(question)
        started = time.perf_counter()
        found = self.expander.find(image, wanted)
        timings["expand"] = time.perf_counter() - started
        out_objects: List[AnswerObject] = []
        out_masks: List[Optional[np.ndarray]] = []
        done = set()
        for obj, phrase in zip(objects, phrases):
            if phrase is None:
                out_objects.append(obj)
                out_masks.append(None)
                continue
            if phrase in done:
                continue  # every object of this phrase was handled at its first one
            done.add(phrase)
            members = [o for o, p in zip(objects, phrases) if p == phrase]
            kept = select_instances(found.get(phrase, []), [m.box for m in members if m.box is not None], whole)
            where = "in the image" if whole else "inside the reasoner's box(es)"
            if not kept:
                warnings.append(f"instance expansion: SAM 3 found no {phrase!r} {where}; kept the reasoner's "
                                f"{len(members)} object(s)")
                out_objects.extend(members)
                out_masks.extend([None] * len(members))
                continue
            warnings.append(f"instance expansion: {len(members)} {phrase!r} object(s) -> {len(kept)} instance(s) "
                            f"{where}")
            for instance in kept:
                out_objects.append(AnswerObject(index=0, box=instance.box, points=[], label=phrase,
                                                score=instance.score))
                out_masks.append(instance.mask & valid if valid is not None else instance.mask)
        unlabelled = sum(p is None for p in phrases)
        if unlabelled:
            warnings.append(f"instance expansion: {unlabelled} object(s) without a label were not expanded")
        for index, obj in enumerate(out_objects):
            obj.index = index
        return out_objects, out_masks


def _check_profile_fits_reasoner(prof: Profile, reasoner) -> None:
    """A profile made for another model family would resize the image wrongly and misread its numbers."""
    factor = getattr(reasoner, "frame_factor", None)
    if factor and factor != prof.frame.factor:
        family = getattr(getattr(reasoner, "family", None), "name", "the loaded model")
        fitting = ", ".join(p.name for p in PROFILES.values() if p.frame.factor == factor) or "none"
        raise CascadeError(f"profile {prof.name!r} is made for another model family than the loaded reasoner "
                           f"({family}, frames in multiples of {factor} pixels); use one of its profiles: {fitting}")


def _check_question(question: str) -> str:
    if not isinstance(question, str):
        raise CascadeError("the question must be text")
    try:
        return check_question(question)  # core/api.py: the same rule the HTTP service applies
    except QuestionError as exc:
        raise CascadeError(str(exc)) from None


def _check_image(image) -> tuple:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise CascadeError("the image must be an RGB array of shape (height, width, 3) and type uint8")
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise CascadeError(f"the image is empty ({width} x {height} pixels)")
    if height * width > MAX_IMAGE_PIXELS:
        raise CascadeError(f"the image has {height * width} pixels; the limit is {MAX_IMAGE_PIXELS}")
    return height, width


def resize_to_frame(image: np.ndarray, frame_width: int, frame_height: int, frame_kind: str) -> Image.Image:
    """The (H, W, 3) uint8 image as the PIL image a reasoner receives: resized to the profile's model
    frame (core.frames ModelFrame.frame_width/height) the way that family was trained."""
    pil = Image.fromarray(image)
    if pil.size == (frame_width, frame_height):
        return pil
    # Seg-Zero and Think2Seg resized with bilinear to 840x840; Qwen's processor resizes bicubic.
    resample = Image.BILINEAR if frame_kind == FRAME_FIXED else Image.BICUBIC
    return pil.resize((frame_width, frame_height), resample)


