"""Which samples are evaluated and what is read for them: the prepared split, the question rule, the
evaluation grid, samples.jsonl (resume) and the --recorded outputs and saved masks."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
from PIL import Image

from ..errors import OptionError
from ..metrics import as_mask
from ..prepare import prepare_split
from .options import EVAL_MIN_AREA, EvalOptions
from .scores import rle_from_json

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
    result = prepare_split(options.data, Path(options.out) / "prepared", split=options.split,
                           profile=options.profile, questions=question_mode, seed=options.seed,
                           min_area=EVAL_MIN_AREA, keep_disagreeing=True)
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
                raise OptionError(f"{self.path}:{number} is not a sample line ({exc}); move the file away to "
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
        raise OptionError(f"--recorded {path}: {getattr(exc, 'strerror', None) or exc}") from None
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
            raise OptionError(f"{path}:{number}: each line must be a JSON object with \"id\" and \"raw_output\" "
                            "and/or \"mask_png\"") from None
        mask_png = line.get("mask_png")
        if mask_png is not None:
            mask_png = Path(str(mask_png))
            mask_png = mask_png if mask_png.is_absolute() else base / mask_png
            if not mask_png.is_file():
                raise OptionError(f"{path}:{number}: mask_png {mask_png} does not exist (a relative path is "
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
        raise OptionError(f"mask_png {path}: cannot be read as an image ({exc})") from None
    if mask.shape != tuple(shape):
        raise OptionError(f"mask_png {path} is {mask.shape[1]} x {mask.shape[0]} pixels, the image is "
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
            raise OptionError(f"a saved pred_mask is {mask.shape[1]} x {mask.shape[0]}, the image {shape[1]} x "
                            f"{shape[0]}; rerun with --resegment")
        return mask, "saved"
    return None, None


def mask_component_boxes(mask: np.ndarray) -> List[List[float]]:
    """Boxes of a mask's 8-connected parts (protocol convention), for a mask given without boxes."""
    binary = as_mask(mask).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8, ltype=cv2.CV_32S)
    return [[float(x), float(y), float(x + w), float(y + h)] for x, y, w, h, _ in stats[1:count]]
