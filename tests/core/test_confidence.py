"""box_score: where each parsed box was written in the raw output, and its tokens' geometric mean.

Hand-worked strings as each profile's model writes them, read by the real parser (profiles'
parse()); the spans are checked against the characters counted by hand (str.index on the literal
the test wrote), never against the function's own output.
"""
import math

import pytest

from georeasoner_plugin.core.confidence import (ScoredText, TokenLogprob, annotate_box_scores, box_scores,
                                                box_spans, span_score, token_logprobs_of)
from georeasoner_plugin.core.fields import COMMON_FIELDS, feature_attributes
from georeasoner_plugin.core.frames import map_objects_to_image
from georeasoner_plugin.core.parsing import parse_model_output
from georeasoner_plugin.core.profiles import get_profile
from georeasoner_plugin.core.protocol import PARSE_OK, PARSE_PARTIAL, Answer, AnswerObject


def span_of(text: str, written: str, start: int = 0):
    """The characters of `written` (first digit to last digit) in `text`, counted by str.index."""
    at = text.index(written, start)
    return (at, at + len(written))


def test_two_boxes_of_the_remotereasoner_list_and_the_numbers_in_the_reasoning_are_skipped():
    text = ("<think>The lake at [10,20,110,220] is big.</think>\n"
            "<answer>[[10,20,110,220],[300,40,380,90]]</answer>")
    parsed = get_profile("remotereasoner").parse(text)
    assert parsed.status == PARSE_OK and len(parsed.objects) == 2
    answer_at = text.index("<answer>")
    assert box_spans(text, parsed.objects) == [span_of(text, "10,20,110,220", answer_at),
                                               span_of(text, "300,40,380,90")]


def test_a_window_never_runs_from_one_item_into_the_next():
    # The dropped three-number item's "20,40,30" and the box's first "20" read as (20, 20, 30, 40) once
    # corners are ordered: the box's own values, but across "],[" - not where the box was written.
    text = "<think>t</think><answer>[[20,40,30],[20,20,30,40]]</answer>"
    parsed = parse_model_output(text)
    assert [o.box for o in parsed.objects] == [(20, 20, 30, 40)]
    assert box_spans(text, parsed.objects) == [span_of(text, "20,20,30,40")]


def test_grasp_python_dict_with_numbered_points():
    text = "<think>one field</think><answer>{'bbox': [12, 7, 230, 198], 'points 1': [60, 120], 'points 2': [70, 3]}</answer>"
    parsed = get_profile("grasp").parse(text)
    assert parsed.objects[0].box == (12, 7, 230, 198)
    assert box_spans(text, parsed.objects) == [span_of(text, "12, 7, 230, 198")]


def test_qwen3_fenced_multiline_json_with_labels():
    prof = get_profile("qwen3")
    text = ('Here you go:\n```json\n[\n  {"bbox_2d": [\n      101,\n      20,\n      350,\n      420\n    ],'
            ' "point_2d": [200, 300], "label": "roof"},\n  {"bbox_2d": [500, 510, 990, 1000], "label": "roof"}\n]\n```')
    parsed = prof.parse(text)
    assert [o.box for o in parsed.objects] == [(101, 20, 350, 420), (500, 510, 990, 1000)]
    assert box_spans(text, parsed.objects) == [span_of(text, "101,\n      20,\n      350,\n      420"),
                                               span_of(text, "500, 510, 990, 1000")]


def test_an_answer_the_parser_repaired_swapped_quoted_trailing_commas_cut_off():
    # Corners swapped (reordered by the parser), a coordinate written as text, trailing commas, and a
    # third object cut off by the token limit (salvaged: the two complete objects are used).
    text = ("<think>t</think><answer>[{'bbox_2d': [210, 200, '20', 30], 'label': 'a',}, "
            "{'bbox_2d': [5, 6, 50, 60],}, {'bbox_2d': [7, 8,")
    parsed = parse_model_output(text)
    assert parsed.status == PARSE_PARTIAL
    assert [o.box for o in parsed.objects] == [(20, 30, 210, 200), (5, 6, 50, 60)]
    assert box_spans(text, parsed.objects) == [span_of(text, "210, 200, '20', 30"), span_of(text, "5, 6, 50, 60")]


