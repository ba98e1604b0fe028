"""Model frames and pixel <-> map transforms: where projects like this go wrong."""
import math
import random

import pytest
from hypothesis import given, settings, strategies as st

from georeasoner_plugin.core.frames import (FRAME_FIXED, FrameError, FrameSpec,
                                            map_objects_to_image, smart_resize)
from georeasoner_plugin.core.georef import GeoTransform, GeoreferenceError
from georeasoner_plugin.core.parsing import parse_model_output
from georeasoner_plugin.core.profiles import get_profile


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 8000), st.integers(1, 8000))
def test_smart_resize_invariants(h, w):
    if max(h, w) / min(h, w) > 200:
        with pytest.raises(FrameError):
            smart_resize(h, w)
        return
    rh, rw = smart_resize(h, w, min_pixels=56 * 56, max_pixels=1280 * 28 * 28)
    assert rh % 28 == 0 and rw % 28 == 0
    assert rh * rw <= 1280 * 28 * 28
    assert rh * rw >= 56 * 56 or rh == 28 or rw == 28


def test_smart_resize_known_values():
    # NAIP sample: 934 x 723 pixels -> fits under max_pixels, rounded to multiples of 28.
    assert smart_resize(723, 934) == (728, 924)
    # A 4096 x 4096 canvas is scaled down to the pixel budget.
    h, w = smart_resize(4096, 4096, max_pixels=1024 * 28 * 28)
    assert (h, w) == (896, 896)


def test_empty_image_is_a_clear_error():
    with pytest.raises(FrameError, match="empty"):
        FrameSpec().frame_for(0, 10)


def _recorded_answer_lands_on_target(profile_name, width, height, target_box, target_point):
    """The model answers in its frame (integers); we must land on the image pixels it meant."""
    profile = get_profile(profile_name)
    frame = profile.frame.frame_for(width, height)
    fx1, fy1 = frame.to_frame(target_box[0], target_box[1])
    fx2, fy2 = frame.to_frame(target_box[2], target_box[3])
    px, py = frame.to_frame(*target_point)
    raw = ('<think>recorded</think><answer>[{"bbox_2d": [%d,%d,%d,%d], "positive_points": [[%d,%d],[%d,%d]]}]'
           '</answer>' % (round(fx1), round(fy1), round(fx2), round(fy2), round(px), round(py), round(px), round(py)))
    parsed = parse_model_output(raw)
    mapped, warnings = map_objects_to_image(parsed.objects, frame)
    assert not warnings
    box = mapped[0].box
    # One model-frame pixel is at most image/frame pixels wide; the issue asks for <= 1 image pixel
    # for frames that do not shrink the image, and for one model pixel's worth otherwise.
    tolerance = max(1.0, 0.5 * max(frame.sx, frame.sy))
    for got, want in zip(box, target_box):
        assert abs(got - want) <= tolerance, (box, target_box, tolerance)
    assert abs(mapped[0].points[0][0] - target_point[0]) <= tolerance
    assert abs(mapped[0].points[0][1] - target_point[1]) <= tolerance
    return frame


@pytest.mark.parametrize("profile_name", ["georeasoner", "remotereasoner", "think2seg", "segzero"])
@pytest.mark.parametrize("size", [(934, 723), (640, 480), (300, 900), (840, 840)])
def test_recorded_answer_lands_within_one_pixel(profile_name, size):
    width, height = size
    target_box = (0.1 * width, 0.2 * height, 0.6 * width, 0.5 * height)
    target_point = (0.3 * width, 0.33 * height)
    frame = _recorded_answer_lands_on_target(profile_name, width, height, target_box, target_point)
    if get_profile(profile_name).frame.kind == FRAME_FIXED:
        assert (frame.frame_width, frame.frame_height) == (840, 840)
    else:
        assert frame.frame_width % 28 == 0 and frame.frame_height % 28 == 0


def test_boxes_outside_are_clipped_or_dropped():
    frame = FrameSpec(FRAME_FIXED).frame_for(100, 50)  # 840 x 840 frame
    parsed = parse_model_output("<answer>[[-100,-100,420,420],[900,900,1000,1000],[10,10,10,500]]</answer>",
                                expects_think=False)
    mapped, warnings = map_objects_to_image(parsed.objects, frame)
    assert len(mapped) == 1
    assert mapped[0].box == (0, 0, 50, 25)
    assert any("clipped" in w for w in warnings) and sum("dropped" in w for w in warnings) >= 2


def _gdal_apply(gt, col, row):
    # GDAL's documented formula (GDALApplyGeoTransform).
    return gt[0] + col * gt[1] + row * gt[2], gt[3] + col * gt[4] + row * gt[5]


@pytest.mark.parametrize("gt", [
    (589000.0, 5.0, 0.0, 5200000.0, 0.0, -5.0),  # UTM, 5 m
    (-77.1, 0.00081, 0.0, -12.0, 0.0, -0.00081),  # geographic degrees
    GeoTransform.from_corner_and_rotation(500000, 4000000, 2.0, 3.0, 30.0).to_gdal(),  # rotated
])
def test_pixel_map_roundtrip_matches_gdal(gt):
    transform = GeoTransform.from_gdal(gt)
    rng = random.Random(1)
    for _ in range(200):
        col, row = rng.uniform(-10, 5000), rng.uniform(-10, 5000)
        x, y = transform.pixel_to_map(col, row)
        gx, gy = _gdal_apply(gt, col, row)
        assert math.isclose(x, gx, rel_tol=1e-12) and math.isclose(y, gy, rel_tol=1e-12)
        c2, r2 = transform.map_to_pixel(x, y)
        assert abs(c2 - col) < 1e-6 and abs(r2 - row) < 1e-6


def test_rotated_transform_turns_boxes():
    transform = GeoTransform.from_corner_and_rotation(0, 0, 1.0, 1.0, 90.0)
    ring = transform.box_to_map_ring((0, 0, 10, 5))
    # Turned a quarter clockwise: image x runs south, image y runs west.
    assert ring[1] == pytest.approx((0, -10), abs=1e-9)
    assert ring[3] == pytest.approx((-5, 0), abs=1e-9)


def test_singular_transform_is_refused():
    with pytest.raises(GeoreferenceError, match="singular"):
        GeoTransform.from_gdal((0, 0, 0, 0, 0, 0))
