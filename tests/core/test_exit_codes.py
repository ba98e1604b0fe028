"""The exit-code table both CLIs share (core/exit_codes.py)."""
import io

import pytest

from georeasoner_plugin.core import exit_codes as ec


class _DomainError(ValueError):
    pass


class _MoreSpecific(_DomainError):
    pass


def _raise(exc):
    def body():
        raise exc
    return body


def test_codes_are_sysexits_like_and_distinct():
    codes = [ec.EXIT_OK, ec.EXIT_FAILED, ec.EXIT_USAGE, ec.EXIT_DATAERR, ec.EXIT_NOINPUT, ec.EXIT_UNAVAILABLE,
             ec.EXIT_SOFTWARE, ec.EXIT_CANTCREAT, ec.EXIT_IOERR, ec.EXIT_NOPERM, ec.EXIT_CONFIG, ec.EXIT_INTERRUPTED]
    assert len(set(codes)) == len(codes)
    assert (ec.EXIT_USAGE, ec.EXIT_DATAERR, ec.EXIT_NOINPUT, ec.EXIT_SOFTWARE, ec.EXIT_CONFIG) == (64, 65, 66, 70, 78)


def test_exception_kinds_map_to_codes():
    table = {_DomainError: ec.EXIT_DATAERR, _MoreSpecific: ec.EXIT_CONFIG}
    assert ec.exit_code_for(_DomainError("x"), table) == ec.EXIT_DATAERR
    assert ec.exit_code_for(_MoreSpecific("x"), table) == ec.EXIT_CONFIG  # the most specific class wins
    assert ec.exit_code_for(ec.UsageError("x")) == ec.EXIT_USAGE
    assert ec.exit_code_for(ec.CommandError("x")) == ec.EXIT_FAILED
    assert ec.exit_code_for(ec.CommandError("x", ec.EXIT_CANTCREAT)) == ec.EXIT_CANTCREAT
    assert ec.exit_code_for(FileNotFoundError(2, "No such file")) == ec.EXIT_NOINPUT
    assert ec.exit_code_for(PermissionError(13, "denied")) == ec.EXIT_NOPERM
    assert ec.exit_code_for(KeyboardInterrupt()) == ec.EXIT_INTERRUPTED
    assert ec.exit_code_for(ZeroDivisionError()) == ec.EXIT_SOFTWARE
    assert ec.exit_code_for(_DomainError("x")) == ec.EXIT_SOFTWARE  # not listed: a bug


def test_run_command_prints_one_line_per_kind():
    err = io.StringIO()
    assert ec.run_command("tool", _raise(_DomainError("the file is broken; fix it")),
                          {_DomainError: ec.EXIT_DATAERR}, stderr=err) == ec.EXIT_DATAERR
    assert err.getvalue().strip() == "tool: error: the file is broken; fix it"

    err = io.StringIO()
    assert ec.run_command("tool", _raise(ZeroDivisionError("boom")), stderr=err) == ec.EXIT_SOFTWARE
    assert "tool: internal error: ZeroDivisionError: boom" in err.getvalue() and "--debug" in err.getvalue()
    with pytest.raises(ZeroDivisionError):
        ec.run_command("tool", _raise(ZeroDivisionError("boom")), debug=True, stderr=io.StringIO())

    err = io.StringIO()
    assert ec.run_command("tool", _raise(KeyboardInterrupt()), stderr=err) == ec.EXIT_INTERRUPTED
    assert "tool: interrupted" in err.getvalue()
    assert ec.run_command("tool", _raise(SystemExit(0)), stderr=io.StringIO()) == 0
    assert ec.run_command("tool", lambda: ec.EXIT_OK) == ec.EXIT_OK


def test_backend_cli_uses_the_shared_codes(capsys):
    from georeasoner_plugin.backend import cli

    assert cli.main(["ask", "--no-such-option"]) == ec.EXIT_USAGE
    assert cli.main(["ask", "/no/such/raster.tif", "lakes", "-o", "/tmp/never-written.gpkg"]) == ec.EXIT_NOINPUT
    err = capsys.readouterr().err
    assert "georeasoner: error: /no/such/raster.tif: no such file" in err and "Traceback" not in err
