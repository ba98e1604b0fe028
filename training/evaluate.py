"""`training evaluate`: the papers' tables for any checkpoint, measured by the field's protocol.

    training evaluate --data DIR --split val|test --model M [--adapter A] [--segmenter S] --profile P
                      --tasks region,pixel,contour --out DIR [--resolution original|letterbox1024|resize840]
                      [--questions first|seeded-random|all] [--seed N] [--limit N] [--recorded FILE.jsonl]
                      [--resegment] [--tolerance-kernel disc|square]

Protocol (printed with every result, see also README "Evaluation"):
- Samples: every sample of the split. Tiny targets are targets (no minimum area); a sample whose
  label and QA answer disagree is scored with the label as the target (listed in
  OUT/prepared/<split>_summary.md); a sample that cannot be read at all (image or label
  unreadable, sizes differ) counts as an error in the report. --questions picks one question per image
  (first: SegEarth-R1's rule; seeded-random: Think2Seg-RS's rule, with our own seeded draw) or
  all of them.
- The cascade runs on each image at its own size, as the product does: the model sees its
  profile's frame, SAM2 segments the image. Predicted and target masks are then brought to the
  --resolution grid by the same nearest-neighbour resize (original; letterbox1024: longest side
  to 1024 and padded, SegEarth-R1; resize840: 840 x 840, Think2Seg-RS). Box metrics are invariant
  to that per-axis scaling and are computed in image pixels.
- The target mask is the label as published (every non-zero pixel); target boxes are its
  8-connected parts, however small.
- Contours are the outermost boundary of each component (holes do not count); exactly one empty
  mask gives ASD = HD = the evaluation grid's diagonal (training.metrics).
- --recorded replays saved outputs: "raw_output" (parsed as the model's answer) and/or
  "mask_png" (a saved mask scored as the prediction, no segmenter needed); a samples.jsonl line's
  own saved mask is reused unless --resegment.
- An answer that cannot be parsed (parse status invalid or no_answer), or a sample the cascade
  refused (status error), is an empty prediction: it is scored, never skipped. An empty
  prediction on an empty target scores 1 (LISA). training.metrics holds the exact definitions.

Outputs in OUT: samples.jsonl (one line per sample, appended as it is scored; a rerun skips the
ids already there and recomputes every summary from the file), results.md / results.csv /
results.json (the tables and the protocol), overlays/ (best and worst samples), prepared/.
"""
from __future__ import annotations

import csv
import datetime as dt
import importlib.util
import io
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

from georeasoner_plugin.core.profiles import PROFILES, UnknownProfileError, get_profile
from georeasoner_plugin.core.protocol import PARSE_EMPTY, PARSE_OK, PARSE_PARTIAL, MaskRLE

from .cli import EXIT_FAILED, EXIT_OK, UserError
from .metrics import (BOUNDARY_TOLERANCES, PRECISION_THRESHOLDS, TOLERANCE_KERNELS, UNPARSEABLE_STATUSES,
                      ContourScores, MetricAccumulator, RegionScores, SampleMetrics, as_mask, region_scores,
                      summary_markdown)
from .prepare import SPLITS, DatasetError, prepare_split

TASKS = ("region", "pixel", "contour")
RESOLUTIONS = {
    "original": "each image at its own size",
    "letterbox1024": "longest side resized to 1024 and padded to 1024 x 1024 (SegEarth-R1)",
    "resize840": "resized to 840 x 840, aspect ratio not kept (Think2Seg-RS)",
}
QUESTION_RULES = {
    "first": "the first question of each image (SegEarth-R1)",
    "seeded-random": "one question per image drawn with a seeded random generator (Think2Seg-RS's rule, "
                     "our own draw)",
    "all": "every question of every image",
}
ENGINES = ("auto", "transformers", "vllm")
LETTERBOX_SIDE = 1024
FIXED_SIDE = 840
STATUS_ERROR = "error"  # the cascade refused the sample (e.g. an image beyond its size limit)
SAMPLES_FILE = "samples.jsonl"
RUN_FILE = "run.json"
OVERLAY_SIDE = 768
DEFAULT_OVERLAYS = 6
DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_NEW_TOKENS = 1024
MISSING_SHOWN = 5
# What a rerun into the same OUT must share with the run that wrote samples.jsonl.
RESUME_KEYS = ("data", "split", "profile", "model", "adapter", "segmenter", "tasks", "resolution", "questions",
               "seed", "max_new_tokens", "temperature", "tolerance_kernel")
# Evaluation scores every target, however small (prepare's training default drops specks).
EVAL_MIN_AREA = 1
TOLERANCE_READINGS = {
    "disc": "a boundary pixel matches within Euclidean distance <= 1 or 3 px of the other boundary "
            "(pixel centres)",
    "square": "a boundary pixel matches within a (2t+1) x (2t+1) square kernel, chessboard distance <= 1 or 3 px",
}


# --------------------------------------------------------------------------- options

@dataclass
class EvalOptions:
    data: str
    split: str
    profile: str
    out: str
    model: Optional[str] = None
    adapter: Optional[str] = None
    segmenter: Optional[str] = None
    tasks: Tuple[str, ...] = TASKS
    resolution: str = "original"
    questions: str = "first"
    seed: int = 0
    limit: Optional[int] = None
    recorded: Optional[str] = None
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.0
    batch_size: int = DEFAULT_BATCH_SIZE
    overlays: int = DEFAULT_OVERLAYS
    engine: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    progress: bool = True
    resegment: bool = False
    tolerance_kernel: str = "disc"

    @property
    def needs_masks(self) -> bool:
        return "pixel" in self.tasks or "contour" in self.tasks

    @property
    def model_label(self) -> str:
        if self.model:
            return self.model
        if self.recorded:
            return f"recorded:{Path(self.recorded).name}"
        return get_profile(self.profile).default_checkpoint or "?"

    def protocol(self) -> Dict[str, object]:
        return {
            "data": str(Path(self.data).resolve()),
            "split": self.split,
            "profile": self.profile,
            "model": self.model_label,
            "adapter": self.adapter,
            "segmenter": self.segmenter if self.needs_masks else None,
            "tasks": list(self.tasks),
            "resolution": self.resolution,
            "questions": self.questions,
            "seed": self.seed,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "tolerance_kernel": self.tolerance_kernel,
        }


