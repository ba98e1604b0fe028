"""The backend's bearer token: created once, kept in a file only its owner can read.

The token never appears on a command line, in a log or in an error message; clients (the QGIS
plugin) read it from the same file, or the user copies it from there to a remote client.
"""
from __future__ import annotations

import hmac
import os
import secrets
import stat
import sys
from pathlib import Path
from typing import Optional

from ..core.api import MIN_TOKEN_CHARS, TOKEN_FILE_ENV, config_dir, token_file_path  # noqa: F401 - the one rule

__all__ = ["TOKEN_FILE_ENV", "MIN_TOKEN_CHARS", "TokenFileError", "config_dir", "token_file_path",
           "load_or_create_token", "bearer_matches"]


class TokenFileError(RuntimeError):
    """The token file cannot be used; the message says how to fix it."""


def load_or_create_token(path: Path) -> str:
    """The token stored in `path`; a new random one (mode 0600) when the file does not exist yet."""
    path = Path(path)
    if not path.exists():
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            token = secrets.token_urlsafe(32)
            # O_EXCL: two servers starting at once must not overwrite each other's token.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_or_create_token(path)
        except OSError as exc:
            raise TokenFileError(f"cannot create the token file {path}: {exc.strerror or exc}; choose another "
                                 f"place with --token-file") from None
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(token + "\n")
        return token
    if not path.is_file():
        raise TokenFileError(f"the token file {path} is not a regular file; remove it or choose another with "
                             f"--token-file")
    _restrict_permissions(path)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"cannot read the token file {path}: {exc}; delete it to have a new token "
                             f"created") from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise TokenFileError(f"the token file {path} does not hold a usable token (one line of at least "
                             f"{MIN_TOKEN_CHARS} characters without spaces); delete it to have a new one created")
    return token


def _restrict_permissions(path: Path) -> None:
    if os.name != "posix":
        return  # Windows keeps files in the user's profile private through ACLs, not mode bits
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        try:
            os.chmod(path, 0o600)
        except OSError as exc:
            raise TokenFileError(f"the token file {path} is readable by other users (mode {mode:o}) and cannot "
                                 f"be restricted: {exc.strerror or exc}; fix its permissions (chmod 600)") from None
        print(f"warning: the token file {path} was readable by other users (mode {mode:o}); it is now 600",
              file=sys.stderr)


def bearer_matches(authorization: Optional[str], token: str) -> bool:
    """Whether an Authorization header carries exactly this bearer token (constant-time comparison)."""
    if not authorization:
        return False
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.strip().encode("utf-8", "surrogateescape"),
                               token.encode("utf-8"))
