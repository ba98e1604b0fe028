"""SAM2 (Sam2Model) or SAM 3 (its tracker, Sam3TrackerModel): boxes and points in, full-resolution
boolean masks out. The checkpoint's config.json (model_type) picks the class: models.SEGMENTER_FAMILIES.
Both share the design this module relies on: get_image_embeddings() once per image, then one prompt
encoder + mask decoder batch with every object's box corners (labels 2, 3) and points (label 1).

The vision encoder is the expensive half of SAM2 and depends only on the image, so its output is
kept in a small LRU cache keyed by the image's content: a follow-up question about the same image
runs only the prompt encoder and the mask decoder.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .models import SEGMENTER_FAMILIES, ModelLoadError, load_model_and_processor

SAM2_MODEL_TYPES = ("sam2",)
SEGMENTER_MODEL_TYPES = tuple(SEGMENTER_FAMILIES)

# The prompt type and SAM's label values live in a torch-free module (the tiled engine uses them too).
from .prompts import (LABEL_BOX_BOTTOM_RIGHT, LABEL_BOX_TOP_LEFT, LABEL_NEGATIVE,  # noqa: E402,F401 - re-exported
                      LABEL_NOT_A_POINT, LABEL_POSITIVE, SamPrompt)


@dataclass
class SegmentResult:
    mask: np.ndarray  # bool, (height, width) of the image
    score: float  # SAM's predicted IoU of the mask


class CacheInfo(NamedTuple):
    """Counters of the image-embedding cache (Segmenter.cache_info()); read as info.hits or info["hits"]."""

    hits: int
    misses: int
    size: int
    maxsize: int

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self._fields:
                raise KeyError(key)
            return getattr(self, key)
        return tuple.__getitem__(self, key)


@dataclass
class _CachedImage:
    embeddings: List[torch.Tensor]
    original_size: Tuple[int, int]


def image_key(image: np.ndarray) -> str:
    """Content key of an image: same pixels, shape and dtype give the same key."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(repr((image.shape, image.dtype.str)).encode("ascii"))
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


