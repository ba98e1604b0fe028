"""The evaluation protocol on hand-worked cases: metrics directly, then `training evaluate --recorded`
with saved masks (``mask_png``) reproducing the same numbers from the command line.

Expected numbers are worked out by hand from the definitions (RemoteReasoner Sections 3.4 and
4.1: outermost contours, F1 with a 1- and 3-pixel tolerance, ASD, HD; the LISA IoU conventions),
not read from the code.
"""
import json
import math

import numpy as np
import pytest
from PIL import Image

from training import cli
from training.metrics import MetricAccumulator, contour_scores, mask_iou, region_scores

SIDE = 224
DIAGONAL = math.hypot(SIDE, SIDE)  # ASD and HD when exactly one mask is empty


def square(top, left, size, shape=(SIDE, SIDE)):
    mask = np.zeros(shape, bool)
    mask[top:top + size, left:left + size] = True
    return mask


def with_hole(mask, top, left, size):
    mask = mask.copy()
    mask[top:top + size, left:left + size] = False
    return mask


FILLED = square(50, 50, 12)
HOLED = with_hole(FILLED, 54, 54, 4)  # a 4 x 4 hole in the middle: 144 - 16 = 128 pixels
FIVE = square(100, 100, 5)
FIVE_RIGHT = square(100, 101, 5)  # one pixel to the right
FIVE_DIAGONAL = square(101, 101, 5)  # one pixel right and one down
TINY = square(20, 30, 2)  # a 4-pixel target
EMPTY = np.zeros((SIDE, SIDE), bool)


# --------------------------------------------------------------------------- the metrics, case by case

def test_hole_does_not_count_in_contours():
    # Outermost contours only (Section 3.4): both masks have the same outer boundary.
    scores = contour_scores(HOLED, FILLED)
    assert scores.f1 == {1: 1.0, 3: 1.0} and scores.assd == 0.0 and scores.hd == 0.0
    # ... while the pixel IoU does see the hole: 128 / 144
    assert mask_iou(HOLED, FILLED) == pytest.approx(128 / 144)


def test_empty_prediction_on_a_target_scores_the_grid_diagonal():
    scores = contour_scores(EMPTY, FIVE)
    assert scores.f1 == {1: 0.0, 3: 0.0} and scores.one_empty
    assert scores.assd == pytest.approx(DIAGONAL) and scores.hd == pytest.approx(DIAGONAL)
    assert mask_iou(EMPTY, FIVE) == 0.0


def test_empty_target_with_an_empty_prediction_is_perfect():
    scores = contour_scores(EMPTY, EMPTY)
    assert scores.f1 == {1: 1.0, 3: 1.0} and (scores.assd, scores.hd) == (0.0, 0.0) and not scores.one_empty
    assert mask_iou(EMPTY, EMPTY) == 1.0


def test_prediction_on_an_empty_target_scores_the_grid_diagonal():
    scores = contour_scores(FIVE, EMPTY)
    assert scores.f1 == {1: 0.0, 3: 0.0} and scores.assd == pytest.approx(DIAGONAL) and scores.one_empty
    assert mask_iou(FIVE, EMPTY) == 0.0


def test_four_pixel_target_is_scored():
    # every pixel of a 2 x 2 square is boundary; an exact prediction is perfect
    scores = contour_scores(TINY, TINY)
    assert scores.f1 == {1: 1.0, 3: 1.0} and scores.assd == 0.0
    assert region_scores([[30, 20, 32, 22]], [[30, 20, 32, 22]]).acc50 == 1.0


def test_one_pixel_shift():
    # 5 x 5 squares, one column apart. Each 16-pixel boundary: 8 pixels on the other boundary
    # (distance 0) and 8 one pixel away. F1@1 = 1; ASD = 16 / 32; HD = 1. IoU = 20 / 30.
    scores = contour_scores(FIVE_RIGHT, FIVE)
    assert scores.f1 == {1: 1.0, 3: 1.0}
    assert scores.assd == pytest.approx(0.5) and scores.hd == pytest.approx(1.0)
    assert mask_iou(FIVE_RIGHT, FIVE) == pytest.approx(20 / 30)


