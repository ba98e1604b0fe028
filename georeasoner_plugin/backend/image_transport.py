"""The backend's side of core/transport.py: which formats it decodes, and captures read from the
shared folder when plugin and backend run on one machine.

Server wiring (kept out of the server so it merges as a call-site edit): /v1/info adds
``image_formats: decodable_formats()`` and, when the server was started with a shared capture
folder, ``shared_capture_dir``; the upload sniffer accepts WEBP_SIGNATURE; an ask request carrying
``image_path`` instead of an image part is decoded with ``read_shared_capture``.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, List, Union

import numpy as np
from PIL import features

from .imagery import DEFAULT_MAX_IMAGE_PIXELS, ImageryError, read_image_bytes

__all__ = ["decodable_formats", "open_shared_capture", "read_shared_capture", "is_webp", "WEBP_SIGNATURE"]

WEBP_SIGNATURE = (b"RIFF", b"WEBP")  # bytes 0-3 and 8-11


def is_webp(data: bytes) -> bool:
    return data[:4] == WEBP_SIGNATURE[0] and data[8:12] == WEBP_SIGNATURE[1]


def decodable_formats() -> List[str]:
    """Lower-case names for /v1/info: what this backend's Pillow decodes."""
    return ["png", "jpeg", "tiff"] + (["webp"] if features.check("webp") else [])


def open_shared_capture(path: Union[str, os.PathLike], shared_dir: Union[str, os.PathLike]) -> BinaryIO:
    """The open capture file the plugin wrote into ``shared_dir``, or ImageryError.

    Only a regular file directly inside the shared folder is opened: the name is resolved (links
    followed) and must stay inside it, so a request cannot make the backend read any other file.
    """
    folder = Path(shared_dir).resolve()
    try:
        target = Path(path).resolve(strict=True)
    except (OSError, RuntimeError):
        raise ImageryError(f"{path}: no such capture; the plugin writes captures into {folder}") from None
    if target.parent != folder:
        raise ImageryError(f"{path} is not in the shared capture folder {folder}; send the image itself instead")
    info = target.stat()
    if not stat.S_ISREG(info.st_mode):
        raise ImageryError(f"{path} is not a regular file")
    return open(target, "rb")


def read_shared_capture(path: Union[str, os.PathLike], shared_dir: Union[str, os.PathLike],
                        max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode a capture the plugin wrote into ``shared_dir`` (same machine: nothing was uploaded)."""
    with open_shared_capture(path, shared_dir) as handle:
        data = handle.read()
    return read_image_bytes(data, max_pixels=max_pixels)
