"""Overlay PNGs of the best and worst samples: image, target outline, predicted mask and boxes."""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np
from PIL import Image

from ..metrics import as_mask
from .options import OVERLAY_SIDE, EvalOptions
from .samples import load_label, load_rgb
from .scores import _resize_nearest, rle_from_json

# --------------------------------------------------------------------------- overlays

def ranking_score(line: dict) -> float:
    scores = line["scores"]
    if "pixel" in scores:
        return float(scores["pixel"]["iou"])
    return float(scores["region"]["miou"])


def write_overlays(folder: Path, options: EvalOptions, selected: List[dict], lines: List[dict]) -> List[str]:
    """best_NN_*.png and worst_NN_*.png; earlier overlays are replaced, the ranking may have changed."""
    if folder.exists():
        for old in list(folder.glob("best_*.png")) + list(folder.glob("worst_*.png")):
            old.unlink()
    if options.overlays <= 0 or not lines:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    records = {r["id"]: r for r in selected}
    ranked = sorted(lines, key=lambda line: (-ranking_score(line), line["id"]))
    best = ranked[:options.overlays]
    best_ids = {line["id"] for line in best}
    worst = [line for line in reversed(ranked) if line["id"] not in best_ids][:options.overlays]
    written = []
    for kind, chosen in (("best", best), ("worst", worst)):
        for rank, line in enumerate(chosen, start=1):
            record = records[line["id"]]
            image = load_rgb(record["image"])
            gt_mask = load_label(record["mask"])
            caption = (f"{line['id']}  score {ranking_score(line):.3f}  parse {line['parse_status']}")
            overlay = render_overlay(image, gt_mask, rle_from_json(line.get("pred_mask")), line["pred_boxes_px"],
                                     line["gt_boxes_px"], caption)
            name = f"{kind}_{rank:02d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', line['id'])}.png"
            Image.fromarray(overlay).save(folder / name)
            written.append(name)
    return written


def render_overlay(image: np.ndarray, gt_mask: np.ndarray, pred_mask: Optional[np.ndarray], pred_boxes, gt_boxes,
                   caption: str) -> np.ndarray:
    height, width = image.shape[:2]
    scale = OVERLAY_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    canvas = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR).astype(float)
    pred = None
    if pred_mask is not None:
        pred = _resize_nearest(as_mask(pred_mask), *size)
        canvas[pred] = 0.55 * canvas[pred] + 0.45 * np.array([255, 40, 40])
    canvas = canvas.astype(np.uint8)
    if pred is not None:
        outline, _ = cv2.findContours(pred.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, outline, -1, (255, 40, 40), 1)
    gt = _resize_nearest(as_mask(gt_mask), *size).astype(np.uint8)
    contours, _ = cv2.findContours(gt, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(canvas, contours, -1, (40, 230, 40), 2)
    # Predictions thick, targets thin on top: a perfect box still shows both.
    for boxes, colour, thickness in ((pred_boxes, (255, 220, 0), 3), (gt_boxes, (40, 220, 230), 1)):
        for box in boxes:
            x1, y1, x2, y2 = (round(v * scale) for v in box)
            cv2.rectangle(canvas, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), colour, thickness)
    bar = np.full((26, canvas.shape[1], 3), 30, dtype=np.uint8)
    cv2.putText(bar, caption[:110], (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, canvas], axis=0)