def test_diagonal_shift_separates_the_two_tolerance_readings():
    # 5 x 5 squares one pixel right and down. Per boundary: 2 pixels at 0, 13 at 1, one corner at
    # sqrt(2). Disc (Euclidean <= 1): precision = recall = 15/16 -> F1@1 = 15/16; the square kernel
    # (chessboard <= 1) takes the corner too -> 1. ASD = 2 (13 + sqrt 2) / 32, HD = sqrt 2.
    disc = contour_scores(FIVE_DIAGONAL, FIVE)
    square_kernel = contour_scores(FIVE_DIAGONAL, FIVE, kernel="square")
    assert disc.f1[1] == pytest.approx(15 / 16) and square_kernel.f1[1] == 1.0
    assert disc.f1[3] == square_kernel.f1[3] == 1.0
    assert disc.assd == pytest.approx((13 + math.sqrt(2)) / 16) == square_kernel.assd
    assert disc.hd == pytest.approx(math.sqrt(2))


def test_touching_boxes_hungarian_region_scores():
    # one box covering two touching targets: matched to one (IoU 0.5, a hit): Acc@0.5 = 1/2,
    # mIoU 0.5 / 2; the enclosing boxes coincide: union-box IoU 1
    scores = region_scores([[0, 0, 20, 10]], [[0, 0, 10, 10], [10, 0, 20, 10]])
    assert (scores.acc50, scores.miou, scores.union_box_iou) == pytest.approx((0.5, 0.25, 1.0))


def test_abstaining_is_never_left_out_of_the_distance_means():
    acc = MetricAccumulator()
    acc.add("same", FIVE, FIVE)
    acc.add("abstained", None, FIVE, parse_status="empty")
    summary = acc.summary()
    assert summary["assd"] == pytest.approx(DIAGONAL / 2) and summary["hd"] == pytest.approx(DIAGONAL / 2)
    assert summary["distance_samples"] == 2 and summary["distance_one_empty"] == 1


# --------------------------------------------------------------------------- the same through the command

# sample id -> (label, saved prediction, QA answer). "tiny" has a QA answer that says "no target"
# while its label marks 4 pixels: the label decides, and the sample is scored (not skipped).
SAMPLES = {
    "holes": (FILLED, HOLED, "the square pond"),
    "tiny": (TINY, TINY, ""),
    "empty_prediction": (FIVE, EMPTY, "the field"),
    "empty_target": (EMPTY, EMPTY, ""),
    "shift": (FIVE, FIVE_RIGHT, "the field"),
}
# by hand, per sample: (IoU, F1@1, F1@3, ASD, HD, box Acc@0.5 from the mask's own box)
EXPECTED = {
    "holes": (128 / 144, 1.0, 1.0, 0.0, 0.0, 1.0),
    "tiny": (1.0, 1.0, 1.0, 0.0, 0.0, 1.0),
    "empty_prediction": (0.0, 0.0, 0.0, DIAGONAL, DIAGONAL, 0.0),
    "empty_target": (1.0, 1.0, 1.0, 0.0, 0.0, 1.0),
    # boxes [101, 100, 106, 105] and [100, 100, 105, 105]: IoU 20 / 30 >= 0.5, a hit
    "shift": (20 / 30, 1.0, 1.0, 0.5, 1.0, 1.0),
}


@pytest.fixture(scope="module")
def saved_masks(imagery, tmp_path_factory):
    root = tmp_path_factory.mktemp("earthreason")
    images, labels, qas = imagery.split_folders(root, "val")
    predictions = tmp_path_factory.mktemp("peer")
    lines = []
    for number, (name, (label, prediction, answer)) in enumerate(SAMPLES.items()):
        Image.fromarray(imagery.crop(imagery.naip, 100 + 60 * number, 200, SIDE)).save(images / f"{name}.png")
        Image.fromarray(label.astype(np.uint8) * 255).save(labels / f"{name}.png")
        imagery.write_qa(qas / f"{name}.json", [f"Where is {name}?"], answer)
        Image.fromarray(prediction.astype(np.uint8) * 7).save(predictions / f"{name}.png")  # any non-zero value
        lines.append({"id": f"val/{name}/q0", "mask_png": f"{name}.png"})  # relative to the JSONL file
    recorded = predictions / "peer.jsonl"
    recorded.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return root, recorded


def evaluate(root, out, *extra):
    return cli.main(["evaluate", "--data", str(root), "--split", "val", "--profile", "remotereasoner",
                     "--out", str(out), "--device", "cpu", "--no-progress", "--overlays", "0", *extra])


def read_lines(out):
    return {json.loads(line)["id"]: json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()}


