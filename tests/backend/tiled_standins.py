"""Rule-based stand-ins for the reasoner and the segmenter, and the synthetic scene, for tiled tests.

- ``DarkShapeReasoner`` looks at the image it is given (the tile, resized to the model frame as the
  real model gets it) and answers in the RemoteReasoner format with a box around every dark shape
  (8-connected dark pixels). When the question says "largest" it boxes only the largest one.
- ``ThresholdSegmenter`` is the threshold-in-box segmenter: the dark pixels of the components that
  meet the prompt's box (grown by a few pixels, since a box from the model frame is off by up to a
  frame pixel), one call per tile for all prompts, like SAM2.
- ``make_scene`` writes the synthetic EPSG:32633 GeoTIFF with 30 known dark shapes (8 crossing tile
  seams, one over a four-tile corner, some with holes) and returns the truth as a label raster.

Answers are computed from the pixels, never hard-coded, so a wrong tile window, a wrong frame
mapping or a bad merge shows up as a wrong result.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

import cv2
import numpy as np
from scipy import ndimage

DARK = 100  # stand-ins call a pixel dark below this grey value
SHAPE_VALUE = 40
SCENE_GT = (500000.0, 0.5, 0.0, 4_500_000.0, 0.0, -0.5)
SCENE_EPSG = 32633


def _dark(image: np.ndarray) -> np.ndarray:
    return image[..., 0] < DARK  # the scene is grey: one band says it all


class DarkShapeReasoner:
    name = "dark-shape stand-in"

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.calls = 0
        self.sizes: List[Tuple[int, int]] = []

    def generate(self, image, messages, *, max_new_tokens=512, temperature=0.0, top_p=1.0, top_k=None, seed=None,
                 on_token=None, should_stop=None) -> str:
        self.calls += 1
        self.sizes.append(image.size)
        if self.delay_s:
            time.sleep(self.delay_s)
        question = " ".join(part.get("text", "") for m in messages for part in m["content"] if part["type"] == "text")
        pixels = np.asarray(image.convert("RGB"))
        labels, count = ndimage.label(_dark(pixels), structure=np.ones((3, 3)))
        boxes = []
        for number, found in enumerate(ndimage.find_objects(labels), start=1):
            if found is None:
                continue
            rows, cols = found
            area = int((labels[found] == number).sum())
            boxes.append((area, [cols.start, rows.start, cols.stop, rows.stop]))
        if "largest" in question.lower() and boxes:
            boxes = [max(boxes, key=lambda b: b[0])]
        text = f"<think>I see {len(boxes)} dark shape(s) in this {image.size[0]}x{image.size[1]} image.</think>"
        answer = "<answer>[" + ",".join("[" + ",".join(str(v) for v in b) + "]" for _, b in boxes) + "]</answer>"
        if on_token is not None:
            on_token(text + answer)
        return text + answer


@dataclass
class _Result:
    mask: np.ndarray
    score: float


class ThresholdSegmenter:
    name = "threshold-in-box stand-in"
    GROW = 3

    def __init__(self):
        self.calls = 0
        self.last_timings = {}

    def segment(self, image: np.ndarray, prompts, multimask: bool = False):
        self.calls += 1  # one call per tile, every prompt in it (as SAM2's one encode)
        dark = _dark(image)
        labels, _ = ndimage.label(dark, structure=np.ones((3, 3)))
        height, width = dark.shape
        results = []
        for prompt in prompts:
            x1, y1, x2, y2 = prompt.box
            g = self.GROW
            c0, r0 = max(0, int(np.floor(x1)) - g), max(0, int(np.floor(y1)) - g)
            c1, r1 = min(width, int(np.ceil(x2)) + g), min(height, int(np.ceil(y2)) + g)
            inside = np.unique(labels[max(0, int(y1)):max(int(y1) + 1, int(np.ceil(y2))),
                                      max(0, int(x1)):max(int(x1) + 1, int(np.ceil(x2)))])
            inside = inside[inside > 0]
            mask = np.zeros_like(dark)
            chosen = np.zeros(labels.max() + 1, dtype=bool)
            chosen[inside] = True
            mask[r0:r1, c0:c1] = chosen[labels[r0:r1, c0:c1]]
            filled = float(mask.sum()) / max(1.0, (x2 - x1) * (y2 - y1))
            results.append(_Result(mask=mask, score=round(min(1.0, 0.5 + filled / 2), 4)))
        self.last_timings = {"encode_s": 0.0, "decode_s": 0.0, "cache_hit": False}
        return results


# ------------------------------------------------------------------------------ the scene
@dataclass(frozen=True)
class Shape:
    kind: str  # rect, ellipse, ring, frame (rectangle with a square hole), lshape, triangle
    cx: int
    cy: int
    w: int
    h: int


def scene_shapes() -> List[Shape]:
    """30 shapes on a 6000 x 4000 scene for 1024 px tiles with 12.5 % overlap.

    Tile columns start at 0, 896, 1792, 2688, 3584, 4480, 4976 and rows at 0, 896, 1792, 2688, 2976;
    a shape centred in an overlap strip (x or y = 960, 1856, 2752, 3648, 4544) and wider than the
    strip fits in no single tile: it crosses a seam.
    """
    kinds = ["rect", "ellipse", "ring", "frame", "lshape", "triangle"]
    shapes = []
    n = 0
    for cy in (450, 1400, 2300, 3300):
        for cx in (450, 1400, 2300, 3200, 4100, 5200):
            if (cx, cy) in ((4100, 3300), (5200, 3300)):
                continue  # 22 shapes inside single tiles
            kind = kinds[n % len(kinds)]
            shapes.append(Shape(kind, cx + (n * 37) % 60 - 30, cy + (n * 53) % 60 - 30, 120 + (n * 29) % 80,
                                110 + (n * 41) % 80))
            n += 1
    shapes += [
        Shape("ring", 960, 960, 420, 420),  # over the four-tile corner, with a hole; the largest shape
        Shape("rect", 1856, 450, 240, 160),
        Shape("ellipse", 2752, 1400, 260, 180),
        Shape("frame", 3648, 2300, 240, 240),
        Shape("lshape", 4544, 450, 260, 260),
        Shape("ellipse", 1400, 1856, 180, 260),
        Shape("rect", 3200, 960, 160, 240),
        Shape("triangle", 2300, 2752, 260, 240),
    ]
    return shapes


def draw_shape(target: np.ndarray, shape: Shape, value: int) -> None:
    x0, y0 = shape.cx - shape.w // 2, shape.cy - shape.h // 2
    x1, y1 = x0 + shape.w, y0 + shape.h
    if shape.kind == "rect":
        target[y0:y1, x0:x1] = value
    elif shape.kind in ("ellipse", "ring"):
        cv2.ellipse(target, (shape.cx, shape.cy), (shape.w // 2, shape.h // 2), 0, 0, 360, value, -1)
        if shape.kind == "ring":
            cv2.ellipse(target, (shape.cx, shape.cy), (shape.w // 7, shape.h // 7), 0, 0, 360, 0, -1)
    elif shape.kind == "frame":
        target[y0:y1, x0:x1] = value
        target[y0 + shape.h // 3:y1 - shape.h // 3, x0 + shape.w // 3:x1 - shape.w // 3] = 0
    elif shape.kind == "lshape":
        target[y0:y1, x0:x0 + shape.w // 3] = value
        target[y1 - shape.h // 3:y1, x0:x1] = value
    elif shape.kind == "triangle":
        cv2.fillPoly(target, [np.array([[x0, y1], [x1, y1], [shape.cx, y0]], dtype=np.int32)], value)


def scene_labels(shapes: List[Shape], width: int, height: int, scale: float = 1.0) -> np.ndarray:
    """uint8 labels: 0 background, k = shape k-1 (scale < 1 draws a smaller copy of the scene)."""
    labels = np.zeros((height, width), dtype=np.uint8)
    for k, shape in enumerate(shapes, start=1):
        scaled = Shape(shape.kind, int(shape.cx * scale), int(shape.cy * scale), int(shape.w * scale),
                       int(shape.h * scale))
        layer = np.zeros_like(labels)
        draw_shape(layer, scaled, 1)
        labels[layer == 1] = k
    return labels


def write_scene(path, labels: np.ndarray, pixel_size: float = 0.5, nodata_band: Optional[slice] = None) -> None:
    """The labels as a 3-band uint8 GeoTIFF: a light, gently varying background, dark shapes."""
    import rasterio
    from affine import Affine

    height, width = labels.shape
    background = (180 + (np.arange(width) % 40)[None, :] // 4 + (np.arange(height) % 30)[:, None] // 5).astype(np.uint8)
    grey = np.where(labels > 0, SHAPE_VALUE, background).astype(np.uint8)
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 3, "dtype": "uint8",
               "crs": f"EPSG:{SCENE_EPSG}", "tiled": True, "blockxsize": 256, "blockysize": 256,
               "transform": Affine(pixel_size, 0, SCENE_GT[0], 0, -pixel_size, SCENE_GT[3])}
    with rasterio.open(path, "w", **profile) as out:
        for band in (1, 2, 3):
            out.write(grey, band)
