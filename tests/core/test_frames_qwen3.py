"""Qwen3-VL's 0-1000 frame (issue 12): hand-worked numbers, clamping, far-from-square images, the
two qwen3 profiles, and the NAIP twin answer landing where its Qwen2.5-VL original lands."""
from pathlib import Path

import pytest

from georeasoner_plugin.core.frames import (FRAME_QWEN3, QWEN3_PATCH_FACTOR, FrameError, FrameSpec,
                                            map_objects_to_image, smart_resize)
from georeasoner_plugin.core.georef import GeoTransform
from georeasoner_plugin.core.parsing import ParsedObject, parse_model_output
from georeasoner_plugin.core.profiles import PROFILES, SAM_BOX_AND_MODEL_POINTS, get_profile

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _map(profile_name, raw, width, height):
    profile = get_profile(profile_name)
    parsed = profile.parse(raw)
    frame = profile.frame.frame_for(width, height)
    mapped, warnings = map_objects_to_image(parsed.objects, frame)
    return parsed, frame, mapped, warnings


def test_qwen3_frame_of_the_naip_image_by_hand():
    # 723 / 32 = 22.6 -> 23 * 32 = 736; 934 / 32 = 29.2 -> 29 * 32 = 928; 683,008 px within the bounds.
    frame = get_profile("qwen3").frame.frame_for(934, 723)
    assert (frame.frame_width, frame.frame_height) == (928, 736)
    assert frame.frame_width % QWEN3_PATCH_FACTOR == 0 and frame.frame_height % QWEN3_PATCH_FACTOR == 0
    # The answer's numbers do not depend on that size: x * 934 / 1000, y * 723 / 1000.
    assert frame.to_image(500, 250) == pytest.approx((467.0, 180.75))
    assert frame.box_to_image((500, 250, 750, 1000)) == pytest.approx((467.0, 180.75, 700.5, 723.0))
    assert frame.to_frame(467.0, 180.75) == pytest.approx((500, 250))


def test_qwen3_frame_shrinks_large_images_to_the_pixel_budget():
    # 4096 x 4096 = 16.8 M px > 1280 * 32 * 32: beta = sqrt(12.8) = 3.578; 4096 / 3.578 / 32 = 35.8 -> 35.
    assert smart_resize(4096, 4096, 32, 64 * 32 * 32, 1280 * 32 * 32) == (1120, 1120)
    frame = get_profile("qwen3").frame.frame_for(4096, 4096)
    assert (frame.frame_width, frame.frame_height) == (1120, 1120)
    assert frame.to_image(1000, 1000) == pytest.approx((4096, 4096))


@pytest.mark.parametrize("profile_name", ["qwen3", "georeasoner-qwen3"])
def test_far_from_square_images(profile_name):
    spec = get_profile(profile_name).frame
    # 2000 x 100 (20:1): 100 / 32 = 3.1 -> 96; 2000 / 32 = 62.5 -> 62 (round half to even, as the processor) -> 1984.
    wide = spec.frame_for(2000, 100)
    assert (wide.frame_width, wide.frame_height) == ((1984, 96) if profile_name == "qwen3" else
                                                    (wide.frame_width, wide.frame_height))
    assert wide.frame_width % 32 == 0 and wide.frame_height % 32 == 0
    # Normalised on both axes: the same numbers mean 2 px per unit across and 0.1 px per unit down.
    assert wide.to_image(500, 500) == pytest.approx((1000.0, 50.0))
    assert wide.box_to_image((250, 0, 750, 1000)) == pytest.approx((500.0, 0.0, 1500.0, 100.0))
    tall = spec.frame_for(300, 4000)
    assert tall.to_image(100, 900) == pytest.approx((30.0, 3600.0))
    with pytest.raises(FrameError, match="aspect ratio"):
        spec.frame_for(30_000, 100)


def test_values_past_1000_are_clamped_with_a_warning():
    raw = '```json\n[{"bbox_2d": [-10, 995, 1004, 1003], "point_2d": [1000, 1002], "label": "field"}]\n```'
    parsed, frame, mapped, warnings = _map("qwen3", raw, 934, 723)
    assert parsed.status == "ok"
    # Clamped to [0, 995, 1000, 1000] -> x 0..934, y 995 * 0.723 = 719.385 .. 723.
    assert mapped[0].box == pytest.approx((0.0, 719.385, 934.0, 723.0))
    # (1000, 1000) is the bottom-right corner; a point names a pixel, so it stays just inside.
    assert mapped[0].points[0] == pytest.approx((934.0, 723.0), abs=1e-5)
    assert mapped[0].points[0][0] < 934 and mapped[0].points[0][1] < 723
    assert any("clamped" in w for w in warnings)


def test_values_far_outside_the_frame_are_model_errors_not_clamped():
    raw = ('[{"bbox_2d": [100, 100, 1500, 500], "point_2d": [1500, 300]}, '
           '{"bbox_2d": [1200, 1200, 1400, 1400]}]')
    parsed, frame, mapped, warnings = _map("qwen3", raw, 1000, 500)
    assert len(mapped) == 1
    assert mapped[0].box == pytest.approx((100.0, 50.0, 1000.0, 250.0))  # clipped to the image
    assert mapped[0].points == []  # a point off the image is dropped, never moved onto the edge
    assert any("clipped" in w for w in warnings) and any("outside the image" in w for w in warnings)
    assert any("object 2" in w and "dropped" in w for w in warnings)


