"""`georeasoner serve`: its options (defaults from core/api.py) and the command."""
from __future__ import annotations

import os
import sys

from ..core.api import (DEFAULT_BODY_TIMEOUT_S, DEFAULT_HEADER_TIMEOUT_S, DEFAULT_HOST, DEFAULT_IMAGE_MEMORY_BYTES,
                        DEFAULT_KEEP_ALIVE_S, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_DECODES,
                        DEFAULT_PORT, DEFAULT_QUEUE_SIZE, DEFAULT_SHUTDOWN_GRACE_S, DEFAULT_TIMEOUT_S,
                        MAX_IMAGE_PIXELS, TOKEN_FILE_ENV, is_loopback_host)
from ..core.exit_codes import EXIT_CONFIG, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from ..core.exit_codes import CommandError as UserError
from ..core.profiles import DEFAULT_PROFILE, PROFILES, UnknownProfileError
from .cli_ask import read_recorded_output

DEFAULT_SEGMENTER = "facebook/sam2.1-hiera-large"


def add_serve_parser(sub):
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
    serve.add_argument("--image-memory-mb", type=int, default=DEFAULT_IMAGE_MEMORY_BYTES // 2**20,
                       help="memory for decoded images held at once (decoding, queued, running); beyond it asks "
                            f"get 503 with Retry-After (default {DEFAULT_IMAGE_MEMORY_BYTES // 2**20})")
    serve.add_argument("--max-decodes", type=int, default=DEFAULT_MAX_DECODES,
                       help=f"images decoded at once (default {DEFAULT_MAX_DECODES})")
    serve.add_argument("--header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT_S,
                       help=f"seconds a client has to send its request headers (default {DEFAULT_HEADER_TIMEOUT_S:g})")
    serve.add_argument("--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT_S,
                       help=f"longest pause while a request body is sent, seconds (default {DEFAULT_BODY_TIMEOUT_S:g})")
    serve.add_argument("--keep-alive", type=float, default=DEFAULT_KEEP_ALIVE_S,
                       help=f"seconds an idle keep-alive connection stays open (default {DEFAULT_KEEP_ALIVE_S:g})")
    serve.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                       help=f"open connections at once; more get 503 (default {DEFAULT_MAX_CONNECTIONS}, lowered to "
                            f"fit the file-descriptor limit)")
    serve.add_argument("--shutdown-grace", type=float, default=DEFAULT_SHUTDOWN_GRACE_S,
                       help="on SIGTERM or Ctrl+C, seconds the running request may still take before it is "
                            f"cancelled with 503 shutting_down (default {DEFAULT_SHUTDOWN_GRACE_S:g})")
    serve.add_argument("--shared-capture-dir", metavar="DIR",
                       help="a folder the QGIS plugin on this machine writes its captures into; asks then send "
                            "the file's name instead of uploading the image (listed in /v1/info; the plugin uses it "
                            "only for a backend on a loopback address). Default on loopback: 'captures' beside the "
                            "token file, private to you")
    serve.add_argument("--no-shared-capture-dir", action="store_true",
                       help="offer no shared capture folder: clients upload every image")
    serve.add_argument("--http-parser", choices=("auto", "httptools", "h11"), default="auto",
                       help="HTTP/1.1 parser: httptools (faster uploads) where installed, else h11 (default auto)")
    serve.add_argument("--token-file", metavar="PATH",
                       help=f"bearer token file (default: ${TOKEN_FILE_ENV}, else "
                            "$XDG_CONFIG_HOME/georeasoner/token or ~/.config/georeasoner/token); created if missing")
    serve.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    return serve


def cmd_serve(args, loader=None) -> int:
    """`serve`; `loader` replaces the model loading (tests run the real server on a rule-based cascade)."""
    from .cli import _instance_model
    from .auth import TokenFileError, load_or_create_token, token_file_path
    from .remote_reasoner import API_KEY_ENV
    from .server import ServiceConfig, run_server

    if args.shared_capture_dir and args.no_shared_capture_dir:
        raise UserError("--shared-capture-dir names a folder and --no-shared-capture-dir offers none; give one",
                        EXIT_USAGE)
    recorded = read_recorded_output(args.reasoner_output) if args.reasoner_output else None
    segmenter = None if args.segmenter.strip().lower() in ("", "none") else args.segmenter
    config = ServiceConfig(
        profile=args.profile, reasoner=args.reasoner, adapter=args.adapter, segmenter=segmenter,
        recorded_output=recorded, recorded_source=args.reasoner_output, reasoner_url=args.reasoner_url,
        reasoner_model=args.reasoner_model, reasoner_api_key=os.environ.get(API_KEY_ENV) or None,
        device=args.device, dtype=args.dtype, queue_size=args.queue_size, timeout_s=args.timeout,
        max_body_bytes=args.max_body_bytes, max_image_pixels=args.max_image_pixels,
        image_memory_bytes=args.image_memory_mb * 2**20, max_decodes=args.max_decodes,
        header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout, keep_alive_s=args.keep_alive,
        max_connections=args.max_connections, shutdown_grace_s=args.shutdown_grace,
        shared_capture_dir=args.shared_capture_dir, http_parser=args.http_parser,
        instance_model=_instance_model(args, segmenter))
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
    if config.shared_capture_dir is None and not args.no_shared_capture_dir and is_loopback_host(args.host):
        from ..core.transport import private_capture_dir

        config.shared_capture_dir = private_capture_dir(token_file.parent / "captures")
    try:
        run_server(config, host=args.host, port=args.port, token=token, token_file=token_file,
                   log_level=args.log_level, loader=loader)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl+C once it has shut down cleanly
        print("georeasoner: server stopped", file=sys.stderr)
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; choose another --port "
                        f"(0 picks a free one) or --host", EXIT_UNAVAILABLE) from None
    return EXIT_OK
