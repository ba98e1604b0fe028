"""Rewards on hand-computed cases, on garbage, and through the TRL-style wrapper."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from georeasoner_plugin.core.frames import smart_resize
from georeasoner_plugin.core.parsing import ParsedObject
from georeasoner_plugin.core.profiles import get_profile
from training import rewards as R
from training.rewards import (REWARD_SETS, REWARDS, SegmentPrompt, answer_schema_reward, completion_text,
                              count_score, grasp_box_iou_reward, grasp_center_distance_reward, grasp_points_reward,
                              make_mask_iou_reward, reasoning_penalty, remotereasoner_count_reward,
                              remotereasoner_format_reward, remotereasoner_iou_reward, segzero_accuracy_reward,
                              think_answer_format_reward, trl_reward, trl_rewards)


def rr(answer, think="Two fields east of the road."):
    return f"<think>{think}</think>\n<answer>{answer}</answer>"


def geo(objects, think="The lake is north of the field."):
    return get_profile("georeasoner").render_answer(
        [ParsedObject(box=tuple(b), points=[tuple(p) for p in pts]) for b, pts in objects], think)


# --------------------------------------------------------------------------- RemoteReasoner

def test_count_score_by_hand():
    assert count_score(2, 3) == pytest.approx(math.exp(-1))  # exp(-2 * 1 / 2)
    assert count_score(0, 0) == 1.0
    assert count_score(0, 1) == 0.0
    assert count_score(2, 2) == 1.0
    assert count_score(4, 1) == pytest.approx(math.exp(-1.5))  # exp(-2 * 3 / 4)
    assert count_score(1, 0) == pytest.approx(math.exp(-2))


def test_remotereasoner_iou_is_hungarian_and_averaged_over_ground_truth():
    gt = [[0, 0, 10, 5], [20, 20, 30, 30]]
    # IoU 1 with the second box, 50/100 = 0.5 with the first: (1 + 0.5) / 2
    for answer in ("[[0,0,10,10],[20,20,30,30]]", "[[20,20,30,30],[0,0,10,10]]"):
        assert remotereasoner_iou_reward(rr(answer), gt_boxes=gt, profile="remotereasoner") == pytest.approx(0.75)
    # an extra box is not averaged in (J = 2); the count reward is what costs it: exp(-2 * 1 / 2)
    three = rr("[[0,0,10,10],[20,20,30,30],[50,50,60,60]]")
    assert remotereasoner_iou_reward(three, gt_boxes=gt, profile="remotereasoner") == pytest.approx(0.75)
    assert remotereasoner_count_reward(three, gt_boxes=gt, profile="remotereasoner") == pytest.approx(math.exp(-1))
    # one box for two targets: (1 + 0) / 2
    assert remotereasoner_iou_reward(rr("[[20,20,30,30]]"), gt_boxes=gt, profile="remotereasoner") == 0.5


def test_empty_target():
    assert remotereasoner_iou_reward(rr("[]"), gt_boxes=[], profile="remotereasoner") == 1.0
    assert remotereasoner_count_reward(rr("[]"), gt_boxes=[], profile="remotereasoner") == 1.0
    assert remotereasoner_iou_reward(rr("[[1,1,5,5]]"), gt_boxes=[], profile="remotereasoner") == 0.0
    assert remotereasoner_count_reward(rr("[[1,1,5,5]]"), gt_boxes=[], profile="remotereasoner") == 0.0
    # An unreadable answer is not an empty answer: it scores 0 even on an empty target.
    for broken in (rr("[[1,2,"), "no tags at all", None):
        assert remotereasoner_iou_reward(broken, gt_boxes=[], profile="remotereasoner") == 0.0
        assert remotereasoner_count_reward(broken, gt_boxes=[], profile="remotereasoner") == 0.0


def test_format_and_schema():
    good = rr("[[0,0,10,10]]")
    assert think_answer_format_reward(good) == 1.0
    assert remotereasoner_format_reward(good, profile="remotereasoner") == 1.0
    assert think_answer_format_reward("<answer>[[0,0,10,10]]</answer>") == 0.0  # no think
    assert think_answer_format_reward("<answer>[]</answer><think>x</think>") == 0.0  # wrong order
    assert think_answer_format_reward(good + "<answer>[]</answer>") == 0.0  # two answers
    assert think_answer_format_reward(good + " trailing words") == 0.0
    # readable but not in the schema: RemoteReasoner boxes have no points, GeoReasoner needs two
    assert answer_schema_reward(rr('[{"bbox_2d": [0,0,10,10], "positive_points": [[5,5],[6,6]]}]'),
                                profile="remotereasoner") == 0.0
    one_point = rr('[{"bbox_2d": [0,0,10,10], "positive_points": [[5,5]]}]')
    assert answer_schema_reward(one_point, profile="georeasoner") == 0.0
    two_points = rr('[{"bbox_2d": [0,0,10,10], "positive_points": [[5,5],[6,6]]}]')
    assert answer_schema_reward(two_points, profile="georeasoner") == 1.0
    assert answer_schema_reward(rr("[]"), profile="georeasoner") == 1.0
    # salvaged from a broken list: the parser reads it (partial) but it is not the schema
    assert answer_schema_reward(rr('[{"bbox_2d": [0,0,10,10], "positive_points": [[5,5],[6,6]]}, {"bbox'),
                                profile="georeasoner") == 0.0
    assert remotereasoner_format_reward("<think>x</think><answer>[[0,0,10</answer>", profile="remotereasoner") == 0.0


def test_ground_truth_rendered_by_the_profile_scores_full_marks():
    objects = [([10, 20, 110, 70], [[60, 45], [100, 40]]), ([200, 200, 240, 260], [[220, 230], [225, 250]])]
    completion = geo(objects)
    record = {"gt_boxes": [b for b, _ in objects], "gt_points": [p for _, p in objects], "profile": "georeasoner"}
    # the paper formats (strict RemoteReasoner box lists, GRASP's Fig. 3 dict) are not GeoReasoner's
    for name in ("think_answer_format", "answer_schema", "grasp_box_iou", "grasp_center_distance", "grasp_points",
                 "remotereasoner_iou", "remotereasoner_iou_max", "remotereasoner_count"):
        assert REWARDS[name](completion, **record) == pytest.approx(1.0), name
    assert segzero_accuracy_reward(completion, **record) == pytest.approx(3.0)
    assert reasoning_penalty(completion, **record) == 0.0


# --------------------------------------------------------------------------- GRASP

GT_BOX = [0, 0, 100, 50]  # centre (50, 25), width 100, height 50


def one(box, points=((50, 25), (80, 25))):
    return geo([(box, points)])


def test_grasp_box_iou_is_strictly_above_half():
    assert grasp_box_iou_reward(one([0, 0, 100, 25]), gt_boxes=[GT_BOX]) == 0.0  # IoU exactly 0.5
    assert grasp_box_iou_reward(one([0, 0, 100, 30]), gt_boxes=[GT_BOX]) == 1.0  # IoU 0.6
    # two targets, one found: 1 / 2
    assert grasp_box_iou_reward(one([0, 0, 100, 50]), gt_boxes=[GT_BOX, [200, 200, 220, 220]]) == 0.5


def test_grasp_center_distance_normalised_per_axis_by_the_gt_box():
    # GRASP Eq. 6-7. Centre moved 10 px in x: d = (10 / 100) / 2 = 0.05 -> 1 - 0.05 / 0.5 = 0.9
    assert grasp_center_distance_reward(one([10, 0, 110, 50]), gt_boxes=[GT_BOX]) == pytest.approx(0.9)
    # centre moved 10 px in y: d = (10 / 50) / 2 = 0.1 -> 0.8
    assert grasp_center_distance_reward(one([0, 10, 100, 60]), gt_boxes=[GT_BOX]) == pytest.approx(0.8)
    # both, 30 and 20 px: d = (0.3 + 0.4) / 2 = 0.35 -> 0.3
    assert grasp_center_distance_reward(one([30, 20, 130, 70]), gt_boxes=[GT_BOX]) == pytest.approx(0.3)
    assert grasp_center_distance_reward(one([0, 0, 100, 50]), gt_boxes=[GT_BOX]) == 1.0


def test_grasp_points():
    gt_points = [[[50, 25], [80, 25]]]
    # GRASP Eqs. 8-9, s_min 50, s_max 100: d1 = 10 / 50, d2 = 10 / 100, S = 0.15 < 0.5, both inside
    assert grasp_points_reward(one(GT_BOX, [[60, 25], [80, 35]]), gt_boxes=[GT_BOX], gt_points=gt_points) == 1.0
    # a point outside the GT box
    assert grasp_points_reward(one(GT_BOX, [[60, 25], [80, 55]]), gt_boxes=[GT_BOX], gt_points=gt_points) == 0.0
    # inside, but d1 = (50 + 25) / 50 = 1.5, d2 = (80 + 25) / 100 = 1.05 -> S = 1.275
    assert grasp_points_reward(one(GT_BOX, [[0, 50], [0, 0]]), gt_boxes=[GT_BOX], gt_points=gt_points) == 0.0
    # a one-point answer cannot match two ground-truth points
    single = rr('[{"bbox_2d": [0,0,100,50], "positive_points": [[50,25]]}]')
    assert grasp_points_reward(single, gt_boxes=[GT_BOX], gt_points=gt_points) == 0.0


def test_grasp_profile_answer_is_read_by_its_own_parser():
    completion = rr("{'bbox': [0, 0, 100, 50], 'points 1': [50, 25], 'points 2': [80, 25]}")
    kwargs = {"gt_boxes": [GT_BOX], "gt_points": [[[50, 25], [80, 25]]], "profile": "grasp"}
    assert grasp_box_iou_reward(completion, **kwargs) == 1.0
    assert grasp_points_reward(completion, **kwargs) == 1.0
    assert answer_schema_reward(completion, profile="grasp") == 1.0


# --------------------------------------------------------------------------- Seg-Zero

def test_segzero_accuracy_by_hand():
    gt = {"gt_boxes": [[100, 100, 200, 200]], "gt_points": [[[150, 150], [170, 170]]], "profile": "segzero"}
    # IoU high, mean L1 (2+1+3+1)/4 = 1.75 < 10, point 10 px away and inside its box: 3 / max(1, 1)
    close = rr('[{"bbox_2d": [102,101,203,199], "point_2d": [160,150]}]')
    assert segzero_accuracy_reward(close, **gt) == 3.0
    # the point 40 px away: 2
    far_point = rr('[{"bbox_2d": [102,101,203,199], "point_2d": [190,150]}]')
    assert segzero_accuracy_reward(far_point, **gt) == 2.0
    # an extra object halves it: 3 / max(2, 1)
    extra = rr('[{"bbox_2d": [102,101,203,199], "point_2d": [160,150]}, {"bbox_2d": [0,0,5,5], "point_2d": [1,1]}]')
    assert segzero_accuracy_reward(extra, **gt) == 1.5
    # box shifted 15 px: IoU 85*100/(2*10000-8500) = 0.739 > 0.5, L1 (15+0+15+0)/4 = 7.5 < 10;
    # the point (150,150) is 0 px from the GT point but outside the predicted box: 2
    shifted = rr('[{"bbox_2d": [115,100,215,200], "point_2d": [110,150]}]')
    assert segzero_accuracy_reward(shifted, **gt) == 2.0
    assert segzero_accuracy_reward(rr("[]"), gt_boxes=[], profile="segzero") == 3.0
    assert segzero_accuracy_reward(rr("[]"), **gt) == 0.0


# --------------------------------------------------------------------------- reasoning penalty

def test_reasoning_penalty():
    assert reasoning_penalty(rr("[]", think="The field is east. The lake is west.")) == 0.0
    assert reasoning_penalty(rr("[]", think="")) == -0.5
    assert reasoning_penalty(rr("[]", think="A lake. A lake.")) == 0.0  # one repeat is tolerated
    assert reasoning_penalty(rr("[]", think="A lake. A lake. A lake.")) == -0.5
    assert reasoning_penalty(rr("[]", think="A lake.\nA field.\nA lake.\nA FIELD.")) == -0.5
    assert reasoning_penalty(rr("[]", think="Width 3.5 m. Width 3.5 m.")) == 0.0  # decimals are not sentence ends
    assert reasoning_penalty("") == -0.5
    assert reasoning_penalty(None) == -0.5
    assert reasoning_penalty(rr("[]", think=""), penalty=0.1) == pytest.approx(-0.1)


# --------------------------------------------------------------------------- mask IoU through a segmenter

class BoxPainter:
    """Stands in for frozen SAM2: paints each prompt's box. Records what it was given."""

    def __init__(self):
        self.calls = []

    def __call__(self, image, prompts):
        self.calls.append((image, prompts))
        masks = []
        for prompt in prompts:
            mask = np.zeros(image.shape[:2], bool)
            x1, y1, x2, y2 = (int(round(v)) for v in prompt.box)
            mask[y1:y2, x1:x2] = True
            masks.append(mask)
        return masks


