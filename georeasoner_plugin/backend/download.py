"""Model downloads for the set-up panel: huggingface_hub's snapshot_download, safetensors only.

`georeasoner download REPO_ID --progress-json` prints one JSON object per line, so the plugin can
run it as a subprocess and show a progress bar:

    {"event": "plan", "repo", "files", "total_bytes", "to_download_bytes"}
    {"event": "progress", "downloaded_bytes", "total_bytes"}            (a few times a second)
    {"event": "verify", "file"}                                         (each weight file checked)
    {"event": "done", "path"}
    {"event": "error", "code", "message"}   code: offline | network | gated | auth | not_found | corrupt | disk | failed
    {"event": "cancelled"}                  (SIGTERM / Ctrl+C; the partial file stays and the next run resumes)

huggingface_hub does the transfer, the cache layout, HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE; an
interrupted file is kept as `blobs/<etag>.incomplete` and resumed with an HTTP Range request. What
it does not do is check what arrived: every weight file is checked here, against the SHA-256 the hub
names it by (LFS files live in the cache as blobs named by their SHA-256) and by reading the
safetensors header, whose offsets must add up to the file's size. A corrupt file is removed, so the
next run fetches it again. The progress figure is read from the bytes on disk (hand-written: the
library's progress bars are for terminals, and disk bytes also count what an earlier run left).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import struct
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..core.catalog import MODEL_ALLOW_PATTERNS, access_advice

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
PROGRESS_INTERVAL_S = 0.25

Event = Dict[str, object]


class DownloadError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _storage_folder(repo_id: str) -> Path:
    from huggingface_hub import constants
    return Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))


def _bytes_on_disk(blobs: Path, incomplete_only: bool = False) -> int:
    total = 0
    if blobs.is_dir():
        for p in blobs.iterdir():
            if incomplete_only and not p.name.endswith(".incomplete"):
                continue
            try:
                total += p.stat().st_size
            except OSError:
                pass
    return total


def safetensors_problem(path: Path) -> str:
    """"" when the file is a complete safetensors file, else what is wrong with it."""
    size = path.stat().st_size
    if size < 8:
        return "shorter than a safetensors header"
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > min(size - 8, 100_000_000):
            return "its header length is impossible"
        try:
            header = json.loads(f.read(header_len))
        except ValueError:
            return "its header is not JSON"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    if 8 + header_len + (max(ends) if ends else 0) != size:
        return "its size does not match its header (cut short or padded)"
    return ""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_snapshot(folder: Path, on_event: Callable[[Event], None] = lambda e: None) -> None:
    """Raise DownloadError("corrupt") for a weight file whose bytes are not the ones the hub named."""
    for path in sorted(folder.glob("*.safetensors")):
        on_event({"event": "verify", "file": path.name})
        blob = path.resolve()
        problem = ""
        if SHA256_RE.match(blob.name) and sha256_of(blob) != blob.name:
            problem = "its SHA-256 differs from the one the hub gave"
        problem = problem or safetensors_problem(blob)
        if problem:
            for p in {blob, path}:
                try:
                    p.unlink()
                except OSError:
                    pass
            raise DownloadError("corrupt", f"{path.name} arrived corrupt ({problem}); it was removed. Run the "
                                           f"download again (a proxy or a full disk can cause this).")


def fetch_resumable(repo_id: str, commit: str, filename: str, size: Optional[int], blobs: Path) -> None:
    """Put one file's blob into the hub cache, continuing what an interrupted run left on disk.

    huggingface_hub resumes a broken connection within one call, but deletes its partial file when
    the call ends (or never reaches that cleanup when the process is stopped), so a cancelled
    download would start again from zero. This keeps `<blob>.resume.incomplete` across runs and
    continues it with a Range request through the library's own http_get; the finished blob is
    named by the hub's ETag, so the following snapshot_download only links it.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    meta = get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=commit))
    etag = (meta.etag or "").strip('"')
    if not etag or "/" in etag:
        return  # no usable name: leave this file to snapshot_download
    size = meta.size if meta.size is not None else size
    blobs.mkdir(parents=True, exist_ok=True)
    blob = blobs / etag
    if blob.exists():
        return
    partial = blobs / f"{etag}.resume.incomplete"
    have = partial.stat().st_size if partial.exists() else 0
    if size is not None and have > size:
        partial.unlink()
        have = 0
    with open(partial, "ab") as f:
        http_get(meta.location, f, resume_size=have, headers=build_hf_headers(), expected_size=size,
                 displayed_filename=filename)
    os.replace(partial, blob)


