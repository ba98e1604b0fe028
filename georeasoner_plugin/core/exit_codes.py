"""Exit codes of the two command lines (``georeasoner`` and ``training``), and the one way to end them.

The numbers follow BSD's sysexits.h, so scripts can tell a typo from a missing file from a bug:

====  ==================  ===================================================================
code  name                meaning
====  ==================  ===================================================================
0     EXIT_OK             done (an empty answer is an answer)
1     EXIT_FAILED         it ran, but produced nothing usable (e.g. the model's answer could
                          not be read; nothing was written)
64    EXIT_USAGE          bad command line: unknown option, bad value, unknown profile
65    EXIT_DATAERR        the input is there but wrong: unreadable raster, malformed dataset
66    EXIT_NOINPUT        an input file or folder does not exist
69    EXIT_UNAVAILABLE    a model or service is missing or cannot be reached
70    EXIT_SOFTWARE       an internal error: a bug, please report it (rerun with --debug)
73    EXIT_CANTCREAT      an output cannot be written (exists without --overwrite, no space...)
74    EXIT_IOERR          another input/output error
77    EXIT_NOPERM         permission denied
78    EXIT_CONFIG         a configuration file is wrong
130   EXIT_INTERRUPTED    interrupted (Ctrl+C); nothing half-written is left
====  ==================  ===================================================================

Library code raises its own domain exceptions (``ImageryError``, ``ModelLoadError``,
``DatasetError``...) and never anything CLI-specific; each CLI passes a table ``{exception type:
code}`` to :func:`run_command`, which prints one line and returns the code. An exception may also
carry its own ``exit_code`` attribute (:class:`CommandError` does).

Pure Python (stdlib only): both CLIs and the QGIS plugin may import it.
"""
from __future__ import annotations

import sys
from typing import Callable, Mapping, Optional, TextIO

__all__ = [
    "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_DATAERR", "EXIT_NOINPUT", "EXIT_UNAVAILABLE",
    "EXIT_SOFTWARE", "EXIT_CANTCREAT", "EXIT_IOERR", "EXIT_NOPERM", "EXIT_CONFIG", "EXIT_INTERRUPTED",
    "CommandError", "UsageError", "ExitTable", "exit_code_for", "run_command",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 64
EXIT_DATAERR = 65
EXIT_NOINPUT = 66
EXIT_UNAVAILABLE = 69
EXIT_SOFTWARE = 70
EXIT_CANTCREAT = 73
EXIT_IOERR = 74
EXIT_NOPERM = 77
EXIT_CONFIG = 78
EXIT_INTERRUPTED = 130

ExitTable = Mapping[type, int]

# Standard library errors that reach a CLI unwrapped: their message is already one clear line.
_STANDARD: ExitTable = {
    FileNotFoundError: EXIT_NOINPUT,
    NotADirectoryError: EXIT_NOINPUT,
    PermissionError: EXIT_NOPERM,
    OSError: EXIT_IOERR,
}


class CommandError(Exception):
    """A problem the user can fix, raised by CLI code (not library code); the message says how."""

    exit_code: int = EXIT_FAILED

    def __init__(self, message: str, exit_code: Optional[int] = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(CommandError):
    """A bad command line (argparse errors included)."""

    exit_code = EXIT_USAGE


def exit_code_for(exc: BaseException, table: Optional[ExitTable] = None) -> int:
    """The exit code for ``exc``: its own ``exit_code``, else the nearest class in ``table``, else
    the standard table; EXIT_SOFTWARE (a bug) for anything unknown."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    own = getattr(exc, "exit_code", None)
    if isinstance(own, int) and not isinstance(own, bool):
        return own
    for klass in type(exc).__mro__:  # the most specific class listed wins
        if table and klass in table:
            return table[klass]
        if klass in _STANDARD:
            return _STANDARD[klass]
    return EXIT_SOFTWARE


def run_command(prog: str, body: Callable[[], int], table: Optional[ExitTable] = None, *,
                debug: bool = False, interrupted: str = "interrupted",
                stderr: Optional[TextIO] = None) -> int:
    """Run one CLI command and turn whatever it raises into one line on stderr and an exit code.

    Known problems print ``PROG: error: MESSAGE``; Ctrl+C prints ``PROG: INTERRUPTED`` and returns
    130; anything else is a bug: one line asking for a report (or the traceback with ``debug``).
    ``SystemExit`` (argparse's --help / --version) passes its code through.
    """
    out = stderr if stderr is not None else sys.stderr
    try:
        return body()
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_FAILED)
    except KeyboardInterrupt:
        print(f"\n{prog}: {interrupted}", file=out)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the promise: one line, never a traceback for users
        code = exit_code_for(exc, table)
        if code != EXIT_SOFTWARE:
            print(f"\n{prog}: error: {exc}", file=out)
            return code
        if debug:
            raise
        print(f"\n{prog}: internal error: {type(exc).__name__}: {exc}\n"
              f"This is a bug; rerun with --debug for the traceback and report it.", file=out)
        return EXIT_SOFTWARE
