"""core/api.py: the service contract both processes import (QGIS client and backend)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from georeasoner_plugin.core import api

API_FILE = Path(api.__file__)


def test_api_is_pure_python_standard_library():
    tree = ast.parse(API_FILE.read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.add(node.module.split(".")[0])
    assert modules <= {"__future__", "hashlib", "ipaddress", "os", "re", "pathlib", "typing"}, modules


def test_token_file_rule_strips_and_expands_on_every_source(tmp_path):
    home = Path.home()
    assert api.token_file_path("  ~/tok  ", environ={}) == home / "tok"
    assert api.token_file_path(None, environ={api.TOKEN_FILE_ENV: " ~/env-tok \n"}) == home / "env-tok"
    assert api.token_file_path("   ", environ={api.TOKEN_FILE_ENV: str(tmp_path / "t")}) == tmp_path / "t"
    assert api.token_file_path(None, environ={"XDG_CONFIG_HOME": f" {tmp_path} "}) == tmp_path / "georeasoner" / "token"
    assert api.token_file_path(None, environ={"XDG_CONFIG_HOME": "  "}) == home / ".config" / "georeasoner" / "token"


def test_the_backend_uses_the_same_token_rule():
    from georeasoner_plugin.backend import auth
    assert auth.token_file_path is api.token_file_path and auth.TOKEN_FILE_ENV == api.TOKEN_FILE_ENV


def test_listening_line_round_trip():
    for url in ("http://127.0.0.1:8765", "http://[::1]:40001"):
        assert api.parse_listening_line(api.listening_line(url) + "\n") == url
    assert api.parse_listening_line("Token file: /x (send ...)") is None
    assert api.parse_listening_line("warning: listening on 0.0.0.0, reachable from other machines") is None


@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True), ("localhost", True), ("LOCALHOST.", True), ("[::1]", True), ("::1", True),
    ("127.0.0.1:8765", True), ("[::1]:8765", True), ("127.5.6.7", True), ("0.0.0.0", False), ("::", False),
    ("example.org", False), ("192.168.1.2:80", False), ("", False), ("localhost.evil.com", False),
])
def test_loopback_hosts(host, loopback):
    assert api.is_loopback_host(host) is loopback


def test_question_rule():
    assert api.check_question("  where?  ") == "where?"
    for text, code in (("   ", "empty_question"), ("x" * (api.MAX_QUESTION_CHARS + 1), "question_too_long"),
                       ("\ud800", "invalid_field")):
        with pytest.raises(api.QuestionError) as info:
            api.check_question(text)
        assert info.value.code == code and str(info.value)
    assert api.check_question("x" * api.MAX_QUESTION_CHARS)


def test_error_body_shape():
    body = api.error_body(429, "queue_full", "the server is busy  ")
    assert body == {"error": {"status": 429, "code": "queue_full", "message": "The server is busy."}}
    assert api.parse_error_body(body) == body["error"]
    assert api.parse_error_body({"detail": "x"}) is None and api.parse_error_body("x") is None


def test_the_server_schema_follows_the_contract():
    from georeasoner_plugin.backend.server.schema import AskRequest
    assert set(AskRequest.model_fields) == set(api.ASK_FIELDS)
    schema = AskRequest.model_json_schema()["properties"]
    assert schema["max_new_tokens"]["maximum"] == api.ASK_FIELDS["max_new_tokens"][2]
    assert schema["outputs"]["maxItems"] == api.ASK_FIELDS["outputs"][2]
    assert set(api.STAGES) >= {"preprocess", "reason", "parse", "segment", "vectorize", "done"}
