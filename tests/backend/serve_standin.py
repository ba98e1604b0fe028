"""`georeasoner serve` exactly as the CLI runs it, with the models replaced by the rule-based
TimedCascade (tests only): `python tests/backend/serve_standin.py serve --port 0 ...`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from georeasoner_plugin.backend import cli  # noqa: E402
from standins import TimedCascade  # noqa: E402

if __name__ == "__main__":
    args = cli.build_parser().parse_args(sys.argv[1:])
    cascade = TimedCascade(seconds=0.0)
    try:
        code = cli.cmd_serve(args, loader=lambda config: (cascade, {"device": "cpu", "dtype": "float32"}))
    except cli.UserError as exc:
        print(f"georeasoner: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    sys.exit(code)
