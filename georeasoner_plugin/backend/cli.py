"""`georeasoner` command line: the cascade headless on a raster.

    georeasoner ask IMAGE QUESTION -o OUT [--profile P] [--outputs boxes,points,masks,contours]
                    [--reasoner-output FILE] [--json]
    georeasoner make-tiny DIR
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
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from .. import __version__
from ..core.exit_codes import (EXIT_CANTCREAT, EXIT_CONFIG, EXIT_DATAERR, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_NOINPUT,
                               EXIT_OK, EXIT_SOFTWARE, EXIT_UNAVAILABLE, EXIT_USAGE, CommandError,
                               UsageError, run_command)
from ..core.api import (DEFAULT_HOST, DEFAULT_MAX_BODY_BYTES, DEFAULT_PORT, DEFAULT_QUEUE_SIZE, DEFAULT_TIMEOUT_S,
                        MAX_IMAGE_PIXELS, TOKEN_FILE_ENV)
from ..core.files import atomic_write_text
from ..core.profiles import DEFAULT_PROFILE, PROFILES, UnknownProfileError, get_profile
from ..core.protocol import GRANULARITIES, PARSE_INVALID, PARSE_NO_ANSWER

DEFAULT_SEGMENTER = "facebook/sam2.1-hiera-large"
MAX_RECORDED_OUTPUT_BYTES = 1_000_000

EXIT_BUG = EXIT_SOFTWARE  # the name this module used before the codes moved to core
__all__ = ["main", "build_parser", "output_paths", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_BUG",
           "EXIT_INTERRUPTED"]
UserError = CommandError  # something the user can fix, raised here in the CLI only; the message says how


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):  # argparse's errors: usage, then our one-line style and EX_USAGE
        self.print_usage(sys.stderr)
        raise UsageError(message)


class Progress:
    """Stage lines on stderr so slow steps (model load, generation) show they are alive."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.started: Optional[float] = None
        self.timings: Dict[str, float] = {}

    def stage(self, name: str, label: str) -> "_Stage":
        return _Stage(self, name, label)

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)


class _Stage:
    def __init__(self, progress: Progress, name: str, label: str):
        self.progress, self.name, self.label = progress, name, label

    def __enter__(self):
        self.start = time.perf_counter()
        if not self.progress.quiet:
            print(f"... {self.label}", file=sys.stderr, end="", flush=True)
        return self

    def __exit__(self, exc_type, exc, tb):
        elapsed = time.perf_counter() - self.start
        self.progress.timings[self.name] = elapsed
        if not self.progress.quiet:
            print(f" {'done' if exc is None else 'failed'} ({elapsed:.2f} s)", file=sys.stderr, flush=True)
        return False


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

    tiny = sub.add_parser("make-tiny", help="write tiny random models for an offline smoke test")
    tiny.add_argument("directory")

    sub.add_parser("profiles", help="list the prompt profiles")

    serve = sub.add_parser("serve", help="run the HTTP backend (for the QGIS plugin and other clients)")
    serve.add_argument("--host", default=DEFAULT_HOST,
                       help=f"address to listen on (default {DEFAULT_HOST}; anything else is reachable from the "
                            f"network)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT,
                       help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one; the URL is printed)")
    serve.add_argument("--profile", default=DEFAULT_PROFILE, help=f"default prompt profile ({', '.join(PROFILES)})")
    serve.add_argument("--reasoner", help="reasoning model: hub id or local folder (default: the profile's checkpoint)")
    serve.add_argument("--adapter", help="LoRA adapter folder applied on top of the reasoner")
    serve.add_argument("--segmenter", default=DEFAULT_SEGMENTER,
                       help="SAM2 model: hub id or local folder; 'none' serves boxes and points only")
    serve.add_argument("--reasoner-output", metavar="FILE",
                       help="replay this saved raw model output for every question (tests, demos; no reasoner loaded)")
    serve.add_argument("--reasoner-url", metavar="URL",
                       help="OpenAI-compatible chat-completions endpoint (vLLM, SGLang), e.g. http://gpu:8000/v1; "
                            "its API key, if any, is read from GEOREASONER_REASONER_API_KEY")
    serve.add_argument("--reasoner-model", metavar="NAME", help="the model name the --reasoner-url endpoint serves")
    serve.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    serve.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    serve.add_argument("--queue-size", type=int, default=DEFAULT_QUEUE_SIZE,
                       help=f"requests allowed to wait (default {DEFAULT_QUEUE_SIZE}); more get 429")
    serve.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                       help=f"per-request time limit in seconds, queue included (default {DEFAULT_TIMEOUT_S:g})")
    serve.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                       help=f"largest request body accepted (default {DEFAULT_MAX_BODY_BYTES})")
    serve.add_argument("--max-image-pixels", type=int, default=MAX_IMAGE_PIXELS,
                       help=f"largest decoded image accepted (default and ceiling {MAX_IMAGE_PIXELS})")
    serve.add_argument("--token-file", metavar="PATH",
                       help=f"bearer token file (default: ${TOKEN_FILE_ENV}, else "
                            "$XDG_CONFIG_HOME/georeasoner/token or ~/.config/georeasoner/token); created if missing")
    serve.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    return parser


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
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    return run_command("georeasoner", body, debug=debug, interrupted="interrupted; nothing was written")


