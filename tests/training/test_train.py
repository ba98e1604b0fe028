"""GRPO training on the CPU with the tiny Qwen2.5-VL: configs, data, rewards, resume, export.

The dataset is EarthReason-shaped, cut from the sample GeoTIFFs with drawn masks (two objects, a
ring with a hole, an empty target). Frames are kept small (image_max_pixels) so each GRPO step takes
about a second. Random weights write nonsense that the paper rewards score 0 with no spread, which
gives GRPO nothing to learn from; the runs therefore add `varied`, a deterministic reward that
differs between completions, so the parameters do move and the resume check has something to match.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("trl")

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from georeasoner_plugin.core.profiles import get_profile  # noqa: E402
from training import cli  # noqa: E402
from training.prepare import prepare_split  # noqa: E402
from training.rewards import REWARD_SETS  # noqa: E402
from training.config import ConfigError, config_from_dict, load_config  # noqa: E402
from training.data import build_dataset, image_groups, load_records, pin_processor_frames  # noqa: E402
from training.errors import DatasetError  # noqa: E402
from training.policy import build_rewards  # noqa: E402
from training.train import run_training  # noqa: E402
from training.trainer import grpo_arguments  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = ROOT / "training" / "configs" / "tiny-cpu.yaml"
SIZE = 200
# 200 x 200 crops -> a 196 x 196 frame (49 visual tokens) instead of the profile's 448 x 448.
SMALL_FRAME = {"image_min_pixels": 112 * 112, "image_max_pixels": 224 * 224}


def varied(completion, **_):
    """Share of distinct characters: deterministic, and different for different completions."""
    from training.rewards import completion_text

    text = completion_text(completion)
    return len(set(text)) / max(1, len(text))


CUSTOM = {"varied": varied}


class StopAfter(TrainerCallback):
    """Ends training after a step, the way a crash right after a checkpoint would."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def prepared(imagery, tmp_path_factory):
    """A prepared EarthReason-shaped split: 4 records (2 questions on a two-object image, a ring, an empty target)."""
    import cv2

    root = tmp_path_factory.mktemp("earthreason")
    split = root / "train"
    for name in ("images", "labels", "QAs"):
        (split / name).mkdir(parents=True)

    def sample(name, rgb, mask, questions, answer, ext="png"):
        Image.fromarray(rgb).save(split / "images" / f"{name}.{ext}")
        Image.fromarray(mask).save(split / "labels" / f"{name}.png")
        (split / "QAs" / f"{name}.json").write_text(json.dumps({"questions": questions, "answer": answer}))

    multi = np.zeros((SIZE, SIZE), np.uint8)
    cv2.rectangle(multi, (20, 30), (79, 59), 255, -1)
    cv2.circle(multi, (150, 140), 25, 255, -1)
    ring = np.zeros((SIZE, SIZE), np.uint8)
    cv2.circle(ring, (100, 100), 60, 255, -1)
    cv2.circle(ring, (100, 100), 30, 0, -1)
    sample("multi", imagery.crop(imagery.naip, 300, 200, SIZE), multi, ["Which fields and lakes could be irrigated?",
                                                      "Where is water stored?"], "the field and the lake")
    sample("ring", imagery.crop(imagery.landsat, 100, 100, SIZE), ring, ["Which ring-shaped area surrounds the pond?"],
           "the ring",
           ext="jpg")
    sample("empty", imagery.crop(imagery.naip, 600, 400, SIZE), np.zeros((SIZE, SIZE), np.uint8), ["Where is the airport?"], "")
    result = prepare_split(root, tmp_path_factory.mktemp("prepared"), split="train", profile="georeasoner")
    assert result.records == 4
    return result.records_path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from georeasoner_plugin.backend.tiny import make_tiny_models

    return make_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="module")
def tiny_sam(tiny):
    from georeasoner_plugin.backend.segmenter import Segmenter

    return Segmenter(str(tiny["segmenter"]), device="cpu", cache_size=4)


def tiny_raw(tiny, prepared, output_dir, **changes):
    """The shipped tiny CPU config, pointed at this test's model, data and output folder."""
    raw = yaml.safe_load(TINY_CONFIG.read_text())
    raw.update(model=str(tiny["reasoner"]), output_dir=str(output_dir))
    raw["data"].update(train=str(prepared), **SMALL_FRAME)
    raw["generation"]["max_completion_length"] = 8
    raw["logging"]["report_to"] = ["none"]
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return raw


