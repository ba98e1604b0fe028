"""Prompt profiles: how each published checkpoint is asked, what it answers, in which frame.

A checkpoint trained with reinforcement learning answers well only when asked the way it was
trained: the tag names, the JSON keys, the example answer, where the image sits relative to the
text, and the frame its numbers refer to. Those facts follow the public repositories named in
each profile; the instruction prose is our own.

The same profile renders ground truth in the answer format (training) and parses model output
(inference), so what a model learns to write is exactly what the cascade reads.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Protocol, Sequence, TypeVar

from .frames import FRAME_FIXED, FRAME_SMART_RESIZE, FrameSpec, box_center, box_iou
from .frames import FRAME_QWEN3, QWEN3_DEFAULT_MAX_PIXELS, QWEN3_DEFAULT_MIN_PIXELS, QWEN3_PATCH_FACTOR
from .parsing import ParsedAnswer, ParsedObject, parse_model_output
from .protocol import Box, Point

# SAM prompting styles of the originals.
SAM_BOX_AND_CENTER = "box+center"  # RemoteReasoner: box + its centre as one positive point
SAM_BOX_AND_MODEL_POINTS = "box+points"  # the model's own points (1 or 2 per object)
SAM_BOX_ONLY = "box"

IMAGE = "<image>"  # marks where the image goes among the text parts of a user message

# Pixel bounds, checked against the authors' code:
# - RemoteReasoner: RemoteReasoner_GRPO.sh (1e12Leon/RemoteReasoner) trains with MAX_PIXELS=802816
#   (= 1024 * 28 * 28); its inference code (RemoteReasoner.py, RemoteReasoner_infer.sh) sets no
#   bound, so the processor default applies there. We keep the training frame, the one whose
#   coordinates the model learned; min is the processor default.
# - GRASP: no code released; the paper (Section 5, Implementation Details) states no bound, so
#   the Qwen2.5-VL processor defaults apply (core.frames).
# - Qwen2.5-VL-Instruct: the processor defaults of preprocessor_config.json (core.frames).
# - Seg-Zero / VisionReasoner / Think2Seg-RS: a fixed 840 x 840 resize (Seg-Zero's
#   inference_scripts/infer_multi_object.py; Think2Seg-RS's dataset/EarthReason_datasets.py).
REMOTEREASONER_MAX_PIXELS = 1024 * 28 * 28
GEOREASONER_MIN_PIXELS = 256 * 28 * 28
GEOREASONER_MAX_PIXELS = 1024 * 28 * 28


class UnknownProfileError(KeyError):
    def __str__(self) -> str:
        return f"unknown profile {self.args[0]!r}; known profiles: {', '.join(PROFILES)}"


class _HasBox(Protocol):
    @property
    def box(self) -> Optional[Box]: ...


_Boxed = TypeVar("_Boxed", bound=_HasBox)  # anything with .box: parsed or mapped objects


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    checkpoints: Sequence[str]
    frame: FrameSpec
    user_parts: Sequence[str]  # text parts with {question}; IMAGE marks the image's place
    system_prompt: Optional[str] = None
    expects_think: bool = True
    points_per_object: int = 2  # what the answer schema asks for (0, 1 or 2)
    sam_prompting: str = SAM_BOX_AND_MODEL_POINTS
    sam_multimask: bool = False  # pick the best of SAM's 3 masks by predicted score
    dedupe_iou: Optional[float] = None  # drop boxes overlapping an earlier one above this IoU
    lowercase_question: bool = False
    answer_style: str = "json"  # how render_answer() writes ground truth
    notes: str = ""

    @property
    def default_checkpoint(self) -> Optional[str]:
        return self.checkpoints[0] if self.checkpoints else None

    def question_text(self, question: str) -> str:
        question = " ".join(question.split())
        if self.lowercase_question:
            question = question.lower().strip(".")
        return question

    def messages(self, question: str) -> List[Dict[str, Any]]:
        """Chat messages in the transformers multimodal format: image parts are {'type': 'image'}."""
        q = self.question_text(question)
        content: List[Dict[str, Any]] = []
        for part in self.user_parts:
            if part == IMAGE:
                content.append({"type": "image"})
            else:
                content.append({"type": "text", "text": part.replace("{question}", q)})
        messages: List[Dict[str, Any]] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": [{"type": "text", "text": self.system_prompt}]})
        messages.append({"role": "user", "content": content})
        return messages

    def sam_points(self, box: Optional[Box], points: Sequence[Point]) -> List[Point]:
        """The positive points SAM2 gets for one object, as the original method prompts it."""
        if box is not None and self.sam_prompting == SAM_BOX_AND_CENTER:
            return [box_center(box)]
        if box is not None and self.sam_prompting == SAM_BOX_ONLY:
            return []
        return list(points)

    def drop_duplicates(self, objects: Sequence[_Boxed]) -> List[_Boxed]:
        """Objects (anything with .box) without near-duplicate boxes, for profiles that do so."""
        if self.dedupe_iou is None:
            return list(objects)
        kept: List[_Boxed] = []
        for candidate in objects:
            if candidate.box is not None and any(
                    k.box is not None and box_iou(k.box, candidate.box) > self.dedupe_iou for k in kept):
                continue
            kept.append(candidate)
        return kept

    def parse(self, raw_output: Any) -> ParsedAnswer:
        return parse_model_output(raw_output, expects_think=self.expects_think)

    def render_answer(self, objects: Sequence[ParsedObject], reasoning: str = "") -> str:
        """Ground truth (model-frame coordinates) written exactly as this profile's model answers."""
        body = _RENDERERS[self.answer_style](objects)
        if not self.expects_think:
            return body
        return f"<think>{reasoning}</think>\n<answer>{body}</answer>"


