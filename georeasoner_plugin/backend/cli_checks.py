"""Checks `georeasoner ask` makes before any model runs: the input is a file GDAL can read without
blocking, every output folder is writable."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Dict

from ..core.exit_codes import EXIT_CANTCREAT, EXIT_DATAERR, EXIT_NOINPUT, EXIT_NOPERM, CommandError


def check_input(image: str) -> None:
    """A regular file or a GDAL virtual path (/vsizip/..., /vsicurl/...): a FIFO or a device would
    block the read forever, a folder is no raster."""
    if image.startswith("/vsi"):
        return
    try:
        info = os.stat(image)
    except FileNotFoundError:
        raise CommandError(f"{image}: no such file", EXIT_NOINPUT) from None
    except OSError as exc:
        raise CommandError(f"{image}: cannot be read: {exc.strerror or exc}", EXIT_NOPERM) from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode) else \
            "a device or socket"
        raise CommandError(f"{image} is {kind}, not a raster file; give a raster file or a GDAL virtual path such "
                           f"as /vsizip/archive.zip/image.tif", EXIT_DATAERR)


def check_writable(paths: Dict[str, Path]) -> None:
    """Fail before minutes of model time, not after: every output folder must be writable now (a
    temporary file is created and removed: permission bits alone do not tell, e.g. for root or on a
    read-only mount)."""
    import tempfile

    folders = {p if k == "vectors" and not p.suffix else p.parent for k, p in paths.items()}
    for folder in sorted(folders, key=str):
        existing = Path(os.path.abspath(folder))
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise CommandError(f"cannot write into {folder}: {existing} is not a folder; choose another -o",
                               EXIT_CANTCREAT)
        try:
            handle, probe = tempfile.mkstemp(prefix=".georeasoner-write-test-", dir=existing)
        except OSError as exc:
            raise CommandError(f"cannot write into {folder}: {exc.strerror or exc} ({existing}); choose another -o "
                               f"or fix the folder's permissions. Nothing was run", EXIT_CANTCREAT) from None
        os.close(handle)
        os.unlink(probe)
