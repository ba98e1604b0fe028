"""Evaluation metrics against hand-worked numbers and independent computations."""
import itertools
import math

import numpy as np
import pytest
from scipy.spatial.distance import directed_hausdorff

from training.metrics import (MetricAccumulator, box_iou_matrix, contour_scores, intersection_union, mask_boundary,
                              mask_iou, match_boxes, region_scores, summary_markdown)


def square(shape, top, left, size):
    mask = np.zeros(shape, dtype=bool)
    mask[top:top + size, left:left + size] = True
    return mask


# --------------------------------------------------------------------------- pixel level

def test_giou_ciou_precision_by_hand_with_empty_targets_and_a_failed_parse():
    shape = (8, 8)
    acc = MetricAccumulator()
    # s1: target 2x2 = 4 px, prediction 2 of them: I = 2, U = 4, IoU 0.5
    gt1 = square(shape, 0, 0, 2)
    pred1 = np.zeros(shape, bool)
    pred1[0, 0:2] = True
    acc.add("s1", pred1, gt1)
    # s2: empty target, empty prediction: I = 0, U = 0, IoU 1 (LISA convention)
    acc.add("s2", None, np.zeros(shape, bool), parse_status="empty")
    # s3: empty target, 3 predicted pixels: I = 0, U = 3, IoU 0
    pred3 = np.zeros(shape, bool)
    pred3[5, 0:3] = True
    acc.add("s3", pred3, np.zeros(shape, bool))
    # s4: target 2x3 = 6 px, the answer could not be parsed: scored as an empty prediction even
    # though a (stale) full mask came with it: I = 0, U = 6, IoU 0
    gt4 = np.zeros(shape, bool)
    gt4[4:6, 4:7] = True
    acc.add("s4", np.ones(shape, bool), gt4, pred_boxes=[[0, 0, 8, 8]], gt_boxes=[[4, 4, 7, 6]],
            parse_status="invalid")
    s = acc.summary()
    assert s["samples"] == 4 and s["no_target_samples"] == 2 and s["target_samples"] == 2
    assert s["giou"] == pytest.approx((0.5 + 1 + 0 + 0) / 4)  # 0.375
    assert s["ciou"] == pytest.approx((2 + 0 + 0 + 0) / (4 + 0 + 3 + 6))  # 2/13
    assert s["precision@0.5"] == pytest.approx(2 / 4)  # s1 (0.5) and s2 (1)
    assert s["precision@0.6"] == pytest.approx(1 / 4)  # s2 only
    assert s["precision@0.9"] == pytest.approx(1 / 4)
    assert s["no_target_accuracy"] == pytest.approx(1 / 2)  # s2 right, s3 wrong
    assert s["unparseable"] == 1 and s["parse_status"] == {"empty": 1, "invalid": 1, "ok": 2}
    # the failed parse also loses its boxes: J = 1, K = 0 -> 0
    assert acc.samples[3].region.acc50 == 0.0 and acc.samples[3].pred_empty


def test_single_sample_iou_and_empty_conventions():
    gt = square((10, 10), 0, 0, 4)  # 16 px
    pred = square((10, 10), 2, 2, 4)  # 16 px, overlap 2x2 = 4
    assert intersection_union(pred, gt) == (4, 28)
    assert mask_iou(pred, gt) == pytest.approx(4 / 28)
    empty = np.zeros((10, 10), bool)
    assert mask_iou(empty, empty) == 1.0
    assert mask_iou(pred, empty) == 0.0
    assert mask_iou(empty, gt) == 0.0


def test_masks_of_different_sizes_are_refused():
    with pytest.raises(ValueError, match="differ in size"):
        mask_iou(np.zeros((4, 5)), np.zeros((5, 4)))


def test_summary_of_nothing_and_of_all_empty():
    assert MetricAccumulator().summary()["giou"] is None
    acc = MetricAccumulator()
    acc.add("a", None, np.zeros((3, 3)), parse_status="empty")
    s = acc.summary()
    assert s["giou"] == 1.0 and s["ciou"] == 1.0 and s["no_target_accuracy"] == 1.0
    assert s["boundary_f1@1"] == 1.0 and s["assd"] == 0.0 and s["distance_one_empty"] == 0
    assert "| giou | 100.00 |" in summary_markdown(s)


# --------------------------------------------------------------------------- region level

def test_region_scores_by_hand():
    gt = [[0, 0, 10, 10], [20, 20, 30, 30]]
    pred = [[50, 50, 60, 60], [20, 20, 30, 30], [0, 0, 10, 5]]  # extra, exact, half
    r = region_scores(pred, gt)
    assert (r.gt_count, r.pred_count, r.hits) == (2, 3, 2)  # IoU 1 and IoU 0.5 (50/100) are hits
    assert r.acc50 == 1.0  # 2 hits / J = 2
    assert r.acc50_strict == pytest.approx(2 / 3)  # 2 hits / max(J, K) = 3
    assert r.miou == pytest.approx((1.0 + 0.5) / 3)
    # enclosing boxes: prediction [0,0,60,60] (3600), truth [0,0,30,30] (900): IoU 900/3600
    assert r.union_box_iou == pytest.approx(0.25) and r.union_acc50 == 0.0


