"""Plugin settings as one typed structure over QgsSettings (key prefix "georeasoner/")."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path

from qgis.core import QgsSettings

from ..core.api import token_file_path

PREFIX = "georeasoner/"
DEFAULT_URL = "http://127.0.0.1:8765"


@dataclass
class Settings:
    backend_url: str = DEFAULT_URL
    authcfg: str = ""  # QGIS authentication manager config holding the token (password field)
    token_file: str = ""  # read the token from this file (a local backend's token); "" = default path
    timeout_s: float = 120.0  # no byte from the backend for this long = timed out
    connect_timeout_s: float = 10.0
    capture_source: str = "canvas"  # canvas | raster
    ground_resolution: float = 0.0  # map units per pixel for raster reads; 0 = native
    max_image_size: int = 2048  # long side of a capture, pixels
    outputs: str = "boxes,points,masks,contours"
    profile: str = ""  # "" = the backend's default
    # local backend
    python_path: str = ""
    reasoner: str = ""
    segmenter: str = ""
    reasoner_output: str = ""  # replay a recorded answer (testing, demos)
    local_port: int = 0  # 0 = any free port
    autostart: bool = False

    @classmethod
    def load(cls) -> "Settings":
        qs = QgsSettings()
        values = {}
        for f in fields(cls):
            default = f.default
            kind = type(default)
            raw = qs.value(PREFIX + f.name, default)
            try:
                if kind is bool:
                    value = raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes")
                else:
                    value = kind(raw)
            except (TypeError, ValueError):
                value = default
            values[f.name] = value
        return cls(**values)

    def save(self) -> None:
        qs = QgsSettings()
        for f in fields(self):
            qs.setValue(PREFIX + f.name, getattr(self, f.name))

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    def token_path(self) -> Path:
        """The token file this plugin reads: the backend's own rule (core/api.py token_file_path)."""
        return token_file_path(self.token_file)

    def output_list(self):
        return [o.strip() for o in self.outputs.split(",") if o.strip()]
