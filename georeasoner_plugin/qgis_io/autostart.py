"""Starting a configured local backend on the first Ask, and watching it.

doctor first (a missing model is said before minutes of loading), then `cli serve`; while models
load, `/v1/health` is polled once a second and the dock shows "loading models (n s)"; when it says
ready, `/v1/info` is read and its protocol version checked, then the waiting question is sent. A
backend that exits is reported with the last lines of its log; `restart()` starts it again.
"""
from __future__ import annotations

import json
import time
from typing import Callable, Optional

from qgis.PyQt.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, pyqtSignal

from ..core.protocol import PROTOCOL_VERSION
from ..toolbelt.i18n import tr
from ..toolbelt.settings import Settings
from . import setup_config
from .client import BackendClient, BackendError, read_token
from .install_task import backend_env

STARTING, LOADING, READY, FAILED, CRASHED, CHECKING = "starting", "loading", "ready", "failed", "crashed", "checking"
LOG_LINES_SHOWN = 15


def advice_for_problem(code: str, advice: str) -> str:
    titles = {"model_missing": tr("Model missing"), "model_gated": tr("Model needs access"),
              "gpu_memory": tr("Not enough GPU memory"), "no_gpu": tr("No GPU"), "no_torch": tr("Backend not installed"),
              "missing_packages": tr("Backend incomplete"), "torch_broken": tr("Backend broken"),
              "disk_low": tr("Disk almost full")}
    return f"{titles.get(code, code)}: {advice}"


def advice_for_health_error(detail: str) -> str:
    low = detail.lower()
    if "out of memory" in low or "outofmemory" in low:
        return tr("Out of GPU memory while loading the models: choose a smaller checkpoint in the set-up panel's "
                  "model picker, close other programs using the GPU, or connect to a GPU server. ({0})").format(detail)
    if "not in the local cache" in low or "does not exist" in low or "lacks" in low:
        return tr("Model missing: download it in the set-up panel's model picker, or choose a local folder. "
                  "({0})").format(detail)
    return tr("The backend could not load its models: {0}. Fix that in the set-up panel, then Restart.").format(detail)


def protocol_problem(info: dict) -> str:
    theirs = info.get("protocol_version")
    if theirs != PROTOCOL_VERSION:
        return tr("Version mismatch: the backend speaks answer protocol {0} and this plugin protocol {1}. Install "
                  "the same GeoReasoner release on both sides (local backend: Install again repairs it; a GPU "
                  "server: update it or the plugin).").format(theirs, PROTOCOL_VERSION)
    return ""


