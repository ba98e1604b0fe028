"""The tiled engine on the synthetic scene: merge correctness, focus, nodata, one tile = no tiling.

Reasoner and segmenter are the rule-based stand-ins of tiled_standins.py (they look at the pixels
they are given); everything else is real: rasterio windows, the profile's parser and frame
mapping, the vectorizer, the merge and the journal.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import shapely

from georeasoner_plugin.backend.cascade import AskOptions, Cascade
from georeasoner_plugin.backend.tiled.engine import TiledEngine, TiledRequest
from georeasoner_plugin.backend.tiled.merge import multipolygon
from georeasoner_plugin.backend.tiled.source import RasterTileSource
from georeasoner_plugin.backend.vectorize import mask_to_polygons
from georeasoner_plugin.core.tiling import focus_selection, plan_tiles

from openai_double import OpenAIDouble
from tiled_standins import DarkShapeReasoner, Shape, ThresholdSegmenter, draw_shape, scene_labels, scene_shapes, write_scene

QUESTION = "Which dark shapes are in the scene?"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """The issue's scene: 6000 x 4000 px, EPSG:32633, 30 shapes."""
    labels = scene_labels(scene_shapes(), 6000, 4000)
    path = tmp_path_factory.mktemp("scene") / "scene.tif"
    write_scene(path, labels)
    return path, labels


def truth_geometry(labels: np.ndarray, k: int):
    rows, cols = np.nonzero(labels == k)
    r0, c0 = rows.min(), cols.min()
    crop = labels[r0:rows.max() + 1, c0:cols.max() + 1] == k
    parts = [shapely.Polygon(p.exterior, p.holes) for p in mask_to_polygons(crop)]
    return shapely.affinity.translate(shapely.MultiPolygon(parts), c0, r0)


def fits_one_tile(shape_bounds, plan) -> bool:
    x0, y0, x1, y1 = shape_bounds
    return any(t.x <= x0 and x1 <= t.x + t.width and t.y <= y0 and y1 <= t.y + t.height for t in plan.all_tiles())


def test_every_shape_found_once_with_exact_geometry_across_seams(scene):
    path, labels = scene
    reasoner, segmenter = DarkShapeReasoner(), ThresholdSegmenter()
    with RasterTileSource(path) as source:
        plan = plan_tiles(source.width, source.height, tile_size=1024)
        result = TiledEngine(reasoner, segmenter).run(source, plan, TiledRequest(QUESTION, concurrency=2))
        transform = source.plan_transform(plan)
    answer = result.answer
    assert (answer.image_width, answer.image_height) == (6000, 4000)
    assert transform.to_gdal() == (500000.0, 0.5, 0.0, 4_500_000.0, 0.0, -0.5)
    assert reasoner.calls == plan.grid_size == 35
    # one segmenter call per tile that has objects, every prompt of the tile in it
    assert segmenter.calls == sum(1 for t in answer.tiles[1:] if t["objects"]) < 35
    objects = [(obj, multipolygon(obj)) for obj in answer.objects]
    assert len(objects) == 30

    crossing = corner = 0
    for k in range(1, 31):
        truth = truth_geometry(labels, k)
        found = [(obj, geom) for obj, geom in objects if geom.intersects(truth)]
        assert len(found) == 1, f"shape {k} found {len(found)} times"
        obj, geom = found[0]
        iou = geom.intersection(truth).area / geom.union(truth).area
        assert iou >= 0.98, f"shape {k}: IoU {iou:.4f}"
        assert geom.is_valid
        # No slivers: a single part with exactly the truth's holes.
        assert len(geom.geoms) == 1, f"shape {k} has {len(geom.geoms)} parts"
        assert len(geom.geoms[0].interiors) == len(truth.geoms[0].interiors)
        bounds = truth.bounds
        if not fits_one_tile(bounds, plan):
            crossing += 1
            assert obj.box == pytest.approx(bounds, abs=1e-9)  # the box follows the merged polygon
            assert len(obj.tiles) >= 2 and all("score" in t for t in obj.tiles)
            columns = {t["tile"].split("c")[1] for t in obj.tiles}
            rows = {t["tile"].split("c")[0] for t in obj.tiles}
            if len(columns) >= 2 and len(rows) >= 2 and truth.area > 100_000:
                corner += 1
    assert crossing == 8 and corner == 1
    assert len(answer.tiles) == 36  # the plan summary, then one entry per tile with its reasoning
    assert all(t["reasoning"].startswith("I see") for t in answer.tiles[1:])


