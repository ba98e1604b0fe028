"""`georeasoner ask` end to end on real GeoTIFFs with tiny real models, as a user runs it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pyogrio = pytest.importorskip("pyogrio")
rasterio = pytest.importorskip("rasterio")
shapely = pytest.importorskip("shapely")

from georeasoner_plugin.backend import cli  # noqa: E402
from georeasoner_plugin.core.profiles import get_profile  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
NAIP = DATA / "naip_nd_2020.tif"
RECORDED = ROOT / "examples" / "naip_lakes_remotereasoner.txt"

needs_data = pytest.mark.skipif(not NAIP.exists(), reason=f"sample imagery not found at {DATA} (../shared/data)")


def run_cli(args, capsys):
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return code, captured.out, captured.err


def files_in(directory: Path):
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@needs_data
def test_recorded_answer_lands_on_the_naip_pixels(tmp_path, tiny_models, capsys):
    out = tmp_path / "lakes.gpkg"
    code, stdout, stderr = run_cli(["ask", NAIP, "Which lakes could supply irrigation water?", "-o", out,
                                    "--reasoner-output", RECORDED, "--segmenter", tiny_models["segmenter"]], capsys)
    assert code == 0, stderr
    assert "Reasoning:" in stdout and "north-east corner" in stdout
    assert sorted(pyogrio.list_layers(out)[:, 0]) == ["boxes", "contours", "points"]
    meta, _, geometry, fields = pyogrio.raw.read(out, layer="boxes")
    assert len(geometry) == 4
    with rasterio.open(NAIP) as src:
        transform, crs = src.transform, src.crs
    assert pyogrio.read_info(out, layer="boxes")["crs"] in (crs.to_string(), f"EPSG:{crs.to_epsg()}")
    # The recorded answer is in RemoteReasoner's smart-resize frame; its first box is the big lake.
    frame = get_profile("remotereasoner").frame.frame_for(934, 723)
    expected = frame.box_to_image((821, 15, 873, 118))
    first = shapely.from_wkb(geometry[0])
    minx, miny, maxx, maxy = first.bounds
    col1, row1 = ~transform @ (minx, maxy)
    col2, row2 = ~transform @ (maxx, miny)
    assert abs(col1 - expected[0]) < 1e-6 and abs(row1 - expected[1]) < 1e-6
    assert abs(col2 - expected[2]) < 1e-6 and abs(row2 - expected[3]) < 1e-6
    with rasterio.open(out.with_name("lakes_mask.tif")) as mask:
        assert mask.transform == transform and mask.crs == crs and (mask.width, mask.height) == (934, 723)
    answer = json.loads(out.with_name("lakes_answer.json").read_text())
    assert answer["parse"]["status"] == "ok" and len(answer["objects"]) == 4
    assert all(o["polygons"] for o in answer["objects"]) and all(o["mask"] for o in answer["objects"])


@needs_data
def test_shapefile_folder_output(tmp_path, tiny_models, capsys):
    out = tmp_path / "shp"
    code, _, stderr = run_cli(["ask", NAIP, "lakes", "-o", f"{out}/", "--reasoner-output", RECORDED,
                               "--segmenter", tiny_models["segmenter"], "--outputs", "boxes,contours"], capsys)
    assert code == 0, stderr
    names = files_in(out)
    for layer in ("boxes", "contours"):
        for ext in (".shp", ".shx", ".dbf", ".prj", ".cpg"):
            assert f"{layer}{ext}" in names, names
    assert not any(n.startswith("points") for n in names) and "mask.tif" not in names


@needs_data
def test_tiny_reasoner_generates_on_the_geotiff(tmp_path, tiny_models, capsys):
    """Random weights write random text: the CLI must say the answer is unreadable, write nothing."""
    out = tmp_path / "tiny.gpkg"
    code, _, stderr = run_cli(["ask", NAIP, "Which lakes?", "-o", out, "--reasoner", tiny_models["reasoner"],
                               "--segmenter", tiny_models["segmenter"], "--max-new-tokens", "24", "--seed", "1"],
                              capsys)
    if code == 0:  # a random model may by chance write "[]" or a box: then files exist and are valid
        assert out.exists()
    else:
        assert code == cli.EXIT_FAILED and "could not be read" in stderr and "Nothing was written" in stderr
        assert files_in(tmp_path) == []


MALFORMED_OUTPUTS = [
    "",
    "I am sorry, I cannot see any image.",
    "<think>The lake is dark.</think>",
    "<think>The lake is dark.</think><answer></answer>",
    "<think>x</think><answer>the big lake in the north</answer>",
    "<think>x</think><answer>[[1,2,3]]</answer>",
    "<think>x</think><answer>[[\"a\",\"b\",\"c\",\"d\"]]</answer>",
    "<think>x</think><answer>[[NaN, 1, 2, 3]]</answer>",
    "<think>x</think><answer>[[1e999, 1, 2, 3]]</answer>",
    "<think>x</think><answer>[[true, true, false, false]]</answer>",
    "<think>x</think><answer>" + "[" * 3000 + "]" * 3000 + "</answer>",
    "<think>x</think><answer>{\"bbox_2d\": null}</answer>",
    "<think>x</think><answer>__import__('os').system('rm -rf /')</answer>",
    "<think>x</think><answer>42</answer>",
    "<think>x</think><answer>{\"label\": \"lake\"}</answer>",
    "<think>x</think><answer>[[\"1\", null, {}, []]]</answer>",
    "<think>x</think><answer>[[5000, 5000, 6000, 6000]]</answer>",  # entirely outside the image
    "<think>x</think><answer>[[10, 10, 10, 10]]</answer>",  # zero-size box
    "<think>x</think><answer>[[-900, -900, -800, -800], [2000, 10, 2100, 20]]</answer>",
    "\x00\x01\x02 binary junk \xff",
    "<answer>" + "{" * 10000 + "</answer>",
    "<think>x</think><answer>[{\"bbox_2d\": \"x\", \"point_2d\": \"here\"}]</answer>",
]


@needs_data
@pytest.mark.parametrize("raw", MALFORMED_OUTPUTS, ids=[f"malformed{i}" for i in range(len(MALFORMED_OUTPUTS))])
def test_malformed_model_outputs_fail_clearly_and_write_nothing(raw, tmp_path, tiny_models, capsys):
    recorded = tmp_path / "raw.txt"
    recorded.write_bytes(raw.encode("utf-8", "replace"))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, stderr = run_cli(["ask", NAIP, "Which lakes?", "-o", out_dir / "a.gpkg", "--reasoner-output", recorded,
                               "--segmenter", tiny_models["segmenter"]], capsys)
    assert code != 0
    assert "georeasoner: error:" in stderr
    assert files_in(out_dir) == [], "nothing half-written"


def _no_crs_raster(path: Path):
    data = (np.random.default_rng(0).random((3, 60, 80)) * 255).astype("uint8")
    with rasterio.open(path, "w", driver="GTiff", width=80, height=60, count=3, dtype="uint8") as dst:
        dst.write(data)


def test_raster_without_crs_gives_pixel_space_output(tmp_path, tiny_models, capsys):
    image = tmp_path / "plain.tif"
    _no_crs_raster(image)
    recorded = tmp_path / "raw.txt"
    recorded.write_text("<think>x</think><answer>[[10,10,40,30]]</answer>")
    out = tmp_path / "o.gpkg"
    code, stdout, stderr = run_cli(["ask", image, "what", "-o", out, "--reasoner-output", recorded,
                                    "--segmenter", tiny_models["segmenter"], "--outputs", "boxes"], capsys)
    assert code == 0, stderr
    assert "no CRS" in stderr + stdout
    _, _, geometry, _ = pyogrio.raw.read(out, layer="boxes")
    frame = get_profile("remotereasoner").frame.frame_for(80, 60)
    x1, y1, x2, y2 = frame.box_to_image((10, 10, 40, 30))
    minx, miny, maxx, maxy = shapely.from_wkb(geometry[0]).bounds
    assert (minx, maxx) == pytest.approx((x1, x2)) and (miny, maxy) == pytest.approx((y1, y2))


def bad_argument_cases(tmp_path: Path, recorded: Path, segmenter):
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a raster")
    existing = tmp_path / "exists.gpkg"
    existing.write_bytes(b"keep me")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00garbage\x80")
    image = str(NAIP)
    seg = ["--segmenter", str(segmenter)]
    rec = ["--reasoner-output", str(recorded)]
    return [
        (["ask", tmp_path / "missing.tif", "q", "-o", tmp_path / "a.gpkg", *rec, *seg], "no such file"),
        (["ask", text_file, "q", "-o", tmp_path / "a.gpkg", *rec, *seg], "raster"),
        (["ask", image, "q", "-o", tmp_path / "a.gpkg", "--outputs", "boxes,lakes", *rec, *seg], "--outputs"),
        (["ask", image, "q", "-o", tmp_path / "a.gpkg", "--bands", "1,2", *rec, *seg], "--bands"),
        (["ask", image, "q", "-o", tmp_path / "a.gpkg", "--bands", "1,2,9", *rec, *seg], "band"),
        (["ask", image, "q", "-o", tmp_path / "a.gpkg", "--profile", "gpt5", *rec, *seg], "unknown profile"),
        (["ask", image, "q", "-o", existing, *rec, *seg], "--overwrite"),
        (["ask", image, "q", "-o", tmp_path / "a.geojson", *rec, *seg], ".gpkg"),
        (["ask", image, "q", "-o", tmp_path / "a.gpkg", "--reasoner-output", tmp_path / "nope.txt", *seg], "does not exist"),
        (["ask", image, "q", "-o", tmp_path / "a.gpkg", "--reasoner-output", binary, *seg], "UTF-8"),
        (["ask", image, "q", "-o", tmp_path / "a.gpkg", "--max-size", "3", *rec, *seg], "--max-size"),
        (["ask", image, "q", "-o", tmp_path / "a.gpkg", "--profile", "georeasoner", *seg], "--reasoner"),
        (["ask", image, "   ", "-o", tmp_path / "a.gpkg", *rec, *seg], "question is empty"),
        (["ask", image, "q", "-o", tmp_path / "a.gpkg", "--segmenter", tmp_path / "no-model", *rec], "no-model"),
        (["ask", image, "q", "-o", tmp_path / "a.gpkg", "--temperature", "-1", *rec, *seg], "temperature"),
        (["ask", image, "q"], "required"),
        (["frobnicate"], "invalid choice"),
    ]


@needs_data
def test_bad_files_and_arguments_fail_clearly(tmp_path, tiny_models, capsys):
    recorded = tmp_path / "raw.txt"
    recorded.write_text(RECORDED.read_text())
    cases = bad_argument_cases(tmp_path, recorded, tiny_models["segmenter"])
    assert len(cases) >= 10
    for args, needle in cases:
        before = files_in(tmp_path)
        code, _, stderr = run_cli(args, capsys)
        assert code != 0, args
        assert "georeasoner: error:" in stderr and needle in stderr, (args, stderr)
        assert files_in(tmp_path) == before, ("something was written", args)
    assert (tmp_path / "exists.gpkg").read_bytes() == b"keep me"


@needs_data
def test_console_entry_point_runs_as_a_process(tmp_path, tiny_models):
    """The installed command, as a user types it (one subprocess: imports are slow)."""
    out = tmp_path / "p.gpkg"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "georeasoner_plugin.backend.cli", "ask", str(NAIP), "lakes", "-o",
                           str(out), "--reasoner-output", str(RECORDED), "--segmenter", str(tiny_models["segmenter"]),
                           "--json", "--quiet"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["profile"] == "remotereasoner" and len(answer["objects"]) == 4
    assert "Traceback" not in proc.stderr


@needs_data
def test_answer_recorded_for_another_image_says_so(tmp_path, tiny_models, capsys):
    recorded = tmp_path / "raw.txt"
    recorded.write_text("<think>x</think><answer>[[5000,5000,6000,6000]]</answer>")
    code, _, stderr = run_cli(["ask", NAIP, "lakes", "-o", tmp_path / "a.gpkg", "--reasoner-output", recorded,
                               "--segmenter", tiny_models["segmenter"]], capsys)
    assert code == cli.EXIT_FAILED
    assert "outside the image" in stderr and "recorded for this image" in stderr and "--profile" in stderr
