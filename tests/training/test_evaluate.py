"""`training evaluate` on a small EarthReason-shaped set cut from the real sample GeoTIFFs.

(a) end to end with the tiny random models (real generation: whatever they write is scored);
(b) recorded answers whose region scores are worked out by hand, and pixel/contour scores
    recomputed independently (numpy, scipy's KD-tree and directed_hausdorff) from the masks the
    tiny SAM2 returned;
(c) resuming after an interruption gives the same summary as one uninterrupted run.
"""
import csv
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree
from scipy.spatial.distance import directed_hausdorff

from georeasoner_plugin.core.parsing import ParsedObject
from georeasoner_plugin.core.profiles import get_profile
from training import cli
from training.evaluation.report import failure_kind
from training.evaluation.scores import to_evaluation_grid

pytest.importorskip("torch")
pytest.importorskip("transformers")
# 224 is a multiple of 28 within Qwen's pixel bounds, so the remotereasoner frame is the image
# itself: a recorded box lands on exactly the pixels it names.
SIZE = 224
PROFILE = "remotereasoner"
SPLIT = "val"

LAKE_BOX = [40, 40, 140, 120]
FIELD_BOX = [20, 30, 80, 60]


def draw_masks():
    """Labels drawn with OpenCV (cv2.rectangle fills both corner pixels: box = [x1, y1, x2 + 1, y2 + 1])."""
    lake = np.zeros((SIZE, SIZE), np.uint8)
    cv2.rectangle(lake, (40, 40), (139, 119), 255, -1)
    multi = np.zeros((SIZE, SIZE), np.uint8)
    cv2.rectangle(multi, (20, 30), (79, 59), 255, -1)
    cv2.circle(multi, (150, 140), 25, 255, -1)
    ring = np.zeros((SIZE, SIZE), np.uint8)
    cv2.circle(ring, (112, 112), 60, 255, -1)
    cv2.circle(ring, (112, 112), 30, 0, -1)  # the hole
    return {"empty": np.zeros((SIZE, SIZE), np.uint8), "lake": lake, "multi": multi, "ring": ring}


def bounding_box(mask: np.ndarray):
    rows, cols = np.nonzero(mask)
    return [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]


