"""EarthReason -> a JSON-lines dataset of questions with boxes, GRASP points and contours.

EarthReason as published: ``<root>/<split>/images/<id>.jpg|png``, ``labels/<id>.png`` (non-zero =
target; one region mask per image, not instances) and ``QAs/<id>.json`` holding ``"questions"`` (a
list) and ``"answer"`` (empty = nothing in the image matches).

Mask -> objects, two ways, both written to every record:
- ``mask_object_px`` (GRASP Section 4.1, Fig. 5): ONE box and two points for the whole target
  mask. The box is the extreme foreground pixels of the mask; the profiles in
  WHOLE_MASK_PROFILES (GRASP) train on it.
- ``gt_boxes_px`` / ``gt_points_px``: one object per 8-connected component of at least
  ``min_area`` pixels (pixels touching at a corner belong to one object), the way the
  multi-object methods (RemoteReasoner, Seg-Zero, Think2Seg-RS) train.
Boxes are pixel extents in protocol convention (corners: x2 = last column + 1). The two positive
points follow GRASP Section 4.1, at pixel centres (col + 0.5, row + 0.5):
  1. p1, the centre of the maximal inscribed circle: the pixel deepest inside the mask by the
     Euclidean distance transform (pixels beyond the image count as outside). Ties: the tied
     pixel nearest to the centroid of all tied pixels, then the first in row-major order.
  2. p2, sampled from the "outer ring": the mask pixels farther than the circle's radius from p1,
     drawn uniformly with a generator seeded by (seed, split, image id), so a rerun writes the same
     points. When no pixel lies beyond the circle, the boundary pixel farthest from p1 (then
     row-major), the paper's fallback.
- contours: polygons with holes on pixel corners (backend.vectorize, the cascade's own tracer).

Coordinates are written twice: in image pixels (``*_px``) and in the profile's model frame (what the
model reads and writes, and what the rewards compare). Each record also carries the chat prompt and
the ground truth rendered in the profile's answer format.
"""
from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np
from PIL import Image

from georeasoner_plugin.core.files import atomic_write_text
from georeasoner_plugin.core.frames import FrameError
from georeasoner_plugin.core.parsing import ParsedObject
from georeasoner_plugin.core.profiles import Profile, get_profile

from .errors import DatasetError
from .mask_objects import (DEFAULT_MIN_AREA, MaskObject, grasp_points, mask_objects, point_generator,  # noqa: F401
                           uses_whole_mask_object, whole_mask_object)
from .rewards import DEFAULT_TRAINING_PROFILE

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
PREPARED_QUESTIONS = ("all", "sample")
COORDINATE_DECIMALS = 2
@dataclass(frozen=True)
class Problem:
    file: str
    kind: str
    detail: str
    skipped: bool = True  # False: noted, the sample was still used


# --------------------------------------------------------------------------- reading EarthReason

def _round(values: Iterable[float]) -> List[float]:
    return [round(float(v), COORDINATE_DECIMALS) for v in values]


def answer_says_no_target(answer: Any) -> bool:
    if answer is None:
        return True
    if isinstance(answer, str):
        return not answer.strip()
    if isinstance(answer, (list, tuple, dict)):
        return len(answer) == 0
    return False


def check_layout(data_root: Path, split: str) -> Dict[str, Path]:
    """The split's images/, labels/ and QAs/ folders; DatasetError naming the first bad path."""
    if not data_root.exists():
        raise DatasetError(f"dataset root {data_root} does not exist")
    if not data_root.is_dir():
        raise DatasetError(f"dataset root {data_root} is not a folder")
    split_dir = data_root / split
    if not split_dir.is_dir():
        found = ", ".join(sorted(p.name for p in data_root.iterdir() if p.is_dir())) or "no folders"
        raise DatasetError(f"{split_dir} is missing: an EarthReason root holds train/, val/ and test/ "
                           f"(found {found})")
    folders = {name: split_dir / name for name in ("images", "labels", "QAs")}
    for name, folder in folders.items():
        if not folder.is_dir():
            raise DatasetError(f"{folder} is missing: EarthReason's {split}/ holds images/, labels/ and QAs/")
    return folders


