"""The job journal: finished tiles and their answers, one JSON line each, beside the output.

A run appends a line per finished tile and flushes it to disk (fsync) before counting the tile as
done, so a crash, a SIGKILL or a cancel loses at most the tiles in flight. The same command run
again reads the journal, skips the finished tiles and merges the same records, so the result is
identical to an uninterrupted run: the answer's id and creation time live in the journal's header
too. A half-written last line (killed mid-write) is ignored; a journal of another question, raster
or plan is refused rather than mixed in.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import uuid
from pathlib import Path
from typing import Any, Dict, Optional


class JournalError(ValueError):
    """A journal that belongs to another run, or cannot be written; the message says what to do."""


class Journal:
    """Append-only JSON lines: a header, an optional overview record, then one record per tile."""

    def __init__(self, path, signature: Dict[str, Any]):
        self.path = Path(path)
        self.signature = json.loads(json.dumps(signature))  # normalised as it is stored
        self.header: Dict[str, Any] = {}
        self.overview: Optional[Dict[str, Any]] = None
        self.tiles: Dict[int, Dict[str, Any]] = {}
        self.resumed = 0
        self._file = None

    def open(self) -> "Journal":
        if self.path.exists():
            self._load()
        if not self.header:
            self.header = {"kind": "header", "signature": self.signature, "answer_id": uuid.uuid4().hex,
                           "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._file = open(self.path, "w", encoding="utf-8")
            except OSError as exc:
                raise JournalError(f"cannot write the tile journal {self.path}: {exc.strerror or exc}") from None
            self._write(self.header)
        else:
            self._file = open(self.path, "a", encoding="utf-8")
        self.resumed = len(self.tiles)
        return self

    def _load(self) -> None:
        text = self.path.read_text(encoding="utf-8", errors="replace")
        lines = text.split("\n")
        complete = lines[:-1] if not text.endswith("\n") else lines
        good_bytes = 0
        for line in complete:
            if not line.strip():
                good_bytes += len(line.encode("utf-8")) + 1
                continue
            try:
                record = json.loads(line)
            except ValueError:
                break  # torn write: everything from here is dropped
            kind = record.get("kind")
            if kind == "header":
                if record.get("signature") != self.signature:
                    raise JournalError(
                        f"{self.path} is the journal of another run (different raster, question, model or tiling "
                        f"options); delete it to start afresh, or rerun the command that made it to resume")
                self.header = record
            elif kind == "overview":
                self.overview = record
            elif kind == "tile":
                self.tiles[int(record["tile"])] = record
            good_bytes += len(line.encode("utf-8")) + 1
        if not self.header:
            self.tiles.clear()
            self.overview = None
            return
        # Cut a torn last line off so new records start on a line of their own.
        with open(self.path, "r+b") as handle:
            handle.truncate(good_bytes)

    def _write(self, record: Dict[str, Any]) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False, allow_nan=False, sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def add_overview(self, record: Dict[str, Any]) -> None:
        record = dict(record, kind="overview")
        self._write(record)
        self.overview = record

    def add_tile(self, record: Dict[str, Any]) -> None:
        record = dict(record, kind="tile")
        self._write(record)
        self.tiles[int(record["tile"])] = record

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class MemoryJournal(Journal):
    """The same bookkeeping without a file (service jobs keep their records in memory)."""

    def open(self) -> "MemoryJournal":
        self.header = {"kind": "header", "signature": self.signature, "answer_id": uuid.uuid4().hex,
                       "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        return self

    def _write(self, record: Dict[str, Any]) -> None:
        json.dumps(record, allow_nan=False)  # the same records a file journal would accept

    def close(self) -> None:
        pass
