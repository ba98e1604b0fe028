"""`make demo`: one question about the NAIP sample, end to end.

With published weights on disk (hub cache or folders named by GEOREASONER_REASONER and
GEOREASONER_SEGMENTER), the real cascade answers. Without them, the demo says exactly what to
download and how, then runs the whole chain on tiny random models so every stage still runs:
the tiny reasoner's own (meaningless) output is shown, and a recorded answer for this image is
replayed through the parser, SAM2 (tiny, random), the vectorizer and the writers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..core.profiles import get_profile
from . import cli

RECORDED_ANSWER = Path(__file__).resolve().parents[2] / "examples" / "naip_lakes_remotereasoner.txt"

BANNER = "=" * 78


def _published_models(profile_name: str):
    """(reasoner, segmenter) folders when both are available offline, else (None, message)."""
    from .models import ModelLoadError, resolve_model_dir

    profile = get_profile(profile_name)
    reasoner = os.environ.get("GEOREASONER_REASONER") or profile.default_checkpoint
    segmenter = os.environ.get("GEOREASONER_SEGMENTER") or cli.DEFAULT_SEGMENTER
    # The demo never starts a 16 GB download by surprise: look in the local cache only.
    os.environ["HF_HUB_OFFLINE"] = "1"
    missing = []
    for role, model in (("reasoner", reasoner), ("segmenter", segmenter)):
        if not model:
            missing.append(f"  {role}: profile {profile_name} has no published checkpoint")
            continue
        try:
            resolve_model_dir(model)
        except ModelLoadError as exc:
            missing.append(f"  {role} {model}: {str(exc).splitlines()[0]}")
    if missing:
        return None, "\n".join(missing), (reasoner, segmenter)
    return (reasoner, segmenter), "", (reasoner, segmenter)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="make demo")
    parser.add_argument("--image", required=True)
    parser.add_argument("--question", required=True)
    parser.add_argument("--profile", default="remotereasoner")
    parser.add_argument("--models", choices=("published", "tiny"), default="published")
    parser.add_argument("--out", default="out/demo.gpkg")
    parser.add_argument("--tiny-dir", default=".cache/tiny-models")
    args = parser.parse_args(argv)

    if not Path(args.image).exists():
        print(f"make demo: the image {args.image} does not exist. The default is the NAIP sample in "
              "../shared/data; pass IMAGE=/path/to/your.tif", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    if args.models == "published":
        found, why, (reasoner, segmenter) = _published_models(args.profile)
        if found:
            return cli.main(["ask", args.image, args.question, "-o", str(out), "--profile", args.profile,
                             "--reasoner", found[0], "--segmenter", found[1], "--overwrite"])
        print(BANNER)
        print("The published weights are not on this machine:")
        print(why)
        print("To run the real models, on a machine with internet access:")
        print("  pip install -U huggingface-hub")
        print(f"  hf download {reasoner} --exclude '*.bin' '*.pt' --local-dir models/reasoner   # ~16 GB")
        print(f"  hf download {segmenter} --exclude '*.bin' '*.pt' --local-dir models/sam2")
        print("then copy the folders here and run:")
        print("  make demo GEOREASONER_REASONER=models/reasoner GEOREASONER_SEGMENTER=models/sam2")
        print("(or set HF_HOME to a hub cache that holds them). A CUDA GPU with >= 24 GB is advised.")
        print("Running the whole chain on tiny RANDOM models instead (make demo MODELS=tiny).")
        print(BANNER)
    return _tiny_demo(args, out)


def _tiny_demo(args, out: Path) -> int:
    tiny_dir = Path(args.tiny_dir)
    manifest = tiny_dir / cli.TINY_MANIFEST
    if not manifest.exists():
        code = cli.main(["make-tiny", str(tiny_dir)])
        if code:
            return code
    paths = json.loads(manifest.read_text())
    reasoner, segmenter = paths["reasoner"], paths["segmenter"]
    print(BANNER)
    print("TINY RANDOM MODELS: every stage runs for real, but the answers are MEANINGLESS.")
    print(BANNER)
    print("Step 1: the tiny reasoner answers (random weights write random text):")
    code = cli.main(["ask", args.image, args.question, "-o", str(out.with_name(out.stem + "_tiny_raw.gpkg")),
                     "--profile", args.profile, "--reasoner", str(reasoner), "--segmenter", str(segmenter),
                     "--max-new-tokens", "48", "--seed", "0", "--overwrite"])
    if code:
        print("(As expected, random weights do not write a readable answer.)")
    print(BANNER)
    print(f"Step 2: a HAND-WRITTEN answer for this image ({RECORDED_ANSWER.name}: written by a person in")
    print("RemoteReasoner's output format, NOT produced by any model) replayed through the parser,")
    print("tiny SAM2 (random masks), the vectorizer and the writers:")
    return cli.main(["ask", args.image, args.question, "-o", str(out), "--profile", "remotereasoner",
                     "--segmenter", str(segmenter), "--reasoner-output", str(RECORDED_ANSWER), "--overwrite"])


if __name__ == "__main__":
    sys.exit(main())
