"""`training evaluate`'s options and the protocol choices they name."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from georeasoner_plugin.core.profiles import get_profile

from ..errors import OptionError

TASKS = ("region", "pixel", "contour")
RESOLUTIONS = {
    "original": "each image at its own size",
    "letterbox1024": "longest side resized to 1024 and padded to 1024 x 1024 (SegEarth-R1)",
    "resize840": "resized to 840 x 840, aspect ratio not kept (Think2Seg-RS)",
}
QUESTION_RULES = {
    "first": "the first question of each image (SegEarth-R1)",
    "seeded-random": "one question per image drawn with a seeded random generator (Think2Seg-RS's rule, "
                     "our own draw)",
    "all": "every question of every image",
}
ENGINES = ("auto", "transformers", "vllm")
LETTERBOX_SIDE = 1024
FIXED_SIDE = 840
STATUS_ERROR = "error"  # the cascade refused the sample (e.g. an image beyond its size limit)
SAMPLES_FILE = "samples.jsonl"
RUN_FILE = "run.json"
OVERLAY_SIDE = 768
DEFAULT_OVERLAYS = 6
DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_NEW_TOKENS = 1024
MISSING_SHOWN = 5
# What a rerun into the same OUT must share with the run that wrote samples.jsonl.
RESUME_KEYS = ("data", "split", "profile", "model", "adapter", "segmenter", "tasks", "resolution", "questions",
               "seed", "max_new_tokens", "temperature", "tolerance_kernel")
# Evaluation scores every target, however small (prepare's training default drops specks).
EVAL_MIN_AREA = 1
TOLERANCE_READINGS = {
    "disc": "a boundary pixel matches within Euclidean distance <= 1 or 3 px of the other boundary "
            "(pixel centres)",
    "square": "a boundary pixel matches within a (2t+1) x (2t+1) square kernel, chessboard distance <= 1 or 3 px",
}


# --------------------------------------------------------------------------- options

@dataclass
class EvalOptions:
    data: str
    split: str
    profile: str
    out: str
    model: Optional[str] = None
    adapter: Optional[str] = None
    segmenter: Optional[str] = None
    tasks: Tuple[str, ...] = TASKS
    resolution: str = "original"
    questions: str = "first"
    seed: int = 0
    limit: Optional[int] = None
    recorded: Optional[str] = None
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.0
    batch_size: int = DEFAULT_BATCH_SIZE
    overlays: int = DEFAULT_OVERLAYS
    engine: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    progress: bool = True
    resegment: bool = False
    tolerance_kernel: str = "disc"

    @property
    def needs_masks(self) -> bool:
        return "pixel" in self.tasks or "contour" in self.tasks

    @property
    def model_label(self) -> str:
        if self.model:
            return self.model
        if self.recorded:
            return f"recorded:{Path(self.recorded).name}"
        return get_profile(self.profile).default_checkpoint or "?"

    def protocol(self) -> Dict[str, object]:
        return {
            "data": str(Path(self.data).resolve()),
            "split": self.split,
            "profile": self.profile,
            "model": self.model_label,
            "adapter": self.adapter,
            "segmenter": self.segmenter if self.needs_masks else None,
            "tasks": list(self.tasks),
            "resolution": self.resolution,
            "questions": self.questions,
            "seed": self.seed,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "tolerance_kernel": self.tolerance_kernel,
        }


def parse_tasks(text: str) -> Tuple[str, ...]:
    tasks = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise OptionError(f"--tasks takes a comma-separated list of {', '.join(TASKS)}; got {text!r}")
    return tuple(t for t in TASKS if t in tasks)