def parse_tasks(text: str) -> Tuple[str, ...]:
    tasks = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise UserError(f"--tasks takes a comma-separated list of {', '.join(TASKS)}; got {text!r}")
    return tuple(t for t in TASKS if t in tasks)


# --------------------------------------------------------------------------- samples

@dataclass
class PreparedSplit:
    records_path: Path
    summary_path: Path
    skipped: int  # malformed dataset samples left out
    key: Dict[str, object]  # what the records depend on

    def to_json(self) -> dict:
        return {"records": str(self.records_path), "summary": str(self.summary_path), "skipped": self.skipped,
                "key": self.key}


def prepare_samples(options: EvalOptions, previous_run: dict) -> PreparedSplit:
    """The split as training.prepare reads it; a resumed run reuses what its first run prepared."""
    question_mode = "sample" if options.questions == "seeded-random" else "all"
    key = {"data": str(Path(options.data).resolve()), "split": options.split, "profile": options.profile,
           "questions": question_mode, "seed": options.seed, "min_area": EVAL_MIN_AREA, "keep_disagreeing": True}
    cached = previous_run.get("prepared") or {}
    if cached.get("key") == key and Path(cached.get("records", "")).is_file():
        # Reading every label again would cost minutes on the test split; the run is a snapshot.
        print(f"using the split prepared by the first run: {cached['records']}", file=sys.stderr)
        return PreparedSplit(Path(cached["records"]), Path(cached["summary"]), int(cached["skipped"]), key)
    try:
        result = prepare_split(options.data, Path(options.out) / "prepared", split=options.split,
                               profile=options.profile, questions=question_mode, seed=options.seed,
                               min_area=EVAL_MIN_AREA, keep_disagreeing=True)
    except DatasetError as exc:
        raise UserError(str(exc)) from None
    return PreparedSplit(result.records_path, result.summary_path, sum(p.skipped for p in result.problems), key)


def select_samples(options: EvalOptions, prepared: PreparedSplit) -> List[dict]:
    """The records to evaluate, in dataset order, by the question rule (before --limit)."""
    records = [json.loads(line) for line in prepared.records_path.read_text(encoding="utf-8").splitlines() if line]
    if options.questions == "first":
        first: Dict[str, dict] = {}
        for record in records:
            kept = first.get(record["image_id"])
            if kept is None or record["question_index"] < kept["question_index"]:
                first[record["image_id"]] = record
        records = [r for r in records if first[r["image_id"]] is r]
    return records


def load_rgb(path: str) -> np.ndarray:
    with Image.open(path) as img:
        return np.array(img.convert("RGB"))  # writable: torch warns about read-only arrays


def load_label(path: str) -> np.ndarray:
    with Image.open(path) as img:
        return as_mask(np.asarray(img))


# --------------------------------------------------------------------------- evaluation grid

def to_evaluation_grid(mask: np.ndarray, resolution: str) -> np.ndarray:
    """The mask on the grid the scores are measured on (same transform for prediction and target)."""
    mask = as_mask(mask)
    if resolution == "original":
        return mask
    if resolution == "resize840":
        return _resize_nearest(mask, FIXED_SIDE, FIXED_SIDE)
    if resolution == "letterbox1024":
        height, width = mask.shape
        scale = LETTERBOX_SIDE / max(height, width)
        new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
        # Padding at the bottom and right: where it goes changes no score (it is background in
        # both masks, and the image border already counts as outside for boundaries).
        grid = np.zeros((LETTERBOX_SIDE, LETTERBOX_SIDE), dtype=bool)
        grid[:new_height, :new_width] = _resize_nearest(mask, new_width, new_height)
        return grid
    raise ValueError(f"unknown resolution {resolution!r}")


def _resize_nearest(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    if mask.shape == (height, width):
        return mask
    # INTER_NEAREST_EXACT samples at pixel centres (as Pillow's NEAREST does); plain INTER_NEAREST
    # is shifted by half a pixel, which moves boundaries and costs IoU on small objects.
    return cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST_EXACT).astype(bool)


# --------------------------------------------------------------------------- per-sample scores

def score_sample(record: dict, parse_status: str, pred_mask: Optional[np.ndarray], gt_mask: Optional[np.ndarray],
                 pred_boxes: Sequence, options: EvalOptions) -> SampleMetrics:
    gt_boxes = record["gt_boxes_px"]
    if options.needs_masks:
        accumulator = MetricAccumulator(with_contours="contour" in options.tasks,
                                        tolerance_kernel=options.tolerance_kernel)
        gt = to_evaluation_grid(gt_mask, options.resolution)
        pred = None if pred_mask is None else to_evaluation_grid(pred_mask, options.resolution)
        return accumulator.add(record["id"], pred, gt, pred_boxes, gt_boxes, parse_status)
    # Boxes only: "empty" means no box, so no-target accuracy still means something.
    if parse_status in UNPARSEABLE_STATUSES:
        pred_boxes = ()
    region = region_scores(pred_boxes, gt_boxes)
    return SampleMetrics(sample_id=record["id"], parse_status=parse_status, intersection=0, union=0, iou=1.0,
                         gt_empty=not record["has_target"], pred_empty=region.pred_count == 0, region=region,
                         contour=None)


def scores_to_json(sample: SampleMetrics, with_masks: bool) -> dict:
    scores: Dict[str, object] = {"gt_empty": sample.gt_empty, "pred_empty": sample.pred_empty,
                                 "region": asdict(sample.region)}
    if with_masks:
        scores["pixel"] = {"iou": sample.iou, "intersection": sample.intersection, "union": sample.union}
    if sample.contour is not None:
        scores["contour"] = {"f1": {f"{t:g}": v for t, v in sample.contour.f1.items()},
                             "assd": sample.contour.assd, "hd": sample.contour.hd,
                             "one_empty": sample.contour.one_empty}
    return scores


