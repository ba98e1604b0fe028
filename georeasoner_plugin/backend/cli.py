"""`georeasoner` command line: the cascade headless on a raster.

    georeasoner ask IMAGE QUESTION -o OUT [--profile P] [--outputs boxes,points,masks,contours]
                    [--reasoner-output FILE] [--json]
    georeasoner make-tiny DIR
    georeasoner doctor [--profile P] [--reasoner X] [--segmenter Y] [--json]
    georeasoner download REPO_ID [--progress-json] [--token-file PATH]
    georeasoner profiles
    georeasoner serve [--host 127.0.0.1] [--port 8765] [--reasoner M | --reasoner-url URL --reasoner-model NAME
                      | --reasoner-output FILE] [--segmenter M|none] [--token-file PATH]

Exit codes (sysexits-like, shared with the training CLI; see core/exit_codes.py and the README):
0 done (an empty answer is an answer), 1 the model's answer could not be read, 64 bad arguments,
65 unreadable input, 66 missing input, 69 model missing, 70 an internal error (a bug: please
report it), 73 an output cannot be written, 130 interrupted. Errors are one clear line on stderr,
never a traceback (unless --debug).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

from .. import __version__
from ..core.api import EVENT_STAGE, EVENT_TOKEN, STAGE_DONE, STAGE_PARSE
from ..core.exit_codes import (EXIT_CANTCREAT, EXIT_DATAERR, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_SOFTWARE,
                               EXIT_UNAVAILABLE, EXIT_USAGE, CommandError, UsageError, run_command)
from ..core.files import atomic_write_text
from ..core.profiles import DEFAULT_PROFILE, PROFILES, UnknownProfileError, get_profile
from ..core.protocol import GRANULARITIES, PARSE_INVALID, PARSE_NO_ANSWER
from .cli_ask import (Progress, output_paths, parse_bands, parse_outputs, print_summary, read_recorded_output,
                      refuse_existing_outputs, remove_files, write_answer_json)
from .cli_checks import check_input, check_writable
from .cli_serve import DEFAULT_SEGMENTER, add_serve_parser, cmd_serve
from .cli_setup import SETUP_COMMANDS, add_setup_commands

EXIT_BUG = EXIT_SOFTWARE  # the name this module used before the codes moved to core
__all__ = ["main", "build_parser", "output_paths", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_BUG",
           "EXIT_INTERRUPTED"]
UserError = CommandError  # something the user can fix, raised here in the CLI only; the message says how


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):  # argparse's errors: usage, then our one-line style and EX_USAGE
        self.print_usage(sys.stderr)
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="georeasoner", description="Ask questions about imagery; get georeferenced "
                             "boxes, points, masks and contours.")
    parser.add_argument("--version", action="version", version=f"georeasoner {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for internal errors")
    sub = parser.add_subparsers(dest="command", parser_class=_ArgumentParser)

    ask = sub.add_parser("ask", help="answer a question about a raster")
    ask.add_argument("image", help="any raster GDAL reads (GeoTIFF, JPEG2000, VRT, PNG...)")
    ask.add_argument("question")
    ask.add_argument("-o", "--out", required=True,
                     help="OUT.gpkg (one GeoPackage), OUT.shp or a folder (shapefiles); the mask GeoTIFF "
                          "and the answer JSON are written beside it")
    ask.add_argument("--profile", default=DEFAULT_PROFILE, help=f"prompt profile ({', '.join(PROFILES)})")
    ask.add_argument("--outputs", default=",".join(GRANULARITIES),
                     help="comma-separated subset of boxes,points,masks,contours")
    ask.add_argument("--reasoner", help="reasoning model: hub id or local folder (default: the profile's checkpoint)")
    ask.add_argument("--adapter", help="LoRA adapter folder applied on top of the reasoner")
    ask.add_argument("--segmenter", default=DEFAULT_SEGMENTER, help="SAM2 model: hub id or local folder")
    ask.add_argument("--reasoner-output", metavar="FILE",
                     help="replay a saved raw model output instead of running the reasoner")
    ask.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    ask.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    ask.add_argument("--bands", help="three 1-based band numbers for red,green,blue, e.g. 4,3,2")
    ask.add_argument("--max-size", type=int, default=2048,
                     help="read rasters larger than this (long side, pixels) decimated through overviews")
    ask.add_argument("--max-new-tokens", type=int, default=1024)
    ask.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ask.add_argument("--top-p", type=float, default=1.0)
    ask.add_argument("--seed", type=int)
    ask.add_argument("--simplify", type=float, default=0.0, help="contour simplification tolerance, pixels")
    ask.add_argument("--min-area", type=float, default=0.0, help="drop contour parts/holes below this many pixels")
    ask.add_argument("--overwrite", action="store_true", help="replace existing output files")
    ask.add_argument("--json", action="store_true", help="print the answer as JSON on stdout")
    ask.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    from .tiled.cli_tiled import add_remote_arguments, add_tiled_arguments  # issue 10: whole rasters in tiles
    add_remote_arguments(ask)
    add_tiled_arguments(ask)

    _add_expand_options(ask)

    tiny = sub.add_parser("make-tiny", help="write tiny random models for an offline smoke test")
    tiny.add_argument("directory")

    sub.add_parser("profiles", help="list the prompt profiles")

    serve = add_serve_parser(sub)
    _add_expand_options(serve)
    add_setup_commands(sub)
    return parser


def _add_expand_options(parser) -> None:
    parser.add_argument("--expand", choices=("none", "instances"), default="none",
                        help="instances: SAM 3 finds every instance of each object's label inside the reasoner's "
                             "boxes (in the whole image when the question asks for all of something); off by default")
    parser.add_argument("--instance-model", metavar="M",
                        help="SAM 3 checkpoint for --expand instances (default: --segmenter, e.g. facebook/sam3)")


def _instance_model(args, segmenter: Optional[str]) -> Optional[str]:
    """The SAM 3 detector to load for --expand instances, or None when expansion is off."""
    if args.expand != "instances":
        if args.instance_model:
            raise UserError("--instance-model only applies with --expand instances", EXIT_USAGE)
        return None
    model = args.instance_model or segmenter
    if not model:
        raise UserError("--expand instances needs SAM 3: pass --segmenter facebook/sam3 or --instance-model M",
                        EXIT_USAGE)
    return model


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])

    def body() -> int:
        args = parser.parse_args(argv)
        if args.command == "ask":
            return cmd_ask(args)
        if args.command == "make-tiny":
            return cmd_make_tiny(args)
        if args.command == "profiles":
            return cmd_profiles()
        if args.command == "serve":
            return cmd_serve(args)
        if args.command in SETUP_COMMANDS:
            return SETUP_COMMANDS[args.command](args)
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    return run_command("georeasoner", body, debug=debug, interrupted="interrupted; nothing was written")


def cmd_ask(args) -> int:
    progress = Progress(args.quiet)
    outputs = parse_outputs(args.outputs)
    bands = parse_bands(args.bands)
    try:
        profile = get_profile(args.profile)
    except UnknownProfileError as exc:
        raise UserError(str(exc), EXIT_USAGE) from None
    if args.max_size < 64:
        raise UserError("--max-size must be at least 64 pixels", EXIT_USAGE)
    paths = output_paths(args.out)
    refuse_existing_outputs(paths, outputs, args.overwrite)
    check_input(args.image)
    check_writable(paths)
    recorded = read_recorded_output(args.reasoner_output) if args.reasoner_output else None
    if args.tiles:
        from .tiled.cli_tiled import cmd_ask_tiled
        return cmd_ask_tiled(args, progress, outputs, profile.name, recorded, paths, UserError, EXIT_USAGE)
    instance_model = _instance_model(args, args.segmenter)

    # Heavy imports only now, so `--help` and argument errors stay instant.
    from .cascade import AskOptions, Cascade, CascadeError
    from .imagery import ImageryError, read_raster
    from .models import ModelLoadError
    from .writers import OutputError, all_output_files, write_mask_geotiff, write_vectors

    options = AskOptions(granularities=outputs, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                         top_p=args.top_p, seed=args.seed, simplify_tolerance=args.simplify, min_area=args.min_area)
    try:
        options.validate()
    except CascadeError as exc:
        raise UserError(str(exc), EXIT_USAGE) from None

    try:
        with progress.stage("read", f"reading {args.image}"):
            raster = read_raster(args.image, bands=bands, max_size=args.max_size)
    except ImageryError as exc:
        raise UserError(str(exc), EXIT_DATAERR) from None
    for warning in raster.warnings:
        progress.say(f"warning: {warning}")

    from transformers.utils import logging as transformers_logging
    transformers_logging.disable_progress_bar()  # our own stage lines say what is loading

    reasoner = segmenter = None
    needs_segmenter = any(o in outputs for o in ("masks", "contours"))
    try:
        with progress.stage("load", "loading models"):
            if recorded is None and args.reasoner_url:
                from .tiled.cli_tiled import remote_reasoner
                reasoner = remote_reasoner(args, UserError, EXIT_USAGE)
            elif recorded is None:
                model = args.reasoner or profile.default_checkpoint
                if not model:
                    raise UserError(f"profile {profile.name} has no published checkpoint; pass --reasoner "
                                    "with your model (hub id or folder)", EXIT_USAGE)
                from .reasoner import Reasoner
                reasoner = Reasoner(model, adapter=args.adapter, device=args.device, dtype=args.dtype)
            if needs_segmenter:
                from .segmenter import Segmenter
                segmenter = Segmenter(args.segmenter, device=args.device, dtype=args.dtype)
            expander = None
            if instance_model:
                from .instances import InstanceFinder
                expander = InstanceFinder(instance_model, device=args.device, dtype=args.dtype)
    except ModelLoadError as exc:
        raise UserError(str(exc), EXIT_UNAVAILABLE) from None

    cascade = Cascade(reasoner=reasoner, segmenter=segmenter, profile=profile.name, expander=expander)
    streamed: List[str] = []
    show_tokens = not (args.quiet or args.json)
    mid_line = [False]  # tokens were printed without a line end yet

    def end_token_line():
        if mid_line[0]:
            print(file=sys.stderr)
            mid_line[0] = False

    def on_event(kind, data):
        if kind == EVENT_TOKEN:
            streamed.append(data["text"])
            if show_tokens:  # the reasoning appears as it is written, as in the QGIS dock
                print(data["text"], end="", file=sys.stderr, flush=True)
                mid_line[0] = True
        elif kind == EVENT_STAGE and data["stage"] not in (STAGE_DONE, STAGE_PARSE):
            end_token_line()
            progress.say(f"... {data['stage']}")

    try:
        started = time.perf_counter()
        result = cascade.run(raster.rgb, args.question, options=options, raw_output=recorded,
                             valid=raster.valid, on_event=on_event)
        progress.timings["cascade"] = time.perf_counter() - started
    except CascadeError as exc:
        raise UserError(str(exc), EXIT_DATAERR) from None

    answer = result.answer
    answer.warnings.extend(raster.warnings)
    end_token_line()
    if answer.parse_status in (PARSE_INVALID, PARSE_NO_ANSWER):
        if not (streamed and show_tokens):
            print(answer.raw_output if answer.raw_output else "(the model wrote nothing)", file=sys.stderr)
        problems = "; ".join(answer.parse_problems) or "no answer found"
        if any("outside the image" in p for p in answer.parse_problems):
            hint = ("Check that --profile matches the model (each profile has its own coordinate frame) and, "
                    "with --reasoner-output, that the answer was recorded for this image.")
        else:
            hint = "Rephrase the question or check that --profile matches the model."
        raise UserError(f"the model's answer could not be read ({answer.parse_status}): {problems}. "
                        f"Nothing was written. {hint}")

    crs_wkt = raster.crs_wkt
    written: List[Path] = []
    try:
        with progress.stage("write", f"writing {paths['vectors']}"):
            vector_layers = [o for o in ("boxes", "points", "contours") if o in outputs]
            if vector_layers:
                # raster: the file's name without suffix, as QGIS names the layer of that file.
                written += write_vectors(answer, raster.transform, crs_wkt, paths["vectors"], layers=vector_layers,
                                         overwrite=args.overwrite, raster=Path(args.image).stem)
            if "masks" in outputs:
                union = result.union_mask(answer.image_height, answer.image_width)
                written.append(write_mask_geotiff(union, raster, paths["mask"], overwrite=args.overwrite))
            answer.timings.update({k: v for k, v in progress.timings.items() if k in ("read", "load")})
            written.append(write_answer_json(answer, paths["answer"], args.overwrite))
    except OutputError as exc:
        remove_files(all_output_files(written))
        raise UserError(str(exc), EXIT_CANTCREAT) from None

    if args.json:
        print(answer.to_json(indent=2))
    else:
        print_summary(answer, written, raster)
    return EXIT_OK


TINY_MANIFEST = "models.json"


def cmd_make_tiny(args) -> int:
    from .tiny import ALL_TINY_ROLES, make_tiny_models
    target = Path(args.directory)
    paths = make_tiny_models(target, roles=ALL_TINY_ROLES)
    # The manifest names each role's folder; its presence marks a complete build.
    atomic_write_text(target / TINY_MANIFEST, json.dumps({role: str(path) for role, path in paths.items()}, indent=2))
    print("Tiny RANDOM models written (for smoke tests only; their answers are meaningless):")
    for role, path in paths.items():
        print(f"  {role}: {path}")
    return EXIT_OK


def cmd_profiles() -> int:
    for profile in PROFILES.values():
        checkpoint = profile.default_checkpoint or "(no published checkpoint)"
        print(f"{profile.name:15s} {profile.title}")
        print(f"{'':15s} checkpoint: {checkpoint}; frame: {profile.frame.describe()}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