def test_region_empty_conventions():
    assert region_scores([], []).acc50 == 1.0 and region_scores([], []).union_box_iou == 1.0
    assert region_scores([[0, 0, 1, 1]], []).acc50 == 0.0
    assert region_scores([[0, 0, 1, 1]], []).miou == 0.0
    assert region_scores([], [[0, 0, 1, 1]]).acc50_strict == 0.0


def test_hungarian_beats_greedy():
    # IoU (pred x gt): p1-A 100/110 = .909 (the largest), p1-B 110/130 = .846, p2-A 70/100 = .7,
    # p2-B 70/130 = .538. Greedy takes p1-A first (total 1.447); the optimum is p1-B + p2-A = 1.546.
    gt = [[0, 0, 10, 10], [0, 0, 10, 13]]
    pred = [[0, 0, 10, 11], [0, 0, 7, 10]]
    matrix = box_iou_matrix(pred, gt)
    assert matrix.argmax() == 0 and matrix[0, 0] == pytest.approx(100 / 110)
    matches = match_boxes(pred, gt)
    assert {(p, g) for p, g, _ in matches} == {(0, 1), (1, 0)}
    assert sum(iou for _, _, iou in matches) == pytest.approx(110 / 130 + 70 / 100)


def test_matching_equals_brute_force_over_permutations():
    rng = np.random.default_rng(7)
    for _ in range(40):
        k, j = (int(v) for v in rng.integers(1, 5, size=2))
        def boxes(n):
            xy = rng.uniform(0, 40, size=(n, 2))
            wh = rng.uniform(2, 20, size=(n, 2))
            return np.concatenate([xy, xy + wh], axis=1).tolist()
        pred, gt = boxes(k), boxes(j)
        matrix = box_iou_matrix(pred, gt)
        best = max(sum(matrix[p, g] for p, g in zip(perm, range(j)) if p is not None)
                   for perm in itertools.permutations(list(range(k)) + [None] * j, j))
        assert sum(iou for _, _, iou in match_boxes(pred, gt)) == pytest.approx(best)


# --------------------------------------------------------------------------- contour level

def brute_fill_holes(mask):
    """The mask with its holes filled: background not 4-connected to the image border, by flood fill."""
    h, w = mask.shape
    outside = np.zeros_like(mask, dtype=bool)
    stack = [(r, c) for r in range(h) for c in range(w) if (r in (0, h - 1) or c in (0, w - 1)) and not mask[r, c]]
    while stack:
        r, c = stack.pop()
        if outside[r, c] or mask[r, c]:
            continue
        outside[r, c] = True
        stack += [(r + dr, c + dc) for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))
                  if 0 <= r + dr < h and 0 <= c + dc < w]
    return ~outside


def brute_boundary(mask):
    """Outermost boundary: pixels of the hole-filled mask with a 4-neighbour outside it or the image."""
    mask = brute_fill_holes(mask)
    h, w = mask.shape
    points = []
    for r in range(h):
        for c in range(w):
            if not mask[r, c]:
                continue
            for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                rr, cc = r + dr, c + dc
                if not (0 <= rr < h and 0 <= cc < w) or not mask[rr, cc]:
                    points.append((r, c))
                    break
    return np.array(points, dtype=float).reshape(-1, 2)


def brute_contour(pred, gt, tolerances=(1, 3)):
    bp, bg = brute_boundary(pred), brute_boundary(gt)
    d = np.sqrt(((bp[:, None, :] - bg[None, :, :]) ** 2).sum(axis=2))
    p_to_g, g_to_p = d.min(axis=1), d.min(axis=0)
    f1 = {}
    for t in tolerances:
        precision, recall = np.mean(p_to_g <= t), np.mean(g_to_p <= t)
        f1[t] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    pooled = np.concatenate([p_to_g, g_to_p])
    return f1, pooled.mean(), pooled.max(), bp, bg


def random_blob(rng, shape):
    mask = np.zeros(shape, bool)
    for _ in range(rng.integers(1, 4)):
        r, c = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        h, w = rng.integers(1, 8, size=2)
        mask[r:r + h, c:c + w] = True
    if rng.random() < 0.5:  # a hole now and then
        r, c = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        mask[r:r + 2, c:c + 2] = False
    return mask


def test_shifted_square_by_hand():
    # 5x5 squares, the prediction shifted 2 px right. Predicted boundary (16 px): top row 5 px at
    # distances 0,0,0,1,2; bottom row the same; left column rows 3..5 at 1,2,1; right column
    # rows 3..5 at 2,2,2. Within 1 px: 4 + 4 + 2 + 0 = 10 of 16; the truth side is symmetric.
    gt = square((12, 12), 2, 2, 5)
    pred = square((12, 12), 2, 4, 5)
    scores = contour_scores(pred, gt)
    assert scores.f1[1] == pytest.approx(10 / 16)  # precision = recall = 10/16
    assert scores.f1[3] == 1.0  # no distance exceeds 2
    assert scores.assd == pytest.approx((16 + 16) / 32)  # distances sum to 3+3+4+6 = 16 per side
    assert scores.hd == 2.0


