"""Training data: the JSON lines of `training prepare` -> rows -> a datasets.Dataset in TRL's layout.

The prompt and the model-frame ground truth are derived here from the pixel-space ground truth and
the question, with the profile (and pixel bounds) of the config, so one prepared dataset trains any
profile. Images are read and resized to the model frame lazily, one sample at a time, exactly as
the cascade resizes them at inference; the processor's pixel bounds are pinned around the
dataset's frames so Qwen's own resize is the identity on them.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Optional

from georeasoner_plugin.core.frames import FrameError, FrameSpec
from georeasoner_plugin.core.profiles import Profile, get_profile

from .config import MASK_IOU_REWARD, TrainConfig
from .errors import ConfigError, DatasetError

logger = logging.getLogger("training.train")

DATA_PROBLEMS_FILE = "data_problems.txt"
PROBLEMS_SHOWN = 20


@dataclass
class DataProblem:
    where: str  # file:line
    detail: str


@dataclass
class DatasetReport:
    path: Path
    lines: int = 0
    used: int = 0
    problems: List[DataProblem] = field(default_factory=list)
    frame_pixels: Tuple[int, int] = (0, 0)  # smallest and largest frame, in pixels

    def describe(self) -> str:
        text = f"{self.path}: {self.used} record(s) used of {self.lines} line(s)"
        if self.problems:
            text += f", {len(self.problems)} skipped"
        return text


def frame_spec_for_profile(profile: Profile, min_pixels: Optional[int] = None,
                           max_pixels: Optional[int] = None) -> FrameSpec:
    """The profile's frame, with other pixel bounds where given."""
    spec = profile.frame
    if min_pixels is None and max_pixels is None:
        return spec
    return dataclasses.replace(spec, min_pixels=min_pixels if min_pixels is not None else spec.min_pixels,
                               max_pixels=max_pixels if max_pixels is not None else spec.max_pixels)


def frame_spec_for(config: TrainConfig) -> FrameSpec:
    """The profile's frame, with the config's pixel bounds where it sets them."""
    return frame_spec_for_profile(get_profile(config.profile), config.data.image_min_pixels,
                                  config.data.image_max_pixels)


def training_profile(config: TrainConfig) -> Profile:
    """The profile the prompts are written with; the config's system_prompt replaces the profile's."""
    profile = get_profile(config.profile)
    return dataclasses.replace(profile, system_prompt=config.system_prompt) if config.system_prompt else profile


def _round2(values) -> List[float]:
    return [round(float(v), 2) for v in values]


def ground_truth_in_frame(frame, boxes_px, points_px) -> Tuple[List[List[float]], List[List[List[float]]]]:
    """Pixel-space boxes and points in the model frame, as the rewards compare them (2 decimals)."""
    if any(not isinstance(b, (list, tuple)) or len(b) != 4 for b in boxes_px) or \
            any(not isinstance(p, (list, tuple)) or len(p) != 2 for pts in points_px for p in pts):
        raise ValueError("gt_boxes_px needs [x1, y1, x2, y2] per object and gt_points_px [x, y] per point")
    try:
        boxes = [_round2(frame.box_to_frame(b)) for b in boxes_px]
        points = [[_round2(frame.to_frame(*p)) for p in object_points] for object_points in points_px]
    except (TypeError, ValueError):
        raise ValueError("malformed ground truth in gt_boxes_px / gt_points_px") from None
    return boxes, points


def record_ground_truth(record: Mapping[str, Any], profile: Profile) -> Tuple[Any, Any]:
    """(boxes, points) in pixels that this profile trains on.

    GRASP (Section 4.1) trains on one box and two points per target mask (``mask_object_px``,
    written by training.prepare); the multi-object profiles on one per connected part.
    """
    from .mask_objects import uses_whole_mask_object

    if uses_whole_mask_object(profile.name) and "mask_object_px" in record:
        whole = record["mask_object_px"]
        if whole is None:
            return [], []
        if not isinstance(whole, dict) or "box" not in whole or "points" not in whole:
            raise ValueError("mask_object_px must be null or {\"box\": [...], \"points\": [...]}")
        return [whole["box"]], [whole["points"]]
    return record["gt_boxes_px"], record["gt_points_px"]


