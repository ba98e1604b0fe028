"""`training prepare` on a small EarthReason-shaped dataset cut from the real sample GeoTIFFs."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from georeasoner_plugin.core.profiles import get_profile
from training import cli
from training.prepare import grasp_points, mask_objects, point_generator, prepare_split, whole_mask_object

SIZE = 200


def multi_object_mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.rectangle(mask, (20, 30), (79, 59), 255, -1)  # 60 x 30 field
    cv2.circle(mask, (150, 140), 25, 255, -1)  # round lake
    mask[190:192, 5:7] = 255  # a 4-pixel speck, below the default min area (16)
    return mask


def ring_mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.circle(mask, (100, 100), 60, 255, -1)
    cv2.circle(mask, (100, 100), 30, 0, -1)  # the hole
    return mask


@pytest.fixture(scope="module")
def earthreason(imagery, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("earthreason")
    split = root / "train"
    images, labels, qas = (split / n for n in ("images", "labels", "QAs"))
    for folder in (images, labels, qas):
        folder.mkdir(parents=True)

    Image.fromarray(imagery.crop(imagery.naip, 300, 200, SIZE)).save(images / "multi.png")
    Image.fromarray(multi_object_mask()).save(labels / "multi.png")
    imagery.write_qa(qas / "multi.json", ["Which fields and lakes could be irrigated?", "Where is water stored?"],
             "the field and the lake")

    Image.fromarray(imagery.crop(imagery.landsat, 100, 100, SIZE)).save(images / "ring.jpg", quality=90)
    Image.fromarray(ring_mask()).save(labels / "ring.png")
    imagery.write_qa(qas / "ring.json", ["Which ring-shaped area surrounds the pond?"], "the ring")

    Image.fromarray(imagery.crop(imagery.naip, 600, 400, SIZE)).save(images / "empty.png")
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(labels / "empty.png")
    imagery.write_qa(qas / "empty.json", ["Where is the airport?"], "")

    # malformed samples
    Image.fromarray(imagery.crop(imagery.naip, 0, 0, SIZE)).save(images / "badjson.png")
    Image.fromarray(ring_mask()).save(labels / "badjson.png")
    (qas / "badjson.json").write_text('{"questions": ["Where', encoding="utf-8")

    Image.fromarray(ring_mask()).save(labels / "noimage.png")
    imagery.write_qa(qas / "noimage.json", ["Where is the lake?"], "the lake")

    Image.fromarray(imagery.crop(imagery.naip, 100, 100, SIZE)).save(images / "mismatch.png")
    Image.fromarray(np.zeros((150, SIZE), np.uint8)).save(labels / "mismatch.png")
    imagery.write_qa(qas / "mismatch.json", ["Where is the lake?"], "the lake")

    Image.fromarray(imagery.crop(imagery.naip, 200, 300, SIZE)).save(images / "emptymask.png")
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(labels / "emptymask.png")
    imagery.write_qa(qas / "emptymask.json", ["Where is the lake?"], "the lake")

    (images / "unreadable.png").write_bytes(b"\x89PNG\r\n\x1a\n but the rest is not an image")
    Image.fromarray(ring_mask()).save(labels / "unreadable.png")
    imagery.write_qa(qas / "unreadable.json", ["Where is the lake?"], "the lake")

    Image.fromarray(imagery.crop(imagery.naip, 400, 100, SIZE)).save(images / "noquestions.png")
    Image.fromarray(ring_mask()).save(labels / "noquestions.png")
    (qas / "noquestions.json").write_text(json.dumps({"answer": "x"}), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def prepared(earthreason, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    result = prepare_split(earthreason, out, split="train", profile="georeasoner")
    records = [json.loads(line) for line in result.records_path.read_text(encoding="utf-8").splitlines()]
    return result, {r["id"]: r for r in records}


def by_image(records, image_id):
    return [r for r in records.values() if r["image_id"] == image_id]


# --------------------------------------------------------------------------- mask -> objects

def outer_ring(inside, first, radius):
    """GRASP Section 4.1's outer ring, pixel by pixel: mask pixels beyond the inscribed circle.

    When there is none, the paper's fallback: the boundary pixels farthest from the first point.
    """
    ring = {(c + 0.5, r + 0.5) for r, c in zip(*np.nonzero(inside))
            if np.hypot(c + 0.5 - first[0], r + 0.5 - first[1]) > radius}
    if ring:
        return ring
    padded = np.pad(inside, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    edge = [(c + 0.5, r + 0.5) for r, c in zip(*np.nonzero(inside & ~interior))]
    far = max(np.hypot(x - first[0], y - first[1]) for x, y in edge)
    return {(x, y) for x, y in edge if np.hypot(x - first[0], y - first[1]) == pytest.approx(far)}


def test_grasp_points_on_hand_made_shapes():
    # One pixel: no pixel beyond the circle, so the fallback, the boundary pixel farthest from p1: itself.
    assert grasp_points(np.ones((1, 1), bool)) == ((0.5, 0.5), (0.5, 0.5), 1.0)
    # A 5 x 11 bar: the deepest pixels (distance 3 to the outside) form the ridge at row 2,
    # cols 2..8; p1 is its middle (col 5). p2 is drawn from the pixels more than 3 px from p1.
    bar = np.ones((5, 11), bool)
    first, second, radius = grasp_points(bar, point_generator(0, "train", "bar"))
    assert radius == 3.0 and first == (5.5, 2.5)
    ring = outer_ring(bar, first, radius)
    assert second in ring
    # seeded: the same (seed, split, id) draws the same point; other seeds spread over the ring
    assert grasp_points(bar, point_generator(0, "train", "bar")) == (first, second, radius)
    drawn = {grasp_points(bar, point_generator(seed, "train", "bar"))[1] for seed in range(40)}
    assert drawn <= ring and len(drawn) > 5
    # A 3 x 3 square: depth 2 in the middle; the corners are sqrt(2) < 2 away, so nothing lies
    # beyond the circle and p2 is the boundary pixel farthest from p1: a corner, the first in
    # row-major order.
    first, second, radius = grasp_points(np.ones((3, 3), bool))
    assert (first, radius) == ((1.5, 1.5), 2.0) and second == (0.5, 0.5)


def test_whole_mask_object_is_one_box_and_two_points_for_all_parts():
    """GRASP Section 4.1: the box spans the extreme foreground pixels of the whole mask."""
    mask = multi_object_mask() > 0
    whole = whole_mask_object(mask, point_generator(0, "train", "multi"))
    # field x 20..79, y 30..59; lake x 125..175, y 115..165; speck x 5..6, y 190..191
    assert whole.box == (5.0, 30.0, 176.0, 192.0)
    assert whole.area == int(mask.sum())
    # p1: the deepest pixel of all (the lake's centre; the drawn disc's radius is 25, the nearest
    # outside pixel sqrt(25^2 + 1) away); p2: a mask pixel beyond that circle (on the field)
    assert whole.points[0] == (150.5, 140.5) and whole.inscribed_radius == pytest.approx(626 ** 0.5)
    assert whole.points[1] in outer_ring(mask, whole.points[0], whole.inscribed_radius)
    assert whole_mask_object(np.zeros((4, 4), bool)) is None


def test_mask_objects_boxes_points_contours():
    objects, dropped = mask_objects(multi_object_mask(), min_area=16)
    assert dropped == 1
    assert [o.box for o in objects] == [(125.0, 115.0, 176.0, 166.0), (20.0, 30.0, 80.0, 60.0)]  # largest first
    assert objects[1].area == 60 * 30
    (field,) = objects[1].polygons  # on pixel corners, in image pixels (the component was traced in a crop)
    assert sorted(map(tuple, field["exterior"][:-1])) == [(20, 30), (20, 60), (80, 30), (80, 60)]
    assert field["exterior"][0] == field["exterior"][-1] and field["holes"] == []
    everything, none_dropped = mask_objects(multi_object_mask(), min_area=0)
    assert none_dropped == 0 and len(everything) == 3


def _ring_area(ring):
    return abs(sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(ring, ring[1:]))) / 2


# --------------------------------------------------------------------------- the prepared dataset

def test_records_per_question_and_malformed_samples_reported(prepared):
    result, records = prepared
    assert result.records == 4  # multi: 2 questions, ring: 1, empty: 1
    assert sorted(records) == ["train/empty/q0", "train/multi/q0", "train/multi/q1", "train/ring/q0"]
    kinds = {Path(p.file).stem: p.kind for p in result.problems}
    assert kinds == {"badjson": "bad QA json", "noimage": "image missing", "mismatch": "size mismatch",
                     "emptymask": "empty mask for a target", "noquestions": "no questions",
                     "unreadable": "image unreadable"}
    stats = result.stats
    assert stats["images used"] == 3 and stats["samples skipped"] == 6
    assert stats["empty-target images"] == 1 and stats["empty-target share"] == pytest.approx(1 / 3)
    assert stats["components dropped (below min area)"] == 1
    assert stats["objects per image (counts)"] == {"0": 1, "1": 1, "2": 1}
    assert stats["problems by kind"]["size mismatch"] == 1
    summary = result.summary_path.read_text(encoding="utf-8")
    for name in ("badjson.json", "noimage", "mismatch.png", "emptymask.png", "noquestions.json", "unreadable.png"):
        assert name in summary
    assert "| empty-target share | 33.3% |" in summary


def test_boxes_points_and_frame_of_the_multi_object_sample(prepared, earthreason):
    _, records = prepared
    record = records["train/multi/q1"]
    assert record["question"] == "Where is water stored?"
    assert Path(record["image"]) == (earthreason / "train" / "images" / "multi.png").resolve()
    mask = np.asarray(Image.open(record["mask"])) > 0
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    assert record["gt_boxes_px"] == [[125.0, 115.0, 176.0, 166.0], [20.0, 30.0, 80.0, 60.0]]
    assert record["object_areas_px"][1] == 1800
    # an independent depth map: OpenCV's exact Euclidean distance transform, image border padded
    depth = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    for box, (p1, p2) in zip(record["gt_boxes_px"], record["gt_points_px"]):
        component = labels[int(p1[1]), int(p1[0])]
        assert component != 0 and labels[int(p2[1]), int(p2[0])] == component  # both on the same object
        inside = labels == component
        # the first point is a centre of the largest inscribed circle
        assert depth[int(p1[1]), int(p1[0])] == pytest.approx(depth[inside].max(), abs=1e-3)
        assert tuple(p2) in outer_ring(inside, p1, depth[inside].max())
        assert box[0] <= p1[0] <= box[2] and box[1] <= p1[1] <= box[3]
    # the round lake: inscribed-circle centre at the drawn centre (150, 140), pixel centre 150.5, 140.5
    assert record["gt_points_px"][0][0] == [150.5, 140.5]

    # model frame: Qwen smart resize of 200 x 200 within GeoReasoner's pixel bounds
    frame = get_profile("georeasoner").frame.frame_for(SIZE, SIZE)
    assert (record["frame_width"], record["frame_height"]) == (frame.frame_width, frame.frame_height)
    assert frame.frame_width != SIZE  # the conversion is not the identity here
    for box_px, box_frame in zip(record["gt_boxes_px"], record["gt_boxes"]):
        assert box_frame == pytest.approx(frame.box_to_frame(box_px), abs=0.01)
    for pts_px, pts_frame in zip(record["gt_points_px"], record["gt_points"]):
        for p_px, p_frame in zip(pts_px, pts_frame):
            assert p_frame == pytest.approx(frame.to_frame(*p_px), abs=0.01)
    # the rendered answer reads back, through the profile's own parser, as the frame boxes
    parsed = get_profile("georeasoner").parse(record["solution"])
    assert parsed.status == "ok"
    assert [list(o.box) for o in parsed.objects] == [[round(v) for v in b] for b in record["gt_boxes"]]
    assert record["prompt"][-1]["content"][0] == {"type": "image"}
    assert "Where is water stored?" in record["prompt"][-1]["content"][1]["text"]


def test_ring_with_hole_and_empty_target(prepared):
    _, records = prepared
    ring = records["train/ring/q0"]
    assert ring["gt_boxes_px"] == [[40.0, 40.0, 161.0, 161.0]]
    (polygon,), = ring["contours_px"]
    assert len(polygon["holes"]) == 1
    area = _ring_area(polygon["exterior"]) - _ring_area(polygon["holes"][0])
    assert area == ring["object_areas_px"][0] == int((ring_mask() > 0).sum())
    p1, p2 = ring["gt_points_px"][0]
    mask = ring_mask() > 0
    depth = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    assert depth[int(p1[1]), int(p1[0])] == pytest.approx(depth.max(), abs=1e-3)
    assert np.hypot(p1[0] - 100.5, p1[1] - 100.5) > 30  # on the ring, not in the hole
    assert tuple(p2) in outer_ring(mask, p1, depth.max())

    empty = records["train/empty/q0"]
    assert empty["has_target"] is False and empty["gt_boxes"] == [] and empty["gt_points"] == []
    assert get_profile("georeasoner").parse(empty["solution"]).status == "empty"


def test_grasp_profile_trains_on_one_object_per_mask(earthreason, tmp_path):
    result = prepare_split(earthreason, tmp_path / "g", profile="grasp")
    records = {json.loads(line)["id"]: json.loads(line) for line in result.records_path.read_text().splitlines()}
    multi = records["train/multi/q0"]
    whole = multi["mask_object_px"]
    assert whole["box"] == [5.0, 30.0, 176.0, 192.0]  # the whole mask, the 4-pixel speck included
    assert len(multi["gt_boxes"]) == 1 and len(multi["gt_boxes_px"]) == 2  # per-part boxes stay available
    parsed = get_profile("grasp").parse(multi["solution"])
    assert parsed.status == "ok" and len(parsed.objects) == 1 and len(parsed.objects[0].points) == 2
    empty = records["train/empty/q0"]
    assert empty["mask_object_px"] is None and empty["solution"].endswith("<answer>{}</answer>")
    assert get_profile("grasp").parse(empty["solution"]).status == "empty"


def test_other_profile_frame_and_question_sampling(earthreason, tmp_path):
    result = prepare_split(earthreason, tmp_path / "a", profile="segzero", questions="sample", seed=3)
    records = [json.loads(line) for line in result.records_path.read_text().splitlines()]
    assert len(records) == 3  # one question per usable image
    multi = next(r for r in records if r["image_id"] == "multi")
    assert (multi["frame_width"], multi["frame_height"]) == (840, 840)
    assert multi["gt_boxes"][1] == pytest.approx([20 * 4.2, 30 * 4.2, 80 * 4.2, 60 * 4.2])
    again = prepare_split(earthreason, tmp_path / "b", profile="segzero", questions="sample", seed=3)
    assert again.records_path.read_text() == result.records_path.read_text()


# --------------------------------------------------------------------------- CLI

def run(args, capsys):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_cli_missing_root_names_the_path(tmp_path, capsys):
    missing = tmp_path / "no-such-earthreason"
    code, _, err = run(["prepare", "--data", missing, "--out", tmp_path / "out"], capsys)
    assert code != 0 and str(missing) in err
    assert not (tmp_path / "out").exists()


def test_cli_root_without_split_names_the_split_folder(tmp_path, capsys):
    (tmp_path / "root" / "val").mkdir(parents=True)
    code, _, err = run(["prepare", "--data", tmp_path / "root", "--out", tmp_path / "out"], capsys)
    assert code == cli.EXIT_DATAERR and str(tmp_path / "root" / "train") in err
    (tmp_path / "root" / "train" / "images").mkdir(parents=True)
    code, _, err = run(["prepare", "--data", tmp_path / "root", "--out", tmp_path / "out"], capsys)
    assert code == cli.EXIT_DATAERR and str(tmp_path / "root" / "train" / "labels") in err


def test_cli_bad_option_is_one_line(tmp_path, capsys):
    code, _, err = run(["prepare", "--data", tmp_path, "--out", tmp_path, "--split", "nope"], capsys)
    assert code == cli.EXIT_USAGE and "invalid choice" in err and err.strip().count("\n") == 0
    code, _, _ = run([], capsys)
    assert code == cli.EXIT_USAGE


def test_cli_prepare_prints_the_summary(earthreason, tmp_path, capsys):
    code, out, err = run(["prepare", "--data", earthreason, "--out", tmp_path, "--min-area", "0"], capsys)
    assert code == 0
    assert "| records | 4 |" in out and "| components dropped (below min area) | 0 |" in out
    assert "6 problem(s)" in err and "mismatch.png: size mismatch" in err
    assert (tmp_path / "train.jsonl").exists() and (tmp_path / "train_summary.md").exists()