def test_mask_iou_reward_maps_the_frame_to_image_pixels():
    image = np.zeros((100, 120, 3), np.uint8)
    target = np.zeros((100, 120), bool)
    target[20:60, 10:50] = True  # box [10, 20, 50, 60] in image pixels
    frame_h, frame_w = smart_resize(100, 120, min_pixels=256 * 28 * 28, max_pixels=1024 * 28 * 28)
    sx, sy = frame_w / 120, frame_h / 100
    box = [10 * sx, 20 * sy, 50 * sx, 60 * sy]
    painter = BoxPainter()
    reward = make_mask_iou_reward(painter)
    assert reward.__name__ == "mask_iou"
    completion = geo([(box, [[30 * sx, 40 * sy], [20 * sx, 30 * sy]])])
    assert reward(completion, mask=target, image=image, profile="georeasoner") == pytest.approx(1.0, abs=0.03)
    (_, prompts), = painter.calls
    assert isinstance(prompts[0], SegmentPrompt)
    assert prompts[0].box == pytest.approx((10, 20, 50, 60), abs=0.02)
    assert prompts[0].points[0] == pytest.approx((30, 40), abs=0.02)
    # the left half of the target: IoU 1/2
    half = geo([([10 * sx, 20 * sy, 30 * sx, 60 * sy], [[20 * sx, 40 * sy], [15 * sx, 30 * sy]])])
    assert reward(half, mask=target, image=image) == pytest.approx(0.5, abs=0.03)


