"""One way to find, check and load model weights: a hub repo id or a local directory.

Rules from the design: safetensors only (a pickled checkpoint can run code when loaded), never
trust_remote_code, LoRA adapters on top of a base, CUDA bf16 when there is a GPU and CPU float32
otherwise. Every failure a user can fix surfaces as ModelLoadError with what to do about it.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import torch

# What a checkpoint needs at inference time (safetensors only): one list, in core/catalog.py.
from ..core.catalog import MODEL_ALLOW_PATTERNS  # noqa: E402

ADAPTER_ALLOW_PATTERNS = ("adapter_config.json", "adapter_model.safetensors", "*.safetensors")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

_TRUE_VALUES = {"1", "true", "yes", "on"}
_DTYPE_NAMES = {
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
}
# A hub id is "name" or "owner/name"; anything else that is not an existing directory is a path typo.
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


class ModelLoadError(RuntimeError):
    """Weights or settings a user has to fix; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class ModelFamily:
    """A family of checkpoints that load with one transformers class (picked by config.json's model_type)."""

    name: str  # shown to users: "Qwen2.5-VL", "Qwen3-VL", "SAM2", "SAM 3"
    class_name: str  # attribute of the transformers package
    frame_factor: int = 0  # reasoners: patch x merge of the image processor (both sides of a frame are multiples)

    def model_class(self):
        import transformers

        return getattr(transformers, self.class_name)


# Reasoners. Qwen2-VL checkpoints load with the Qwen2.5-VL class as before. Qwen3-VL dense and MoE
# checkpoints have their own classes (transformers 5.23: Qwen3VLForConditionalGeneration,
# Qwen3VLMoeForConditionalGeneration); their image processor is the Qwen2-VL one with patch 16 and
# merge 2, hence frames in multiples of 32.
QWEN25_FAMILY = ModelFamily("Qwen2.5-VL", "Qwen2_5_VLForConditionalGeneration", frame_factor=28)
QWEN3_FAMILY = ModelFamily("Qwen3-VL", "Qwen3VLForConditionalGeneration", frame_factor=32)
QWEN3_MOE_FAMILY = ModelFamily("Qwen3-VL-MoE", "Qwen3VLMoeForConditionalGeneration", frame_factor=32)
REASONER_FAMILIES: Dict[str, ModelFamily] = {
    "qwen2_5_vl": QWEN25_FAMILY,
    "qwen2_vl": QWEN25_FAMILY,
    "qwen3_vl": QWEN3_FAMILY,
    "qwen3_vl_moe": QWEN3_MOE_FAMILY,
}
# Segmenters. Box and point prompts go through SAM2's model or SAM 3's tracker (same prompt encoder
# and mask decoder design). facebook/sam3 is a "sam3_video" checkpoint holding the detector and the
# tracker; Sam3TrackerModel reads its tracker_config and skips the detector weights.
SAM2_FAMILY = ModelFamily("SAM2", "Sam2Model")
SAM3_FAMILY = ModelFamily("SAM 3", "Sam3TrackerModel")
SEGMENTER_FAMILIES: Dict[str, ModelFamily] = {
    "sam2": SAM2_FAMILY,
    "sam3_tracker": SAM3_FAMILY,
    "sam3_video": SAM3_FAMILY,
}


def model_type_of(directory: Path) -> Optional[str]:
    """config.json's model_type of a model directory (None when it names none)."""
    return _read_config(Path(directory)).get("model_type")


def family_for(model_type: Optional[str], families: Mapping[str, ModelFamily], name: str, role: str) -> ModelFamily:
    """The family of a checkpoint of this model_type, or a ModelLoadError listing what the role accepts."""
    family = families.get(model_type or "")
    if family is None:
        known = ", ".join(sorted({f"{f.name} ({t})" for t, f in families.items()}))
        raise ModelLoadError(f"{name!r} is a {model_type!r} checkpoint; the {role} must be one of: {known}")
    return family


def reasoner_family(model: Union[str, os.PathLike], *, revision: Optional[str] = None) -> Tuple[Path, ModelFamily]:
    """(model directory, family) of a reasoner checkpoint: training and export pick the class with this."""
    directory = resolve_model_dir(model, revision=revision)
    return directory, family_for(model_type_of(directory), REASONER_FAMILIES, os.fspath(model), "reasoner")


