"""`training rewards`: how one completion is scored, reward by reward.

    training rewards --profile P (--set NAME | --rewards a,b,...) --completion FILE|-
                     --truth JSON --image-size W,H [--json]

``--truth`` is ``{"boxes": [[x1, y1, x2, y2], ...], "points": [[[x, y], [x, y]], ...]}`` in pixels
of the image (inline JSON, or a file holding it); it is mapped to the profile's model frame exactly
as training maps a prepared record (training.data), so the numbers are those the trainer's
rewards would give. ``total`` is the plain sum, as both papers add their rewards (RemoteReasoner
Eq. 6; GRASP Section 3.3).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from georeasoner_plugin.core.frames import FrameError
from georeasoner_plugin.core.profiles import PROFILES, get_profile

from georeasoner_plugin.core.exit_codes import EXIT_OK

from .errors import OptionError
from .rewards import REWARD_SETS, REWARDS

# A bad --truth, --image-size, --rewards or completion; the message says what to fix.
RewardInputError = OptionError


def parse_image_size(text: str) -> Tuple[int, int]:
    try:
        width, height = (int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise RewardInputError(f"--image-size takes W,H in pixels (e.g. 1024,768), got {text!r}") from None
    if width <= 0 or height <= 0:
        raise RewardInputError(f"--image-size must be positive, got {text!r}")
    return width, height


def read_truth(text: str) -> Dict[str, Any]:
    """The --truth value: inline JSON, or the path of a file holding it."""
    source = text
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise RewardInputError(f"--truth {text!r} is neither JSON ({{\"boxes\": ..., \"points\": ...}}) "
                                   "nor an existing file")
        source = path.read_text(encoding="utf-8")
    try:
        truth = json.loads(source)
    except ValueError as exc:
        raise RewardInputError(f"--truth is not valid JSON: {exc}") from None
    if not isinstance(truth, dict) or set(truth) - {"boxes", "points"}:
        raise RewardInputError('--truth must be an object with "boxes" and optionally "points"')
    boxes = truth.get("boxes", [])
    points = truth.get("points")
    if not isinstance(boxes, list) or any(not isinstance(b, list) or len(b) != 4 for b in boxes):
        raise RewardInputError('--truth "boxes" must be a list of [x1, y1, x2, y2]')
    if points is None:
        points = [[] for _ in boxes]
    if not isinstance(points, list) or len(points) != len(boxes) or any(
            not isinstance(ps, list) or any(not isinstance(p, list) or len(p) != 2 for p in ps) for ps in points):
        raise RewardInputError('--truth "points" must hold one list of [x, y] points per box')
    return {"boxes": boxes, "points": points}


def reward_names(set_name: str = None, names: str = None) -> List[str]:
    if set_name:
        if set_name not in REWARD_SETS:
            raise RewardInputError(f"unknown reward set {set_name!r}; known sets: {', '.join(REWARD_SETS)}")
        return list(REWARD_SETS[set_name])
    chosen = [n.strip() for n in (names or "").split(",") if n.strip()]
    unknown = [n for n in chosen if n not in REWARDS]
    if unknown or not chosen:
        hint = " (mask_iou needs a segmenter and is scored only in training)" if "mask_iou" in unknown else ""
        raise RewardInputError(f"--rewards takes a comma-separated list of {', '.join(REWARDS)}; "
                               f"got {names!r}{hint}")
    return chosen


def score_completion(completion: str, profile: str, names: Sequence[str], truth: Dict[str, Any],
                     image_size: Tuple[int, int]) -> Dict[str, Any]:
    """{"rewards": {name: value}, "total": sum}, ground truth mapped to the profile's frame as in training."""
    from .data import frame_spec_for_profile, ground_truth_in_frame

    prof = get_profile(profile)
    width, height = image_size
    try:
        frame = frame_spec_for_profile(prof).frame_for(width, height)
    except FrameError as exc:
        raise RewardInputError(str(exc)) from None
    try:
        gt_boxes, gt_points = ground_truth_in_frame(frame, truth["boxes"], truth["points"])
        columns = {"gt_boxes": gt_boxes, "gt_points": gt_points, "profile": prof.name,
                   "image_width": width, "image_height": height,
                   "frame_width": frame.frame_width, "frame_height": frame.frame_height}
        values = {name: float(REWARDS[name](completion, **columns)) for name in names}
    except ValueError as exc:
        raise RewardInputError(f"--truth: {exc}") from None
    return {"rewards": values, "total": sum(values.values())}


def register(subparsers) -> None:
    p = subparsers.add_parser("rewards", help="score one completion with the training rewards",
                              description="Print each reward of a completion against a ground truth given in "
                                          "image pixels, mapped to the profile's frame as in training.")
    p.add_argument("--profile", required=True, choices=sorted(PROFILES))
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--set", dest="reward_set", choices=sorted(REWARD_SETS), help="a paper's reward set")
    which.add_argument("--rewards", help="comma-separated reward names: " + ", ".join(REWARDS))
    p.add_argument("--completion", required=True, metavar="FILE|-", help="the completion text; - reads stdin")
    p.add_argument("--truth", required=True, metavar="JSON",
                   help='{"boxes": [[x1,y1,x2,y2], ...], "points": [[[x,y],[x,y]], ...]} in image pixels, '
                        "or a file holding it")
    p.add_argument("--image-size", required=True, metavar="W,H", help="the image's size in pixels")
    p.add_argument("--json", action="store_true", help='print {"rewards": {...}, "total": ...}')


def run(args) -> int:
    names = reward_names(args.reward_set, args.rewards)
    size = parse_image_size(args.image_size)
    truth = read_truth(args.truth)
    if args.completion == "-":
        completion = sys.stdin.read()
    else:
        try:
            completion = Path(args.completion).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RewardInputError(f"--completion {args.completion}: "
                                   f"{getattr(exc, 'strerror', None) or exc}") from None
    result = score_completion(completion, args.profile, names, truth, size)
    if args.json:
        print(json.dumps(result))
    else:
        width = max(len(n) for n in result["rewards"])
        for name, value in result["rewards"].items():
            print(f"{name:<{width}}  {value:.4f}")
        print(f"{'total':<{width}}  {result['total']:.4f}")
    return EXIT_OK
