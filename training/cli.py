"""``training``: prepare EarthReason, score completions, evaluate, train, export.

Each subcommand is a (register, run) pair: ``register(subparsers)`` adds its argparse parser and
``run(args) -> int`` does the work. The library modules raise their own exceptions
(training.errors; the backend's ModelLoadError) and never import this module; ``main`` maps them
to one "training: error: ..." line and an exit code of georeasoner_plugin.core.exit_codes, never
a traceback (``--debug`` shows one for internal errors).
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Dict, List, Optional, Tuple

from georeasoner_plugin.core.exit_codes import (EXIT_CONFIG, EXIT_DATAERR, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK,
                                                EXIT_SOFTWARE, EXIT_UNAVAILABLE, EXIT_USAGE, UsageError, run_command)
from georeasoner_plugin.core.profiles import PROFILES

from .errors import ConfigError, DatasetError, ExportError, OptionError

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_CONFIG", "EXIT_DATAERR", "EXIT_UNAVAILABLE",
           "EXIT_INTERRUPTED", "EXIT_BUG", "COMMANDS", "build_parser", "main", "exit_table"]

EXIT_BUG = EXIT_SOFTWARE
PROBLEMS_PRINTED = 20


def exit_table() -> Dict[type, int]:
    """{exception type: exit code} of the training commands (the nearest class wins)."""
    table: Dict[type, int] = {OptionError: EXIT_USAGE, ConfigError: EXIT_CONFIG, DatasetError: EXIT_DATAERR,
                              ExportError: EXIT_USAGE}
    try:  # a model that cannot be found or loaded (evaluate, export); the backend may be absent
        from georeasoner_plugin.backend.models import ModelLoadError
    except ImportError:
        return table
    table[ModelLoadError] = EXIT_UNAVAILABLE
    return table


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: the same one-line form as ours
        raise UsageError(f"{self.prog}: {message}")


# --------------------------------------------------------------------------- prepare

def register_prepare(subparsers) -> None:
    from .prepare import DEFAULT_MIN_AREA, DEFAULT_TRAINING_PROFILE, PREPARED_QUESTIONS, SPLITS

    p = subparsers.add_parser("prepare", help="EarthReason -> JSON-lines dataset with boxes, points, contours",
                              description="Read an EarthReason split (images/, labels/, QAs/) and write "
                                          "OUT/<split>.jsonl plus OUT/<split>_summary.md.")
    p.add_argument("--data", required=True, metavar="DIR", help="EarthReason root (holds train/, val/, test/)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--split", choices=SPLITS, default="train")
    p.add_argument("--profile", choices=sorted(PROFILES), default=DEFAULT_TRAINING_PROFILE,
                   help="prompt profile whose model frame and answer format the records use")
    p.add_argument("--min-area", type=int, default=DEFAULT_MIN_AREA, metavar="PX",
                   help=f"drop mask components smaller than this many pixels (default {DEFAULT_MIN_AREA})")
    p.add_argument("--questions", choices=PREPARED_QUESTIONS, default="all",
                   help="all: one record per question; sample: one seeded random question per image")
    p.add_argument("--seed", type=int, default=0, help="seed of --questions sample")


def run_prepare(args) -> int:
    from .prepare import prepare_split

    if args.min_area < 0:
        raise UsageError("--min-area must not be negative")
    result = prepare_split(args.data, args.out, split=args.split, profile=args.profile,
                           min_area=args.min_area, questions=args.questions, seed=args.seed)
    print(result.summary_markdown.split("\n## Problems")[0].rstrip())
    if result.problems:
        print(f"\n{len(result.problems)} problem(s); "
              f"{sum(p.skipped for p in result.problems)} sample(s) skipped:", file=sys.stderr)
        for p in result.problems[:PROBLEMS_PRINTED]:
            print(f"  {p.file}: {p.kind}: {p.detail}", file=sys.stderr)
        if len(result.problems) > PROBLEMS_PRINTED:
            print(f"  ... {len(result.problems) - PROBLEMS_PRINTED} more in {result.summary_path}", file=sys.stderr)
    print(f"\nwrote {result.records} record(s) to {result.records_path}\nsummary: {result.summary_path}")
    if result.records == 0:
        print("training: error: no usable sample; see the problems above", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# --------------------------------------------------------------------------- the other commands, loaded lazily

def _lazy(module: str) -> Tuple[Callable, Callable[..., int]]:
    """(register, run) of a subcommand module, imported only when used (torch stays unloaded for --help)."""
    import importlib

    def register(subparsers) -> None:
        importlib.import_module(f"training.{module}").register(subparsers)

    def run(args) -> int:
        return importlib.import_module(f"training.{module}").run(args)

    return register, run


# name -> (register, run)
COMMANDS: Dict[str, Tuple[Callable, Callable[..., int]]] = {
    "prepare": (register_prepare, run_prepare),
    "rewards": _lazy("reward_cli"),
    "evaluate": _lazy("evaluate"),
    "train": _lazy("train"),
    "export": _lazy("export"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="training", description="GeoReasoner training: data preparation, "
                                                          "GRPO rewards, evaluation.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for internal errors")
    subparsers = parser.add_subparsers(dest="command", parser_class=_ArgumentParser)
    for register, _ in COMMANDS.values():
        register(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command not in COMMANDS:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return COMMANDS[args.command][1](args)

    return run_command("training", body, exit_table(), debug="--debug" in argv)


if __name__ == "__main__":
    sys.exit(main())
