"""The CLI's GeoPackage and the plugin's exported GeoPackage for the same answer carry the same
columns with the same values (core/fields.py is the one schema; issue 11 point 2).

The CLI runs for real in the backend venv on the NAIP sample (a replayed, hand-written answer);
its answer JSON is then stored and exported by the plugin in real QGIS, on the same raster grid.
"""
import datetime as dt
import re
import subprocess
from pathlib import Path

import pytest
from osgeo import gdal, ogr
from qgis.core import QgsProject, QgsRasterLayer

from georeasoner_plugin.core.fields import field_names
from georeasoner_plugin.core.georef import GeoTransform
from georeasoner_plugin.core.protocol import Answer
from georeasoner_plugin.qgis_io.export import export_answers
from georeasoner_plugin.qgis_io.features import georeference
from georeasoner_plugin.qgis_io.store import AnswerStore

from conftest import BACKEND_PY, backend_available

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "examples" / "naip_lakes_remotereasoner.txt"
KINDS = ("boxes", "points")


def rows(path: Path, layer_suffix: str):
    """{column: [values]} of the one layer whose name ends with layer_suffix, in feature order."""
    dataset = ogr.Open(str(path))
    (layer,) = [dataset.GetLayerByIndex(i) for i in range(dataset.GetLayerCount())
                if dataset.GetLayerByIndex(i).GetName().endswith(layer_suffix)]
    definition = layer.GetLayerDefn()
    names = [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())]
    out = {name: [] for name in names}
    layer.ResetReading()
    for feature in layer:
        for name in names:
            out[name].append(feature.GetField(name))
    return names, out


def utc(text):
    """A GeoPackage date-time as OGR reads it ('2026/12/01 17:00:00+00', or ISO 8601), in UTC."""
    text = text.replace("/", "-").replace("Z", "+00:00")
    if re.search(r"[+-]\d\d$", text):
        text += ":00"
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def test_cli_and_plugin_geopackages_have_the_same_columns_and_values(naip_path, tmp_path):
    reason = backend_available()
    if reason:
        pytest.skip(reason)
    cli_gpkg = tmp_path / "cli.gpkg"
    run = subprocess.run([str(BACKEND_PY), "-m", "georeasoner_plugin.backend.cli", "ask", str(naip_path),
                          "Which lakes could supply irrigation water?", "-o", str(cli_gpkg), "--reasoner-output",
                          str(RECORDED), "--outputs", "boxes,points", "--quiet"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    answer = Answer.from_json((tmp_path / "cli_answer.json").read_text(encoding="utf-8"))
    assert answer.objects

    # The plugin stores and exports that very answer, georeferenced on the raster's own grid (the
    # CLI read the raster at native resolution: 934 x 723 is under its --max-size).
    layer = QgsRasterLayer(str(naip_path), Path(naip_path).stem, "gdal")
    assert layer.isValid() and (answer.image_width, answer.image_height) == (layer.width(), layer.height())
    transform = GeoTransform.from_gdal(gdal.Open(str(naip_path)).GetGeoTransform())
    project = QgsProject.instance()
    geo = georeference(answer, transform, layer.crs(), [layer.name()], "raster", project.transformContext())
    stored = AnswerStore(tmp_path / "store.gpkg", project.transformContext()).add(geo)
    plugin_gpkg = tmp_path / "plugin.gpkg"
    export_answers([stored], plugin_gpkg, "gpkg", project=project)

    for kind in KINDS:
        cli_names, cli_values = rows(cli_gpkg, kind)
        plugin_names, plugin_values = rows(plugin_gpkg, f"_{kind}")
        assert cli_names == plugin_names == field_names(kind), kind
        for name in cli_names:
            a, b = cli_values[name], plugin_values[name]
            assert len(a) == len(b) == (len(answer.objects) if kind == "boxes" else
                                        sum(len(o.points) for o in answer.objects)), (kind, name)
            if name == "created":
                assert [utc(v) for v in a] == [utc(v) for v in b], (kind, a, b)
            elif name == "area_m2" and kind == "boxes":
                # both ellipsoidal (pyproj's GeographicLib / QgsDistanceArea): equal to well under 0.01 %
                assert all(x == pytest.approx(y, rel=1e-4) for x, y in zip(a, b)), (a, b)
            else:
                assert a == b, (kind, name, a, b)