def sample_from_json(line: dict) -> SampleMetrics:
    scores = line["scores"]
    pixel = scores.get("pixel") or {"iou": 1.0, "intersection": 0, "union": 0}
    contour = scores.get("contour")
    return SampleMetrics(
        sample_id=line["id"], parse_status=line["parse_status"],
        intersection=int(pixel["intersection"]), union=int(pixel["union"]), iou=float(pixel["iou"]),
        gt_empty=bool(scores["gt_empty"]), pred_empty=bool(scores["pred_empty"]),
        region=RegionScores(**scores["region"]),
        contour=None if contour is None else ContourScores(
            {int(float(k)) if float(k).is_integer() else float(k): v for k, v in contour["f1"].items()},
            contour["assd"], contour["hd"], bool(contour.get("one_empty", False))),
    )


def rle_to_json(mask: np.ndarray) -> dict:
    from georeasoner_plugin.backend.vectorize import mask_to_rle

    return mask_to_rle(mask).to_dict()


def rle_from_json(data: Optional[dict]) -> Optional[np.ndarray]:
    if data is None:
        return None
    from georeasoner_plugin.backend.vectorize import rle_to_mask

    return rle_to_mask(MaskRLE.from_dict(data))


# --------------------------------------------------------------------------- samples.jsonl

class SampleLog:
    """samples.jsonl: read what is there (dropping a line cut off by an interruption), append as we go."""

    def __init__(self, path: Path):
        self.path = path
        self.lines: Dict[str, dict] = {}
        self.dropped_partial = False
        if path.exists():
            self._read()

    def _read(self) -> None:
        data = self.path.read_bytes()
        # Each line is written with its newline in one call: bytes after the last newline are a line
        # whose write was interrupted, and are cut off so that the next append starts cleanly.
        complete = data[:data.rfind(b"\n") + 1]
        for number, raw in enumerate(complete.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                sample_id = line["id"]
            except (ValueError, KeyError, TypeError) as exc:
                raise UserError(f"{self.path}:{number} is not a sample line ({exc}); move the file away to "
                                "start over") from None
            self.lines.setdefault(sample_id, line)
        if len(complete) < len(data):
            self.dropped_partial = True
            with open(self.path, "r+b") as handle:
                handle.truncate(len(complete))

    def append(self, line: dict) -> None:
        text = json.dumps(line, ensure_ascii=False, allow_nan=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        self.lines[line["id"]] = line


@dataclass
class RecordedSample:
    """One line of a --recorded file: the model's raw output and/or a saved prediction mask."""

    raw_output: Optional[str] = None
    mask_png: Optional[Path] = None  # a PNG of the image's size, 0 = background
    saved_mask: Optional[dict] = None  # the RLE a samples.jsonl line carries ("pred_mask")
    pred_boxes_px: Optional[list] = None  # boxes given with a mask-only line


def read_recorded(path: str) -> Dict[str, RecordedSample]:
    """{sample id: RecordedSample} from a JSON-lines file (samples.jsonl qualifies).

    Each line holds "id" and "raw_output", "mask_png" or both. A relative "mask_png" is relative to
    the JSON-lines file. A samples.jsonl line's "pred_mask" (RLE) is kept for reuse.
    """
    samples: Dict[str, RecordedSample] = {}
    base = Path(path).resolve().parent
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--recorded {path}: {getattr(exc, 'strerror', None) or exc}") from None
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
            sample_id = line["id"]
            if line.get("raw_output") is None and line.get("mask_png") is None \
                    and not isinstance(line.get("pred_mask"), dict):
                raise KeyError("raw_output")
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{path}:{number}: each line must be a JSON object with \"id\" and \"raw_output\" "
                            "and/or \"mask_png\"") from None
        mask_png = line.get("mask_png")
        if mask_png is not None:
            mask_png = Path(str(mask_png))
            mask_png = mask_png if mask_png.is_absolute() else base / mask_png
            if not mask_png.is_file():
                raise UserError(f"{path}:{number}: mask_png {mask_png} does not exist (a relative path is "
                                f"relative to {base})")
        output = line.get("raw_output")
        saved = line.get("pred_mask")
        boxes = line.get("pred_boxes_px")
        samples[str(sample_id)] = RecordedSample(
            raw_output=None if output is None else str(output),  # None: a saved mask is the whole prediction
            mask_png=mask_png, saved_mask=saved if isinstance(saved, dict) else None,
            pred_boxes_px=boxes if isinstance(boxes, list) else None)
    return samples


def load_mask_png(path: Path, shape: Tuple[int, int]) -> np.ndarray:
    """A saved prediction: 0 = background, anything else = target; must have the image's size."""
    try:
        with Image.open(path) as img:
            mask = as_mask(np.asarray(img))
    except (OSError, ValueError) as exc:
        raise UserError(f"mask_png {path}: cannot be read as an image ({exc})") from None
    if mask.shape != tuple(shape):
        raise UserError(f"mask_png {path} is {mask.shape[1]} x {mask.shape[0]} pixels, the image is "
                        f"{shape[1]} x {shape[0]}; save the mask at the image's size")
    return mask


def saved_prediction(entry: Optional[RecordedSample], shape: Tuple[int, int],
                     options: "EvalOptions") -> Tuple[Optional[np.ndarray], Optional[str]]:
    """(saved mask, where it came from) when the sample's mask need not be segmented again."""
    if entry is None:
        return None, None
    mask_only = entry.raw_output is None  # the mask is the whole prediction: needed for its boxes too
    if not options.needs_masks and not mask_only:
        return None, None
    if entry.mask_png is not None:
        return load_mask_png(entry.mask_png, shape), "mask_png"
    if entry.saved_mask is not None and (mask_only or not options.resegment):
        mask = rle_from_json(entry.saved_mask)
        if mask.shape != tuple(shape):
            raise UserError(f"a saved pred_mask is {mask.shape[1]} x {mask.shape[0]}, the image {shape[1]} x "
                            f"{shape[0]}; rerun with --resegment")
        return mask, "saved"
    return None, None


def mask_component_boxes(mask: np.ndarray) -> List[List[float]]:
    """Boxes of a mask's 8-connected parts (protocol convention), for a mask given without boxes."""
    binary = as_mask(mask).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8, ltype=cv2.CV_32S)
    return [[float(x), float(y), float(x + w), float(y + h)] for x, y, w, h, _ in stats[1:count]]


