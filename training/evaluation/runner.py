"""The evaluation run: select, generate or replay, segment, score, append to samples.jsonl, report."""
from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from georeasoner_plugin.core.files import atomic_write_text
from georeasoner_plugin.core.profiles import UnknownProfileError, get_profile
from georeasoner_plugin.core.protocol import PARSE_EMPTY, PARSE_OK

from ..errors import OptionError
from ..metrics import UNPARSEABLE_STATUSES
from .engines import _load_models
from .options import MISSING_SHOWN, RESUME_KEYS, RUN_FILE, SAMPLES_FILE, STATUS_ERROR, EvalOptions
from .report import EvalResult, write_reports
from .samples import (PreparedSplit, RecordedSample, SampleLog, load_label, load_rgb, mask_component_boxes,
                      prepare_samples, read_recorded, saved_prediction, select_samples)
from .scores import rle_to_json, score_sample, scores_to_json

# --------------------------------------------------------------------------- the run

def evaluate(options: EvalOptions) -> EvalResult:
    out = Path(options.out)
    try:
        profile = get_profile(options.profile)
    except UnknownProfileError as exc:
        raise OptionError(str(exc)) from None
    if not options.recorded and not options.model and not profile.default_checkpoint:
        raise OptionError(f"profile {profile.name} has no published checkpoint; pass --model (hub id or folder)")
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
            raise OptionError(f"--recorded {options.recorded} has no output for {len(missing)} sample(s): {shown}")

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
        raise OptionError(f"{out} holds samples of a run with other options ({details}); use another --out, "
                        f"or move {samples_file.name} away to start over")


def _write_run_file(out: Path, options: EvalOptions, engine: Optional[str], prepared: PreparedSplit) -> None:
    run = {"protocol": options.protocol(), "engine": engine, "prepared": prepared.to_json()}
    atomic_write_text(out / RUN_FILE, json.dumps(run, indent=2) + "\n")


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
                            raise OptionError(f"--recorded: sample {record['id']} has a saved mask but no raw_output "
                                            "to segment again; drop --resegment or give its raw_output")
                        line_answer = _mask_only_answer(entry, saved_mask)
                        pred_mask = saved_mask
                    else:
                        result = cascade.run(image, record["question"], raw_output=raw_output,
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