class Segmenter:
    """SAM2 / SAM 3 mask prediction for several objects of one image in a single decoder batch."""

    def __init__(self, model: Union[str, os.PathLike], device: Union[str, torch.device] = "auto",
                 dtype: Union[str, torch.dtype] = "auto", cache_size: int = 4, revision: Optional[str] = None):
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0")
        loaded = load_model_and_processor(model, families=SEGMENTER_FAMILIES, role="segmenter",
                                          revision=revision, device=device, dtype=dtype)
        self.family = loaded.family
        self.name = loaded.name
        self.model = loaded.model
        self.processor = loaded.processor
        self.model_dir = loaded.model_dir
        self.device = loaded.device
        self.dtype = loaded.dtype
        self._check_sizes_agree()
        self.cache_size = int(cache_size)
        self._cache: "OrderedDict[str, _CachedImage]" = OrderedDict()
        self._hits = 0
        self._misses = 0
        self._lock = threading.Lock()
        self.last_timings: Dict[str, float] = {}

    def _check_sizes_agree(self) -> None:
        """The image resize, the prompt coordinate scale and the prompt encoder must share one input size."""
        model_size = int(self.model.config.prompt_encoder_config.image_size)
        resize = self.processor.image_processor.size
        resize_hw = (int(resize["height"]), int(resize["width"]))
        target = int(self.processor.target_size)
        if resize_hw != (model_size, model_size) or target != model_size:
            raise ModelLoadError(
                f"{self.name}: processor and model disagree on {self.family.name}'s input size (image resize {resize_hw}, "
                f"prompt scale {target}, prompt encoder {model_size}); masks would not line up with the prompts")

    # ----------------------------------------------------------------------------------------- cache
    def cache_info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._cache), self.cache_size)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def _embed(self, image: np.ndarray) -> Tuple[_CachedImage, bool]:
        key = image_key(image)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self._hits += 1
            return cached, True
        self._misses += 1
        encoded = self.processor(images=image, input_data_format="channels_last", return_tensors="pt")
        pixel_values = encoded["pixel_values"].to(self.device, self.dtype)
        embeddings = self.model.get_image_embeddings(pixel_values)
        height, width = (int(v) for v in encoded["original_sizes"][0])
        entry = _CachedImage(embeddings=list(embeddings), original_size=(height, width))
        if self.cache_size:
            self._cache[key] = entry
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return entry, False

    # -------------------------------------------------------------------------------------- segment
    @staticmethod
    def _check_image(image: np.ndarray) -> np.ndarray:
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            shape = getattr(image, "shape", None)
            raise ValueError(f"image must be a (height, width, 3) RGB array, got shape {shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"image must be uint8, got {image.dtype}")
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"image is empty: {image.shape}")
        return image

    @staticmethod
    def _prompt_rows(prompts: Sequence[SamPrompt]) -> Tuple[List[List[List[float]]], List[List[int]]]:
        """Each object as corner/point coordinates and labels, padded to a common length."""
        rows = []
        for number, prompt in enumerate(prompts, start=1):
            coords: List[List[float]] = []
            labels: List[int] = []
            if prompt.box is not None:
                x1, y1, x2, y2 = (float(v) for v in prompt.box)
                coords += [[min(x1, x2), min(y1, y2)], [max(x1, x2), max(y1, y2)]]
                labels += [LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT]
            point_labels = prompt.labels if prompt.labels is not None else [LABEL_POSITIVE] * len(prompt.points)
            for (x, y), label in zip(prompt.points, point_labels):
                coords.append([float(x), float(y)])
                labels.append(LABEL_POSITIVE if label else LABEL_NEGATIVE)
            if not labels:
                raise ValueError(f"prompt {number} has neither a box nor points")
            rows.append((coords, labels))
        longest = max(len(labels) for _, labels in rows)
        points = [coords + [[0.0, 0.0]] * (longest - len(coords)) for coords, _ in rows]
        labels = [lab + [LABEL_NOT_A_POINT] * (longest - len(lab)) for _, lab in rows]
        return points, labels

    @torch.inference_mode()
    def segment(self, image: np.ndarray, prompts: Sequence[SamPrompt], multimask: bool = False) -> List[SegmentResult]:
        """One mask per prompt, at the image's full resolution, in the order of the prompts.

        multimask=True asks SAM2 for its three candidate masks and keeps the one with the best
        predicted IoU (what Seg-Zero-style checkpoints expect); otherwise SAM2's single-mask output.
        """
        image = self._check_image(image)
        if not prompts:
            self.last_timings = {"encode_s": 0.0, "decode_s": 0.0, "cache_hit": False}
            return []
        points, labels = self._prompt_rows(prompts)
        with self._lock:
            started = time.perf_counter()
            cached, hit = self._embed(image)
            encoded = time.perf_counter()
            height, width = cached.original_size
            prompt_inputs = self.processor(original_sizes=[[height, width]], input_points=[points],
                                           input_labels=[labels], return_tensors="pt")
            outputs = self.model(
                image_embeddings=cached.embeddings,
                # float32 even for a bf16 model: the prompt encoder normalises coordinates before its
                # own cast, and bf16 pixel coordinates would already be off by several pixels.
                input_points=prompt_inputs["input_points"].to(self.device),
                input_labels=prompt_inputs["input_labels"].to(self.device),
                multimask_output=bool(multimask),
            )
            # (1, objects, candidates, h, w) low-resolution logits and (1, objects, candidates) scores
            logits = outputs.pred_masks[0].float()
            scores = outputs.iou_scores[0].float()
            best = scores.argmax(dim=-1)
            chosen = torch.arange(logits.shape[0], device=logits.device)
            best_logits = logits[chosen, best]
            best_scores = scores[chosen, best]
            results = []
            # Upscaled one object at a time, on the model's device: a full-resolution float mask of a
            # large raster is tens of megabytes, its boolean copy a quarter of that.
            for index in range(best_logits.shape[0]):
                full = self.processor.post_process_masks([best_logits[index][None, None]],
                                                         [[height, width]], binarize=True)[0]
                results.append(SegmentResult(mask=full[0, 0].cpu().numpy().astype(bool, copy=False),
                                             score=float(best_scores[index])))
            finished = time.perf_counter()
            self.last_timings = {"encode_s": encoded - started, "decode_s": finished - encoded, "cache_hit": hit}
        return results