# --------------------------------------------------------------------------- generation engines

def vllm_usable() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


class VllmGenerator:
    """Batched generation with vLLM (needs a CUDA GPU); the cascade then replays each output.

    Not exercised by the tests (no GPU here). The image is resized to the profile's frame first,
    as the cascade would, and vLLM's processor bounds are opened wide so that its own smart
    resize leaves a frame (sides already multiples of 28) exactly as it is.
    """

    def __init__(self, model: str, adapter: Optional[str], options: EvalOptions):
        from transformers import AutoProcessor
        from vllm import LLM, SamplingParams

        from georeasoner_plugin.backend.models import resolve_adapter_dir, resolve_model_dir
        from georeasoner_plugin.core.frames import QWEN_PATCH_FACTOR

        model_dir = resolve_model_dir(model)
        self.processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
        self.llm = LLM(model=str(model_dir), trust_remote_code=False, limit_mm_per_prompt={"image": 1},
                       enable_lora=adapter is not None, seed=options.seed,
                       mm_processor_kwargs={"min_pixels": QWEN_PATCH_FACTOR ** 2,
                                            "max_pixels": 16384 * QWEN_PATCH_FACTOR ** 2})
        self.lora = None
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, str(resolve_adapter_dir(adapter)))
        self.sampling = SamplingParams(max_tokens=options.max_new_tokens, temperature=options.temperature,
                                       seed=options.seed)
        self.name = f"vLLM {model}"

    def generate_batch(self, images: List[np.ndarray], questions: List[str], profile) -> List[str]:
        # The cascade's own resize: the frame the answer's numbers refer to must be exactly its frame.
        from georeasoner_plugin.backend.cascade import _resize_to_frame

        prompts = []
        for image, question in zip(images, questions):
            height, width = image.shape[:2]
            frame = profile.frame.frame_for(width, height)
            model_image = _resize_to_frame(image, frame.frame_width, frame.frame_height, profile.frame.kind)
            text = self.processor.apply_chat_template(profile.messages(question), tokenize=False,
                                                      add_generation_prompt=True)
            prompts.append({"prompt": text, "multi_modal_data": {"image": model_image}})
        outputs = self.llm.generate(prompts, self.sampling, lora_request=self.lora, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]


# --------------------------------------------------------------------------- the run

@dataclass
class EvalResult:
    out: Path
    summary: Dict[str, object]
    samples: int
    newly_scored: int
    results_markdown: str


def evaluate(options: EvalOptions) -> EvalResult:
    out = Path(options.out)
    try:
        profile = get_profile(options.profile)
    except UnknownProfileError as exc:
        raise UserError(str(exc)) from None
    if not options.recorded and not options.model and not profile.default_checkpoint:
        raise UserError(f"profile {profile.name} has no published checkpoint; pass --model (hub id or folder)")
    if options.needs_masks and not options.segmenter:
        from georeasoner_plugin.backend.cli import DEFAULT_SEGMENTER

        options.segmenter = DEFAULT_SEGMENTER
    out.mkdir(parents=True, exist_ok=True)
    previous_run = _read_run_file(out)
    _check_resumable(out, options, previous_run)

    prepared = prepare_samples(options, previous_run)
    records = select_samples(options, prepared)
    selected = records[:options.limit] if options.limit is not None else records
    log = SampleLog(out / SAMPLES_FILE)
    if log.dropped_partial:
        print(f"note: dropped a sample line cut off by an interruption in {log.path}", file=sys.stderr)
    todo = [r for r in selected if r["id"] not in log.lines]
    recorded = read_recorded(options.recorded) if options.recorded else None
    if recorded is not None:
        missing = [r["id"] for r in todo if r["id"] not in recorded]
        if missing:
            shown = ", ".join(missing[:MISSING_SHOWN]) + (" ..." if len(missing) > MISSING_SHOWN else "")
            raise UserError(f"--recorded {options.recorded} has no output for {len(missing)} sample(s): {shown}")

    print(f"{len(selected)} sample(s) selected ({options.questions} question rule); "
          f"{len(selected) - len(todo)} already in {log.path.name}, {len(todo)} to go", file=sys.stderr)
    engine = previous_run.get("engine")
    # Written before any sample, so that an interrupted run is only ever resumed with its own options.
    _write_run_file(out, options, engine, prepared)
    if todo:
        engine = _run_samples(todo, options, profile, log, recorded)
        _write_run_file(out, options, engine, prepared)
    result = write_reports(out, options, selected, log, prepared, engine)
    result.newly_scored = len(todo)
    return result


def _read_run_file(out: Path) -> dict:
    try:
        run = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return run if isinstance(run, dict) else {}


def _check_resumable(out: Path, options: EvalOptions, previous_run: dict) -> None:
    samples_file = out / SAMPLES_FILE
    if not samples_file.exists() or not previous_run:
        return
    previous, current = previous_run.get("protocol") or {}, options.protocol()
    differing = [k for k in RESUME_KEYS if previous.get(k) != current.get(k)]
    if differing:
        details = "; ".join(f"{k}: {previous.get(k)!r} there, {current.get(k)!r} now" for k in differing)
        raise UserError(f"{out} holds samples of a run with other options ({details}); use another --out, "
                        f"or move {samples_file.name} away to start over")


def _write_run_file(out: Path, options: EvalOptions, engine: Optional[str], prepared: PreparedSplit) -> None:
    run = {"protocol": options.protocol(), "engine": engine, "prepared": prepared.to_json()}
    _write_atomically(out / RUN_FILE, json.dumps(run, indent=2) + "\n")