def test_evaluate_recorded_mask_png_reproduces_the_hand_worked_numbers(saved_masks, tmp_path):
    root, recorded = saved_masks
    out = tmp_path / "peer"
    # no segmenter exists on this machine: a saved mask needs none
    assert evaluate(root, out, "--recorded", str(recorded), "--segmenter", str(tmp_path / "no-sam2-here")) == 0
    lines = read_lines(out)
    assert sorted(lines) == sorted(f"val/{name}/q0" for name in SAMPLES)  # every sample scored
    for name, (iou, f1_1, f1_3, asd, hd, acc) in EXPECTED.items():
        line = lines[f"val/{name}/q0"]
        scores = line["scores"]
        assert line["mask_source"] == "mask_png"
        assert scores["pixel"]["iou"] == pytest.approx(iou), name
        assert (scores["contour"]["f1"]["1"], scores["contour"]["f1"]["3"]) == pytest.approx((f1_1, f1_3)), name
        assert (scores["contour"]["assd"], scores["contour"]["hd"]) == pytest.approx((asd, hd)), name
        assert scores["region"]["acc50"] == pytest.approx(acc), name
    summary = json.loads((out / "results.json").read_text())["summary"]
    columns = list(zip(*EXPECTED.values()))
    assert summary["samples"] == 5 and summary["unreadable"] == 0
    assert summary["giou"] == pytest.approx(np.mean(columns[0]))
    assert summary["boundary_f1@1"] == pytest.approx(np.mean(columns[1]))
    assert summary["assd"] == pytest.approx(np.mean(columns[3]))
    assert summary["hd"] == pytest.approx(np.mean(columns[4]))
    assert summary["box_acc@0.5"] == pytest.approx(np.mean(columns[5]))
    assert summary["distance_samples"] == 5 and summary["distance_one_empty"] == 1
    markdown = (out / "results.md").read_text()
    assert "outermost boundary of each mask component" in markdown
    assert "Euclidean distance <= 1 or 3 px" in markdown
    assert "5 from mask_png" in markdown
    prepared = (out / "prepared" / "val_summary.md").read_text()
    assert "mask without target" in prepared and "kept" in prepared


def test_saved_masks_are_rescored_on_another_grid_without_a_segmenter(saved_masks, tmp_path):
    root, recorded = saved_masks
    first = tmp_path / "first"
    assert evaluate(root, first, "--recorded", str(recorded), "--tasks", "pixel") == 0
    # re-score the run's own samples.jsonl on SegEarth-R1's letterboxed grid: its masks are reused
    again = tmp_path / "letterbox"
    assert evaluate(root, again, "--recorded", str(first / "samples.jsonl"), "--tasks", "pixel,contour",
                    "--resolution", "letterbox1024") == 0
    lines = read_lines(again)
    assert {line["mask_source"] for line in lines.values()} == {"saved"}
    # 224 -> 1024 (x 32/7): the hole and the square scale alike, so the IoU stays 128 / 144 up to
    # rounding at pixel edges; the empty cases stay exact
    assert lines["val/holes/q0"]["scores"]["pixel"]["iou"] == pytest.approx(128 / 144, abs=0.02)
    assert lines["val/empty_target/q0"]["scores"]["pixel"]["iou"] == 1.0
    assert lines["val/empty_prediction/q0"]["scores"]["contour"]["assd"] == pytest.approx(math.hypot(1024, 1024))
    assert lines["val/holes/q0"]["scores"]["contour"]["f1"]["1"] == 1.0


def test_mask_png_of_the_wrong_size_says_what_to_do(saved_masks, tmp_path, capsys):
    root, recorded = saved_masks
    wrong = tmp_path / "wrong.png"
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(wrong)
    lines = [json.loads(line) for line in recorded.read_text().splitlines()]
    for line in lines:  # the file moves: its relative paths would point elsewhere
        line["mask_png"] = str(recorded.parent / line["mask_png"])
    lines[0]["mask_png"] = str(wrong)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert evaluate(root, tmp_path / "out", "--recorded", str(bad)) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "is 12 x 10 pixels, the image is 224 x 224" in err and "save the mask at the image's size" in err
    lines[0]["mask_png"] = "missing.png"
    bad.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert evaluate(root, tmp_path / "out2", "--recorded", str(bad)) == cli.EXIT_USAGE
    assert "does not exist (a relative path is relative to" in capsys.readouterr().err