def tiny_config(tiny, prepared, output_dir, **changes):
    return config_from_dict(tiny_raw(tiny, prepared, output_dir, **changes), "test.yaml")


def step_log(result, step):
    return next(entry for entry in result.log_history if entry.get("step") == step and "loss" in entry)


def trainable(model):
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def base_weights(model_dir):
    """The untrained model's parameters, under the names the loaded model uses."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


# --------------------------------------------------------------------------- configuration

SHIPPED = ["tiny-cpu", "qwen7b-lora-1x24gb", "qwen7b-lora-1x80gb", "qwen7b-full-8x80gb-zero3",
           "remotereasoner-paper-8gpu-zero3"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_are_valid(name):
    config = load_config(ROOT / "training" / "configs" / f"{name}.yaml")
    assert config.optimization.learning_rate > 0 and config.rewards
    if name != "tiny-cpu":
        assert config.optimization.learning_rate == pytest.approx(1e-6)
        assert (config.finetune.lora_r, config.finetune.lora_alpha) == (8, 16)
    # the papers' per-sequence objective (RemoteReasoner Eq. 2, GRASP Eq. 4), set explicitly in every file
    assert config.optimization.loss_type == "grpo"
    assert "loss_type: grpo" in (ROOT / "training" / "configs" / f"{name}.yaml").read_text()


def test_remotereasoner_paper_config_is_the_papers_recipe():
    """Section 4.2 and the authors' RemoteReasoner_GRPO.sh: every number, and exactly Eq. 6's rewards."""
    config = load_config(ROOT / "training" / "configs" / "remotereasoner-paper-8gpu-zero3.yaml")
    f, g, o = config.finetune, config.generation, config.optimization
    assert (f.mode, f.lora_r, f.lora_alpha, f.lora_targets) == ("lora", 8, 16, "language-linear")
    assert o.epochs == 24 and o.learning_rate == pytest.approx(1e-6) and o.bf16 is True
    assert o.per_device_batch_size * o.gradient_accumulation_steps * 8 == 512
    assert (g.num_generations, g.temperature) == (4, pytest.approx(0.9))
    assert o.warmup_ratio == pytest.approx(0.05)
    assert [r.name for r in config.rewards] == ["remotereasoner_iou", "remotereasoner_count", "remotereasoner_format"]
    assert all(r.weight == 1.0 for r in config.rewards)
    assert config.profile == "remotereasoner" and "<think>" in config.system_prompt
    text = (ROOT / "training" / "configs" / "remotereasoner-paper-8gpu-zero3.yaml").read_text()
    assert "RemoteReasoner_GRPO.sh" in text and "zero3_8gpu.yaml" in text


def test_grpo_objective_reaches_trl_explicitly():
    # TRL 1.16 defaults to the token-level "dapo"; every run must say which objective it trains
    config = load_config(TINY_CONFIG, {"logging.report_to": ["none"]})
    assert grpo_arguments(config, [1.0] * len(config.rewards)).loss_type == "grpo"
    other = load_config(TINY_CONFIG, {"logging.report_to": ["none"], "optimization.loss_type": "dapo"})
    assert grpo_arguments(other, [1.0] * len(other.rewards)).loss_type == "dapo"
    with pytest.raises(ConfigError, match="optimization.loss_type: must be one of grpo"):
        load_config(TINY_CONFIG, {"optimization.loss_type": "token"})


def test_configs_not_following_a_paper_do_not_claim_to():
    for name in ("qwen7b-lora-1x24gb", "qwen7b-lora-1x80gb", "qwen7b-full-8x80gb-zero3"):
        header = (ROOT / "training" / "configs" / f"{name}.yaml").read_text().split("\nmodel:")[0]
        assert "Not a paper's recipe" in header and "RemoteReasoner recipe" not in header, name


def test_accelerate_configs_parse_and_point_at_the_deepspeed_file():
    from accelerate.commands.config.config_args import load_config_from_file

    folder = ROOT / "training" / "accelerate"
    single = load_config_from_file(str(folder / "single_gpu.yaml"))
    assert single.num_processes == 1
    for name, processes in (("zero3_8gpu.yaml", 8), ("zero3_multinode.yaml", 16)):
        cluster = load_config_from_file(str(folder / name))
        assert cluster.distributed_type == "DEEPSPEED" and cluster.num_processes == processes
        deepspeed_file = ROOT / cluster.deepspeed_config["deepspeed_config_file"]
        settings = json.loads(deepspeed_file.read_text())
        assert settings["zero_optimization"]["stage"] == 3
        assert settings["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_yaml_exponent_without_a_dot_is_a_number(tmp_path):
    # YAML 1.1 reads 1e-6 as a string; the config must still take it as the number users meant.
    raw = yaml.safe_load(TINY_CONFIG.read_text())
    raw["optimization"]["learning_rate"] = yaml.safe_load("1e-6")
    assert isinstance(raw["optimization"]["learning_rate"], str)
    assert config_from_dict(raw, "t.yaml").optimization.learning_rate == pytest.approx(1e-6)


@pytest.mark.parametrize("change, expected", [
    ({"generation": {"temprature": 0.7}}, ["generation.temprature", "did you mean 'temperature'"]),
    ({"optimization": {"learning_rate": "fast"}}, ["optimization.learning_rate", "must be a number"]),
    ({"optimization": {"max_steps": 2.5}}, ["optimization.max_steps", "whole number"]),
    ({"generation": {"num_generations": 1}}, ["generation.num_generations", "at least 2"]),
    ({"finetune": {"mode": "qlora"}}, ["finetune.mode", "lora, full"]),
    ({"optimization": {"per_device_batch_size": 3}}, ["optimization.per_device_batch_size", "multiple"]),
    ({"rewards": [{"name": "mask_iou", "weight": 2}]}, ["segmenter", "SAM2"]),
    ({"rewards": [{"name": "remotereasoner_iou", "wieght": 2}]}, ["rewards[0].wieght", "did you mean 'weight'"]),
    ({"rewards": "nope"}, ["rewards", "reward set"]),
    ({"model": None}, ["model", "is required"]),
    ({"profile": "seg0"}, ["profile", "segzero"]),
    ({"trl": {"loss_typ": "grpo"}}, ["trl.loss_typ", "did you mean 'loss_type'"]),
    ({"trl": {"learning_rate": 1}}, ["trl.learning_rate", "this config's own keys"]),
    ({"logging": {"report_to": ["wandb"]}}, ["logging.report_to", "tensorboard"]),
    ({"epochs": 3}, ["unknown key 'epochs'"]),
    ({"data": {"questions": "sample"}}, ["data.questions", "all, one_per_image_per_epoch"]),
])
def test_malformed_config_names_the_key(change, expected):
    raw = yaml.safe_load(TINY_CONFIG.read_text())
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key].update(value)
        else:
            raw[key] = value
    with pytest.raises(ConfigError) as error:
        config_from_dict(raw, "bad.yaml")
    message = str(error.value)
    assert message.startswith("bad.yaml: ")
    for text in expected:
        assert text in message


def test_unknown_reward_name_is_reported_before_any_model_loads(tmp_path):
    raw = yaml.safe_load(TINY_CONFIG.read_text())
    raw["rewards"] = ["remotereasoner_iou", "grasp_point"]
    raw["output_dir"] = str(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"rewards\[1\].*'grasp_point'.*did you mean 'grasp_points'"):
        run_training(config_from_dict(raw, "bad.yaml"))


def test_cli_reports_a_bad_config_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    raw = yaml.safe_load(TINY_CONFIG.read_text())
    raw["generation"]["temperature"] = -1
    bad.write_text(yaml.safe_dump(raw))
    assert cli.main(["train", str(bad)]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().count("\n") == 0
    assert f"training: error: {bad}: generation.temperature: must be greater than 0" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    assert cli.main(["train", str(broken)]) == cli.EXIT_CONFIG
    assert "not valid YAML" in capsys.readouterr().err
    assert cli.main(["train", str(TINY_CONFIG), "--set", "optimization.beta"]) == cli.EXIT_CONFIG
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_vllm_switch_without_vllm_installed_says_so(tiny, prepared, tmp_path):
    if __import__("importlib").util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    config = tiny_config(tiny, prepared, tmp_path / "run", generation__use_vllm=True)
    with pytest.raises(ConfigError, match="generation.use_vllm: vLLM is not installed"):
        run_training(config, custom_rewards=CUSTOM)


# --------------------------------------------------------------------------- data

def test_records_reframed_from_pixels_and_bad_lines_skipped_with_file_and_line(tiny, prepared, tmp_path):
    lines = prepared.read_text().splitlines()
    records = {r["id"]: r for r in map(json.loads, lines)}
    missing_image = dict(records["train/multi/q0"], image=str(tmp_path / "gone.png"))
    no_question = {k: v for k, v in records["train/ring/q0"].items() if k != "question"}
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(lines + ["{not json", json.dumps(missing_image), json.dumps(no_question)]) + "\n")
    config = tiny_config(tiny, data, tmp_path / "run")
    rows, report = load_records(config)
    assert report.lines == 7 and report.used == 4 and len(report.problems) == 3
    assert [p.where for p in report.problems] == [f"{data}:5", f"{data}:6", f"{data}:7"]
    assert "image not found" in report.problems[1].detail and "question" in report.problems[2].detail

    # The small frame of this config, not the 448 x 448 the records were prepared with.
    multi = next(r for r in rows if r["id"] == "train/multi/q0")
    assert (multi["frame_width"], multi["frame_height"]) == (196, 196)
    scale = 196 / SIZE
    expected = [round(v * scale, 2) for box in records["train/multi/q0"]["gt_boxes_px"] for v in box]
    assert [v for box in json.loads(multi["gt_boxes"]) for v in box] == pytest.approx(expected)
    assert report.frame_pixels == (196 * 196, 196 * 196)

    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny["reasoner"])
    pin_processor_frames(processor, report, rows[0], config)
    item = build_dataset(rows, config)[0]
    assert item["image"].size == (196, 196)
    assert item["prompt"] == get_profile("georeasoner").messages(item["question"])
    assert isinstance(item["gt_boxes"], list)

    everything_bad = tmp_path / "bad.jsonl"
    everything_bad.write_text("{not json\n[1, 2]\n")
    with pytest.raises(DatasetError, match=r"no usable record.*bad\.jsonl:1"):
        load_records(tiny_config(tiny, everything_bad, tmp_path / "run"))


def test_shuffle_order_depends_only_on_seed_and_epoch():
    from training.trainer import _epoch_seeded_sampler_class

    sampler_class = _epoch_seeded_sampler_class()
    data = list(range(10))
    walked = sampler_class(data, mini_repeat_count=2, batch_size=1, seed=3)
    orders = []
    for epoch in range(3):
        walked.set_epoch(epoch)
        orders.append(list(walked))
    fresh = sampler_class(data, mini_repeat_count=2, batch_size=1, seed=3)
    fresh.set_epoch(2)
    assert list(fresh) == orders[2]  # what a run resumed in epoch 2 sees
    assert orders[0] != orders[1]


def per_image_sampler(groups, **options):
    from training.trainer import _question_per_image_sampler_class

    return _question_per_image_sampler_class()(list(range(groups.questions)), groups, **options)


def test_one_question_per_image_per_epoch_sampler():
    # Five images with 1, 3, 2, 1 and 2 questions; the file lists an image's questions out of order.
    rows = [{"image_id": image, "question_index": q} for image, q in
            [("a", 0), ("b", 2), ("b", 0), ("c", 1), ("b", 1), ("c", 0), ("d", 0), ("e", 0), ("e", 1)]]
    groups = image_groups(rows)
    assert groups.keys == ["a", "b", "c", "d", "e"]
    assert groups.members == [[0], [2, 4, 1], [5, 3], [6], [7, 8]]
    image_of = {index: key for key, members in zip(groups.keys, groups.members) for index in members}

    # TRL's layout: chunks of batch_size images, each index mini_repeat_count times, each chunk
    # repeat_count times; 5 images in chunks of 2 -> 2 chunks per epoch, the fifth image waits.
    sampler = per_image_sampler(groups, mini_repeat_count=2, batch_size=2, repeat_count=3, seed=5)
    assert len(sampler) == (5 // 2) * 2 * 2 * 3
    for epoch in range(4):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert len(order) == len(sampler)
        chunks = [order[i:i + 12] for i in range(0, len(order), 12)]
        for chunk in chunks:
            a, b = chunk[0], chunk[2]
            assert chunk == [a, a, b, b] * 3
        firsts = [chunk[i] for chunk in chunks for i in (0, 2)]
        assert len({image_of[i] for i in firsts}) == 4  # no image twice in an epoch

    # One prompt per generation batch: every image exactly once per epoch, with one of its questions.
    sampler = per_image_sampler(groups, mini_repeat_count=2, batch_size=1, seed=5)
    assert len(sampler) == 5 * 2
    epochs = []
    for epoch in range(6):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert order == list(sampler)  # iterating again within the epoch changes nothing
        prompts = order[::2]
        assert order[1::2] == prompts and sorted(image_of[i] for i in prompts) == groups.keys
        epochs.append({image_of[i]: i for i in prompts})
    for members in groups.members:  # successive epochs take an image's questions in turn
        key = image_of[members[0]]
        asked = [chosen[key] for chosen in epochs]
        for start in range(6 - len(members) + 1):
            assert sorted(asked[start:start + len(members)]) == sorted(members)
    assert epochs[0]["b"] != epochs[1]["b"] and epochs[0]["e"] != epochs[1]["e"]
    assert [list(chosen) for chosen in epochs[:2]] != [groups.keys] * 2  # the images are shuffled too

    # Deterministic: a fresh sampler in epoch 4 (a resumed run) takes the same prompts.
    fresh = per_image_sampler(groups, mini_repeat_count=2, batch_size=1, seed=5)
    fresh.set_epoch(4)
    assert {image_of[i]: i for i in list(fresh)[::2]} == epochs[4]

    # With one question per image it is exactly the per-record sampler.
    from training.trainer import _epoch_seeded_sampler_class

    single = image_groups([{"image_id": str(i), "question_index": 0} for i in range(7)])
    options = dict(mini_repeat_count=2, batch_size=3, repeat_count=2, seed=1)
    ours, theirs = per_image_sampler(single, **options), _epoch_seeded_sampler_class()(list(range(7)), **options)
    for epoch in range(3):
        ours.set_epoch(epoch)
        theirs.set_epoch(epoch)
        assert list(ours) == list(theirs) and len(ours) == len(theirs)
    with pytest.raises(ValueError, match="groups hold 2 record"):
        from training.trainer import _question_per_image_sampler_class

        _question_per_image_sampler_class()(list(range(3)), image_groups(rows[:2]), mini_repeat_count=2)


def test_rewards_see_frame_ground_truth_and_sam2_sees_the_source_image(tiny, tiny_sam, prepared, tmp_path):
    rewards = [{"name": n} for n in ("remotereasoner_iou", "grasp_points")] + [{"name": "mask_iou", "weight": 2}]
    config = tiny_config(tiny, prepared, tmp_path / "run", rewards=rewards, segmenter=str(tiny["segmenter"]))
    rows, _ = load_records(config)
    dataset = build_dataset(rows, config)
    calls = []

    class Spy:
        def segment(self, image, prompts, multimask=False):
            calls.append((image.shape, len(prompts)))
            return tiny_sam.segment(image, prompts, multimask=multimask)

    functions, weights = build_rewards(config, segmenter=Spy())
    assert [f.__name__ for f in functions] == ["remotereasoner_iou", "grasp_points", "mask_iou"] and weights[2] == 2
    profile = get_profile("georeasoner")
    for index in range(len(dataset)):
        item = dataset[index]
        # The ground truth written the way the model is asked to answer, in the frame it sees.
        from georeasoner_plugin.core.parsing import ParsedObject

        perfect = profile.render_answer([ParsedObject(box=tuple(b), points=[tuple(p) for p in pts])
                                         for b, pts in zip(item["gt_boxes"], item["gt_points"])], reasoning="r")
        completions = [[{"role": "assistant", "content": perfect}], [{"role": "assistant", "content": "no idea"}]]
        columns = {key: [item[key]] * 2 for key in item if key != "prompt"}
        iou, points, mask = (f(completions=completions, **columns) for f in functions)
        assert iou[0] > 0.9 and iou[1] == 0.0  # 0.9+: the answer is rounded to whole frame pixels
        assert points[0] == 1.0 and points[1] == 0.0
        assert 0.0 <= mask[0] <= 1.0 and mask[1] == 0.0
        if not item["gt_boxes"]:
            assert mask[0] == 1.0  # "[]" on an empty target
    # SAM2 got the original 200 x 200 image (the mask's grid), one prompt per answered object.
    assert calls and all(shape == (SIZE, SIZE, 3) for shape, _ in calls)
    assert sorted(n for _, n in calls) == [1, 2, 2]


# --------------------------------------------------------------------------- GRPO steps

FAMILIES = {
    "remotereasoner": [{"name": n} for n in REWARD_SETS["remotereasoner"]],
    "grasp": [{"name": n} for n in REWARD_SETS["grasp"]],
    "segzero": [{"name": n} for n in REWARD_SETS["segzero"]],
    "mask_iou": [{"name": "mask_iou", "weight": 2.0}, {"name": "think_answer_format"}],
}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["lora", "full"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_two_grpo_steps_per_reward_family(family, mode, tiny, tiny_sam, prepared, tmp_path):
    rewards = FAMILIES[family] + [{"name": "varied", "weight": 1.0}]
    extra = {"segmenter": str(tiny["segmenter"])} if family == "mask_iou" else {}
    config = tiny_config(tiny, prepared, tmp_path / "run", rewards=rewards, finetune__mode=mode,
                         checkpoints__save_steps=10, **extra)
    result = run_training(config, custom_rewards=CUSTOM, segmenter=tiny_sam, print_plan=lambda _: None)
    assert result.global_step == 2
    for step in (1, 2):
        logged = step_log(result, step)
        for reward in rewards:
            assert f"rewards/{reward['name']}/mean" in logged
        assert "completions/mean_length" in logged and np.isfinite(logged["loss"])

    base = base_weights(tiny["reasoner"])
    model = result.trainer.model
    if mode == "lora":
        assert (result.final_dir / "adapter_model.safetensors").is_file()
        adapted = trainable(model)
        assert adapted and all("lora_" in name for name in adapted)
        assert all(".language_model." in name for name in adapted)  # the vision tower has no adapter
        assert any(p.abs().sum() > 0 for name, p in adapted.items() if "lora_B" in name)  # B starts at 0
    else:
        assert (result.final_dir / "model.safetensors").is_file()
        if family == "remotereasoner":  # a full fine-tuning output exports and loads as well
            from georeasoner_plugin.backend.reasoner import Reasoner
            from training.export import export_model

            exported = export_model(result.final_dir, tmp_path / "exported")
            assert not exported.merged_adapter
            loaded = Reasoner(str(exported.out_dir), device="cpu").model.state_dict()
            for name, tensor in model.state_dict().items():
                assert torch.equal(loaded[name], tensor.detach()), name
        weights = dict(model.named_parameters())
        vision = [n for n in weights if ".visual." in n]
        language = [n for n in weights if ".language_model." in n]
        assert vision and not any(weights[n].requires_grad for n in vision)
        assert all(torch.equal(weights[n].detach(), base[n]) for n in vision)
        assert any(not torch.equal(weights[n].detach(), base[n]) for n in language)


def check_resume(tiny, prepared, tmp_path, changes, custom_rewards=CUSTOM):
    """Stop after step 1, resume, and compare step 2 with an uninterrupted run's; returns the runs."""
    changes = dict(changes, checkpoints__save_steps=1)
    quiet = {"custom_rewards": custom_rewards, "print_plan": lambda _: None}
    straight = run_training(tiny_config(tiny, prepared, tmp_path / "straight", **changes), **quiet)

    stopped = run_training(tiny_config(tiny, prepared, tmp_path / "stopped", **changes),
                           callbacks=[StopAfter(1)], **quiet)
    assert stopped.global_step == 1 and (tmp_path / "stopped" / "checkpoint-1").is_dir()
    assert not (tmp_path / "stopped" / "checkpoint-2").exists()
    # A fresh run into a folder with checkpoints is refused instead of overwriting them.
    with pytest.raises(ConfigError, match="already holds checkpoint-1"):
        run_training(tiny_config(tiny, prepared, tmp_path / "stopped", **changes), **quiet)
    resumed = run_training(tiny_config(tiny, prepared, tmp_path / "stopped",
                                       checkpoints__resume_from_checkpoint="latest", **changes), **quiet)
    assert resumed.global_step == 2

    expected, got = step_log(straight, 2), step_log(resumed, 2)
    for key in ("loss", "reward", "rewards/varied/mean", "rewards/remotereasoner_iou/mean", "kl",
                "completions/mean_length", "learning_rate", "grad_norm"):
        assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-9), key
    assert step_log(straight, 1)["reward"] != expected["reward"]  # step 2 saw other completions
    before, after = trainable(straight.trainer.model), trainable(resumed.trainer.model)
    assert before.keys() == after.keys()
    for name in before:
        assert torch.allclose(before[name], after[name], rtol=1e-5, atol=1e-7), name
    assert any(not torch.allclose(p, trainable(stopped.trainer.model)[n]) for n, p in after.items())
    return straight, stopped, resumed


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["lora", "full"])
def test_resume_after_a_stop_matches_an_uninterrupted_run(mode, tiny, prepared, tmp_path):
    # Two prompts per step over two records: each step is a whole epoch, so the resumed step 2
    # also checks that the shuffle order of epoch 1 is the uninterrupted run's.
    check_resume(tiny, prepared, tmp_path, dict(rewards=[{"name": "remotereasoner_iou"}, {"name": "varied"}],
                                                finetune__mode=mode, data__max_samples=2,
                                                optimization__per_device_batch_size=4))