def _parse_outputs(text: str) -> List[str]:
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [t for t in items if t not in GRANULARITIES]
    if unknown or not items:
        raise UserError(f"--outputs takes a comma-separated subset of {','.join(GRANULARITIES)}; "
                        f"got {text!r}", EXIT_USAGE)
    return list(dict.fromkeys(items))


def _parse_bands(text: Optional[str]):
    if text is None:
        return None
    try:
        bands = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise UserError(f"--bands takes three band numbers like 4,3,2; got {text!r}", EXIT_USAGE) from None
    if len(bands) != 3 or any(b < 1 for b in bands):
        raise UserError(f"--bands takes three band numbers (1-based) like 4,3,2; got {text!r}", EXIT_USAGE)
    return bands


def output_paths(out: str) -> Dict[str, Path]:
    """Where `ask` writes: vectors, the mask GeoTIFF and the answer JSON."""
    path = Path(out)
    lower = out.lower()
    if lower.endswith((".gpkg", ".shp")):
        stem = path.with_suffix("")
        return {"vectors": path, "mask": Path(f"{stem}_mask.tif"), "answer": Path(f"{stem}_answer.json")}
    if path.suffix and not path.is_dir():
        raise UserError(f"-o/--out must end in .gpkg or .shp, or be a folder; got {out!r}", EXIT_USAGE)
    return {"vectors": path, "mask": path / "mask.tif", "answer": path / "answer.json"}


def _read_recorded_output(path: str) -> str:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--reasoner-output: {path} does not exist or is not a file", EXIT_NOINPUT)
    if file.stat().st_size > MAX_RECORDED_OUTPUT_BYTES:
        raise UserError(f"--reasoner-output: {path} is larger than {MAX_RECORDED_OUTPUT_BYTES} bytes; "
                        "that is not a model answer", EXIT_DATAERR)
    data = file.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"--reasoner-output: {path} is not UTF-8 text", EXIT_DATAERR) from None


def cmd_ask(args) -> int:
    progress = Progress(args.quiet)
    outputs = _parse_outputs(args.outputs)
    bands = _parse_bands(args.bands)
    try:
        profile = get_profile(args.profile)
    except UnknownProfileError as exc:
        raise UserError(str(exc), EXIT_USAGE) from None
    if args.max_size < 64:
        raise UserError("--max-size must be at least 64 pixels", EXIT_USAGE)
    paths = output_paths(args.out)
    _refuse_existing(paths, outputs, args.overwrite)
    if not Path(args.image).exists():
        raise UserError(f"{args.image}: no such file", EXIT_NOINPUT)
    recorded = _read_recorded_output(args.reasoner_output) if args.reasoner_output else None

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
            if recorded is None:
                model = args.reasoner or profile.default_checkpoint
                if not model:
                    raise UserError(f"profile {profile.name} has no published checkpoint; pass --reasoner "
                                    "with your model (hub id or folder)", EXIT_USAGE)
                from .reasoner import Reasoner
                reasoner = Reasoner(model, adapter=args.adapter, device=args.device, dtype=args.dtype)
            if needs_segmenter:
                from .segmenter import Segmenter
                segmenter = Segmenter(args.segmenter, device=args.device, dtype=args.dtype)
    except ModelLoadError as exc:
        raise UserError(str(exc), EXIT_UNAVAILABLE) from None

    cascade = Cascade(reasoner=reasoner, segmenter=segmenter, profile=profile.name)
    streamed: List[str] = []
    show_tokens = not (args.quiet or args.json)
    mid_line = [False]  # tokens were printed without a line end yet

    def end_token_line():
        if mid_line[0]:
            print(file=sys.stderr)
            mid_line[0] = False

    def on_event(kind, data):
        if kind == "token":
            streamed.append(data["text"])
            if show_tokens:  # the reasoning appears as it is written, as in the QGIS dock
                print(data["text"], end="", file=sys.stderr, flush=True)
                mid_line[0] = True
        elif kind == "stage" and data["stage"] not in ("done", "parse"):
            end_token_line()
            progress.say(f"... {data['stage']}")

    try:
        started = time.perf_counter()
        result = cascade.ask(raster.rgb, args.question, options=options, raw_output=recorded,
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
            written.append(_write_answer_json(answer, paths["answer"], args.overwrite))
    except OutputError as exc:
        _remove(all_output_files(written))
        raise UserError(str(exc), EXIT_CANTCREAT) from None

    if args.json:
        print(answer.to_json(indent=2))
    else:
        _print_summary(answer, written, raster)
    return EXIT_OK


def _refuse_existing(paths: Dict[str, Path], outputs: List[str], overwrite: bool) -> None:
    """Fail before minutes of model time, not after: an existing output needs --overwrite."""
    if overwrite:
        return
    candidates = [paths["answer"]]
    if "masks" in outputs:
        candidates.append(paths["mask"])
    vectors = paths["vectors"]
    if str(vectors).lower().endswith(".gpkg") and any(o in outputs for o in ("boxes", "points", "contours")):
        candidates.append(vectors)
    existing = [str(p) for p in candidates if p.exists()]
    if existing:
        raise UserError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace, or choose another -o",
                        EXIT_CANTCREAT)