def _load_models(options: EvalOptions, needs_reasoner: bool, needs_segmenter: bool = True):
    """(reasoner or None, vLLM generator or None, segmenter or None, engine description)."""
    from georeasoner_plugin.backend.models import ModelLoadError

    reasoner = generator = segmenter = None
    engine = "recorded outputs"
    model = options.model or get_profile(options.profile).default_checkpoint
    try:
        if needs_reasoner:
            use_vllm = options.engine == "vllm" or (options.engine == "auto" and vllm_usable())
            if options.engine == "vllm" and not vllm_usable():
                raise UserError("--engine vllm needs the vllm package and a CUDA GPU; use --engine transformers")
            if use_vllm:
                generator = VllmGenerator(model, options.adapter, options)
                engine = f"vLLM, batches of {options.batch_size}"
            else:
                from georeasoner_plugin.backend.reasoner import Reasoner

                reasoner = Reasoner(model, adapter=options.adapter, device=options.device, dtype=options.dtype)
                # Reasoner serialises calls on one model, so samples run one after another.
                engine = f"transformers on {reasoner.device} ({str(reasoner.dtype).removeprefix('torch.')}), " \
                         "one sample at a time"
        if options.needs_masks and needs_segmenter:
            from georeasoner_plugin.backend.segmenter import Segmenter

            segmenter = Segmenter(options.segmenter, device=options.device, dtype=options.dtype)
    except ModelLoadError as exc:
        raise UserError(str(exc)) from None
    return reasoner, generator, segmenter, engine


def _needs_segmentation(entry: Optional[RecordedSample], options: EvalOptions) -> bool:
    if not options.needs_masks or entry is None:
        return options.needs_masks
    if entry.raw_output is None:  # a saved mask only: nothing to segment
        return False
    return entry.mask_png is None and (entry.saved_mask is None or options.resegment)


def _mask_only_answer(entry: RecordedSample, mask: np.ndarray) -> dict:
    """A line for a saved mask without a raw output: the mask is the prediction."""
    boxes = entry.pred_boxes_px if entry.pred_boxes_px is not None else mask_component_boxes(mask)
    return {"raw_output": None, "parse_status": PARSE_OK if mask.any() else PARSE_EMPTY, "parse_problems": [],
            "reasoning": "", "warnings": [], "pred_boxes_px": [list(b) for b in boxes], "pred_points_px": []}


def _run_samples(todo: List[dict], options: EvalOptions, profile, log: SampleLog,
                 recorded: Optional[Dict[str, RecordedSample]]) -> str:
    from tqdm import tqdm

    from georeasoner_plugin.backend.cascade import AskOptions, Cascade, CascadeError

    needs_segmenter = any(_needs_segmentation(recorded.get(r["id"]) if recorded else None, options) for r in todo)
    reasoner, generator, segmenter, engine = _load_models(options, needs_reasoner=recorded is None,
                                                          needs_segmenter=needs_segmenter)
    cascade = Cascade(reasoner=reasoner, segmenter=segmenter, profile=profile.name)
    granularities = ("boxes", "points", "masks") if options.needs_masks else ("boxes", "points")
    ask_options = AskOptions(granularities=granularities, max_new_tokens=options.max_new_tokens,
                             temperature=options.temperature, seed=options.seed)
    boxes_only = AskOptions(granularities=("boxes", "points"), max_new_tokens=options.max_new_tokens,
                            temperature=options.temperature, seed=options.seed)
    batch_size = options.batch_size if generator is not None else 1
    images: Dict[str, np.ndarray] = {}
    failures = 0
    bar = tqdm(total=len(todo), unit="sample", desc="evaluate", file=sys.stderr, dynamic_ncols=True,
               disable=not options.progress, smoothing=0.1)
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            started = time.perf_counter()
            batch_images = [_cached_image(images, r["image"]) for r in batch]
            if recorded is not None:
                outputs: List[Optional[str]] = [recorded[r["id"]].raw_output for r in batch]
            elif generator is not None:
                outputs = generator.generate_batch(batch_images, [r["question"] for r in batch], profile)
            else:
                outputs = [None] * len(batch)  # the cascade's own reasoner generates
            generation_share = (time.perf_counter() - started) / len(batch)
            for record, image, raw_output in zip(batch, batch_images, outputs):
                sample_started = time.perf_counter()
                entry = recorded.get(record["id"]) if recorded is not None else None
                saved_mask, mask_source = saved_prediction(entry, image.shape[:2], options)
                try:
                    if entry is not None and raw_output is None:  # a saved mask only
                        if saved_mask is None:
                            raise UserError(f"--recorded: sample {record['id']} has a saved mask but no raw_output "
                                            "to segment again; drop --resegment or give its raw_output")
                        line_answer = _mask_only_answer(entry, saved_mask)
                        pred_mask = saved_mask
                    else:
                        result = cascade.ask(image, record["question"], raw_output=raw_output,
                                             options=boxes_only if saved_mask is not None else ask_options)
                        answer = result.answer
                        line_answer = {
                            "raw_output": answer.raw_output, "parse_status": answer.parse_status,
                            "parse_problems": list(answer.parse_problems), "reasoning": answer.reasoning,
                            "warnings": list(answer.warnings),
                            "pred_boxes_px": [list(o.box) for o in answer.objects if o.box is not None],
                            "pred_points_px": [[list(p) for p in o.points] for o in answer.objects],
                        }
                        if saved_mask is not None:
                            pred_mask = saved_mask
                        else:
                            pred_mask = result.union_mask(*image.shape[:2]) if result.masks else None
                            mask_source = "segmenter" if options.needs_masks else None
                except CascadeError as exc:
                    line_answer = {"raw_output": raw_output or "", "parse_status": STATUS_ERROR,
                                   "parse_problems": [str(exc)], "reasoning": "", "warnings": [],
                                   "pred_boxes_px": [], "pred_points_px": []}
                    pred_mask = None
                gt_mask = load_label(record["mask"]) if options.needs_masks else None
                sample = score_sample(record, line_answer["parse_status"], pred_mask, gt_mask,
                                      line_answer["pred_boxes_px"], options)
                if sample.parse_status in UNPARSEABLE_STATUSES + (STATUS_ERROR,):
                    failures += 1
                    pred_mask = None  # scored as empty; keep the file consistent with the score
                log.append({
                    "id": record["id"], "image_id": record["image_id"], "question_index": record["question_index"],
                    "question": record["question"], **line_answer,
                    "has_target": record["has_target"], "gt_boxes_px": record["gt_boxes_px"],
                    "pred_mask": rle_to_json(pred_mask) if pred_mask is not None and options.needs_masks else None,
                    "mask_source": mask_source,
                    "scores": scores_to_json(sample, options.needs_masks),
                    "seconds": round(generation_share + time.perf_counter() - sample_started, 3),
                    "scored_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds"),
                })
                bar.set_postfix(unparseable=failures, refresh=False)
                bar.update(1)
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted: {len(log.lines)} sample(s) are saved in {log.path}; rerun the same command to go on",
              file=sys.stderr)
        raise
    bar.close()
    return engine


