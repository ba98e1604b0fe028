"""Evaluation metrics as the papers report them: region (boxes), pixel (masks), contour (boundaries).

All functions are pure and work on numpy masks (2-D, any dtype, non-zero = target) and box lists
([x1, y1, x2, y2] in one pixel space shared by prediction and ground truth).

Conventions (fixed here, because the papers leave them implicit):

Pixel level, LISA / SegEarth-R1 protocol
- per sample IoU = I / U; when prediction and target are both empty (U = 0) the IoU is 1, a
  non-empty prediction on an empty target has IoU 0.
- gIoU = mean per-sample IoU; cIoU = sum I / sum U over all samples.
- precision@t = share of samples whose IoU >= t, t in 0.5 .. 0.9.
- no-target accuracy = share of empty-target samples whose prediction is empty.
- an unparseable answer is an empty prediction; it is never skipped (Seg-Zero's script silently
  drops samples whose union is 0, which inflates its numbers).

Region level (boxes), with J ground-truth and K predicted boxes per sample, matched one-to-one by
Hungarian assignment maximising the summed IoU:
- box_acc@0.5 (the headline number): hits / J, a hit being a matched pair with IoU >= 0.5. It is
  recall-like, so box_acc@0.5_strict = hits / max(J, K) is reported beside it (extra boxes cost).
- box_miou: summed matched IoU / max(J, K) (unmatched boxes on either side count 0).
- union_box_iou: IoU of the box enclosing all predictions with the box enclosing all ground
  truth; union_box_acc@0.5 thresholds it. This is what a single-box method is scored on when a
  target region has several parts.
- J = K = 0 scores 1 everywhere; J = 0 < K or K = 0 < J scores 0.

Contour level, on the OUTERMOST boundary of each mask component (RemoteReasoner Section 3.4,
"outermost polygonal vertices"; M2C uses external contours): holes are filled first, so they never
count. Boundary pixels are mask pixels with a 4-neighbour outside the filled mask (pixels beyond the
image count as outside); distances are between pixel centres:
- boundary F1@tau: precision = share of predicted boundary pixels within tolerance tau of the
  target boundary, recall the other way round, F1 their harmonic mean. The paper's "1-pixel and
  3-pixel dilated kernel" is read as a disc: Euclidean distance <= tau (default, "disc"); the
  other reading, a (2 tau + 1)-pixel square kernel (chessboard distance <= tau), is "square".
- ASD = mean of all boundary-to-other-boundary distances, both directions pooled; HD = the
  largest of them (symmetric Hausdorff).
- both masks empty: F1 = 1, ASD = HD = 0. Exactly one mask empty: F1 = 0 and ASD = HD = the
  diagonal of the evaluation grid (the largest distance it can hold), so abstaining is never
  rewarded by leaving a sample out of the means; summary() counts these samples (distance_one_empty).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from georeasoner_plugin.core.frames import box_iou
from georeasoner_plugin.core.protocol import PARSE_INVALID, PARSE_NO_ANSWER

PRECISION_THRESHOLDS: Tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
BOUNDARY_TOLERANCES: Tuple[int, ...] = (1, 3)
BOX_HIT_IOU = 0.5
TOLERANCE_KERNELS = ("disc", "square")
UNPARSEABLE_STATUSES = (PARSE_INVALID, PARSE_NO_ANSWER)

_FOUR_NEIGHBOURS = ndimage.generate_binary_structure(2, 1)


# --------------------------------------------------------------------------- pixel level

def as_mask(mask, shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """A 2-D bool mask; None (no prediction) becomes an empty mask of ``shape``."""
    if mask is None:
        if shape is None:
            raise ValueError("an empty prediction needs the target's shape")
        return np.zeros(shape, dtype=bool)
    array = np.asarray(mask)
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):  # a colour label PNG: any channel set
        array = array.any(axis=2)
    if array.ndim != 2:
        raise ValueError(f"a mask is a 2-D array, got shape {array.shape}")
    return array if array.dtype == bool else array != 0


def intersection_union(pred_mask, gt_mask) -> Tuple[int, int]:
    pred, gt = as_mask(pred_mask), as_mask(gt_mask)
    _check_same_shape(pred, gt)
    return int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))


def mask_iou(pred_mask, gt_mask) -> float:
    """Per-sample IoU; 1 when both masks are empty."""
    intersection, union = intersection_union(pred_mask, gt_mask)
    return intersection / union if union else 1.0


def _check_same_shape(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction mask {pred.shape[::-1]} and target mask {gt.shape[::-1]} differ in size "
                         "(width x height); resize the prediction to the target first")


# --------------------------------------------------------------------------- region level

def _as_boxes(boxes) -> List[Tuple[float, float, float, float]]:
    if boxes is None:
        return []
    out = []
    for box in boxes:
        values = tuple(float(v) for v in box)
        if len(values) != 4:
            raise ValueError(f"a box is [x1, y1, x2, y2], got {list(box)!r}")
        out.append(values)
    return out


def box_iou_matrix(pred_boxes, gt_boxes) -> np.ndarray:
    """(K, J) IoU of every predicted box with every ground-truth box."""
    pred, gt = _as_boxes(pred_boxes), _as_boxes(gt_boxes)
    matrix = np.zeros((len(pred), len(gt)), dtype=float)
    for i, p in enumerate(pred):
        for j, g in enumerate(gt):
            matrix[i, j] = box_iou(p, g)
    return matrix


def match_boxes(pred_boxes, gt_boxes) -> List[Tuple[int, int, float]]:
    """One-to-one (pred index, gt index, IoU) pairs maximising the summed IoU."""
    matrix = box_iou_matrix(pred_boxes, gt_boxes)
    if matrix.size == 0:
        return []
    rows, cols = linear_sum_assignment(matrix, maximize=True)
    return [(int(r), int(c), float(matrix[r, c])) for r, c in zip(rows, cols)]


def enclosing_box(boxes) -> Optional[Tuple[float, float, float, float]]:
    boxes = _as_boxes(boxes)
    if not boxes:
        return None
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


@dataclass(frozen=True)
class RegionScores:
    gt_count: int
    pred_count: int
    hits: int  # matched pairs with IoU >= BOX_HIT_IOU
    acc50: float  # hits / J
    acc50_strict: float  # hits / max(J, K)
    miou: float  # summed matched IoU / max(J, K)
    union_box_iou: float
    union_acc50: float


def region_scores(pred_boxes, gt_boxes, hit_iou: float = BOX_HIT_IOU) -> RegionScores:
    pred, gt = _as_boxes(pred_boxes), _as_boxes(gt_boxes)
    k, j = len(pred), len(gt)
    if j == 0 and k == 0:
        return RegionScores(0, 0, 0, 1.0, 1.0, 1.0, 1.0, 1.0)
    matches = match_boxes(pred, gt)
    hits = sum(1 for _, _, iou in matches if iou >= hit_iou)
    matched_iou = sum(iou for _, _, iou in matches)
    pred_union, gt_union = enclosing_box(pred), enclosing_box(gt)
    union_iou = box_iou(pred_union, gt_union) if pred_union and gt_union else 0.0
    return RegionScores(
        gt_count=j, pred_count=k, hits=hits,
        acc50=hits / j if j else 0.0,
        acc50_strict=hits / max(j, k),
        miou=matched_iou / max(j, k),
        union_box_iou=union_iou,
        union_acc50=float(union_iou >= hit_iou),
    )


# --------------------------------------------------------------------------- contour level

def mask_boundary(mask) -> np.ndarray:
    """The outermost boundary: pixels of the hole-filled mask with a 4-neighbour outside it.

    The image border counts as outside. Holes are filled first (scipy's binary_fill_holes), so
    only each component's external contour is boundary (RemoteReasoner Section 3.4).
    """
    filled = ndimage.binary_fill_holes(as_mask(mask))
    return filled & ~ndimage.binary_erosion(filled, structure=_FOUR_NEIGHBOURS, border_value=0)


def _boundary_distances(pred_boundary: np.ndarray, gt_boundary: np.ndarray,
                        metric: str = "euclidean") -> Tuple[np.ndarray, np.ndarray]:
    """(distance of each predicted boundary pixel to the target boundary, and the reverse)."""
    # Every point of both sets lies inside their joint bounding box, so the nearest boundary pixel
    # does too: the distance transform over that crop is exact and much cheaper on large images.
    rows = np.flatnonzero(pred_boundary.any(axis=1) | gt_boundary.any(axis=1))
    cols = np.flatnonzero(pred_boundary.any(axis=0) | gt_boundary.any(axis=0))
    window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    pred, gt = pred_boundary[window], gt_boundary[window]
    if metric == "chessboard":
        to_gt = ndimage.distance_transform_cdt(~gt, metric="chessboard")
        to_pred = ndimage.distance_transform_cdt(~pred, metric="chessboard")
    else:
        to_gt = ndimage.distance_transform_edt(~gt)
        to_pred = ndimage.distance_transform_edt(~pred)
    return to_gt[pred], to_pred[gt]


@dataclass(frozen=True)
class ContourScores:
    f1: Dict[int, float]  # tolerance (pixels) -> boundary F1
    assd: Optional[float]  # the grid's diagonal when exactly one mask is empty (None in old files)
    hd: Optional[float]
    one_empty: bool = False  # exactly one of prediction and target is empty

    @property
    def distance_defined(self) -> bool:
        return self.assd is not None


def grid_diagonal(shape: Tuple[int, int]) -> float:
    return float(math.hypot(shape[0], shape[1]))


def contour_scores(pred_mask, gt_mask, tolerances: Sequence[float] = BOUNDARY_TOLERANCES,
                   kernel: str = "disc") -> ContourScores:
    if kernel not in TOLERANCE_KERNELS:
        raise ValueError(f"tolerance kernel must be one of {', '.join(TOLERANCE_KERNELS)}, not {kernel!r}")
    pred, gt = as_mask(pred_mask), as_mask(gt_mask)
    _check_same_shape(pred, gt)
    pred_boundary, gt_boundary = mask_boundary(pred), mask_boundary(gt)
    pred_empty, gt_empty = not pred_boundary.any(), not gt_boundary.any()
    if pred_empty and gt_empty:
        return ContourScores({t: 1.0 for t in tolerances}, 0.0, 0.0)
    if pred_empty or gt_empty:
        diagonal = grid_diagonal(gt.shape)
        return ContourScores({t: 0.0 for t in tolerances}, diagonal, diagonal, one_empty=True)
    pred_to_gt, gt_to_pred = _boundary_distances(pred_boundary, gt_boundary)
    if kernel == "square":
        within_pred, within_gt = _boundary_distances(pred_boundary, gt_boundary, "chessboard")
    else:
        within_pred, within_gt = pred_to_gt, gt_to_pred
    f1 = {}
    for tolerance in tolerances:
        precision = float(np.mean(within_pred <= tolerance))
        recall = float(np.mean(within_gt <= tolerance))
        f1[tolerance] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    pooled = np.concatenate([pred_to_gt, gt_to_pred])
    return ContourScores(f1, float(pooled.mean()), float(pooled.max()))


# --------------------------------------------------------------------------- accumulation

@dataclass(frozen=True)
class SampleMetrics:
    sample_id: str
    parse_status: str
    intersection: int
    union: int
    iou: float
    gt_empty: bool
    pred_empty: bool
    region: RegionScores
    contour: Optional[ContourScores]


@dataclass
class MetricAccumulator:
    """Collects per-sample scores; summary() gives the numbers of the papers' tables (fractions, not %)."""

    thresholds: Sequence[float] = PRECISION_THRESHOLDS
    tolerances: Sequence[int] = BOUNDARY_TOLERANCES
    with_contours: bool = True
    tolerance_kernel: str = "disc"
    samples: List[SampleMetrics] = field(default_factory=list)

    def add(self, sample_id, pred_mask, gt_mask, pred_boxes=(), gt_boxes=(), parse_status: str = "ok") -> SampleMetrics:
        """Score one sample. pred_mask None means no prediction (an empty mask).

        An unparseable answer (status invalid or no_answer) is scored as an empty prediction,
        whatever mask or boxes came with it, so a broken answer can never score by accident.
        """
        gt = as_mask(gt_mask)
        pred = as_mask(pred_mask, gt.shape)
        _check_same_shape(pred, gt)
        if parse_status in UNPARSEABLE_STATUSES:
            pred = np.zeros_like(gt)
            pred_boxes = ()
        intersection, union = int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))
        sample = SampleMetrics(
            sample_id=str(sample_id),
            parse_status=str(parse_status),
            intersection=intersection,
            union=union,
            iou=intersection / union if union else 1.0,
            gt_empty=not gt.any(),
            pred_empty=not pred.any(),
            region=region_scores(pred_boxes, gt_boxes),
            contour=contour_scores(pred, gt, self.tolerances, self.tolerance_kernel) if self.with_contours else None,
        )
        self.samples.append(sample)
        return sample

    def summary(self) -> Dict[str, object]:
        """Headline numbers; None where a number has no samples to stand on (JSON-safe)."""
        samples = self.samples
        n = len(samples)
        ious = np.array([s.iou for s in samples], dtype=float)
        total_union = sum(s.union for s in samples)
        no_target = [s for s in samples if s.gt_empty]
        statuses = Counter(s.parse_status for s in samples)
        out: Dict[str, object] = {
            "samples": n,
            "target_samples": n - len(no_target),
            "no_target_samples": len(no_target),
            "parse_status": dict(sorted(statuses.items())),
            "unparseable": sum(statuses[s] for s in UNPARSEABLE_STATUSES),
            # No sample has any target or prediction pixel: every IoU is 1, and so is cIoU.
            "giou": _mean(ious),
            "ciou": (sum(s.intersection for s in samples) / total_union if total_union else 1.0) if n else None,
        }
        for t in self.thresholds:
            out[f"precision@{t:g}"] = _mean(ious >= t - 1e-12)
        out["no_target_accuracy"] = _mean([s.pred_empty for s in no_target])
        out["box_acc@0.5"] = _mean([s.region.acc50 for s in samples])
        out["box_acc@0.5_strict"] = _mean([s.region.acc50_strict for s in samples])
        out["box_miou"] = _mean([s.region.miou for s in samples])
        out["union_box_iou"] = _mean([s.region.union_box_iou for s in samples])
        out["union_box_acc@0.5"] = _mean([s.region.union_acc50 for s in samples])
        if self.with_contours:
            for t in self.tolerances:
                out[f"boundary_f1@{t:g}"] = _mean([s.contour.f1[t] for s in samples])
            defined = [s.contour for s in samples if s.contour.distance_defined]
            out["assd"] = _mean([c.assd for c in defined])
            out["hd"] = _mean([c.hd for c in defined])
            out["distance_samples"] = len(defined)
            # samples where exactly one mask is empty: scored with the grid's diagonal as ASD and HD
            out["distance_one_empty"] = sum(1 for c in defined if c.one_empty)
        return out


def _mean(values) -> Optional[float]:
    values = np.asarray(values, dtype=float)
    return float(values.mean()) if values.size else None


SUMMARY_PERCENT_KEYS = ("giou", "ciou", "precision@", "no_target_accuracy", "box_", "union_box_", "boundary_f1@")


def summary_markdown(summary: Dict[str, object]) -> str:
    """A two-column Markdown table; shares are printed as percentages, like the papers."""
    lines = ["| metric | value |", "|---|---|"]
    for key, value in summary.items():
        if isinstance(value, dict):
            text = ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
        elif value is None:
            text = "n/a"
        elif isinstance(value, float) and key.startswith(SUMMARY_PERCENT_KEYS):
            text = f"{100 * value:.2f}"
        elif isinstance(value, float):
            text = f"{value:.2f}" if math.isfinite(value) else str(value)
        else:
            text = str(value)
        lines.append(f"| {key} | {text} |")
    return "\n".join(lines) + "\n"
