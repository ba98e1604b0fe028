"""The papers' rewards on hand-worked cases, scored through `python -m training rewards`.

Every expected number below is worked out from the equations (RemoteReasoner Eqs. 4-6 and Section
3.3; GRASP Section 3.3, Eqs. 5-9, Fig. 3), not from the code. The images are 224 x 224 pixels: a
multiple of 28 inside both profiles' pixel bounds, so the model frame is the image itself and the
ground truth reaches the rewards unchanged (one case checks a frame that is not the identity).
"""
import json
import math
import subprocess
import sys

import pytest

from training import cli
from training.rewards import REWARD_SETS

ROOT_SIZE = "224,224"
E1 = math.exp(-1)


def rr(answer, think="Two fields east of the road."):
    return f"<think>{think}</think><answer>{answer}</answer>"


def grasp(answer, think="The lake is north of the field."):
    return f"<think>{think}</think>\n<answer>{answer}</answer>"


FIG3 = "{{'bbox': {b}, 'points 1': {p1}, 'points 2': {p2}}}"
SQUARE = [0, 0, 100, 100]
TOUCHING = [[0, 0, 10, 10], [10, 0, 20, 10]]

# (case id, profile, rewards, completion, truth, expected {reward: value})
RR_SET = ",".join(REWARD_SETS["remotereasoner"])
G_SET = ",".join(REWARD_SETS["grasp"])
CASES = [
    # ---------------------------------------------------------------- RemoteReasoner
    # Eq. 4, text reading (Hungarian): the one box covering both touching boxes matches one of them
    # (IoU 100 / 200 = 0.5): (0.5 + 0) / 2.
    ("rr_hungarian_touching", "remotereasoner", "remotereasoner_iou", rr("[[0,0,20,10]]"),
     {"boxes": TOUCHING}, {"remotereasoner_iou": 0.25}),
    # Eq. 4, formula reading (max over k): the same box is each target's best: (0.5 + 0.5) / 2.
    ("rr_max_over_k_touching", "remotereasoner", "remotereasoner_iou_max", rr("[[0,0,20,10]]"),
     {"boxes": TOUCHING}, {"remotereasoner_iou_max": 0.5}),
    # Eq. 5 with J = 2, K = 1: exp(-2 * 1 / 2); Eq. 6 sums the three.
    ("rr_set_touching", "remotereasoner", RR_SET, rr("[[0,0,20,10]]"), {"boxes": TOUCHING},
     {"remotereasoner_iou": 0.25, "remotereasoner_count": E1, "remotereasoner_format": 1.0}),
    # J = K = 0: every term 1 (Eq. 5 first case; no target, nothing claimed).
    ("rr_empty_target_empty_answer", "remotereasoner", RR_SET, rr("[]"), {"boxes": []},
     {"remotereasoner_iou": 1.0, "remotereasoner_count": 1.0, "remotereasoner_format": 1.0}),
    # J = 0 < K: count 0 (Eq. 5 second case), nothing to match: IoU 0; the format is fine.
    ("rr_empty_target_one_box", "remotereasoner", RR_SET, rr("[[1,1,5,5]]"), {"boxes": []},
     {"remotereasoner_iou": 0.0, "remotereasoner_count": 0.0, "remotereasoner_format": 1.0}),
    # J = 4, K = 1: exp(-2 * 3 / 4) = exp(-1.5)
    ("rr_count_four_vs_one", "remotereasoner", "remotereasoner_count", rr("[[0,0,10,10]]"),
     {"boxes": [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]]},
     {"remotereasoner_count": math.exp(-1.5)}),
    # half a box: IoU 50 / 100
    ("rr_half_box", "remotereasoner", "remotereasoner_iou", rr("[[0,0,10,5]]"), {"boxes": [[0, 0, 10, 10]]},
     {"remotereasoner_iou": 0.5}),
    # an extra box is not averaged in (J = 2): both targets found exactly -> 1; the count pays for it
    ("rr_extra_box", "remotereasoner", "remotereasoner_iou,remotereasoner_count",
     rr("[[0,0,10,10],[10,0,20,10],[50,50,60,60]]"), {"boxes": TOUCHING},
     {"remotereasoner_iou": 1.0, "remotereasoner_count": E1}),
    # strict format (Section 3.3): prose, code fence, dicts, tuples, "none", quoted numbers -> 0
    ("rr_format_prose", "remotereasoner", "remotereasoner_format", rr("The lake is [[0,0,10,10]]"),
     {"boxes": [[0, 0, 10, 10]]}, {"remotereasoner_format": 0.0}),
    ("rr_format_fence", "remotereasoner", "remotereasoner_format", rr("```json\n[[0,0,10,10]]\n```"),
     {"boxes": [[0, 0, 10, 10]]}, {"remotereasoner_format": 0.0}),
    ("rr_format_dicts", "remotereasoner", "remotereasoner_format", rr('[{"bbox_2d": [0,0,10,10]}]'),
     {"boxes": [[0, 0, 10, 10]]}, {"remotereasoner_format": 0.0}),
    ("rr_format_tuples", "remotereasoner", "remotereasoner_format", rr("[(0,0,10,10)]"),
     {"boxes": [[0, 0, 10, 10]]}, {"remotereasoner_format": 0.0}),
    ("rr_format_none", "remotereasoner", "remotereasoner_format", rr("none"), {"boxes": []},
     {"remotereasoner_format": 0.0}),
    ("rr_format_strings", "remotereasoner", "remotereasoner_format", rr('[["0","0","10","10"]]'),
     {"boxes": [[0, 0, 10, 10]]}, {"remotereasoner_format": 0.0}),
    # point 4: a right box outside <answer>...</answer> earns no accuracy
    ("rr_no_answer_tags", "remotereasoner", RR_SET, "<think>x</think> [[0,0,10,10]]", {"boxes": [[0, 0, 10, 10]]},
     {"remotereasoner_iou": 0.0, "remotereasoner_count": 0.0, "remotereasoner_format": 0.0}),
    # ---------------------------------------------------------------- GRASP
    # Eq. 6-7, the example: 20 px in x on a 100 px box: d = (0.2 + 0) / 2 = 0.1 -> 1 - 0.2 = 0.8
    ("g_centre_20px", "grasp", "grasp_center_distance",
     grasp(FIG3.format(b=[20, 0, 120, 100], p1=[70, 50], p2=[90, 50])), {"boxes": [SQUARE]},
     {"grasp_center_distance": 0.8}),
    # both axes on a 100 x 50 box: (25 / 100 + 12.5 / 50) / 2 = 0.25 -> 0.5
    ("g_centre_both_axes", "grasp", "grasp_center_distance",
     grasp(FIG3.format(b=[25, 12.5, 125, 62.5], p1=[70, 30], p2=[90, 40])), {"boxes": [[0, 0, 100, 50]]},
     {"grasp_center_distance": 0.5}),
    # 100 px off on a 100 px box: d = 0.5 -> 0 (the reward's floor)
    ("g_centre_too_far", "grasp", "grasp_center_distance",
     grasp(FIG3.format(b=[100, 0, 200, 100], p1=[150, 50], p2=[180, 50])), {"boxes": [SQUARE]},
     {"grasp_center_distance": 0.0}),
    # Eq. 8-9, the example: p1 off (40, 40), p2 off (30, 30) on a 100 x 100 box:
    # d1 = 80 / 100, d2 = 60 / 100, S = 0.7 -> 0 although both points are inside
    ("g_points_s07", "grasp", "grasp_points", grasp(FIG3.format(b=SQUARE, p1=[90, 90], p2=[50, 50])),
     {"boxes": [SQUARE], "points": [[[50, 50], [20, 20]]]}, {"grasp_points": 0.0}),
    # d1 = 20 / 100, d2 = 40 / 100, S = 0.3 -> 1
    ("g_points_s03", "grasp", "grasp_points", grasp(FIG3.format(b=SQUARE, p1=[60, 60], p2=[40, 40])),
     {"boxes": [SQUARE], "points": [[[50, 50], [20, 20]]]}, {"grasp_points": 1.0}),
    # a 200 x 50 box: s_min 50 for p1, s_max 200 for p2: d1 = 25 / 50, d2 = 100 / 200, S = 0.5 -> 0 (< 0.5 needed)
    ("g_points_threshold", "grasp", "grasp_points", grasp(FIG3.format(b=[0, 0, 200, 50], p1=[120, 30], p2=[90, 0])),
     {"boxes": [[0, 0, 200, 50]], "points": [[[100, 25], [150, 40]]]}, {"grasp_points": 0.0}),
    # S small but point 2 outside the GT box -> 0
    ("g_points_outside", "grasp", "grasp_points", grasp(FIG3.format(b=SQUARE, p1=[50, 50], p2=[101, 20])),
     {"boxes": [SQUARE], "points": [[[50, 50], [95, 20]]]}, {"grasp_points": 0.0}),
    # Eq. 5 with "greater than 0.5": IoU exactly 0.5 -> 0, 0.6 -> 1
    ("g_iou_half", "grasp", "grasp_box_iou", grasp(FIG3.format(b=[0, 0, 100, 50], p1=[50, 25], p2=[90, 25])),
     {"boxes": [SQUARE]}, {"grasp_box_iou": 0.0}),
    ("g_iou_06", "grasp", "grasp_box_iou", grasp(FIG3.format(b=[0, 0, 100, 60], p1=[50, 25], p2=[90, 25])),
     {"boxes": [SQUARE]}, {"grasp_box_iou": 1.0}),
    # the whole set on an exact answer, Fig. 3's own quoting: 5
    ("g_exact", "grasp", G_SET, grasp(FIG3.format(b=SQUARE, p1=[50, 50], p2=[95, 50])),
     {"boxes": [SQUARE], "points": [[[50, 50], [95, 50]]]},
     {"think_answer_format": 1.0, "grasp_prompt_format": 1.0, "grasp_box_iou": 1.0, "grasp_center_distance": 1.0,
      "grasp_points": 1.0}),
    # prompt format (2): JSON quoting is the same schema
    ("g_format_json", "grasp", "grasp_prompt_format",
     grasp('{"bbox": [0, 0, 100, 100], "points 1": [50, 50], "points 2": [95, 50]}'), {"boxes": [SQUARE]},
     {"grasp_prompt_format": 1.0}),
    # ... but an extra key, another profile's keys, an alias, two objects or "none" are not
    ("g_format_extra_key", "grasp", "grasp_prompt_format",
     grasp("{'bbox': [0, 0, 100, 100], 'points 1': [50, 50], 'points 2': [95, 50], 'label': 'lake'}"),
     {"boxes": [SQUARE]}, {"grasp_prompt_format": 0.0}),
    ("g_format_other_profile", "grasp", "grasp_prompt_format",
     grasp('[{"bbox_2d": [0, 0, 100, 100], "positive_points": [[50, 50], [95, 50]]}]'), {"boxes": [SQUARE]},
     {"grasp_prompt_format": 0.0}),
    ("g_format_alias", "grasp", "grasp_prompt_format",
     grasp("{'bbox': [0, 0, 100, 100], 'point 1': [50, 50], 'point 2': [95, 50]}"), {"boxes": [SQUARE]},
     {"grasp_prompt_format": 0.0}),
    ("g_format_two_objects", "grasp", "grasp_prompt_format",
     grasp("[{'bbox': [0, 0, 100, 100], 'points 1': [50, 50], 'points 2': [95, 50]}, "
           "{'bbox': [0, 0, 10, 10], 'points 1': [5, 5], 'points 2': [9, 5]}]"), {"boxes": [SQUARE]},
     {"grasp_prompt_format": 0.0}),
    ("g_format_none", "grasp", "grasp_prompt_format", grasp("none"), {"boxes": []}, {"grasp_prompt_format": 0.0}),
    # point 5: "{}" on an empty target is full marks on all five rewards
    ("g_empty_target", "grasp", G_SET, grasp("{}"), {"boxes": []},
     {"think_answer_format": 1.0, "grasp_prompt_format": 1.0, "grasp_box_iou": 1.0, "grasp_center_distance": 1.0,
      "grasp_points": 1.0}),
    # "{}" where there is a target: well formed, but nothing found
    ("g_empty_answer_on_target", "grasp", G_SET, grasp("{}"), {"boxes": [SQUARE], "points": [[[50, 50], [95, 50]]]},
     {"think_answer_format": 1.0, "grasp_prompt_format": 1.0, "grasp_box_iou": 0.0, "grasp_center_distance": 0.0,
      "grasp_points": 0.0}),
    # point 4: the right answer without <answer> tags earns nothing
    ("g_no_answer_tags", "grasp", G_SET,
     "<think>x</think> " + FIG3.format(b=SQUARE, p1=[50, 50], p2=[95, 50]),
     {"boxes": [SQUARE], "points": [[[50, 50], [95, 50]]]},
     {"think_answer_format": 0.0, "grasp_prompt_format": 0.0, "grasp_box_iou": 0.0, "grasp_center_distance": 0.0,
      "grasp_points": 0.0}),
]