@dataclass
class LoadedModel:
    model: Any
    processor: Any
    name: str  # what the user asked for: hub id or directory
    model_dir: Path
    device: torch.device
    dtype: torch.dtype
    adapter_dir: Optional[Path] = None
    family: Optional[ModelFamily] = None


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set now (not only when huggingface_hub was imported)."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE_VALUES
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _download_hint(repo_id: str, what: str = "model") -> str:
    return (f"To get the {what}: on a machine with internet run\n"
            f"    hf download {repo_id} --exclude '*.bin' --exclude '*.pt' --exclude '*.pth' --local-dir DIR\n"
            f"(older huggingface-hub versions name the command huggingface-cli), copy DIR to this "
            f"machine and pass DIR instead of {repo_id!r}.")


def _looks_like_path(text: str) -> bool:
    return (text.startswith((".", "~", "/")) or "\\" in text or os.path.isabs(text)
            or text.count("/") > 1 or not _REPO_ID_RE.match(text))


def _snapshot(repo_id: str, revision: Optional[str], allow_patterns: Sequence[str], what: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = hub_offline()
    try:
        # Without offline mode snapshot_download itself falls back to the local cache when the hub
        # cannot be reached, so "no network" and "offline" end in the same cache lookup.
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(allow_patterns),
                                      local_files_only=offline))
    except GatedRepoError as error:
        raise ModelLoadError(
            f"The {what} {repo_id!r} is gated on the Hugging Face hub: accept its licence on the hub with your "
            f"account and log in (hf auth login), or download it elsewhere.\n{_download_hint(repo_id, what)}"
        ) from error
    except RepositoryNotFoundError as error:
        raise ModelLoadError(
            f"The {what} {repo_id!r} was not found on the Hugging Face hub and is not a local directory; "
            f"check the spelling, or pass the directory that holds the weights."
        ) from error
    except RevisionNotFoundError as error:
        raise ModelLoadError(f"The {what} {repo_id!r} has no revision {revision!r} on the hub.") from error
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, FileNotFoundError) as error:
        reason = ("offline mode is on (HF_HUB_OFFLINE)" if offline
                  else "the Hugging Face hub cannot be reached")
        raise ModelLoadError(
            f"The {what} {repo_id!r} is not a local directory, and as a Hugging Face repo id it is not in the "
            f"local cache while {reason}. It needs config.json, the *.safetensors weights and the "
            f"tokenizer/processor files.\n{_download_hint(repo_id, what)}"
        ) from error
    except (HfHubHTTPError, OSError) as error:
        raise ModelLoadError(f"could not download {what} {repo_id!r}: {error}\n{_download_hint(repo_id, what)}") \
            from error


def _pickle_files(directory: Path) -> list:
    return sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)


