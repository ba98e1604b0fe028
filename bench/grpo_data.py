"""A small EarthReason-shaped split for the GRPO step of the GPU bench, prepared by training.prepare.

Images are random texture with drawn targets (the step's cost depends on image size, prompt and
completion lengths, not on content); two prompts, each with two objects, so one optimizer step
of every shipped config has the prompts it needs.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def synthetic_split(folder: Path, size: int, samples: int = 4) -> Path:
    from training.prepare import prepare_split

    root = folder / "earthreason"
    split = root / "train"
    for name in ("images", "labels", "QAs"):
        (split / name).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for n in range(samples):
        rgb = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        cv2.rectangle(mask, (size // 10, size // 8), (size // 3, size // 4), 255, -1)
        cv2.circle(mask, (size * 2 // 3, size * 2 // 3), size // 8, 255, -1)
        Image.fromarray(rgb).save(split / "images" / f"s{n}.png")
        Image.fromarray(mask).save(split / "labels" / f"s{n}.png")
        (split / "QAs" / f"s{n}.json").write_text(json.dumps(
            {"questions": ["Which fields could be irrigated from the pond?"], "answer": "the field and the pond"}))
    return prepare_split(root, folder / "prepared", split="train", profile="georeasoner").records_path
