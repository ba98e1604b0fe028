"""The GPU bench's output: one markdown table of every figure, and the JSON file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional


def _finish(results: Dict[str, Any], json_path: Optional[Path], print_table: bool) -> None:
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    if print_table:
        print(markdown(results))


def _cell(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(results: Dict[str, Any]) -> str:
    """One markdown table of every figure (a row per measured thing), then what was skipped."""
    env = results.get("environment", {})
    lines = []
    if env:
        lines.append(f"GPU bench {env.get('date')}: {env.get('gpu', env.get('device'))}, driver {env.get('driver', '-')}, "
                     f"torch {env.get('torch')}, transformers {env.get('transformers')}"
                     + (" (DRY RUN: tiny configs on the CPU, figures mean nothing)" if env.get("dry_run") else "")
                     + (f"; bandwidth {_cell(env.get('bandwidth_datasheet_gbs'), 0)} GB/s data sheet, "
                        f"{_cell(env.get('bandwidth_measured_gbs'), 0)} GB/s measured copy"
                        if env.get("bandwidth_measured_gbs") else ""))
        lines.append("")
    lines += ["| part | model / case | figures | peak GiB |", "|---|---|---|---|"]
    for row in results.get("reasoners", []):
        floor = (f"; floor {_cell(row['floor_ms_per_pass'])} ms/pass = {_cell(row['decode_floor_tok_s'])} tok/s "
                 f"(decode at {_cell(row['decode_vs_floor'], 2)} of it)") if "floor_ms_per_pass" in row else ""
        lines.append(f"| reasoner | {row['model']} ({_cell(row['weights_gib'], 2)} GiB bf16) | prefill "
                     f"{row['prompt_tokens']} tokens {_cell(row['prefill_ms'])} ms, decode {_cell(row['decode_tok_s'])} "
                     f"tok/s, {row['answer_tokens']}-token answer {_cell(row['answer_s'], 2)} s{floor} | "
                     f"{_cell(row['peak_gib'], 2)} |")
    for row in results.get("segmenters", []):
        decodes = ", ".join(f"{key[7:-3]} objects {_cell(value)} ms" for key, value in row.items()
                            if key.startswith("decode_"))
        extra = f"decode {decodes}" if decodes else f"text-prompted detection {_cell(row.get('detect_ms'))} ms"
        lines.append(f"| segmenter | {row['model']} ({_cell(row['weights_gib'], 2)} GiB) | encode "
                     f"{_cell(row['encode_ms'])} ms, {extra} | {_cell(row['peak_gib'], 2)} |")
    for row in results.get("question", []):
        stages = ", ".join(f"{k} {_cell(row[k])}" for k in ("preprocess", "reason", "parse", "encode", "decode",
                                                              "vectorize", "write") if k in row)
        lines.append(f"| question, {row['objects']} objects | qwen2.5-vl-7b + sam2.1-l, {row['case']} | {stages}; "
                     f"total {_cell(row['total'])} ms (load {_cell(row['load_s'])} s) | {_cell(row['peak_gib'], 2)} |")
    for row in results.get("tiles", []):
        lines.append(f"| tiled path | {row['tile_px']} px tiles, {row['answer_tokens']}-token answers | "
                     f"{_cell(row['tiles_per_s'], 2)} tiles/s; a {row['scene_px']} px scene = {row['scene_tiles']} "
                     f"tiles = {_cell(row['scene_s'])} s | - |")
    for row in results.get("grpo", []):
        lines.append(f"| GRPO step, LoRA | {row['model']}, {row['config']} ({row['num_generations']} generations, "
                     f"{row['per_device_batch_size']} x {row['gradient_accumulation_steps']} per step, up to "
                     f"{row['max_completion_length']} tokens) | step {_cell(row['step_s'])} s, generation "
                     f"{_cell((row['generation_share'] or 0) * 100, 0)} % | {_cell(row['peak_gib'], 2)} |")
    for skipped in results.get("skipped", []):
        lines.append(f"| skipped | {skipped['part']} | {skipped['reason']} | - |")
    return "\n".join(lines)