class SeenPrompts:
    """A reward of 0 that notes the step, image and question of every completion it scores."""

    def __init__(self):
        self.calls = []

    def __call__(self, completion, *, trainer_state, image_id, question_index, question, **_):
        self.calls.append((trainer_state.global_step, image_id, question_index, question))
        return 0.0


def test_one_question_per_image_needs_an_image_per_prompt(tiny, prepared, tmp_path):
    # Three images, four prompts per generation batch: refused before any model loads.
    config = tiny_config(tiny, prepared, tmp_path / "run", data__questions="one_per_image_per_epoch",
                         optimization__per_device_batch_size=8)
    with pytest.raises(DatasetError, match=r"3 image\(s\), fewer than the 4 prompts"):
        run_training(config, custom_rewards=CUSTOM)


def test_records_keep_their_image_and_question(tiny, prepared, tmp_path):
    rows, _ = load_records(tiny_config(tiny, prepared, tmp_path / "run"))
    groups = image_groups(rows)
    assert groups.keys == ["empty", "multi", "ring"]
    assert [[rows[i]["question_index"] for i in members] for members in groups.members] == [[0], [0, 1], [0]]


def test_grasp_trains_on_one_object_per_mask_and_a_recipe_system_prompt(tiny, prepared, tmp_path):
    """GRASP Section 4.1: one box + two points per target mask; a paper config's own system prompt."""
    raw = tiny_raw(tiny, prepared, tmp_path / "run", profile="grasp", rewards="grasp",
                   system_prompt="Think first, then answer.")
    raw["data"].pop("image_min_pixels", None)
    raw["data"].pop("image_max_pixels", None)
    config = config_from_dict(raw, "grasp.yaml")
    rows, _ = load_records(config)
    multi = next(r for r in rows if r["image_id"] == "multi")
    assert len(json.loads(multi["gt_boxes"])) == 1  # the field and the lake together
    assert len(json.loads(multi["gt_points"])[0]) == 2
    item = build_dataset(rows, config)[0]
    assert item["prompt"][0] == {"role": "system", "content": [{"type": "text", "text": "Think first, then answer."}]}
    assert "'points 1'" in item["prompt"][1]["content"][1]["text"]


