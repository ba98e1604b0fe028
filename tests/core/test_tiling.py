"""The tiling plan (core/tiling.py): windows, overlap, resampling, extent/mask selection, focus."""
import pytest

from georeasoner_plugin.core.profiles import get_profile
from georeasoner_plugin.core.tiling import (
    DEFAULT_OVERLAP, TilePlan, TilingError, default_tile_size, focus_selection, map_box_to_source_pixels,
    parse_extent, parse_overlap, plan_tiles, rect_meets_ring)


def test_grid_covers_the_raster_with_full_size_overlapping_tiles():
    plan = plan_tiles(6000, 4000, tile_size=1024)
    assert plan.overlap == DEFAULT_OVERLAP
    step = 1024 - 128
    assert plan.xs[:3] == (0, step, 2 * step) and plan.xs[-1] == 6000 - 1024
    assert plan.ys[-1] == 4000 - 1024
    assert plan.grid_size == len(plan.xs) * len(plan.ys) == len(plan.tiles)
    for tile in plan.tiles:
        assert (tile.width, tile.height) == (1024, 1024)
        assert 0 <= tile.x and tile.x + tile.width <= 6000 and tile.y + tile.height <= 4000
    # every pixel is covered, and neighbours overlap by at least the overlap
    for a, b in zip(plan.xs, plan.xs[1:]):
        assert a + 1024 - b >= 128


def test_small_raster_is_one_tile_of_its_own_size():
    plan = plan_tiles(700, 500, tile_size=896)
    assert plan.grid_size == 1
    tile = plan.tiles[0]
    assert (tile.x, tile.y, tile.width, tile.height) == (0, 0, 700, 500)


def test_default_tile_size_is_the_profiles_frame():
    assert default_tile_size(get_profile("remotereasoner").frame) == 896
    assert default_tile_size(get_profile("segzero").frame) == 840


def test_gsd_resampling_maps_back_to_source_windows():
    plan = plan_tiles(6000, 4000, tile_size=1024, scale=(2.0, 2.0))
    assert (plan.width, plan.height) == (3000, 2000)
    last = plan.tile(plan.grid_size - 1)
    col, row, w, h = plan.source_window(last)
    assert col + w <= 6000 and row + h <= 4000 and w == 2048
    gt = plan.plan_transform((500000.0, 0.5, 0.0, 4_000_000.0, 0.0, -0.5))
    assert gt == (500000.0, 1.0, 0.0, 4_000_000.0, 0.0, -1.0)


def test_extent_limits_the_plan_and_shifts_its_transform():
    gt = (500000.0, 1.0, 0.0, 4_000_000.0, 0.0, -1.0)
    area = map_box_to_source_pixels(gt, parse_extent("501000,3998000,502500,3999500"))
    assert area == (1000, 500, 2500, 2000)
    plan = plan_tiles(6000, 4000, tile_size=1024, area=area)
    assert (plan.width, plan.height) == (1500, 1500) and plan.grid_size == 4
    assert plan.plan_transform(gt)[0] == 501000.0 and plan.plan_transform(gt)[3] == 3999500.0
    with pytest.raises(TilingError, match="does not overlap the raster"):
        plan_tiles(6000, 4000, tile_size=1024, area=(7000, 0, 8000, 100))


def test_mask_polygons_select_the_tiles_they_meet():
    triangle = [(10, 10), (300, 10), (10, 300)]
    plan = plan_tiles(6000, 4000, tile_size=1024, mask_rings=[triangle, [(5000, 3500), (5100, 3500), (5100, 3600)]])
    # the plan shrinks to the masks' bounds, then keeps only the tiles meeting a mask
    assert plan.grid_size > len(plan.selected) >= 2
    assert rect_meets_ring((0, 0, 10, 10), [(5, 5), (20, 5), (5, 20)])
    assert not rect_meets_ring((100, 100, 110, 110), [(0, 0), (50, 0), (0, 50)])
    # a rectangle inside a polygon, and a polygon crossing a rectangle with no vertex inside it
    assert rect_meets_ring((10, 10, 20, 20), [(0, 0), (100, 0), (100, 100), (0, 100)])
    assert rect_meets_ring((10, 10, 20, 20), [(0, 14), (30, 14), (30, 16), (0, 16)])


def test_focus_keeps_tiles_meeting_grown_boxes():
    plan = plan_tiles(6000, 4000, tile_size=1024)
    focused = focus_selection(plan, [(100, 100, 150, 150)])
    assert focused.selected == (0,)  # grown by max(0.25 * 50, 128) = 128 px: still only the first tile
    seam = focus_selection(plan, [(1000, 1000, 1010, 1010)])
    assert len(seam.selected) == 4  # the box sits at a four-tile corner
    assert "focus: 4 of" in seam.notes[-1]


def test_plan_round_trips_through_json():
    plan = plan_tiles(3000, 2000, tile_size=512, overlap=0.25).with_selection([0, 3, 5])
    again = TilePlan.from_dict(plan.to_dict())
    assert again.tiles == plan.tiles
    with pytest.raises(TilingError, match="outside the grid"):
        plan.tile(10_000)


@pytest.mark.parametrize("text,value", [("12.5%", 0.125), ("0.2", 0.2), ("0", 0.0)])
def test_overlap_parsing(text, value):
    assert parse_overlap(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["60%", "-1", "abc", "0.5"])
def test_bad_overlap_says_what_is_allowed(text):
    with pytest.raises(TilingError, match="overlap"):
        parse_overlap(text)


def test_bad_extent_and_tile_size():
    with pytest.raises(TilingError, match="xmin,ymin,xmax,ymax"):
        parse_extent("1,2,3")
    with pytest.raises(TilingError, match="xmin < xmax"):
        parse_extent("3,2,1,4")
    with pytest.raises(TilingError, match="tile size"):
        plan_tiles(100, 100, tile_size=10)
