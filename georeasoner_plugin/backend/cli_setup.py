"""The set-up subcommands of `georeasoner`: `doctor` and `download` (the plugin runs both).

Kept apart from cli.py so that file stays about asking and serving. Neither command imports torch
at module level: `doctor` must run (and say so) where torch is missing.
"""
from __future__ import annotations

import json
import signal
import sys

from ..core.catalog import DEFAULT_SEGMENTER
from ..core.profiles import DEFAULT_PROFILE, PROFILES, UnknownProfileError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def add_setup_commands(sub) -> None:
    doctor = sub.add_parser("doctor", help="check Python, torch, GPU, disk and models; one line of advice per problem")
    doctor.add_argument("--profile", default=DEFAULT_PROFILE, help=f"prompt profile ({', '.join(PROFILES)})")
    doctor.add_argument("--reasoner", help="reasoning model: hub id or folder (default: the profile's checkpoint); none when the "
                             "reasoner is replayed or remote")
    doctor.add_argument("--segmenter", default=DEFAULT_SEGMENTER, help="SAM2 model: hub id or folder, or none")
    doctor.add_argument("--json", action="store_true", help="print the report as one JSON object")

    download = sub.add_parser("download", help="download a checkpoint from the Hugging Face hub (safetensors only)")
    download.add_argument("repo_id", help="hub id, e.g. 1e12Leon/RemoteReasoner or facebook/sam2.1-hiera-large")
    download.add_argument("--revision", help="branch, tag or commit (default: main)")
    download.add_argument("--progress-json", action="store_true",
                          help="print machine-readable JSON lines (plan, progress, verify, done, error, cancelled)")


def cmd_doctor(args) -> int:
    from .doctor import format_text, run

    try:
        report = run(profile=args.profile, reasoner=args.reasoner, segmenter=args.segmenter)
    except UnknownProfileError as exc:
        # (cli.UserError is not raised here: under `python -m ...cli` that module is __main__, another class)
        print(f"georeasoner: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(report, indent=2) if args.json else format_text(report))
    return EXIT_OK if report["ok"] else EXIT_FAILED


def cmd_download(args) -> int:
    from .download import DownloadError, download, plain_printer, print_event

    emit = print_event if args.progress_json else plain_printer()

    def on_term(_signum, _frame):
        # The partial file stays in the cache as *.incomplete; the next run resumes it.
        emit({"event": "cancelled"})
        sys.stdout.flush()
        import os
        os._exit(EXIT_INTERRUPTED)

    signal.signal(signal.SIGTERM, on_term)
    try:
        download(args.repo_id, revision=args.revision, on_event=emit)
    except KeyboardInterrupt:
        emit({"event": "cancelled"})
        return EXIT_INTERRUPTED
    except DownloadError as exc:
        if args.progress_json:
            emit({"event": "error", "code": exc.code, "message": str(exc)})
        else:
            print(f"georeasoner: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


SETUP_COMMANDS = {"doctor": cmd_doctor, "download": cmd_download}
