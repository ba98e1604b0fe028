"""box_score end to end: token probabilities from the real (tiny, random) reasoners, through the cascade.

The tiny model's weights are random, so its answers are nonsense; what it says does not matter here,
only that the probabilities it reports are those of the tokens it chose. Where a known box is needed,
a recorded raw output is read by the real parser, and the probabilities come from the tiny model
itself, scoring that very output (teacher forcing): the cascade path is then exactly the path of a
live answer, with a box that is known.
"""
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from georeasoner_plugin.backend.cascade import AskOptions, Cascade  # noqa: E402
from georeasoner_plugin.backend.prompts import SamPrompt  # noqa: E402
from georeasoner_plugin.backend.reasoner import scored_text  # noqa: E402
from georeasoner_plugin.backend.remote_reasoner import RemoteReasoner  # noqa: E402
from georeasoner_plugin.backend.reasoning import token_char_spans  # noqa: E402
from georeasoner_plugin.core.confidence import ScoredText, box_scores, box_spans  # noqa: E402
from georeasoner_plugin.core.profiles import GEOREASONER, get_profile  # noqa: E402

from scored_standin import RecordedAnswerScorer, teacher_forced_logprobs  # noqa: E402
from openai_double import OpenAIDouble  # noqa: E402

MESSAGES = GEOREASONER.messages("Which lakes could irrigate the fields east of the road?")


def noise_image(width, height, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_greedy_probabilities_are_those_of_the_chosen_tokens(tiny_reasoner):
    image = noise_image(56, 84, seed=3)
    pieces = []
    text = tiny_reasoner.generate(image, MESSAGES, max_new_tokens=16, on_token=pieces.append)
    assert isinstance(text, ScoredText) and "".join(pieces) == text  # streaming still works
    ids = list(text.token_ids)
    assert len(ids) == tiny_reasoner.last_timings["new_tokens"] == len(text.token_logprobs)
    probabilities = [math.exp(t.logprob) for t in text.token_logprobs]
    assert all(0.0 < p <= 1.0 for p in probabilities)
    expected = teacher_forced_logprobs(tiny_reasoner, image, MESSAGES, ids)
    assert [t.logprob for t in text.token_logprobs] == pytest.approx(expected, abs=1e-4)
    # Recording the probabilities changes nothing in what greedy decoding writes.
    assert tiny_reasoner.generate(image, MESSAGES, max_new_tokens=16) == text
    # The spans tile the text: in order, contiguous, and the distinct ones add up to it (tokens that
    # only together make a character - random weights write broken UTF-8 too - share its span).
    spans = list(dict.fromkeys((t.start, t.end) for t in text.token_logprobs))
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])) and spans[0][0] == 0
    assert "".join(text[s:e] for s, e in spans) == text


def test_sampled_probabilities_are_of_the_tempered_distribution_sampled_from(tiny_reasoner):
    image = noise_image(56, 56, seed=4)
    text = tiny_reasoner.generate(image, MESSAGES, max_new_tokens=12, temperature=1.7, top_p=1.0, seed=11)
    expected = teacher_forced_logprobs(tiny_reasoner, image, MESSAGES, list(text.token_ids), temperature=1.7)
    assert [t.logprob for t in text.token_logprobs] == pytest.approx(expected, abs=1e-4)
    untempered = teacher_forced_logprobs(tiny_reasoner, image, MESSAGES, list(text.token_ids))
    assert [t.logprob for t in text.token_logprobs] != pytest.approx(untempered, abs=1e-4)


