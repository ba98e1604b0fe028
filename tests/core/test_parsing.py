"""The tolerant parser: what models really write, and what hostile output looks like."""
import pytest
from hypothesis import given, settings, strategies as st

from georeasoner_plugin.core.parsing import MAX_OBJECTS, MAX_OUTPUT_CHARS, parse_model_output
from georeasoner_plugin.core.protocol import (PARSE_EMPTY, PARSE_INVALID, PARSE_NO_ANSWER, PARSE_OK,
                                              PARSE_PARTIAL)


def boxes(parsed):
    return [o.box for o in parsed.objects]


def test_well_formed_remotereasoner_answer():
    p = parse_model_output("<think>Two lakes east of the road.</think>\n<answer>[[10,20,110,220],[5,6,50,60]]</answer>")
    assert p.status == PARSE_OK and not p.problems
    assert p.reasoning == "Two lakes east of the road."
    assert boxes(p) == [(10, 20, 110, 220), (5, 6, 50, 60)]


def test_segzero_objects_with_point():
    p = parse_model_output('<think>x</think><answer>[{"bbox_2d": [10,100,200,210], "point_2d": [30,110]}]</answer>')
    assert p.status == PARSE_OK
    assert p.objects[0].box == (10, 100, 200, 210) and p.objects[0].points == [(30, 110)]


def test_think2seg_fenced_json_with_two_points():
    raw = ('<think>t</think> \n<answer>```json[{"bbox_2d": [310,360,567,586], '
           '"positive_points": [[434, 474], [450, 460]]}]```</answer>')
    p = parse_model_output(raw)
    assert p.status == PARSE_OK
    assert p.objects[0].points == [(434, 474), (450, 460)]


def test_grasp_single_quoted_dict_with_numbered_points():
    p = parse_model_output("<think>t</think><answer>{'bbox': [1, 2, 30, 40], 'points 1': [5, 6], "
                           "'points 2': [7, 8]}</answer>")
    assert p.status == PARSE_OK
    assert p.objects[0].box == (1, 2, 30, 40) and p.objects[0].points == [(5, 6), (7, 8)]
    assert any("strict JSON" in m for m in p.problems)


def test_qwen_grounding_without_think():
    raw = '```json\n[\n  {"bbox_2d": [12, 30, 200, 180], "label": "lake"}\n]\n```'
    p = parse_model_output(raw, expects_think=False)
    assert p.status == PARSE_OK and not p.problems
    assert p.objects[0].label == "lake"


def test_explicit_empty_answer():
    p = parse_model_output("<think>nothing like that here</think><answer>[]</answer>")
    assert p.status == PARSE_EMPTY and p.objects == []


def test_bare_flat_box_is_one_object():
    p = parse_model_output("<think>x</think><answer>[1, 2, 3, 4]</answer>")
    assert p.status == PARSE_OK and boxes(p) == [(1, 2, 3, 4)]


def test_trailing_commas_are_repaired():
    p = parse_model_output('<think>x</think><answer>[{"bbox_2d": [1,2,3,4],},]</answer>')
    assert p.status == PARSE_OK and boxes(p) == [(1, 2, 3, 4)]


def test_swapped_corners_reordered_with_note():
    p = parse_model_output("<think>x</think><answer>[[30,40,10,20]]</answer>")
    assert boxes(p) == [(10, 20, 30, 40)]
    assert any("swapped" in m for m in p.problems)


def test_answer_cut_off_by_token_limit_keeps_complete_objects():
    raw = ('<think>x</think><answer>[{"bbox_2d": [1,2,3,4], "point_2d": [2,3]}, '
           '{"bbox_2d": [5,6,7,8], "point_2d": [6,7]}, {"bbox_2d": [9,10')
    p = parse_model_output(raw)
    assert p.status == PARSE_PARTIAL
    assert boxes(p) == [(1, 2, 3, 4), (5, 6, 7, 8)]


