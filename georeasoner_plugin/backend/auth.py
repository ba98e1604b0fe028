"""The backend's bearer token: created once, kept in a file only its owner can read.

The token never appears on a command line, in a log or in an error message; clients (the QGIS
plugin) read it from the same file, or the user copies it from there to a remote client.
"""
from __future__ import annotations

import errno
import hmac
import os
import secrets
import stat
import sys
import tempfile
from pathlib import Path
from typing import Optional

from ..core.api import MIN_TOKEN_CHARS, TOKEN_FILE_ENV, config_dir, token_file_path  # noqa: F401 - the one rule

__all__ = ["TOKEN_FILE_ENV", "MIN_TOKEN_CHARS", "TokenFileError", "config_dir", "token_file_path",
           "load_or_create_token", "bearer_matches"]


class TokenFileError(RuntimeError):
    """The token file cannot be used; the message says how to fix it."""


def load_or_create_token(path: Path) -> str:
    """The token stored in `path`; a new random one (mode 0600) when the file does not exist yet.

    POSIX: the file is opened without following symlinks, must be a regular file owned by the
    current user in a folder that is the user's (or root's) and not writable by group or others; a
    new token is written to a temporary file first and linked into place, so a concurrent starter
    sees either no file or a complete one.
    """
    path = Path(path)
    if os.name != "posix":  # Windows keeps files in the user's profile private through ACLs, not mode bits
        return _load_or_create_simple(path)
    folder = path.parent
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise TokenFileError(f"cannot create the folder {folder} for the token file: {exc.strerror or exc}; "
                             f"choose another place with --token-file") from None
    _check_folder(folder)
    for _ in range(5):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError:
            token = _create(path)
            if token is not None:
                return token
            continue  # another server created it in the meantime: read theirs
        except OSError as exc:
            if exc.errno == errno.ELOOP or os.path.islink(path):
                raise TokenFileError(f"the token file {path} is a symbolic link; a token file is never a link "
                                     f"(someone else could point it at a file they read). Remove the link, or "
                                     f"choose another path with --token-file") from None
            raise TokenFileError(f"cannot open the token file {path}: {exc.strerror or exc}; choose another "
                                 f"place with --token-file") from None
        with os.fdopen(fd, "rb") as handle:
            _check_file(path, os.fstat(fd), fd)
            data = handle.read(4096)
        return _parse(path, data)
    raise TokenFileError(f"the token file {path} keeps appearing and disappearing; is another program "
                         f"removing it? Choose another path with --token-file")


def _check_folder(folder: Path) -> None:
    try:
        info = folder.stat()
    except OSError as exc:
        raise TokenFileError(f"cannot inspect the folder {folder} of the token file: {exc.strerror or exc}") from None
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid not in (os.geteuid(), 0):
        raise TokenFileError(f"the folder {folder} of the token file belongs to another user (uid {info.st_uid}), "
                             f"who could replace the token; choose a folder of your own with --token-file (the "
                             f"default is ~/.config/georeasoner/token)")
    if mode & 0o022:
        raise TokenFileError(f"the folder {folder} of the token file is writable by other users (mode {mode:o}), "
                             f"who could replace the token; restrict it (chmod go-w '{folder}') or choose a "
                             f"private folder with --token-file")


def _check_file(path: Path, info: os.stat_result, fd: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise TokenFileError(f"the token file {path} is not a regular file; remove it or choose another with "
                             f"--token-file")
    if info.st_uid != os.geteuid():
        raise TokenFileError(f"the token file {path} belongs to another user (uid {info.st_uid}), who can read "
                             f"the token; remove it to have a new one created, or choose another --token-file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        try:
            os.fchmod(fd, 0o600)
        except OSError as exc:
            raise TokenFileError(f"the token file {path} is readable by other users (mode {mode:o}) and cannot "
                                 f"be restricted: {exc.strerror or exc}; fix its permissions (chmod 600)") from None
        print(f"warning: the token file {path} was readable by other users (mode {mode:o}); it is now 600",
              file=sys.stderr)


def _create(path: Path) -> Optional[str]:
    """A new token written to a temporary file and linked into place; None when another process
    linked its own first (then that one is the token)."""
    token = secrets.token_urlsafe(32)
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise TokenFileError(f"cannot create the token file {path}: {exc.strerror or exc}; choose another "
                             f"place with --token-file") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:  # mkstemp: mode 0600, O_EXCL, no symlink followed
            handle.write(token + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)  # atomic, and never replaces an existing file
        except FileExistsError:
            return None
        except OSError:  # a file system without hard links: rename, unless a token appeared meanwhile
            if os.path.lexists(path):
                return None
            try:
                os.rename(temporary, path)
            except OSError as exc:
                raise TokenFileError(f"cannot create the token file {path}: {exc.strerror or exc}; choose "
                                     f"another place with --token-file") from None
            return token if _read_back(path) == token else None
        return token
    finally:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass


def _read_back(path: Path) -> Optional[str]:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _parse(path: Path, data: bytes) -> str:
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        token = ""
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise TokenFileError(f"the token file {path} does not hold a usable token (one line of at least "
                             f"{MIN_TOKEN_CHARS} characters without spaces); delete it to have a new one created")
    return token


def _load_or_create_simple(path: Path) -> str:
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TokenFileError(f"cannot create the token file {path}: {exc.strerror or exc}; choose another "
                                 f"place with --token-file") from None
        token = _create(path)
        if token is not None:
            return token
    if not path.is_file() or path.is_symlink():
        raise TokenFileError(f"the token file {path} is not a regular file; remove it or choose another with "
                             f"--token-file")
    try:
        return _parse(path, path.read_bytes()[:4096])
    except OSError as exc:
        raise TokenFileError(f"cannot read the token file {path}: {exc}; delete it to have a new token "
                             f"created") from None


def bearer_matches(authorization: Optional[str], token: str) -> bool:
    """Whether an Authorization header carries exactly this bearer token (constant-time comparison)."""
    if not authorization:
        return False
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.strip().encode("utf-8", "surrogateescape"),
                               token.encode("utf-8"))
