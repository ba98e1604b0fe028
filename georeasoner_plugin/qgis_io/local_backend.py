"""A local backend started from QGIS: a Python interpreter the user names runs `cli serve`."""
from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import List, Optional

from qgis.PyQt.QtCore import QObject, QProcess, QProcessEnvironment, pyqtSignal

from ..core.api import DEFAULT_HOST, parse_listening_line
from ..core.transport import private_capture_dir
from ..toolbelt.i18n import tr
from ..toolbelt.settings import Settings

PLUGIN_PARENT = Path(__file__).resolve().parents[2]  # the folder holding the georeasoner_plugin package


def local_capture_dir() -> str:
    """A folder of this QGIS profile, private to its user, where captures for a backend started from
    QGIS go ("" when it cannot be made: the captures are then uploaded)."""
    from qgis.core import QgsApplication

    return private_capture_dir(Path(QgsApplication.qgisSettingsDirPath()) / "georeasoner" / "captures") or ""


class LocalBackend(QObject):
    started = pyqtSignal(str)  # url
    stopped = pyqtSignal(int)  # exit code
    log_line = pyqtSignal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.process: Optional[QProcess] = None
        self.url = ""
        self.lines = deque(maxlen=2000)

    def command(self, settings: Settings) -> List[str]:
        args = ["-m", "georeasoner_plugin.backend.cli", "serve", "--host", DEFAULT_HOST,
                "--port", str(settings.local_port or 0)]
        if settings.reasoner_output:
            args += ["--reasoner-output", settings.reasoner_output]
        elif settings.reasoner:
            args += ["--reasoner", settings.reasoner]
        if settings.segmenter:
            args += ["--segmenter", settings.segmenter]
        if settings.token_file:
            args += ["--token-file", settings.token_file]
        captures = local_capture_dir()
        if captures:  # same machine: captures are handed over as files, not uploaded (core/transport.py)
            args += ["--shared-capture-dir", captures]
        return args

    def is_running(self) -> bool:
        return self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning

    def start(self, settings: Settings) -> None:
        if self.is_running():
            return
        python = settings.python_path.strip()
        if not python or not Path(python).exists():
            raise RuntimeError(tr("Set the backend's Python interpreter (the python of the venv where the "
                                  "GeoReasoner backend is installed) in Options > GeoReasoner."))
        self.url = ""
        process = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        path = env.value("PYTHONPATH", "")
        env.insert("PYTHONPATH", str(PLUGIN_PARENT) + (os.pathsep + path if path else ""))
        env.remove("QT_QPA_PLATFORM")
        process.setProcessEnvironment(env)
        process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        process.readyReadStandardOutput.connect(self._read)
        process.finished.connect(self._finished)
        self.process = process
        self._add(f"$ {python} {' '.join(self.command(settings))}")
        process.start(python, self.command(settings))

    def stop(self, wait_ms: int = 5000) -> None:
        if not self.is_running():
            return
        self.process.terminate()
        if not self.process.waitForFinished(wait_ms):
            self.process.kill()
            self.process.waitForFinished(wait_ms)

    def _read(self) -> None:
        data = bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        for line in data.splitlines():
            self._add(line)
            url = parse_listening_line(line)
            if url and not self.url:
                self.url = url.rstrip("/")
                self.started.emit(self.url)

    def _add(self, line: str) -> None:
        self.lines.append(line)
        self.log_line.emit(line)

    def _finished(self, code, _status=None) -> None:
        self._add(tr("backend exited with code {0}").format(code))
        self.stopped.emit(int(code))

    def log_text(self) -> str:
        return "\n".join(self.lines)
