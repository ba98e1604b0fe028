"""What "Install a local backend" does, decided without touching anything (no Qt, no QGIS imports).

- Which Python builds the venv, and why: QGIS's own bundled Python on Windows and macOS (there is
  often no other, and it is the version the QGIS build was made with), `python3` on Linux (QGIS
  uses the system Python there; the venv module may need the distribution's python3-venv).
- Where the venv lives: `<QGIS profile folder>/georeasoner/backend-venv`.
- Which torch build fits the hardware, as pip arguments: the CUDA build when an NVIDIA GPU is
  present, the default build on Apple silicon (MPS), else a CPU build.
- The pinned requirements, read from one place: the plugin zip's requirements-backend.txt, or in
  a source checkout the same lines made from pyproject.toml (core/requirements.py).
- What a failed pip run means, in one line of advice.

The QgsTask that runs the plan is in install_task.py; these functions are unit-tested per OS
layout with plain folders.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from ..core.catalog import BACKEND_REQUIREMENTS_BYTES, PACKAGE_BYTES, human_bytes
from ..core.requirements import requirement_lines

WINDOWS, MACOS, LINUX = "windows", "macos", "linux"
CUDA, MPS, CPU, UNSUPPORTED = "cuda", "mps", "cpu", "unsupported"
# CUDA builds of torch, oldest first: (wheel-index subfolder, the driver's CUDA version it needs).
TORCH_CUDA_BUILDS = (("cu126", (12, 6)), ("cu128", (12, 8)), ("cu130", (13, 0)))
# The CUDA version of the default Linux torch wheel (what pip installs without an index).
DEFAULT_LINUX_CUDA = (13, 0)
READY_MARKER = "georeasoner-ready.json"
PLUGIN_DIR = Path(__file__).resolve().parents[1]


def os_name(platform_name: str) -> str:
    """'win32' / 'darwin' / 'linux' (sys.platform) -> windows / macos / linux."""
    if platform_name.startswith("win"):
        return WINDOWS
    if platform_name == "darwin":
        return MACOS
    return LINUX


@dataclass
class NvidiaGpu:
    name: str
    total_mb: int
    free_mb: int


@dataclass
class Hardware:
    os: str
    machine: str  # x86_64, arm64, AMD64 ...
    gpus: List[NvidiaGpu] = field(default_factory=list)
    cuda_driver: Optional[Tuple[int, int]] = None  # highest CUDA version the driver supports
    disk_free_bytes: Optional[int] = None

    def describe(self) -> str:
        system = {WINDOWS: "Windows", MACOS: "macOS", LINUX: "Linux"}[self.os] + f" ({self.machine})"
        if self.gpus:
            cuda = ".".join(map(str, self.cuda_driver)) if self.cuda_driver else "unknown"
            gpus = "; ".join(f"{g.name}, {g.free_mb / 1024:.1f} GB free of {g.total_mb / 1024:.1f} GB"
                             for g in self.gpus)
            gpu_text = f"NVIDIA GPU: {gpus} (driver supports CUDA {cuda})"
        elif self.os == MACOS and self.machine in ("arm64", "aarch64"):
            gpu_text = "Apple silicon GPU (MPS, memory shared with the system)"
        else:
            gpu_text = "no NVIDIA GPU found"
        disk = human_bytes(self.disk_free_bytes) + " free" if self.disk_free_bytes is not None else "disk unknown"
        return f"{system}; {gpu_text}; {disk}"


def parse_nvidia_smi(gpu_csv: str, header_text: str = "") -> Tuple[List[NvidiaGpu], Optional[Tuple[int, int]]]:
    """`nvidia-smi --query-gpu=name,memory.total,memory.free --format=csv,noheader,nounits` (+ its banner)."""
    gpus = []
    for row in csv.reader(io.StringIO(gpu_csv)):
        if len(row) >= 3:
            try:
                gpus.append(NvidiaGpu(row[0].strip(), int(float(row[1])), int(float(row[2]))))
            except ValueError:
                continue
    match = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", header_text)
    return gpus, (int(match.group(1)), int(match.group(2))) if match else None


def detect_hardware(platform_name: str, machine: str, disk_path: Path,
                    run: Callable = subprocess.run, which: Callable = shutil.which) -> Hardware:
    hw = Hardware(os_name(platform_name), machine)
    smi = which("nvidia-smi")
    if smi:
        try:
            query = run([smi, "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"],
                        capture_output=True, text=True, timeout=15)
            banner = run([smi], capture_output=True, text=True, timeout=15)
            if query.returncode == 0:
                hw.gpus, hw.cuda_driver = parse_nvidia_smi(query.stdout, banner.stdout)
        except (OSError, subprocess.SubprocessError):
            pass
    path = Path(disk_path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        hw.disk_free_bytes = shutil.disk_usage(path).free
    except OSError:
        pass
    return hw


# -- interpreter -----------------------------------------------------------------------------------
@dataclass
class PythonLayout:
    """What QGIS's own interpreter says about itself (sys.* inside QGIS)."""
    platform: str  # sys.platform
    executable: str  # sys.executable (on Windows and macOS: often the QGIS binary, not a python)
    base_prefix: str  # sys.base_prefix: the Python home of the bundled interpreter
    version: Tuple[int, int]  # sys.version_info[:2]


