"""`georeasoner ask --tiles auto`: the user's command line, with the reasoner on an OpenAI-compatible
test double (serving the rule-based stand-in) or a recorded answer, and tiny SAM2 where masks are needed.

Resume is tested the hard way: the command runs as a subprocess, is SIGKILLed after some tiles,
then run again.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import shapely

from georeasoner_plugin.backend.cli import main
from georeasoner_plugin.core.exit_codes import EXIT_NOINPUT, EXIT_USAGE
from georeasoner_plugin.core.tiling import JOURNAL_SUFFIX

from openai_double import OpenAIDouble
from tiled_standins import DarkShapeReasoner, Shape, draw_shape, scene_labels, scene_shapes, write_scene

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "Which dark shapes are in the scene?"


@pytest.fixture(scope="module")
def half_scene(tmp_path_factory):
    labels = scene_labels(scene_shapes(), 3000, 2000, scale=0.5)
    path = tmp_path_factory.mktemp("cli") / "half.tif"
    write_scene(path, labels, pixel_size=1.0)
    return path, labels


def features(path: Path, layer: str):
    """Every feature of a layer as (geometry WKB, attributes), attributes by name."""
    meta, _, geometry, fields = pyogrio.raw.read(path, layer=layer)
    names = list(meta["fields"])
    rows = []
    for n, wkb in enumerate(geometry):
        rows.append((bytes(wkb), {name: fields[i][n] for i, name in enumerate(names)}))
    return rows


def test_focus_prints_how_many_tiles_it_asks(half_scene, tmp_path, capsys):
    path, _ = half_scene
    reasoner = DarkShapeReasoner()
    with OpenAIDouble(reasoner, model_name="stand-in") as double:
        code = main(["ask", str(path), "Which is the largest dark shape?", "-o", str(tmp_path / "f.gpkg"),
                     "--tiles", "auto", "--tile-size", "512", "--tile-strategy", "focus", "--outputs", "boxes,points",
                     "--reasoner-url", double.url, "--reasoner-model", "stand-in", "--concurrency", "4"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "focus: 4 of 35 tiles meet the overview's boxes" in err
    assert "Tiles: 4 asked of a 35-tile grid" in out
    assert reasoner.calls == 5 and len(double.requests) == 5
    boxes = features(tmp_path / "f.gpkg", "boxes")
    assert len(boxes) >= 1  # the corner shape, merged from its four tiles


def test_bad_tiling_options_say_what_to_change(half_scene, tmp_path, capsys):
    path, _ = half_scene
    base = ["ask", str(path), QUESTION, "-o", str(tmp_path / "x.gpkg"), "--tiles", "auto", "--reasoner-output",
            str(ROOT / "examples" / "naip_lakes_remotereasoner.txt"), "--outputs", "boxes"]
    assert main(base + ["--overlap", "60%"]) == EXIT_USAGE
    assert "overlap must be at least 0 and below 50%" in capsys.readouterr().err
    assert main(base + ["--extent", "9000,9000,9500,9500"]) == EXIT_USAGE
    assert "does not overlap the raster" in capsys.readouterr().err
    assert main(base + ["--mask-layer", str(tmp_path / "none.gpkg")]) == EXIT_NOINPUT
    assert "does not exist" in capsys.readouterr().err
    assert main(base + ["--tile-size", "10"]) == EXIT_USAGE
    assert "tile size must be between" in capsys.readouterr().err
    assert main(["ask", str(path), QUESTION, "-o", str(tmp_path / "y.gpkg"), "--tiles", "auto",
                 "--reasoner-url", "http://127.0.0.1:9/v1"]) == EXIT_USAGE
    assert "--reasoner-model" in capsys.readouterr().err


def test_extent_and_gsd_land_on_the_map(half_scene, tmp_path, capsys):
    path, labels = half_scene
    # The corner shape (at 480, 480 on the half scene; map y = 4_500_000 - row), read at 2 m.
    with OpenAIDouble(DarkShapeReasoner(), model_name="stand-in") as double:
        code = main(["ask", str(path), QUESTION, "-o", str(tmp_path / "e.gpkg"), "--tiles", "auto", "--gsd", "2",
                     "--extent", "500200,4499200,500800,4499800", "--tile-size", "128", "--outputs", "boxes",
                     "--reasoner-url", double.url, "--reasoner-model", "stand-in"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "plan: 300 x 300 px" in err
    boxes = [shapely.from_wkb(g) for g, _ in features(tmp_path / "e.gpkg", "boxes")]
    corner = [b for b in boxes if b.area > 20_000]
    assert len(corner) == 1
    truth = shapely.box(500000 + 375, 4_500_000 - 585, 500000 + 585, 4_500_000 - 375)
    assert corner[0].intersection(truth).area / corner[0].union(truth).area > 0.95


def test_tiles_auto_on_a_small_raster_gives_the_same_objects(tmp_path, tiny_models, capsys):
    labels = np.zeros((300, 400), dtype=np.uint8)
    draw_shape(labels, Shape("ellipse", 120, 100, 90, 70), 1)
    draw_shape(labels, Shape("rect", 300, 200, 60, 80), 2)
    image = tmp_path / "small.tif"
    write_scene(image, labels, pixel_size=1.0)
    recorded = tmp_path / "answer.txt"
    # boxes in the model frame of a 400 x 300 image (smart resize: 392 x 308)
    recorded.write_text("<think>two shapes</think><answer>[[74,66,162,138],[264,163,323,246]]</answer>")
    common = ["--reasoner-output", str(recorded), "--segmenter", str(tiny_models["segmenter"]), "--device", "cpu",
              "--outputs", "boxes,points,contours"]
    assert main(["ask", str(image), QUESTION, "-o", str(tmp_path / "plain.gpkg"), *common]) == 0
    assert main(["ask", str(image), QUESTION, "-o", str(tmp_path / "tiled.gpkg"), "--tiles", "auto", *common]) == 0
    capsys.readouterr()
    for layer in ("boxes", "points", "contours"):
        plain, tiled = features(tmp_path / "plain.gpkg", layer), features(tmp_path / "tiled.gpkg", layer)
        assert len(plain) == len(tiled)
        for (a, _), (b, _) in zip(plain, tiled):
            ga, gb = shapely.from_wkb(a), shapely.from_wkb(b)
            if layer == "points":
                assert ga.equals(gb)
            elif not ga.is_empty:
                assert ga.intersection(gb).area / ga.union(gb).area >= 0.99


def _cli(args, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "georeasoner_plugin.backend.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_resume_after_sigkill_gives_the_same_features(half_scene, tmp_path):
    path, _ = half_scene
    with OpenAIDouble(DarkShapeReasoner(delay_s=0.05), model_name="stand-in") as double:
        def args(out):
            return ["ask", str(path), QUESTION, "-o", str(out), "--tiles", "auto", "--tile-size", "512",
                    "--outputs", "boxes,points", "--reasoner-url", double.url, "--reasoner-model", "stand-in",
                    "--concurrency", "2"]

        whole = _cli(args(tmp_path / "whole.gpkg"))
        _, err = whole.communicate(timeout=300)
        assert whole.returncode == 0, err

        out = tmp_path / "killed.gpkg"
        journal = tmp_path / f"killed{JOURNAL_SUFFIX}"
        victim = _cli(args(out))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if journal.exists() and journal.read_text().count('"kind": "tile"') >= 8:
                break
            time.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
        assert victim.returncode == -signal.SIGKILL and not out.exists()
        done = journal.read_text().count('"kind": "tile"')
        assert 8 <= done < 35

        again = _cli(args(out))
        _, err = again.communicate(timeout=300)
        assert again.returncode == 0, err
    assert f"{done} of 35 tiles already done and skipped, {35 - done} to ask" in err
    header = json.loads(journal.read_text().splitlines()[0])
    for layer in ("boxes", "points"):
        resumed, straight = features(out, layer), features(tmp_path / "whole.gpkg", layer)
        assert len(resumed) == len(straight) == 30  # every shape once (boxes merged across seams)
        for (g1, a1), (g2, a2) in zip(resumed, straight):
            assert g1 == g2  # byte-identical geometry
            assert a1["answer_id"] == header["answer_id"]
            # the same attributes but the answer's identity (a separate run is a separate answer)
            assert {k: repr(v) for k, v in a1.items() if k not in ("answer_id", "created")} == \
                   {k: repr(v) for k, v in a2.items() if k not in ("answer_id", "created")}
