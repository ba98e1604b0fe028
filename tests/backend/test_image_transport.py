"""Image transport: the format the plugin picks from /v1/info, and the backend's decoding of it."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from georeasoner_plugin.backend.image_transport import decodable_formats, is_webp, read_shared_capture
from georeasoner_plugin.backend.imagery import ImageryError, read_image_bytes
from georeasoner_plugin.core.transport import (CAPTURE_PREFIX, CAPTURE_SUFFIX, INFO_IMAGE_FORMATS,
                                               INFO_SHARED_CAPTURE_DIR, TRANSPORT_PATH, TRANSPORT_PNG, TRANSPORT_TIFF,
                                               TRANSPORT_WEBP, pick_transport, private_capture_dir)


def capture(height=37, width=53):
    return np.random.default_rng(5).integers(0, 256, (height, width, 3), dtype=np.uint8)


def encoded(array, fmt, **options):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt, options", [("TIFF", {}), ("PNG", {"compress_level": 1}),
                                          ("WEBP", {"lossless": True, "method": 0})])
def test_every_lossless_transport_decodes_to_the_same_pixels(fmt, options):
    if fmt == "WEBP" and "webp" not in decodable_formats():
        pytest.skip("this Pillow has no WebP support")
    rgb = capture()
    data = encoded(rgb, fmt, **options)
    decoded = read_image_bytes(data)
    assert decoded.flags.writeable and decoded.flags.c_contiguous
    assert np.array_equal(decoded, rgb)
    assert is_webp(data) == (fmt == "WEBP")


def test_transport_picked_from_info_and_host():
    offers_all = {INFO_IMAGE_FORMATS: ["png", "jpeg", "tiff", "webp"]}
    assert pick_transport(dict(offers_all, **{INFO_SHARED_CAPTURE_DIR: "/tmp/x"}), "127.0.0.1") == TRANSPORT_PATH
    assert pick_transport(offers_all, "127.0.0.1") == TRANSPORT_TIFF
    assert pick_transport(offers_all, "gpu-box.example") == TRANSPORT_PNG  # WebP costs seconds: opt-in
    assert pick_transport(offers_all, "gpu-box.example", allow_webp=True) == TRANSPORT_WEBP
    assert pick_transport({INFO_IMAGE_FORMATS: ["png", "tiff"]}, "gpu-box.example") == TRANSPORT_PNG
    assert pick_transport({}, "10.0.0.5") == TRANSPORT_PNG  # an older backend: no list, PNG it reads
    assert pick_transport(dict(offers_all, **{INFO_SHARED_CAPTURE_DIR: "/x"}), "10.0.0.5") == TRANSPORT_PNG
    for local in ("localhost", "::1", "[::1]", "127.0.0.2"):
        assert pick_transport(offers_all, local) == TRANSPORT_TIFF, local
    assert pick_transport(offers_all, "127.evil.example") == TRANSPORT_PNG  # a name, not a loopback address


def test_shared_capture_is_read_only_from_the_shared_folder(tmp_path):
    shared = tmp_path / "captures"
    shared.mkdir()
    rgb = capture()
    (shared / "c1.tif").write_bytes(encoded(rgb, "TIFF"))
    assert np.array_equal(read_shared_capture(shared / "c1.tif", shared), rgb)
    outside = tmp_path / "secret.tif"
    outside.write_bytes(encoded(rgb, "TIFF"))
    with pytest.raises(ImageryError, match="not in the shared capture folder"):
        read_shared_capture(outside, shared)
    with pytest.raises(ImageryError, match="not in the shared capture folder"):
        read_shared_capture(shared / ".." / "secret.tif", shared)
    os.symlink(outside, shared / "link.tif")
    with pytest.raises(ImageryError, match="not in the shared capture folder"):
        read_shared_capture(shared / "link.tif", shared)
    with pytest.raises(ImageryError, match="no such capture"):
        read_shared_capture(shared / "missing.tif", shared)
    (shared / "sub").mkdir()
    with pytest.raises(ImageryError, match="not a regular file"):
        read_shared_capture(shared / "sub", shared)


@pytest.mark.skipif(os.name != "posix", reason="mode bits")
def test_the_default_shared_folder_is_private_and_sheds_captures_a_crashed_client_left(tmp_path):
    folder = tmp_path / "captures"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    stale = folder / f"{CAPTURE_PREFIX}old{CAPTURE_SUFFIX}"
    fresh = folder / f"{CAPTURE_PREFIX}new{CAPTURE_SUFFIX}"
    other = folder / "notes.txt"
    for path in (stale, fresh, other):
        path.write_bytes(b"x")
    two_days_ago = os.path.getmtime(fresh) - 2 * 24 * 3600
    os.utime(stale, (two_days_ago, two_days_ago))
    os.utime(other, (two_days_ago, two_days_ago))
    assert private_capture_dir(folder) == str(folder.resolve())
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert not stale.exists() and fresh.exists() and other.exists()  # only old captures are removed
    made = private_capture_dir(tmp_path / "new" / "captures")
    assert made and oct(os.stat(made).st_mode & 0o777) == "0o700"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert private_capture_dir(blocker / "captures") is None  # cannot be made: clients upload instead


def test_serve_refuses_a_shared_folder_and_none_at_once(tmp_path, capsys):
    from georeasoner_plugin.backend import cli

    code = cli.main(["serve", "--reasoner-output", "x", "--shared-capture-dir", str(tmp_path),
                     "--no-shared-capture-dir"])
    assert code == cli.EXIT_USAGE and "give one" in capsys.readouterr().err
