"""One sample's scores (training.metrics on the evaluation grid) and their form in samples.jsonl."""
from __future__ import annotations

from dataclasses import asdict
from typing import Dict, Optional, Sequence

import cv2
import numpy as np

from georeasoner_plugin.core.protocol import MaskRLE

from ..metrics import (UNPARSEABLE_STATUSES, as_mask, ContourScores, MetricAccumulator, RegionScores, SampleMetrics,
                       region_scores)
from .options import FIXED_SIDE, LETTERBOX_SIDE, EvalOptions

# --------------------------------------------------------------------------- evaluation grid

def to_evaluation_grid(mask: np.ndarray, resolution: str) -> np.ndarray:
    """The mask on the grid the scores are measured on (same transform for prediction and target)."""
    mask = as_mask(mask)
    if resolution == "original":
        return mask
    if resolution == "resize840":
        return _resize_nearest(mask, FIXED_SIDE, FIXED_SIDE)
    if resolution == "letterbox1024":
        height, width = mask.shape
        scale = LETTERBOX_SIDE / max(height, width)
        new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
        # Padding at the bottom and right: where it goes changes no score (it is background in
        # both masks, and the image border already counts as outside for boundaries).
        grid = np.zeros((LETTERBOX_SIDE, LETTERBOX_SIDE), dtype=bool)
        grid[:new_height, :new_width] = _resize_nearest(mask, new_width, new_height)
        return grid
    raise ValueError(f"unknown resolution {resolution!r}")


def _resize_nearest(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    if mask.shape == (height, width):
        return mask
    # INTER_NEAREST_EXACT samples at pixel centres (as Pillow's NEAREST does); plain INTER_NEAREST
    # is shifted by half a pixel, which moves boundaries and costs IoU on small objects.
    return cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST_EXACT).astype(bool)


# --------------------------------------------------------------------------- per-sample scores

def score_sample(record: dict, parse_status: str, pred_mask: Optional[np.ndarray], gt_mask: Optional[np.ndarray],
                 pred_boxes: Sequence, options: EvalOptions) -> SampleMetrics:
    gt_boxes = record["gt_boxes_px"]
    if options.needs_masks:
        accumulator = MetricAccumulator(with_contours="contour" in options.tasks,
                                        tolerance_kernel=options.tolerance_kernel)
        gt = to_evaluation_grid(gt_mask, options.resolution)
        pred = None if pred_mask is None else to_evaluation_grid(pred_mask, options.resolution)
        return accumulator.add(record["id"], pred, gt, pred_boxes, gt_boxes, parse_status)
    # Boxes only: "empty" means no box, so no-target accuracy still means something.
    if parse_status in UNPARSEABLE_STATUSES:
        pred_boxes = ()
    region = region_scores(pred_boxes, gt_boxes)
    return SampleMetrics(sample_id=record["id"], parse_status=parse_status, intersection=0, union=0, iou=1.0,
                         gt_empty=not record["has_target"], pred_empty=region.pred_count == 0, region=region,
                         contour=None)


def scores_to_json(sample: SampleMetrics, with_masks: bool) -> dict:
    scores: Dict[str, object] = {"gt_empty": sample.gt_empty, "pred_empty": sample.pred_empty,
                                 "region": asdict(sample.region)}
    if with_masks:
        scores["pixel"] = {"iou": sample.iou, "intersection": sample.intersection, "union": sample.union}
    if sample.contour is not None:
        scores["contour"] = {"f1": {f"{t:g}": v for t, v in sample.contour.f1.items()},
                             "assd": sample.contour.assd, "hd": sample.contour.hd,
                             "one_empty": sample.contour.one_empty}
    return scores


def sample_from_json(line: dict) -> SampleMetrics:
    scores = line["scores"]
    pixel = scores.get("pixel") or {"iou": 1.0, "intersection": 0, "union": 0}
    contour = scores.get("contour")
    return SampleMetrics(
        sample_id=line["id"], parse_status=line["parse_status"],
        intersection=int(pixel["intersection"]), union=int(pixel["union"]), iou=float(pixel["iou"]),
        gt_empty=bool(scores["gt_empty"]), pred_empty=bool(scores["pred_empty"]),
        region=RegionScores(**scores["region"]),
        contour=None if contour is None else ContourScores(
            {int(float(k)) if float(k).is_integer() else float(k): v for k, v in contour["f1"].items()},
            contour["assd"], contour["hd"], bool(contour.get("one_empty", False))),
    )


def rle_to_json(mask: np.ndarray) -> dict:
    from georeasoner_plugin.backend.vectorize import mask_to_rle

    return mask_to_rle(mask).to_dict()


def rle_from_json(data: Optional[dict]) -> Optional[np.ndarray]:
    if data is None:
        return None
    from georeasoner_plugin.backend.vectorize import rle_to_mask

    return rle_to_mask(MaskRLE.from_dict(data))