def test_mask_iou_reward_remotereasoner_prompts_with_the_box_centre(tmp_path):
    from PIL import Image

    image_path, mask_path = tmp_path / "img.png", tmp_path / "mask.png"
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(image_path)
    target = np.zeros((50, 50), np.uint8)
    target[10:20, 10:30] = 255
    Image.fromarray(target).save(mask_path)
    painter = BoxPainter()
    reward = make_mask_iou_reward(painter)
    # frame given explicitly: 100 x 100 for a 50 x 50 image
    score = reward(rr("[[20,20,60,40]]"), mask=str(mask_path), image=str(image_path), profile="remotereasoner",
                   frame_width=100, frame_height=100)
    assert score == pytest.approx(1.0)
    image, prompts = painter.calls[0]
    assert image.shape == (50, 50, 3)
    assert prompts == [SegmentPrompt((10.0, 10.0, 30.0, 20.0), [(20.0, 15.0)])]


def test_mask_iou_reward_empty_and_garbage_never_call_the_segmenter():
    painter = BoxPainter()
    reward = make_mask_iou_reward(painter)
    empty = np.zeros((30, 30), bool)
    full = np.ones((30, 30), bool)
    image = np.zeros((30, 30, 3), np.uint8)
    assert reward(rr("[]"), mask=empty, image=image) == 1.0
    assert reward(rr("[]"), mask=full, image=image) == 0.0
    for garbage in (None, 12, rr("[[1,2,"), "x" * 200_000):
        assert reward(garbage, mask=empty, image=image) == 0.0
    # an object entirely outside the image: nothing to segment, and something was claimed
    assert reward(geo([([5000, 5000, 6000, 6000], [[5500, 5500], [5600, 5600]])]), mask=empty, image=image) == 0.0
    assert painter.calls == []


