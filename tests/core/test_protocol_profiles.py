"""The answer protocol's JSON round trip, and the published prompt profiles' facts."""
import json

import pytest

from georeasoner_plugin.core.parsing import ParsedObject
from georeasoner_plugin.core.profiles import IMAGE, PROFILES, UnknownProfileError, get_profile
from georeasoner_plugin.core.protocol import (PROTOCOL_VERSION, Answer, AnswerObject, MaskRLE, Polygon,
                                              ProtocolError)


def _answer():
    return Answer(
        question="Which lakes?", profile="georeasoner", image_width=20, image_height=10,
        objects=[AnswerObject(index=0, box=(1.0, 2.0, 8.0, 9.0), points=[(3.0, 4.0), (5.0, 6.0)], score=0.9,
                              polygons=[Polygon([(1, 2), (8, 2), (8, 9), (1, 9)], [[(3, 4), (4, 4), (4, 5), (3, 5)]])],
                              mask=MaskRLE.encode([[0, 1, 1], [1, 0, 0]]))],
        reasoning="because", raw_output="<think>because</think><answer>[]</answer>",
        models={"reasoner": "tiny", "segmenter": "tiny-sam"}, timings={"reason": 0.1}, warnings=["w"])


def test_answer_json_roundtrip():
    answer = _answer()
    again = Answer.from_json(answer.to_json())
    assert again == answer
    assert json.loads(answer.to_json())["version"] == PROTOCOL_VERSION


def test_polygon_area_with_hole():
    assert _answer().objects[0].polygons[0].area() == 49 - 1


def test_mask_rle_roundtrip():
    rows = [[0, 1, 1], [1, 0, 0]]
    rle = MaskRLE.encode(rows)
    assert rle.counts == [1, 3, 2] and rle.area() == 3


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.update(version=99), "version"),
    (lambda d: d.pop("question"), "malformed"),
    (lambda d: d["objects"][0].update(box=[1, 2, 3]), "four numbers"),
    (lambda d: d["objects"][0].update(box=[1, 2, 3, float("nan")]), "finite"),
    (lambda d: d["objects"][0]["mask"].update(counts=[1, 2]), "add up"),
    (lambda d: d["parse"].update(status="great"), "parse status"),
    (lambda d: d["objects"][0]["polygons"][0]["exterior"].append([1, True]), "polygon vertex must be a number"),
    (lambda d: d["objects"][0]["polygons"][0]["exterior"].append([1, "2"]), "polygon vertex must be a number"),
    (lambda d: d["objects"][0]["polygons"][0]["exterior"].append([1, 2, 3]), "polygon vertex has two numbers"),
    (lambda d: d["objects"][0]["polygons"][0]["exterior"].append(None), "polygon vertex must be a list"),
    (lambda d: d["objects"][0]["polygons"][0]["exterior"].append([1, float("inf")]), "finite"),
    (lambda d: d["objects"][0]["polygons"][0]["holes"][0].append([10 ** 400, 1]), "hole vertex must be finite"),
    (lambda d: d["objects"][0]["polygons"][0].update(exterior="x"), "exterior must be a list"),
])
def test_malformed_documents_are_refused_clearly(mutate, message):
    data = _answer().to_dict()
    mutate(data)
    with pytest.raises(ProtocolError, match=message):
        Answer.from_dict(data)


def test_a_long_contour_reads_back_as_float_pairs():
    ring = [[i % 997, (i * 7) % 991 + 0.5] for i in range(20000)]
    polygon = Polygon.from_dict({"exterior": ring, "holes": [ring[:10]]})
    assert polygon.exterior == [(float(x), float(y)) for x, y in ring]
    assert all(type(x) is float and type(y) is float for x, y in polygon.exterior + polygon.holes[0])


def test_from_json_rejects_garbage():
    with pytest.raises(ProtocolError, match="not valid JSON"):
        Answer.from_json("{not json")


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(UnknownProfileError) as err:
        get_profile("gpt")
    assert "remotereasoner" in str(err.value)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_parses_what_it_renders(name):
    profile = get_profile(name)
    truth = [ParsedObject(box=(10, 20, 110, 220), points=[(50, 60), (70, 80)], label="lake")]
    raw = profile.render_answer(truth, reasoning="the dark water body")
    parsed = profile.parse(raw)
    assert parsed.usable and parsed.objects[0].box == (10, 20, 110, 220)
    assert len(parsed.objects[0].points) == profile.points_per_object
    empty = profile.parse(profile.render_answer([], "nothing"))
    assert empty.objects == []
    messages = profile.messages("Which lakes?")
    user = messages[-1]
    assert user["role"] == "user"
    assert sum(part["type"] == "image" for part in user["content"]) == 1
    assert any("Which lakes?" in part.get("text", "") or "which lakes" in part.get("text", "")
               for part in user["content"])


def test_published_formats():
    # Facts of the published checkpoints (../shared/PROFILES.md).
    assert get_profile("remotereasoner").render_answer([ParsedObject(box=(1, 2, 3, 4))]).endswith(
        "<answer>[[1,2,3,4]]</answer>")
    rr_parts = get_profile("remotereasoner").user_parts
    assert rr_parts[1] == IMAGE and rr_parts[2].startswith("\nText description: ")
    seg = get_profile("segzero")
    assert '"point_2d"' in seg.render_answer([ParsedObject(box=(1, 2, 3, 4), points=[(2, 3)])])
    assert seg.frame.kind == "fixed" and (seg.frame.fixed_width, seg.frame.fixed_height) == (840, 840)
    assert seg.question_text("The Lake.") == "the lake" and seg.sam_multimask
    t2s = get_profile("think2seg")
    assert t2s.system_prompt and t2s.dedupe_iou == 0.5
    assert "<answer>```json[{" in t2s.render_answer([ParsedObject(box=(1, 2, 3, 4), points=[(2, 3), (2, 2)])])
    assert "'points 1'" in get_profile("grasp").render_answer([ParsedObject(box=(1, 2, 3, 4), points=[(2, 3)])])
    assert not get_profile("qwen").expects_think
    assert get_profile("remotereasoner").frame.max_pixels == 802816


def test_an_answer_put_together_from_its_objects_texts_is_its_json():
    """Corrections re-encode only the object they changed: the assembled text must be to_json()."""
    from georeasoner_plugin.core.protocol import Answer, AnswerObject, MaskRLE, Polygon

    objects = [AnswerObject(index=0, box=(1.0, 2.0, 30.5, 40.0), points=[(5.0, 6.0)], score=0.5, label="lac é",
                            polygons=[Polygon([(1.0, 2.0), (3.0, 2.0), (3.0, 4.0)], [[(2.0, 2.5), (2.5, 2.5),
                                                                                      (2.5, 3.0)]])],
                            mask=MaskRLE(4, 2, [3, 2, 3])),
               AnswerObject(index=3, box=None, tiles=[{"tile": "r0c1", "score": 0.9}])]
    plain = Answer("which lakes?", "remotereasoner", 4, 2, objects=objects, reasoning="think", warnings=["w"])
    tiled = Answer("which lakes?", "remotereasoner", 4, 2, objects=objects,
                   tiles=[{"tile": "r0c0", "window": [0, 0, 4, 2]}])
    for answer in (plain, tiled, Answer("none?", "grasp", 8, 8)):
        assembled = answer.to_json_from_objects([o.to_json() for o in answer.objects])
        assert assembled == answer.to_json()
        assert Answer.from_json(assembled).to_dict() == answer.to_dict()
