"""`georeasoner serve` as the CLI runs it, with the models replaced by a rule-based stand-in that
reports what it was given (tests only): every answer's raw_output is "sha256=<hex> shape=HxWx3" of
the decoded image the cascade received, so a QGIS test can check that every image transport
delivers exactly the captured pixels. Run with the backend's Python:
`python tests/qgis/serve_pixels.py serve --port 0 ...`."""
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from georeasoner_plugin.backend import cli  # noqa: E402
from georeasoner_plugin.backend.cascade import CascadeResult  # noqa: E402
from georeasoner_plugin.core.protocol import Answer  # noqa: E402


class PixelReportingCascade:
    def run(self, image, question, *, profile=None, options=None, raw_output=None, valid=None, on_event=None,
            should_stop=None):
        pixels = np.ascontiguousarray(image, dtype=np.uint8)
        height, width = pixels.shape[:2]
        report = f"sha256={hashlib.sha256(pixels.tobytes()).hexdigest()} shape={'x'.join(map(str, pixels.shape))}"
        answer = Answer(question=question, profile=profile or "remotereasoner", image_width=width,
                        image_height=height, raw_output=report, parse_status="empty")
        return CascadeResult(answer=answer)


if __name__ == "__main__":
    args = cli.build_parser().parse_args(sys.argv[1:])
    cascade = PixelReportingCascade()
    try:
        code = cli.cmd_serve(args, loader=lambda config: (cascade, {"device": "cpu", "dtype": "float32"}))
    except cli.UserError as exc:
        print(f"georeasoner: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    sys.exit(code)