def score(tmp_path, capsys, profile, rewards, completion, truth, size=ROOT_SIZE):
    path = tmp_path / "completion.txt"
    path.write_text(completion, encoding="utf-8")
    code = cli.main(["rewards", "--profile", profile, "--rewards", rewards, "--completion", str(path),
                     "--truth", json.dumps(truth), "--image-size", size, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_reward_by_hand_through_the_command(case, tmp_path, capsys):
    _, profile, rewards, completion, truth, expected = case
    result = score(tmp_path, capsys, profile, rewards, completion, truth)
    assert result["rewards"] == pytest.approx(expected)
    assert result["total"] == pytest.approx(sum(expected.values()))


def test_at_least_25_hand_worked_cases_across_both_papers():
    assert len(CASES) >= 25
    assert {c[1] for c in CASES} == {"remotereasoner", "grasp"}


def test_ground_truth_is_mapped_to_the_model_frame_as_in_training(tmp_path, capsys):
    # 2000 x 1000 px under RemoteReasoner's 802,816-pixel bound: beta = sqrt(2e6 / 802816) = 1.5784;
    # frame 1260 x 616 (45 and 22 patches of 28). The target [0, 0, 1000, 500] is [0, 0, 630, 308] there.
    result = score(tmp_path, capsys, "remotereasoner", "remotereasoner_iou", rr("[[0,0,630,308]]"),
                   {"boxes": [[0, 0, 1000, 500]]}, size="2000,1000")
    assert result["rewards"]["remotereasoner_iou"] == pytest.approx(1.0, abs=1e-3)
    # the same numbers read as image pixels would be far off
    result = score(tmp_path, capsys, "remotereasoner", "remotereasoner_iou", rr("[[0,0,1000,500]]"),
                   {"boxes": [[0, 0, 1000, 500]]}, size="2000,1000")
    assert result["rewards"]["remotereasoner_iou"] == pytest.approx(630 * 308 / (1000 * 500), abs=1e-3)


def test_command_line_with_a_set_and_stdin(tmp_path):
    # `python -m training rewards`, as a researcher runs it: the RemoteReasoner set on the touching boxes
    done = subprocess.run(
        [sys.executable, "-m", "training", "rewards", "--profile", "remotereasoner", "--set", "remotereasoner",
         "--completion", "-", "--truth", json.dumps({"boxes": TOUCHING}), "--image-size", ROOT_SIZE, "--json"],
        input=rr("[[0,0,20,10]]"), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["rewards"] == pytest.approx({"remotereasoner_iou": 0.25, "remotereasoner_count": E1,
                                               "remotereasoner_format": 1.0})
    assert result["total"] == pytest.approx(1.25 + E1)


@pytest.mark.parametrize("args, message", [
    (["--rewards", "nope"], "--rewards takes"),
    (["--rewards", "mask_iou"], "needs a segmenter"),
    (["--set", "remotereasoner", "--image-size", "abc"], "--image-size takes W,H"),
    (["--set", "remotereasoner", "--truth", '{"boxes": [[1, 2, 3]]}'], "[x1, y1, x2, y2]"),
    (["--set", "remotereasoner", "--truth", "missing.json"], "neither JSON"),
    (["--set", "remotereasoner", "--truth", '{"boxes": [[0, 0, 1, 1]], "points": [[[1, 1]], []]}'],
     "one list of [x, y] points per box"),
])
def test_bad_inputs_say_what_to_fix(args, message, tmp_path, capsys):
    path = tmp_path / "c.txt"
    path.write_text(rr("[]"), encoding="utf-8")
    base = {"--truth": '{"boxes": []}', "--image-size": ROOT_SIZE}
    for key, value in zip(args[::2], args[1::2]):
        base[key] = value
    argv = ["rewards", "--profile", "remotereasoner", "--completion", str(path)]
    for key, value in base.items():
        argv += [key, value]
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip()  # one line (after the blank line that clears a progress bar)
    assert err.startswith("training: error:") and message in err and err.count("\n") == 0