# Malformed and hostile outputs: each gives a status and a message, never an exception.
HOSTILE = [
    ("", PARSE_NO_ANSWER),
    ("I cannot help with that.", PARSE_NO_ANSWER),
    ("<think>only thinking, never answering", PARSE_NO_ANSWER),
    ("<think>x</think><answer></answer>", PARSE_NO_ANSWER),
    ("<think>x</think><answer>the lake in the north</answer>", PARSE_INVALID),
    ("<think>x</think><answer>[[1,2,3]]</answer>", PARSE_INVALID),
    ("<think>x</think><answer>[[\"a\",\"b\",\"c\",\"d\"]]</answer>", PARSE_INVALID),
    ("<think>x</think><answer>[[NaN, 1, 2, 3]]</answer>", PARSE_INVALID),
    ("<think>x</think><answer>[[1e400, 1, 2, 3]]</answer>", PARSE_INVALID),
    ("<think>x</think><answer>[[true, false, true, false]]</answer>", PARSE_INVALID),
    ("<think>x</think><answer>[[1,2,3,4], [1,2]]</answer>", PARSE_OK),
    ("<think>x</think><answer>[[1,2,3,4], \"oops\"]</answer>", PARSE_PARTIAL),
    ("<think>x</think><answer>" + "[" * 5000 + "]" * 5000 + "</answer>", PARSE_INVALID),
    ("<think>x</think><answer>{\"bbox_2d\": null}</answer>", PARSE_INVALID),
    ("<think>x</think><answer>{\"bbox_2d\": [1,2,3,4], \"point_2d\": \"here\"}</answer>", PARSE_OK),
    ("<think>x</think><answer>__import__('os').system('echo pwned')</answer>", PARSE_INVALID),
    ("<think>x</think><answer>[[1,2,3,4]]" + "A" * (MAX_OUTPUT_CHARS + 10), PARSE_OK),
    ("<think>x</think><answer>42</answer>", PARSE_INVALID),
    ("<think>x</think><answer>[[1, 2, 3, 4]]\x00\x00</answer>", PARSE_OK),
    ("<answer>[[1,2,3,4]]</answer><answer>[[5,6,7,8]]</answer>", PARSE_OK),
    ("<think>x</think><answer>[{\"bbox_2d\": [1,2,3,4]}" + ", {\"bbox_2d\": [1,2,3,4]}" * 300 + "]</answer>",
     PARSE_PARTIAL),
    ("<think>x</think><answer>[[\"12\", \"20\", \"40\", \"60\"]]</answer>", PARSE_OK),
    ("<think>x</think><answer>None</answer>", PARSE_EMPTY),
    ("<think>x</think><answer>[[-5, -5, -1, -1]]</answer>", PARSE_OK),  # off-image: frames drop it later
]


@pytest.mark.parametrize("raw,status", HOSTILE, ids=[f"hostile{i}" for i in range(len(HOSTILE))])
def test_hostile_outputs_never_raise_and_explain(raw, status):
    p = parse_model_output(raw)
    assert p.status == status, (p.status, p.problems)
    if status in (PARSE_INVALID, PARSE_NO_ANSWER, PARSE_PARTIAL):
        assert p.problems, "a failed or partial parse must say why"
    assert len(p.objects) <= MAX_OBJECTS


def test_code_in_answer_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    parse_model_output(f"<answer>__import__('pathlib').Path('{marker}').touch()</answer>")
    assert not marker.exists()


def test_non_text_output():
    p = parse_model_output(None)
    assert p.status == PARSE_INVALID and "not text" in p.problems[0]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>/[]{}(),.:'\"0123456789 -thinkanswer\n`json")), max_size=200))
def test_fuzzed_output_never_raises(raw):
    p = parse_model_output(raw)
    assert p.status in (PARSE_OK, PARSE_EMPTY, PARSE_PARTIAL, PARSE_NO_ANSWER, PARSE_INVALID)
    for obj in p.objects:
        if obj.box is not None:
            assert obj.box[0] <= obj.box[2] and obj.box[1] <= obj.box[3]


@pytest.mark.parametrize("raw", ["<think>" * 10000, "<answer>" * 10000, "<answer>" * 5000 + "</answer>" + "<answer>" * 5000,
                                 "<think>" * 5000 + "</think>" + "<think>" * 5000, "[" * 50000, "{'a': " * 20000])
def test_degenerate_output_is_refused_cleanly(raw):
    # Its speed (it was quadratic once) is measured by `make bench`, not asserted here.
    p = parse_model_output(raw)
    assert p.status in (PARSE_NO_ANSWER, PARSE_INVALID) and p.problems and p.objects == []