@pytest.fixture(scope="module")
def half_scene(tmp_path_factory):
    """The same layout at half size (3000 x 2000, 512 px tiles: the same seams, a quarter of the pixels)."""
    labels = scene_labels(scene_shapes(), 3000, 2000, scale=0.5)
    path = tmp_path_factory.mktemp("half") / "half.tif"
    write_scene(path, labels, pixel_size=1.0)
    return path, labels


def test_focus_asks_only_tiles_meeting_the_overview_boxes(half_scene):
    path, labels = half_scene
    reasoner = DarkShapeReasoner()
    events = []
    with RasterTileSource(path) as source:
        plan = plan_tiles(source.width, source.height, tile_size=512)
        request = TiledRequest("Which is the largest dark shape?", strategy="focus")
        result = TiledEngine(reasoner, ThresholdSegmenter()).run(source, plan, request,
                                                                 on_event=lambda k, d: events.append((k, d)))
    largest = max(range(1, 31), key=lambda k: (labels == k).sum())
    truth = truth_geometry(labels, largest)
    expected = focus_selection(plan, [truth.bounds]).selected
    assert result.plan.selected == expected and len(expected) == 4  # the corner shape's four tiles
    assert reasoner.calls == 1 + len(expected)  # the overview, then only the meeting tiles
    assert reasoner.sizes[0] == (504, 336)  # the overview: the whole scene in one frame
    focus = [d for k, d in events if k == "focus"][0]
    assert focus["selected"] == 4 and focus["grid"] == plan.grid_size
    assert result.answer.reasoning.startswith("I see 1 dark shape")  # the overview's reasoning is kept
    geoms = [multipolygon(o) for o in result.answer.objects]
    match = [g for g in geoms if g.intersects(truth)]
    assert len(match) == 1 and match[0].intersection(truth).area / match[0].union(truth).area >= 0.98


def test_nodata_only_tiles_are_not_asked(tmp_path):
    labels = np.zeros((1200, 2000), dtype=np.uint8)
    draw_shape(labels, Shape("rect", 300, 300, 100, 100), 1)
    path = tmp_path / "nodata.tif"
    write_scene(path, labels, pixel_size=1.0)
    with rasterio.open(path, "r+") as ds:
        ds.nodata = 0
        ds.write(np.zeros((3, 1200, 1000), dtype=np.uint8), window=rasterio.windows.Window(1000, 0, 1000, 1200))
    reasoner = DarkShapeReasoner()
    events = []
    with RasterTileSource(path) as source:
        plan = plan_tiles(source.width, source.height, tile_size=512, overlap=0.0)
        result = TiledEngine(reasoner, ThresholdSegmenter()).run(
            source, plan, TiledRequest(QUESTION), on_event=lambda k, d: events.append((k, d)))
    skipped = [d for k, d in events if k == "tile" and d["skipped"] == "nodata"]
    assert result.nodata == len(skipped) == 6 and reasoner.calls == plan.grid_size - 6
    assert len(result.answer.objects) == 1
    assert any("nodata" in w for w in result.answer.warnings)


def test_one_tile_gives_the_same_objects_as_no_tiling(tmp_path):
    labels = np.zeros((600, 800), dtype=np.uint8)
    for n, shape in enumerate([Shape("ring", 200, 200, 160, 160), Shape("triangle", 600, 400, 150, 120),
                               Shape("lshape", 420, 150, 90, 120)], start=1):
        draw_shape(labels, shape, n)
    path = tmp_path / "small.tif"
    write_scene(path, labels, pixel_size=1.0)
    with RasterTileSource(path) as source:
        plan = plan_tiles(source.width, source.height, tile_size=896)
        assert plan.grid_size == 1
        tiled = TiledEngine(DarkShapeReasoner(), ThresholdSegmenter()).run(source, plan, TiledRequest(QUESTION)).answer
        rgb, valid = source.read(plan, plan.tiles[0])
    whole = Cascade(DarkShapeReasoner(), ThresholdSegmenter()).run(rgb, QUESTION, options=AskOptions()).answer
    assert len(tiled.objects) == len(whole.objects) == 3
    for a, b in zip(tiled.objects, whole.objects):
        ga = multipolygon(a)
        gb = shapely.MultiPolygon([shapely.Polygon(p.exterior, p.holes) for p in b.polygons])
        assert ga.intersection(gb).area / ga.union(gb).area >= 0.99
        assert a.box == pytest.approx(b.box)
    assert tiled.reasoning == whole.reasoning


