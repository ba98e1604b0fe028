"""The CLI's GeoPackage carries exactly core/fields.py's columns and values (one schema for every writer).

The plugin's exported layer is compared with the same schema in tests/qgis; together they show that
a GeoPackage from the CLI and a layer from the plugin carry the same columns with the same values.
"""
import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest

pyogrio = pytest.importorskip("pyogrio")
pytest.importorskip("pyproj")
shapely = pytest.importorskip("shapely")

from georeasoner_plugin.backend import cli  # noqa: E402
from georeasoner_plugin.core.fields import feature_attributes, field_names, fields_for  # noqa: E402
from georeasoner_plugin.core.protocol import Answer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NAIP = ROOT.parent / "shared" / "data" / "naip_nd_2020.tif"
RECORDED = ROOT / "examples" / "naip_lakes_remotereasoner.txt"

pytestmark = pytest.mark.skipif(not NAIP.exists(), reason=f"sample imagery not found at {NAIP} (../shared/data)")


def read(path, layer):
    meta, _, wkb, columns = pyogrio.raw.read(path, layer=layer, datetime_as_string=True)
    return list(meta["fields"]), shapely.from_wkb(wkb), [dict(zip(meta["fields"], row)) for row in zip(*columns)]


@pytest.mark.parametrize("suffix", [".gpkg", ".shp"])
def test_cli_output_columns_and_values_are_core_fields(tmp_path, tiny_models, capsys, suffix):
    out = tmp_path / f"lakes{suffix}"
    code = cli.main(["ask", str(NAIP), "Which lakes could supply irrigation water?", "-o", str(out),
                     "--reasoner-output", str(RECORDED), "--segmenter", str(tiny_models["segmenter"]), "--quiet"])
    assert code == 0, capsys.readouterr().err
    answer = Answer.from_json(out.with_name("lakes_answer.json").read_text())
    assert answer.objects and all(o.polygons for o in answer.objects)
    objects = {o.index: o for o in answer.objects}
    created = feature_attributes(answer, answer.objects[0])["created"]
    for layer in ("boxes", "points", "contours"):
        path, name = (out, layer) if suffix == ".gpkg" else (tmp_path / f"lakes_{layer}.shp", None)
        names, geometries, rows = read(path, name)
        assert names == field_names(layer)  # exactly the schema's columns, in its order
        assert rows, layer
        for geometry, row in zip(geometries, rows):
            obj = objects[row["obj_index"]]
            expected = feature_attributes(answer, obj, raster="naip_nd_2020", point_no=row.get("point_no"),
                                          area_m2=row["area_m2"])
            for field in fields_for(layer):
                value = row[field.name]
                if field.name == "created":
                    written = dt.datetime.fromisoformat(str(value).replace("/", "-").replace("Z", "+00:00"))
                    assert written.replace(tzinfo=dt.timezone.utc) == created == expected["created"]
                elif field.name in ("score", "box_score"):
                    if expected[field.name] is None:  # a replayed answer has no box_score: null
                        assert value is None or value != value
                    else:
                        assert value == pytest.approx(expected[field.name], rel=1e-12)
                elif field.name == "area_m2":
                    if layer == "points":
                        assert value is None or value != value  # null (NaN in a shapefile)
                    else:
                        # Ellipsoidal m² on NAD83; the UTM plane's scale error is far below 0.2 % here.
                        assert value == pytest.approx(geometry.area, rel=2e-3) and value > 0
                elif suffix == ".shp" and expected[field.name] == "":
                    assert value in ("", None), (layer, field.name)  # dBASE cannot tell '' from null
                else:
                    assert value == expected[field.name], (layer, field.name)
    if suffix == ".gpkg":  # the creation time is a GeoPackage date-time in UTC
        with sqlite3.connect(out) as db:
            (text,) = db.execute("SELECT created FROM boxes LIMIT 1").fetchone()
            (kind,) = [r[2] for r in db.execute("PRAGMA table_info(boxes)") if r[1] == "created"]
        assert kind == "DATETIME" and text.endswith("Z")
    json.loads(out.with_name("lakes_answer.json").read_text())  # still valid JSON beside the vectors
