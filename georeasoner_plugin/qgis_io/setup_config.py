"""Set-up facts on the QGIS side: the chosen mode, the install plan for this machine, tokens kept in
QGIS's authentication manager, and where the demo's files are."""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Optional

from qgis.core import QgsApplication, QgsAuthMethodConfig, QgsSettings

from .installer import Hardware, InstallPlan, PythonLayout, detect_hardware, make_plan, venv_dir

PREFIX = "georeasoner/setup/"
MODE_NONE, MODE_LOCAL, MODE_REMOTE, MODE_DEMO = "", "local", "remote", "demo"
PLUGIN_DIR = Path(__file__).resolve().parents[1]
DEMO_ANSWER = "naip_lakes_remotereasoner.txt"

_hardware: Optional[Hardware] = None


def get(name: str, default: str = "") -> str:
    return str(QgsSettings().value(PREFIX + name, default) or default)


def put(name: str, value: str) -> None:
    QgsSettings().setValue(PREFIX + name, value)


def mode() -> str:
    return get("mode")


def profile_dir() -> Path:
    """The QGIS profile folder, or GEOREASONER_HOME (a larger disk for the venv and models)."""
    home = os.environ.get("GEOREASONER_HOME", "").strip()
    return Path(home) if home else Path(QgsApplication.qgisSettingsDirPath())


def work_dir() -> Path:
    """<QGIS profile>/georeasoner: the venv, tiny models, the local backend's token."""
    return profile_dir() / "georeasoner"


def qgis_layout() -> PythonLayout:
    return PythonLayout(sys.platform, sys.executable, sys.base_prefix, tuple(sys.version_info[:2]))


def hardware(refresh: bool = False) -> Hardware:
    global _hardware
    if _hardware is None or refresh:
        _hardware = detect_hardware(sys.platform, platform.machine(), profile_dir())
    return _hardware


def current_plan(requirements=None) -> InstallPlan:
    return make_plan(qgis_layout(), hardware(), profile_dir(), index_url=get("torch_index_url"),
                     requirements=requirements)


def backend_python() -> Path:
    """The Python that runs backend commands: the one configured (an existing backend), else the venv's."""
    from ..toolbelt.settings import Settings
    configured = Settings.load().python_path.strip()
    if configured and Path(configured).exists():
        return Path(configured)
    return current_plan().python


def demo_answer_path() -> Path:
    """The recorded RemoteReasoner answer the demo replays: in the plugin zip, or the checkout's examples/."""
    for candidate in (PLUGIN_DIR / "examples" / DEMO_ANSWER, PLUGIN_DIR.parent / "examples" / DEMO_ANSWER):
        if candidate.is_file():
            return candidate
    return PLUGIN_DIR / "examples" / DEMO_ANSWER


# QGIS's "API Header" method puts its config entries on each request as headers (updateNetworkRequest),
# so the service's bearer token travels exactly as the backend expects it.
AUTH_METHOD = "APIHeader"
AUTH_HEADER = "Authorization"
BEARER = "Bearer "


def store_token(name: str, token: str, existing_id: str = "") -> str:
    """Keep a token in QGIS's authentication manager as an API-header config ("Authorization: Bearer
    <token>"); returns the config id. Raises RuntimeError with what to do when the manager cannot store it."""
    manager = QgsApplication.authManager()
    if manager.isDisabled():
        raise RuntimeError("QGIS's authentication manager is disabled (" + manager.disabledMessage() + "); "
                           "enable it, or use a token file in Options > GeoReasoner.")
    config = QgsAuthMethodConfig()
    if existing_id and manager.loadAuthenticationConfig(existing_id, config, True) and config.method() == AUTH_METHOD:
        config.setConfig(AUTH_HEADER, BEARER + token)
        if manager.updateAuthenticationConfig(config):
            return existing_id
    config = QgsAuthMethodConfig(AUTH_METHOD)
    config.setName(name)
    config.setConfig(AUTH_HEADER, BEARER + token)
    stored = manager.storeAuthenticationConfig(config)
    ok = stored[0] if isinstance(stored, tuple) else stored
    if not ok or not config.id():
        raise RuntimeError("QGIS could not store the token (is the authentication database's master password "
                           "set? Settings > Options > Authentication).")
    return config.id()


def read_auth_token(authcfg: str) -> str:
    """The token of a config made by store_token (or a Basic config whose password is the token)."""
    if not authcfg:
        return ""
    config = QgsAuthMethodConfig()
    if not QgsApplication.authManager().loadAuthenticationConfig(authcfg, config, True):
        return ""
    header = (config.config(AUTH_HEADER, "") or "").strip()
    if header.startswith(BEARER):
        return header[len(BEARER):].strip()
    return (config.config("password", "") or "").strip()


__all__ = ["venv_dir", "mode", "put", "get", "current_plan", "hardware", "store_token", "work_dir"]