def _record_to_row(record: Mapping[str, Any], profile: Profile, spec: FrameSpec, need_mask: bool) -> Dict[str, Any]:
    """One training row from one prepared record; ValueError says what is wrong with it."""
    missing = [k for k in ("question", "image", "image_width", "image_height", "gt_boxes_px", "gt_points_px")
               if k not in record]
    if need_mask and "mask" not in record:
        missing.append("mask")
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)}")
    question = record["question"]
    if not isinstance(question, str) or not question.strip():
        raise ValueError("the question is empty")
    width, height = record["image_width"], record["image_height"]
    if isinstance(width, bool) or isinstance(height, bool) or not isinstance(width, int) \
            or not isinstance(height, int) or width <= 0 or height <= 0:
        raise ValueError(f"bad image size {width!r} x {height!r}")
    image = Path(str(record["image"]))
    if not image.is_file():
        raise ValueError(f"image not found: {image}")
    mask = Path(str(record.get("mask") or ""))
    if need_mask and not mask.is_file():
        raise ValueError(f"mask not found: {mask}")
    question_index = record.get("question_index")
    if isinstance(question_index, bool) or not isinstance(question_index, int):
        question_index = -1  # unknown: the file's order decides
    boxes_px, points_px = record_ground_truth(record, profile)
    if not isinstance(boxes_px, list) or not isinstance(points_px, list) or len(points_px) != len(boxes_px):
        raise ValueError("gt_boxes_px and gt_points_px must be lists with one entry per object")
    try:
        frame = spec.frame_for(width, height)
    except FrameError as exc:
        raise ValueError(str(exc)) from None
    boxes, points = ground_truth_in_frame(frame, boxes_px, points_px)
    return {
        "id": str(record.get("id", "")),
        # Questions on one image share it (records without an image_id are grouped by image file).
        "image_id": str(record.get("image_id") or image),
        "question_index": question_index,
        "question": " ".join(question.split()),
        "source_image": str(image),
        "mask": str(mask) if need_mask else str(record.get("mask") or ""),
        "image_width": width,
        "image_height": height,
        "frame_width": frame.frame_width,
        "frame_height": frame.frame_height,
        "profile": profile.name,
        # JSON text keeps the Arrow schema flat whatever the number of objects.
        "gt_boxes": json.dumps(boxes),
        "gt_points": json.dumps(points),
    }


def load_records(config: TrainConfig) -> Tuple[List[Dict[str, Any]], DatasetReport]:
    """Training rows from the prepared JSONL; bad lines are skipped and reported with file:line."""
    path = Path(config.data.train)
    if not path.is_file():
        raise DatasetError(f"{path}: prepared dataset not found (run `training prepare` first, or fix data.train)")
    profile = get_profile(config.profile)
    spec = frame_spec_for(config)
    need_mask = any(r.name == MASK_IOU_REWARD for r in config.rewards)
    report = DatasetReport(path)
    rows: List[Dict[str, Any]] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            report.lines += 1
            if config.data.max_samples is not None and len(rows) >= config.data.max_samples:
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError(f"a JSON {type(record).__name__}, not an object")
                rows.append(_record_to_row(record, profile, spec, need_mask))
            except ValueError as exc:
                report.problems.append(DataProblem(where, str(exc)))
    report.used = len(rows)
    if not rows:
        detail = f"; first problem: {report.problems[0].where}: {report.problems[0].detail}" if report.problems else ""
        raise DatasetError(f"{path}: no usable record ({report.lines} line(s), "
                           f"{len(report.problems)} problem(s)){detail}")
    pixels = [r["frame_width"] * r["frame_height"] for r in rows]
    report.frame_pixels = (min(pixels), max(pixels))
    return rows, report


@dataclass
class ImageGroups:
    """The rows of each image: ``members[i]`` are row indices of image ``keys[i]``, by question index."""
    keys: List[str]
    members: List[List[int]]

    @property
    def questions(self) -> int:
        return sum(len(m) for m in self.members)