def _causes(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _classify(exc: BaseException, repo_id: str) -> DownloadError:
    for cause in _causes(exc):
        name = type(cause).__name__
        if name in ("GatedRepoError", "RepositoryNotFoundError", "LocalEntryNotFoundError", "OfflineModeIsEnabled") \
                or isinstance(cause, DownloadError) or (isinstance(cause, OSError) and cause.errno == errno.ENOSPC) \
                or getattr(getattr(cause, "response", None), "status_code", 0) in (401, 403):
            return _classify_one(cause, repo_id)
    return _classify_one(exc, repo_id)


def _classify_one(exc: BaseException, repo_id: str) -> DownloadError:
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )
    if isinstance(exc, DownloadError):
        return exc
    if isinstance(exc, GatedRepoError):
        return DownloadError("gated", access_advice(repo_id))
    if isinstance(exc, RepositoryNotFoundError):
        return DownloadError("not_found", f"{repo_id} was not found on the hub, or your token cannot read it: "
                                          f"check the spelling and the token (set-up panel > Hub token).")
    if isinstance(exc, HfHubHTTPError) and getattr(exc.response, "status_code", 0) in (401, 403):
        return DownloadError("auth", f"the hub refused the token for {repo_id} (HTTP "
                                     f"{exc.response.status_code}): paste a valid read token. "
                                     + access_advice(repo_id))
    if isinstance(exc, LocalEntryNotFoundError) or "OfflineModeIsEnabled" in type(exc).__name__:
        if offline():
            return DownloadError("offline", f"offline mode is on (HF_HUB_OFFLINE=1) and {repo_id} is not in the "
                                            f"local cache: copy the model folder from a connected machine and "
                                            f"choose it as a local folder, or unset HF_HUB_OFFLINE.")
        return DownloadError("network", f"the hub cannot be reached to download {repo_id}: check the network and "
                                        f"proxy, then run the download again (it resumes where it stopped).")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return DownloadError("disk", "the disk is full: free some space or set HF_HOME to a larger disk, then "
                                     "run the download again (it resumes).")
    text = f"{type(exc).__name__}: {exc}"
    if any(k in text for k in ("ConnectError", "Timeout", "RemoteProtocolError", "Connection")):
        return DownloadError("network", f"the download of {repo_id} was interrupted ({text.splitlines()[0]}); run "
                                        f"it again, it resumes where it stopped.")
    return DownloadError("failed", f"could not download {repo_id}: {text.splitlines()[0]}")


def download(repo_id: str, *, revision: Optional[str] = None, on_event: Callable[[Event], None] = lambda e: None,
             cancel: Optional[threading.Event] = None) -> Path:
    """Download a checkpoint's safetensors and processor files into the hub cache; return its folder."""
    from huggingface_hub import snapshot_download

    patterns = list(MODEL_ALLOW_PATTERNS)
    try:
        if offline():
            folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns,
                                            local_files_only=True))
            on_event({"event": "plan", "repo": repo_id, "files": 0, "total_bytes": 0, "to_download_bytes": 0})
        else:
            planned = snapshot_download(repo_id, revision=revision, allow_patterns=patterns, dry_run=True)
            total = sum(f.file_size or 0 for f in planned)
            todo = sum(f.file_size or 0 for f in planned if f.will_download)
            on_event({"event": "plan", "repo": repo_id, "files": len(planned), "total_bytes": total,
                      "to_download_bytes": todo})
            blobs = _storage_folder(repo_id) / "blobs"
            result: Dict[str, object] = {}

            commit = planned[0].commit_hash if planned else revision
            weights = [f for f in planned if f.will_download and f.filename.endswith(".safetensors")]

            def work():
                try:
                    for f in weights:  # the large files, resumable across runs
                        fetch_resumable(repo_id, commit, f.filename, f.file_size, blobs)
                    # the rest, and the snapshot links to every blob (existing blobs are only linked)
                    result["path"] = snapshot_download(repo_id, revision=commit, allow_patterns=patterns,
                                                       max_workers=2)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                    result["error"] = exc

            # Done = bytes on disk of this plan: cached files, an earlier run's partial files, this run's.
            cached = total - todo
            other = max(0, _bytes_on_disk(blobs) - cached - _bytes_on_disk(blobs, incomplete_only=True))
            worker = threading.Thread(target=work, name="georeasoner-download", daemon=True)
            worker.start()
            while worker.is_alive():
                worker.join(PROGRESS_INTERVAL_S)
                if cancel is not None and cancel.is_set():
                    raise DownloadError("cancelled", "cancelled")
                done = min(total, max(0, _bytes_on_disk(blobs) - other))
                on_event({"event": "progress", "downloaded_bytes": done, "total_bytes": total})
            if "error" in result:
                raise result["error"]  # type: ignore[misc]
            on_event({"event": "progress", "downloaded_bytes": total, "total_bytes": total})
            folder = Path(str(result["path"]))
        verify_snapshot(folder, on_event)
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise _classify(exc, repo_id) from exc
    on_event({"event": "done", "path": str(folder)})
    return folder


def print_event(event: Event) -> None:
    print(json.dumps(event), flush=True)


def plain_printer() -> Callable[[Event], None]:
    last = [0.0]

    def show(event: Event) -> None:
        kind = event["event"]
        if kind == "plan":
            print(f"{event['repo']}: {event['files']} files, {int(event['to_download_bytes']) / 1e9:.2f} GB to "
                  f"download of {int(event['total_bytes']) / 1e9:.2f} GB", flush=True)
        elif kind == "progress" and time.monotonic() - last[0] > 2:
            last[0] = time.monotonic()
            total = int(event["total_bytes"]) or 1
            print(f"  {100 * int(event['downloaded_bytes']) / total:5.1f} %", flush=True)
        elif kind == "done":
            print(f"done: {event['path']}", flush=True)
    return show


def list_events(lines: List[str]) -> List[Event]:
    """Parse the JSON lines a `download --progress-json` run printed (ignoring anything else)."""
    out = []
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out
