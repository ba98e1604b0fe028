"""Model families (issue 12): Qwen3-VL reasoners and SAM 3 (tracker) segmenters on tiny random models,
picked by the checkpoint's config, through the cascade, the remote path and the HTTP service."""
from __future__ import annotations

import math
import random
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from georeasoner_plugin.core.frames import smart_resize
from georeasoner_plugin.core.profiles import get_profile
from georeasoner_plugin.core.protocol import Answer

from openai_double import OpenAIDouble  # noqa: E402 - tests/backend is on sys.path under pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
NAIP = DATA / "naip_nd_2020.tif"
QWEN3_RECORDED = ROOT / "examples" / "naip_lakes_qwen3.txt"
QUESTION = "Which lakes could supply irrigation water?"


@pytest.fixture(scope="module")
def qwen3_reasoner(tiny_qwen3_models):
    from georeasoner_plugin.backend.reasoner import Reasoner

    return Reasoner(str(tiny_qwen3_models["reasoner_qwen3"]), device="cpu")


@pytest.fixture(scope="module")
def sam3_segmenter(tiny_qwen3_models):
    from georeasoner_plugin.backend.segmenter import Segmenter

    return Segmenter(str(tiny_qwen3_models["segmenter_sam3"]), device="cpu", cache_size=2)


