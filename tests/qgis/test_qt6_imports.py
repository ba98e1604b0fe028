"""QGIS 4 readiness: every plugin module imports under PyQt6 with QGIS stubbed; Qt enums are scoped."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_every_plugin_module_imports_under_pyqt6():
    probe = subprocess.run([sys.executable, "-c", "import PyQt6.QtNetwork"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("PyQt6 is not installed (Debian: python3-pyqt6; make qgis-deps installs it)")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH="")
    result = subprocess.run([sys.executable, str(Path(__file__).with_name("qt6_import_check.py")), str(ROOT)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK"), result.stdout
    assert int(result.stdout.split("modules: ")[1].split()[0]) >= 15