@pytest.fixture(scope="module")
def earthreason(imagery, tmp_path_factory):
    root = tmp_path_factory.mktemp("earthreason")
    folders = {name: root / SPLIT / name for name in ("images", "labels", "QAs")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    masks = draw_masks()
    samples = {
        "empty": (imagery.crop(imagery.naip, 600, 400, SIZE), ["Where is the airport?"], ""),
        "lake": (imagery.crop(imagery.naip, 300, 200, SIZE), ["Which lake could water the fields?"], "the lake"),
        "multi": (imagery.crop(imagery.naip, 500, 100, SIZE), ["Which field and pond store water?", "Where is the field?"],
                  "the field and the pond"),
        "ring": (imagery.crop(imagery.landsat, 100, 100, SIZE), ["Which ring of land surrounds the pond?"], "the ring"),
    }
    for image_id, (rgb, questions, answer) in samples.items():
        Image.fromarray(rgb).save(folders["images"] / f"{image_id}.png")
        Image.fromarray(masks[image_id]).save(folders["labels"] / f"{image_id}.png")
        (folders["QAs"] / f"{image_id}.json").write_text(json.dumps({"questions": questions, "answer": answer}))
    return root, {k: v != 0 for k, v in masks.items()}


@pytest.fixture(scope="module")
def tiny(tiny_models):
    return tiny_models


def evaluate(root, out, *extra, model=None, segmenter=None):
    argv = ["evaluate", "--data", str(root), "--split", SPLIT, "--profile", PROFILE, "--out", str(out),
            "--device", "cpu", "--no-progress", *extra]
    if model:
        argv += ["--model", str(model), "--max-new-tokens", "24"]
    if segmenter:
        argv += ["--segmenter", str(segmenter)]
    return cli.main(argv)


def read_lines(out: Path):
    return [json.loads(line) for line in (out / "samples.jsonl").read_text(encoding="utf-8").splitlines()]


def decode_rle(data, shape):
    """Independent run-length decoding: runs alternate 0, 1, 0, ... starting with zeros."""
    if data is None:
        return np.zeros(shape, bool)
    flat = np.zeros(data["width"] * data["height"], bool)
    position = 0
    for index, count in enumerate(data["counts"]):
        if index % 2:
            flat[position:position + count] = True
        position += count
    assert position == flat.size
    return flat.reshape(data["height"], data["width"])


def boundary_points(mask):
    """Boundary pixels of the outermost contours: holes filled first with OpenCV's external contours."""
    filled = np.zeros(mask.shape, np.uint8)
    outer, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(filled, outer, -1, 1, thickness=cv2.FILLED)
    mask = filled.astype(bool)
    padded = np.pad(mask, 1)
    interior = (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    return np.argwhere(mask & ~interior).astype(float)


def expected_contour(pred, gt):
    """(F1@1, F1@3, ASD, HD) by nearest-neighbour queries on boundary pixel centres."""
    bp, bg = boundary_points(pred), boundary_points(gt)
    if len(bp) == 0 and len(bg) == 0:
        return 1.0, 1.0, 0.0, 0.0
    if len(bp) == 0 or len(bg) == 0:  # the evaluation grid's diagonal
        return 0.0, 0.0, float(np.hypot(*gt.shape)), float(np.hypot(*gt.shape))
    p_to_g = cKDTree(bg).query(bp)[0]
    g_to_p = cKDTree(bp).query(bg)[0]
    f1 = []
    for tolerance in (1, 3):
        precision, recall = np.mean(p_to_g <= tolerance), np.mean(g_to_p <= tolerance)
        f1.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    hd = max(directed_hausdorff(bp, bg)[0], directed_hausdorff(bg, bp)[0])
    assert hd == pytest.approx(max(p_to_g.max(), g_to_p.max()))
    return f1[0], f1[1], float(np.concatenate([p_to_g, g_to_p]).mean()), hd


# --------------------------------------------------------------------------- (a) tiny models, end to end

def test_end_to_end_with_tiny_models(earthreason, tiny, tmp_path, capsys):
    root, masks = earthreason
    out = tmp_path / "run"
    assert evaluate(root, out, "--overlays", "2", model=tiny["reasoner"], segmenter=tiny["segmenter"]) == 0
    printed = capsys.readouterr()
    assert "| cIoU | gIoU |" in printed.out and "first: the first question of each image" in printed.out

    for name in ("results.md", "results.csv", "results.json", "samples.jsonl", "run.json",
                 "prepared/val.jsonl", "prepared/val_summary.md"):
        assert (out / name).is_file(), name
    lines = read_lines(out)
    # --questions first (the default): one sample per image, question 0
    assert [line["id"] for line in lines] == [f"val/{i}/q0" for i in ("empty", "lake", "multi", "ring")]
    for line in lines:
        assert set(line) >= {"id", "question", "raw_output", "parse_status", "parse_problems", "scores",
                             "pred_mask", "scored_at"}
        assert isinstance(line["raw_output"], str)
        gt = masks[line["image_id"]]
        if line["parse_status"] in ("invalid", "no_answer"):
            # an unparseable answer is scored as an empty prediction, never skipped
            assert line["pred_mask"] is None and line["pred_boxes_px"] == []
            assert line["scores"]["pixel"] == {"iou": 1.0 if not gt.any() else 0.0, "intersection": 0,
                                               "union": int(gt.sum())}
            assert line["scores"]["region"]["acc50"] == (1.0 if not gt.any() else 0.0)

    report = json.loads((out / "results.json").read_text())
    summary = report["summary"]
    statuses = Counter(line["parse_status"] for line in lines)
    unparseable = statuses["invalid"] + statuses["no_answer"]
    assert unparseable >= 1  # random weights write nonsense
    assert summary["samples"] == 4 and summary["parse_status"] == dict(sorted(statuses.items()))
    assert summary["unparseable"] == unparseable
    assert summary["giou"] == pytest.approx(np.mean([line["scores"]["pixel"]["iou"] for line in lines]))
    failures = report["parse_failures"]
    assert sum(f["samples"] for f in failures) == sum(n for s, n in statuses.items() if s not in ("ok", "empty"))
    markdown = (out / "results.md").read_text()
    for failure in failures:
        assert f"| {failure['status']} | {failure['kind']} | {failure['samples']} |" in markdown
    assert "## Parse failures by kind" in markdown and "evaluation resolution | original" in markdown

    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["samples"] == "4" and rows[0]["profile"] == PROFILE
    assert {"Acc@0.5", "cIoU", "gIoU", "P@0.9", "F1@1", "F1@3", "ASD (px)", "HD (px)"} <= set(rows[0])

    overlays = sorted(p.name for p in (out / "overlays").glob("*.png"))
    assert [n[:8] for n in overlays] == ["best_01_", "best_02_", "worst_01", "worst_02"]
    with Image.open(out / "overlays" / overlays[0]) as overlay:
        assert overlay.mode == "RGB" and max(overlay.size) >= 700


# --------------------------------------------------------------------------- (b) recorded answers

def recorded_answers(masks):
    render = get_profile(PROFILE).render_answer
    pond_box = bounding_box(cv2.circle(np.zeros((SIZE, SIZE), np.uint8), (150, 140), 25, 255, -1))
    shifted = [LAKE_BOX[0] + 50, LAKE_BOX[1], LAKE_BOX[2] + 50, LAKE_BOX[3]]  # half the lake's width off
    return {
        "val/multi/q0": render([ParsedObject(box=tuple(pond_box)), ParsedObject(box=tuple(FIELD_BOX))], "both"),
        "val/multi/q1": render([ParsedObject(box=tuple(FIELD_BOX))], "only the field"),
        "val/ring/q0": "<think>a ring</think>\n<answer>the ring of land around the pond</answer>",
        "val/empty/q0": render([], "no airport here"),
        "val/lake/q0": render([ParsedObject(box=tuple(shifted))], "off by half"),
    }, pond_box


def test_recorded_answers_scored_by_hand(earthreason, tiny, tmp_path):
    root, masks = earthreason
    answers, pond_box = recorded_answers(masks)
    assert answers["val/multi/q1"] == "<think>only the field</think>\n<answer>[[20,30,80,60]]</answer>"
    recorded = tmp_path / "recorded.jsonl"
    recorded.write_text("".join(json.dumps({"id": k, "raw_output": v}) + "\n" for k, v in answers.items()))
    out = tmp_path / "run"
    assert evaluate(root, out, "--questions", "all", "--recorded", str(recorded),
                    segmenter=tiny["segmenter"]) == 0
    lines = {line["id"]: line for line in read_lines(out)}
    assert sorted(lines) == sorted(answers)
    assert {k: v["parse_status"] for k, v in lines.items()} == {
        "val/multi/q0": "ok", "val/multi/q1": "ok", "val/ring/q0": "invalid", "val/empty/q0": "empty",
        "val/lake/q0": "ok"}

    # Region, by hand. multi/q0: both boxes exact. multi/q1: 1 of 2 boxes; the enclosing boxes are
    # the field (60 x 30 = 1800) and field + pond [20, 30, 176, 166] (156 x 136 = 21216).
    # ring: unreadable -> empty -> 0. empty: [] on no target -> 1. lake: 100 x 80 box moved 50 px
    # right: I = 50 x 80 = 4000, U = 8000 + 8000 - 4000 = 12000, IoU 1/3.
    assert pond_box == [125, 115, 176, 166] and lines["val/multi/q0"]["gt_boxes_px"] == [pond_box, FIELD_BOX]
    union_q1 = 1800 / (156 * 136)
    expected_region = {
        "val/multi/q0": dict(hits=2, acc50=1.0, acc50_strict=1.0, miou=1.0, union_box_iou=1.0, union_acc50=1.0),
        "val/multi/q1": dict(hits=1, acc50=0.5, acc50_strict=0.5, miou=0.5, union_box_iou=union_q1, union_acc50=0.0),
        "val/ring/q0": dict(hits=0, acc50=0.0, acc50_strict=0.0, miou=0.0, union_box_iou=0.0, union_acc50=0.0),
        "val/empty/q0": dict(hits=0, acc50=1.0, acc50_strict=1.0, miou=1.0, union_box_iou=1.0, union_acc50=1.0),
        "val/lake/q0": dict(hits=0, acc50=0.0, acc50_strict=0.0, miou=1 / 3, union_box_iou=1 / 3, union_acc50=0.0),
    }
    for sample_id, expected in expected_region.items():
        got = lines[sample_id]["scores"]["region"]
        assert {k: got[k] for k in expected} == pytest.approx(expected), sample_id
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert summary["box_acc@0.5"] == pytest.approx((1 + 0.5 + 0 + 1 + 0) / 5)
    assert summary["box_acc@0.5_strict"] == pytest.approx((1 + 0.5 + 0 + 1 + 0) / 5)
    assert summary["box_miou"] == pytest.approx((1 + 0.5 + 0 + 1 + 1 / 3) / 5)
    assert summary["union_box_iou"] == pytest.approx((1 + union_q1 + 0 + 1 + 1 / 3) / 5)
    assert summary["union_box_acc@0.5"] == pytest.approx(2 / 5)
    with open(out / "results.csv", newline="") as handle:
        (row,) = csv.DictReader(handle)
    assert row["Acc@0.5"] == "50.00" and row["union-box Acc@0.5"] == "40.00" and row["unparseable"] == "1"

    # Pixel and contour: recomputed from the masks the tiny SAM2 returned (stored per sample).
    intersections, unions, ious, contours = [], [], [], []
    for sample_id, line in lines.items():
        gt = masks[line["image_id"]]
        pred = decode_rle(line["pred_mask"], gt.shape)
        if sample_id in ("val/ring/q0", "val/empty/q0"):
            assert line["pred_mask"] is None  # unreadable; nothing to segment
        else:
            assert line["pred_mask"] is not None
        intersection, union = int((pred & gt).sum()), int((pred | gt).sum())
        intersections.append(intersection)
        unions.append(union)
        ious.append(intersection / union if union else 1.0)
        assert line["scores"]["pixel"] == {"iou": pytest.approx(ious[-1]), "intersection": intersection,
                                           "union": union}
        contours.append(expected_contour(pred, gt))
        got = line["scores"]["contour"]
        assert (got["f1"]["1"], got["f1"]["3"], got["assd"], got["hd"]) == pytest.approx(contours[-1]), sample_id
    assert summary["giou"] == pytest.approx(np.mean(ious))
    assert summary["ciou"] == pytest.approx(sum(intersections) / sum(unions))
    for threshold in (0.5, 0.7, 0.9):
        assert summary[f"precision@{threshold:g}"] == pytest.approx(np.mean(np.array(ious) >= threshold))
    assert summary["no_target_accuracy"] == 1.0  # the one empty target got an empty answer
    assert summary["boundary_f1@1"] == pytest.approx(np.mean([c[0] for c in contours]))
    assert summary["boundary_f1@3"] == pytest.approx(np.mean([c[1] for c in contours]))
    # no sample is left out of the distance means; one-empty samples carry the grid's diagonal
    assert summary["distance_samples"] == len(contours)
    assert summary["distance_one_empty"] == sum(1 for c in contours if c[2] == np.hypot(SIZE, SIZE))
    assert summary["assd"] == pytest.approx(np.mean([c[2] for c in contours]))
    assert summary["hd"] == pytest.approx(np.mean([c[3] for c in contours]))

    markdown = (out / "results.md").read_text()
    assert "| invalid | could not read boxes or points from the answer | 1 | val/ring/q0 |" in markdown
    assert "question rule | all: every question of every image" in markdown

    # The same answers scored on SegEarth-R1's letterboxed grid: both masks resized (Pillow's
    # nearest neighbour here) to 1024 x 1024 and padded, and the IoU taken there.
    letterboxed = tmp_path / "letterbox"
    assert evaluate(root, letterboxed, "--questions", "all", "--recorded", str(recorded), "--tasks", "pixel",
                    "--resolution", "letterbox1024", segmenter=tiny["segmenter"]) == 0
    ious = []
    for line in read_lines(letterboxed):
        gt = masks[line["image_id"]]
        pred, target = (letterbox_with_pillow(m) for m in (decode_rle(line["pred_mask"], gt.shape), gt))
        union = (pred | target).sum()
        ious.append((pred & target).sum() / union if union else 1.0)
        assert line["scores"]["pixel"]["iou"] == pytest.approx(ious[-1])
    report = json.loads((letterboxed / "results.json").read_text())
    assert report["summary"]["giou"] == pytest.approx(np.mean(ious))
    assert "box_acc@0.5" not in report["summary"] and "boundary_f1@1" not in report["summary"]
    assert "letterbox1024: longest side resized to 1024" in (letterboxed / "results.md").read_text()


def letterbox_with_pillow(mask):
    side = 1024
    scale = side / max(mask.shape)
    size = (round(mask.shape[1] * scale), round(mask.shape[0] * scale))
    resized = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0
    grid = np.zeros((side, side), bool)
    grid[:size[1], :size[0]] = resized
    return grid


def test_region_only_needs_no_segmenter(earthreason, tmp_path):
    root, masks = earthreason
    answers, _ = recorded_answers(masks)
    recorded = tmp_path / "recorded.jsonl"
    recorded.write_text("".join(json.dumps({"id": k, "raw_output": v}) + "\n" for k, v in answers.items()))
    # No --segmenter: the default (a hub id) would fail to load offline if it were touched.
    assert evaluate(root, tmp_path / "run", "--tasks", "region", "--recorded", str(recorded), "--limit", "3") == 0
    lines = read_lines(tmp_path / "run")
    assert [line["id"] for line in lines] == ["val/empty/q0", "val/lake/q0", "val/multi/q0"]
    summary = json.loads((tmp_path / "run" / "results.json").read_text())["summary"]
    assert summary["box_acc@0.5"] == pytest.approx((1 + 0 + 1) / 3)
    assert summary["no_target_accuracy"] == 1.0 and "giou" not in summary
    assert all(line["pred_mask"] is None and "pixel" not in line["scores"] for line in lines)


def test_recorded_file_must_cover_the_samples(earthreason, tmp_path, capsys):
    root, _ = earthreason
    recorded = tmp_path / "recorded.jsonl"
    recorded.write_text(json.dumps({"id": "val/lake/q0", "raw_output": "[]"}) + "\n")
    assert evaluate(root, tmp_path / "run", "--tasks", "region", "--recorded", str(recorded)) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "has no output for 3 sample(s): val/empty/q0, val/multi/q0, val/ring/q0" in err
    assert evaluate(tmp_path / "nowhere", tmp_path / "run", "--tasks", "region",
                    "--recorded", str(recorded)) == cli.EXIT_DATAERR
    assert "does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------------- (c) resume

def test_resume_skips_scored_samples_and_matches_one_run(earthreason, tiny, tmp_path, capsys):
    root, _ = earthreason
    models = dict(model=tiny["reasoner"], segmenter=tiny["segmenter"])
    resumed = tmp_path / "resumed"
    assert evaluate(root, resumed, "--questions", "all", "--limit", "2", **models) == 0
    first = (resumed / "samples.jsonl").read_text(encoding="utf-8")
    assert len(first.splitlines()) == 2
    # An interruption in the middle of a write leaves a cut-off line: dropped and redone.
    with open(resumed / "samples.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"id": "val/multi/q0", "raw_out')
    capsys.readouterr()
    assert evaluate(root, resumed, "--questions", "all", **models) == 0
    err = capsys.readouterr().err
    assert "2 already in samples.jsonl, 3 to go" in err
    assert "using the split prepared by the first run" in err  # the labels are not read again
    after = (resumed / "samples.jsonl").read_text(encoding="utf-8")
    assert after.startswith(first)  # the first two lines (with their timestamps) untouched
    lines = read_lines(resumed)
    assert len(lines) == 5 and len({line["id"] for line in lines}) == 5

    # Once everything is scored a rerun only rewrites the reports.
    assert evaluate(root, resumed, "--questions", "all", **models) == 0
    assert "5 already in samples.jsonl, 0 to go" in capsys.readouterr().err
    assert (resumed / "samples.jsonl").read_text(encoding="utf-8") == after

    once = tmp_path / "once"
    assert evaluate(root, once, "--questions", "all", **models) == 0
    summary_resumed = json.loads((resumed / "results.json").read_text())["summary"]
    summary_once = json.loads((once / "results.json").read_text())["summary"]
    assert summary_resumed == summary_once

    def scores(out):
        return {line["id"]: (line["raw_output"], line["scores"], line["pred_mask"]) for line in read_lines(out)}
    assert scores(resumed) == scores(once)

    # Options that change scores cannot be mixed into one samples.jsonl.
    assert evaluate(root, resumed, "--questions", "all", "--resolution", "resize840", **models) == cli.EXIT_USAGE
    assert "resolution: 'original' there, 'resize840' now" in capsys.readouterr().err


# --------------------------------------------------------------------------- helpers

def test_evaluation_grids_match_pillow_nearest_neighbour():
    rng = np.random.default_rng(5)
    for shape in ((37, 61), (224, 224), (300, 120)):
        mask = rng.random(shape) > 0.6
        assert np.array_equal(to_evaluation_grid(mask, "original"), mask)
        assert np.array_equal(to_evaluation_grid(mask, "letterbox1024"), letterbox_with_pillow(mask))
        fixed = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((840, 840), Image.NEAREST)) > 0
        assert np.array_equal(to_evaluation_grid(mask, "resize840"), fixed)


def test_failure_kinds_group_like_with_like():
    problems = ["no <think>...</think> section", "no <answer>...</answer> section; looked for an answer in the free text"]
    assert failure_kind("no_answer", problems + ["could not read boxes or points from the answer: the lake"]) == \
        failure_kind("no_answer", problems + ["could not read boxes or points from the answer: the road"]) == \
        "could not read boxes or points from the answer"
    assert failure_kind("partial", ["object 2: bbox_2d has 3 numbers, not 4", "object 5: no usable box"]) == \
        "bbox_2d has N numbers, not N"
    assert failure_kind("partial", ["answer lists 120 objects; only the first 100 were used"]) == "answer lists N objects"
    assert failure_kind("error", []) == "(no detail)"
