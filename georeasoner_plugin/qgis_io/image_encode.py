"""A capture's pixels in the transport core/transport.py picks for the backend (QGIS side).

Every transport is lossless: the backend decodes exactly the captured RGB pixels.
- tiff: an uncompressed RGB TIFF (loopback: no compression work on either side);
- webp: lossless WebP (remote backend listing it in /v1/info: fewest bytes);
- png: PNG (remote backend without WebP, and what the answer store keeps).
Qt's own image writers do the work (the TIFF and WebP plugins ship with QGIS); when Qt lacks the
WebP writer, GDAL's WEBP driver with LOSSLESS=YES is used, and PNG when neither is there.
"""
from __future__ import annotations

import os
import tempfile
import uuid
from typing import Dict, Optional, Tuple

from qgis.PyQt.QtCore import QBuffer, QByteArray, QIODevice, QUrl
from qgis.PyQt.QtGui import QImage, QImageWriter

from ..core.transport import (CAPTURE_PREFIX, CAPTURE_SUFFIX, INFO_SHARED_CAPTURE_DIR, MIME_TYPES, TRANSPORT_PATH,
                              TRANSPORT_PNG, TRANSPORT_TIFF, TRANSPORT_WEBP, pick_transport)

_EXTENSIONS = {TRANSPORT_TIFF: "tif", TRANSPORT_WEBP: "webp", TRANSPORT_PNG: "png"}
_INFO_CACHE: Dict[str, dict] = {}  # base URL -> its /v1/info answer (asked once per backend and session)


def qt_writes(fmt: str) -> bool:
    return fmt.encode("ascii") in {bytes(f) for f in QImageWriter.supportedImageFormats()}


def _rgb(image: QImage) -> QImage:
    """3 bytes a pixel, the captured colours unchanged (captures are opaque RGB32)."""
    return image if image.format() == QImage.Format.Format_RGB888 else image.convertToFormat(QImage.Format.Format_RGB888)


def _qt_bytes(image: QImage, fmt: str, quality: int = -1, compression: Optional[int] = None) -> bytes:
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    writer = QImageWriter(buffer, fmt.encode("ascii"))
    if quality >= 0:
        writer.setQuality(quality)
    if compression is not None:
        writer.setCompression(compression)
    ok = writer.write(image)
    buffer.close()
    if not ok:
        raise OSError(f"Qt could not write the capture as {fmt}: {writer.errorString()}")
    return bytes(data)


def _gdal_webp(image: QImage) -> bytes:
    """Lossless WebP through GDAL (when Qt's WebP plugin is missing): MEM dataset -> WEBP in /vsimem."""
    import numpy as np
    from osgeo import gdal

    rgb = _rgb(image)
    width, height, stride = rgb.width(), rgb.height(), rgb.bytesPerLine()
    pixels = np.frombuffer(bytes(rgb.constBits().asstring(stride * height)), np.uint8)
    pixels = pixels.reshape(height, stride)[:, :width * 3].reshape(height, width, 3)
    mem = gdal.GetDriverByName("MEM").Create("", width, height, 3, gdal.GDT_Byte)
    for band in range(3):
        mem.GetRasterBand(band + 1).WriteArray(pixels[:, :, band])
    name = f"/vsimem/georeasoner-{uuid.uuid4().hex}.webp"
    gdal.GetDriverByName("WEBP").CreateCopy(name, mem, options=["LOSSLESS=YES"])
    try:
        handle = gdal.VSIFOpenL(name, "rb")
        gdal.VSIFSeekL(handle, 0, 2)
        size = gdal.VSIFTellL(handle)
        gdal.VSIFSeekL(handle, 0, 0)
        data = bytes(gdal.VSIFReadL(1, size, handle))
        gdal.VSIFCloseL(handle)
    finally:
        gdal.Unlink(name)
    return data


def gdal_writes_webp() -> bool:
    try:
        from osgeo import gdal
    except ImportError:
        return False
    return gdal.GetDriverByName("WEBP") is not None


def writable_transport(transport: str) -> str:
    """The transport itself when this QGIS can write it, else PNG (always writable)."""
    if transport == TRANSPORT_WEBP and not (qt_writes("webp") or gdal_writes_webp()):
        return TRANSPORT_PNG
    if transport == TRANSPORT_TIFF and not qt_writes("tiff"):
        return TRANSPORT_PNG
    return transport


def encode_image(image: QImage, transport: str) -> Tuple[bytes, str, str]:
    """(bytes, file name, MIME type) of the capture in `transport` (tiff, webp or png), lossless."""
    transport = writable_transport(transport)
    if transport == TRANSPORT_TIFF:
        data = _qt_bytes(_rgb(image), "tiff", compression=0)  # 0: no compression (Qt's TIFF writer)
    elif transport == TRANSPORT_WEBP:
        # Qt's WebP writer switches to lossless at quality 100 (also its slowest effort: ~5 s for 2048²).
        data = _qt_bytes(_rgb(image), "webp", quality=100) if qt_writes("webp") else _gdal_webp(image)
    else:
        transport = TRANSPORT_PNG
        # Quality 89 is zlib level 1 in Qt's PNG writer: a 2048² capture in ~0.5 s instead of ~2 s at
        # Qt's default level, for ~15% more bytes (measured on NAIP; README "Image transport").
        data = _qt_bytes(image, "png", quality=89)
    return data, f"capture.{_EXTENSIONS[transport]}", MIME_TYPES[transport]


def transport_for(client) -> str:
    """What to send this client's backend: core.transport.pick_transport on its /v1/info (asked once
    per backend URL); PNG when the info cannot be had (the ask then reports the backend's state).
    "path" only when the backend's shared capture folder is a folder this process can write (same
    machine); else the uncompressed TIFF upload."""
    from .client import BackendError

    info = _INFO_CACHE.get(client.base_url)
    if info is None:
        try:
            info = client.info()
        except BackendError:
            return TRANSPORT_PNG
        _INFO_CACHE[client.base_url] = info
    transport = pick_transport(info, QUrl(client.base_url).host())
    if transport == TRANSPORT_PATH:
        folder = shared_capture_dir(client)
        return TRANSPORT_PATH if folder and writable_transport(TRANSPORT_TIFF) == TRANSPORT_TIFF else TRANSPORT_TIFF
    return writable_transport(transport)


def shared_capture_dir(client) -> str:
    """The backend's shared capture folder when this process can write into it, else ""."""
    folder = str((_INFO_CACHE.get(client.base_url) or {}).get(INFO_SHARED_CAPTURE_DIR) or "")
    return folder if folder and os.path.isdir(folder) and os.access(folder, os.W_OK) else ""


def write_shared_capture(image: QImage, folder: str) -> str:
    """Write the capture as an uncompressed TIFF into the shared folder; its path (the caller removes it)."""
    data, _, _ = encode_image(image, TRANSPORT_TIFF)
    handle, path = tempfile.mkstemp(prefix=CAPTURE_PREFIX, suffix=CAPTURE_SUFFIX, dir=folder)
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    return path


def forget_backend(base_url: str) -> None:
    """Drop the cached /v1/info of a backend (it was restarted, perhaps with other formats)."""
    _INFO_CACHE.pop(base_url.rstrip("/"), None)