def image_groups(rows: Sequence[Mapping[str, Any]]) -> ImageGroups:
    """Group rows by image_id, images in order of first appearance, each image's rows by question index."""
    by_image: Dict[str, List[int]] = {}
    for index, row in enumerate(rows):
        by_image.setdefault(str(row["image_id"]), []).append(index)
    members = [sorted(indices, key=lambda i: (rows[i]["question_index"], i)) for indices in by_image.values()]
    return ImageGroups(keys=list(by_image), members=members)


def frame_image(path: str, frame_width: int, frame_height: int, frame_kind: str):
    """The image as the model sees it: RGB, resized to the frame exactly as the cascade does."""
    import numpy as np
    from PIL import Image

    from georeasoner_plugin.backend.cascade import resize_to_frame

    with Image.open(path) as img:
        array = np.asarray(img.convert("RGB"))
    return resize_to_frame(array, frame_width, frame_height, frame_kind)


def build_dataset(rows: List[Dict[str, Any]], config: TrainConfig):
    """A datasets.Dataset whose items carry TRL's `prompt` and `image`, read from disk on access."""
    from datasets import Dataset

    profile = training_profile(config)
    kind = profile.frame.kind
    dataset = Dataset.from_list(rows)

    def materialise(batch: Dict[str, list]) -> Dict[str, list]:
        out = dict(batch)
        out["prompt"] = [profile.messages(q) for q in batch["question"]]
        out["image"] = [frame_image(p, w, h, kind) for p, w, h in
                        zip(batch["source_image"], batch["frame_width"], batch["frame_height"], strict=True)]
        out["gt_boxes"] = [json.loads(b) for b in batch["gt_boxes"]]
        out["gt_points"] = [json.loads(p) for p in batch["gt_points"]]
        return out

    dataset.set_transform(materialise)
    return dataset


_BOUND_ATTRIBUTES = ("size", "min_pixels", "max_pixels")


def pixel_bounds(image_processor) -> Dict[str, Any]:
    return {name: getattr(image_processor, name) for name in _BOUND_ATTRIBUTES if hasattr(image_processor, name)}


def set_pixel_bounds(image_processor, bounds: Mapping[str, Any]) -> None:
    for name, value in bounds.items():
        if hasattr(image_processor, name):
            setattr(image_processor, name, dict(value) if isinstance(value, dict) else value)


def pin_processor_frames(processor, report: DatasetReport, sample_row: Mapping[str, Any], config: TrainConfig) -> None:
    """Make the processor keep every frame of the dataset as it is, and check it on one sample."""
    low, high = report.frame_pixels
    image_processor = processor.image_processor
    set_pixel_bounds(image_processor, {"size": {"shortest_edge": int(low), "longest_edge": int(high)},
                                       "min_pixels": int(low), "max_pixels": int(high)})
    image = frame_image(sample_row["source_image"], sample_row["frame_width"], sample_row["frame_height"],
                        get_profile(config.profile).frame.kind)
    grid = image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0].tolist()
    patch = int(image_processor.patch_size)
    seen = (int(grid[2]) * patch, int(grid[1]) * patch)
    if seen != image.size:
        raise ConfigError(f"{config.source}: the processor resizes the {image.size[0]} x {image.size[1]} frame to "
                          f"{seen[0]} x {seen[1]}; rewards would compare coordinates of different frames")


def _main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def report_data_problems(report: DatasetReport, output_dir: Path) -> None:
    if not report.problems or not _main_process():
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    listing = output_dir / DATA_PROBLEMS_FILE
    listing.write_text("".join(f"{p.where}: {p.detail}\n" for p in report.problems), encoding="utf-8")
    shown = min(PROBLEMS_SHOWN, len(report.problems))
    logger.warning("%d record(s) skipped; the first %d:", len(report.problems), shown)
    for problem in report.problems[:PROBLEMS_SHOWN]:
        logger.warning("  %s: %s", problem.where, problem.detail)
    logger.warning("all of them: %s", listing)