def _cached_image(cache: Dict[str, np.ndarray], path: str) -> np.ndarray:
    # Records of one image are consecutive (--questions all): keep only the current image.
    if path not in cache:
        cache.clear()
        cache[path] = load_rgb(path)
    return cache[path]


# --------------------------------------------------------------------------- reports

# (task, summary key, column header, unit): the columns of the papers' tables.
COLUMNS: Tuple[Tuple[str, str, str, str], ...] = (
    ("region", "box_acc@0.5", "Acc@0.5", "%"),
    ("region", "box_acc@0.5_strict", "Acc@0.5 strict", "%"),
    ("region", "box_miou", "box mIoU", "%"),
    ("region", "union_box_iou", "union-box IoU", "%"),
    ("region", "union_box_acc@0.5", "union-box Acc@0.5", "%"),
    ("pixel", "ciou", "cIoU", "%"),
    ("pixel", "giou", "gIoU", "%"),
    *(("pixel", f"precision@{t:g}", f"P@{t:g}", "%") for t in PRECISION_THRESHOLDS),
    ("pixel", "no_target_accuracy", "no-target acc.", "%"),
    *(("contour", f"boundary_f1@{t:g}", f"F1@{t:g}", "%") for t in BOUNDARY_TOLERANCES),
    ("contour", "assd", "ASD (px)", "px"),
    ("contour", "hd", "HD (px)", "px"),
)
TASK_TITLES = {"region": "Region (boxes)", "pixel": "Pixel (masks)", "contour": "Contour (mask boundaries)"}
COMMON_KEYS = ("samples", "target_samples", "no_target_samples", "parse_status", "unparseable")
CONTOUR_COUNT_KEYS = ("distance_samples", "distance_one_empty")


def task_summary(accumulator: MetricAccumulator, tasks: Sequence[str]) -> Dict[str, object]:
    full = accumulator.summary()
    keys = list(COMMON_KEYS)
    if "pixel" not in tasks and "region" in tasks:
        keys.append("no_target_accuracy")  # measured on boxes: no box on an empty target
    keys += [key for task, key, _, _ in COLUMNS if task in tasks]
    if "contour" in tasks:
        keys += CONTOUR_COUNT_KEYS
    summary = {k: full.get(k) for k in dict.fromkeys(keys)}
    summary["errors"] = sum(1 for s in accumulator.samples if s.parse_status == STATUS_ERROR)
    return summary


def _format(value, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.2f}" if unit == "%" else f"{value:.2f}"


def failure_kind(status: str, problems: Sequence[str]) -> str:
    """The problem that decided a parse status, without its specifics, so that like counts with like.

    An unusable answer is decided by the parser's last word on it; a partial one by its first
    dropped item (the tag complaints before it do not make an answer partial).
    """
    if not problems:
        return "(no detail)"
    decisive = problems[0] if status == PARSE_PARTIAL else problems[-1]
    text = re.sub(r"^object \d+: ", "", str(decisive)).split(": ")[0].split("; ")[0]
    return re.sub(r"\b\d+(\.\d+)?\b", "N", text).strip()


def parse_failures(lines: Iterable[dict]) -> List[Tuple[str, str, int, str]]:
    """(status, kind, samples, first sample id) for every answer that was not fully read."""
    groups: Dict[Tuple[str, str], List[str]] = {}
    for line in lines:
        if line["parse_status"] in (PARSE_OK, PARSE_EMPTY):
            continue
        kind = failure_kind(line["parse_status"], line.get("parse_problems", []))
        groups.setdefault((line["parse_status"], kind), []).append(line["id"])
    rows = [(status, kind, len(ids), ids[0]) for (status, kind), ids in groups.items()]
    return sorted(rows, key=lambda r: (-r[2], r[0], r[1]))


def _mask_sources(lines) -> str:
    counts: Dict[str, int] = {}
    for line in lines:
        source = line.get("mask_source")
        if source:
            counts[source] = counts.get(source, 0) + 1
    names = {"segmenter": "segmented", "mask_png": "from mask_png", "saved": "reused from samples.jsonl"}
    return ", ".join(f"{n} {names.get(k, k)}" for k, n in sorted(counts.items())) or "none"


def write_reports(out: Path, options: EvalOptions, selected: List[dict], log: SampleLog, prepared: PreparedSplit,
                  engine: Optional[str]) -> EvalResult:
    lines = [log.lines[r["id"]] for r in selected if r["id"] in log.lines]
    accumulator = MetricAccumulator(with_contours="contour" in options.tasks)
    accumulator.samples = [sample_from_json(line) for line in lines]
    summary = task_summary(accumulator, options.tasks)
    # Samples of the split that could not be read at all: errors of the run, never silently gone.
    summary["unreadable"] = prepared.skipped
    failures = parse_failures(lines)
    overlay_files = write_overlays(out / "overlays", options, selected, lines)
    protocol = protocol_rows(options, prepared, selected, lines, log, engine)

    markdown = results_markdown(options, summary, failures, protocol, overlay_files)
    _write_atomically(out / "results.md", markdown)
    _write_atomically(out / "results.csv", results_csv(options, summary))
    _write_atomically(out / "results.json", json.dumps(
        {"protocol": dict(protocol), "summary": summary,
         "parse_failures": [dict(zip(("status", "kind", "samples", "example"), f)) for f in failures]},
        indent=2, allow_nan=False) + "\n")
    return EvalResult(out, summary, len(lines), 0, markdown)