@pytest.mark.slow
def test_one_question_per_image_per_epoch_trains_and_resumes(tiny, prepared, tmp_path):
    # Four records on three images (two questions on "multi"); three prompts per step, so each
    # step is one epoch, and step 2 (resumed or not) is the next epoch.
    seen = SeenPrompts()
    changes = dict(rewards=[{"name": "remotereasoner_iou"}, {"name": "varied"}, {"name": "seen"}],
                   data__questions="one_per_image_per_epoch", optimization__per_device_batch_size=6)
    straight, _, _ = check_resume(tiny, prepared, tmp_path, changes, custom_rewards={**CUSTOM, "seen": seen})
    assert straight.global_step == 2
    runs = [[]]  # straight (steps 0, 1), then stopped (0) + resumed (1)
    for call in seen.calls:
        if runs[-1] and call[0] < runs[-1][-1][0]:
            runs.append([])
        runs[-1].append(call)
    assert len(runs) == 2 and runs[0] == runs[1]  # the resumed run asked what the straight one asked
    asked = {}
    for step in (0, 1):
        calls = [c for c in runs[0] if c[0] == step]
        assert len(calls) == 6 and calls[1::2] == calls[::2]  # two completions per prompt
        images = [c[1] for c in calls[::2]]
        assert sorted(images) == ["empty", "multi", "ring"]  # each image once, all of them
        asked[step] = {c[1]: c[2] for c in calls[::2]}
    assert asked[0]["multi"] != asked[1]["multi"]  # the next epoch asks the other question


