"""Model coordinate frames and the mapping between a model's frame and the captured image.

A vision-language model never sees the captured image itself but a resized copy, and it answers in
pixels of that copy. Each prompt profile owns its frame:
- Qwen2.5-VL's "smart resize": both sides a multiple of the patch factor (28), the pixel count
  within [min_pixels, max_pixels], the aspect ratio kept as well as possible;
- a fixed square resize (Seg-Zero, VisionReasoner, Think2Seg-RS use 840 x 840, aspect not kept);
- Qwen3-VL: the same smart resize with factor 32 (patch 16 x merge 2) for the image it sees, but its
  boxes and points are written in a 0-1000 frame normalised on both axes, whatever the image size.

Pure Python so QGIS, the backend and training agree on every coordinate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from .protocol import Box, Point

if TYPE_CHECKING:  # parsing imports nothing from here; this keeps it that way at run time
    from .parsing import ParsedObject

QWEN_PATCH_FACTOR = 28
# Qwen2.5-VL's own processor defaults (preprocessor_config.json of the released
# Qwen2.5-VL-*-Instruct checkpoints: min_pixels 3,136, max_pixels 12,845,056 = 16,384 x 28 x 28).
# The 1,003,520 (1,280 x 28 x 28) seen in examples is a model-card suggestion, not the default.
QWEN_DEFAULT_MIN_PIXELS = 56 * 56
QWEN_DEFAULT_MAX_PIXELS = 16384 * 28 * 28
QWEN_MAX_ASPECT_RATIO = 200

FRAME_SMART_RESIZE = "smart_resize"
FRAME_FIXED = "fixed"
FRAME_QWEN3 = "qwen3"

# Qwen3-VL (issue 12). transformers 5.23 maps qwen3_vl to the Qwen2-VL image processor
# (models/auto/image_processing_auto.py) with the checkpoint's patch_size 16 and merge_size 2 (the
# defaults of models/qwen3_vl's own video processor and vision config): both sides of the image it
# sees are multiples of 32, by the same smart_resize arithmetic (qwen2_vl/image_processing_qwen2_vl.py).
QWEN3_PATCH_FACTOR = 32
# Its answers do not depend on that size: the Qwen3-VL grounding cookbook (QwenLM/Qwen3-VL,
# cookbooks/2d_grounding.ipynb, first cell) states the default coordinate system changed from
# Qwen2.5-VL's absolute pixels to "relative coordinates ranging from 0 to 1000", and its plotting
# helpers map bbox_2d[0] / 1000 * width and bbox_2d[1] / 1000 * height (points likewise).
QWEN3_COORDINATE_EXTENT = 1000
# Released models write the far edge as 999 or 1000 and now and then slightly past 1000 (the
# cookbook's own outputs show 999 at the edge). Coordinates up to this far outside [0, 1000] are
# clamped into it; anything further off is a model error and is clipped or dropped like a
# pixel-frame answer that leaves the image.
QWEN3_CLAMP_MARGIN = 50
# Pixel bounds: the released checkpoints' preprocessor_config.json sets them (size shortest_edge /
# longest_edge; not readable offline here, so the tiny model writes 64 x 32 x 32 .. 16384 x 32 x 32
# and the reasoner pins the bounds to each frame anyway). Our profiles take 64 x 32 x 32 as the lower
# bound and cap the upper one at 1280 visual tokens, the budget of the Qwen2.5-VL profiles: a 2048 px
# capture would otherwise cost 4096 tokens. Answers stay right for any budget: the frame is normalised.
QWEN3_DEFAULT_MIN_PIXELS = 64 * 32 * 32
QWEN3_PROCESSOR_MAX_PIXELS = 16384 * 32 * 32
QWEN3_DEFAULT_MAX_PIXELS = 1280 * 32 * 32


class FrameError(ValueError):
    """An image the model frame cannot represent (empty, or too elongated)."""


def _round_to(value: float, factor: int) -> int:
    return int(round(value / factor)) * factor


def smart_resize(height: int, width: int, factor: int = QWEN_PATCH_FACTOR,
                 min_pixels: int = QWEN_DEFAULT_MIN_PIXELS, max_pixels: int = QWEN_DEFAULT_MAX_PIXELS,
                 max_ratio: float = QWEN_MAX_ASPECT_RATIO) -> Tuple[int, int]:
    """(height, width) that Qwen2.5-VL's image processor resizes an image of this size to.

    Same arithmetic as the processor (it must be, or answers land on the wrong pixels); the
    tests compare it with the real processor's image_grid_thw.
    """
    if height <= 0 or width <= 0:
        raise FrameError(f"image is empty ({width} x {height} pixels)")
    if max(height, width) / min(height, width) > max_ratio:
        raise FrameError(
            f"image aspect ratio {max(height, width) / min(height, width):.0f}:1 is beyond the model's "
            f"limit of {max_ratio:.0f}:1; capture a less elongated area"
        )
    h_bar = max(factor, _round_to(height, factor))
    w_bar = max(factor, _round_to(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class FrameSpec:
    """How a profile resizes images: smart resize with pixel bounds, or a fixed size."""

    kind: str = FRAME_SMART_RESIZE
    fixed_width: int = 840
    fixed_height: int = 840
    min_pixels: int = QWEN_DEFAULT_MIN_PIXELS
    max_pixels: int = QWEN_DEFAULT_MAX_PIXELS
    factor: int = QWEN_PATCH_FACTOR

    def frame_for(self, image_width: int, image_height: int) -> "ModelFrame":
        if image_width <= 0 or image_height <= 0:
            raise FrameError(f"image is empty ({image_width} x {image_height} pixels)")
        if self.kind == FRAME_FIXED:
            return ModelFrame(image_width, image_height, self.fixed_width, self.fixed_height)
        if self.kind == FRAME_SMART_RESIZE:
            h, w = smart_resize(image_height, image_width, self.factor, self.min_pixels, self.max_pixels)
            return ModelFrame(image_width, image_height, w, h)
        if self.kind == FRAME_QWEN3:
            h, w = smart_resize(image_height, image_width, self.factor, self.min_pixels, self.max_pixels)
            return self.model_frame(image_width, image_height, w, h)
        raise FrameError(f"unknown frame kind {self.kind!r}")

    def model_frame(self, image_width: int, image_height: int, frame_width: int, frame_height: int) -> "ModelFrame":
        """The ModelFrame of an image already resized to frame_width x frame_height (e.g. read back from a
        prepared dataset), with this kind's coordinate frame."""
        if self.kind == FRAME_QWEN3:
            return ModelFrame(image_width, image_height, frame_width, frame_height,
                              coord_width=QWEN3_COORDINATE_EXTENT, coord_height=QWEN3_COORDINATE_EXTENT,
                              clamp_margin=QWEN3_CLAMP_MARGIN)
        return ModelFrame(image_width, image_height, frame_width, frame_height)

    @property
    def normalised(self) -> bool:
        """Whether answers are in a normalised 0-1000 frame rather than pixels of the resized image."""
        return self.kind == FRAME_QWEN3

    def describe(self) -> str:
        if self.kind == FRAME_FIXED:
            return f"fixed {self.fixed_width}x{self.fixed_height} resize"
        if self.kind == FRAME_QWEN3:
            return (f"Qwen3-VL smart resize (factor {self.factor}, {self.min_pixels}..{self.max_pixels} pixels); "
                    f"coordinates normalised 0-{QWEN3_COORDINATE_EXTENT} on both axes")
        return f"Qwen smart resize (factor {self.factor}, {self.min_pixels}..{self.max_pixels} pixels)"


