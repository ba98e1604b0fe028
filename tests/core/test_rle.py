"""The one run-length codec (georeasoner_plugin/rle.py), shared by the backend and the QGIS store."""
import pytest

np = pytest.importorskip("numpy")

from georeasoner_plugin.core.protocol import MaskRLE  # noqa: E402
from georeasoner_plugin.rle import mask_to_rle, rle_label_image, rle_to_mask  # noqa: E402


def test_roundtrip_agrees_with_the_protocols_pure_python_encoder():
    rng = np.random.default_rng(3)
    for shape in [(1, 1), (2, 3), (17, 5), (40, 64)]:
        mask = rng.random(shape) > 0.6
        rle = mask_to_rle(mask)
        assert rle.counts == MaskRLE.encode(mask.tolist()).counts
        assert np.array_equal(rle_to_mask(rle), mask)
        assert rle.area() == int(mask.sum())
    assert mask_to_rle(np.ones((2, 2), bool)).counts == [0, 4]  # starts with an empty run of zeros


def test_bad_run_lengths_are_refused():
    with pytest.raises(ValueError, match="3 x 2"):
        rle_to_mask(MaskRLE(3, 2, [1, 2]))
    with pytest.raises(ValueError, match="2-D"):
        mask_to_rle(np.zeros((2, 2, 2)))


def test_label_image_paints_later_masks_over_earlier_ones():
    first = np.zeros((4, 5), bool)
    first[0:3, 0:3] = True
    second = np.zeros((4, 5), bool)
    second[2:4, 2:5] = True
    other_size = MaskRLE(2, 2, [4])
    labels = rle_label_image([(1, mask_to_rle(first)), (300, mask_to_rle(second)), (7, other_size)], 5, 4)
    assert labels.dtype == np.uint8
    assert labels[0, 0] == 1 and labels[2, 2] == 255 and labels[3, 4] == 255 and labels[3, 0] == 0
    assert set(np.unique(labels)) == {0, 1, 255}


def test_the_bounds_of_a_mask_come_from_its_runs():
    """rle_bounds equals the bounding box of the decoded mask, for runs inside a row, runs over row
    ends, masks touching every edge, and empty masks."""
    import numpy as np

    from georeasoner_plugin.rle import mask_to_rle, rle_bounds

    rng = np.random.default_rng(11)
    cases = [np.zeros((5, 7), bool), np.ones((5, 7), bool)]
    for _ in range(40):
        mask = np.zeros((int(rng.integers(1, 30)), int(rng.integers(1, 30))), bool)
        for _ in range(int(rng.integers(1, 4))):
            y, x = int(rng.integers(0, mask.shape[0])), int(rng.integers(0, mask.shape[1]))
            mask[y:y + int(rng.integers(1, 6)), x:x + int(rng.integers(1, 9))] = True
        cases.append(mask)
    wrap = np.zeros((4, 6), bool)
    wrap.ravel()[4:9] = True  # one run from the end of row 0 into row 1
    cases.append(wrap)
    for mask in cases:
        rows, cols = np.nonzero(mask)
        expected = None if rows.size == 0 else (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        assert rle_bounds(mask_to_rle(mask)) == expected, mask.astype(int)