# --------------------------------------------------------------------------- garbage

GARBAGE = [None, 0, 3.5, True, b"<think>x</think><answer>[]</answer>", {"answer": 1}, [], [None, 5],
           [{"role": "user", "content": "<think>x</think><answer>[[0,0,5,5]]</answer>"}],
           "x" * 1_000_000, "<answer>" + "[" * 5000 + "</answer>", "<answer>[[1,2,3</answer>",
           '<think>t</think><answer>[{"bbox_2d": [1, 2, 3, "a"]}]</answer>',
           "<think>t</think><answer>[[nan, 1, 2, 3]]</answer>", "<think>t</think><answer>{'bbox': None}</answer>",
           "<think>" * 1000, "\x00" * 1000, "<answer>" + "[0,0,1,1]," * 4000 + "</answer>"]
GT = {"gt_boxes": [[0, 0, 10, 10]], "gt_points": [[[5, 5], [6, 6]]], "profile": "georeasoner"}
# These have the think/answer layout right (GRASP's format reward), only their answer is broken.
LAYOUT_RIGHT = {12, 13, 14}


@pytest.mark.parametrize("index", range(len(GARBAGE)))
def test_garbage_never_raises_and_scores_nothing(index):
    completion = GARBAGE[index]
    for name, reward in REWARDS.items():
        value = reward(completion, **GT)
        assert isinstance(value, float) and math.isfinite(value), name
        if name == "reasoning_penalty":
            assert value <= 0.0
        elif name == "think_answer_format":
            assert value == float(index in LAYOUT_RIGHT)
        elif index != len(GARBAGE) - 1:  # the last one holds real boxes the parser can salvage
            assert value == 0.0, name


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.text(max_size=300),
                 st.builds(lambda a: f"<think>{a}</think><answer>{a}</answer>", st.text(max_size=100)),
                 st.lists(st.dictionaries(st.sampled_from(["role", "content"]),
                                          st.one_of(st.text(max_size=50), st.integers(), st.none())), max_size=3)))
