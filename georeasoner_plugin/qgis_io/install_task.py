"""Runs an install plan (installer.py) as a QgsTask: the venv, torch, the pinned requirements, doctor.

Each step is a subprocess whose output lines reach the set-up panel's log as they come. Cancel
terminates the running step. The ready marker (`<venv>/georeasoner-ready.json`, holding the plan's
fingerprint) is removed first and written only after doctor found the environment complete, so a
failed, cancelled or half-finished install is never taken for a working one. Running the task
again over an existing venv repairs it (pip installs what is missing or wrong).
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import List, Optional, Tuple

from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from .installer import READY_MARKER, InstallPlan, pip_advice

PLUGIN_PARENT = Path(__file__).resolve().parents[2]  # the folder holding the georeasoner_plugin package
# doctor problems that mean the environment itself is incomplete (model problems are the picker's job)
ENVIRONMENT_PROBLEMS = ("no_torch", "torch_broken", "missing_packages", "python_too_old")

ABSENT, READY, STALE, BROKEN = "absent", "ready", "stale", "broken"


def install_state(plan: InstallPlan) -> str:
    """absent (nothing there), ready (marker matches this plan), stale (installed for other pins),
    broken (a venv without a marker: an install that failed or was cancelled)."""
    marker = plan.venv / READY_MARKER
    if not plan.venv.exists():
        return ABSENT
    if not marker.is_file() or not plan.python.exists():
        return BROKEN
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return BROKEN
    return READY if data.get("fingerprint") == plan.fingerprint else STALE


def backend_env(extra: Optional[dict] = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PLUGIN_PARENT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PIP_NO_INPUT"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("QT_QPA_PLATFORM", None)
    env.pop("PYTHONHOME", None)  # QGIS sets it on some platforms; it must not leak into another Python
    env.update(extra or {})
    return env


class InstallTask(QgsTask):
    line = pyqtSignal(str)
    step_started = pyqtSignal(int, str)

    def __init__(self, plan: InstallPlan, env: Optional[dict] = None):
        super().__init__("GeoReasoner: install the local backend", QgsTask.Flag.CanCancel)
        self.plan = plan
        self.env = backend_env(env)
        self.error = ""  # what failed and what to do
        self.failed_command = ""
        self.doctor: Optional[dict] = None
        self.output_tail: List[str] = []
        self.seconds = 0.0

    # -- worker thread ---------------------------------------------------------------------------
    def run(self) -> bool:
        started = time.monotonic()
        try:
            return self._run()
        except Exception as exc:  # noqa: BLE001 - reported, never raised into QGIS
            self.error = f"The install stopped: {type(exc).__name__}: {exc}"
            return False
        finally:
            self.seconds = time.monotonic() - started

    def _run(self) -> bool:
        plan = self.plan
        if plan.error:
            self.error = plan.error
            return False
        (plan.venv / READY_MARKER).unlink(missing_ok=True)
        steps = plan.steps
        for index, step in enumerate(steps):
            if self.isCanceled():
                return False
            self.setProgress(100.0 * index / len(steps))
            self.step_started.emit(index, step.title)
            if index == 0 and plan.python.exists():
                self.line.emit(f"{plan.venv} exists: repairing it")
                continue
            if step.argv[-2:] == ["-r", str(plan.requirements_file)]:
                plan.requirements_file.write_text("\n".join(plan.requirements) + "\n", encoding="utf-8")
            code, output = self._call(step.argv)
            if self.isCanceled():
                self.error = "Cancelled: nothing was marked as installed. Install again to finish (it repairs)."
                return False
            if "doctor" in step.argv:
                return self._check_doctor(code, output)
            if code != 0:
                self.failed_command = " ".join(step.argv)
                self.error = (f"{step.title} failed (exit code {code}): {self.failed_command}\n"
                              f"{pip_advice(output, self._python_version())}")
                return False
        return False  # a plan always ends with doctor

    def _check_doctor(self, code: int, output: str) -> bool:
        try:
            report = json.loads(output[output.index("{"):output.rindex("}") + 1])
        except ValueError:
            self.failed_command = " ".join(self.plan.steps[-1].argv)
            self.error = f"doctor did not run (exit code {code}): {self.failed_command}\n" + pip_advice(output)
            return False
        self.doctor = report
        blocking = [p for p in report["problems"] if p["code"] in ENVIRONMENT_PROBLEMS]
        if blocking:
            self.error = "The install is incomplete: " + " ".join(p["advice"] for p in blocking)
            return False
        marker = {"fingerprint": self.plan.fingerprint, "python": report["python"], "torch": report["torch"],
                  "cuda": report["cuda"], "variant": self.plan.torch.variant, "installed": time.time()}
        (self.plan.venv / READY_MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        self.setProgress(100.0)
        return True

    def _python_version(self) -> str:
        try:
            out = subprocess.run([str(self.plan.python), "-c", "import platform; print(platform.python_version())"],
                                 capture_output=True, text=True, timeout=30)
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    def _call(self, argv: List[str]) -> Tuple[int, str]:
        """Run one step; its lines go to the log as they come; Cancel terminates it."""
        self.line.emit("$ " + " ".join(argv))
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self.env, text=True, errors="replace", cwd=str(PLUGIN_PARENT))
        except OSError as exc:
            return 127, f"cannot run {argv[0]}: {exc}"
        lines: "queue.Queue[Optional[str]]" = queue.Queue()

        def pump():
            for text in proc.stdout:
                lines.put(text.rstrip("\n"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        output: List[str] = []
        while True:
            try:
                text = lines.get(timeout=0.1)
            except queue.Empty:
                if self.isCanceled() and proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                continue
            if text is None:
                break
            output.append(text)
            if not text.startswith("WARNING: Location"):  # noise from local find-links settings
                self.line.emit(text)
        code = proc.wait()
        self.output_tail = output[-40:]
        return code, "\n".join(output)


def remove_backend(venv: Path) -> str:
    """Delete the venv (and with it the ready marker). Returns "" or what went wrong."""
    if not venv.exists():
        return ""
    (venv / READY_MARKER).unlink(missing_ok=True)
    errors: List[str] = []
    shutil.rmtree(venv, onerror=lambda f, p, e: errors.append(f"{p}: {e[1]}"))
    return "" if not errors else "Some files could not be removed (close programs using them): " + errors[0]
