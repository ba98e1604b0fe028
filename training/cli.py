"""``training``: prepare EarthReason (more subcommands plug in through COMMANDS).

Each subcommand is a (register, run) pair: ``register(subparsers)`` adds its argparse parser and
``run(args) -> int`` does the work. Problems the user can fix (a missing dataset root, a bad
option) end with one "training: error: ..." line and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Dict, List, Optional, Tuple

from georeasoner_plugin.core.profiles import PROFILES

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran but produced nothing usable
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BUG = 70
PROBLEMS_PRINTED = 20


class UserError(Exception):
    """A problem the user can fix; printed as one line."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: same one-line form and exit code as ours
        raise UserError(f"{self.prog}: {message}")


# --------------------------------------------------------------------------- prepare

def register_prepare(subparsers) -> None:
    from .prepare import DEFAULT_MIN_AREA, DEFAULT_PROFILE, QUESTION_MODES, SPLITS

    p = subparsers.add_parser("prepare", help="EarthReason -> JSON-lines dataset with boxes, points, contours",
                              description="Read an EarthReason split (images/, labels/, QAs/) and write "
                                          "OUT/<split>.jsonl plus OUT/<split>_summary.md.")
    p.add_argument("--data", required=True, metavar="DIR", help="EarthReason root (holds train/, val/, test/)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--split", choices=SPLITS, default="train")
    p.add_argument("--profile", choices=sorted(PROFILES), default=DEFAULT_PROFILE,
                   help="prompt profile whose model frame and answer format the records use")
    p.add_argument("--min-area", type=int, default=DEFAULT_MIN_AREA, metavar="PX",
                   help=f"drop mask components smaller than this many pixels (default {DEFAULT_MIN_AREA})")
    p.add_argument("--questions", choices=QUESTION_MODES, default="all",
                   help="all: one record per question; sample: one seeded random question per image")
    p.add_argument("--seed", type=int, default=0, help="seed of --questions sample")


def run_prepare(args) -> int:
    from .prepare import DatasetError, prepare_split

    if args.min_area < 0:
        raise UserError("--min-area must not be negative")
    try:
        result = prepare_split(args.data, args.out, split=args.split, profile=args.profile,
                               min_area=args.min_area, questions=args.questions, seed=args.seed)
    except DatasetError as exc:
        raise UserError(str(exc)) from None
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


# --------------------------------------------------------------------------- evaluate

def register_evaluate(subparsers) -> None:
    from .evaluate import register

    register(subparsers)


def run_evaluate(args) -> int:
    from .evaluate import run

    return run(args)


# --------------------------------------------------------------------------- train, export

def register_train(subparsers) -> None:
    from .train import register

    register(subparsers)


def run_train(args) -> int:
    from .train import run

    return run(args)


def register_export(subparsers) -> None:
    from .export import register

    register(subparsers)


def run_export(args) -> int:
    from .export import run

    return run(args)


def register_rewards(subparsers) -> None:
    from .reward_cli import register

    register(subparsers)


def run_rewards(args) -> int:
    from .reward_cli import run

    return run(args)


# name -> (register, run); later subcommands (evaluate, train, export) add themselves here.
COMMANDS: Dict[str, Tuple[Callable, Callable[..., int]]] = {
    "prepare": (register_prepare, run_prepare),
    "rewards": (register_rewards, run_rewards),
    "evaluate": (register_evaluate, run_evaluate),
    "train": (register_train, run_train),
    "export": (register_export, run_export),
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
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command not in COMMANDS:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return COMMANDS[args.command][1](args)
    except UserError as exc:
        print(f"training: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("training: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except Exception as exc:  # noqa: BLE001 - users get one line; --debug shows the traceback
        if "--debug" in argv:
            raise
        print(f"training: internal error: {type(exc).__name__}: {exc}\n"
              "This is a bug; rerun with --debug for the traceback.", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
