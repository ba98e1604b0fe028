"""`training export`: a trained run -> a standalone Qwen2.5-VL folder that `georeasoner` loads.

A LoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``, what a LoRA run writes to
``<output_dir>/final`` and to every ``checkpoint-N``) is merged into its base model; a full
fine-tuning output is re-saved as is. Either way the result holds ``config.json``, safetensors
weights, the generation config and the processor/tokenizer files, so the backend's loader
(``models.load_model_and_processor``, hence ``Reasoner`` and ``georeasoner ask/serve``) reads it
like any published checkpoint. Loading goes through that same loader, so the export accepts exactly
what inference accepts (safetensors only, no remote code, the adapter checked against its base).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from georeasoner_plugin.core.exit_codes import EXIT_OK

from .errors import ExportError

EXPORT_NOTE = "georeasoner_export.json"
EXPORT_DTYPES = ("auto", "bfloat16", "float32")


@dataclass
class ExportResult:
    out_dir: Path
    base: Optional[str]
    merged_adapter: bool
    dtype: str


def _is_adapter(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file()


def adapter_base(folder: Path) -> Optional[str]:
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"{folder / 'adapter_config.json'}: unreadable: {exc}") from None
    return config.get("base_model_name_or_path") or None


def _checkpoint_dtype(model_dir: Path) -> str:
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "float32"
    declared = config.get("dtype") or config.get("torch_dtype") or (config.get("text_config") or {}).get("dtype")
    return declared if declared in ("bfloat16", "float32") else "float32"


def export_model(source: Union[str, os.PathLike], out_dir: Union[str, os.PathLike], *,
                 base: Optional[str] = None, dtype: str = "auto", device: str = "cpu",
                 overwrite: bool = False) -> ExportResult:
    """Merge ``source`` (adapter or full model folder) into a standalone model folder ``out_dir``."""
    from georeasoner_plugin.backend.models import (
        REASONER_FAMILIES,
        ModelLoadError,
        check_model_dir,
        load_model_and_processor,
        resolve_model_dir,
    )

    source_dir, out = Path(source), Path(out_dir)
    if not source_dir.is_dir():
        raise ExportError(f"{source_dir}: no such folder (give a run's final/ or checkpoint-N/ folder)")
    if dtype not in EXPORT_DTYPES:
        raise ExportError(f"--dtype must be one of {', '.join(EXPORT_DTYPES)}, not {dtype!r}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} exists and is not empty; pass --overwrite or choose another folder")
    if out.resolve() == source_dir.resolve():
        raise ExportError("the output folder must differ from the source folder")

    merged = _is_adapter(source_dir)
    if merged:
        base = base or adapter_base(source_dir)
        if not base:
            raise ExportError(f"{source_dir}/adapter_config.json names no base model; pass --base MODEL")
        model_name, adapter = base, source_dir
    elif (source_dir / "config.json").is_file():
        if base:
            raise ExportError(f"{source_dir} is a full model (no adapter_config.json); --base applies to adapters only")
        model_name, adapter = str(source_dir), None
    else:
        raise ExportError(f"{source_dir} holds neither a LoRA adapter (adapter_config.json) nor a model "
                          f"(config.json)")

    try:
        chosen_dtype = dtype if dtype != "auto" else _checkpoint_dtype(resolve_model_dir(model_name))
        # The checkpoint's model_type picks the class (Qwen2.5-VL, Qwen3-VL dense or MoE; issue 12).
        loaded = load_model_and_processor(model_name, families=REASONER_FAMILIES, role="reasoner",
                                          adapter=adapter, device=device, dtype=chosen_dtype)
    except ModelLoadError as exc:
        raise ExportError(str(exc)) from None
    from peft import PeftModel

    model = loaded.model
    if isinstance(model, PeftModel):
        raise ExportError(f"the adapter in {source_dir} could not be merged into {base}; nothing was written")

    out.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed at the end, so a crash never leaves a half model behind.
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        loaded.processor.save_pretrained(staging)
        (staging / EXPORT_NOTE).write_text(json.dumps({
            "source": str(source_dir.resolve()),
            "base": str(loaded.model_dir) if merged else None,
            "merged_lora_adapter": merged,
            "dtype": chosen_dtype,
        }, indent=2) + "\n", encoding="utf-8")
        check_model_dir(staging, str(out))
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(out_dir=out, base=str(loaded.model_dir) if merged else None, merged_adapter=merged,
                        dtype=chosen_dtype)


# --------------------------------------------------------------------------- CLI (`training export`)

def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="merge a LoRA adapter into its base: a standalone model folder",
                              description="Write a standalone Qwen2.5-VL folder (safetensors + processor) from a "
                                          "run's final/ or checkpoint-N/ folder; `georeasoner ask --reasoner OUT` "
                                          "and the server load it.")
    p.add_argument("source", metavar="RUN_FOLDER", help="a LoRA adapter folder, or a full fine-tuning output")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--base", metavar="MODEL",
                   help="base model, hub id or folder (default: the one named in adapter_config.json)")
    p.add_argument("--dtype", choices=EXPORT_DTYPES, default="auto",
                   help="dtype of the written weights (auto: the base checkpoint's)")
    p.add_argument("--device", default="cpu",
                   help="where to merge (default cpu: a 7B model needs about 17 GB of RAM in bfloat16)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")


def run(args) -> int:
    """ExportError (the user's to fix) reaches training.cli, which prints it as one line."""
    result = export_model(args.source, args.out, base=args.base, dtype=args.dtype, device=args.device,
                          overwrite=args.overwrite)
    what = f"LoRA adapter merged into {result.base}" if result.merged_adapter else "full model re-saved"
    print(f"{what} ({result.dtype}): {result.out_dir}\n"
          f"use it: georeasoner ask IMAGE QUESTION --profile georeasoner --reasoner {result.out_dir}")
    return EXIT_OK
