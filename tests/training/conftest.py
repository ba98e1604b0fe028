"""Shared by the training tests: the sample imagery (and the skip when it is absent) and the helpers
that cut small EarthReason-shaped datasets from it.

Tests reach these through the ``imagery`` fixture rather than by importing this file: pytest loads
every conftest.py under the module name "conftest", so an import could pick up another folder's.
"""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
NAIP = DATA / "naip_nd_2020.tif"
LANDSAT = DATA / "landsat_2020_wgs84.tif"


def crop_rgb(path: Path, col: int, row: int, size: int) -> np.ndarray:
    """A size x size RGB crop of a real GeoTIFF (bands 1-3), as an EarthReason image would be."""
    import rasterio

    with rasterio.open(path) as src:
        window = rasterio.windows.Window(col, row, size, size)
        return np.transpose(src.read([1, 2, 3], window=window), (1, 2, 0)).copy()


def write_qa(path: Path, questions, answer) -> None:
    path.write_text(json.dumps({"questions": questions, "answer": answer}), encoding="utf-8")


def split_folders(root: Path, split: str):
    """(images, labels, QAs) folders of one EarthReason split under root, created."""
    folders = tuple(root / split / name for name in ("images", "labels", "QAs"))
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    return folders


@pytest.fixture(scope="session")
def imagery():
    """The real sample GeoTIFFs and the dataset helpers; skips (with the reason) when they are absent."""
    pytest.importorskip("rasterio")
    if not (NAIP.exists() and LANDSAT.exists()):
        pytest.skip(f"sample imagery not found at {DATA} (../shared/data beside the project)")
    return SimpleNamespace(naip=NAIP, landsat=LANDSAT, data=DATA, crop=crop_rgb, write_qa=write_qa,
                           split_folders=split_folders)
