"""The vectorizer's two ring-cleaning paths (plain Python for few points, numpy for many) and its
unit-square shortcut give the very same polygons, in the same order."""
import numpy as np
import pytest
from rasterio import features
import shapely

from bench.bench_vectorize import blobs_with_holes, object_with_holes, speckle, thin_lines
from georeasoner_plugin.backend import vectorize, vectorize_touch


def masks():
    rng = np.random.default_rng(11)
    yield from (blobs_with_holes(64, count=3), blobs_with_holes(200, count=6), speckle(48), thin_lines(96, count=8),
                object_with_holes(160, holes=40))
    for size in (3, 8, 17, 33):
        for density in (0.2, 0.5, 0.8):
            for _ in range(6):
                yield rng.random((size, size + 3)) < density


@pytest.mark.parametrize("min_area", [0.0, 1.0, 4.0])
def test_python_and_numpy_ring_paths_agree(monkeypatch, min_area):
    for mask in masks():
        monkeypatch.setattr(vectorize, "_FEW_POINTS", 10**9)
        few = vectorize.mask_to_polygons(mask, min_area=min_area)
        monkeypatch.setattr(vectorize, "_FEW_POINTS", -1)
        many = vectorize.mask_to_polygons(mask, min_area=min_area)
        assert few == many


def test_unit_squares_and_traced_parts_cover_exactly_what_rasterio_covers():
    for mask in masks():
        ours = shapely.union_all([shapely.Polygon(p.exterior, p.holes) for p in vectorize.mask_to_polygons(mask)])
        theirs = shapely.union_all([shapely.geometry.shape(g) for g, _ in features.shapes(
            mask.view(np.uint8), mask=mask)])
        assert shapely.symmetric_difference(ours, theirs).area == 0
        assert ours.area == mask.sum()


@pytest.mark.parametrize("few_parts", [0, 10**9])
def test_parts_written_as_their_box_cover_what_rasterio_covers(monkeypatch, few_parts):
    # Parts touching others at a corner: 0 packs them into an atlas, 10**9 cuts them into a strip.
    monkeypatch.setattr(vectorize_touch, "_FEW_PARTS", few_parts)
    for mask in list(masks()) + [thin_lines(300, count=20)]:
        polygons = vectorize.mask_to_polygons(mask)
        ours = shapely.union_all([shapely.Polygon(p.exterior, p.holes) for p in polygons])
        theirs = shapely.union_all([shapely.geometry.shape(g) for g, _ in features.shapes(
            mask.view(np.uint8), mask=mask)])
        assert shapely.symmetric_difference(ours, theirs).area == 0 and ours.area == mask.sum()
        assert len(polygons) == len(list(features.shapes(mask.view(np.uint8), mask=mask)))
        assert all(shapely.Polygon(p.exterior, p.holes).is_valid for p in polygons)


def _same_as_rasterio(mask):
    polygons = vectorize.mask_to_polygons(mask)
    ours = shapely.union_all([shapely.Polygon(p.exterior, p.holes) for p in polygons])
    shapes = list(features.shapes(mask.view(np.uint8), mask=mask))
    theirs = shapely.union_all([shapely.geometry.shape(g) for g, _ in shapes])
    assert shapely.symmetric_difference(ours, theirs).area == 0 and ours.area == mask.sum()
    assert len(polygons) == len(shapes)
    assert all(shapely.Polygon(p.exterior, p.holes).is_valid for p in polygons)


def _nested_rings_touching_at_corners(rings: int) -> np.ndarray:
    """Concentric square outlines two pixels apart, each joined to the next one inside only by a
    corner touch: their bounding boxes nest, so packing them side by side takes more room than the mask."""
    size = 4 * rings + 3
    mask = np.zeros((size, size), bool)
    for i in range(rings):
        a, b = 2 * i, size - 1 - 2 * i
        mask[a, a:b + 1] = mask[b, a:b + 1] = mask[a:b + 1, a] = mask[a:b + 1, b] = True
        if i + 1 < rings:
            mask[a + 1, a + 1] = True  # on ring i, diagonal to ring i + 1's corner
    return mask


def test_each_way_of_splitting_corner_touches_is_taken_and_matches_rasterio():
    # Nested parts: the atlas would be larger than the mask, so parts are coloured into layers.
    nested = _nested_rings_touching_at_corners(20)
    pieces, _ = vectorize_touch.split(nested.view(np.uint8))
    assert len(pieces) > 1 and all(p.labels is None for p in pieces)
    _same_as_rasterio(nested)
    # Many one-pixel lines: the non-rectangular parts packed into one atlas.
    lines = thin_lines(600, count=20)
    pieces, boxes = vectorize_touch.split(lines.view(np.uint8))
    assert len(pieces) == 1 and pieces[0].labels is not None and len(boxes) > 0
    _same_as_rasterio(lines)
    # Few touches, all inside one object: settled in small windows, no labelling, one piece.
    holes = np.ones((400, 400), bool)
    holes[100, 100] = holes[101, 101] = holes[200, 150] = holes[201, 149] = False  # holes meeting at a corner
    binary = holes.view(np.uint8)
    pieces, boxes = vectorize_touch.split(binary)
    assert len(pieces) == 1 and pieces[0].labels is None and boxes is None
    _same_as_rasterio(holes)
    # Few touches between different parts of a large mask: the window check fails, the few parts
    # are cut out side by side into one strip.
    two = np.zeros((400, 400), bool)
    two[10:50, 10:50] = two[50:90, 50:90] = True
    two[10:20, 10:20] = two[80:90, 80:90] = False  # notched: not their bounding boxes
    two[60:70, 5:8] = True  # a third part touching nothing, a rectangle: written as its box
    pieces, boxes = vectorize_touch.split(two.view(np.uint8))
    assert len(pieces) == 1 and pieces[0].image.shape == (40, 40 + 1 + 40)
    assert boxes.tolist() == [[5, 60, 3, 10]]
    _same_as_rasterio(two)


def test_large_masks_traced_object_by_object_match_rasterio():
    mask = np.zeros((1200, 1200), bool)  # the box of its foreground past _CLUSTER_FROM
    mask[100:400, 100:400] = True
    mask[150:350, 150:350] = False
    mask[200:300, 200:300] = True  # an island in the hole: not an outermost part, traced with the ring
    mask[500:700, 500:520] = mask[680:700, 500:700] = True  # an L ...
    mask[520:600, 560:640] = True  # ... and a block inside its box, not touching it: one cluster
    mask[800:810, 100:110] = mask[810:820, 110:120] = True  # two parts touching at a corner
    mask[900:1000, 950:1000] = True
    mask[1150, 1150] = True  # a lone pixel
    rects = vectorize._clusters(mask.view(np.uint8), *vectorize._bounding_box(mask.view(np.uint8)))
    assert len(rects) == 5
    _same_as_rasterio(mask)
    _same_as_rasterio(blobs_with_holes(1200, count=8, seed=3))
    edges = np.zeros((1100, 1100), bool)  # parts on the very edge of the mask
    edges[0, 100:300] = edges[1099, 0] = edges[500:505, 1099] = edges[300:400, 300:400] = True
    assert len(vectorize._clusters(edges.view(np.uint8), 0, 0, 1100, 1100)) == 4
    _same_as_rasterio(edges)
