"""Plugin settings: typed QgsSettingsEntry* objects (with defaults) under the plugin's settings tree
node (keys "plugins/georeasoner/<name>"), read and written as one `Settings` structure.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Dict

from qgis.core import (
    QgsSettingsEntryBool,
    QgsSettingsEntryDouble,
    QgsSettingsEntryInteger,
    QgsSettingsEntryString,
    QgsSettingsTree,
)

from ..core.api import token_file_path

PLUGIN_NODE = "georeasoner"
DEFAULT_URL = "http://127.0.0.1:8765"


@dataclass
class Settings:
    backend_url: str = DEFAULT_URL
    authcfg: str = ""  # QGIS authentication manager config holding the token (password field)
    token_file: str = ""  # read the token from this file (a local backend's token); "" = default path
    timeout_s: float = 120.0  # no byte from the backend for this long = timed out
    connect_timeout_s: float = 10.0
    capture_source: str = "canvas"  # canvas | raster | aoi | layer_extent | features
    ground_resolution: float = 0.0  # map units per pixel for raster reads; 0 = native
    max_image_size: int = 2048  # long side of a capture, pixels
    outputs: str = "boxes,points,masks,contours"
    profile: str = ""  # "" = the backend's default
    zoom_to_answer: bool = False  # zoom the canvas to each new answer (changes the next canvas capture)
    # advanced request options (the dock's "Advanced" fold)
    min_area: float = 0.0  # pixels; smaller polygons are dropped
    simplify_tolerance: float = 0.0  # pixels
    temperature: float = 0.0
    seed: int = -1  # -1 = none
    max_new_tokens: int = 1024
    # local backend
    python_path: str = ""
    reasoner: str = ""
    segmenter: str = ""
    reasoner_output: str = ""  # replay a recorded answer (testing, demos)
    local_port: int = 0  # 0 = any free port
    autostart: bool = False

    @classmethod
    def load(cls) -> "Settings":
        entries = _entries()
        values = {}
        for f in fields(cls):
            raw = entries[f.name].valueAsVariant()
            kind = type(f.default)
            try:
                values[f.name] = (str(raw).lower() in ("1", "true", "yes") if kind is bool and not isinstance(raw, bool)
                                  else kind(raw))
            except (TypeError, ValueError):
                values[f.name] = f.default
        return cls(**values)

    def save(self) -> None:
        entries = _entries()
        for f in fields(self):
            entries[f.name].setVariantValue(getattr(self, f.name))

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    def token_path(self) -> Path:
        """The token file this plugin reads: the backend's own rule (core/api.py token_file_path)."""
        return token_file_path(self.token_file)

    def output_list(self):
        return [o.strip() for o in self.outputs.split(",") if o.strip()]


_ENTRIES: Dict[str, object] = {}


def _entries() -> Dict[str, object]:
    """One typed entry per Settings field, made once per QGIS session (a plugin reload reuses them)."""
    if _ENTRIES:
        return _ENTRIES
    node = QgsSettingsTree.createPluginTreeNode(PLUGIN_NODE)  # returns the existing node on a plugin reload
    kinds = {str: QgsSettingsEntryString, bool: QgsSettingsEntryBool, int: QgsSettingsEntryInteger,
             float: QgsSettingsEntryDouble}
    for f in fields(Settings):
        entry = node.childSetting(f.name)
        if entry is None:
            entry = kinds[type(f.default)](f.name, node, f.default)
        _ENTRIES[f.name] = entry
    return _ENTRIES


def unregister() -> None:
    """Drop the settings tree node (plugin unload)."""
    _ENTRIES.clear()
    try:
        QgsSettingsTree.unregisterPluginTreeNode(PLUGIN_NODE)
    except Exception:  # noqa: BLE001 - already gone
        pass