def _write_answer_json(answer, path: Path, overwrite: bool) -> Path:
    from .writers import OutputError
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return atomic_write_text(path, answer.to_json(indent=2), overwrite=overwrite)
    except FileExistsError:
        raise OutputError(f"{path} already exists; pass --overwrite to replace it") from None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def _remove(paths: List[Path]) -> None:
    for p in paths:
        try:
            p.unlink()
        except OSError:
            pass


def _print_summary(answer, written: List[Path], raster) -> None:
    print(f"Question: {answer.question}")
    print(f"Profile: {answer.profile}   models: {', '.join(f'{k}={v}' for k, v in answer.models.items())}")
    print("Reasoning:")
    print("  " + (answer.reasoning.strip().replace("\n", "\n  ") if answer.reasoning.strip() else "(none given)"))
    print(f"Objects: {len(answer.objects)}  (parse: {answer.parse_status})")
    for obj in answer.objects:
        box = ", ".join(f"{v:.1f}" for v in obj.box) if obj.box else "-"
        area = sum(p.area() for p in obj.polygons)
        score = f"{obj.score:.3f}" if obj.score is not None else "-"
        print(f"  #{obj.index}: box [{box}] px, {len(obj.points)} point(s), score {score}, "
              f"contour area {area:.0f} px")
    for problem in answer.parse_problems:
        print(f"  note: {problem}")
    for warning in answer.warnings:
        print(f"  warning: {warning}")
    print(f"CRS: {raster.crs_name or 'none (pixel coordinates)'}")
    print("Written:")
    for path in written:
        print(f"  {path}")


TINY_MANIFEST = "models.json"


def cmd_make_tiny(args) -> int:
    from .tiny import make_tiny_models
    target = Path(args.directory)
    paths = make_tiny_models(target)
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


def cmd_serve(args) -> int:
    from .auth import TokenFileError, load_or_create_token, token_file_path
    from .remote_reasoner import API_KEY_ENV
    from .server import ServiceConfig, run_server

    recorded = _read_recorded_output(args.reasoner_output) if args.reasoner_output else None
    segmenter = None if args.segmenter.strip().lower() in ("", "none") else args.segmenter
    config = ServiceConfig(
        profile=args.profile, reasoner=args.reasoner, adapter=args.adapter, segmenter=segmenter,
        recorded_output=recorded, recorded_source=args.reasoner_output, reasoner_url=args.reasoner_url,
        reasoner_model=args.reasoner_model, reasoner_api_key=os.environ.get(API_KEY_ENV) or None,
        device=args.device, dtype=args.dtype, queue_size=args.queue_size, timeout_s=args.timeout,
        max_body_bytes=args.max_body_bytes, max_image_pixels=args.max_image_pixels)
    try:
        config.validate()
        if args.reasoner_url:
            from .remote_reasoner import chat_completions_url
            chat_completions_url(args.reasoner_url)
    except UnknownProfileError as exc:
        raise UserError(str(exc), EXIT_USAGE) from None
    except ValueError as exc:
        raise UserError(str(exc), EXIT_USAGE) from None
    if not 0 <= args.port <= 65535:
        raise UserError("--port must be between 0 and 65535 (0 picks a free port)", EXIT_USAGE)
    token_file = token_file_path(args.token_file)
    try:
        token = load_or_create_token(token_file)
    except TokenFileError as exc:
        raise UserError(str(exc), EXIT_CONFIG) from None
    try:
        run_server(config, host=args.host, port=args.port, token=token, token_file=token_file,
                   log_level=args.log_level)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl+C once it has shut down cleanly
        print("georeasoner: server stopped", file=sys.stderr)
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; choose another --port "
                        f"(0 picks a free one) or --host", EXIT_UNAVAILABLE) from None
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
