"""Issue 13, defect 7: `ask` refuses inputs that would hang and outputs it cannot write, before
any model is loaded."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from georeasoner_plugin.backend import cli
from georeasoner_plugin.core.exit_codes import EXIT_CANTCREAT, EXIT_DATAERR

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "examples" / "naip_lakes_remotereasoner.txt"


def run_cli(args, capsys):
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return code, captured.err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_or_a_device_as_input_is_refused_without_hanging(tmp_path, capsys):
    fifo = tmp_path / "input.tif"
    os.mkfifo(fifo)
    for source, kind in ((fifo, "FIFO"), (Path("/dev/zero"), "device"), (tmp_path, "folder")):
        code, err = run_cli(["ask", source, "q", "-o", tmp_path / "out.gpkg", "--reasoner-output", RECORDED,
                             "--segmenter", tmp_path / "no-model"], capsys)
        assert code == EXIT_DATAERR and kind in err and "GDAL virtual path" in err, err
        assert "loading models" not in err and "reading" not in err


def test_an_unwritable_output_folder_is_reported_before_the_models_load(tmp_path, capsys):
    image = tmp_path / "in.tif"
    image.write_bytes(b"II*\x00 not really a tiff, never read")
    # /proc refuses new files even for root, unlike permission bits.
    code, err = run_cli(["ask", image, "q", "-o", "/proc/georeasoner-out/answer.gpkg", "--reasoner-output",
                         RECORDED, "--segmenter", tmp_path / "no-model"], capsys)
    assert code == EXIT_CANTCREAT and "cannot write into /proc/georeasoner-out" in err, err
    assert "loading models" not in err and "reading" not in err
    read_only = tmp_path / "ro"
    read_only.mkdir()
    os.chmod(read_only, 0o500)
    if os.access(read_only, os.W_OK):  # root ignores permission bits: the /proc case above covers it
        return
    code, err = run_cli(["ask", image, "q", "-o", read_only / "a.gpkg", "--reasoner-output", RECORDED,
                         "--segmenter", tmp_path / "no-model"], capsys)
    assert code == EXIT_CANTCREAT and "cannot write into" in err, err
