"""Tiled jobs of the HTTP service (/v1/jobs) on a real uvicorn server on 127.0.0.1.

The service's models are the rule-based stand-ins (tiled_standins.py) given through the service's
loader; the app, the Gate (token), the routes, the job manager and the engine are the real ones.
Tiles are cut from a real GeoTIFF with rasterio windows and uploaded as PNG, as a client does.
"""
from __future__ import annotations

import io
import json
import socket
import threading
import time

import httpx
import numpy as np
import pytest
import rasterio
import uvicorn
from PIL import Image
from rasterio.windows import Window

from georeasoner_plugin.backend.cascade import Cascade
from georeasoner_plugin.backend.server import Service, ServiceConfig, create_app

from tiled_standins import DarkShapeReasoner, Shape, ThresholdSegmenter, draw_shape, write_scene

TOKEN = "jobs-test-token"


class LiveServer:
    def __init__(self, ttl_s=None, monkeypatch=None):
        if ttl_s is not None:
            monkeypatch.setenv("GEOREASONER_JOB_TTL_S", str(ttl_s))
        cascade = Cascade(DarkShapeReasoner(), ThresholdSegmenter())
        self.service = Service(ServiceConfig(), loader=lambda cfg: (cascade, {"device": "cpu", "dtype": "none"}))
        app = create_app(self.service, token=TOKEN)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.service.start()
        self.thread.start()
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.client.get("/v1/health").json()["status"] == "ready":
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError("the service did not become ready")

    def __exit__(self, *exc):
        self.client.close()
        self.server.should_exit = True
        self.thread.join(10)
        self.service.close()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Two 1500 x 1000 rasters with different shapes (some across seams of 512 px tiles)."""
    folder = tmp_path_factory.mktemp("jobs")
    layouts = {
        "a": [Shape("ring", 470, 470, 160, 160), Shape("rect", 200, 800, 90, 60), Shape("ellipse", 1200, 300, 120, 90)],
        "b": [Shape("frame", 940, 470, 150, 150), Shape("triangle", 700, 150, 120, 100)],
    }
    out = {}
    for name, shapes in layouts.items():
        labels = np.zeros((1000, 1500), dtype=np.uint8)
        for k, shape in enumerate(shapes, start=1):
            draw_shape(labels, shape, k)
        path = folder / f"{name}.tif"
        write_scene(path, labels, pixel_size=1.0)
        out[name] = (path, len(shapes))
    return out


@pytest.fixture(scope="module")
def live():
    with LiveServer() as server:
        yield server


def png_tile(path, tile, size=None):
    with rasterio.open(path) as ds:
        data = ds.read(window=Window(tile["x"], tile["y"], tile["width"], tile["height"]))
    image = Image.fromarray(np.moveaxis(data, 0, -1))
    if size:
        image = image.resize(size)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def create(client, **extra):
    body = {"question": "Which dark shapes are there?", "outputs": ["boxes", "points", "contours"], **extra}
    response = client.post("/v1/jobs", content=json.dumps(body))
    assert response.status_code == 201, response.text
    return response.json()


def grid_job(client):
    return create(client, grid={"width": 1500, "height": 1000, "tile_size": 512},
                  georef={"transform": [500000, 1, 0, 4500000, 0, -1], "crs_wkt": "EPSG:32633"})


def events(client, job_id):
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        return [json.loads(line) for line in response.iter_lines() if line]


def test_upload_progress_and_merged_result(live, scenes):
    path, shapes = scenes["a"]
    job = grid_job(live.client)
    assert job["mode"] == "upload" and len(job["tiles"]) == 12 and job["ttl_s"] > 0
    for tile in job["tiles"]:
        r = live.client.put(f"/v1/jobs/{job['job_id']}/tiles/{tile['index']}", content=png_tile(path, tile))
        assert r.status_code == 202, r.text
    stream = events(live.client, job["job_id"])
    tiles = [e for e in stream if e["event"] == "tile"]
    assert len(tiles) == 12 and tiles[-1]["done"] == 12 and tiles[-1]["total"] == 12
    assert stream[-1]["event"] == "done"
    result = live.client.get(f"/v1/jobs/{job['job_id']}/result").json()
    assert result["complete"] and result["georef"]["crs_wkt"] == "EPSG:32633"
    answer = result["answer"]
    assert len(answer["objects"]) == shapes
    ring = [o for o in answer["objects"] if len(o.get("tiles", [])) >= 4]
    assert len(ring) == 1  # the ring over the four-tile corner is one object from four tiles
    assert live.client.get(f"/v1/jobs/{job['job_id']}").json()["state"] == "done"


def test_two_concurrent_jobs_do_not_mix_tiles(live, scenes):
    jobs = {name: grid_job(live.client) for name in ("a", "b")}
    errors = []

    def send(name):
        try:
            with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as c:
                for tile in jobs[name]["tiles"]:
                    r = c.put(f"/v1/jobs/{jobs[name]['job_id']}/tiles/{tile['index']}",
                              content=png_tile(scenes[name][0], tile))
                    assert r.status_code == 202, r.text
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(n,)) for n in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for name, job in jobs.items():
        assert events(live.client, job["job_id"])[-1]["event"] == "done"
        answer = live.client.get(f"/v1/jobs/{job['job_id']}/result").json()["answer"]
        assert len(answer["objects"]) == scenes[name][1], name


def test_bad_tiles_get_clear_4xx(live, scenes):
    path, _ = scenes["a"]
    job = grid_job(live.client)
    first = job["tiles"][0]
    url = f"/v1/jobs/{job['job_id']}/tiles"
    r = live.client.put(f"{url}/0", content=png_tile(path, first, size=(500, 500)))
    assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_tile_size"
    assert "is 500 x 500 pixels" in r.json()["error"]["message"] and "512 x 512" in r.json()["error"]["message"]
    r = live.client.put(f"{url}/0", content=b"\x89PNG\r\n\x1a\n garbage")
    assert r.status_code == 400 and r.json()["error"]["code"] == "corrupt_tile"
    r = live.client.put(f"{url}/99", content=png_tile(path, first))
    assert r.status_code == 404 and r.json()["error"]["code"] == "tile_out_of_grid"
    assert live.client.put(f"{url}/0", content=png_tile(path, first)).status_code == 202
    r = live.client.put(f"{url}/0", content=png_tile(path, first))
    assert r.status_code == 409 and "already received" in r.json()["error"]["message"]
    r = live.client.put("/v1/jobs/nope/tiles/0", content=png_tile(path, first))
    assert r.status_code == 404 and r.json()["error"]["code"] == "no_such_job"
    r = live.client.post("/v1/jobs", content=json.dumps({"question": "x"}))
    assert r.status_code == 400 and "'grid'" in r.json()["error"]["message"]
    assert live.client.delete(f"/v1/jobs/{job['job_id']}").status_code == 200


def test_cancel_keeps_what_is_done(live, scenes):
    path, _ = scenes["a"]
    job = grid_job(live.client)
    for tile in job["tiles"][:3]:
        assert live.client.put(f"/v1/jobs/{job['job_id']}/tiles/{tile['index']}",
                               content=png_tile(path, tile)).status_code == 202
    for event in events_until(live.client, job["job_id"], lambda e: e["event"] == "tile" and e["done"] == 3):
        pass
    r = live.client.get(f"/v1/jobs/{job['job_id']}/result")
    assert r.status_code == 409 and "cancel it to keep the finished part" in r.json()["error"]["message"]
    so_far = live.client.get(f"/v1/jobs/{job['job_id']}/result", params={"partial": "true"}).json()
    assert so_far["state"] == "running" and not so_far["complete"]  # layers can fill in as tiles finish
    assert len(so_far["answer"]["tiles"]) == 1 + 3 and so_far["answer"]["objects"]
    status = live.client.delete(f"/v1/jobs/{job['job_id']}").json()
    assert status["state"] == "cancelled" and status["done"] == 3
    result = live.client.get(f"/v1/jobs/{job['job_id']}/result").json()
    assert not result["complete"] and any("cancelled: 3 of 12 tiles" in w for w in result["answer"]["warnings"])
    assert len(result["answer"]["objects"]) >= 1


def events_until(client, job_id, last):
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        for line in response.iter_lines():
            if line:
                event = json.loads(line)
                yield event
                if last(event):
                    return


def test_a_job_reading_a_server_side_raster(live, scenes):
    path, shapes = scenes["b"]
    job = create(live.client, raster_path=str(path), tile_size=512, strategy="focus")
    assert job["mode"] == "raster" and job["georef"]["transform"][0] == 500000.0
    stream = events(live.client, job["job_id"])
    assert [e for e in stream if e.get("what") == "focus"]
    assert stream[-1]["event"] == "done"
    assert len(live.client.get(f"/v1/jobs/{job['job_id']}/result").json()["answer"]["objects"]) == shapes
    r = live.client.post("/v1/jobs", content=json.dumps({"question": "x", "raster_path": "relative.tif"}))
    assert r.status_code == 400 and "absolute" in r.json()["error"]["message"]


def test_abandoned_jobs_expire(monkeypatch, scenes):
    with LiveServer(ttl_s=0.3, monkeypatch=monkeypatch) as server:
        job = grid_job(server.client)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the sweeper, not a request, must expire it
            time.sleep(0.1)
            if job["job_id"] not in server_jobs(server):
                break
        r = server.client.get(f"/v1/jobs/{job['job_id']}")
        assert r.status_code == 404 and "expired" in r.json()["error"]["message"]


def server_jobs(server):
    app = server.server.config.app.app  # the FastAPI app inside the Gate
    return app.state.tiled_jobs.jobs
