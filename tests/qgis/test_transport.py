"""Image transport (issue 16, point 7): the plugin sends each capture as the backend's /v1/info calls
for (core/transport.py) and the backend decodes exactly the captured pixels in every transport.

The backend is the real server started as the CLI does, with the models replaced by a rule-based
stand-in (serve_pixels.py) that answers with the SHA-256 of the RGB array it was given."""
import hashlib
from pathlib import Path

import numpy as np
import pytest
from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtGui import QImage

from georeasoner_plugin.core.transport import (INFO_IMAGE_FORMATS, INFO_SHARED_CAPTURE_DIR, TRANSPORT_PATH,
                                               TRANSPORT_PNG, TRANSPORT_TIFF, TRANSPORT_WEBP)
from georeasoner_plugin.qgis_io import image_encode
from georeasoner_plugin.qgis_io.capture import prepare_raster
from georeasoner_plugin.qgis_io.client import AskRequest, BackendClient
from georeasoner_plugin.qgis_io.service import Question, ask_one

from conftest import Backend, backend_available

SCRIPT = Path(__file__).resolve().parent / "serve_pixels.py"


@pytest.fixture(scope="module")
def pixel_backend(tmp_path_factory):
    reason = backend_available()
    if reason:
        pytest.skip(reason)
    # no shared folder: these tests are about the uploaded transports (a loopback `serve` offers one by default)
    backend = Backend(["--segmenter", "none", "--no-shared-capture-dir"], tmp_path_factory.mktemp("pixel-backend"),
                      script=SCRIPT)
    yield backend
    backend.stop()


def rgb_of(image: QImage) -> np.ndarray:
    rgb = image.convertToFormat(QImage.Format.Format_RGB888)
    stride, height, width = rgb.bytesPerLine(), rgb.height(), rgb.width()
    flat = np.frombuffer(bytes(rgb.constBits().asstring(stride * height)), np.uint8)
    return flat.reshape(height, stride)[:, :width * 3].reshape(height, width, 3)


def report_of(pixels: np.ndarray) -> str:
    return f"sha256={hashlib.sha256(pixels.tobytes()).hexdigest()} shape={'x'.join(map(str, pixels.shape))}"


def noisy_image(width=301, height=197) -> QImage:
    """Every byte value in every channel, odd sizes (row padding), nothing a lossy coder keeps exactly."""
    rng = np.random.default_rng(16)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = QImage(pixels.tobytes(), width, height, width * 3, QImage.Format.Format_RGB888).copy()
    return image.convertToFormat(QImage.Format.Format_RGB32)  # what a capture holds


@pytest.mark.parametrize("transport", [TRANSPORT_TIFF, TRANSPORT_WEBP, TRANSPORT_PNG])
def test_every_transport_delivers_the_captured_pixels(pixel_backend, transport):
    image = noisy_image()
    data, name, mime = image_encode.encode_image(image, transport)
    assert name.endswith({"tiff": ".tif", "webp": ".webp", "png": ".png"}[transport]) and transport in mime
    if transport == TRANSPORT_TIFF:  # uncompressed: the pixels and a header, no more
        assert len(data) >= image.width() * image.height() * 3
    client = BackendClient(pixel_backend.url, pixel_backend.token, timeout_s=60)
    answer = client.ask_stream(AskRequest(question="what is here?", image_bytes=data, image_name=name,
                                          image_type=mime, outputs=["boxes"]), lambda e: None)
    assert (answer.image_width, answer.image_height) == (image.width(), image.height())
    assert answer.raw_output == report_of(rgb_of(image))


def test_the_plugin_picks_the_transport_from_info(pixel_backend):
    client = BackendClient(pixel_backend.url, pixel_backend.token, timeout_s=60)
    info = client.info()
    assert "webp" in info[INFO_IMAGE_FORMATS] and "tiff" in info[INFO_IMAGE_FORMATS]
    image_encode.forget_backend(client.base_url)
    assert image_encode.transport_for(client) == TRANSPORT_TIFF  # loopback: no compression work
    down = BackendClient("http://127.0.0.1:9", "x", timeout_s=5, connect_timeout_s=2)
    assert image_encode.transport_for(down) == TRANSPORT_PNG  # no info: what every backend reads