def test_random_text_never_raises(completion):
    for reward in REWARDS.values():
        value = reward(completion, **GT)
        assert math.isfinite(value) and (value <= 0 or reward is not reasoning_penalty)


def test_completion_text_forms():
    assert completion_text("abc") == "abc"
    assert completion_text([{"role": "assistant", "content": "abc"}]) == "abc"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"},
                                                              {"type": "text", "text": "b"}]}]) == "ab"
    assert completion_text([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]) == "a"
    assert completion_text(None) == ""


def test_bad_ground_truth_and_profile_are_reported_not_scored():
    with pytest.raises(ValueError, match="gt_boxes|box"):
        remotereasoner_iou_reward(rr("[]"), gt_boxes=[[1, 2, 3]])
    with pytest.raises(ValueError, match="unknown profile"):
        remotereasoner_iou_reward(rr("[]"), gt_boxes=[], profile="nope")
    # JSON strings, as some dataset tools store nested lists, are read
    assert remotereasoner_iou_reward(rr("[[0,0,10,10]]"), gt_boxes="[[0,0,10,10]]", profile="remotereasoner") == 1.0


# --------------------------------------------------------------------------- TRL wrapper

def test_trl_wrapper_with_conversational_completions():
    completions = [
        [{"role": "assistant", "content": rr("[[0,0,10,10]]")}],
        [{"role": "assistant", "content": [{"type": "text", "text": rr("[[0,0,10,5]]")}]}],
        [{"role": "assistant", "content": "garbage"}],
        [{"role": "assistant", "content": rr("[]")}],
    ]
    columns = {
        "gt_boxes": [[[0, 0, 10, 10]], [[0, 0, 10, 10]], [[0, 0, 10, 10]], []],
        "profile": ["remotereasoner"] * 4,
        "prompts": [[{"role": "user", "content": "q"}]] * 4,
        "trainer_state": object(),
    }
    iou = trl_reward("remotereasoner_iou")
    assert iou.__name__ == "remotereasoner_iou"
    assert iou(completions, **columns) == pytest.approx([1.0, 0.5, 0.0, 1.0])
    fmt, count = trl_rewards(["remotereasoner_format", "remotereasoner_count"])
    assert fmt(completions, **columns) == [1.0, 1.0, 0.0, 1.0]
    assert count(completions, **columns) == [1.0, 1.0, 0.0, 1.0]
    mask_reward = trl_reward(make_mask_iou_reward(BoxPainter()))
    assert mask_reward.__name__ == "mask_iou"
    with pytest.raises(ValueError, match="unknown reward"):
        trl_reward("nope")


def test_every_reward_set_names_registered_rewards():
    for names in REWARD_SETS.values():
        assert all(n in REWARDS for n in names)
    assert set(R.REWARDS) >= {"remotereasoner_iou", "grasp_points", "segzero_accuracy", "reasoning_penalty"}


@pytest.mark.parametrize("profile, reward_set, full", [("grasp", "grasp", 5.0), ("remotereasoner", "remotereasoner", 3.0)])
def test_paper_profiles_own_ground_truth_scores_full_marks_also_when_empty(profile, reward_set, full):
    """What the trainer renders as the solution (profile.render_answer) earns every reward of the paper's set."""
    render = get_profile(profile).render_answer
    box, points = (10, 20, 110, 70), [(60, 45), (100, 40)]
    cases = {"target": ([ParsedObject(box=box, points=points)], {"gt_boxes": [list(box)], "gt_points": [points]}),
             "empty": ([], {"gt_boxes": [], "gt_points": []})}
    for name, (objects, truth) in cases.items():
        completion = render(objects, "reasoning")
        scores = [REWARDS[r](completion, profile=profile, **truth) for r in REWARD_SETS[reward_set]]
        assert sum(scores) == pytest.approx(full), (name, completion, scores)
    assert render([], "x").endswith("<answer>{}</answer>" if profile == "grasp" else "<answer>[]</answer>")
