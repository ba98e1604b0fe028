"""results.md / results.csv / results.json: the papers' tables, the protocol table, parse failures."""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from georeasoner_plugin.core.files import atomic_write_text
from georeasoner_plugin.core.profiles import get_profile
from georeasoner_plugin.core.protocol import PARSE_EMPTY, PARSE_OK, PARSE_PARTIAL

from ..metrics import BOUNDARY_TOLERANCES, PRECISION_THRESHOLDS, MetricAccumulator, summary_markdown
from .options import QUESTION_RULES, RESOLUTIONS, SAMPLES_FILE, STATUS_ERROR, TASKS, TOLERANCE_READINGS, EvalOptions
from .overlays import write_overlays
from .samples import PreparedSplit, SampleLog
from .scores import sample_from_json

# --------------------------------------------------------------------------- reports

@dataclass
class EvalResult:
    out: Path
    summary: Dict[str, object]
    samples: int
    newly_scored: int
    results_markdown: str



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
    atomic_write_text(out / "results.md", markdown)
    atomic_write_text(out / "results.csv", results_csv(options, summary))
    atomic_write_text(out / "results.json", json.dumps(
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