def interpreter_candidates(layout: PythonLayout, which: Callable = shutil.which) -> List[Tuple[str, str]]:
    """(path, why) in order of preference; the first that exists is used."""
    system = os_name(layout.platform)
    major, minor = layout.version
    out: List[Tuple[str, str]] = []
    if system == WINDOWS:
        why = (f"QGIS's own Python {major}.{minor} (Windows has no system Python; QGIS ships one in "
               f"apps\\Python{major}{minor})")
        home = Path(layout.base_prefix)
        out.append((str(home / "python.exe"), why))
        exe_dir = Path(layout.executable).parent  # ...\QGIS 3.40\bin
        out.append((str(exe_dir.parent / "apps" / f"Python{major}{minor}" / "python.exe"), why))
        out.append((str(exe_dir / "python3.exe"), "QGIS's python3.exe launcher in its bin folder"))
    elif system == MACOS:
        why = f"QGIS's own Python {major}.{minor}, inside the QGIS app bundle (macOS's python3 may be missing or old)"
        home = Path(layout.base_prefix)
        out.append((str(home / "bin" / f"python{major}.{minor}"), why))
        out.append((str(home / "bin" / "python3"), why))
        exe_dir = Path(layout.executable).parent  # QGIS.app/Contents/MacOS
        out.append((str(exe_dir / "bin" / "python3"), why))
        found = which("python3")
        if found:
            out.append((found, "python3 on the PATH (QGIS's bundled Python was not found)"))
    else:
        found = which("python3")
        why = ("python3 on the PATH: QGIS uses the system Python on Linux, and the backend only needs "
               "Python 3.10+ with the venv module (Debian/Ubuntu: sudo apt install python3-venv)")
        if found:
            out.append((found, why))
        out.append(("/usr/bin/python3", why))
    return out


def choose_interpreter(layout: PythonLayout, which: Callable = shutil.which,
                       exists: Callable[[str], bool] = os.path.isfile) -> Tuple[str, str]:
    """(path, why) of the Python that builds the venv; ("", advice) when none is found."""
    for path, why in interpreter_candidates(layout, which):
        if exists(path):
            return path, why
    system = os_name(layout.platform)
    advice = {WINDOWS: "QGIS's bundled Python was not found: reinstall QGIS (the OSGeo4W or standalone installer).",
              MACOS: "QGIS's bundled Python was not found: reinstall QGIS from its official macOS package.",
              LINUX: "No python3 found: install it (Debian/Ubuntu: sudo apt install python3 python3-venv)."}[system]
    return "", advice


def venv_dir(profile_dir: Path) -> Path:
    return Path(profile_dir) / "georeasoner" / "backend-venv"


def venv_python(venv: Path, system: str) -> Path:
    return Path(venv) / ("Scripts/python.exe" if system == WINDOWS else "bin/python")


# -- torch -----------------------------------------------------------------------------------------
def torch_variant(hw: Hardware) -> str:
    if hw.os == MACOS:
        return MPS if hw.machine in ("arm64", "aarch64") else UNSUPPORTED  # no torch wheels for Intel Macs
    return CUDA if hw.gpus else CPU