def test_token_spans_of_the_real_tokenizer_on_an_answer_with_a_multibyte_character(tiny_reasoner):
    tokenizer = tiny_reasoner.processor.tokenizer
    answer = "<think>Lake 🌊 east</think><answer>[[12,30,250,198]]</answer>"
    ids = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.convert_tokens_to_ids("<|im_end|>")]

    def decode(part):
        return tokenizer.decode(part, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    spans = token_char_spans(decode, ids)
    assert decode(ids) == answer and len(spans) == len(ids)
    assert spans[-1] == (len(answer), len(answer))  # <|im_end|>: special, no characters
    wave = answer.index("🌊")
    on_wave = [s for s in spans if s[0] <= wave < s[1]]
    assert on_wave and all(s == (wave, wave + 1) for s in on_wave)  # the wave's byte tokens share it
    for i, (start, end) in enumerate(spans):
        if end > start and (start, end) != (wave, wave + 1):
            assert decode([ids[i]]) == answer[start:end]
    text = scored_text(tokenizer, ids, [-0.1] * len(ids))
    assert text == answer and box_spans(text, GEOREASONER.parse(text).objects) == [(answer.index("12,"),
                                                                                   answer.index("]]"))]


# ------------------------------------------------------------------ a known box: the cascade path
RECORDED = ("<think>Two dark ponds in the northern half, one on each side.</think>\n"
            "<answer>[[12,30,100,96],[130,20,210,118]]</answer>")
BOXES = ("12,30,100,96", "130,20,210,118")
QUESTION = "Which ponds could irrigate the fields?"
PROFILE = get_profile("remotereasoner")


def scene(seed=5):
    return np.random.default_rng(seed).integers(0, 256, (224, 224, 3), dtype=np.uint8)


def expected_box_scores(tiny_reasoner, image):
    """Each box's geometric mean, worked out without core.confidence or token_char_spans: token
    characters from decoding every prefix, boxes found with str.index on the recorded text."""
    tokenizer = tiny_reasoner.processor.tokenizer
    ids = tokenizer.encode(RECORDED, add_special_tokens=False)
    logprobs = teacher_forced_logprobs(tiny_reasoner, Image.fromarray(image), PROFILE.messages(QUESTION), ids)
    ends = [len(tokenizer.decode(ids[:i + 1], skip_special_tokens=True, clean_up_tokenization_spaces=False))
            for i in range(len(ids))]
    starts = [0] + ends[:-1]
    scores = []
    for written in BOXES:
        first = RECORDED.index(written)
        last = first + len(written)
        on_box = [lp for lp, s, e in zip(logprobs, starts, ends) if s < last and e > first]
        scores.append(math.exp(sum(on_box) / len(on_box)))
    return scores


@pytest.fixture(scope="module")
def scorer(tiny_reasoner):
    return RecordedAnswerScorer(tiny_reasoner, RECORDED)


def test_boxes_only_objects_score_with_the_reasoners_confidence(tiny_reasoner, scorer):
    image = scene()
    expected = expected_box_scores(tiny_reasoner, image)
    answer = Cascade(scorer).run(image, QUESTION, profile="remotereasoner",
                                 options=AskOptions(granularities=("boxes",))).answer
    assert [o.box for o in answer.objects] == [(12, 30, 100, 96), (130, 20, 210, 118)]
    assert [o.box_score for o in answer.objects] == pytest.approx(expected, rel=1e-5)
    assert all(0 < o.box_score <= 1 and o.score == o.box_score for o in answer.objects)
    assert type(answer.raw_output) is str and answer.raw_output == RECORDED
    data = json.loads(answer.to_json())
    assert [o["box_score"] for o in data["objects"]] == pytest.approx(expected, rel=1e-5)


def test_with_masks_score_is_the_mask_score_and_a_replay_has_no_box_score(tiny_reasoner, scorer, tiny_segmenter):
    image = scene()
    masked = Cascade(scorer, tiny_segmenter).run(image, QUESTION, profile="remotereasoner",
                                                 options=AskOptions(granularities=("boxes", "points", "masks"))).answer
    prompts = [SamPrompt(box=o.box, points=list(o.points)) for o in masked.objects]
    mask_scores = [r.score for r in tiny_segmenter.segment(image, prompts, multimask=PROFILE.sam_multimask)]
    assert [o.score for o in masked.objects] == pytest.approx(mask_scores, rel=1e-5)
    assert all(o.score != o.box_score for o in masked.objects)
    assert [o.box_score for o in masked.objects] == pytest.approx(expected_box_scores(tiny_reasoner, image), rel=1e-5)
    replayed = Cascade(None).run(image, QUESTION, profile="remotereasoner", raw_output=RECORDED,
                                 options=AskOptions(granularities=("boxes",))).answer
    assert len(replayed.objects) == 2
    assert all(o.box_score is None and o.score is None for o in replayed.objects)
    assert "box_score" not in json.loads(replayed.to_json())["objects"][0]


# ------------------------------------------------------------------ the remote reasoner
def test_remote_reasoner_reads_logprobs_and_scores_like_the_local_one(tiny_reasoner, scorer):
    image = scene()
    frame = Image.fromarray(image)
    messages = PROFILE.messages(QUESTION)
    local = scorer.generate(frame, messages)
    with OpenAIDouble(scorer, model_name="scored", logprobs=True) as double:
        remote = RemoteReasoner(double.url, "scored")
        pieces = []
        text = remote.generate(frame, messages, on_token=pieces.append)
        assert double.requests[-1]["logprobs"] is True and "".join(pieces) == text == RECORDED
        answer = Cascade(remote).run(image, QUESTION, profile="remotereasoner",
                                     options=AskOptions(granularities=("boxes",))).answer
    assert isinstance(text, ScoredText) and text.token_logprobs
    objects = PROFILE.parse(text).objects
    assert box_scores(text, objects, text.token_logprobs) == \
        pytest.approx(box_scores(local, objects, local.token_logprobs), rel=1e-9)
    assert [o.score for o in answer.objects] == pytest.approx(expected_box_scores(tiny_reasoner, image), rel=1e-5)


@pytest.mark.parametrize("server", [False, "refuse"])
def test_a_server_without_logprobs_gives_no_box_score(scorer, server):
    with OpenAIDouble(scorer, model_name="scored", logprobs=server) as double:
        remote = RemoteReasoner(double.url, "scored")
        answer = Cascade(remote).run(scene(), QUESTION, profile="remotereasoner",
                                     options=AskOptions(granularities=("boxes",))).answer
        assert len(answer.objects) == 2 and all(o.box_score is None and o.score is None for o in answer.objects)
        again = remote.generate(Image.fromarray(scene()), PROFILE.messages(QUESTION))
    assert again == RECORDED and again.token_logprobs is None
    asked = [r["logprobs"] for r in double.requests]
    # Refused: asked once, asked again at once without, then never by this reasoner; ignored: every time.
    assert asked == ([True, None, None] if server == "refuse" else [True, True])
    assert remote.ask_logprobs is (server is False)


def test_streamed_chunks_are_placed_on_their_characters():
    from georeasoner_plugin.backend.remote_reasoner import _ScoredPieces

    pieces = _ScoredPieces()
    pieces.add("<answer>[[", [{"token": "<answer>", "logprob": -0.1}, {"token": "[[", "logprob": -0.2}])
    pieces.add("12", [{"token": "12", "logprob": math.log(0.5)}])
    pieces.add(",3", [{"token": "bytes:,", "logprob": math.log(0.25)}, {"token": "3", "logprob": 0.5}])
    tokens = pieces.tokens()
    assert [(t.start, t.end) for t in tokens] == [(0, 8), (8, 10), (10, 12), (12, 14), (12, 14)]
    assert tokens[-1].logprob == 0.0  # a positive log-probability (a server's rounding) is capped at p = 1
    pieces.add("]]", None)
    assert pieces.tokens() is None  # text without logprobs: nothing is scored


# ------------------------------------------------------------------ tiles, the CLI and the HTTP service
def write_geotiff(path, image):
    import rasterio
    from affine import Affine

    profile = {"driver": "GTiff", "width": image.shape[1], "height": image.shape[0], "count": 3, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": Affine(0.5, 0, 500000.0, 0, -0.5, 4500000.0)}
    with rasterio.open(path, "w", **profile) as out:
        for band in range(3):
            out.write(image[..., band], band + 1)
    return path


def test_tiled_objects_carry_box_score_and_a_merged_object_keeps_its_best(tiny_reasoner, scorer, tmp_path):
    from georeasoner_plugin.backend.tiled.engine import TiledEngine, TiledRequest
    from georeasoner_plugin.backend.tiled.merge import merge_records
    from georeasoner_plugin.backend.tiled.source import RasterTileSource
    from georeasoner_plugin.core.tiling import plan_tiles

    image = scene()
    with RasterTileSource(write_geotiff(tmp_path / "scene.tif", image)) as source:
        plan = plan_tiles(source.width, source.height, tile_size=224)
        assert plan.grid_size == 1
        result = TiledEngine(scorer).run(source, plan, TiledRequest(QUESTION, profile="remotereasoner",
                                                                     options=AskOptions(granularities=("boxes",))))
    expected = expected_box_scores(tiny_reasoner, image)
    assert [o["box_score"] for o in result.records[0]["objects"]] == pytest.approx(expected, rel=1e-5)
    merged = sorted(result.answer.objects, key=lambda o: o.box[0])  # the merge sorts top-left first
    assert [o.box_score for o in merged] == pytest.approx(expected, rel=1e-5)
    assert [o.score for o in merged] == pytest.approx(expected, rel=1e-5)

    # The same pond seen by two overlapping tiles: one object, the better box_score, both in its tiles.
    def record(tile, x, box_score):
        return {"tile": tile, "key": f"r0c{tile}", "window": [x, 0, 200, 200],
                "objects": [{"box": [150, 20, 190, 60], "points": [], "score": box_score, "box_score": box_score,
                             "label": None, "polygons": []}]}

    merged = merge_records([record(0, 0, 0.4), record(1, 100, 0.9)])
    assert len(merged) == 1 and merged[0].box_score == 0.9 and merged[0].score == 0.4  # score: the largest piece
    assert [t["box_score"] for t in merged[0].tiles] == [0.4, 0.9]
    old_journal = [record(0, 0, 0.4)]
    del old_journal[0]["objects"][0]["box_score"]  # a journal written before box_score existed
    assert merge_records(old_journal)[0].box_score is None


def test_cli_geopackage_of_a_boxes_only_ask_has_score_and_box_score(tiny_reasoner, scorer, tmp_path, capsys):
    import pyogrio.raw

    from georeasoner_plugin.backend.cli import main

    image = scene()
    tif = write_geotiff(tmp_path / "scene.tif", image)
    with OpenAIDouble(scorer, model_name="scored", logprobs=True) as double:
        code = main(["ask", str(tif), QUESTION, "-o", str(tmp_path / "out.gpkg"), "--outputs", "boxes",
                     "--profile", "remotereasoner", "--reasoner-url", double.url, "--reasoner-model", "scored",
                     "--quiet"])
    assert code == 0, capsys.readouterr().err
    meta, _, _, fields = pyogrio.raw.read(tmp_path / "out.gpkg", layer="boxes")
    columns = {name: list(fields[i]) for i, name in enumerate(meta["fields"])}
    expected = expected_box_scores(tiny_reasoner, image)
    assert columns["box_score"] == pytest.approx(expected, rel=1e-5)
    assert columns["score"] == pytest.approx(expected, rel=1e-5)


def test_http_service_boxes_only_answer_has_score_and_box_score(tiny_models, tiny_reasoner, scorer, tmp_path):
    from test_server import ServerProcess, ask, png_bytes

    image = scene()
    with OpenAIDouble(scorer, model_name="scored", logprobs=True) as double:
        server = ServerProcess("scored", ["--reasoner-url", double.url, "--reasoner-model", "scored",
                                          "--segmenter", tiny_models["segmenter"], "--device", "cpu"], tmp_path)
        try:
            server.wait_listening()
            server.wait_ready()
            response = ask(server, png_bytes(image), {"question": QUESTION, "profile": "remotereasoner",
                                                      "outputs": ["boxes"]})
        finally:
            server.stop()
    assert response.status_code == 200, response.text
    objects = response.json()["objects"]
    expected = expected_box_scores(tiny_reasoner, image)
    assert [o["box_score"] for o in objects] == pytest.approx(expected, rel=1e-5)
    assert [o["score"] for o in objects] == pytest.approx(expected, rel=1e-5)