def test_contours_equal_brute_force_and_scipy_hausdorff():
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(60):
        shape = (int(rng.integers(6, 16)), int(rng.integers(6, 16)))
        pred, gt = random_blob(rng, shape), random_blob(rng, shape)
        if not pred.any() or not gt.any():
            continue
        scores = contour_scores(pred, gt)
        f1, assd, hd, bp, bg = brute_contour(pred, gt)
        assert np.array_equal(np.argwhere(mask_boundary(pred)), bp.astype(int))
        assert scores.f1[1] == pytest.approx(f1[1]) and scores.f1[3] == pytest.approx(f1[3])
        assert scores.assd == pytest.approx(assd)
        assert scores.hd == pytest.approx(hd)
        assert scores.hd == pytest.approx(max(directed_hausdorff(bp, bg)[0], directed_hausdorff(bg, bp)[0]))
        checked += 1
    assert checked > 30


def test_image_border_pixels_are_boundary():
    full = np.ones((4, 5), bool)
    assert mask_boundary(full).sum() == 4 * 5 - 2 * 3  # all but the 2x3 interior


def test_contour_empty_conventions_and_summary_counts():
    gt = square((10, 10), 2, 2, 4)
    empty = np.zeros((10, 10), bool)
    both = contour_scores(empty, empty)
    assert both.f1 == {1: 1.0, 3: 1.0} and both.assd == 0.0 and both.hd == 0.0
    one = contour_scores(empty, gt)
    diagonal = math.hypot(10, 10)  # the evaluation grid's diagonal
    assert one.f1 == {1: 0.0, 3: 0.0} and one.assd == diagonal and one.hd == diagonal and one.one_empty

    acc = MetricAccumulator()
    acc.add("same", gt, gt)  # F1 1, ASD 0, HD 0
    acc.add("missed", None, gt, parse_status="no_answer")  # F1 0, distances the grid's diagonal
    acc.add("shifted", square((10, 10), 2, 4, 4), gt)
    expected = contour_scores(square((10, 10), 2, 4, 4), gt)
    s = acc.summary()
    assert s["boundary_f1@1"] == pytest.approx((1 + 0 + expected.f1[1]) / 3)
    assert s["assd"] == pytest.approx((0 + diagonal + expected.assd) / 3)  # never left out
    assert s["hd"] == pytest.approx((0 + diagonal + expected.hd) / 3)
    assert s["distance_samples"] == 3 and s["distance_one_empty"] == 1
    assert math.isfinite(s["assd"])


def test_region_summary_by_hand_with_empty_targets_and_failed_parses():
    # The per-sample box scores averaged over samples, the empty cases counting as they should.
    shape = (4, 4)
    empty = np.zeros(shape, bool)
    acc = MetricAccumulator(with_contours=False)
    # a: 1 exact box of 1 -> acc 1, strict 1, mIoU 1, union IoU 1
    acc.add("a", None, empty, pred_boxes=[[0, 0, 10, 10]], gt_boxes=[[0, 0, 10, 10]])
    # b: no target, no box -> 1 everywhere
    acc.add("b", None, empty, parse_status="empty")
    # c: no target, one box -> 0 everywhere
    acc.add("c", None, empty, pred_boxes=[[0, 0, 5, 5]])
    # d: the answer could not be parsed; its (stale) exact box is ignored -> 0 everywhere
    acc.add("d", None, empty, pred_boxes=[[0, 0, 10, 10]], gt_boxes=[[0, 0, 10, 10]], parse_status="no_answer")
    # e: 2 targets, 1 box covering half of the first ([0,0,10,5]: IoU 50/100 = 0.5, a hit):
    #    acc 1/2, strict 1/max(2,1) = 1/2, mIoU 0.5/2 = 0.25; enclosing boxes [0,0,10,5] (50) and
    #    [0,0,30,30] (900): union IoU 50/900
    acc.add("e", None, empty, pred_boxes=[[0, 0, 10, 5]], gt_boxes=[[0, 0, 10, 10], [20, 20, 30, 30]])
    s = acc.summary()
    assert s["box_acc@0.5"] == pytest.approx((1 + 1 + 0 + 0 + 0.5) / 5)
    assert s["box_acc@0.5_strict"] == pytest.approx((1 + 1 + 0 + 0 + 0.5) / 5)
    assert s["box_miou"] == pytest.approx((1 + 1 + 0 + 0 + 0.25) / 5)
    assert s["union_box_iou"] == pytest.approx((1 + 1 + 0 + 0 + 50 / 900) / 5)
    assert s["union_box_acc@0.5"] == pytest.approx(2 / 5)
    assert s["unparseable"] == 1 and "boundary_f1@1" not in s and "assd" not in s