def _ints(values: Sequence[float]) -> List[int]:
    return [int(round(v)) for v in values]


def _center(box: Sequence[float]) -> List[int]:
    return _ints(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))


def _render_box_list(objects: Sequence[ParsedObject]) -> str:
    return json.dumps([_ints(o.box) for o in objects if o.box is not None], separators=(",", ""))


def _render_segzero(objects: Sequence[ParsedObject]) -> str:
    items = [{"bbox_2d": _ints(o.box), "point_2d": _ints(o.points[0]) if o.points else _center(o.box)}
             for o in objects if o.box is not None]
    return json.dumps(items)


def _two_points(obj: ParsedObject) -> List[List[int]]:
    """The object's first two points, the box centre standing in for missing ones (rendered objects have boxes)."""
    points = [_ints(p) for p in obj.points[:2]]
    if obj.box is None:
        return points
    while len(points) < 2:
        points.append(_center(obj.box))
    return points


def _render_positive_points(objects: Sequence[ParsedObject]) -> str:
    return json.dumps([{"bbox_2d": _ints(o.box), "positive_points": _two_points(o)}
                       for o in objects if o.box is not None])


def _render_think2seg(objects: Sequence[ParsedObject]) -> str:
    return "```json" + _render_positive_points(objects) + "```"


def _render_grasp(objects: Sequence[ParsedObject]) -> str:
    # GRASP answers one object as a Python-style dict with single quotes (Figure 3 of the paper).
    if not objects:
        return "{}"
    o = next((o for o in objects if o.box is not None), None)
    if o is None or o.box is None:
        return "{}"
    p1, p2 = _two_points(o)
    return f"{{'bbox': {_ints(o.box)}, 'points 1': {p1}, 'points 2': {p2}}}"


def _render_qwen(objects: Sequence[ParsedObject]) -> str:
    items = [{"bbox_2d": _ints(o.box), "label": o.label or "target"} for o in objects if o.box is not None]
    return "```json\n" + json.dumps(items, indent=2) + "\n```"


def _render_qwen3(objects: Sequence[ParsedObject]) -> str:
    items = [{"bbox_2d": _ints(o.box), "point_2d": _ints(o.points[0]) if o.points else _center(o.box),
              "label": o.label or "target"} for o in objects if o.box is not None]
    return "```json\n" + json.dumps(items, indent=2) + "\n```"


