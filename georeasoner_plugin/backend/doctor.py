"""`georeasoner doctor`: can this Python, this machine and these models answer a question?

It reports the Python, torch and CUDA versions, each GPU with its free memory, the free disk where
models are stored, which checkpoints are present (hub cache or folder) and which profiles can run
here; every problem comes with one line of advice. `--json` prints the same as one object:

    {"python", "torch", "cuda", "gpus": [{"name", "free_bytes", "total_bytes"}], "disk_free_bytes",
     "models": [{"id", "role", "present", "path", "selected", "download_bytes", "gpu_bytes", "fits",
                 "gated", "profiles"}],
     "problems": [{"code", "advice"}], "ok"}

It must run without torch (that is one of the things it reports), so nothing here imports torch,
transformers or huggingface_hub at module level. The plugin runs it after an install and before
starting a backend (`python -m georeasoner_plugin.backend.cli doctor --json`).
"""
from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from ..core.catalog import (
    CHECKPOINTS,
    DEFAULT_SEGMENTER,
    DISK_MARGIN_BYTES,
    GB,
    MODEL_ALLOW_PATTERNS,
    ROLE_REASONER,
    ROLE_SEGMENTER,
    access_advice,
    checkpoint,
    human_bytes,
)
from ..core.profiles import DEFAULT_PROFILE, PROFILES, get_profile

# Problem codes (the plugin maps them to what the set-up panel shows).
NO_TORCH = "no_torch"
TORCH_BROKEN = "torch_broken"
MISSING_PACKAGES = "missing_packages"
PYTHON_TOO_OLD = "python_too_old"
NO_GPU = "no_gpu"
GPU_MEMORY = "gpu_memory"
MODEL_MISSING = "model_missing"
MODEL_GATED = "model_gated"
DISK_LOW = "disk_low"

# Modules the backend imports (distribution names differ: cv2 = opencv-python-headless).
BACKEND_MODULES = ("transformers", "huggingface_hub", "safetensors", "tokenizers", "accelerate", "numpy",
                   "PIL", "scipy", "rasterio", "pyogrio", "shapely", "cv2", "fastapi", "uvicorn", "multipart")
# A reasoner this large (weights on disk) is not usable on the CPU: minutes per question.
CPU_REASONER_LIMIT_BYTES = 4 * GB
MIN_PYTHON = (3, 10)


@dataclass
class Gpu:
    name: str
    free_bytes: Optional[int]
    total_bytes: Optional[int]