def _files_by_id(folder: Path, extensions: Tuple[str, ...], problems: List[Problem]) -> Dict[str, Path]:
    found: Dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in extensions:
            continue
        if path.stem in found:
            problems.append(Problem(str(path), "duplicate id",
                                    f"same id as {found[path.stem].name}; {found[path.stem].name} is used",
                                    skipped=False))
            continue
        found[path.stem] = path
    return found


def _read_qa(path: Path) -> Tuple[Optional[dict], Optional[Problem]]:
    try:
        with open(path, encoding="utf-8") as handle:
            qa = json.load(handle)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, Problem(str(path), "bad QA json", f"{type(exc).__name__}: {exc}")
    if not isinstance(qa, dict):
        return None, Problem(str(path), "bad QA json", f"top level is a {type(qa).__name__}, not an object")
    questions = qa.get("questions")
    if not isinstance(questions, list):
        return None, Problem(str(path), "no questions", "no \"questions\" list")
    if "answer" not in qa:
        return None, Problem(str(path), "no answer", "no \"answer\" key (an empty answer means no target)")
    return qa, None


def _read_image_size(path: Path) -> Tuple[Optional[Tuple[int, int]], Optional[Problem]]:
    try:
        with Image.open(path) as img:
            img.load()  # headers can be fine while the pixels are truncated
            return img.size, None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken files
        return None, Problem(str(path), "image unreadable", f"{type(exc).__name__}: {exc}")


def _read_mask(path: Path) -> Tuple[Optional[np.ndarray], Optional[Problem]]:
    try:
        with Image.open(path) as img:
            array = np.asarray(img)
    except Exception as exc:  # noqa: BLE001
        return None, Problem(str(path), "label unreadable", f"{type(exc).__name__}: {exc}")
    if array.ndim == 3:
        array = array.any(axis=2)
    if array.ndim != 2:
        return None, Problem(str(path), "label unreadable", f"unexpected array shape {array.shape}")
    return array != 0, None


# --------------------------------------------------------------------------- records

def build_records(image_id: str, split: str, image_path: Path, mask_path: Path, qa_path: Path, qa: dict,
                  size: Tuple[int, int], objects: List[MaskObject], profile: Profile,
                  question_mode: str, seed: int,
                  whole: Optional[MaskObject] = None) -> Tuple[List[dict], List[Problem]]:
    width, height = size
    problems: List[Problem] = []
    frame = profile.frame.frame_for(width, height)
    questions = []
    for index, question in enumerate(qa["questions"]):
        if isinstance(question, str) and question.strip():
            questions.append((index, " ".join(question.split())))
        else:
            problems.append(Problem(str(qa_path), "bad question",
                                    f"question {index} is not a non-empty string: {question!r}", skipped=False))
    if question_mode == "sample" and questions:
        # Seeded per image, so the choice does not depend on which other files are present.
        questions = [random.Random(f"{seed}:{split}:{image_id}").choice(questions)]

    trained = ([whole] if whole is not None else []) if uses_whole_mask_object(profile.name) else objects
    boxes_frame = [_round(frame.box_to_frame(o.box)) for o in trained]
    points_frame = [[_round(frame.to_frame(*p)) for p in o.points] for o in trained]
    solution = profile.render_answer(
        [ParsedObject(box=tuple(b), points=[tuple(p) for p in pts]) for b, pts in zip(boxes_frame, points_frame)])
    common = {
        "split": split,
        "image_id": image_id,
        "image": str(image_path.resolve()),
        "mask": str(mask_path.resolve()),
        "image_width": width,
        "image_height": height,
        "profile": profile.name,
        "frame_width": frame.frame_width,
        "frame_height": frame.frame_height,
        "has_target": bool(objects),
        "answer": qa.get("answer"),
        "gt_boxes": boxes_frame,
        "gt_points": points_frame,
        "gt_boxes_px": [_round(o.box) for o in objects],
        "gt_points_px": [[_round(p) for p in o.points] for o in objects],
        "object_areas_px": [o.area for o in objects],
        "contours_px": [o.polygons for o in objects],
        "mask_object_px": None if whole is None else {
            "box": _round(whole.box), "points": [_round(p) for p in whole.points], "area": whole.area,
            "inscribed_radius": round(whole.inscribed_radius, COORDINATE_DECIMALS)},
        "solution": solution,
    }
    records = []
    for index, question in questions:
        records.append({"id": f"{split}/{image_id}/q{index}", "question_index": index, "question": question,
                        "prompt": profile.messages(question), **common})
    return records, problems


