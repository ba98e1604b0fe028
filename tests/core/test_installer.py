"""The installer's choices, per OS layout: which Python builds the venv, where it goes, which torch
build pip gets for the hardware, the pinned requirements, and the advice for a failed pip run."""
import subprocess
import tomllib
from pathlib import Path

import pytest

from georeasoner_plugin.qgis_io import installer as ins
from georeasoner_plugin.qgis_io.installer import Hardware, NvidiaGpu, PythonLayout

ROOT = Path(__file__).resolve().parents[2]
PINS = ["torch==2.14.1", "torchvision==0.29.1"]


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return path


def no_which(_name):
    return None


def test_windows_uses_qgis_bundled_python(tmp_path):
    qgis = tmp_path / "Program Files" / "QGIS 3.40.5"
    python = touch(qgis / "apps" / "Python312" / "python.exe")
    layout = PythonLayout("win32", str(qgis / "bin" / "qgis-bin.exe"), str(qgis / "apps" / "Python312"), (3, 12))
    path, why = ins.choose_interpreter(layout, which=no_which)
    assert path == str(python) and "QGIS's own Python 3.12" in why
    # base_prefix pointing elsewhere: found from the QGIS binary's folder
    layout = PythonLayout("win32", str(qgis / "bin" / "qgis-bin.exe"), str(tmp_path / "elsewhere"), (3, 12))
    assert ins.choose_interpreter(layout, which=no_which)[0] == str(python)
    assert ins.venv_python(tmp_path / "v", ins.WINDOWS) == tmp_path / "v" / "Scripts" / "python.exe"


def test_macos_uses_the_python_inside_the_app_bundle(tmp_path):
    app = tmp_path / "Applications" / "QGIS-LTR.app" / "Contents"
    home = app / "Frameworks" / "Python.framework" / "Versions" / "3.12"
    python = touch(home / "bin" / "python3.12")
    layout = PythonLayout("darwin", str(app / "MacOS" / "QGIS"), str(home), (3, 12))
    path, why = ins.choose_interpreter(layout, which=lambda n: "/usr/bin/python3")
    assert path == str(python) and "app bundle" in why
    python.unlink()
    bundled = touch(app / "MacOS" / "bin" / "python3")
    assert ins.choose_interpreter(layout, which=no_which)[0] == str(bundled)
    assert ins.venv_python(tmp_path / "v", ins.MACOS) == tmp_path / "v" / "bin" / "python"


def test_linux_uses_python3_from_the_path(tmp_path):
    python = touch(tmp_path / "usr" / "bin" / "python3")
    layout = PythonLayout("linux", "/usr/bin/qgis", "/usr", (3, 11))
    path, why = ins.choose_interpreter(layout, which=lambda n: str(python) if n == "python3" else None)
    assert path == str(python) and "system Python" in why and "python3-venv" in why


def test_no_interpreter_found_says_what_to_install(tmp_path):
    for platform, words in (("linux", "apt install python3"), ("win32", "reinstall QGIS"),
                            ("darwin", "reinstall QGIS")):
        layout = PythonLayout(platform, str(tmp_path / "none"), str(tmp_path / "none"), (3, 12))
        path, advice = ins.choose_interpreter(layout, which=no_which, exists=lambda p: False)
        assert path == "" and words in advice


def test_venv_lives_in_the_qgis_profile_folder(tmp_path):
    assert ins.venv_dir(tmp_path / "profiles" / "default") == tmp_path / "profiles" / "default" / "georeasoner" / "backend-venv"


def gpu(driver=(13, 0)):
    return Hardware(ins.LINUX, "x86_64", [NvidiaGpu("NVIDIA RTX 4090", 24564, 23000)], driver)


@pytest.mark.parametrize("hw, index, variant, extra, size_key", [
    (gpu(), "", "cuda", [], "cuda"),  # Linux default wheel bundles CUDA 13.0
    (gpu((12, 8)), "https://wheels.example/whl", "cuda", ["--index-url", "https://wheels.example/whl/cu128"], "cuda"),
    (gpu((13, 2)), "https://wheels.example/whl/", "cuda", ["--index-url", "https://wheels.example/whl/cu130"], "cuda"),
    (Hardware(ins.WINDOWS, "AMD64", [NvidiaGpu("RTX A4000", 16376, 15000)], (12, 6)), "https://w.example/whl",
     "cuda", ["--index-url", "https://w.example/whl/cu126"], "cuda"),
    (Hardware(ins.MACOS, "arm64"), "", "mps", [], "mps"),
    (Hardware(ins.LINUX, "x86_64"), "https://w.example/whl", "cpu", ["--index-url", "https://w.example/whl/cpu"], "cpu"),
    (Hardware(ins.LINUX, "x86_64"), "", "cpu", [], "cuda"),  # default Linux wheel also runs on the CPU
    (Hardware(ins.WINDOWS, "AMD64"), "", "cpu", [], "cpu"),
])
def test_torch_pip_arguments_per_hardware(hw, index, variant, extra, size_key):
    plan = ins.torch_plan(hw, PINS, index)
    assert plan.variant == variant and not plan.error
    assert plan.pip_args == PINS + extra
    assert plan.download_bytes == ins.PACKAGE_BYTES[size_key]


