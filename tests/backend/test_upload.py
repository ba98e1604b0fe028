"""Reading an ask's body (server/upload.py, forms.read_form) and the uncompressed-TIFF fast path
(images.raw_rgb_offset): where the image bytes go (memory charged to the image budget, or a
temporary file), that the pixels arrive exactly, and the Server-Timing header of an answer."""
from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, TiffImagePlugin
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from georeasoner_plugin.backend.server import ApiError
from georeasoner_plugin.backend.server.admission import ImageBudget, decode_cost
from georeasoner_plugin.backend.server.forms import read_form
from georeasoner_plugin.backend.server.images import decode_image, probe_image, raw_rgb_offset
from georeasoner_plugin.backend.server.upload import MEMORY_PART_MAX_BYTES, SPOOL_MAX_BYTES
from georeasoner_plugin.core.api import (ASK_PATH, SERVER_TIMING_HEADER, SERVER_TIMINGS, parse_server_timing,
                                         server_timing)

from standins import HEADERS, TimedCascade, serving

NAIP = Path(__file__).resolve().parents[3] / "shared" / "data" / "naip_nd_2020.tif"


def _naip_crop(height: int, width: int) -> np.ndarray:
    if not NAIP.exists():
        pytest.skip(f"the NAIP sample {NAIP} is absent (shared test data)")
    from georeasoner_plugin.backend.imagery import read_raster

    rgb = read_raster(NAIP).rgb
    reps = (-(-height // rgb.shape[0]), -(-width // rgb.shape[1]), 1)
    return np.ascontiguousarray(np.tile(rgb, reps)[:height, :width])


def _tiff(array: np.ndarray, libtiff: bool = False, **options) -> bytes:
    """An uncompressed TIFF; `libtiff`: written like Qt's writer (several strips, directory at the end)."""
    buffer = io.BytesIO()
    previous = TiffImagePlugin.WRITE_LIBTIFF
    TiffImagePlugin.WRITE_LIBTIFF = libtiff
    try:
        Image.fromarray(array).save(buffer, format="TIFF", **options)
    finally:
        TiffImagePlugin.WRITE_LIBTIFF = previous
    return buffer.getvalue()


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


class RecordingCascade(TimedCascade):
    """Answers like TimedCascade and keeps what it was given: the pixels' hash, and whether the array
    was a view of another buffer (the upload) or owned its own memory (a decoder's copy)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def run(self, image, question, **kwargs):
        self.seen.append({"sha": _sha(image), "shape": image.shape, "view": not image.flags.owndata})
        return super().run(image, question, **kwargs)


def _ask(url: str, data: bytes, mime: str = "image/tiff") -> httpx.Response:
    return httpx.post(url + ASK_PATH, headers=HEADERS, timeout=60, files={"image": ("capture.tif", data, mime)},
                      data={"request": json.dumps({"question": "where are the lakes?", "outputs": ["boxes"]})})


def _assert_budget_given_back(service) -> None:
    """The body's and the image's charges are given back; the worker releases the image right after
    it posted the answer, so the client may see the answer a moment before."""
    deadline = time.monotonic() + 5
    while service.budget.used and time.monotonic() < deadline:
        time.sleep(0.005)
    assert service.budget.used == 0


# ------------------------------------------------------------------ the fast path for uncompressed TIFF
@pytest.mark.parametrize("libtiff", [False, True], ids=["one-strip", "strips-like-qt"])
def test_raw_rgb_tiff_is_found_and_decodes_to_the_same_pixels_as_pillow(libtiff):
    pixels = _naip_crop(300, 200)
    data = _tiff(pixels, libtiff=libtiff, strip_size=8192)
    with Image.open(io.BytesIO(data)) as image:
        assert (len(image.tile) > 1) == libtiff
        offset = raw_rgb_offset(image)
    assert offset is not None
    header = probe_image(io.BytesIO(data), 10**8)
    assert header.raw_offset == offset and (header.width, header.height) == (200, 300)
    decoded = decode_image(data, 10**8)
    assert decoded.flags.writeable and _sha(decoded) == _sha(pixels)
    with Image.open(io.BytesIO(data)) as image:
        assert _sha(np.asarray(image.convert("RGB"))) == _sha(pixels)  # Pillow agrees
    assert decode_cost(200, 300, True, raw=True) == 200 * 300 * 3 < decode_cost(200, 300, True)


@pytest.mark.parametrize("save", [
    lambda a, b: Image.fromarray(a).save(b, format="TIFF", compression="tiff_lzw"),
    lambda a, b: Image.fromarray(a).save(b, format="PNG"),
    lambda a, b: Image.fromarray(np.dstack([a, a[..., :1]])).save(b, format="TIFF"),  # RGBA
    lambda a, b: Image.fromarray(a[..., 0]).save(b, format="TIFF"),  # one band
], ids=["lzw", "png", "rgba", "gray"])
def test_other_layouts_are_decoded_by_pillow(save):
    pixels = _naip_crop(64, 48)
    buffer = io.BytesIO()
    save(pixels, buffer)
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        assert raw_rgb_offset(image) is None
        expected = np.asarray(image.convert("RGB"))
    assert _sha(decode_image(buffer.getvalue(), 10**8)) == _sha(expected)


def test_truncated_raw_tiff_is_a_clear_400():
    data = _tiff(_naip_crop(100, 100))  # Pillow writes the directory first: the pixels can be cut short
    with pytest.raises(ApiError) as caught:
        decode_image(data[:-5000], 10**8)
    assert caught.value.status == 400 and caught.value.code == "corrupt_image"
    assert "truncated" in caught.value.message and "resend" in caught.value.message


# ---------------------------------------------------------------------- through the real server
def test_tiff_upload_reaches_the_cascade_in_place_pixel_exact_with_server_timing():
    pixels = _naip_crop(512, 384)
    cascade = RecordingCascade()
    with serving(cascade) as (url, service):
        for data in (_tiff(pixels), _tiff(pixels, libtiff=True)):
            response = _ask(url, data)
            assert response.status_code == 200, response.text
            timing = parse_server_timing(response.headers.get(SERVER_TIMING_HEADER))
            assert set(timing) == set(SERVER_TIMINGS) and all(value >= 0 for value in timing.values()), timing
        png = io.BytesIO()
        Image.fromarray(pixels).save(png, format="PNG")
        assert _ask(url, png.getvalue(), "image/png").status_code == 200
        _assert_budget_given_back(service)
    assert [seen["sha"] for seen in cascade.seen] == [_sha(pixels)] * 3
    # the uncompressed TIFFs are used where they lie in the upload; the PNG is decoded into new memory
    assert [seen["view"] for seen in cascade.seen] == [True, True, False]


# ------------------------------------------------------------------------- where the bytes go
def _form_app(budget):
    seen = {}

    async def route(request: Request):
        fields = await read_form(request, 64 * 2**20, budget=budget)
        part = fields["image"]
        seen.update(in_memory=part.in_memory, size=part.size, charged=budget.used if budget else None,
                    request=fields["request"])
        stream = part.stream()
        seen["head"] = stream.read(8)
        await fields["form"].close()
        seen["after_close"] = budget.used if budget else None
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/form", route, methods=["POST"])]), seen


def _post_form(app, image: bytes) -> None:
    with TestClient(app) as client:
        response = client.post("/form", files={"image": ("a.png", image, "image/png")}, data={"request": '{"q": 1}'})
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("size, room, in_memory", [
    (SPOOL_MAX_BYTES + 2**20, True, True),  # fits the budget: one in-memory buffer, charged while read
    (SPOOL_MAX_BYTES + 2**20, False, False),  # no room in the budget: a temporary file, as before
    (MEMORY_PART_MAX_BYTES + 2**20, True, False),  # too large to keep in memory at all
    (4096, False, True),  # small bodies stay in memory even without room (SPOOL_MAX_BYTES, uncharged)
])
def test_image_part_in_memory_only_when_charged_to_the_budget(size, room, in_memory):
    budget = ImageBudget(64 * 2**20)
    blocker = None if room else budget.try_reserve(64 * 2**20)
    app, seen = _form_app(budget)
    image = b"\x89PNG\r\n\x1a\n" + bytes(size - 8)
    _post_form(app, image)
    assert seen["in_memory"] is in_memory and seen["size"] == size and seen["head"] == image[:8]
    assert seen["request"] == '{"q": 1}'
    held = budget.used - (blocker.nbytes if blocker else 0)
    assert held == 0 and seen["after_close"] == budget.used  # nothing stays charged after close
    if room and in_memory:
        assert seen["charged"] >= size  # the declared body was charged while it was held
    elif room:
        assert seen["charged"] == 0


def _raw_body(parts: bytes, boundary: str = "b0undary") -> dict:
    return {"content": parts, "headers": {**HEADERS, "Content-Type": f"multipart/form-data; boundary={boundary}"}}


def _part(name: str, data: bytes, filename: str = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--b0undary\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"


@pytest.mark.parametrize("body, needle", [
    (_part("request", b"{}") + _part("request", b"{}") + b"--b0undary--\r\n", "exactly one part named 'request'"),
    (_part("image", b"x", "a.png") + _part("image", b"y", "b.png") + b"--b0undary--\r\n",
     "exactly one part named 'image'"),
    (_part("request", b"{}") + _part("extra", b"1") + b"--b0undary--\r\n", "unexpected part 'extra'"),
    (_part("request", b"{}") + _part("image", b"not a file") + b"--b0undary--\r\n", "must be a file part"),
    (_part("request", b'{"question": "q"}') + _part("image", b"\x89PNG", "a.png"), "closing boundary"),
    (b"--b0undary\r\nContent-Type: text/plain\r\n\r\nx\r\n--b0undary--\r\n", "needs a name"),
    (_part("image", b"\x89PNG", "a.png") + b"--b0undary--\r\n", "exactly one part named 'request' (found 0)"),
    (_part("request", b"x" * (1024 * 1024 + 1)) + b"--b0undary--\r\n", "larger than 1024 KiB"),
], ids=["two-requests", "two-images", "unknown-part", "image-as-field", "no-end", "no-name", "no-request",
        "huge-request"])
def test_malformed_bodies_are_a_422_that_says_what_to_send(body, needle):
    with serving() as (url, service):
        response = httpx.post(url + ASK_PATH, timeout=30, **_raw_body(body))
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "malformed_form" and needle.lower() in error["message"].lower(), error
        _assert_budget_given_back(service)
        assert _ask(url, _tiff(np.zeros((8, 8, 3), np.uint8))).status_code == 200  # still serving


def test_server_timing_round_trip():
    header = server_timing({"read": 0.0123, "decode": 0.0, "queue": 0.0004, "run": 1.5, "other": 9.0})
    assert header == "read;dur=12.3, decode;dur=0.0, queue;dur=0.4, run;dur=1500.0"
    assert parse_server_timing(header) == {"read": 12.3, "decode": 0.0, "queue": 0.4, "run": 1500.0}
    assert parse_server_timing('cache;desc="x", db;dur=bad, app;dur=2') == {"app": 2.0}
    assert parse_server_timing(None) == {}