def check_model_dir(directory: Path, name: Optional[str] = None) -> Path:
    """Raise ModelLoadError unless directory holds config.json and complete safetensors weights."""
    label = name or str(directory)
    missing = []
    if not (directory / "config.json").is_file():
        missing.append("config.json")
    weights = sorted(directory.glob("*.safetensors"))
    if not weights:
        pickles = _pickle_files(directory)
        if pickles:
            raise ModelLoadError(
                f"{label}: only pickled weights ({', '.join(pickles)}) and no *.safetensors file. GeoReasoner "
                f"loads safetensors only, because pickled checkpoints can run code when loaded. Use a "
                f"safetensors release of this model, or convert the weights on a trusted machine "
                f"(load them and call save_pretrained(DIR, safe_serialization=True))."
            )
        missing.append("*.safetensors weights")
    if missing:
        raise ModelLoadError(f"{label}: {directory} lacks {' and '.join(missing)}; a model directory needs "
                             f"config.json and the *.safetensors weights (plus tokenizer/processor files).")
    for index_file in directory.glob("*.safetensors.index.json"):
        try:
            shards = set(json.loads(index_file.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError) as error:
            raise ModelLoadError(f"{label}: unreadable weight index {index_file.name}: {error}") from error
        absent = sorted(s for s in shards if not (directory / s).is_file())
        if absent:
            raise ModelLoadError(f"{label}: weight shards missing from {directory}: {', '.join(absent)} "
                                 f"(an interrupted download?); download them again.")
    return directory


def resolve_model_dir(model: Union[str, os.PathLike], *, revision: Optional[str] = None) -> Path:
    """The directory holding `model`: an existing local directory as is, else a hub repo id from the cache/hub."""
    text = os.fspath(model).strip()
    if not text:
        raise ModelLoadError("no model given: pass a Hugging Face repo id or a local directory")
    local = Path(text).expanduser()
    if local.is_dir():
        return check_model_dir(local, text)
    if local.exists():
        raise ModelLoadError(f"model {text!r} is a file, not a directory; pass the directory that holds "
                             f"config.json and the *.safetensors weights")
    if _looks_like_path(text):
        raise ModelLoadError(f"model directory {text!r} does not exist (and it is not a Hugging Face repo id "
                             f"of the form owner/name); pass the folder that holds config.json and the "
                             f"*.safetensors weights, or a hub id such as facebook/sam2.1-hiera-large")
    return check_model_dir(_snapshot(text, revision, MODEL_ALLOW_PATTERNS, "model"), text)


def resolve_adapter_dir(adapter: Union[str, os.PathLike], *, revision: Optional[str] = None) -> Path:
    """The directory of a LoRA adapter (adapter_config.json + adapter_model.safetensors)."""
    text = os.fspath(adapter).strip()
    local = Path(text).expanduser()
    if local.is_dir():
        directory = local
    elif local.exists():
        raise ModelLoadError(f"adapter {text!r} is a file; pass the directory holding adapter_config.json")
    elif _looks_like_path(text):
        raise ModelLoadError(f"adapter directory {text!r} does not exist")
    else:
        directory = _snapshot(text, revision, ADAPTER_ALLOW_PATTERNS, "adapter")
    missing = [f for f in ("adapter_config.json",) if not (directory / f).is_file()]
    if not list(directory.glob("*.safetensors")):
        pickles = _pickle_files(directory)
        if pickles:
            raise ModelLoadError(f"adapter {text!r}: only pickled weights ({', '.join(pickles)}); GeoReasoner "
                                 f"loads safetensors only (adapter_model.safetensors).")
        missing.append("adapter_model.safetensors")
    if missing:
        raise ModelLoadError(f"adapter {text!r}: {directory} lacks {' and '.join(missing)}; is it a PEFT "
                             f"LoRA adapter directory?")
    return directory


def pick_device_and_dtype(device: Union[str, torch.device] = "auto",
                          dtype: Union[str, torch.dtype] = "auto") -> Tuple[torch.device, torch.dtype]:
    """CUDA + bf16 (fp16 where bf16 is unsupported) when a GPU is visible, else CPU + float32.

    Explicit choices are honoured after checking they can work here.
    """
    if isinstance(device, torch.device):
        chosen = device
    elif str(device).strip().lower() in ("", "auto"):
        chosen = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    else:
        try:
            chosen = torch.device(str(device).strip().lower())
        except (RuntimeError, ValueError) as error:
            raise ModelLoadError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from error
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {str(device)!r} asked for, but this torch sees no CUDA GPU "
                                 f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use 'cpu' or 'auto'")
        index = chosen.index if chosen.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ModelLoadError(f"device {str(device)!r} asked for, but only {torch.cuda.device_count()} CUDA "
                                 f"device(s) are visible")
        chosen = torch.device("cuda", index)
    elif chosen.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ModelLoadError("device 'mps' asked for, but Apple's Metal backend is not available here")
    elif chosen.type != "cpu":
        raise ModelLoadError(f"unsupported device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")

    if isinstance(dtype, torch.dtype):
        chosen_dtype = dtype
    elif str(dtype).strip().lower() in ("", "auto"):
        if chosen.type == "cuda":
            chosen_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        elif chosen.type == "mps":
            chosen_dtype = torch.float16
        else:
            chosen_dtype = torch.float32
    else:
        key = str(dtype).strip().lower().removeprefix("torch.")
        if key not in _DTYPE_NAMES:
            raise ModelLoadError(f"unknown dtype {dtype!r}: use 'auto', 'bfloat16', 'float16' or 'float32'")
        chosen_dtype = _DTYPE_NAMES[key]
    if chosen_dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ModelLoadError(f"dtype {chosen_dtype} is not supported: use bfloat16, float16 or float32")
    if chosen.type == "cpu" and chosen_dtype == torch.float16:
        raise ModelLoadError("float16 is not supported on the CPU (many kernels are missing or very slow); "
                             "use float32 or bfloat16")
    if chosen.type == "cuda" and chosen_dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ModelLoadError(f"this GPU ({torch.cuda.get_device_name(chosen)}) has no bfloat16 support; "
                             f"use float16 or 'auto'")
    return chosen, chosen_dtype


def _read_config(directory: Path) -> dict:
    try:
        return json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"unreadable {directory / 'config.json'}: {error}") from error