@dataclass
class PrepareResult:
    records_path: Path
    summary_path: Path
    records: int
    summary_markdown: str
    problems: List[Problem] = field(default_factory=list)
    stats: Dict[str, Any] = field(default_factory=dict)


def prepare_split(data_root, out_dir, split: str = "train", profile: str = DEFAULT_TRAINING_PROFILE,
                  min_area: int = DEFAULT_MIN_AREA, questions: str = "all", seed: int = 0,
                  keep_disagreeing: bool = False) -> PrepareResult:
    """Write ``<out>/<split>.jsonl`` and ``<out>/<split>_summary.md``; malformed samples are skipped and listed.

    ``keep_disagreeing`` (evaluation): a sample whose label and QA answer disagree is kept, the
    label deciding (it is the target the pixel metrics score); the disagreement is still listed.
    """
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if questions not in PREPARED_QUESTIONS:
        raise DatasetError(f"--questions must be one of {', '.join(PREPARED_QUESTIONS)}, not {questions!r}")
    prof = get_profile(profile)
    data_root, out_dir = Path(data_root), Path(out_dir)
    folders = check_layout(data_root, split)

    problems: List[Problem] = []
    images = _files_by_id(folders["images"], IMAGE_EXTENSIONS, problems)
    labels = _files_by_id(folders["labels"], IMAGE_EXTENSIONS, problems)
    qas = _files_by_id(folders["QAs"], (".json",), problems)

    counts = Counter()
    objects_per_image: List[int] = []
    box_widths: List[float] = []
    box_heights: List[float] = []
    box_shares: List[float] = []
    records: List[dict] = []
    questions_available = 0
    for image_id in sorted(set(images) | set(qas)):
        counts["ids"] += 1
        qa_path = qas.get(image_id)
        image_path = images.get(image_id)
        label_path = labels.get(image_id)
        if qa_path is None:
            problems.append(Problem(str(image_path), "QA missing", f"no QAs/{image_id}.json"))
            continue
        qa, problem = _read_qa(qa_path)
        if problem:
            problems.append(problem)
            continue
        if image_path is None:
            problems.append(Problem(str(folders["images"] / f"{image_id}.*"), "image missing",
                                    f"{qa_path.name} has no image"))
            continue
        size, problem = _read_image_size(image_path)
        if problem:
            problems.append(problem)
            continue
        if label_path is None:
            problems.append(Problem(str(folders["labels"] / f"{image_id}.png"), "label missing",
                                    f"{image_path.name} has no label mask"))
            continue
        mask, problem = _read_mask(label_path)
        if problem:
            problems.append(problem)
            continue
        if mask.shape[::-1] != tuple(size):
            problems.append(Problem(str(label_path), "size mismatch",
                                    f"label is {mask.shape[1]} x {mask.shape[0]}, image {image_path.name} is "
                                    f"{size[0]} x {size[1]}"))
            continue
        no_target = answer_says_no_target(qa.get("answer"))
        if not no_target and not mask.any():
            problems.append(Problem(str(label_path), "empty mask for a target",
                                    f"{qa_path.name} names a target but the label has no target pixel"
                                    + ("; scored as an empty target" if keep_disagreeing else ""),
                                    skipped=not keep_disagreeing))
            if not keep_disagreeing:
                continue
        if no_target and mask.any():
            problems.append(Problem(str(label_path), "mask without target",
                                    f"{qa_path.name} has an empty answer but the label marks "
                                    f"{int(mask.sum())} pixels"
                                    + ("; the label is scored as the target" if keep_disagreeing else ""),
                                    skipped=not keep_disagreeing))
            if not keep_disagreeing:
                continue
        rng = point_generator(seed, split, image_id)
        whole = whole_mask_object(mask, rng)
        objects, dropped = mask_objects(mask, min_area, rng)
        counts["components dropped (below min area)"] += dropped
        if mask.any() and not objects:
            problems.append(Problem(str(label_path), "target below min area",
                                    f"every part of the target is smaller than {min_area} pixels"))
            continue
        try:
            image_records, notes = build_records(image_id, split, image_path, label_path, qa_path, qa, size, objects,
                                                 prof, questions, seed, whole)
        except FrameError as exc:
            problems.append(Problem(str(image_path), "frame error", str(exc)))
            continue
        problems.extend(notes)
        if not image_records:
            problems.append(Problem(str(qa_path), "no questions", "no usable question in the list"))
            continue
        questions_available += sum(1 for q in qa["questions"] if isinstance(q, str) and q.strip())
        records.extend(image_records)
        counts["images used"] += 1
        counts["empty-target images"] += int(not objects)
        objects_per_image.append(len(objects))
        for o in objects:
            box_widths.append(o.box[2] - o.box[0])
            box_heights.append(o.box[3] - o.box[1])
            box_shares.append(100.0 * (o.box[2] - o.box[0]) * (o.box[3] - o.box[1]) / (size[0] * size[1]))

    out_dir.mkdir(parents=True, exist_ok=True)
    records_path = out_dir / f"{split}.jsonl"
    summary_path = out_dir / f"{split}_summary.md"
    atomic_write_text(records_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))

    stats = {
        "split": split, "profile": prof.name, "min_area": min_area, "questions": questions, "seed": seed,
        "ids found": counts["ids"], "images used": counts["images used"], "records": len(records),
        "questions available (used images)": questions_available,
        "empty-target images": counts["empty-target images"],
        "empty-target share": (counts["empty-target images"] / counts["images used"]) if counts["images used"] else None,
        "objects per image": _distribution(objects_per_image),
        "objects per image (counts)": _histogram(objects_per_image),
        "box width px": _distribution(box_widths),
        "box height px": _distribution(box_heights),
        "box area % of image": _distribution(box_shares),
        "components dropped (below min area)": counts["components dropped (below min area)"],
        "samples skipped": sum(1 for p in problems if p.skipped),
        "problems by kind": dict(sorted(Counter(p.kind for p in problems).items())),
    }
    markdown = summary_markdown(stats, problems, records_path)
    atomic_write_text(summary_path, markdown)
    return PrepareResult(records_path, summary_path, len(records), markdown, problems, stats)


def _distribution(values: List[float]) -> Optional[Dict[str, float]]:
    if not values:
        return None
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2),
            "mean": round(statistics.fmean(values), 2), "max": round(max(values), 2)}


def _histogram(counts: List[int]) -> Dict[str, int]:
    buckets = Counter(str(c) if c < 4 else "4+" for c in counts)
    return {k: buckets[k] for k in ("0", "1", "2", "3", "4+") if buckets[k]}


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
    if key.endswith("share"):
        return f"{value:.1%}"
    return str(value)


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary_markdown(stats: Dict[str, Any], problems: List[Problem], records_path: Path) -> str:
    lines = [f"# EarthReason {stats['split']}: prepared for profile {stats['profile']}", "",
             f"Dataset: `{records_path}`", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {_cell(key, value)} |" for key, value in stats.items() if key not in ("split", "profile")]
    lines += ["", f"## Problems ({len(problems)})", ""]
    if problems:
        lines += ["| file | problem | detail | sample |", "|---|---|---|---|"]
        lines += [f"| {_escape(p.file)} | {p.kind} | {_escape(p.detail)} | {'skipped' if p.skipped else 'kept'} |"
                  for p in problems]
    else:
        lines.append("none")
    return "\n".join(lines) + "\n"
