"""HTTP routes of tiled jobs (whole rasters asked tile by tile), mounted on the service's app.

    POST   /v1/jobs                      create: question + grid + georeferencing, or a raster_path
    PUT    /v1/jobs/{id}/tiles/{index}   upload one tile (PNG/JPEG/TIFF bytes, exactly the tile's size)
    GET    /v1/jobs/{id}                 status: state, tiles done / total, objects so far
    GET    /v1/jobs/{id}/events?after=N  progress as NDJSON lines until the job ends
    GET    /v1/jobs/{id}/result          the merged answer (?partial=true: the tiles finished so far)
    DELETE /v1/jobs/{id}                 cancel; what is done stays in the result
    (POST /v1/jobs/{id}/tiles/{index} and POST /v1/jobs/{id}/cancel do the same for GET/POST-only clients)

Authentication, Host checks and body limits come from the service's Gate like every other route.
Wire it with ``install_jobs(app, service)`` where the FastAPI app is built.
"""
from __future__ import annotations

import json
import os
from typing import List, Optional

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from ..core.protocol import GRANULARITIES
from ..core.tiling import (DEFAULT_JOB_TTL_S, DEFAULT_OVERLAP, STRATEGIES, STRATEGY_GRID, TilingError,
                           default_tile_size, plan_tiles)
from ..core.profiles import UnknownProfileError, get_profile
from .cascade import AskOptions, CascadeError
from .tiled.engine import TiledEngine, TiledRequest
from .tiled.jobs import JobError, JobManager

PREFIX = "/v1/jobs"
TTL_ENV = "GEOREASONER_JOB_TTL_S"


class GridSpec(BaseModel):
    width: int = Field(gt=0, le=10_000_000)
    height: int = Field(gt=0, le=10_000_000)
    tile_size: Optional[int] = None
    overlap: float = DEFAULT_OVERLAP


class GeorefSpec(BaseModel):
    transform: List[float] = Field(default_factory=lambda: [0.0, 1.0, 0.0, 0.0, 0.0, 1.0], min_length=6, max_length=6)
    crs_wkt: Optional[str] = None


class JobSpec(BaseModel):
    question: str
    profile: Optional[str] = None
    outputs: List[str] = Field(default_factory=lambda: list(GRANULARITIES))
    strategy: str = STRATEGY_GRID
    grid: Optional[GridSpec] = None
    georef: GeorefSpec = Field(default_factory=GeorefSpec)
    raster_path: Optional[str] = None
    tile_size: Optional[int] = None
    overlap: float = DEFAULT_OVERLAP
    concurrency: int = Field(default=1, ge=1, le=64)
    max_new_tokens: int = Field(default=1024, ge=1, le=8192)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "code": code, "message": message}}, status_code=status)


