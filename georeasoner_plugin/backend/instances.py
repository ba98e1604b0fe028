"""SAM 3 instance expansion (`--expand instances`): every instance of the reasoner's noun phrase.

A reasoner names what it found ("label": "centre-pivot field"); SAM 3's detector (transformers'
Sam3Model, text-prompted) then finds every instance of that phrase in the image. The cascade keeps
those inside the reasoner's boxes, or all of them when the question asks for "all" of something:
"all buildings with solar panels" becomes one polygon per building instead of one box around them.

The detector's image features depend only on the image: they are cached like SAM's embeddings, so
several phrases (or questions) about one image encode it once.
"""
from __future__ import annotations

import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .models import ModelFamily, load_model_and_processor
from .segmenter import image_key

# SAM 3's detector: its own "sam3" checkpoints, and the detector half of facebook/sam3 ("sam3_video",
# which Sam3Model reads through its detector_config).
SAM3_DETECTOR_FAMILY = ModelFamily("SAM 3 detector", "Sam3Model")
DETECTOR_FAMILIES: Dict[str, ModelFamily] = {"sam3": SAM3_DETECTOR_FAMILY, "sam3_video": SAM3_DETECTOR_FAMILY}
DEFAULT_SCORE_THRESHOLD = 0.5
DEFAULT_MASK_THRESHOLD = 0.5
MAX_INSTANCES = 200  # per phrase; SAM 3's decoder proposes 200 queries
MAX_PHRASE_CHARS = 100

# "all"/"every"/"each" asks for the whole image; anything else for the reasoner's own boxes.
_WHOLE_IMAGE = re.compile(r"\b(all|every|each|any)\b", re.IGNORECASE)


def asks_for_all(question: str) -> bool:
    """Whether the question asks for all instances of something in the image."""
    return bool(_WHOLE_IMAGE.search(question or ""))


def clean_phrase(label: Optional[str]) -> Optional[str]:
    """The noun phrase SAM 3 is prompted with: one line, trimmed; None when there is none."""
    if not isinstance(label, str):
        return None
    phrase = " ".join(label.split()).strip(" .,:;\"'")
    return phrase[:MAX_PHRASE_CHARS] or None


@dataclass
class Instance:
    mask: np.ndarray  # bool (height, width) of the image
    box: Tuple[float, float, float, float]  # pixels of the image
    score: float


class InstanceFinder:
    """SAM 3's detector prompted with a noun phrase; several phrases per image share one encoding."""

    def __init__(self, model: Union[str, os.PathLike], device: Union[str, torch.device] = "auto",
                 dtype: Union[str, torch.dtype] = "auto", threshold: float = DEFAULT_SCORE_THRESHOLD,
                 mask_threshold: float = DEFAULT_MASK_THRESHOLD, cache_size: int = 2,
                 revision: Optional[str] = None):
        if not 0.0 <= threshold <= 1.0 or not 0.0 <= mask_threshold <= 1.0:
            raise ValueError("instance score and mask thresholds must be between 0 and 1")
        loaded = load_model_and_processor(model, families=DETECTOR_FAMILIES, role="instance model (SAM 3)",
                                          revision=revision, device=device, dtype=dtype)
        self.name = loaded.name
        self.model = loaded.model
        self.processor = loaded.processor
        self.device = loaded.device
        self.dtype = loaded.dtype
        self.threshold = float(threshold)
        self.mask_threshold = float(mask_threshold)
        self.cache_size = int(cache_size)
        self._cache: "OrderedDict[str, object]" = OrderedDict()
        self._lock = threading.Lock()
        self.last_timings: Dict[str, float] = {}

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def _vision(self, image: np.ndarray):
        key = image_key(image)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached, True
        encoded = self.processor(images=image, input_data_format="channels_last", return_tensors="pt")
        features = self.model.get_vision_features(pixel_values=encoded["pixel_values"].to(self.device, self.dtype))
        if self.cache_size:
            self._cache[key] = features
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return features, False

    @torch.inference_mode()
    def find(self, image: np.ndarray, phrases: Sequence[str]) -> Dict[str, List[Instance]]:
        """{phrase: instances above the score threshold, best first} for an (H, W, 3) uint8 image."""
        height, width = image.shape[:2]
        found: Dict[str, List[Instance]] = {}
        with self._lock:
            started = time.perf_counter()
            features, hit = self._vision(image)
            encoded = time.perf_counter()
            for phrase in dict.fromkeys(phrases):
                text = self.processor(text=[phrase], return_tensors="pt")
                outputs = self.model(vision_embeds=features, input_ids=text["input_ids"].to(self.device),
                                     attention_mask=text["attention_mask"].to(self.device))
                result = self.processor.post_process_instance_segmentation(
                    outputs, threshold=self.threshold, mask_threshold=self.mask_threshold,
                    target_sizes=[(height, width)])[0]
                order = torch.argsort(result["scores"], descending=True)[:MAX_INSTANCES]
                found[phrase] = [
                    Instance(mask=result["masks"][i].cpu().numpy().astype(bool, copy=False),
                             box=_clip_box(result["boxes"][i].tolist(), width, height),
                             score=float(result["scores"][i]))
                    for i in order.tolist()]
            finished = time.perf_counter()
        self.last_timings = {"encode_s": encoded - started, "decode_s": finished - encoded, "cache_hit": hit}
        return found


def _clip_box(box: Sequence[float], width: int, height: int) -> Tuple[float, float, float, float]:
    """The detector's box, in image pixels, kept on the image (its regressed corners may overshoot)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return (min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height))


def _inside(point: Sequence[float], box: Sequence[float]) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def select_instances(instances: Sequence[Instance], boxes: Sequence[Sequence[float]], whole_image: bool,
                     min_pixels: int = 1) -> List[Instance]:
    """The instances the answer keeps: all of them (whole_image), else those centred in one of the boxes."""
    kept = []
    for instance in instances:
        if int(instance.mask.sum()) < min_pixels:
            continue
        x1, y1, x2, y2 = instance.box
        centre = ((x1 + x2) / 2.0, (y1 + y2) / 2.0)
        if whole_image or any(_inside(centre, box) for box in boxes):
            kept.append(instance)
    return kept
