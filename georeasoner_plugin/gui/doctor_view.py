"""`georeasoner doctor` inside QGIS: a button and its report (the set-up panel and the Options page)."""
from __future__ import annotations

from typing import Optional

from qgis.PyQt.QtCore import QProcess, QProcessEnvironment
from qgis.PyQt.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from ..qgis_io import setup_config
from ..qgis_io.install_task import backend_env
from ..toolbelt.i18n import tr
from ..toolbelt.settings import Settings


def doctor_args(settings: Settings) -> list:
    args = ["-m", "georeasoner_plugin.backend.cli", "doctor"]
    if settings.reasoner_output:
        args += ["--reasoner", "none"]
    elif settings.reasoner:
        args += ["--reasoner", settings.reasoner]
    if settings.segmenter:
        args += ["--segmenter", settings.segmenter]
    return args


class DoctorView(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("GeoReasonerDoctorView")
        self.process: Optional[QProcess] = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.button = QPushButton(tr("Check (doctor)"), self)
        self.button.setToolTip(tr("Python, torch, CUDA, GPU memory, disk and the chosen models of the local backend"))
        self.button.clicked.connect(self.run)
        row.addWidget(self.button)
        self.summary = QLabel("", self)
        self.summary.setWordWrap(True)
        row.addWidget(self.summary, 1)
        layout.addLayout(row)
        self.report = QPlainTextEdit(self)
        self.report.setReadOnly(True)
        self.report.setVisible(False)
        layout.addWidget(self.report)

    def run(self) -> None:
        python = setup_config.backend_python()
        if not python.exists():
            self.summary.setText(tr("No local backend: install one from the set-up panel in the GeoReasoner dock."))
            return
        self.process = QProcess(self)
        env = QProcessEnvironment()
        for key, value in backend_env().items():
            env.insert(key, value)
        self.process.setProcessEnvironment(env)
        self.process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        self.process.finished.connect(self._done)
        self.button.setEnabled(False)
        self.summary.setText(tr("Checking..."))
        self.process.start(str(python), doctor_args(Settings.load()))

    def _done(self, code, _status=None) -> None:
        text = bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        self.report.setPlainText(text)
        self.report.setVisible(True)
        self.button.setEnabled(True)
        problems = text.count("\n  [")
        self.summary.setText(tr("All good.") if code == 0 else
                             tr("{0} problem(s), each with what to do, below.").format(max(problems, 1)))
