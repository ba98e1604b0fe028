"""What each published checkpoint costs: download size, GPU memory, access rules.

One definition for the backend's `doctor` and `download`, and for the plugin's model picker and
install plan (pure Python: imported by QGIS and by the backend venv alike).

The numbers are estimates from parameter counts, not measurements: a Qwen2.5-VL-7B checkpoint
holds 8.29 B parameters, 16.6 GB in bf16 safetensors; the 3B one 3.75 B (7.5 GB); SAM2.1
hiera-large 224 M parameters stored in float32 (0.9 GB). GPU memory at inference is the bf16
weights plus the vision encoder's activations for one image at the profile's frame (~1,024 visual
tokens), the KV cache for ~1,500 tokens and the CUDA context: about 2.5 GB over the weights for a
7B model (see the training section of the README for the per-token figures).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

GB = 1_000_000_000

# Files a checkpoint needs at inference time. Pickle formats (*.bin, *.pt, *.pth, *.ckpt) are left
# out on purpose: they are never loaded, so they are never downloaded either.
MODEL_ALLOW_PATTERNS = (
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "video_preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.json",
    "chat_template.jinja",
    "*.jinja",
)

ROLE_REASONER = "reasoner"
ROLE_SEGMENTER = "segmenter"
DEFAULT_SEGMENTER = "facebook/sam2.1-hiera-large"

# Keep this much disk free beyond a download (the hub cache writes each file beside its final place).
DISK_MARGIN_BYTES = 2 * GB


@dataclass(frozen=True)
class Checkpoint:
    repo_id: str
    role: str
    params_b: float  # billions of parameters
    download_bytes: int  # the safetensors + processor files
    gpu_bytes: int  # GPU memory to answer one question (bf16 weights + activations + context)
    licence: str = ""
    gated: bool = False
    access: str = ""  # how to get access, for gated repositories
    profiles: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def title(self) -> str:
        return f"{self.repo_id} ({self.params_b:g} B parameters)"


def _qwen7b(repo_id: str, profiles: Sequence[str], licence: str = "Apache-2.0") -> Checkpoint:
    return Checkpoint(repo_id, ROLE_REASONER, 8.29, int(16.6 * GB), int(19.0 * GB), licence,
                      profiles=tuple(profiles))


def _gated_access(repo_id: str) -> str:
    return (f"{repo_id} is gated: open its page on the Hugging Face hub, sign in, accept the licence "
            f"(approval can take a while), then create a read token in your hub account settings and paste "
            f"it in the set-up panel (or run `hf auth login` in the backend's venv, or set HF_TOKEN).")


CHECKPOINTS: Dict[str, Checkpoint] = {c.repo_id: c for c in (
    _qwen7b("1e12Leon/RemoteReasoner", ["remotereasoner"]),
    _qwen7b("Ricky06662/Seg-Zero-7B", ["segzero"], "other"),
    _qwen7b("Ricky06662/VisionReasoner-7B", ["visionreasoner"], "other"),
    _qwen7b("RicardoString/Think2Seg-RS-7B", ["think2seg"]),
    Checkpoint("RicardoString/Think2Seg-RS-3B", ROLE_REASONER, 3.75, int(7.5 * GB), int(9.5 * GB),
               "Apache-2.0", profiles=("think2seg",)),
    _qwen7b("Qwen/Qwen2.5-VL-7B-Instruct", ["qwen", "georeasoner", "grasp"]),
    Checkpoint("Qwen/Qwen2.5-VL-3B-Instruct", ROLE_REASONER, 3.75, int(7.5 * GB), int(9.5 * GB),
               "Qwen research licence", profiles=("qwen", "georeasoner", "grasp")),
    Checkpoint("Qwen/Qwen2.5-VL-32B-Instruct", ROLE_REASONER, 33.5, int(67 * GB), int(72 * GB),
               "Apache-2.0", profiles=("qwen",)),
    Checkpoint("Qwen/Qwen2.5-VL-72B-Instruct", ROLE_REASONER, 73.4, int(147 * GB), int(155 * GB),
               "Qwen licence", profiles=("qwen",)),
    Checkpoint(DEFAULT_SEGMENTER, ROLE_SEGMENTER, 0.224, int(0.9 * GB), int(1.5 * GB), "Apache-2.0",
               profiles=("*",)),
    # SAM 3 is listed for its access rule; the cascade segments with SAM2 (transformers' Sam2Model).
    Checkpoint("facebook/sam3", ROLE_SEGMENTER, 0.85, int(3.4 * GB), int(4.5 * GB), "SAM licence", gated=True,
               access=_gated_access("facebook/sam3"), profiles=()),
)}


def checkpoint(repo_id: str) -> Optional[Checkpoint]:
    return CHECKPOINTS.get(repo_id)


def access_advice(repo_id: str) -> str:
    """What to do when the hub refuses a repository (401/403): gated access or a token."""
    known = CHECKPOINTS.get(repo_id)
    if known is not None and known.gated:
        return known.access
    return _gated_access(repo_id) + " If the repository is private, the token must belong to an account that can read it."


def fits(gpu_bytes: int, free_bytes: Optional[int]) -> bool:
    return free_bytes is not None and free_bytes >= gpu_bytes


def human_bytes(n: Optional[float]) -> str:
    if n is None:
        return "unknown"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def reasoners_for(profile: str) -> List[Checkpoint]:
    return [c for c in CHECKPOINTS.values() if c.role == ROLE_REASONER and profile in c.profiles]


# Python packages of the backend venv, by torch build (download sizes; estimates from the wheels of
# torch 2.14 / torchvision 0.29 and the pinned backend requirements).
PACKAGE_BYTES = {
    "cuda": int(5.5 * GB),  # torch with its CUDA libraries
    "cpu": int(1.0 * GB),  # a CPU-only torch build
    "mps": int(0.9 * GB),  # macOS arm64 wheel
}
BACKEND_REQUIREMENTS_BYTES = int(0.6 * GB)  # transformers, OpenCV, rasterio, scipy, FastAPI, ...