def test_ask_one_sends_a_raster_capture_as_an_uncompressed_tiff(pixel_backend, naip_path):
    project = QgsProject.instance()
    layer = QgsRasterLayer(str(naip_path), "naip")
    assert layer.isValid()
    spec = prepare_raster(layer, layer.extent(), layer.crs(), max_size=256,
                          transform_context=project.transformContext())
    client = BackendClient(pixel_backend.url, pixel_backend.token, timeout_s=60)
    request = AskRequest(question="where are the lakes?", image_bytes=b"", outputs=["boxes"])
    result = ask_one(client, Question(request=request, spec=spec))
    assert request.image_type == "image/tiff" and request.image_name == "capture.tif"
    assert (result.answer.image_width, result.answer.image_height) == (result.capture.width, result.capture.height)
    assert result.answer.raw_output == report_of(rgb_of(result.capture.image))


def test_a_serve_started_by_hand_on_loopback_gets_captures_through_its_shared_folder(tmp_path, naip_path):
    """`serve` on loopback offers a private folder by default: the plugin writes the capture there,
    sends its path, the backend reads exactly the captured pixels, and the file is gone afterwards."""
    reason = backend_available()
    if reason:
        pytest.skip(reason)
    backend = Backend(["--segmenter", "none"], tmp_path, script=SCRIPT)
    try:
        client = BackendClient(backend.url, backend.token, timeout_s=60)
        folder = Path(client.info()[INFO_SHARED_CAPTURE_DIR])
        assert folder == (tmp_path / "captures").resolve()
        image_encode.forget_backend(client.base_url)
        assert image_encode.transport_for(client) == TRANSPORT_PATH
        layer = QgsRasterLayer(str(naip_path), "naip")
        spec = prepare_raster(layer, layer.extent(), layer.crs(), max_size=300,
                              transform_context=QgsProject.instance().transformContext())
        request = AskRequest(question="where are the lakes?", image_bytes=b"", outputs=["boxes"])
        result = ask_one(client, Question(request=request, spec=spec))
        assert request.image_path and Path(request.image_path).parent == folder and not request.image_bytes
        assert result.answer.raw_output == report_of(rgb_of(result.capture.image))
        assert list(folder.iterdir()) == []  # the capture was removed after the answer
    finally:
        backend.stop()
        image_encode.forget_backend(backend.url)


def test_gdal_webp_fallback_is_lossless_too(pixel_backend):
    """Where Qt lacks its WebP plugin, GDAL's WEBP driver (LOSSLESS=YES) writes it."""
    if not image_encode.gdal_writes_webp():
        pytest.skip("this GDAL has no WEBP driver")
    image = noisy_image(64, 48)
    data = image_encode._gdal_webp(image)
    client = BackendClient(pixel_backend.url, pixel_backend.token, timeout_s=60)
    answer = client.ask_stream(AskRequest(question="what is here?", image_bytes=data, image_name="capture.webp",
                                          image_type="image/webp", outputs=["boxes"]), lambda e: None)
    assert answer.raw_output == report_of(rgb_of(image))


@pytest.fixture(scope="module")
def shared_backend(tmp_path_factory):
    reason = backend_available()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("shared-captures")
    backend = Backend(["--segmenter", "none", "--shared-capture-dir", str(folder)],
                      tmp_path_factory.mktemp("shared-backend"), script=SCRIPT)
    backend.folder = folder
    yield backend
    backend.stop()


def test_a_backend_sharing_a_folder_reads_the_capture_from_it(shared_backend, naip_path):
    project = QgsProject.instance()
    layer = QgsRasterLayer(str(naip_path), "naip")
    spec = prepare_raster(layer, layer.extent(), layer.crs(), max_size=200,
                          transform_context=project.transformContext())
    client = BackendClient(shared_backend.url, shared_backend.token, timeout_s=60)
    image_encode.forget_backend(client.base_url)
    assert image_encode.transport_for(client) == "path"
    request = AskRequest(question="where are the lakes?", image_bytes=b"", outputs=["boxes"])
    result = ask_one(client, Question(request=request, spec=spec))
    assert request.image_path.startswith(str(shared_backend.folder.resolve())) and request.image_bytes == b""
    assert result.answer.raw_output == report_of(rgb_of(result.capture.image))
    assert not list(shared_backend.folder.iterdir())  # the plugin removes its capture after the answer
