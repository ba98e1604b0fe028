"""Tiled questions from QGIS: any raster layer QGIS can draw, read tile by tile, sent as a backend job.

The plan is ``core.tiling``'s (the same windows the CLI reads): the layer's pixel grid (or a chosen
ground resolution) over an extent, square tiles with overlap. Each tile is read through the
layer's renderer block by block (``QgsRasterRenderer.block`` with a ``QgsRasterBlockFeedback``, so a
WMS/XYZ layer is fetched tile by tile too), encoded as PNG with transparency where there is no
data, and uploaded to ``POST /v1/jobs/{id}/tiles/{index}``; the backend merges and georeferences.

Synchronous, for a QgsTask or a Processing algorithm (never the UI thread). No torch/rasterio here.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from qgis.core import QgsRasterBlockFeedback, QgsRasterLayer, QgsRectangle
from qgis.PyQt.QtCore import QBuffer, QByteArray, QIODevice

from ..core.georef import GeoTransform
from ..core.protocol import Answer, ProtocolError
from ..core.tiling import TilePlan, TilingError, plan_tiles
from ..toolbelt.i18n import tr
from .client import BackendClient, BackendError

ProgressCallback = Callable[[Dict], None]


@dataclass
class TiledJobResult:
    answer: Answer
    transform: GeoTransform  # answer pixels (the plan grid) -> layer CRS
    complete: bool
    warnings: List[str] = field(default_factory=list)


def layer_plan(layer: QgsRasterLayer, extent: Optional[QgsRectangle], tile_size: int, overlap: float,
               resolution: float = 0.0) -> (TilePlan, GeoTransform):
    """The plan over ``extent`` (layer CRS; None = whole layer) and the layer's own geotransform."""
    full = layer.extent()
    res_x, res_y = layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY()
    gt = GeoTransform.from_gdal((full.xMinimum(), res_x, 0.0, full.yMaximum(), 0.0, -res_y))
    width, height = max(1, round(full.width() / res_x)), max(1, round(full.height() / res_y))
    area = None
    if extent is not None and not extent.isEmpty():
        area = ((extent.xMinimum() - full.xMinimum()) / res_x, (full.yMaximum() - extent.yMaximum()) / res_y,
                (extent.xMaximum() - full.xMinimum()) / res_x, (full.yMaximum() - extent.yMinimum()) / res_y)
    scale = (resolution / res_x, resolution / res_y) if resolution and resolution > 0 else (1.0, 1.0)
    plan = plan_tiles(width, height, tile_size=tile_size, overlap=overlap, scale=scale, area=area)
    return plan, GeoTransform.from_gdal(plan.plan_transform(gt.to_gdal()))


