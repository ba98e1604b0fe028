"""The "Ask imagery" Processing algorithm through processing.run and through qgis_process."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from osgeo import ogr
from qgis.core import QgsApplication, QgsProcessingFeedback, QgsProject

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "Which lakes could supply irrigation water?"


@pytest.fixture()
def provider(qgis_processing):
    from georeasoner_plugin.processing.provider import GeoReasonerProvider

    registry = QgsApplication.processingRegistry()
    p = GeoReasonerProvider()
    registry.addProvider(p)
    yield p
    registry.removeProvider(p)


class RecordingFeedback(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.infos, self.progress_texts = [], []

    def pushInfo(self, info):  # noqa: N802
        self.infos.append(info)
        super().pushInfo(info)

    def setProgressText(self, text):  # noqa: N802
        self.progress_texts.append(text)
        super().setProgressText(text)


def test_processing_run(provider, replay_backend, settings_for, naip_path, tmp_path):
    import processing
    from georeasoner_plugin.qgis_io.layers import project_answer_ids

    settings_for(None, token_file=str(replay_backend.token_file))  # the URL points nowhere: BACKEND_URL wins
    out = tmp_path / "out.gpkg"
    feedback = RecordingFeedback()
    project = QgsProject.instance()
    project.clear()
    result = processing.run("georeasoner:ask_imagery", {
        "INPUT": str(naip_path), "QUESTION": QUESTION, "RESOLUTION": 0, "BACKEND_URL": replay_backend.url,
        "PROFILE": "remotereasoner",
        "BOXES": f"ogr:dbname='{out}' table=\"boxes\" (geom)",
        "POINTS": str(tmp_path / "points.gpkg"),
        "CONTOURS": str(tmp_path / "contours.shp"),
        "MASK": str(tmp_path / "mask.tif"),
    }, feedback=feedback)  # an explicit feedback: the stub iface has no real message bar
    ds = ogr.Open(str(out))  # keep the data source alive while its layer is used
    boxes = ds.GetLayerByName("boxes")
    assert boxes.GetFeatureCount() == 4
    srs = boxes.GetSpatialRef()
    srs.AutoIdentifyEPSG()
    assert srs.GetAuthorityCode(None) == "26914"
    # read at native resolution over the whole raster: the boxes lie inside the raster's extent
    from osgeo import gdal
    gt = gdal.Open(str(naip_path)).GetGeoTransform()
    minx, maxx, miny, maxy = boxes.GetExtent()
    assert gt[0] <= minx < maxx <= gt[0] + 934 * gt[1] and gt[3] + 723 * gt[5] <= miny < maxy <= gt[3]
    contours = ogr.Open(str(tmp_path / "contours.shp"))
    assert contours.GetLayer(0).GetFeatureCount() >= 1
    assert result["BOXES"].startswith(str(out))
    points_ds = ogr.Open(str(tmp_path / "points.gpkg"))
    assert points_ds.GetLayer(0).GetFeatureCount() == 4  # remotereasoner: each box centre, the point SAM2 got
    mask = gdal.Open(result["MASK"])
    assert mask.GetGeoTransform() == pytest.approx(gt) and mask.GetRasterBand(1).ReadAsArray().max() == 4
    assert any("lakes" in line for line in feedback.infos), "the reasoning goes to the Processing log"
    assert "segment" in feedback.progress_texts
    # in QGIS (an interface is there) the answer joins the project's history
    assert len(project_answer_ids(project)) == 1


def test_processing_boxes_only_skips_sam_and_checks_the_profile(provider, replay_backend, settings_for, naip_path,
                                                                 tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    settings_for(replay_backend)
    feedback = RecordingFeedback()
    result = processing.run("georeasoner:ask_imagery", {"INPUT": str(naip_path), "QUESTION": QUESTION,
                                                        "BOXES": str(tmp_path / "b.gpkg")}, feedback=feedback)
    assert set(k for k, v in result.items() if v) == {"BOXES"}
    assert "segment" not in feedback.progress_texts  # SAM2 is not asked for boxes
    with pytest.raises(QgsProcessingException, match="remotereasoner"):  # the backend's list is in the message
        processing.run("georeasoner:ask_imagery", {"INPUT": str(naip_path), "QUESTION": QUESTION,
                                                   "PROFILE": "no-such-profile", "BOXES": str(tmp_path / "c.gpkg")},
                       feedback=QgsProcessingFeedback())


def readme_command() -> list:
    """The README's qgis_process example, as written."""
    import shlex

    lines = [ln for ln in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
             if ln.startswith("qgis_process run georeasoner:ask_imagery")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0])


def test_qgis_process_readme_example(replay_backend, naip_path, tmp_path):
    """The README's command runs as written (only the backend's port differs), headless, with nothing
    in QGIS3.ini: BACKEND_URL on the command line, the token through GEOREASONER_TOKEN_FILE."""
    qgis_process = shutil.which("qgis_process")
    if not qgis_process:
        pytest.skip("qgis_process is not installed (Debian package qgis)")
    out = subprocess.run([sys.executable, str(ROOT / "build.py"), "--out", str(tmp_path / "dist"),
                          "--no-translations"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    (plugin_zip,) = (tmp_path / "dist").glob("*.zip")
    config_root = tmp_path / "qgis-config"  # a fresh profile root (QGIS_CUSTOM_CONFIG_PATH)
    plugins = config_root / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(plugin_zip) as zf:
        zf.extractall(plugins)
    env = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(config_root), QT_QPA_PLATFORM="offscreen", PYTHONPATH="",
               GEOREASONER_TOKEN_FILE=str(replay_backend.token_file))
    work = tmp_path / "work"
    work.mkdir()
    (work / "naip.tif").symlink_to(naip_path)
    enable = subprocess.run([qgis_process, "plugins", "enable", "georeasoner_plugin"], capture_output=True,
                            text=True, env=env, timeout=300, cwd=work)
    assert enable.returncode == 0, enable.stdout + enable.stderr
    command = readme_command()
    assert command[:3] == ["qgis_process", "run", "georeasoner:ask_imagery"]
    args = [a.replace("http://127.0.0.1:8765", replay_backend.url) for a in command[1:]]
    run = subprocess.run([qgis_process, "--json"] + args, capture_output=True, text=True, env=env, timeout=600,
                         cwd=work)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(run.stdout[run.stdout.index("{"):])
    assert set(k for k, v in report["results"].items() if v) == {"BOXES"}
    ds = ogr.Open(str(work / "boxes.gpkg"))
    assert ds.GetLayer(0).GetFeatureCount() == 4
    ini = config_root / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    assert not ini.exists() or "backend_url" not in ini.read_text()
