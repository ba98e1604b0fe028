"""Training and evaluation on a Qwen3-VL base (issue 12), with the tiny random Qwen3-VL and SAM 3 tracker.

GRPO runs 2 steps with the shipped Qwen3-VL config (georeasoner-qwen3 profile: 0-1000 frame), stops
and resumes to the same step 2, exports the adapter merged into a standalone Qwen3-VL folder that the
cascade answers with; `training evaluate --profile qwen3` runs live on the tiny model and scores a
recorded 0-1000 answer by hand. Data: EarthReason-shaped crops of the sample GeoTIFFs.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("trl")
rasterio = pytest.importorskip("rasterio")

from PIL import Image  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from georeasoner_plugin.core.parsing import ParsedObject  # noqa: E402
from georeasoner_plugin.core.profiles import get_profile  # noqa: E402
from training import cli  # noqa: E402
from training.prepare import prepare_split  # noqa: E402
from training.config import config_from_dict, load_config  # noqa: E402
from training.errors import ConfigError  # noqa: E402
from training.policy import load_policy  # noqa: E402
from training.train import run_training  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
NAIP = DATA / "naip_nd_2020.tif"
CONFIG = ROOT / "training" / "configs" / "qwen3vl-lora-1x24gb.yaml"
SIZE = 224
# 224 x 224 crops: a 224 x 224 qwen3 frame (7 x 7 merged patches of 32 px) within these bounds.
SMALL_FRAME = {"image_min_pixels": 128 * 128, "image_max_pixels": 224 * 224}
LAKE = (40, 40, 140, 120)  # x1, y1, x2, y2 of the drawn target (pixels)


def varied(completion, **_):
    """Share of distinct characters: deterministic and different between completions (random weights
    score 0 on the paper rewards, which leaves GRPO nothing to learn from)."""
    from training.rewards import completion_text

    text = completion_text(completion)
    return len(set(text)) / max(1, len(text))


class StopAfter(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def crop_rgb(col, row):
    with rasterio.open(NAIP) as src:
        window = rasterio.windows.Window(col, row, SIZE, SIZE)
        return np.transpose(src.read([1, 2, 3], window=window), (1, 2, 0)).copy()


@pytest.fixture(scope="module")
def earthreason(tmp_path_factory):
    """A val/train split of two images: a lake (a drawn box) and no target."""
    if not NAIP.exists():
        pytest.skip(f"sample imagery not found at {DATA} (../shared/data beside the project)")
    root = tmp_path_factory.mktemp("earthreason")
    lake = np.zeros((SIZE, SIZE), np.uint8)
    lake[LAKE[1]:LAKE[3], LAKE[0]:LAKE[2]] = 255
    samples = {"lake": (crop_rgb(300, 200), lake, ["Which lake could water the fields?"], "the lake"),
               "empty": (crop_rgb(600, 400), np.zeros((SIZE, SIZE), np.uint8), ["Where is the airport?"], "")}
    for split in ("train", "val"):
        for name in ("images", "labels", "QAs"):
            (root / split / name).mkdir(parents=True)
        for image_id, (rgb, mask, questions, answer) in samples.items():
            Image.fromarray(rgb).save(root / split / "images" / f"{image_id}.png")
            Image.fromarray(mask).save(root / split / "labels" / f"{image_id}.png")
            (root / split / "QAs" / f"{image_id}.json").write_text(json.dumps({"questions": questions,
                                                                                "answer": answer}))
    return root


@pytest.fixture(scope="module")
def prepared(earthreason, tmp_path_factory):
    result = prepare_split(earthreason, tmp_path_factory.mktemp("prepared"), split="train",
                           profile="georeasoner-qwen3")
    assert result.records == 2
    return result.records_path


def qwen3_config(tiny_qwen3_models, prepared, output_dir, **changes):
    """The shipped Qwen3-VL config, shrunk to two CPU steps on the tiny model."""
    raw = yaml.safe_load(CONFIG.read_text())
    raw.update(model=str(tiny_qwen3_models["reasoner_qwen3"]), output_dir=str(output_dir))
    raw["data"].update(train=str(prepared), **SMALL_FRAME)
    raw["rewards"] = raw["rewards"] + [{"name": "varied", "weight": 1.0}]
    raw["generation"].update(num_generations=2, max_completion_length=8)
    raw["optimization"].update(learning_rate=1e-3, max_steps=2, per_device_batch_size=2,
                               gradient_accumulation_steps=1, bf16=False, gradient_checkpointing=False)
    raw["optimization"].pop("epochs", None)
    raw["finetune"]["lora_dropout"] = 0.0
    raw["checkpoints"] = {"save_steps": 1}
    raw["logging"] = {"logging_steps": 1, "report_to": ["none"]}
    raw.update(changes)
    return config_from_dict(raw, "qwen3-test.yaml")


def step_log(result, step):
    return next(entry for entry in result.log_history if entry.get("step") == step and "loss" in entry)


def test_shipped_qwen3_config_is_valid():
    config = load_config(CONFIG)
    assert config.profile == "georeasoner-qwen3" and config.model.startswith("Qwen/Qwen3-VL-")
    assert config.finetune.mode == "lora" and (config.finetune.lora_r, config.finetune.lora_alpha) == (8, 16)
    assert config.optimization.learning_rate == pytest.approx(1e-6)
    assert {r.name for r in config.rewards} >= {"remotereasoner_iou", "grasp_points", "answer_schema"}


def test_a_profile_of_another_family_is_refused(tiny_qwen3_models, prepared, tmp_path):
    config = qwen3_config(tiny_qwen3_models, prepared, tmp_path / "run", profile="georeasoner")
    with pytest.raises(ConfigError, match="another model family.*qwen3"):
        load_policy(config)


@pytest.mark.slow
def test_two_steps_resume_export_and_answer(tiny_qwen3_models, prepared, tmp_path):
    from georeasoner_plugin.backend.cascade import AskOptions, Cascade
    from georeasoner_plugin.backend.reasoner import Reasoner
    from georeasoner_plugin.backend.segmenter import Segmenter

    quiet = {"custom_rewards": {"varied": varied}, "print_plan": lambda _: None}
    straight = run_training(qwen3_config(tiny_qwen3_models, prepared, tmp_path / "straight"), **quiet)
    assert straight.global_step == 2
    assert type(straight.trainer.model.base_model.model).__name__ == "Qwen3VLForConditionalGeneration"
    for step in (1, 2):
        logged = step_log(straight, step)
        assert np.isfinite(logged["loss"]) and "rewards/remotereasoner_iou/mean" in logged
    adapted = {n: p for n, p in straight.trainer.model.named_parameters() if p.requires_grad}
    assert adapted and all("lora_" in n and ".language_model." in n for n in adapted)

    stopped = run_training(qwen3_config(tiny_qwen3_models, prepared, tmp_path / "stopped"),
                           callbacks=[StopAfter(1)], **quiet)
    assert stopped.global_step == 1 and (tmp_path / "stopped" / "checkpoint-1").is_dir()
    resumed = run_training(qwen3_config(tiny_qwen3_models, prepared, tmp_path / "stopped",
                                        checkpoints={"save_steps": 1, "resume_from_checkpoint": "latest"}), **quiet)
    assert resumed.global_step == 2
    for key in ("loss", "reward", "rewards/varied/mean", "kl", "completions/mean_length"):
        assert step_log(resumed, 2)[key] == pytest.approx(step_log(straight, 2)[key], rel=1e-5, abs=1e-9), key

    out = tmp_path / "exported"
    assert cli.main(["export", str(straight.final_dir), "--out", str(out)]) == 0
    exported = Reasoner(str(out), device="cpu")
    assert exported.family.name == "Qwen3-VL" and exported.frame_factor == 32
    segmenter = Segmenter(str(tiny_qwen3_models["segmenter_sam3"]), device="cpu")
    result = Cascade(exported, segmenter, profile="georeasoner-qwen3").run(
        crop_rgb(300, 200), "Where is water stored?", options=AskOptions(max_new_tokens=8, seed=1))
    assert result.answer.raw_output and result.answer.models["reasoner"] == str(out)


def _evaluate(root, out, *extra):
    return cli.main(["evaluate", "--data", str(root), "--split", "val", "--profile", "qwen3", "--out", str(out),
                     "--device", "cpu", "--no-progress", *extra])


def test_evaluate_profile_qwen3_on_the_tiny_model(earthreason, tiny_qwen3_models, tmp_path, capsys):
    out = tmp_path / "live"
    assert _evaluate(earthreason, out, "--model", str(tiny_qwen3_models["reasoner_qwen3"]), "--max-new-tokens", "12",
                     "--segmenter", str(tiny_qwen3_models["segmenter_sam3"])) == 0
    assert "| cIoU | gIoU |" in capsys.readouterr().out
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == ["val/empty/q0", "val/lake/q0"]
    assert all(isinstance(line["raw_output"], str) for line in lines)
    assert json.loads((out / "results.json").read_text())["summary"]["samples"] == 2


def test_evaluate_scores_a_recorded_qwen3_answer_by_hand(earthreason, tiny_qwen3_models, tmp_path):
    # The lake box (40, 40, 140, 120) of a 224 x 224 image in the 0-1000 frame: x / 224 * 1000.
    frame = get_profile("qwen3").frame.frame_for(SIZE, SIZE)
    box = frame.box_to_frame(LAKE)
    assert box == pytest.approx((178.571, 178.571, 625.0, 535.714), abs=1e-3)
    answers = {"val/lake/q0": get_profile("qwen3").render_answer([ParsedObject(box=box, label="lake")]),
               "val/empty/q0": "```json\n[]\n```"}
    recorded = tmp_path / "recorded.jsonl"
    recorded.write_text("".join(json.dumps({"id": k, "raw_output": v}) + "\n" for k, v in answers.items()))
    out = tmp_path / "recorded"
    assert _evaluate(earthreason, out, "--recorded", str(recorded),
                     "--segmenter", str(tiny_qwen3_models["segmenter_sam3"])) == 0
    lines = {line["id"]: line for line in map(json.loads, (out / "samples.jsonl").read_text().splitlines())}
    assert lines["val/lake/q0"]["parse_status"] == "ok" and lines["val/empty/q0"]["parse_status"] == "empty"
    # Rounded to whole 0-1000 units, the box lands within 0.12 px of the target: IoU > 0.99, a hit.
    region = lines["val/lake/q0"]["scores"]["region"]
    assert region["acc50"] == 1.0 and region["miou"] > 0.99
    assert lines["val/empty/q0"]["scores"]["region"]["acc50"] == 1.0
