"""POST /v1/segment (the plugin's correction tool): prompts in, masks and polygons out, from the
cached embedding; positive and negative points change the mask; bad prompts get clear messages."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from georeasoner_plugin.backend.cascade import Cascade
from georeasoner_plugin.backend.server import Service, ServiceConfig, create_app
from georeasoner_plugin.backend.vectorize import rle_to_mask
from georeasoner_plugin.core.protocol import MaskRLE, Polygon

TOKEN = "segment-test-token-0123456789"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def png() -> bytes:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    image[10:30, 20:44] = (20, 30, 200)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(tiny_segmenter):
    config = ServiceConfig(recorded_output="<answer>[]</answer>", segmenter="tiny")
    service = Service(config, loader=lambda cfg: (Cascade(segmenter=tiny_segmenter), {"device": "cpu",
                                                                                        "dtype": "float32"}))
    service.start()
    with TestClient(create_app(service, token=TOKEN), base_url="http://127.0.0.1") as c:
        import time
        deadline = time.monotonic() + 30
        while service.state != "ready" and time.monotonic() < deadline:
            time.sleep(0.01)
        yield c
    service.close()


def segment(client, objects, headers=HEADERS, **options):
    return client.post("/v1/segment", headers=headers, files={"image": ("a.png", png(), "image/png")},
                       data={"request": json.dumps({"objects": objects, **options})})


def test_points_and_boxes_give_masks_and_polygons(client, tiny_segmenter):
    box = {"box": [20, 10, 44, 30], "points": [], "labels": []}
    first = segment(client, [box])
    assert first.status_code == 200, first.text
    (obj,) = first.json()["objects"]
    mask = rle_to_mask(MaskRLE.from_dict(obj["mask"]))
    assert mask.shape == (48, 64)
    for p in obj["polygons"]:
        Polygon.from_dict(p)
    # the same image again: its embedding comes from the cache
    again = segment(client, [dict(box, points=[[30, 20], [5, 5]], labels=[1, 0])])
    assert again.status_code == 200 and again.json()["timings"]["cache_hit"] is True
    negative = rle_to_mask(MaskRLE.from_dict(again.json()["objects"][0]["mask"]))
    positive = segment(client, [dict(box, points=[[30, 20], [5, 5]], labels=[1, 1])]).json()["objects"][0]
    # a negative and a positive label at the same point give SAM2 different prompts
    assert not np.array_equal(negative, rle_to_mask(MaskRLE.from_dict(positive["mask"]))) or \
        again.json()["objects"][0]["score"] != positive["score"]
    timings = again.json()["timings"]
    assert timings["model_s"] >= 0 and timings["other_s"] >= 0


def test_bad_prompts_are_explained(client):
    r = segment(client, [{"points": [[5, 5]], "labels": [0]}])
    assert r.status_code == 422 and "positive point" in r.json()["error"]["message"]
    r = segment(client, [{"points": [[500, 5]], "labels": [1]}])
    assert r.status_code == 422 and "outside" in r.json()["error"]["message"]
    r = segment(client, [{"points": [[5, 5]], "labels": [1, 0]}])
    assert r.status_code == 422 and "one label per point" in r.json()["error"]["message"]
    r = segment(client, [])
    assert r.status_code == 422
    r = segment(client, [{"box": [1, 2, 3]}])
    assert r.status_code == 422 and "four numbers" in r.json()["error"]["message"]
    r = segment(client, [{"box": [20, 10, 44, 30]}], headers={})
    assert r.status_code == 401


def test_a_correction_image_is_charged_against_the_image_memory_budget(tiny_segmenter):
    """Like an ask (issue 13): a 1-bit PNG of a few KB that decodes to 8000 x 8000 RGB is refused from
    its header, before any pixel is decoded, when it cannot fit the budget; the cached decoded image
    holds its share of the budget until it leaves the cache."""
    budget = 64 * 2**20
    config = ServiceConfig(recorded_output="<answer>[]</answer>", segmenter="tiny", image_memory_bytes=budget)
    service = Service(config, loader=lambda cfg: (Cascade(segmenter=tiny_segmenter), {"device": "cpu",
                                                                                        "dtype": "float32"}))
    service.start()
    bomb = io.BytesIO()
    Image.new("1", (8000, 8000)).save(bomb, format="PNG")
    assert len(bomb.getvalue()) < 64 * 1024
    with TestClient(create_app(service, token=TOKEN), base_url="http://127.0.0.1") as c:
        import time
        deadline = time.monotonic() + 30
        while service.state != "ready" and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = c.post("/v1/segment", headers=HEADERS, files={"image": ("big.png", bomb.getvalue(), "image/png")},
                         data={"request": json.dumps({"objects": [{"box": [10, 10, 100, 100]}]})})
        assert refused.status_code == 413 and refused.json()["error"]["code"] == "image_too_large", refused.text
        assert service.budget.used == 0
        ok = segment(c, [{"box": [20, 10, 44, 30], "points": [], "labels": []}])
        assert ok.status_code == 200, ok.text
        assert service.budget.used == 48 * 64 * 3  # the cached image's pixels, nothing else
    service.close()


def by_key(client, body):
    """A request part only (multipart, as the plugin sends it), no image part."""
    return client.post("/v1/segment", headers=HEADERS, files={"request": (None, json.dumps(body), "application/json")})


def test_a_later_correction_names_the_image_instead_of_sending_it(client):
    """The first correction sends the image and learns its key; later ones send only the key and get
    the same masks. A key the server does not hold is a 409 the client answers by sending the image."""
    from georeasoner_plugin.core.api import CODE_IMAGE_NOT_CACHED, image_key

    prompt = [{"box": [20, 10, 44, 30], "points": [[30, 20]], "labels": [1]}]
    first = segment(client, prompt)
    assert first.status_code == 200, first.text
    key = first.json()["image_key"]
    assert key == image_key(png())
    named = by_key(client, {"objects": prompt, "image_key": key})
    assert named.status_code == 200, named.text
    assert named.json()["objects"][0]["mask"] == first.json()["objects"][0]["mask"]
    assert named.json()["timings"]["cache_hit"] is True and named.json()["image_key"] == key
    unknown = by_key(client, {"objects": prompt, "image_key": "0" * 32})
    assert unknown.status_code == 409 and unknown.json()["error"]["code"] == CODE_IMAGE_NOT_CACHED
    assert "send the image again" in unknown.json()["error"]["message"]
    # a key that does not name the image sent with it, a malformed key, and neither image nor key
    wrong = segment(client, prompt, image_key="1" * 32)
    assert wrong.status_code == 422 and "does not name the image" in wrong.json()["error"]["message"]
    malformed = by_key(client, {"objects": prompt, "image_key": "../etc/passwd"})
    assert malformed.status_code == 422
    neither = by_key(client, {"objects": prompt})
    assert neither.status_code == 422 and "image_key" in neither.json()["error"]["message"]
