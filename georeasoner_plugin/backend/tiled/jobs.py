"""Tiled jobs of the HTTP service: one engine, fed by uploaded tiles or a raster the server reads.

A job holds its own plan, tile queue, records and event log, so two jobs never see each other's
tiles. A job nobody has touched (no upload, no status, no events, no result) for ``ttl_s`` seconds
is cancelled and forgotten: a client that disappears does not hold memory or the GPU forever. The
finished result stays fetchable for the same time after its last read.
"""
from __future__ import annotations

import io
import queue
import threading
import time
import uuid
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np
from PIL import Image

from ...core.protocol import GRANULARITIES
from ...core.tiling import DEFAULT_JOB_TTL_S, STRATEGY_FOCUS, TilePlan
from ..cascade import AskOptions
from ..imagery import ImageryError, read_image_bytes
from .engine import TiledEngine, TiledRequest
from .journal import MemoryJournal

MAX_JOBS = 8
MAX_EVENTS_KEPT = 10_000
HEARTBEAT_S = 15.0


class JobError(Exception):
    """A request about a job the service refuses: HTTP status, code, message saying what to do."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class UploadedTiles:
    """A tile source fed by uploads: iter_tiles yields tiles as they arrive, in any order."""

    def __init__(self, plan: TilePlan):
        self.plan = plan
        self._queue: "queue.Queue" = queue.Queue()
        self.received: set = set()

    def put(self, index: int, rgb: np.ndarray, valid: Optional[np.ndarray]) -> None:
        self.received.add(index)
        self._queue.put((index, rgb, valid))

    def iter_tiles(self, plan: TilePlan, todo, should_stop):
        wanted = {t.index: t for t in todo}
        while wanted:
            if should_stop():
                return
            try:
                index, rgb, valid = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            tile = wanted.pop(index, None)
            if tile is not None:
                yield tile, rgb, valid

    def overview(self, plan, long_side):  # pragma: no cover - refused at creation
        raise JobError(400, "focus_needs_raster", "the focus strategy needs a raster path the server can read")


class TiledJob:
    def __init__(self, job_id: str, request: TiledRequest, plan: TilePlan, georef: Dict[str, Any], source,
                 uploads: Optional[UploadedTiles]):
        self.id = job_id
        self.request = request
        self.plan = plan
        self.georef = georef
        self.source = source
        self.uploads = uploads
        self.state = "waiting"
        self.error: Optional[Dict[str, Any]] = None
        self.result = None
        self.cancelled = threading.Event()
        self.events: List[Dict[str, Any]] = []
        self.changed = threading.Condition()
        self.touched = time.monotonic()
        self.done = 0
        self.objects = 0
        self.thread: Optional[threading.Thread] = None
        self.engine: Optional[TiledEngine] = None
        self.journal: Optional[MemoryJournal] = None

    def answer_so_far(self):
        """The merged answer of the finished tiles while the job runs (layers can fill in); None before any."""
        if self.engine is None or self.journal is None or not self.journal.tiles:
            return None
        return self.engine.answer_so_far(self.plan, self.request, self.journal)

    def touch(self) -> None:
        self.touched = time.monotonic()

    def post(self, event: Dict[str, Any]) -> None:
        with self.changed:
            event = dict(event, seq=len(self.events))
            if len(self.events) < MAX_EVENTS_KEPT or event["event"] in ("done", "cancelled", "error"):
                self.events.append(event)
            self.changed.notify_all()

    @property
    def finished(self) -> bool:
        return self.state in ("done", "cancelled", "failed", "expired")

    def status(self, ttl_s: float) -> Dict[str, Any]:
        return {"job_id": self.id, "state": self.state, "done": self.done, "total": len(self.plan.selected),
                "received": len(self.uploads.received) if self.uploads else None, "objects": self.objects,
                "ttl_s": ttl_s, "error": self.error}


class JobManager:
    """Creates, feeds, reports and expires tiled jobs; engine_factory gives the models when they are ready."""

    def __init__(self, engine_factory: Callable[[], TiledEngine], ttl_s: float = DEFAULT_JOB_TTL_S,
                 max_jobs: int = MAX_JOBS, max_tile_pixels: int = 8192 * 8192, recorded_output: Optional[str] = None):
        self.engine_factory = engine_factory
        self.ttl_s = float(ttl_s)
        self.max_jobs = max_jobs
        self.max_tile_pixels = max_tile_pixels
        self.recorded_output = recorded_output
        self.jobs: Dict[str, TiledJob] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()

    # -- life cycle
    def create(self, request: TiledRequest, plan: TilePlan, georef: Dict[str, Any], source=None) -> TiledJob:
        self.sweep()
        request.options.validate()
        if request.strategy == STRATEGY_FOCUS and source is None:
            raise JobError(400, "focus_needs_raster", "the focus strategy needs a raster_path the server can read; "
                                                      "use strategy 'grid' when uploading tiles")
        with self._lock:
            running = [j for j in self.jobs.values() if not j.finished]
            if len(running) >= self.max_jobs:
                raise JobError(429, "too_many_jobs", f"{len(running)} tiled jobs are running (the limit is "
                                                     f"{self.max_jobs}); wait for one to finish or cancel one")
            uploads = UploadedTiles(plan) if source is None else None
            if request.recorded_output is None:
                request.recorded_output = self.recorded_output
            job = TiledJob(uuid.uuid4().hex, request, plan, georef, source or uploads, uploads)
            self.jobs[job.id] = job
        engine = self.engine_factory()
        job.thread = threading.Thread(target=self._run, args=(job, engine), name=f"tiled-job-{job.id[:8]}",
                                      daemon=True)
        job.thread.start()
        job.post({"event": "accepted", "total": len(plan.selected), "grid": plan.grid_size})
        return job

    def _run(self, job: TiledJob, engine: TiledEngine) -> None:
        job.state = "running"

        def on_event(kind: str, data: Dict[str, Any]) -> None:
            if kind == "tile":
                job.done, job.objects = data["done"], data["objects_so_far"]
                job.post({"event": "tile", **data})
            elif kind in ("plan", "focus"):
                job.post({"event": "progress", "what": kind, **data})

        job.engine, job.journal = engine, MemoryJournal("", {}).open()
        try:
            result = engine.run(job.source, job.plan, job.request, journal=job.journal,
                                on_event=on_event, should_stop=job.cancelled.is_set)
            job.result = result.answer
            job.plan = result.plan
            job.state = "cancelled" if job.cancelled.is_set() else "done"
            job.post({"event": job.state, "done": job.done, "total": len(result.plan.selected),
                      "objects": len(result.answer.objects)})
        except Exception as exc:  # noqa: BLE001 - reported to the client as an event and in the status
            job.state = "failed"
            job.error = {"message": f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)}
            job.post({"event": "error", "message": job.error["message"]})
        finally:
            close = getattr(job.source, "close", None)
            if close is not None:
                close()

    def get(self, job_id: str) -> TiledJob:
        self.sweep()
        job = self.jobs.get(job_id)
        if job is None:
            raise JobError(404, "no_such_job", f"there is no tiled job {job_id!r}; it may have expired after "
                                               f"{self.ttl_s:.0f} s without any request (a finished job too, "
                                               f"counted from its last read); create it again")
        job.touch()
        return job

    def cancel(self, job_id: str) -> TiledJob:
        job = self.get(job_id)
        job.cancelled.set()
        if job.thread is not None:
            job.thread.join(timeout=30)
        return job

    def sweep(self) -> None:
        """Cancel and forget jobs nobody touched for ttl_s."""
        now = time.monotonic()
        with self._lock:
            stale = [j for j in self.jobs.values() if now - j.touched > self.ttl_s]
            for job in stale:
                job.cancelled.set()
                if not job.finished:
                    job.state = "expired"
                job.post({"event": "error", "message": f"the job expired after {self.ttl_s:.0f} s without requests"})
                del self.jobs[job.id]

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            for job in self.jobs.values():
                job.cancelled.set()

    def start_sweeper(self) -> None:
        """Expire abandoned jobs even when no request comes in (checks every ttl/4, at most 30 s)."""
        def loop():
            while not self._closed.wait(min(30.0, max(0.05, self.ttl_s / 4))):
                self.sweep()

        threading.Thread(target=loop, name="tiled-job-sweeper", daemon=True).start()

    # -- tiles
    def upload(self, job_id: str, index: int, data: bytes) -> Dict[str, Any]:
        job = self.get(job_id)
        if job.uploads is None:
            raise JobError(409, "not_an_upload_job", "this job reads its raster on the server; it takes no uploads")
        if job.finished:
            raise JobError(409, "job_finished", f"the job is {job.state}; create a new job to send more tiles")
        if not 0 <= index < job.plan.grid_size or index not in job.plan.selected:
            raise JobError(404, "tile_out_of_grid", f"tile {index} is not in this job's grid (tiles "
                                                    f"{job.plan.selected[0]}..{job.plan.selected[-1]} of "
                                                    f"{job.plan.grid_size}); send the indexes listed at creation")
        if index in job.uploads.received:
            raise JobError(409, "tile_already_sent", f"tile {index} was already received; each tile is sent once")
        tile = job.plan.tile(index)
        try:
            rgb = read_image_bytes(data, self.max_tile_pixels)
        except ImageryError as exc:
            raise JobError(400, "corrupt_tile", f"tile {index}: {exc}") from None
        if rgb.shape[:2] != (tile.height, tile.width):
            raise JobError(400, "wrong_tile_size", f"tile {index} is {rgb.shape[1]} x {rgb.shape[0]} pixels; this "
                                                   f"grid's tile {index} is {tile.width} x {tile.height} (window "
                                                   f"x={tile.x}, y={tile.y}); send exactly that window")
        valid = _alpha_valid(data)
        if valid is not None:
            rgb[~valid] = 0
        job.uploads.put(index, rgb, valid)
        return {"received": len(job.uploads.received), "total": len(job.plan.selected)}

    def events(self, job_id: str, after: int = -1, wait_s: float = 1.0) -> Iterator[Dict[str, Any]]:
        """Events after seq ``after``, waiting for new ones, until the job ends."""
        job = self.get(job_id)
        seen = after
        quiet_since = time.monotonic()
        while True:
            with job.changed:
                fresh = [e for e in job.events if e["seq"] > seen]
                if not fresh and not job.finished:
                    job.changed.wait(timeout=wait_s)
                    fresh = [e for e in job.events if e["seq"] > seen]
            for event in fresh:
                seen = event["seq"]
                yield event
            if fresh:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > HEARTBEAT_S:
                # A slow tile must not look like a dead connection to a client's inactivity timeout.
                quiet_since = time.monotonic()
                yield {"event": "heartbeat", "seq": seen}
            job.touch()
            if job.finished and not [e for e in job.events if e["seq"] > seen]:
                return
            if fresh == [] and job_id not in self.jobs:
                return


def _alpha_valid(data: bytes) -> Optional[np.ndarray]:
    """Transparent pixels of an uploaded PNG/TIFF mark nodata (how a QGIS block without data is sent)."""
    try:
        image = Image.open(io.BytesIO(data))
        if "A" not in image.getbands():
            return None
        alpha = np.asarray(image.getchannel("A")) > 0
    except (OSError, ValueError):
        return None
    return None if alpha.all() else alpha


def options_from(outputs: Optional[List[str]], max_new_tokens: int = 1024) -> AskOptions:
    granularities = tuple(outputs) if outputs else GRANULARITIES
    return AskOptions(granularities=granularities, max_new_tokens=max_new_tokens)
