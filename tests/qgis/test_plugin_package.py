"""The built zip installs into a fresh profile, loads and unloads without leftovers (real QGIS)."""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, str(ROOT / "build.py"), "--out", str(out)], capture_output=True,
                            text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    (zip_path,) = out.glob("georeasoner_plugin-*.zip")
    return zip_path


def test_zip_contents(plugin_zip):
    with zipfile.ZipFile(plugin_zip) as zf:
        names = zf.namelist()
    assert {n.split("/")[0] for n in names} == {"georeasoner_plugin"}
    for required in ("metadata.txt", "LICENSE", "__init__.py", "plugin.py", "resources/icon.svg",
                     "requirements-backend.txt", "i18n/georeasoner_zh_CN.qm", "core/protocol.py"):
        assert f"georeasoner_plugin/{required}" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "/." in n or "tests/" in n
                or "training/" in n]
    assert plugin_zip.stat().st_size < 25 * 1024 * 1024


def run_lifecycle(plugin_zip, tmp_path, locale):
    profile = tmp_path / "profiles" / "fresh"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH="")
    result = subprocess.run([sys.executable, str(Path(__file__).with_name("plugin_lifecycle.py")), str(plugin_zip),
                             str(profile), locale], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=300)
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("REPORT ")]
    assert lines, f"no report; exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return json.loads(lines[-1][len("REPORT "):]), profile


def test_install_load_unload_without_leftovers(plugin_zip, tmp_path):
    report, profile = run_lifecycle(plugin_zip, tmp_path, "en_US")
    assert report["available"] and report["loaded"] and report["started"], report
    assert report["metadata_name"] == "GeoReasoner"
    assert report["module_file"].startswith(str(profile)), "the plugin must come from the fresh profile"
    assert report["provider_loaded"] and report["algorithm"]
    assert report["dock_loaded"] == 1 and report["action_loaded"] == 1
    assert report["toolbar_icons"] == 1 and report["menu_entries"] == 2  # the dock's action and Help
    assert report["help_url"].endswith(("README.md", "#readme"))
    assert report["options_factory_registered"] == 1
    assert report["unloaded"], report
    assert not report["provider_after"], "Processing provider left behind"
    assert report["dock_after"] == 0, "dock left behind"
    assert report["action_after"] == 0, "action left behind"
    assert report["toolbar_icons_after"] == 0 and report["menu_entries_after"] == 0
    assert report["options_factory_unregistered"] == 1
    # QGIS's unloadPlugin drops the modules its import hook recorded (it skips bare subpackage
    # __init__ modules such as georeasoner_plugin.gui, which hold nothing of ours)
    leftovers = [m for m in report["modules_after"] if m.count(".") != 1 or m.split(".")[1] not in
                 ("core", "gui", "processing", "qgis_io", "toolbelt")]
    assert leftovers == [], f"modules left imported: {leftovers}"


def test_loads_the_translation_for_qgis_locale(plugin_zip, tmp_path):
    report, _ = run_lifecycle(plugin_zip, tmp_path, "zh_CN")
    assert report["translated"] == "提问"
    assert "GeoReasoner" in report["action_text"] and report["action_text"] != "GeoReasoner: ask the map"
    assert report["translated_after"] == "Ask", "translator left installed after unload"


def test_simplified_chinese_translation_is_complete():
    """Every tr() string of the plugin has a finished zh_CN translation that keeps its placeholders."""
    import re
    import xml.etree.ElementTree as ET

    sys.path.insert(0, str(ROOT / "i18n"))
    import update_translations

    sources = update_translations.extract()
    root = ET.parse(ROOT / "i18n" / "georeasoner_zh_CN.ts").getroot()
    done = {}
    for message in root.iter("message"):
        translation = message.find("translation")
        if translation is not None and translation.text and translation.get("type") is None:
            done[message.findtext("source")] = translation.text
    missing = [s for s in sources if s not in done]
    assert not missing, f"untranslated: {missing}"
    for source in sources:
        assert sorted(re.findall(r"\{\d[^}]*\}", source)) == sorted(re.findall(r"\{\d[^}]*\}", done[source])), source
