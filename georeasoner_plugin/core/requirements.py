"""The backend venv's pinned requirements, made from pyproject.toml: one list for build.py (the
plugin zip's requirements-backend.txt) and the plugin's installer in a source checkout.

torch comes first and on its own lines (the installer installs it with the pip arguments of the
build that fits the hardware); then `[tool.georeasoner] backend-pins`: the exact versions the tests
run with, one per `backend` extra.
"""
from __future__ import annotations

import importlib
import re
from types import ModuleType
from typing import Any, Dict, List, Optional

toml: Optional[ModuleType]
try:
    toml = importlib.import_module("tomllib")
except ImportError:  # Python 3.10 (QGIS on some systems): the file is simple enough for a fallback
    toml = None

HEADER = [
    "# Backend venv for the GeoReasoner plugin (torch lives here, never inside QGIS).",
    "# The plugin's set-up panel installs it (Install a local backend). By hand:",
    "#   python3 -m venv ~/georeasoner-backend",
    "#   ~/georeasoner-backend/bin/pip install -r requirements-backend.txt",
    "# then name ~/georeasoner-backend/bin/python in Settings > Options > GeoReasoner > Local backend.",
]


def _load(text: str) -> Dict[str, Any]:
    if toml is not None:
        loaded: Dict[str, Any] = toml.loads(text)
        return loaded
    # Fallback for Python < 3.11: only the [tool.georeasoner] lists are needed.
    section = text.split("[tool.georeasoner]", 1)[1].split("\n[", 1)[0]
    out: Dict[str, List[str]] = {}
    for key, body in re.findall(r"^([\w-]+)\s*=\s*\[(.*?)\]", section, re.S | re.M):
        out[key] = re.findall(r'"([^"]+)"', body)
    return {"tool": {"georeasoner": out}}


def requirement_lines(pyproject_text: str, header: bool = True) -> List[str]:
    tool = _load(pyproject_text)["tool"]["georeasoner"]
    return (HEADER if header else []) + list(tool["torch"]) + list(tool["backend-pins"])