def protocol_rows(options: EvalOptions, prepared: PreparedSplit, selected, lines, log: SampleLog,
                  engine: Optional[str]) -> List[Tuple[str, str]]:
    profile = get_profile(options.profile)
    images = len({r["image_id"] for r in selected})
    skipped = prepared.skipped
    rows = [
        ("data", f"{Path(options.data).resolve()} ({options.split})"),
        ("model", options.model_label + (f" + adapter {options.adapter}" if options.adapter else "")),
        ("profile", f"{profile.name}: {profile.title}; model frame: {profile.frame.describe()}"),
        ("segmenter", options.segmenter if options.needs_masks else "not used (region task only)"),
        ("generation", (f"{engine or 'n/a'}; max_new_tokens {options.max_new_tokens}, temperature "
                        f"{options.temperature:g}, seed {options.seed}")),
        ("tasks", ", ".join(options.tasks)),
        ("evaluation resolution", f"{options.resolution}: {RESOLUTIONS[options.resolution]}"
                                  + ("; box metrics in image pixels (scale-invariant)" if "region" in options.tasks
                                     else "")),
        ("question rule", f"{options.questions}: {QUESTION_RULES[options.questions]}"
                          + (f", seed {options.seed}" if options.questions == "seeded-random" else "")),
        ("samples", f"{len(lines)} scored of {len(selected)} selected ({images} image(s)); every sample of the "
                    "split is scored, tiny targets included (no minimum area), label deciding where it and the QA "
                    "answer disagree"
                    + (f"; --limit {options.limit}" if options.limit is not None else "")
                    + (f"; {skipped} sample(s) could not be read and count as ERRORS, see {prepared.summary_path}"
                       if skipped else "")),
        ("empty target", "an empty prediction on an empty target scores 1 (IoU, box scores, F1; distances 0)"),
        ("target boxes", "one per 8-connected part of the label, however small; matched one-to-one (Hungarian)"),
        ("contours", "outermost boundary of each mask component (RemoteReasoner Section 3.4; holes do not "
                     "count); F1@1/F1@3 tolerance: " + TOLERANCE_READINGS[options.tolerance_kernel]
                     + f" (--tolerance-kernel {options.tolerance_kernel})"),
        ("one mask empty", "exactly one of prediction and target empty: F1 0, ASD = HD = the evaluation grid's "
                           "diagonal; such samples are counted (distance_one_empty), never left out"),
        ("masks", _mask_sources(lines) if options.needs_masks else "not used"),
        ("parse failures", ("an unparseable answer (invalid, no_answer) or a refused sample (error) is an "
                            "empty prediction, scored and never skipped")),
    ]
    extra = len(log.lines) - len(lines)
    if extra:
        rows.append(("not summarised", f"{extra} line(s) of {SAMPLES_FILE} are outside this selection"))
    return rows


def results_markdown(options: EvalOptions, summary: Dict[str, object], failures, protocol, overlay_files) -> str:
    profile = options.profile
    out = [f"# EarthReason {options.split}: {options.model_label} ({profile})", "",
           "## Protocol", "", "| option | value |", "|---|---|"]
    out += [f"| {key} | {_escape(value)} |" for key, value in protocol]
    out += ["", "## Results", "", "Shares in %, distances in pixels of the evaluation grid.", ""]
    for task in TASKS:
        if task not in options.tasks:
            continue
        columns = [c for c in COLUMNS if c[0] == task]
        out += [f"### {TASK_TITLES[task]}", "",
                "| model | profile | " + " | ".join(c[2] for c in columns) + " |",
                "|---|---|" + "---|" * len(columns),
                (f"| {_escape(options.model_label)} | {profile} | "
                 + " | ".join(_format(summary.get(c[1]), c[3]) for c in columns) + " |"), ""]
    if "contour" in options.tasks:
        out += [(f"ASD and HD average all {summary.get('distance_samples')} sample(s); "
                 f"{summary.get('distance_one_empty')} of them have exactly one empty mask and are scored with the "
                 "evaluation grid's diagonal (F1 0 there)."), ""]
    statuses = summary.get("parse_status") or {}
    out += ["## Parse status", "", "| status | samples |", "|---|---|"]
    out += [f"| {status} | {count} |" for status, count in statuses.items()]
    out += ["", f"## Parse failures by kind ({sum(f[2] for f in failures)})", ""]
    if failures:
        out += ["| status | kind | samples | example |", "|---|---|---|---|"]
        out += [f"| {s} | {_escape(k)} | {n} | {_escape(i)} |" for s, k, n, i in failures]
    else:
        out.append("none")
    out += ["", "## Overlays", ""]
    if overlay_files:
        out.append("green: target outline; red: predicted mask; yellow: predicted boxes; cyan: target boxes.")
        out += [f"- [{name}](overlays/{name})" for name in overlay_files]
    else:
        out.append("none")
    out += ["", "## All numbers", "", summary_markdown(summary)]
    return "\n".join(out)


def results_csv(options: EvalOptions, summary: Dict[str, object]) -> str:
    columns = [c for c in COLUMNS if c[0] in options.tasks]
    header = ["model", "adapter", "profile", "split", "resolution", "questions", "seed", "samples", "unparseable",
              "errors", "unreadable"] + [c[2] for c in columns]
    row = [options.model_label, options.adapter or "", options.profile, options.split, options.resolution,
           options.questions, options.seed, summary["samples"], summary["unparseable"], summary["errors"],
           summary.get("unreadable", 0)]
    row += ["" if summary.get(c[1]) is None else _format(summary[c[1]], c[3]) for c in columns]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerow(row)
    return buffer.getvalue()