def test_edge_writers_999_and_1000_stay_within_a_pixel_of_the_edge():
    parsed, frame, mapped, _ = _map("qwen3", '[{"bbox_2d": [0, 0, 999, 1000]}]', 934, 723)
    x2, y2 = mapped[0].box[2], mapped[0].box[3]
    assert 934 - x2 <= 1.0 and y2 == pytest.approx(723.0)


@pytest.mark.parametrize("profile_name", ["qwen3", "georeasoner-qwen3"])
@pytest.mark.parametrize("size", [(934, 723), (640, 480), (300, 900), (2000, 100), (48, 40)])
def test_rendered_ground_truth_lands_within_one_pixel(profile_name, size):
    """What training teaches (render_answer in the frame) is what the cascade reads back."""
    width, height = size
    profile = get_profile(profile_name)
    frame = profile.frame.frame_for(width, height)
    target_box = (0.1 * width, 0.2 * height, 0.6 * width, 0.5 * height)
    target_point = (0.3 * width, 0.33 * height)
    truth = ParsedObject(box=frame.box_to_frame(target_box), points=[frame.to_frame(*target_point)] * 2,
                         label="centre-pivot field")
    raw = profile.render_answer([truth], reasoning="the field")
    parsed = profile.parse(raw)
    assert parsed.status == "ok", parsed.problems
    assert parsed.objects[0].label == "centre-pivot field"
    mapped, warnings = map_objects_to_image(parsed.objects, frame)
    assert not warnings
    # Rounding to whole 0-1000 units moves a coordinate by at most half a unit: side / 2000.
    tolerance = max(0.5 * width / 1000, 0.5 * height / 1000) + 1e-9
    for got, want in zip(mapped[0].box, target_box):
        assert abs(got - want) <= tolerance
    assert abs(mapped[0].points[0][0] - target_point[0]) <= tolerance


def test_profiles_and_sam_prompts():
    qwen3, ours = get_profile("qwen3"), get_profile("georeasoner-qwen3")
    for profile in (qwen3, ours):
        assert profile.frame.kind == FRAME_QWEN3 and profile.frame.normalised
        assert "0-1000" in profile.frame.describe() and "factor 32" in profile.frame.describe()
        assert profile.sam_prompting == SAM_BOX_AND_MODEL_POINTS
    assert qwen3.default_checkpoint.startswith("Qwen/Qwen3-VL-") and not qwen3.expects_think
    assert ours.expects_think and not ours.checkpoints
    prompt = " ".join(p["text"] for m in ours.messages("Where are the fields?") for p in m["content"]
                      if p["type"] == "text")
    assert "0 to 1000" in prompt and '"label"' in prompt
    # The other profiles keep their pixel frames.
    assert not any(p.frame.normalised for name, p in PROFILES.items() if name not in ("qwen3", "georeasoner-qwen3"))
    assert qwen3.sam_points((0, 0, 10, 10), [(3, 4)]) == [(3, 4)]


def test_georeferencing_follows_the_mapped_pixels():
    raw = '```json\n[{"bbox_2d": [250, 500, 750, 1000], "point_2d": [500, 750], "label": "lake"}]\n```'
    _, _, mapped, _ = _map("qwen3", raw, 400, 200)
    assert mapped[0].box == pytest.approx((100, 100, 300, 200))
    transform = GeoTransform.from_gdal((500000.0, 2.0, 0.0, 4000000.0, 0.0, -2.0))
    assert transform.pixel_to_map(*mapped[0].points[0]) == pytest.approx((500400.0, 3999700.0))
    ring = transform.box_to_map_ring(mapped[0].box)
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    assert (min(xs), max(xs), min(ys), max(ys)) == pytest.approx((500200.0, 500600.0, 3999600.0, 3999800.0))


def test_model_frame_of_a_prepared_size_keeps_the_normalised_frame():
    spec = FrameSpec(FRAME_QWEN3, factor=32)
    frame = spec.model_frame(934, 723, 928, 736)
    assert frame.to_image(1000, 1000) == pytest.approx((934, 723))
    assert FrameSpec().model_frame(934, 723, 924, 728).to_image(924, 728) == pytest.approx((934, 723))


def test_naip_qwen3_twin_lands_where_the_qwen25_answer_lands():
    """The hand-written Qwen3-VL twin (0-1000 frame) of the recorded RemoteReasoner answer (924 x 728
    pixel frame of the 934 x 723 NAIP image) must put the four lakes on the same image pixels."""
    width, height = 934, 723
    _, _, original, w1 = _map("remotereasoner", (EXAMPLES / "naip_lakes_remotereasoner.txt").read_text(), width,
                              height)
    parsed, _, twin, w2 = _map("qwen3", (EXAMPLES / "naip_lakes_qwen3.txt").read_text(), width, height)
    assert parsed.status == "ok" and not w1 and not w2
    assert len(original) == len(twin) == 4
    assert [o.label for o in twin] == ["lake", "lake", "pond", "pond"]
    # One 0-1000 unit is 0.93 px across and 0.72 px down; rounding costs at most half of that.
    for a, b in zip(original, twin):
        for got, want in zip(b.box, a.box):
            assert abs(got - want) <= 0.5, (a.box, b.box)
        cx, cy = (a.box[0] + a.box[2]) / 2, (a.box[1] + a.box[3]) / 2
        assert abs(b.points[0][0] - cx) <= 1.0 and abs(b.points[0][1] - cy) <= 1.0


def test_parser_reads_qwen3_answers_without_think_tags():
    parsed = parse_model_output('```json\n[{"bbox_2d": [1, 2, 3, 4], "point_2d": [2, 3], "label": "x"}]\n```',
                                expects_think=False)
    assert parsed.status == "ok" and parsed.objects[0].points == [(2.0, 3.0)]