def _render_positive_points_label(objects: Sequence[ParsedObject]) -> str:
    items = []
    for o in objects:
        if o.box is None:
            continue
        item = {"bbox_2d": _ints(o.box), "positive_points": _two_points(o)}
        if o.label:
            item["label"] = o.label
        items.append(item)
    return json.dumps(items)


_RENDERERS = {
    "box_list": _render_box_list,
    "segzero": _render_segzero,
    "json": _render_positive_points,
    "think2seg": _render_think2seg,
    "grasp": _render_grasp,
    "qwen": _render_qwen,
    "qwen3": _render_qwen3,
    "json_label": _render_positive_points_label,
}

_SEGZERO_EXAMPLE = ('[{"bbox_2d": [10,100,200,210], "point_2d": [30,110]}, '
                    '{"bbox_2d": [225,296,706,786], "point_2d": [302,410]}]')
_THINK2SEG_EXAMPLE = ('```json[{"bbox_2d": [310,360,567,586], "positive_points": [[434, 474], [450, 460]]}, '
                      '{"bbox_2d": [10,200,100,320], "positive_points": [[50, 250], [90, 300]]}]```')
_GEOREASONER_EXAMPLE = ('[{"bbox_2d": [120,64,388,301], "positive_points": [[251,180], [340,122]]}, '
                        '{"bbox_2d": [30,410,96,470], "positive_points": [[62,441], [80,455]]}]')

PROFILES: Dict[str, Profile] = {}


def _register(profile: Profile) -> Profile:
    PROFILES[profile.name] = profile
    return profile


GEOREASONER = _register(Profile(
    name="georeasoner",
    title="GeoReasoner (ours, trained with training/)",
    checkpoints=(),
    frame=FrameSpec(FRAME_SMART_RESIZE, min_pixels=GEOREASONER_MIN_PIXELS, max_pixels=GEOREASONER_MAX_PIXELS),
    system_prompt=("You analyse remote sensing images for a GIS analyst. You reason about the scene, then "
                   "locate every object that answers the analyst's question so a segmentation model can "
                   "outline it."),
    user_parts=(IMAGE,
                'Question: "{question}"\n'
                "Reason step by step inside <think> </think>. Then, inside <answer> </answer>, give a JSON "
                "list with one entry per matching object: \"bbox_2d\" is a tight box [x1, y1, x2, y2] and "
                "\"positive_points\" holds exactly two [x, y] points that lie on the object itself, in "
                "pixels of this image. Answer [] when nothing in the image matches.\n"
                "Example: <think> reasoning </think>\n<answer>" + _GEOREASONER_EXAMPLE + "</answer>"),
    points_per_object=2,
    sam_prompting=SAM_BOX_AND_MODEL_POINTS,
    answer_style="json",
))

REMOTEREASONER = _register(Profile(
    name="remotereasoner",
    title="RemoteReasoner (Yao et al., 2025)",
    checkpoints=("1e12Leon/RemoteReasoner",),
    frame=FrameSpec(FRAME_SMART_RESIZE, max_pixels=REMOTEREASONER_MAX_PIXELS),
    # Original layout: one user message, instructions, then the image, then the description.
    user_parts=("You locate objects in remote sensing images from a text description and answer with "
                "bounding boxes.\n"
                "1. Read the description carefully and work out which object(s) it refers to.\n"
                "2. Answer format:\n"
                "   - one object: [[x1,y1,x2,y2]]\n"
                "   - several objects: [[x1,y1,x2,y2],...,[x1,y1,x2,y2]]\n"
                "   - no matching object: []\n"
                "3. Coordinates: [x_min, y_min, x_max, y_max] as integer pixel positions.\n"
                "4. Write your reasoning in <think> </think> and \n the final list of boxes in "
                "<answer> </answer> tags.\nNow ground the following input:\n",
                IMAGE,
                "\nText description: {question}"),
    points_per_object=0,
    sam_prompting=SAM_BOX_AND_CENTER,
    answer_style="box_list",
    notes="Boxes only; SAM2 gets each box and its centre. The original code does not map the "
          "smart-resized frame back to the image; GeoReasoner does.",
))