class BackendStarter(QObject):
    state_changed = pyqtSignal(str, str)  # state, message saying what happens and what to do next
    crashed = pyqtSignal(str)  # the last lines of the backend's log

    def __init__(self, local_backend, parent=None):
        super().__init__(parent)
        self.local_backend = local_backend
        self.phase = ""
        self.message = ""
        self.pending: Optional[Callable[[], None]] = None
        self.warning = ""
        self.started_at = 0.0
        self.doctor: Optional[QProcess] = None
        self._polling = False
        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self._poll)
        local_backend.started.connect(self._on_started)
        local_backend.stopped.connect(self._on_stopped)

    # -- what the dock calls -----------------------------------------------------------------------
    @staticmethod
    def local_configured(settings: Optional[Settings] = None) -> bool:
        settings = settings or Settings.load()
        return setup_config.mode() in (setup_config.MODE_LOCAL, setup_config.MODE_DEMO) and \
            bool(settings.python_path.strip())

    def before_ask(self, retry: Callable[[], None]) -> bool:
        """True: ask now. False: the backend is being started; retry() runs once it is ready."""
        if not self.local_configured():
            return True
        if self.phase == READY and self.local_backend.is_running():
            return True
        self.pending = retry
        if self.phase in (CHECKING, STARTING, LOADING):
            return False
        self.start()
        return False

    def start(self) -> None:
        settings = Settings.load()
        self._set(CHECKING, tr("Checking the backend (georeasoner doctor)..."))
        args = ["-m", "georeasoner_plugin.backend.cli", "doctor", "--json",
                "--reasoner", "none" if settings.reasoner_output else (settings.reasoner or ""),
                "--segmenter", settings.segmenter or "none"]
        if not settings.reasoner_output and not settings.reasoner:
            del args[4:6]
        self.doctor = QProcess(self)
        env = QProcessEnvironment()
        for key, value in backend_env().items():
            env.insert(key, value)
        self.doctor.setProcessEnvironment(env)
        self.doctor.finished.connect(self._doctor_done)
        self.doctor.errorOccurred.connect(self._doctor_error)
        self.doctor.start(settings.python_path, args)

    def restart(self) -> None:
        self.phase = ""  # a stop on purpose is not a crash
        self.local_backend.stop()
        self.start()

    def stop(self) -> None:
        self.timer.stop()
        self.pending = None
        self.phase = ""
        if self.doctor is not None and self.doctor.state() != QProcess.ProcessState.NotRunning:
            self.doctor.kill()
            self.doctor.waitForFinished(3000)
        self.local_backend.stop()

    # -- steps -------------------------------------------------------------------------------------
    def _set(self, phase: str, message: str) -> None:
        self.phase, self.message = phase, message
        self.state_changed.emit(phase, message)

    def _fail(self, message: str) -> None:
        self.timer.stop()
        self.pending = None
        self._set(FAILED, message)

    def _doctor_error(self, _error) -> None:
        if self.phase == CHECKING and self.doctor is not None and \
                self.doctor.error() == QProcess.ProcessError.FailedToStart:
            self._fail(tr("The backend's Python ({0}) cannot be run: install the backend again from the set-up "
                          "panel.").format(Settings.load().python_path))

    def _doctor_done(self, code, _status=None) -> None:
        if self.phase != CHECKING:
            return
        text = bytes(self.doctor.readAllStandardOutput()).decode("utf-8", "replace")
        try:
            report = json.loads(text[text.index("{"):text.rindex("}") + 1])
        except ValueError:
            err = bytes(self.doctor.readAllStandardError()).decode("utf-8", "replace").strip().splitlines()
            self._fail(tr("doctor could not check the backend (exit code {0}): {1}. Install the backend again from "
                          "the set-up panel.").format(code, err[-1] if err else ""))
            return
        # no GPU is a warning here: the user chose this model; it starts, slowly, and the state says so
        problems = [p for p in report["problems"] if p["code"] != "no_gpu"]
        self.warning = " ".join(advice_for_problem(p["code"], p["advice"])
                                for p in report["problems"] if p["code"] == "no_gpu")
        if problems:
            self._fail("\n".join(advice_for_problem(p["code"], p["advice"]) for p in problems))
            return
        settings = Settings.load()
        try:
            self.local_backend.start(settings)
        except RuntimeError as exc:
            self._fail(str(exc))
            return
        self.started_at = time.monotonic()
        self._set(STARTING, tr("Starting the backend..."))
        self.timer.start()

    def _on_started(self, url: str) -> None:
        Settings.load().replace(backend_url=url).save()
        if self.phase == STARTING:
            self._set(LOADING, tr("Loading models (0 s)..."))
            self._poll()

    def _poll(self) -> None:
        if self._polling or self.phase not in (STARTING, LOADING):
            return
        seconds = int(time.monotonic() - self.started_at)
        if self.phase == STARTING:
            self._set(STARTING, tr("Starting the backend ({0} s)...").format(seconds))
            return
        self._polling = True
        try:
            client = BackendClient(self.local_backend.url, timeout_s=5, connect_timeout_s=2)
            health = client.health()
            status = health.get("status")
            if status == "loading":
                self._set(LOADING, tr("Loading models ({0} s)...").format(seconds)
                          + (" " + self.warning if self.warning else ""))
            elif status == "error":
                self._fail(advice_for_health_error(str(health.get("detail", ""))))
            elif status == "ready":
                self._ready()
        except BackendError:
            self._set(LOADING, tr("Loading models ({0} s)...").format(seconds))
        finally:
            self._polling = False

    def _ready(self) -> None:
        self.timer.stop()
        settings = Settings.load()
        try:
            info = BackendClient(self.local_backend.url, token=read_token(settings), timeout_s=10).info()
        except BackendError as exc:
            self._fail(str(exc))
            return
        problem = protocol_problem(info)
        if problem:
            self._fail(problem)
            return
        demo = tr(" DEMO: tiny random models replaying a recorded answer.") if info.get("replay") else ""
        self._set(READY, tr("Ready: ask a question.") + demo)
        pending, self.pending = self.pending, None
        if pending is not None:
            pending()

    def _on_stopped(self, code: int) -> None:
        if self.phase in (STARTING, LOADING, READY):
            self.timer.stop()
            self.pending = None
            # the health polls' access-log lines say nothing about why it stopped
            lines = [ln for ln in self.local_backend.lines if ln.strip() and "/v1/health" not in ln]
            lines = lines[-LOG_LINES_SHOWN:]
            self._set(CRASHED, tr("The backend stopped (exit code {0}). Its last log lines are shown in the "
                                  "set-up panel; fix what they say, then press Restart.").format(code))
            self.crashed.emit("\n".join(lines))
