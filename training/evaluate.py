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

import sys

from georeasoner_plugin.core.exit_codes import EXIT_FAILED, EXIT_OK
from georeasoner_plugin.core.profiles import PROFILES

from .errors import OptionError
from .evaluation.options import (DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS, DEFAULT_OVERLAYS, ENGINES,
                                 QUESTION_RULES, RESOLUTIONS, SAMPLES_FILE, TASKS, TOLERANCE_READINGS, EvalOptions,
                                 parse_tasks)
from .evaluation.runner import evaluate
from .metrics import TOLERANCE_KERNELS
from .prepare import SPLITS

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
        raise OptionError("--limit must be at least 1")
    if args.batch_size < 1:
        raise OptionError("--batch-size must be at least 1")
    if not 1 <= args.max_new_tokens <= 8192:
        raise OptionError("--max-new-tokens must be between 1 and 8192")
    if not 0.0 <= args.temperature <= 2.0:
        raise OptionError("--temperature must be between 0 and 2")
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