def build_router(manager: JobManager, service) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["jobs"])

    def check_ready():
        check = getattr(service, "check_ready", None)
        if check is not None:
            check()  # raises the service's own 503 while models load or after they failed

    @router.post("", status_code=201, summary="Create a tiled job")
    async def create(request: Request):
        check_ready()
        try:
            spec = JobSpec.model_validate_json(await request.body())
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
            return _error(422, "invalid_job", f"the job request is malformed ({problems}); see /openapi.json")
        try:
            profile = get_profile(spec.profile or service.config.profile)
            options = AskOptions(granularities=tuple(spec.outputs), max_new_tokens=spec.max_new_tokens)
            options.validate()
            if spec.strategy not in STRATEGIES:
                raise JobError(400, "bad_strategy", f"strategy must be one of {', '.join(STRATEGIES)}")
            source = None
            if spec.raster_path:
                source, plan, georef = await run_in_threadpool(_raster_job, spec, profile)
            elif spec.grid is not None:
                tile_size = spec.grid.tile_size or default_tile_size(profile.frame)
                plan = plan_tiles(spec.grid.width, spec.grid.height, tile_size=tile_size, overlap=spec.grid.overlap)
                georef = spec.georef.model_dump()
            else:
                raise JobError(400, "no_grid", "give either 'grid' (width, height, tile_size, overlap) with "
                                               "'georef' and upload tiles, or 'raster_path' for a raster this "
                                               "server can read")
            tiled = TiledRequest(spec.question, profile=profile.name, options=options, strategy=spec.strategy,
                                 concurrency=spec.concurrency)
            job = manager.create(tiled, plan, georef, source)
        except (UnknownProfileError, CascadeError, TilingError) as exc:
            return _error(400, "bad_job", str(exc))
        except JobError as exc:
            return _error(exc.status, exc.code, exc.message)
        return JSONResponse({"job_id": job.id, "state": job.state, "ttl_s": manager.ttl_s,
                             "mode": "upload" if job.uploads else "raster", "plan": job.plan.to_dict(),
                             "tiles": [t.to_dict() for t in job.plan.tiles], "georef": georef}, status_code=201)

    # POST as well as PUT: QGIS's network client (qgis_io) speaks GET and POST.
    @router.post("/{job_id}/tiles/{index}", status_code=202, summary="Upload one tile (POST form)",
                 include_in_schema=False)
    @router.put("/{job_id}/tiles/{index}", status_code=202, summary="Upload one tile")
    async def upload(job_id: str, index: int, request: Request):
        data = await request.body()
        try:
            received = await run_in_threadpool(manager.upload, job_id, index, data)
        except JobError as exc:
            return _error(exc.status, exc.code, exc.message)
        return JSONResponse(received, status_code=202)

    @router.get("/{job_id}", summary="Job status")
    async def status(job_id: str):
        try:
            return manager.get(job_id).status(manager.ttl_s)
        except JobError as exc:
            return _error(exc.status, exc.code, exc.message)

    @router.get("/{job_id}/events", summary="Progress events (NDJSON) until the job ends")
    async def events(job_id: str, after: int = -1):
        try:
            manager.get(job_id)
        except JobError as exc:
            return _error(exc.status, exc.code, exc.message)
        lines = (json.dumps(e, ensure_ascii=False) + "\n" for e in manager.events(job_id, after))
        return StreamingResponse(iterate_in_threadpool(lines), media_type="application/x-ndjson")

    @router.get("/{job_id}/result", summary="The merged answer")
    async def result(job_id: str, partial: bool = False):
        try:
            job = manager.get(job_id)
        except JobError as exc:
            return _error(exc.status, exc.code, exc.message)
        if job.result is None and partial and job.state == "running":
            so_far = await run_in_threadpool(job.answer_so_far)
            if so_far is not None:
                return await _result_response(job, so_far, complete=False)
        if job.result is None:
            if job.state == "failed":
                return _error(500, "job_failed", f"the job failed: {job.error['message']}")
            return _error(409, "not_finished", f"the job is {job.state} ({job.done} of {len(job.plan.selected)} "
                                               f"tiles done); wait for its 'done' event, ask with ?partial=true for "
                                               f"the tiles finished so far, or cancel it to keep the finished part")
        return await _result_response(job, job.result, complete=job.state == "done")

    @router.post("/{job_id}/cancel", summary="Cancel a job (POST form, for clients without DELETE)",
                 include_in_schema=False)
    @router.delete("/{job_id}", summary="Cancel a job (finished tiles are kept in its result)")
    async def cancel(job_id: str):
        try:
            job = await run_in_threadpool(manager.cancel, job_id)
        except JobError as exc:
            return _error(exc.status, exc.code, exc.message)
        return job.status(manager.ttl_s)

    return router


async def _result_response(job, answer, complete: bool) -> Response:
    """The result document, encoded in a worker thread: a whole scene's answer can hold hundreds of
    thousands of contour vertices, and FastAPI's encoder walking it on the event loop stopped every
    other request (a cancel included) for seconds."""
    def encode() -> bytes:
        return json.dumps({"state": job.state, "complete": complete, "answer": answer.to_dict(),
                           "georef": job.georef, "plan": job.plan.to_dict()}, ensure_ascii=False).encode("utf-8")

    return Response(await run_in_threadpool(encode), media_type="application/json")


def _raster_job(spec: JobSpec, profile):
    from .tiled.source import RasterTileSource
    from .imagery import ImageryError

    path = os.path.expanduser(spec.raster_path)
    if not os.path.isabs(path):
        raise JobError(400, "relative_raster_path", "raster_path must be absolute (the server's working folder "
                                                    "is not the client's)")
    try:
        source = RasterTileSource(path)
    except ImageryError as exc:
        raise JobError(400, "unreadable_raster", str(exc)) from None
    plan = plan_tiles(source.width, source.height, tile_size=spec.tile_size or default_tile_size(profile.frame),
                      overlap=spec.overlap)
    georef = {"transform": list(source.plan_transform(plan).to_gdal()), "crs_wkt": source.crs_wkt}
    return source, plan, georef


def install_jobs(app: FastAPI, service, ttl_s: Optional[float] = None) -> JobManager:
    """Mount the job routes on ``app``; the jobs use ``service.cascade``'s models once loaded."""
    ttl = float(ttl_s if ttl_s is not None else os.environ.get(TTL_ENV, DEFAULT_JOB_TTL_S))

    def engine_factory() -> TiledEngine:
        cascade = service.cascade
        return TiledEngine(getattr(cascade, "reasoner", None), getattr(cascade, "segmenter", None),
                           profile=service.config.profile)

    manager = JobManager(engine_factory, ttl_s=ttl, recorded_output=getattr(service.config, "recorded_output", None),
                         max_tile_pixels=getattr(service.config, "max_image_pixels", 64_000_000))
    app.include_router(build_router(manager, service))
    app.state.tiled_jobs = manager
    manager.start_sweeper()
    return manager