class Probe:
    """What doctor reads from the machine. Tests replace single readings (a full disk, a GPU)."""

    def python_version(self) -> str:
        return platform.python_version()

    def torch(self):
        """(torch version or None, CUDA version or None, [Gpu], error text or "")."""
        if importlib.util.find_spec("torch") is None:
            return None, None, [], ""
        try:
            import torch
        except Exception as exc:  # noqa: BLE001 - a broken torch install is a finding, not a crash
            return None, None, [], f"{type(exc).__name__}: {exc}"
        gpus: List[Gpu] = []
        cuda = getattr(torch.version, "cuda", None)
        try:
            if torch.cuda.is_available():
                for i in range(torch.cuda.device_count()):
                    free, total = torch.cuda.mem_get_info(i)
                    gpus.append(Gpu(torch.cuda.get_device_name(i), int(free), int(total)))
            elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
                # Apple silicon shares memory with the CPU; torch cannot say how much is free for it.
                gpus.append(Gpu("Apple MPS (shared memory)", None, None))
        except Exception as exc:  # noqa: BLE001 - a driver problem is reported, not raised
            return torch.__version__, cuda, [], f"GPU query failed: {type(exc).__name__}: {exc}"
        return torch.__version__, cuda, gpus, ""

    def missing_modules(self) -> List[str]:
        return [m for m in BACKEND_MODULES if importlib.util.find_spec(m) is None]

    def disk_free(self, path: Path) -> int:
        path = Path(path)
        while not path.exists() and path != path.parent:
            path = path.parent
        return shutil.disk_usage(path).free

    def hub_cache(self) -> Path:
        """The huggingface_hub cache folder, by the hub's own rules when the package is there."""
        try:
            from huggingface_hub import constants
            return Path(constants.HF_HUB_CACHE)
        except ImportError:
            if os.environ.get("HF_HUB_CACHE"):
                return Path(os.environ["HF_HUB_CACHE"])
            home = os.environ.get("HF_HOME") or os.path.join(
                os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
            return Path(home) / "hub"


def looks_like_folder(model: str) -> bool:
    return (model.startswith((".", "~", "/")) or "\\" in model or os.path.isabs(model)
            or model.count("/") != 1 or Path(model).expanduser().is_dir())


def folder_problem(directory: Path) -> str:
    """Why a model folder cannot be loaded ("" when it has config.json and complete safetensors)."""
    if not directory.is_dir():
        return f"{directory} does not exist"
    missing = []
    if not (directory / "config.json").is_file():
        missing.append("config.json")
    if not any(directory.glob("*.safetensors")):
        missing.append("*.safetensors weights")
    if missing:
        return f"{directory} lacks {' and '.join(missing)}"
    for index_file in directory.glob("*.safetensors.index.json"):
        try:
            shards = set(json.loads(index_file.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError):
            return f"{index_file} is unreadable"
        absent = sorted(s for s in shards if not (directory / s).is_file())
        if absent:
            return f"{directory} lacks the weight shards {', '.join(absent)} (an interrupted download?)"
    return ""


def hub_snapshot(repo_id: str, cache: Path) -> Optional[Path]:
    """The cached snapshot folder of a hub repo (refs/main first), or None. Never touches the network."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        candidate = snapshots / ref.read_text(encoding="utf-8").strip()
        if candidate.is_dir():
            return candidate
    found = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    return found[0] if found else None


def weights_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.safetensors"))


def model_entry(model: str, role: str, cache: Path, selected: bool, best_free: Optional[int]) -> Dict:
    known = checkpoint(model)
    entry = {"id": model, "role": role, "present": False, "path": None, "selected": selected,
             "download_bytes": known.download_bytes if known else None,
             "gpu_bytes": known.gpu_bytes if known else None, "fits": None,
             "gated": bool(known and known.gated), "profiles": list(known.profiles) if known else [],
             "detail": ""}
    if looks_like_folder(model):
        directory = Path(model).expanduser()
        problem = folder_problem(directory)
        entry.update(present=not problem, path=str(directory), detail=problem)
        if not problem and known is None:
            size = weights_bytes(directory)
            entry["gpu_bytes"] = int(size * 1.15 + 0.5 * GB)  # bf16 weights + activations and context
    else:
        snapshot = hub_snapshot(model, cache)
        problem = folder_problem(snapshot) if snapshot is not None else f"not in the hub cache {cache}"
        entry.update(present=not problem, path=str(snapshot) if snapshot else None, detail=problem)
    if entry["gpu_bytes"] is not None and best_free is not None:
        entry["fits"] = best_free >= entry["gpu_bytes"]
    return entry


def _needs_gpu(entry: Dict) -> bool:
    if entry["role"] != ROLE_REASONER:
        return False
    known = checkpoint(entry["id"])
    if known is not None:
        return known.download_bytes > CPU_REASONER_LIMIT_BYTES
    if entry["present"] and entry["path"]:
        return weights_bytes(Path(entry["path"])) > CPU_REASONER_LIMIT_BYTES
    return False


def run(profile: str = DEFAULT_PROFILE, reasoner: Optional[str] = None, segmenter: Optional[str] = None,
        probe: Optional[Probe] = None) -> Dict:
    """The doctor's report as one JSON-ready dict (the `--json` schema above)."""
    probe = probe or Probe()
    prof = get_profile(profile)  # UnknownProfileError names the known ones
    no_reasoner = (reasoner or "").strip().lower() == "none"  # a replayed or remote reasoner: nothing to load
    reasoner = "" if no_reasoner else (reasoner or prof.default_checkpoint or "").strip()
    segmenter = (segmenter or DEFAULT_SEGMENTER).strip()
    problems: List[Dict[str, str]] = []

    def problem(code: str, advice: str) -> None:
        problems.append({"code": code, "advice": advice})

    py = probe.python_version()
    if tuple(int(p) for p in py.split(".")[:2]) < MIN_PYTHON:
        problem(PYTHON_TOO_OLD, f"Python {py} is too old: the backend needs Python 3.10 or newer; install the "
                                f"backend again from the set-up panel, which picks a newer Python.")
    torch_version, cuda, gpus, torch_error = probe.torch()
    if torch_error and torch_version is None:
        problem(TORCH_BROKEN, f"torch is installed but does not import ({torch_error}); run Install again "
                              f"from the set-up panel (it repairs the venv).")
    elif torch_version is None:
        problem(NO_TORCH, f"torch is not installed in {sys.executable}: install the backend from the set-up "
                          f"panel (Install a local backend), or choose the Python of a venv that has it.")
    missing = probe.missing_modules()
    if missing:
        problem(MISSING_PACKAGES, f"missing backend packages ({', '.join(missing)}): run Install again from the "
                                  f"set-up panel, or pip install -r requirements-backend.txt in this venv.")

    cache = probe.hub_cache()
    free_values = [g.free_bytes for g in gpus if g.free_bytes is not None]
    best_free = max(free_values) if free_values else None
    models: List[Dict] = []
    selected = [(reasoner, ROLE_REASONER)] if reasoner else []
    if segmenter.lower() != "none":
        selected.append((segmenter, ROLE_SEGMENTER))
    for model, role in selected:
        models.append(model_entry(model, role, cache, True, best_free))
    chosen = {m for m, _ in selected}
    for repo_id, known in CHECKPOINTS.items():
        if repo_id not in chosen:
            models.append(model_entry(repo_id, known.role, cache, False, best_free))

    if not reasoner and not no_reasoner:
        problem(MODEL_MISSING, f"profile {prof.name} has no published checkpoint: choose your model "
                               f"(a hub id or a folder) in the model picker, or pass --reasoner.")
    to_download = 0
    for entry in models:
        if not entry["selected"] or entry["present"]:
            continue
        if entry["gated"]:
            problem(MODEL_GATED, access_advice(entry["id"]))
        if looks_like_folder(entry["id"]):
            problem(MODEL_MISSING, f"the {entry['role']} folder cannot be used: {entry['detail']}; choose a "
                                   f"folder holding config.json and the *.safetensors weights.")
        else:
            size = human_bytes(entry["download_bytes"]) if entry["download_bytes"] else "size unknown"
            problem(MODEL_MISSING, f"the {entry['role']} {entry['id']} is not downloaded ({size}): download it "
                                   f"from the model picker, or run `georeasoner download {entry['id']}`, or "
                                   f"choose a local folder (HF_HUB_OFFLINE machines: copy the folder over).")
            to_download += entry["download_bytes"] or 0
    disk_free = probe.disk_free(cache)
    if disk_free < to_download + DISK_MARGIN_BYTES:
        problem(DISK_LOW, f"only {human_bytes(disk_free)} free at {cache}, {human_bytes(to_download)} to download "
                          f"plus {human_bytes(DISK_MARGIN_BYTES)} of margin: free some space, or set HF_HOME to a "
                          f"folder on a larger disk.")

    reasoner_entry = next((m for m in models if m["selected"] and m["role"] == ROLE_REASONER), None)
    need = sum(m["gpu_bytes"] or 0 for m in models if m["selected"])
    if torch_version is not None and reasoner_entry is not None:
        if not gpus and _needs_gpu(reasoner_entry):
            problem(NO_GPU, f"no GPU found (torch {torch_version}, CUDA {cuda or 'none'}): {reasoner_entry['id']} "
                            f"would take minutes per question on the CPU. Use a GPU server (Connect to a GPU "
                            f"server), install the NVIDIA driver if this machine has a GPU, or try the demo.")
        elif best_free is not None and best_free < need:
            problem(GPU_MEMORY, f"the chosen models need about {human_bytes(need)} of GPU memory; the GPU with the "
                                f"most free memory has {human_bytes(best_free)}. Close other GPU programs, choose a "
                                f"smaller checkpoint (the model picker marks what fits), or use a GPU server.")

    return {
        "python": py,
        "torch": torch_version,
        "cuda": cuda,
        "gpus": [{"name": g.name, "free_bytes": g.free_bytes, "total_bytes": g.total_bytes} for g in gpus],
        "disk_free_bytes": disk_free,
        "models": models,
        "problems": problems,
        "ok": not problems,
    }


def runnable_profiles(report: Dict) -> List[str]:
    """Profiles whose published reasoner is present and fits (or the chosen models, when those are fine)."""
    present = {m["id"] for m in report["models"] if m["present"] and m["fits"] is not False}
    seg_ok = any(m["present"] for m in report["models"] if m["role"] == ROLE_SEGMENTER)
    out = []
    for name, prof in PROFILES.items():
        if seg_ok and any(c in present for c in prof.checkpoints):
            out.append(name)
    return out


def format_text(report: Dict) -> str:
    lines = [f"Python   {report['python']} ({sys.executable})",
             f"torch    {report['torch'] or 'not installed'}",
             f"CUDA     {report['cuda'] or 'none'}"]
    if report["gpus"]:
        for g in report["gpus"]:
            lines.append(f"GPU      {g['name']}: {human_bytes(g['free_bytes'])} free of {human_bytes(g['total_bytes'])}")
    else:
        lines.append("GPU      none found")
    lines.append(f"Disk     {human_bytes(report['disk_free_bytes'])} free for models")
    lines.append("Models:")
    for m in report["models"]:
        mark = "present" if m["present"] else "missing"
        extra = []
        if m["download_bytes"]:
            extra.append(f"download {human_bytes(m['download_bytes'])}")
        if m["gpu_bytes"]:
            extra.append(f"GPU {human_bytes(m['gpu_bytes'])}" + ("" if m["fits"] is None else
                                                                   (", fits" if m["fits"] else ", does not fit")))
        if m["gated"]:
            extra.append("gated")
        chosen = "*" if m["selected"] else " "
        lines.append(f" {chosen} {m['role']:9s} {m['id']}: {mark}" + (f" ({'; '.join(extra)})" if extra else ""))
    runnable = runnable_profiles(report)
    lines.append("Profiles that can run here: " + (", ".join(runnable) if runnable else "none with a published "
                                                     "checkpoint (the chosen models are checked above)"))
    if report["problems"]:
        lines.append("Problems:")
        lines += [f"  [{p['code']}] {p['advice']}" for p in report["problems"]]
    else:
        lines.append("All good: the chosen models can answer on this machine.")
    return "\n".join(lines)


def main_json(report: Dict) -> str:
    return json.dumps(report, indent=2)


__all__ = ["run", "format_text", "Probe", "Gpu", "MODEL_ALLOW_PATTERNS"]