def test_torch_plans_that_need_the_user():
    windows_gpu = Hardware(ins.WINDOWS, "AMD64", [NvidiaGpu("RTX 3060", 12288, 11000)], (12, 8))
    plan = ins.torch_plan(windows_gpu, PINS)
    assert plan.pip_args == PINS and "CPU-only" in plan.note and "cu128" in plan.note
    old_linux = ins.torch_plan(gpu((12, 4)), PINS)
    assert old_linux.error and "update the NVIDIA driver" in old_linux.error
    assert "update the driver" in ins.torch_plan(gpu((12, 8)), PINS).note
    intel_mac = ins.torch_plan(Hardware(ins.MACOS, "x86_64"), PINS)
    assert intel_mac.variant == "unsupported" and "GPU server" in intel_mac.error


def test_nvidia_smi_output_and_detection():
    csv_out = "NVIDIA H100 80GB HBM3, 81559, 80100\nNVIDIA H100 80GB HBM3, 81559, 1200\n"
    banner = "| NVIDIA-SMI 580.65.06    Driver Version: 580.65.06    CUDA Version: 13.0     |"
    gpus, cuda = ins.parse_nvidia_smi(csv_out, banner)
    assert [g.free_mb for g in gpus] == [80100, 1200] and cuda == (13, 0)

    def run(argv, **kw):  # what nvidia-smi prints on a GPU machine
        return subprocess.CompletedProcess(argv, 0, csv_out if len(argv) > 1 else banner, "")

    hw = ins.detect_hardware("linux", "x86_64", Path("/"), run=run, which=lambda n: "/usr/bin/nvidia-smi")
    assert len(hw.gpus) == 2 and hw.cuda_driver == (13, 0) and hw.disk_free_bytes > 0
    assert "NVIDIA H100" in hw.describe() and "CUDA 13.0" in hw.describe()
    none = ins.detect_hardware("linux", "x86_64", Path("/no/such/dir"), which=no_which)
    assert none.gpus == [] and "no NVIDIA GPU" in none.describe()


def test_requirements_are_pinned_and_match_pyproject():
    from packaging.requirements import Requirement

    lines = ins.read_requirements()  # source checkout: made from pyproject.toml
    torch, rest = ins.split_torch(lines)
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert torch == data["tool"]["georeasoner"]["torch"]
    pins = {Requirement(line).name.lower(): Requirement(line) for line in rest}
    assert all(len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in pins.values())
    for extra in data["project"]["optional-dependencies"]["backend"]:
        wanted = Requirement(extra)
        pin = pins[wanted.name.lower()]
        version = next(iter(pin.specifier)).version
        assert wanted.specifier.contains(version), f"{pin} does not satisfy {extra}"
    assert len(pins) == len(data["project"]["optional-dependencies"]["backend"])


def test_the_zip_requirements_win_over_pyproject(tmp_path):
    (tmp_path / "requirements-backend.txt").write_text("# comment\ntorch==1.0\nfoo==2.0\n")
    assert ins.read_requirements(tmp_path) == ["torch==1.0", "foo==2.0"]
    with pytest.raises(FileNotFoundError, match="install it again"):
        ins.read_requirements(tmp_path / "missing" / "plugin")


def test_the_plan(tmp_path):
    python = touch(tmp_path / "python3")
    layout = PythonLayout("linux", "/usr/bin/qgis", "/usr", (3, 11))
    plan = ins.make_plan(layout, gpu(), tmp_path / "profile", requirements=PINS + ["numpy==2.4.6"],
                         which=lambda n: str(python))
    assert not plan.error
    titles = [s.title for s in plan.steps]
    assert titles == ["creating the venv", "installing torch", "installing the backend requirements",
                      "checking the install (georeasoner doctor)"]
    assert plan.steps[0].argv == [str(python), "-m", "venv", str(plan.venv)]
    assert plan.steps[1].argv[-2:] == PINS and plan.steps[1].argv[:4] == [str(plan.python), "-m", "pip", "install"]
    assert plan.steps[2].argv[-2:] == ["-r", str(plan.requirements_file)] and plan.requirements == ["numpy==2.4.6"]
    assert "doctor" in plan.steps[3].argv
    assert "python3" in plan.summary() and "GB" in plan.summary()
    other = ins.make_plan(layout, gpu(), tmp_path / "profile", index_url="https://w.example/whl",
                          requirements=PINS + ["numpy==2.4.6"], which=lambda n: str(python))
    assert other.fingerprint != plan.fingerprint


@pytest.mark.parametrize("output, words", [
    ("WARNING: Retrying ... Failed to establish a new connection: [Errno 111] Connection refused\n"
     "ERROR: Could not find a version that satisfies the requirement torch==2.14.1", "could not reach the package index"),
    ("ERROR: Could not find a version that satisfies the requirement nope==1.0 (from versions: none)\n"
     "ERROR: No matching distribution found for nope==1.0", "no build for Python 3.11"),
    ("OSError: [Errno 28] No space left on device", "disk is full"),
    ("Error: Command '['/x/bin/python', '-m', 'ensurepip']' ... ensurepip is not available", "python3-venv"),
    ("error: subprocess-exited-with-error\n  Failed building wheel for foo", "compiled"),
    ("something else entirely", "first ERROR line"),
])
def test_pip_failure_advice(output, words):
    assert words in ins.pip_advice(output, "3.11")