_SEGZERO_PARTS = (IMAGE,
                  'Find "{question}" with bboxs and points. '
                  "Compare the candidate objects and keep the one(s) that match best. "
                  "Write your thinking in <think> </think> and the final answer in <answer> </answer> tags. "
                  "The answer is a JSON list with the bbox and one point inside each object of interest. "
                  "i.e., <think> thinking process here </think>"
                  "<answer>" + _SEGZERO_EXAMPLE + "</answer>")

SEGZERO = _register(Profile(
    name="segzero",
    title="Seg-Zero (Liu et al., 2025)",
    checkpoints=("Ricky06662/Seg-Zero-7B",),
    frame=FrameSpec(FRAME_FIXED, fixed_width=840, fixed_height=840),
    user_parts=_SEGZERO_PARTS,
    points_per_object=1,
    sam_prompting=SAM_BOX_AND_MODEL_POINTS,
    sam_multimask=True,
    lowercase_question=True,
    answer_style="segzero",
))

# VisionReasoner was trained with Seg-Zero's prompt, answer format and frame.
VISIONREASONER = _register(replace(
    SEGZERO,
    name="visionreasoner",
    title="VisionReasoner (Liu et al., 2025)",
    checkpoints=("Ricky06662/VisionReasoner-7B",),
))

THINK2SEG = _register(Profile(
    name="think2seg",
    title="Think2Seg-RS",
    checkpoints=("RicardoString/Think2Seg-RS-7B", "RicardoString/Think2Seg-RS-3B"),
    frame=FrameSpec(FRAME_FIXED, fixed_width=840, fixed_height=840),
    system_prompt=("You assist with remote sensing analysis: from the user's request you produce spatial "
                   "prompts for the Segment Anything Model (SAM)."),
    user_parts=(IMAGE,
                'Please find "{question}" and identify the target. For every target instance give:\n'
                "1.  `bbox_2d`: a tight bounding box.\n"
                "2.  `positive_points`: exactly two points that lie inside the target.\n"
                "Put your thinking in <think> </think> tags.\n"
                "Put the final answer in <answer> </answer> tags in the JSON format shown. If there is no "
                "target, answer an empty list.\n"
                "i.e. <think> thinking process here </think> \n"
                "<answer>" + _THINK2SEG_EXAMPLE + "</answer>"),
    points_per_object=2,
    sam_prompting=SAM_BOX_AND_MODEL_POINTS,
    dedupe_iou=0.5,
    answer_style="think2seg",
))

GRASP = _register(Profile(
    name="grasp",
    title="GRASP (Jiang et al., 2025)",
    checkpoints=(),
    frame=FrameSpec(FRAME_SMART_RESIZE),
    # Fig. 3 of the paper, in our words: a box plus two positive points, one at the object's centre
    # and one on its edge, in JSON. "{}" for no target is ours (the paper defines no empty answer).
    user_parts=(IMAGE,
                "Find the target object for this question and mark it with a bounding box and two positive "
                "points. Question: '{question}'\n"
                "Write your thinking inside <think> </think> and the final answer inside <answer> </answer>.\n"
                "The answer is JSON with a bounding box and two positive points: 'points 1' at the centre of "
                "the object and 'points 2' on the object's edge. Answer {} when nothing matches.\n"
                "e.g. <think> thinking here </think> \n"
                "<answer> {'bbox': [24,60,212,190], 'points 1': [118,125], 'points 2': [40,150]} </answer>"),
    points_per_object=2,
    sam_prompting=SAM_BOX_AND_MODEL_POINTS,
    answer_style="grasp",
    notes="No checkpoint was released; the profile serves models trained the GRASP way.",
))

QWEN = _register(Profile(
    name="qwen",
    title="Qwen2.5-VL-Instruct (zero-shot grounding)",
    checkpoints=("Qwen/Qwen2.5-VL-7B-Instruct", "Qwen/Qwen2.5-VL-3B-Instruct",
                 "Qwen/Qwen2.5-VL-32B-Instruct", "Qwen/Qwen2.5-VL-72B-Instruct"),
    frame=FrameSpec(FRAME_SMART_RESIZE),
    user_parts=(IMAGE,
                "Locate every object that answers this request: {question}\n"
                'Output the bbox coordinates of each one in JSON format as a list of {"bbox_2d": '
                '[x1, y1, x2, y2], "label": "..."}; output [] if there is none.'),
    expects_think=False,
    points_per_object=0,
    sam_prompting=SAM_BOX_ONLY,
    answer_style="qwen",
))