# --------------------------------------------------------------------------- logs, export, serving

@pytest.fixture(scope="module")
def lora_run(tiny, prepared, tmp_path_factory):
    pytest.importorskip("tensorboard")
    out = tmp_path_factory.mktemp("lora-run")
    raw = tiny_raw(tiny, prepared, out / "run", rewards=[{"name": "remotereasoner_iou"}, {"name": "varied"}])
    raw["logging"]["report_to"] = ["tensorboard"]
    return run_training(config_from_dict(raw, "test.yaml"), custom_rewards=CUSTOM, print_plan=lambda _: None)


@pytest.mark.slow
def test_tensorboard_has_each_reward_and_completion_lengths(lora_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(lora_run.tensorboard_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("train/rewards/remotereasoner_iou/mean", "train/rewards/varied/mean", "train/reward",
                "train/completions/mean_length", "train/completions/max_length", "train/kl", "train/loss"):
        assert tag in tags, tag
    assert [e.step for e in events.Scalars("train/rewards/varied/mean")] == [1, 2]


@pytest.mark.slow
def test_exported_adapter_is_served_by_the_cascade(imagery, lora_run, tiny, tiny_sam, tmp_path, capsys):
    from georeasoner_plugin.backend.cascade import AskOptions, Cascade
    from georeasoner_plugin.backend.reasoner import Reasoner

    adapter = lora_run.final_dir
    out = tmp_path / "exported"
    assert cli.main(["export", str(adapter), "--out", str(out)]) == 0
    assert "merged" in capsys.readouterr().out
    assert (out / "model.safetensors").is_file() and (out / "processor_config.json").is_file()
    assert not (out / "adapter_config.json").exists()

    exported = Reasoner(str(out), device="cpu")
    on_base = Reasoner(str(tiny["reasoner"]), adapter=str(adapter), device="cpu")  # the loader's own merge
    base = base_weights(tiny["reasoner"])
    merged_state = exported.model.state_dict()
    for name, tensor in on_base.model.state_dict().items():
        assert torch.allclose(merged_state[name], tensor, atol=1e-6), name
    assert any(not torch.equal(merged_state[n], base[n]) for n in base if "language_model" in n)

    image = imagery.crop(imagery.naip, 300, 200, SIZE)
    cascade = Cascade(exported, tiny_sam, profile="georeasoner")
    result = cascade.run(image, "Where is water stored?", options=AskOptions(max_new_tokens=8, seed=1))
    assert result.answer.raw_output and result.answer.models["reasoner"] == str(out)
    assert result.answer.profile == "georeasoner"

    # Exporting again into the same folder needs --overwrite; a folder that is no run is named.
    assert cli.main(["export", str(adapter), "--out", str(out)]) == cli.EXIT_USAGE
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main(["export", str(tmp_path), "--out", str(tmp_path / "x")]) == cli.EXIT_USAGE
    assert "neither a LoRA adapter" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_train_smoke_with_overrides(tiny, prepared, tmp_path, capsys):
    out = tmp_path / "cli-run"
    code = cli.main(["train", str(TINY_CONFIG), "--set", f"model={tiny['reasoner']}", "--set", f"data.train={prepared}",
                     "--set", f"output_dir={out}", "--set", "optimization.max_steps=1", "--set",
                     f"data.image_max_pixels={SMALL_FRAME['image_max_pixels']}", "--set",
                     f"data.image_min_pixels={SMALL_FRAME['image_min_pixels']}", "--set", "logging.report_to=[none]"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "trained 1 step(s)" in captured.out and "rewards: remotereasoner_iou x1" in captured.out
    snapshot = yaml.safe_load((out / "config.yaml").read_text())
    assert snapshot["optimization"]["max_steps"] == 1 and snapshot["model"] == str(tiny["reasoner"])
    shutil.rmtree(out)