def load_model_and_processor(model: Union[str, os.PathLike], model_class=None, *,
                             expected_model_types: Iterable[str] = (),
                             adapter: Optional[Union[str, os.PathLike]] = None,
                             revision: Optional[str] = None,
                             device: Union[str, torch.device] = "auto",
                             dtype: Union[str, torch.dtype] = "auto",
                             families: Optional[Mapping[str, ModelFamily]] = None,
                             role: str = "model") -> LoadedModel:
    """Load `model_class` and its AutoProcessor from a hub id or directory, ready for inference.

    expected_model_types guards against the wrong checkpoint in the wrong slot (a SAM2 directory given
    as the reasoner); an adapter is applied with peft and merged into the base weights when it can be.
    With `families` (model_type -> ModelFamily) instead of a class, the checkpoint's config picks it.
    """
    from transformers import AutoProcessor

    name = os.fspath(model)
    model_dir = resolve_model_dir(model, revision=revision)
    config = _read_config(model_dir)
    family = None
    if families is not None:
        family = family_for(config.get("model_type"), families, name, role)
        model_class = family.model_class()
    if model_class is None:
        raise ValueError("load_model_and_processor needs model_class or families")
    expected = tuple(expected_model_types)
    if expected and config.get("model_type") not in expected:
        raise ModelLoadError(f"{name!r} is a {config.get('model_type')!r} checkpoint; this slot needs "
                             f"{' or '.join(repr(t) for t in expected)}")
    torch_device, torch_dtype = pick_device_and_dtype(device, dtype)

    try:
        processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelLoadError(f"{name!r}: could not load the processor/tokenizer from {model_dir}: {error}. "
                             f"The directory needs the tokenizer and processor files of the checkpoint.") from error
    try:
        loaded = model_class.from_pretrained(
            model_dir,
            dtype=torch_dtype,
            use_safetensors=True,
            trust_remote_code=False,
            local_files_only=True,
            device_map=str(torch_device),
        )
    except (OSError, ValueError, RuntimeError) as error:
        raise ModelLoadError(f"{name!r}: could not load the weights from {model_dir}: {error}") from error

    adapter_dir = None
    if adapter is not None:
        adapter_dir = resolve_adapter_dir(adapter, revision=None)
        loaded = _apply_adapter(loaded, adapter_dir, name, os.fspath(adapter))
    loaded.eval()
    return LoadedModel(model=loaded, processor=processor, name=name, model_dir=model_dir,
                       device=torch_device, dtype=torch_dtype, adapter_dir=adapter_dir, family=family)


def _apply_adapter(base, adapter_dir: Path, base_name: str, adapter_name: str):
    from peft import PeftModel, get_peft_model_state_dict

    try:
        adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"adapter {adapter_name!r}: unreadable adapter_config.json: {error}") from error
    declared_base = adapter_config.get("base_model_name_or_path") or "an unnamed base"
    mismatch = (f"adapter {adapter_name!r} (trained on {declared_base}) does not fit the base model "
                f"{base_name!r}")
    try:
        peft_model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=False)
    except (ValueError, RuntimeError, KeyError) as error:
        # peft says "Target modules ... not found" for another architecture and "size mismatch" for
        # another model size; both mean the adapter belongs to a different base.
        raise ModelLoadError(f"{mismatch}: {error}") from error
    # peft only warns when adapter tensors find no home (e.g. an "all-linear" adapter of another
    # architecture), which would silently leave the base model unchanged: compare the names.
    saved = _safetensors_keys(adapter_dir)
    expected = set(get_peft_model_state_dict(peft_model).keys())
    unused, unfilled = sorted(saved - expected), sorted(expected - saved)
    if unused or unfilled:
        detail = "; ".join(part for part in (
            f"{len(unused)} adapter tensors match no layer (e.g. {unused[0]})" if unused else "",
            f"{len(unfilled)} adapted layers get no tensor (e.g. {unfilled[0]})" if unfilled else "",
        ) if part)
        raise ModelLoadError(f"{mismatch}: {detail}")
    try:
        # Merged LoRA weights cost nothing per token; inference never needs the adapter separately.
        return peft_model.merge_and_unload()
    except (AttributeError, ValueError, NotImplementedError, TypeError):
        return peft_model


def _safetensors_keys(directory: Path) -> set:
    from safetensors import safe_open

    keys = set()
    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            keys.update(handle.keys())
    return keys