def _escape(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


# --------------------------------------------------------------------------- overlays

def ranking_score(line: dict) -> float:
    scores = line["scores"]
    if "pixel" in scores:
        return float(scores["pixel"]["iou"])
    return float(scores["region"]["miou"])


def write_overlays(folder: Path, options: EvalOptions, selected: List[dict], lines: List[dict]) -> List[str]:
    """best_NN_*.png and worst_NN_*.png; earlier overlays are replaced, the ranking may have changed."""
    if folder.exists():
        for old in list(folder.glob("best_*.png")) + list(folder.glob("worst_*.png")):
            old.unlink()
    if options.overlays <= 0 or not lines:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    records = {r["id"]: r for r in selected}
    ranked = sorted(lines, key=lambda line: (-ranking_score(line), line["id"]))
    best = ranked[:options.overlays]
    best_ids = {line["id"] for line in best}
    worst = [line for line in reversed(ranked) if line["id"] not in best_ids][:options.overlays]
    written = []
    for kind, chosen in (("best", best), ("worst", worst)):
        for rank, line in enumerate(chosen, start=1):
            record = records[line["id"]]
            image = load_rgb(record["image"])
            gt_mask = load_label(record["mask"])
            caption = (f"{line['id']}  score {ranking_score(line):.3f}  parse {line['parse_status']}")
            overlay = render_overlay(image, gt_mask, rle_from_json(line.get("pred_mask")), line["pred_boxes_px"],
                                     line["gt_boxes_px"], caption)
            name = f"{kind}_{rank:02d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', line['id'])}.png"
            Image.fromarray(overlay).save(folder / name)
            written.append(name)
    return written


def render_overlay(image: np.ndarray, gt_mask: np.ndarray, pred_mask: Optional[np.ndarray], pred_boxes, gt_boxes,
                   caption: str) -> np.ndarray:
    height, width = image.shape[:2]
    scale = OVERLAY_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    canvas = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR).astype(float)
    pred = None
    if pred_mask is not None:
        pred = _resize_nearest(as_mask(pred_mask), *size)
        canvas[pred] = 0.55 * canvas[pred] + 0.45 * np.array([255, 40, 40])
    canvas = canvas.astype(np.uint8)
    if pred is not None:
        outline, _ = cv2.findContours(pred.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, outline, -1, (255, 40, 40), 1)
    gt = _resize_nearest(as_mask(gt_mask), *size).astype(np.uint8)
    contours, _ = cv2.findContours(gt, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(canvas, contours, -1, (40, 230, 40), 2)
    # Predictions thick, targets thin on top: a perfect box still shows both.
    for boxes, colour, thickness in ((pred_boxes, (255, 220, 0), 3), (gt_boxes, (40, 220, 230), 1)):
        for box in boxes:
            x1, y1, x2, y2 = (round(v * scale) for v in box)
            cv2.rectangle(canvas, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), colour, thickness)
    bar = np.full((26, canvas.shape[1], 3), 30, dtype=np.uint8)
    cv2.putText(bar, caption[:110], (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, canvas], axis=0)


# --------------------------------------------------------------------------- command line

def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="score a checkpoint on EarthReason by the papers' protocol",
        description="Run the cascade over an EarthReason split and write results.md/.csv/.json (the papers' "
                    "tables with the protocol), samples.jsonl, overlays of the best and worst samples. "
                    "Rerunning into the same --out resumes.")
    p.add_argument("--data", required=True, metavar="DIR", help="EarthReason root (holds train/, val/, test/)")
    p.add_argument("--split", choices=SPLITS, default="test")
    p.add_argument("--model", metavar="M", help="reasoner: hub id or folder (default: the profile's checkpoint)")
    p.add_argument("--adapter", metavar="A", help="LoRA adapter on top of --model")
    p.add_argument("--segmenter", metavar="S", help="SAM2 hub id or folder for the pixel and contour tasks "
                                                    "(default: the backend's, facebook/sam2.1-hiera-large)")
    p.add_argument("--profile", required=True, choices=sorted(PROFILES), help="prompt profile of the model")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated: region, pixel, contour (default all)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder; rerunning into it resumes")
    p.add_argument("--resolution", choices=tuple(RESOLUTIONS), default="original",
                   help="grid the masks are scored on: " + "; ".join(f"{k}: {v}" for k, v in RESOLUTIONS.items()))
    p.add_argument("--questions", choices=tuple(QUESTION_RULES), default="first",
                   help="question per image: " + "; ".join(f"{k}: {v}" for k, v in QUESTION_RULES.items()))
    p.add_argument("--seed", type=int, default=0, help="seed of --questions seeded-random and of sampling")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N selected samples")
    p.add_argument("--recorded", metavar="FILE.jsonl",
                   help="replay recorded outputs instead of running the reasoner: per line {\"id\", \"raw_output\"} "
                        "and/or \"mask_png\" (a saved mask PNG of the image's size, 0 = background, relative to the "
                        "file); a samples.jsonl qualifies and its saved masks are reused")
    p.add_argument("--resegment", action="store_true",
                   help="with --recorded samples.jsonl: run the segmenter again instead of reusing saved masks")
    p.add_argument("--tolerance-kernel", choices=TOLERANCE_KERNELS, default="disc",
                   help="how F1@1/F1@3 read the tolerance: " + "; ".join(f"{k}: {v}" for k, v in
                                                                        TOLERANCE_READINGS.items()))
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="generation: auto = vLLM when installed and a CUDA GPU is present, else transformers")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="prompts per vLLM call")
    p.add_argument("--overlays", type=int, default=DEFAULT_OVERLAYS, metavar="N",
                   help=f"overlay PNGs of the N best and N worst samples (default {DEFAULT_OVERLAYS}; 0: none)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto", help="auto, bfloat16, float16, float32")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be at least 1")
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if not 1 <= args.max_new_tokens <= 8192:
        raise UserError("--max-new-tokens must be between 1 and 8192")
    if not 0.0 <= args.temperature <= 2.0:
        raise UserError("--temperature must be between 0 and 2")
    options = EvalOptions(
        data=args.data, split=args.split, profile=args.profile, out=args.out, model=args.model,
        adapter=args.adapter, segmenter=args.segmenter, tasks=parse_tasks(args.tasks), resolution=args.resolution,
        questions=args.questions, seed=args.seed, limit=args.limit, recorded=args.recorded,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, batch_size=args.batch_size,
        overlays=args.overlays, engine=args.engine, device=args.device, dtype=args.dtype,
        progress=not args.no_progress, resegment=args.resegment, tolerance_kernel=args.tolerance_kernel)
    result = evaluate(options)
    print(result.results_markdown.split("\n## Overlays")[0].rstrip())
    print(f"\nscored {result.newly_scored} new sample(s); wrote results.md, results.csv, results.json, "
          f"{SAMPLES_FILE} ({result.samples} sample(s)) and overlays/ in {result.out}")
    if result.samples == 0:
        print("training: error: no sample was evaluated; see the dataset problems in "
              f"{result.out / 'prepared'}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