@dataclass(frozen=True)
class ModelFrame:
    """The resized image the model saw, tied to the captured image it came from.

    frame_width x frame_height is the image the model sees. Its answers are in pixels of that image,
    unless coord_width / coord_height say otherwise (Qwen3-VL: 1000 x 1000 whatever the size).
    """

    image_width: int
    image_height: int
    frame_width: int
    frame_height: int
    coord_width: Optional[float] = None  # extent of the answer's x axis; None: frame_width (pixels)
    coord_height: Optional[float] = None
    clamp_margin: float = 0.0  # answer coordinates this far outside [0, extent] are clamped into it

    @property
    def answer_width(self) -> float:
        return self.coord_width if self.coord_width is not None else self.frame_width

    @property
    def answer_height(self) -> float:
        return self.coord_height if self.coord_height is not None else self.frame_height

    @property
    def sx(self) -> float:
        return self.image_width / self.answer_width

    @property
    def sy(self) -> float:
        return self.image_height / self.answer_height

    def clamp_answer(self, values: Sequence[float]) -> Tuple[Tuple[float, ...], bool]:
        """(values, changed): x, y, x, y ... answer coordinates a little outside [0, extent] moved onto it."""
        if not self.clamp_margin:
            return tuple(values), False
        out, changed = [], False
        for i, value in enumerate(values):
            extent = self.answer_width if i % 2 == 0 else self.answer_height
            if -self.clamp_margin <= value < 0 or extent < value <= extent + self.clamp_margin:
                value, changed = _clamp(value, 0, extent), True
            out.append(value)
        return tuple(out), changed

    def to_image(self, x: float, y: float) -> Point:
        return (x * self.sx, y * self.sy)

    def to_frame(self, x: float, y: float) -> Point:
        return (x / self.sx, y / self.sy)

    def box_to_image(self, box: Sequence[float]) -> Box:
        x1, y1 = self.to_image(box[0], box[1])
        x2, y2 = self.to_image(box[2], box[3])
        return (x1, y1, x2, y2)

    def box_to_frame(self, box: Sequence[float]) -> Box:
        x1, y1 = self.to_frame(box[0], box[1])
        x2, y2 = self.to_frame(box[2], box[3])
        return (x1, y1, x2, y2)

    def clip_box(self, box: Sequence[float]) -> Box:
        """Order the corners and clip to the image; may return a degenerate box."""
        x1, x2 = sorted((box[0], box[2]))
        y1, y2 = sorted((box[1], box[3]))
        return (_clamp(x1, 0, self.image_width), _clamp(y1, 0, self.image_height),
                _clamp(x2, 0, self.image_width), _clamp(y2, 0, self.image_height))

    def clip_point(self, point: Sequence[float]) -> Point:
        # A point names a pixel: keep it strictly inside the image so it indexes a real pixel.
        return (_clamp(point[0], 0, self.image_width - 1e-6), _clamp(point[1], 0, self.image_height - 1e-6))

    def point_inside(self, point: Sequence[float]) -> bool:
        return 0 <= point[0] <= self.image_width and 0 <= point[1] <= self.image_height


