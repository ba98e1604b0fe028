"""A stand-in for the Hugging Face hub's file API, served on 127.0.0.1 (tests only).

It serves model folders from disk the way huggingface_hub reads the hub, so `snapshot_download`
runs unchanged with HF_ENDPOINT pointing here:

    GET  /api/models/{owner}/{name}/revision/{rev}        repo info: sha (commit) and siblings
    GET  /api/models/{owner}/{name}/tree/{rev}[/{path}]   the file tree (size, git oid, lfs sha256)
    HEAD|GET /{owner}/{name}/resolve/{rev}/{path}          the file, with ETag, X-Repo-Commit, Range

Weight files (*.safetensors) are served as LFS files: their ETag is the SHA-256 of the content, as
on the hub; other files carry the git blob SHA-1. Knobs a test can turn, per file name:
`cut_after[name] = n` sends the headers of the whole file but closes the connection after n bytes
(once); `throttle_bps` slows every body; `corrupt` serves flipped bytes under the true ETag;
`gated` repos answer 403 with the hub's GatedRepo error code. Every request is recorded.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional, Set
from urllib.parse import unquote, urlparse


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class StandInHub:
    def __init__(self, repos: Dict[str, Path]):
        self.repos = {k: Path(v) for k, v in repos.items()}
        self.commits = {k: hashlib.sha1(k.encode()).hexdigest() for k in repos}
        self.requests: List[dict] = []
        self.cut_after: Dict[str, int] = {}
        self.throttle_bps: Optional[int] = None
        self.corrupt: Set[str] = set()
        self.gated: Set[str] = set()
        self._lock = threading.Lock()
        self.server: Optional[ThreadingHTTPServer] = None

    # -- repository facts ------------------------------------------------------------------------
    def files(self, repo: str) -> List[Path]:
        root = self.repos[repo]
        return sorted(p for p in root.rglob("*") if p.is_file())

    def entry(self, repo: str, path: Path) -> dict:
        data = path.read_bytes()
        rel = path.relative_to(self.repos[repo]).as_posix()
        item = {"type": "file", "path": rel, "size": len(data), "oid": git_blob_sha1(data)}
        if path.suffix == ".safetensors":
            item["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return item

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    # -- server ----------------------------------------------------------------------------------
    def start(self) -> "StandInHub":
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub._handle(self, head=True)

            def do_GET(self):
                hub._handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def _json(self, handler, status: int, body, headers: Optional[dict] = None) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.end_headers()
        try:
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client went away (a cancelled download)
            pass

    def _error(self, handler, status: int, code: str, message: str) -> None:
        self._json(handler, status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

    def _handle(self, handler, head: bool) -> None:
        parsed = urlparse(handler.path)
        parts = [unquote(p) for p in parsed.path.split("/") if p]
        with self._lock:
            self.requests.append({"method": "HEAD" if head else "GET", "path": parsed.path,
                                  "range": handler.headers.get("Range"),
                                  "auth": handler.headers.get("Authorization")})
        if len(parts) >= 5 and parts[0] == "api" and parts[1] == "models":
            repo = f"{parts[2]}/{parts[3]}"
            if repo not in self.repos:
                return self._error(handler, 404, "RepoNotFound", f"Repository {repo} not found")
            if repo in self.gated:
                return self._error(handler, 403, "GatedRepo", f"Access to model {repo} is restricted.")
            if parts[4] == "revision":
                siblings = [{"rfilename": self.entry(repo, p)["path"]} for p in self.files(repo)]
                return self._json(handler, 200, {"id": repo, "modelId": repo, "sha": self.commits[repo],
                                                 "siblings": siblings, "private": False, "gated": False})
            if parts[4] == "tree":
                prefix = "/".join(parts[6:])
                entries = [self.entry(repo, p) for p in self.files(repo)]
                entries = [e for e in entries if e["path"].startswith(prefix)]
                return self._json(handler, 200, entries)
            return self._error(handler, 404, "EntryNotFound", "unknown api route")
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = f"{parts[0]}/{parts[1]}"
            if repo not in self.repos:
                return self._error(handler, 404, "RepoNotFound", f"Repository {repo} not found")
            if repo in self.gated:
                return self._error(handler, 403, "GatedRepo", f"Access to model {repo} is restricted.")
            rel = "/".join(parts[4:])
            path = self.repos[repo] / rel
            if not path.is_file():
                return self._error(handler, 404, "EntryNotFound", f"{rel} does not exist")
            return self._file(handler, repo, path, rel, head)
        return self._error(handler, 404, "NotFound", "unknown route")

    def _file(self, handler, repo: str, path: Path, rel: str, head: bool) -> None:
        data = path.read_bytes()
        entry = self.entry(repo, path)
        etag = entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]
        if rel in self.corrupt:
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        start = 0
        rng = handler.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0] or 0)
        body = data[start:]
        handler.send_response(206 if start else 200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("ETag", f'"{etag}"')
        handler.send_header("X-Repo-Commit", self.commits[repo])
        handler.send_header("Accept-Ranges", "bytes")
        if "lfs" in entry:
            handler.send_header("X-Linked-Etag", f'"{etag}"')
            handler.send_header("X-Linked-Size", str(len(data)))
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.end_headers()
        if head:
            return
        limit = None
        with self._lock:
            if rel in self.cut_after:
                limit = self.cut_after.pop(rel)
        sent = 0
        chunk = 16 * 1024
        try:
            while sent < len(body):
                piece = body[sent:sent + chunk]
                if limit is not None and sent + len(piece) > limit:
                    handler.wfile.write(piece[:max(0, limit - sent)])
                    handler.wfile.flush()
                    handler.close_connection = True
                    handler.connection.shutdown(2)  # cut mid-way: the client sees a short body
                    return
                handler.wfile.write(piece)
                sent += len(piece)
                if self.throttle_bps:
                    time.sleep(len(piece) / self.throttle_bps)
        except (BrokenPipeError, ConnectionResetError, OSError):
            return