# Qwen3-VL family (issue 12): answers in a 0-1000 frame normalised on both axes (core.frames.FRAME_QWEN3).
QWEN3 = _register(Profile(
    name="qwen3",
    title="Qwen3-VL-Instruct (zero-shot grounding, 0-1000 frame)",
    checkpoints=("Qwen/Qwen3-VL-8B-Instruct", "Qwen/Qwen3-VL-4B-Instruct", "Qwen/Qwen3-VL-2B-Instruct",
                 "Qwen/Qwen3-VL-32B-Instruct", "Qwen/Qwen3-VL-30B-A3B-Instruct", "Qwen/Qwen3-VL-235B-A22B-Instruct"),
    frame=FrameSpec(FRAME_QWEN3, factor=QWEN3_PATCH_FACTOR, min_pixels=QWEN3_DEFAULT_MIN_PIXELS,
                    max_pixels=QWEN3_DEFAULT_MAX_PIXELS),
    # The JSON keys and the relative 0-1000 frame are those of the Qwen3-VL grounding cookbook; the
    # wording is ours. The label is the short noun phrase --expand instances hands to SAM 3.
    user_parts=(IMAGE,
                "Locate every object that answers this request: {question}\n"
                'Output a JSON list with one entry per object: {"bbox_2d": [x1, y1, x2, y2], "point_2d": [x, y], '
                '"label": "short noun phrase naming the object"}, where "point_2d" lies on the object. Use '
                "relative coordinates from 0 to 1000 on both axes. Output [] if there is none."),
    expects_think=False,
    points_per_object=1,
    sam_prompting=SAM_BOX_AND_MODEL_POINTS,
    answer_style="qwen3",
    notes="Zero-shot Qwen3-VL; boxes and points in the normalised 0-1000 frame, values past 1000 clamped.",
))

_GEOREASONER_QWEN3_EXAMPLE = ('[{"bbox_2d": [152,88,493,414], "positive_points": [[319,247],[432,168]], '
                              '"label": "centre-pivot field"}, {"bbox_2d": [38,563,122,646], '
                              '"positive_points": [[79,606],[102,625]], "label": "farm pond"}]')

GEOREASONER_QWEN3 = _register(Profile(
    name="georeasoner-qwen3",
    title="GeoReasoner on a Qwen3-VL base (ours, trained with training/)",
    checkpoints=(),
    frame=FrameSpec(FRAME_QWEN3, factor=QWEN3_PATCH_FACTOR, min_pixels=256 * 32 * 32, max_pixels=1024 * 32 * 32),
    system_prompt=GEOREASONER.system_prompt,
    user_parts=(IMAGE,
                'Question: "{question}"\n'
                "Reason step by step inside <think> </think>. Then, inside <answer> </answer>, give a JSON "
                "list with one entry per matching object: \"bbox_2d\" is a tight box [x1, y1, x2, y2], "
                "\"positive_points\" holds exactly two [x, y] points that lie on the object itself, and "
                "\"label\" is a short noun phrase naming the object. Coordinates are relative, from 0 to 1000 "
                "on both axes (0,0 is the top-left corner, 1000,1000 the bottom-right). Answer [] when nothing "
                "in the image matches.\n"
                "Example: <think> reasoning </think>\n<answer>" + _GEOREASONER_QWEN3_EXAMPLE + "</answer>"),
    points_per_object=2,
    sam_prompting=SAM_BOX_AND_MODEL_POINTS,
    answer_style="json_label",
    notes="Our answer format on a Qwen3-VL base; coordinates in the normalised 0-1000 frame.",
))

DEFAULT_PROFILE = "remotereasoner"


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UnknownProfileError(name) from None
