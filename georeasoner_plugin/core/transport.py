"""How a capture travels from the QGIS plugin to the backend (one definition for both sides).

- same machine, backend advertising a shared capture folder: the plugin writes the capture there
  as an uncompressed TIFF and sends only its path (no encoding, no upload, no inflate);
- local backend on loopback without a shared folder: the bytes of an uncompressed TIFF (no
  compression work on either side; loopback moves 12 MB in a few ms);
- remote backend: a lossless compressed image, PNG (fewer bytes over a real network); lossless
  WebP only on request and when the backend lists it in /v1/info ("image_formats").
"""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from .api import is_loopback_host

TRANSPORT_PATH = "path"
TRANSPORT_TIFF = "tiff"
TRANSPORT_WEBP = "webp"
TRANSPORT_PNG = "png"
MIME_TYPES = {TRANSPORT_TIFF: "image/tiff", TRANSPORT_WEBP: "image/webp", TRANSPORT_PNG: "image/png"}
# /v1/info keys the backend fills and the client reads.
INFO_IMAGE_FORMATS = "image_formats"  # e.g. ["png", "jpeg", "tiff", "webp"]
INFO_SHARED_CAPTURE_DIR = "shared_capture_dir"  # absolute folder, present only when the backend offers it
# A shared capture's file name: the plugin writes CAPTURE_PREFIX + random + CAPTURE_SUFFIX and removes
# it after the ask; a backend clears the ones a crashed client left behind.
CAPTURE_PREFIX = "capture-"
CAPTURE_SUFFIX = ".tif"
STALE_CAPTURE_S = 24 * 3600




def pick_transport(info: Mapping[str, Any], host: str, same_machine: Optional[bool] = None,
                   allow_webp: bool = False) -> str:
    """The transport for a backend described by its /v1/info answer and reached at ``host``.

    A remote backend gets PNG unless ``allow_webp``: lossless WebP of a 2048 x 2048 capture cost
    5-8 s of client CPU in `make bench` and was not smaller than PNG (zlib level 1) on aerial
    imagery, so it is an opt-in for links where a few percent of bytes matter more than seconds."""
    local = is_loopback_host(host) if same_machine is None else same_machine
    formats = {str(f).lower() for f in info.get(INFO_IMAGE_FORMATS) or ("png", "jpeg", "tiff")}
    if local and info.get(INFO_SHARED_CAPTURE_DIR):
        return TRANSPORT_PATH
    if local and "tiff" in formats:
        return TRANSPORT_TIFF
    if allow_webp and "webp" in formats:
        return TRANSPORT_WEBP
    return TRANSPORT_PNG


def private_capture_dir(folder: Path) -> Optional[str]:
    """`folder` made (or kept) private to this user, as a shared capture folder (`serve`'s default,
    the plugin's for the backends it starts), its stale captures removed. None when it cannot be
    made or is someone else's: clients then upload their captures."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if os.name == "posix":
            info = folder.stat()
            if info.st_uid != os.getuid():
                return None
            if stat.S_IMODE(info.st_mode) & 0o077:
                folder.chmod(0o700)
    except OSError:
        return None
    remove_stale_captures(folder)
    return str(folder.resolve())


def remove_stale_captures(folder: "os.PathLike[str] | str") -> None:
    """Removes the captures older than STALE_CAPTURE_S from a shared capture folder (a client that
    crashed mid-question left them); other files are not touched."""
    cutoff = time.time() - STALE_CAPTURE_S
    for stale in Path(folder).glob(f"{CAPTURE_PREFIX}*{CAPTURE_SUFFIX}"):
        try:
            if stale.is_file() and stale.stat().st_mtime < cutoff:
                stale.unlink()
        except OSError:
            pass  # removed by its client meanwhile, or not ours to remove