def read_tile_png(layer: QgsRasterLayer, plan: TilePlan, transform: GeoTransform, index: int,
                  is_cancelled: Callable[[], bool]) -> bytes:
    """The tile as QGIS draws it, PNG with alpha (transparent = no data)."""
    tile = plan.tile(index)
    x0, y0 = transform.pixel_to_map(tile.x, tile.y)
    x1, y1 = transform.pixel_to_map(tile.x + tile.width, tile.y + tile.height)
    rect = QgsRectangle(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    feedback = QgsRasterBlockFeedback()
    if is_cancelled():
        feedback.cancel()
    block = layer.renderer().block(1, rect, tile.width, tile.height, feedback)
    if block is None or not block.isValid() or block.width() != tile.width:
        raise BackendError(tr("Reading tile {0} of {1} failed.").format(tile.key, layer.name()))
    image = block.image()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    buffer.close()
    return bytes(data)


class TiledJobClient:
    """Create a job, upload tiles, follow its events, fetch the merged answer, cancel."""

    def __init__(self, client: BackendClient):
        self.client = client

    def _call(self, method: str, path: str, body: Optional[bytes] = None, content_type: str = "",
              ok=(200, 201, 202)) -> Dict:
        status, data = self.client._request(method, path, body=body, content_type=content_type)
        if status in ok:
            try:
                return json.loads(data.decode("utf-8")) if data else {}
            except (UnicodeDecodeError, ValueError):
                raise BackendError(tr("The backend answered with something that is not JSON."), "protocol") from None
        return self.client._json(status, data)  # raises with the server's message and a hint

    def limits(self) -> Dict:
        return self.client.info().get("limits", {})

    def create(self, spec: Dict) -> Dict:
        return self._call("POST", "/v1/jobs", json.dumps(spec).encode("utf-8"), "application/json")

    def upload(self, job_id: str, index: int, png: bytes) -> Dict:
        return self._call("POST", f"/v1/jobs/{job_id}/tiles/{index}", png, "image/png")

    def status(self, job_id: str) -> Dict:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def cancel(self, job_id: str) -> Dict:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel")

    def follow(self, job_id: str, on_event: ProgressCallback, after: int = -1) -> Dict:
        """Stream events until the job ends; returns the last event."""
        buffer = bytearray()
        last: Dict = {}

        def on_data(chunk: bytes) -> None:
            nonlocal last
            buffer.extend(chunk)
            while b"\n" in buffer:
                line, _, rest = bytes(buffer).partition(b"\n")
                buffer[:] = rest
                if line.strip():
                    last = json.loads(line.decode("utf-8"))
                    on_event(last)

        status, data = self.client._request("GET", f"/v1/jobs/{job_id}/events?after={after}", on_data=on_data,
                                            stream=True)
        if status != 200:
            self.client._json(status, data)
        return last

    def failure(self, job_id: str, exc: BackendError) -> BackendError:
        """The job's own error when it failed on the backend (an upload then only says 'the job is failed')."""
        try:
            error = (self.status(job_id).get("error") or {}).get("message")
        except BackendError:
            return exc
        if not error:
            return exc
        return BackendError(tr("The backend's tiled job failed: {0}. Look at the backend's log.").format(error), "job")

    def result_so_far(self, job_id: str):
        """(Answer, GeoTransform) of the tiles answered so far, or None (nothing yet, the job ended, or
        the request failed: the preview is a convenience, the uploads that follow report a real fault)."""
        try:
            status, data = self.client._request("GET", f"/v1/jobs/{job_id}/result?partial=true")
        except BackendError:
            return None
        if status != 200:
            return None
        try:
            body = json.loads(data.decode("utf-8"))
            return Answer.from_dict(body["answer"]), GeoTransform.from_gdal(body["georef"]["transform"])
        except (UnicodeDecodeError, ValueError, KeyError, ProtocolError):
            return None

    def result(self, job_id: str) -> Dict:
        return self._call("GET", f"/v1/jobs/{job_id}/result")


def local_raster_path(layer: QgsRasterLayer, client: BackendClient) -> Optional[str]:
    """The layer's file when a backend on this machine can read it itself (focus strategy), else None."""
    from pathlib import Path

    from qgis.PyQt.QtCore import QUrl

    from ..core.api import is_loopback_host
    if not is_loopback_host(QUrl(client.base_url).host()) or layer.providerType() != "gdal":
        return None
    path = layer.source().split("|")[0]
    return str(Path(path).resolve()) if Path(path).is_file() else None


def ask_tiled(layer: QgsRasterLayer, question: str, client: BackendClient, *, tile_size: int, overlap: float,
              resolution: float = 0.0, extent: Optional[QgsRectangle] = None, profile: str = "",
              outputs: Optional[List[str]] = None, on_progress: Optional[ProgressCallback] = None,
              is_cancelled: Callable[[], bool] = lambda: False, strategy: str = "grid",
              on_partial: Optional[Callable[[Answer, GeoTransform], None]] = None,
              partial_every_s: float = 2.0) -> TiledJobResult:
    """Ask over the layer tile by tile; cancel keeps the tiles already answered (result.complete False).

    on_partial (grid strategy): called with the tiles answered so far (``GET /v1/jobs/{id}/result?partial=true``),
    at most every partial_every_s seconds while tiles are uploaded, whenever more tiles are done.

    strategy "focus" needs a local backend that reads the layer's file itself (the overview is read
    there): the whole raster at native resolution.
    """
    progress = on_progress or (lambda event: None)
    if strategy == "focus":
        return _ask_focus(layer, question, client, tile_size, overlap, profile, outputs, progress)
    try:
        plan, transform = layer_plan(layer, extent, tile_size, overlap, resolution)
    except TilingError as exc:
        raise BackendError(str(exc), "plan") from None
    jobs = TiledJobClient(client)
    limits = jobs.limits()
    max_pixels = int(limits.get("max_image_pixels") or 0)
    if max_pixels and plan.tile_size * plan.tile_size > max_pixels:
        raise BackendError(tr("Tiles of {0} px are larger than the backend accepts ({1} pixels); choose a smaller "
                              "tile size.").format(plan.tile_size, max_pixels), "plan")
    spec = {"question": question, "outputs": outputs or ["boxes", "points", "contours"],
            "grid": {"width": plan.width, "height": plan.height, "tile_size": plan.tile_size,
                     "overlap": plan.overlap},
            "georef": {"transform": list(transform.to_gdal()), "crs_wkt": layer.crs().toWkt()}}
    if profile:
        spec["profile"] = profile
    job = jobs.create(spec)
    job_id = job["job_id"]
    wanted = [t["index"] for t in job["tiles"] if t["index"] in set(plan.selected)]
    if len(wanted) != len(job["tiles"]):
        jobs.cancel(job_id)
        raise BackendError(tr("The backend planned other tiles than the plugin; are they the same version?"),
                           "protocol")
    progress({"event": "plan", "total": len(wanted), "grid": plan.grid_size, "tile_size": plan.tile_size})
    cancelled = False
    started = time.monotonic()
    partial_done, partial_at = 0, started
    for n, index in enumerate(wanted, start=1):
        if is_cancelled():
            cancelled = True
            break
        png = read_tile_png(layer, plan, transform, index, is_cancelled)
        max_body = int(limits.get("max_body_bytes") or 0)
        if max_body and len(png) > max_body:
            jobs.cancel(job_id)
            raise BackendError(tr("Tile {0} is {1} bytes as PNG, more than the backend accepts ({2}); choose a "
                                  "smaller tile size.").format(index, len(png), max_body), "plan")
        try:
            jobs.upload(job_id, index, png)
        except BackendError as exc:
            raise jobs.failure(job_id, exc) from None
        status = jobs.status(job_id)
        if on_partial is not None and status["done"] > partial_done and \
                time.monotonic() - partial_at >= partial_every_s:
            partial_done, partial_at = status["done"], time.monotonic()
            so_far = jobs.result_so_far(job_id)
            if so_far is not None:
                on_partial(*so_far)
        elapsed = time.monotonic() - started
        progress({"event": "tile", "sent": n, "done": status["done"], "total": len(wanted),
                  "objects_so_far": status["objects"],
                  "eta_s": round(elapsed / n * (len(wanted) - n), 1)})
    if not cancelled:
        try:
            jobs.follow(job_id, progress)
        except BackendError as exc:
            if exc.kind != "cancelled":
                raise
            cancelled = True
    if cancelled:
        jobs.cancel(job_id)
    data = jobs.result(job_id)
    try:
        answer = Answer.from_dict(data["answer"])
    except (ProtocolError, KeyError) as exc:
        raise BackendError(tr("The backend's tiled answer does not follow the answer protocol: {0}").format(exc),
                           "protocol") from None
    georef = GeoTransform.from_gdal(data["georef"]["transform"])
    warnings = list(answer.warnings)
    if cancelled:
        done = sum(1 for t in answer.tiles if t.get("tile") != "plan")
        warnings.append(tr("Cancelled: the answer holds the {0} of {1} tiles finished before the cancel.")
                        .format(done, len(wanted)))
    if not math.isclose(georef.pixel_width, transform.pixel_width, rel_tol=1e-9):
        warnings.append(tr("The backend georeferenced the answer differently from the plugin's plan."))
    return TiledJobResult(answer=answer, transform=georef, complete=bool(data.get("complete")), warnings=warnings)


def _ask_focus(layer, question, client, tile_size, overlap, profile, outputs, progress) -> TiledJobResult:
    path = local_raster_path(layer, client)
    if path is None:
        raise BackendError(tr("The focus strategy needs a backend on this machine (127.0.0.1) and a raster file it "
                              "can read; use the grid strategy for this layer."), "plan")
    jobs = TiledJobClient(client)
    spec = {"question": question, "outputs": outputs or ["boxes", "points", "contours"], "raster_path": path,
            "tile_size": tile_size, "overlap": overlap, "strategy": "focus"}
    if profile:
        spec["profile"] = profile
    job = jobs.create(spec)
    cancelled = False
    try:
        jobs.follow(job["job_id"], progress)
    except BackendError as exc:
        if exc.kind != "cancelled":
            raise
        cancelled = True
        jobs.cancel(job["job_id"])
    data = jobs.result(job["job_id"])
    try:
        answer = Answer.from_dict(data["answer"])
    except (ProtocolError, KeyError) as exc:
        raise BackendError(tr("The backend's tiled answer does not follow the answer protocol: {0}").format(exc),
                           "protocol") from None
    warnings = list(answer.warnings)
    if cancelled:
        warnings.append(tr("Cancelled: the answer holds the tiles finished before the cancel."))
    return TiledJobResult(answer=answer, transform=GeoTransform.from_gdal(data["georef"]["transform"]),
                          complete=bool(data.get("complete")), warnings=warnings)