def _cuda_build(driver: Optional[Tuple[int, int]]) -> str:
    usable = [tag for tag, need in TORCH_CUDA_BUILDS if driver is None or need <= driver]
    return usable[-1] if usable else ""


@dataclass
class TorchPlan:
    variant: str
    pip_args: List[str]  # after `python -m pip install`
    note: str
    download_bytes: int
    error: str = ""  # set when no torch build fits: the install must not start


def torch_plan(hw: Hardware, pins: Sequence[str], index_url: str = "") -> TorchPlan:
    """The pip arguments for the torch build that fits `hw`.

    index_url: a PyTorch wheel index whose subfolders (cpu, cu126, cu128, cu130) hold the variant
    builds; set in the set-up panel. Without it pip's default index is used, whose torch is the CUDA
    build on Linux, the CPU build on Windows and the MPS-capable build on macOS.
    """
    variant = torch_variant(hw)
    pins = list(pins)
    index = index_url.rstrip("/")
    if variant == UNSUPPORTED:
        return TorchPlan(variant, [], "", 0, "torch has no builds for Intel Macs any more: connect to a GPU server "
                                              "instead (or run the backend on another machine).")
    if variant == MPS:
        return TorchPlan(variant, pins, "the default macOS build, which uses the Apple GPU (MPS)", PACKAGE_BYTES[MPS])
    if variant == CUDA:
        build = _cuda_build(hw.cuda_driver)
        if not build:
            return TorchPlan(variant, [], "", 0, f"the NVIDIA driver supports CUDA "
                                                 f"{'.'.join(map(str, hw.cuda_driver or ()))} only; torch needs 12.6 or "
                                                 f"newer: update the NVIDIA driver, then Install again.")
        if index:
            return TorchPlan(variant, pins + ["--index-url", f"{index}/{build}"],
                             f"the CUDA build {build} from the PyTorch wheel index", PACKAGE_BYTES[CUDA])
        if hw.os == LINUX and (hw.cuda_driver is None or hw.cuda_driver >= DEFAULT_LINUX_CUDA):
            return TorchPlan(variant, pins, "the default Linux build, which bundles CUDA "
                                            f"{'.'.join(map(str, DEFAULT_LINUX_CUDA))}", PACKAGE_BYTES[CUDA])
        if hw.os == LINUX:
            return TorchPlan(variant, pins, "the default Linux build needs a driver for CUDA 13.0 and yours is older: "
                                            f"update the driver, or set a PyTorch wheel index to get the {build} "
                                            "build", PACKAGE_BYTES[CUDA])
        return TorchPlan(variant, pins, "WARNING: without a PyTorch wheel index pip installs the CPU-only "
                                        f"Windows build; set the index in the set-up panel to get the {build} "
                                        "build for your GPU", PACKAGE_BYTES[CPU])
    # CPU
    if index:
        return TorchPlan(variant, pins + ["--index-url", f"{index}/cpu"], "the CPU-only build from the PyTorch "
                                                                          "wheel index", PACKAGE_BYTES[CPU])
    if hw.os == LINUX:
        return TorchPlan(variant, pins, "the default Linux build (it bundles CUDA and runs on the CPU too; a PyTorch "
                                        "wheel index gives the smaller CPU-only build)", PACKAGE_BYTES[CUDA])
    return TorchPlan(variant, pins, "the default CPU build", PACKAGE_BYTES[CPU])


# -- requirements ----------------------------------------------------------------------------------
def read_requirements(plugin_dir: Path = PLUGIN_DIR) -> List[str]:
    """The pinned lines: the zip's requirements-backend.txt, else made from the checkout's pyproject.toml."""
    shipped = Path(plugin_dir) / "requirements-backend.txt"
    if shipped.is_file():
        text = shipped.read_text(encoding="utf-8")
    else:
        pyproject = Path(plugin_dir).parent / "pyproject.toml"
        if not pyproject.is_file():
            raise FileNotFoundError(f"neither {shipped} nor {pyproject} exists: the plugin is incomplete; "
                                    f"install it again from its zip")
        text = "\n".join(requirement_lines(pyproject.read_text(encoding="utf-8")))
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def split_torch(lines: Sequence[str]) -> Tuple[List[str], List[str]]:
    torch = [line for line in lines if re.match(r"^(torch|torchvision)\s*(==|>=|<=|~=|$)", line)]
    return torch, [line for line in lines if line not in torch]


