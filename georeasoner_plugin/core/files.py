"""The one atomic single-file write: readers see the old file or the new one, never half of one.

Used by the backend CLI (answer JSON, the tiny-model manifest), the QGIS export (answer sidecar) and
training (run files, results, prepared datasets). Writing several files all-or-nothing (a shapefile
set) is a different job: ``backend/writers.py`` stages them in a folder and moves them together.

Pure Python (standard library only): QGIS, the backend and training import this very file.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

__all__ = ["atomic_write_bytes", "atomic_write_text"]

PathLike = Union[str, "os.PathLike[str]"]


def atomic_write_bytes(path: PathLike, data: bytes, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` through a hidden temporary file in the same folder, then rename.

    The folder must exist. ``overwrite=False`` raises FileExistsError when ``path`` exists (checked
    before writing and again at the rename). Any OSError leaves ``path`` as it was and no temporary
    file behind.
    """
    target = Path(path)
    if not overwrite and (target.exists() or target.is_symlink()):
        raise FileExistsError(17, "File exists", str(target))
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(temporary, target)
        else:
            os.link(temporary, target)  # fails with FileExistsError if it appeared meanwhile
            os.unlink(temporary)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    return target


def atomic_write_text(path: PathLike, text: str, *, encoding: str = "utf-8", overwrite: bool = True) -> Path:
    """``atomic_write_bytes`` for text (UTF-8 unless told otherwise)."""
    return atomic_write_bytes(path, text.encode(encoding), overwrite=overwrite)