@pytest.fixture(scope="module")
def naip_like():
    """The NAIP sample when ../shared/data has it, else a synthetic image of the same 934 x 723 size."""
    if NAIP.exists():
        from georeasoner_plugin.backend.imagery import read_raster

        return read_raster(NAIP).rgb
    return np.random.default_rng(3).integers(0, 255, (723, 934, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------ loading
def test_the_checkpoint_config_picks_class_and_family(qwen3_reasoner, sam3_segmenter, tiny_qwen3_models):
    from transformers import Qwen3VLForConditionalGeneration, Sam3TrackerModel

    from georeasoner_plugin.backend.models import (REASONER_FAMILIES, SEGMENTER_FAMILIES, ModelLoadError,
                                                   reasoner_family)
    from georeasoner_plugin.backend.reasoner import Reasoner
    from georeasoner_plugin.backend.segmenter import Segmenter

    assert isinstance(qwen3_reasoner.model, Qwen3VLForConditionalGeneration)
    assert qwen3_reasoner.family.name == "Qwen3-VL" and qwen3_reasoner.frame_factor == 32
    assert isinstance(sam3_segmenter.model, Sam3TrackerModel) and sam3_segmenter.family.name == "SAM 3"
    assert REASONER_FAMILIES["qwen3_vl_moe"].model_class().__name__ == "Qwen3VLMoeForConditionalGeneration"
    assert SEGMENTER_FAMILIES["sam3_video"] is SEGMENTER_FAMILIES["sam3_tracker"]
    directory, family = reasoner_family(tiny_qwen3_models["reasoner_qwen3"])
    assert directory == Path(tiny_qwen3_models["reasoner_qwen3"]) and family.frame_factor == 32
    # The wrong checkpoint in a slot says what the slot takes.
    with pytest.raises(ModelLoadError, match="reasoner must be one of: .*Qwen3-VL"):
        Reasoner(str(tiny_qwen3_models["segmenter_sam3"]), device="cpu")
    with pytest.raises(ModelLoadError, match="segmenter must be one of: .*SAM 3"):
        Segmenter(str(tiny_qwen3_models["reasoner_qwen3"]), device="cpu")


def test_make_tiny_roles_keep_the_old_manifest_keys():
    from georeasoner_plugin.backend.tiny import ALL_TINY_ROLES, DEFAULT_TINY_ROLES, make_tiny_models

    assert ALL_TINY_ROLES[:2] == DEFAULT_TINY_ROLES == ("reasoner", "segmenter")
    assert {"reasoner_qwen3", "segmenter_sam3"} <= set(ALL_TINY_ROLES)
    with pytest.raises(ValueError, match="unknown tiny-model role"):
        make_tiny_models("/nonexistent", roles=("reasoner_qwen4",))


# ---------------------------------------------------------------------- the processor's resize rules
def test_core_smart_resize_is_the_processors_arithmetic_at_factor_32():
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as processor_resize

    spec = get_profile("qwen3").frame
    rng = random.Random(12)
    sizes = [(723, 934), (100, 2000), (4000, 300), (4096, 4096), (33, 47)] + \
        [(rng.randint(32, 5000), rng.randint(32, 5000)) for _ in range(300)]
    for height, width in sizes:
        if max(height, width) / min(height, width) > 200:
            continue
        ours = smart_resize(height, width, 32, spec.min_pixels, spec.max_pixels)
        assert ours == processor_resize(height, width, 32, spec.min_pixels, spec.max_pixels), (height, width)


@pytest.mark.parametrize("size", [(934, 723), (2000, 100), (300, 900)])
def test_the_model_sees_exactly_the_profile_frame(qwen3_reasoner, size):
    """The frame we map from is the image the model sees, also under the checkpoint's own pixel bounds."""
    width, height = size
    frame = get_profile("qwen3").frame.frame_for(width, height)
    image = Image.new("RGB", (frame.frame_width, frame.frame_height), (40, 90, 160))
    inputs = qwen3_reasoner.prepare_inputs(image, get_profile("qwen3").messages(QUESTION))
    _, grid_h, grid_w = inputs["image_grid_thw"][0].tolist()
    assert (grid_w * 16, grid_h * 16) == (frame.frame_width, frame.frame_height)
    # The processor left at the checkpoint's bounds (64..16384 x 32 x 32 pixels) keeps the frame too.
    processor = qwen3_reasoner.processor.image_processor
    grid = processor(images=[image], return_tensors="pt")["image_grid_thw"][0].tolist()
    assert (grid[2] * processor.patch_size, grid[1] * processor.patch_size) == image.size
    image_tokens = int((inputs["input_ids"] == qwen3_reasoner.model.config.image_token_id).sum())
    assert image_tokens == grid_h * grid_w // 4


# ---------------------------------------------------------------------------------- cascade
def test_cascade_on_tiny_qwen3_and_sam3_end_to_end(qwen3_reasoner, sam3_segmenter):
    from georeasoner_plugin.backend.cascade import AskOptions, Cascade

    image = np.random.default_rng(5).integers(0, 255, (150, 420, 3), dtype=np.uint8)
    cascade = Cascade(reasoner=qwen3_reasoner, segmenter=sam3_segmenter, profile="qwen3")
    tokens = []
    result = cascade.run(image, QUESTION, options=AskOptions(max_new_tokens=12),
                         on_event=lambda kind, data: tokens.append(data["text"]) if kind == "token" else None)
    answer = result.answer
    assert answer.profile == "qwen3" and answer.models["reasoner"] == str(qwen3_reasoner.name)
    assert "".join(tokens) == answer.raw_output  # random weights: nonsense, but streamed and parsed
    assert qwen3_reasoner.last_timings["new_tokens"] >= 1
    assert answer.parse_status in ("ok", "partial", "empty", "invalid", "no_answer")


def test_recorded_qwen3_answer_through_sam3(sam3_segmenter, naip_like):
    from georeasoner_plugin.backend.cascade import Cascade

    cascade = Cascade(segmenter=sam3_segmenter, profile="qwen3")
    result = cascade.run(naip_like, QUESTION, raw_output=QWEN3_RECORDED.read_text())
    answer = result.answer
    assert answer.parse_status == "ok" and len(answer.objects) == 4 and len(result.masks) == 4
    first = answer.objects[0]
    # bbox_2d [889, 21, 945, 162] of 934 x 723 by hand: x * 0.934, y * 0.723.
    assert first.box == pytest.approx((830.326, 15.183, 882.63, 117.126), abs=1e-3)
    assert first.points == [pytest.approx((856.478, 65.793), abs=1e-3)] and first.label == "lake"
    assert all(m.shape == (723, 934) and m.dtype == bool for m in result.masks)
    assert all(o.polygons is not None and o.mask is not None for o in answer.objects)
    assert answer.models["segmenter"] == sam3_segmenter.name


def test_a_profile_of_another_family_is_refused(qwen3_reasoner):
    from georeasoner_plugin.backend.cascade import Cascade, CascadeError

    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(CascadeError, match="qwen3, georeasoner-qwen3"):
        Cascade(reasoner=qwen3_reasoner, profile="remotereasoner").run(image, QUESTION)


def test_sam3_embedding_cache_and_one_decoder_batch(sam3_segmenter):
    from georeasoner_plugin.backend.segmenter import SamPrompt

    sam3_segmenter.clear_cache()
    image = np.random.default_rng(8).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    prompts = [SamPrompt(box=(10, 20, 120, 150), points=[(60, 80)]), SamPrompt(box=(150, 30, 290, 190)),
               SamPrompt(points=[(40, 40), (50, 60)])]
    before = sam3_segmenter.cache_info()
    first = sam3_segmenter.segment(image, prompts)
    assert sam3_segmenter.last_timings["cache_hit"] is False
    second = sam3_segmenter.segment(image, prompts[:1], multimask=True)
    assert sam3_segmenter.last_timings["cache_hit"] is True
    again = sam3_segmenter.segment(image, prompts)
    info = sam3_segmenter.cache_info()
    assert (info.hits - before.hits, info.misses - before.misses) == (2, 1)
    assert len(first) == 3 and len(second) == 1
    assert all(r.mask.shape == (200, 300) for r in first) and all(math.isfinite(r.score) for r in first)
    for a, b in zip(first, again):
        assert np.array_equal(a.mask, b.mask) and a.score == pytest.approx(b.score)


# ------------------------------------------------------------------------------------ remote path
class RecordedQwen3Server:
    """Rule-based stand-in for a vLLM-served Qwen3-VL: notes the image it got, answers one object
    covering the middle of the image in the 0-1000 frame (what a real Qwen3-VL writes for it)."""

    name = "stand-in"

    def __init__(self):
        self.images = []

    def generate(self, image, messages, on_token=None, should_stop=None, **options):
        self.images.append(image.size)
        text = '```json\n[{"bbox_2d": [250, 250, 750, 750], "point_2d": [500, 500], "label": "field"}]\n```'
        if on_token:
            on_token(text)
        return text


def test_remote_qwen3_gets_the_profile_frame_and_its_numbers_map_back():
    from georeasoner_plugin.backend.cascade import AskOptions, Cascade
    from georeasoner_plugin.backend.remote_reasoner import RemoteReasoner

    stand_in = RecordedQwen3Server()
    image = np.random.default_rng(1).integers(0, 255, (723, 934, 3), dtype=np.uint8)
    with OpenAIDouble(stand_in, model_name="Qwen/Qwen3-VL-8B-Instruct") as served:
        remote = RemoteReasoner(served.url, served.model_name)
        try:
            answer = Cascade(reasoner=remote, profile="qwen3").run(
                image, QUESTION, options=AskOptions(granularities=("boxes", "points"))).answer
        finally:
            remote.close()
    assert stand_in.images == [(928, 736)]  # the qwen3 frame of 934 x 723, sent losslessly
    assert answer.parse_status == "ok"
    assert answer.objects[0].box == pytest.approx((233.5, 180.75, 700.5, 542.25))
    assert answer.objects[0].points == [pytest.approx((467.0, 361.5))]


def test_remote_tiny_qwen3_answers_as_in_process(qwen3_reasoner):
    from georeasoner_plugin.backend.remote_reasoner import RemoteReasoner

    frame = get_profile("qwen3").frame.frame_for(300, 200)
    image = Image.fromarray(np.random.default_rng(2).integers(0, 255, (frame.frame_height, frame.frame_width, 3),
                                                              dtype=np.uint8))
    messages = get_profile("qwen3").messages(QUESTION)
    local = qwen3_reasoner.generate(image, messages, max_new_tokens=8)
    with OpenAIDouble(qwen3_reasoner, model_name="tiny-qwen3-vl") as served:
        remote = RemoteReasoner(served.url, served.model_name)
        try:
            assert remote.generate(image, messages, max_new_tokens=8) == local
        finally:
            remote.close()


# ------------------------------------------------------------------------------------ service
def test_service_on_tiny_qwen3_and_sam3(tiny_qwen3_models, tmp_path):
    from test_server import ServerProcess, ask, png_bytes  # the harness of the service tests

    server = ServerProcess("qwen3", ["--reasoner", tiny_qwen3_models["reasoner_qwen3"], "--segmenter",
                                     tiny_qwen3_models["segmenter_sam3"], "--profile", "qwen3", "--device", "cpu",
                                     "--expand", "instances", "--instance-model", tiny_qwen3_models["instances_sam3"]],
                           tmp_path)
    try:
        server.wait_listening()
        server.wait_ready()
        info = httpx.get(f"{server.url}/v1/info", headers=server.headers).json()
        profiles = {p["name"]: p["frame"] for p in info["profiles"]}
        assert "0-1000" in profiles["qwen3"] and "0-1000" in profiles["georeasoner-qwen3"]
        assert info["default_profile"] == "qwen3"
        assert info["models"] == {"reasoner": str(tiny_qwen3_models["reasoner_qwen3"]),
                                  "segmenter": str(tiny_qwen3_models["segmenter_sam3"])}
        image = np.random.default_rng(4).integers(0, 255, (96, 160, 3), dtype=np.uint8)
        response = ask(server, png_bytes(image), {"question": QUESTION, "max_new_tokens": 8})
        assert response.status_code == 200, response.text
        answer = Answer.from_dict(response.json())
        assert answer.profile == "qwen3" and (answer.image_width, answer.image_height) == (160, 96)
        assert answer.models["instances"] == str(tiny_qwen3_models["instances_sam3"])  # --expand instances
    finally:
        server.interrupt()
        server.stop()
    assert "Traceback" not in server.log()


def test_profiles_command_lists_the_qwen3_profiles_with_their_frames(capsys):
    from georeasoner_plugin.backend import cli

    assert cli.main(["profiles"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name in ("qwen3", "georeasoner-qwen3"):
        index = next(i for i, line in enumerate(lines) if line.split()[0] == name)
        assert "coordinates normalised 0-1000" in lines[index + 1] and "factor 32" in lines[index + 1]
    assert "Qwen/Qwen3-VL-8B-Instruct" in out


# ------------------------------------------------------------------------ instance expansion
@pytest.fixture(scope="module")
def sam3_detector(tiny_qwen3_models):
    from georeasoner_plugin.backend.instances import InstanceFinder

    # Random weights score every proposal near 0.25: threshold 0 keeps them all, so the selection
    # rules (inside the reasoner's boxes, or the whole image) have many instances to work on.
    return InstanceFinder(str(tiny_qwen3_models["instances_sam3"]), device="cpu", threshold=0.0)


EXPAND_ANSWER = ('```json\n[{"bbox_2d": [0, 0, 500, 1000], "point_2d": [250, 500], "label": "centre-pivot field"},'
                 ' {"bbox_2d": [600, 100, 900, 400], "point_2d": [750, 250]}]\n```')


def _centre_inside(box, boxes):
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in boxes)


@pytest.mark.parametrize("question, whole", [("Which field is irrigated?", False),
                                             ("Show all centre-pivot fields", True)])
def test_instance_expansion(sam3_detector, sam3_segmenter, question, whole):
    from georeasoner_plugin.backend.cascade import Cascade
    from georeasoner_plugin.backend.instances import asks_for_all

    assert asks_for_all(question) is whole
    image = np.random.default_rng(6).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    sam3_detector.clear_cache()
    found = sam3_detector.find(image, ["centre-pivot field"])["centre-pivot field"]
    assert found and all(i.mask.shape == (240, 320) for i in found)
    assert sam3_detector.last_timings["cache_hit"] is False
    expected = [i for i in found if i.mask.any() and (whole or _centre_inside(i.box, [(0, 0, 160, 240)]))]
    assert expected and (whole or len(expected) < len(found) or all(i.box[0] < 160 for i in found))

    cascade = Cascade(segmenter=sam3_segmenter, profile="qwen3", expander=sam3_detector)
    result = cascade.run(image, question, raw_output=EXPAND_ANSWER)
    answer = result.answer
    assert sam3_detector.last_timings["cache_hit"] is True  # the image was encoded once
    expanded = [o for o in answer.objects if o.label == "centre-pivot field"]
    assert len(expanded) == len(expected) and len(answer.objects) == len(expected) + 1
    assert [o.box for o in expanded] == [pytest.approx(i.box) for i in expected]
    assert all(0 <= o.box[0] <= o.box[2] <= 320 and 0 <= o.box[1] <= o.box[3] <= 240 for o in expanded)
    for obj, instance in zip(expanded, expected):
        assert np.array_equal(result.masks[obj.index], instance.mask) and obj.points == []
    unlabelled = answer.objects[-1]
    assert unlabelled.label is None and unlabelled.box == pytest.approx((192.0, 24.0, 288.0, 96.0))
    assert result.masks[unlabelled.index].shape == (240, 320)  # segmented by the tracker from its box
    assert any("-> %d instance(s)" % len(expected) in w for w in answer.warnings)
    assert any("without a label" in w for w in answer.warnings)
    assert answer.models["instances"] == sam3_detector.name


def test_expansion_that_finds_nothing_keeps_the_reasoners_objects(tiny_qwen3_models, sam3_segmenter):
    from georeasoner_plugin.backend.cascade import Cascade
    from georeasoner_plugin.backend.instances import InstanceFinder

    strict = InstanceFinder(str(tiny_qwen3_models["instances_sam3"]), device="cpu", threshold=1.0)
    image = np.random.default_rng(7).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    answer = Cascade(segmenter=sam3_segmenter, profile="qwen3", expander=strict).run(
        image, "Which field?", raw_output=EXPAND_ANSWER).answer
    assert [o.label for o in answer.objects] == ["centre-pivot field", None]
    assert any("found no 'centre-pivot field'" in w for w in answer.warnings)


def test_expand_options_are_checked(tmp_path, capsys):
    from georeasoner_plugin.backend import cli

    image = tmp_path / "image.png"
    Image.new("RGB", (64, 64)).save(image)
    code = cli.main(["ask", str(image), "q", "-o", str(tmp_path / "out"), "--instance-model", "x"])
    assert code == cli.EXIT_USAGE and "only applies with --expand instances" in capsys.readouterr().err
    code = cli.main(["serve", "--expand", "instances", "--segmenter", "none", "--reasoner-output",
                     str(QWEN3_RECORDED)])
    assert code == cli.EXIT_USAGE and "--expand instances needs SAM 3" in capsys.readouterr().err


def test_qwen3_moe_checkpoints_load_and_answer(tmp_path):
    """The MoE models load the same way (here a 4-expert tiny one, built on demand, not by make-tiny)."""
    from transformers import Qwen3VLMoeForConditionalGeneration

    from georeasoner_plugin.backend.cascade import AskOptions, Cascade
    from georeasoner_plugin.backend.reasoner import Reasoner
    from georeasoner_plugin.backend.tiny import make_tiny_models

    folder = make_tiny_models(tmp_path, roles=("reasoner_qwen3_moe",))["reasoner_qwen3_moe"]
    reasoner = Reasoner(str(folder), device="cpu")
    assert isinstance(reasoner.model, Qwen3VLMoeForConditionalGeneration)
    assert reasoner.family.name == "Qwen3-VL-MoE" and reasoner.frame_factor == 32
    image = np.random.default_rng(9).integers(0, 255, (100, 200, 3), dtype=np.uint8)
    answer = Cascade(reasoner=reasoner, profile="qwen3").run(
        image, QUESTION, options=AskOptions(granularities=("boxes", "points"), max_new_tokens=6)).answer
    assert answer.profile == "qwen3" and reasoner.last_timings["new_tokens"] >= 1