def test_journal_ignores_a_torn_last_line_and_refuses_another_run(tmp_path):
    from georeasoner_plugin.backend.tiled.journal import Journal, JournalError

    path = tmp_path / "out_tiles.jsonl"
    journal = Journal(path, {"question": "q"}).open()
    journal.add_tile({"tile": 3, "key": "r0c3", "objects": []})
    journal.close()
    with open(path, "a") as handle:
        handle.write('{"kind": "tile", "tile": 4, "obj')  # killed mid-write
    again = Journal(path, {"question": "q"}).open()
    assert set(again.tiles) == {3} and again.resumed == 1
    assert again.header["answer_id"] == journal.header["answer_id"]
    again.add_tile({"tile": 5, "key": "r0c5", "objects": []})
    again.close()
    assert [json.loads(line)["kind"] for line in path.read_text().splitlines()] == ["header", "tile", "tile"]
    with pytest.raises(JournalError, match="journal of another run"):
        Journal(path, {"question": "another"}).open()


def test_mask_layer_limits_tiles_and_pixels(half_scene, tmp_path, capsys):
    import pyogrio.raw
    from georeasoner_plugin.backend.cli import main

    path, labels = half_scene
    # A polygon (map coordinates, pixel size 1 m) around the two shapes at (225, 225) and (700, 225).
    ring = [(500100, 4499900), (500800, 4499900), (500800, 4499650), (500100, 4499650), (500100, 4499900)]
    mask = tmp_path / "mask.gpkg"
    pyogrio.raw.write(mask, np.array([shapely.to_wkb(shapely.Polygon(ring))], dtype=object), [], [],
                      geometry_type="Polygon", crs="EPSG:32633", driver="GPKG")
    out = tmp_path / "masked.gpkg"
    with OpenAIDouble(DarkShapeReasoner(), model_name="stand-in") as double:
        code = main(["ask", str(path), QUESTION, "-o", str(out), "--tiles", "auto", "--tile-size", "512",
                     "--mask-layer", str(mask), "--outputs", "boxes", "--reasoner-url", double.url,
                     "--reasoner-model", "stand-in"])
    out_text, err = capsys.readouterr()
    assert code == 0, err
    assert "mask: " in err and "Tiles: 2 asked" in out_text
    meta, _, geometry, _ = pyogrio.raw.read(out, layer="boxes")
    boxes = [shapely.from_wkb(g) for g in geometry]
    inside = shapely.Polygon(ring)
    assert len(boxes) == 2 and all(inside.contains(b) for b in boxes)


def test_in_process_batches_give_the_same_answers_as_one_tile_at_a_time(tiny_reasoner, half_scene):
    """Tiny Qwen2.5-VL (random weights, greedy): four tiles per generate call answer exactly as one by one."""
    path, _ = half_scene
    with RasterTileSource(path) as source:
        plan = plan_tiles(source.width, source.height, tile_size=128).with_selection(range(6))
        options = AskOptions(granularities=("boxes",), max_new_tokens=8)
        one = TiledEngine(tiny_reasoner).run(source, plan, TiledRequest(QUESTION, options=options, concurrency=1))
        batched = TiledEngine(tiny_reasoner).run(source, plan, TiledRequest(QUESTION, options=options, concurrency=4))
    assert [r["raw_output"] for r in sorted(one.records, key=lambda r: r["tile"])] == \
           [r["raw_output"] for r in sorted(batched.records, key=lambda r: r["tile"])]
    assert tiny_reasoner.last_timings.get("batch", 0) >= 2  # generate really ran with several tiles
