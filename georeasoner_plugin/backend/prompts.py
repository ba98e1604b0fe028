"""What a segmenter is asked: one object's box and points, in pixels of the image. No torch here, so
the tiled engine and other light modules build prompts without loading the model stack."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

# Prompt-encoder labels of SAM/SAM2. A box enters as its two corners with labels 2 and 3, exactly as
# Meta's SAM2 predictor feeds it; -1 is SAM's "not a point" token, used to pad shorter prompts.
LABEL_POSITIVE = 1
LABEL_NEGATIVE = 0
LABEL_BOX_TOP_LEFT = 2
LABEL_BOX_BOTTOM_RIGHT = 3
LABEL_NOT_A_POINT = -1


@dataclass
class SamPrompt:
    """One object's prompt in pixel coordinates of the image (x right, y down, 0..width / 0..height)."""

    box: Optional[Tuple[float, float, float, float]] = None
    points: List[Tuple[float, float]] = field(default_factory=list)
    labels: Optional[List[int]] = None  # per point: 1 positive, 0 negative (None: all positive)
