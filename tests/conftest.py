"""Fixtures for every backend-side test folder: tiny random Qwen2.5-VL and SAM2, built once a session.

torch is imported lazily so the QGIS-side tests (tests/qgis, run in QGIS's own interpreter) can
share this file.
"""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# `pytest` started as a script puts its own directory first on sys.path, not the project's.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """{'reasoner': dir, 'segmenter': dir} of freshly built tiny models (safetensors on disk)."""
    pytest.importorskip("torch")
    from georeasoner_plugin.backend.tiny import make_tiny_models

    return make_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def tiny_reasoner(tiny_models):
    from georeasoner_plugin.backend.reasoner import Reasoner

    return Reasoner(str(tiny_models["reasoner"]), device="cpu")


@pytest.fixture(scope="session")
def tiny_segmenter(tiny_models):
    from georeasoner_plugin.backend.segmenter import Segmenter

    return Segmenter(str(tiny_models["segmenter"]), device="cpu", cache_size=4)


@pytest.fixture(scope="session")
def tiny_qwen3_models(tmp_path_factory):
    """{'reasoner_qwen3', 'segmenter_sam3', 'instances_sam3': dir}: tiny random Qwen3-VL, SAM 3 tracker
    and SAM 3 detector (issue 12).

    Taken from the `make tiny` folder when its manifest lists them (GEOREASONER_TINY_DIR, else
    .cache/tiny-models), built into a temporary folder otherwise (an older manifest lacks them).
    """
    import json
    import os

    pytest.importorskip("torch")
    roles = ("reasoner_qwen3", "segmenter_sam3", "instances_sam3")
    manifest = Path(os.environ.get("GEOREASONER_TINY_DIR", ROOT / ".cache" / "tiny-models")) / "models.json"
    try:
        listed = json.loads(manifest.read_text(encoding="utf-8"))
        found = {role: Path(listed[role]) for role in roles}
        if all((path / "config.json").is_file() for path in found.values()):
            return found
    except (OSError, ValueError, KeyError, TypeError):
        pass
    from georeasoner_plugin.backend.tiny import make_tiny_models

    return make_tiny_models(tmp_path_factory.mktemp("tiny-qwen3-models"), roles=roles)