def test_qwen_box_tokens_and_an_object_without_a_box():
    text = "<|box_start|>(10,20),(110,220)<|box_end|>"
    parsed = parse_model_output(text, expects_think=False)
    assert box_spans(text, parsed.objects) == [span_of(text, "10,20),(110,220")]
    points_only = parse_model_output("<think>t</think><answer>[[5, 6]]</answer>")
    assert box_spans("<think>t</think><answer>[[5, 6]]</answer>", points_only.objects) == [None]


def test_span_score_is_the_geometric_mean_of_the_tokens_overlapping_the_span():
    text = "<answer>[[10,20,110,220]]</answer>"
    # Tokens as a byte-level tokenizer might cut it: "<answer>", "[[", "10", ",", "20", ",", "110", ",220", "]]"...
    cuts = ["<answer>", "[[", "10", ",", "20", ",", "110", ",220", "]]", "</answer>"]
    probabilities = [0.9, 0.99, 0.5, 0.9, 0.8, 0.9, 0.4, 0.7, 0.95, 0.9]
    tokens, at = [], 0
    for cut, p in zip(cuts, probabilities):
        tokens.append(TokenLogprob(at, at + len(cut), math.log(p)))
        at += len(cut)
    assert at == len(text)
    span = box_spans(text, parse_model_output(text, expects_think=False).objects)[0]
    assert span == span_of(text, "10,20,110,220")
    # "[[" ends before the first digit and "]]" starts after the last: only 10 , 20 , 110 ,220 count.
    expected = (0.5 * 0.9 * 0.8 * 0.9 * 0.4 * 0.7) ** (1 / 6)
    assert span_score(tokens, span) == pytest.approx(expected, rel=1e-12)
    assert span_score(tokens, None) is None
    assert span_score([], span) is None


def test_scored_text_carries_its_tokens_and_plain_text_carries_none():
    text = "<think>t</think><answer>[[1,2,30,40]]</answer>"
    start, end = span_of(text, "1,2,30,40")
    scored = ScoredText(text, [TokenLogprob(0, start, math.log(0.1)), TokenLogprob(start, end, math.log(0.64))],
                        token_ids=[4, 5])
    assert scored == text and isinstance(scored, str) and scored.token_ids == (4, 5)
    parsed = parse_model_output(scored)
    annotate_box_scores(scored, parsed.objects)
    assert parsed.objects[0].box_score == pytest.approx(0.64)
    assert token_logprobs_of(text) is None
    assert box_scores(text, parsed.objects, None) == [None]
    replayed = parse_model_output(text)
    annotate_box_scores(text, replayed.objects)
    assert replayed.objects[0].box_score is None


def test_box_score_survives_frame_mapping_and_the_protocol_and_old_answers_still_load():
    from georeasoner_plugin.core.frames import ModelFrame  # noqa: F401 - the profile builds the frame

    text = ScoredText("<think>t</think><answer>[[10,20,110,220]]</answer>", [TokenLogprob(0, 60, math.log(0.5))])
    prof = get_profile("remotereasoner")
    parsed = prof.parse(text)
    annotate_box_scores(text, parsed.objects)
    mapped, _ = map_objects_to_image(parsed.objects, prof.frame.frame_for(840, 840))
    assert mapped[0].box_score == pytest.approx(0.5)

    obj = AnswerObject(index=0, box=(1, 2, 3, 4), box_score=0.5, score=0.5)
    assert AnswerObject.from_dict(obj.to_dict()).box_score == 0.5
    old = AnswerObject(index=0, box=(1, 2, 3, 4)).to_dict()
    assert "box_score" not in old
    assert AnswerObject.from_dict(old).box_score is None

    answer = Answer(question="q", profile="remotereasoner", image_width=10, image_height=10, objects=[obj])
    values = feature_attributes(answer, obj)
    assert list(values) == [f.name for f in COMMON_FIELDS]
    assert values["box_score"] == 0.5 and values["score"] == 0.5