def box_is_degenerate(box: Sequence[float], min_size: float = 1.0) -> bool:
    return (box[2] - box[0]) < min_size or (box[3] - box[1]) < min_size


def box_center(box: Sequence[float]) -> Point:
    return ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


@dataclass
class MappedObject:
    box: Optional[Box]
    points: List[Point]
    label: Optional[str]
    score: Optional[float]
    box_score: Optional[float] = None  # core.confidence: the reasoner's confidence in the box


def map_objects_to_image(objects: Sequence[ParsedObject], frame: ModelFrame,
                         min_box_size: float = 1.0) -> Tuple[List[MappedObject], List[str]]:
    """Map parsed objects (model frame) to image pixels, clip, drop what is left degenerate.

    Returns (mapped objects, warnings). Points outside the image are dropped, not clipped: a
    point off the image is a model error and clipping would place a positive prompt on an
    unrelated edge pixel.
    """
    mapped: List[MappedObject] = []
    warnings: List[str] = []
    for number, obj in enumerate(objects, start=1):
        box = None
        if obj.box is not None:
            answer_box, clamped = frame.clamp_answer(obj.box)
            if clamped:
                warnings.append(f"object {number}: box {list(obj.box)} reaches past the model's "
                                f"0-{frame.answer_width:g} frame; clamped to it")
            raw = frame.box_to_image(answer_box)
            ordered = (min(raw[0], raw[2]), min(raw[1], raw[3]), max(raw[0], raw[2]), max(raw[1], raw[3]))
            box = frame.clip_box(raw)
            if box_is_degenerate(box, min_box_size):
                warnings.append(f"object {number}: box {list(obj.box)} is empty or outside the image; dropped")
                box = None
            elif box != ordered:
                warnings.append(f"object {number}: box clipped to the image")
        points: List[Point] = []
        for point in obj.points:
            p = frame.to_image(*frame.clamp_answer(point)[0])
            if frame.point_inside(p):
                points.append(frame.clip_point(p))
            else:
                warnings.append(f"object {number}: point {list(point)} is outside the image; dropped")
        if box is None and not points:
            if obj.box is not None or obj.points:
                warnings.append(f"object {number}: nothing usable left; object dropped")
            continue
        mapped.append(MappedObject(box=box, points=points, label=getattr(obj, "label", None),
                                   score=getattr(obj, "score", None),
                                   box_score=getattr(obj, "box_score", None)))
    return mapped, warnings