def requirements_hash(lines: Sequence[str], torch_args: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(list(lines) + list(torch_args)).encode()).hexdigest()[:16]


# -- the plan --------------------------------------------------------------------------------------
@dataclass
class Step:
    title: str
    argv: List[str]


@dataclass
class InstallPlan:
    interpreter: str
    interpreter_reason: str
    venv: Path
    python: Path  # the venv's python
    torch: TorchPlan
    requirements: List[str]
    steps: List[Step]
    requirements_file: Path
    fingerprint: str
    error: str = ""

    def summary(self) -> str:
        if self.error:
            return self.error
        total = self.torch.download_bytes + BACKEND_REQUIREMENTS_BYTES
        return (f"Python: {self.interpreter} ({self.interpreter_reason}).\n"
                f"Venv: {self.venv}.\n"
                f"torch: {self.torch.note} ({' '.join(a for a in self.torch.pip_args if not a.startswith('--'))}).\n"
                f"Then {len(self.requirements)} pinned backend packages. Python packages to download: about "
                f"{human_bytes(total)} (pip's cache is reused).")


def make_plan(layout: PythonLayout, hw: Hardware, profile_dir: Path, index_url: str = "",
              requirements: Optional[Sequence[str]] = None, which: Callable = shutil.which,
              exists: Callable[[str], bool] = os.path.isfile) -> InstallPlan:
    lines = list(requirements) if requirements is not None else read_requirements()
    torch_pins, rest = split_torch(lines)
    interpreter, reason = choose_interpreter(layout, which, exists)
    venv = venv_dir(profile_dir)
    python = venv_python(venv, hw.os)
    torch = torch_plan(hw, torch_pins, index_url)
    req_file = venv / "georeasoner-requirements.txt"
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    steps = [Step("creating the venv", [interpreter, "-m", "venv", str(venv)])]
    if torch_pins:
        steps.append(Step("installing torch", pip + torch.pip_args))
    steps.append(Step("installing the backend requirements", pip + ["-r", str(req_file)]))
    steps.append(Step("checking the install (georeasoner doctor)",
                      [str(python), "-m", "georeasoner_plugin.backend.cli", "doctor", "--json", "--segmenter", "none"]))
    error = torch.error or ("" if interpreter else reason)
    return InstallPlan(interpreter, reason, venv, python, torch, rest, steps, req_file,
                       requirements_hash(lines, torch.pip_args), error)


# -- failures --------------------------------------------------------------------------------------
NETWORK_SIGNS = ("Failed to establish a new connection", "Connection refused", "Name or service not known",
                 "Temporary failure in name resolution", "Max retries exceeded", "ProxyError",
                 "Network is unreachable", "Read timed out", "ConnectTimeoutError", "connection broken")


def pip_advice(output: str, python_version: str = "") -> str:
    """One line saying what to do about a failed pip (or venv) run, from its output."""
    if "No space left on device" in output:
        return "The disk is full: free some space (the install needs several GB), then Install again."
    if "ensurepip is not available" in output or "No module named venv" in output:
        return ("This Python cannot make venvs: install the venv module (Debian/Ubuntu: sudo apt install "
                "python3-venv), then Install again.")
    if any(sign in output for sign in NETWORK_SIGNS):
        return ("pip could not reach the package index (no network, or a proxy is needed): connect, or set HTTPS_PROXY "
                "(or pip's proxy setting), then Install again; it repairs what is there.")
    if "Permission denied" in output:
        return "pip was refused write access: check the permissions of the QGIS profile folder, then Install again."
    if "No matching distribution found" in output or "Could not find a version that satisfies" in output:
        who = f" for Python {python_version}" if python_version else ""
        return (f"A pinned package has no build{who} on this system, or the index does not have it: check the log "
                f"for its name; a different Python, or a GPU server, avoids the problem.")
    if "Failed building wheel" in output or "subprocess-exited-with-error" in output:
        return ("A package had to be compiled and that failed: install a C compiler and Python headers, or use a "
                "Python version with ready-made wheels.")
    return "pip failed: read the log above for the first ERROR line; fix it and Install again (it repairs what is there)."
