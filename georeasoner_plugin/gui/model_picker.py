"""The model picker of the set-up panel: profiles with their checkpoints, download sizes, the GPU
memory each needs and whether it fits here; downloads (a `cli download` subprocess, with progress
and cancel), a local folder for offline machines, or the tiny models for a smoke test."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from qgis.PyQt.QtCore import QProcess, QProcessEnvironment, Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.catalog import CHECKPOINTS, DEFAULT_SEGMENTER, ROLE_REASONER, human_bytes
from ..toolbelt.i18n import tr
from ..toolbelt.settings import Settings
from ..qgis_io import setup_config
from ..qgis_io.install_task import backend_env

COLUMNS = ("Profiles", "Checkpoint", "Download", "GPU memory", "Fits here", "On disk")


class ModelPicker(QWidget):
    models_changed = pyqtSignal()  # the chosen reasoner/segmenter changed
    message = pyqtSignal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("GeoReasonerModelPicker")
        self.process: Optional[QProcess] = None
        self.downloading = ""
        self.last_error = ""
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels([tr(c) for c in COLUMNS])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(170)
        layout.addWidget(self.table)
        token_row = QHBoxLayout()
        token_row.addWidget(QLabel(tr("Hub token (gated models only)"), self))
        self.hub_token = QLineEdit(self)
        self.hub_token.setEchoMode(QLineEdit.EchoMode.Password)
        self.hub_token.setPlaceholderText(tr("kept in QGIS's authentication manager"))
        token_row.addWidget(self.hub_token, 1)
        layout.addLayout(token_row)
        buttons = QHBoxLayout()
        self.download_button = QPushButton(tr("Download"), self)
        self.download_button.clicked.connect(self.download_selected)
        self.cancel_button = QPushButton(tr("Cancel download"), self)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.use_button = QPushButton(tr("Use selected"), self)
        self.use_button.clicked.connect(self.use_selected)
        self.folder_button = QPushButton(tr("Local folder..."), self)
        self.folder_button.setToolTip(tr("Offline machine: copy a model folder from elsewhere and choose it here"))
        self.folder_button.clicked.connect(self.choose_folder)
        self.tiny_button = QPushButton(tr("Tiny models (smoke test)"), self)
        self.tiny_button.setToolTip(tr("Random tiny models built on this machine: they test the install, their "
                                       "answers are meaningless"))
        self.tiny_button.clicked.connect(self.use_tiny)
        for b in (self.download_button, self.cancel_button, self.use_button):
            buttons.addWidget(b)
        layout.addLayout(buttons)
        more = QHBoxLayout()  # two rows: the dock is narrow
        more.addWidget(self.folder_button)
        more.addWidget(self.tiny_button)
        layout.addLayout(more)
        self.progress = QProgressBar(self)
        self.progress.setVisible(False)
        layout.addWidget(self.progress)
        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.refresh()

    # -- the table ---------------------------------------------------------------------------------
    def refresh(self, doctor_report: Optional[dict] = None) -> None:
        hw = setup_config.hardware()
        best_free = max((g.free_mb * 1024 * 1024 for g in hw.gpus), default=None)
        present = {m["id"]: m["present"] for m in (doctor_report or {}).get("models", [])}
        self.table.setRowCount(0)
        for cp in CHECKPOINTS.values():
            row = self.table.rowCount()
            self.table.insertRow(row)
            profiles = ", ".join(cp.profiles) if cp.profiles and cp.profiles != ("*",) else tr("all (segmenter)")
            if cp.gated:
                profiles = tr("gated; not used by the cascade")
            fits = tr("yes") if best_free is not None and best_free >= cp.gpu_bytes else (
                tr("no GPU") if best_free is None else tr("no"))
            cells = (profiles, cp.repo_id, human_bytes(cp.download_bytes), human_bytes(cp.gpu_bytes), fits,
                     {True: tr("yes"), False: tr("no")}.get(present.get(cp.repo_id), "?"))
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, cp.repo_id)
                self.table.setItem(row, col, item)
        self.table.resizeColumnsToContents()
        self._show_choice()

    def _show_choice(self) -> None:
        s = Settings.load()
        if s.reasoner_output:
            chosen = tr("demo: a recorded answer replayed, segmenter {0}").format(s.segmenter or DEFAULT_SEGMENTER)
        else:
            chosen = tr("reasoner {0}, segmenter {1}").format(s.reasoner or tr("(the profile's checkpoint)"),
                                                            s.segmenter or DEFAULT_SEGMENTER)
        self.status.setText(tr("Chosen: {0}").format(chosen))

    def selected_repo(self) -> str:
        items = self.table.selectedItems()
        return items[0].data(Qt.ItemDataRole.UserRole) if items else ""

    def select_repo(self, repo_id: str) -> None:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 1).text() == repo_id:
                self.table.selectRow(row)

    # -- choices -----------------------------------------------------------------------------------
    def _choose(self, role: str, value: str) -> None:
        s = Settings.load()
        if role == ROLE_REASONER:
            s = s.replace(reasoner=value, reasoner_output="")
        else:
            s = s.replace(segmenter=value)
        s.save()
        self._show_choice()
        self.models_changed.emit()

    def use_selected(self) -> None:
        repo = self.selected_repo()
        if repo:
            self._choose(CHECKPOINTS[repo].role, repo)

    def choose_folder(self, folder: str = "", role: str = "") -> None:
        if not folder:
            folder = QFileDialog.getExistingDirectory(self, tr("Model folder (config.json and *.safetensors)"))
        if not folder:
            return
        path = Path(folder)
        if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
            self._say(tr("{0} has no config.json and *.safetensors weights: choose the folder that holds them.")
                      .format(folder))
            return
        if not role:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
            role = "segmenter" if "sam" in str(config.get("model_type", "")).lower() else ROLE_REASONER
        self._choose(role, str(path))

    def use_tiny(self) -> None:
        """Build the tiny random models once (make-tiny, in the backend venv) and choose them."""
        target = setup_config.work_dir() / "tiny-models"
        if (target / "models.json").is_file():
            return self._tiny_ready(target)
        python = setup_config.backend_python()
        if not python.exists():
            return self._say(tr("Install the local backend first: the tiny models are built with its Python."))
        self._run([str(python), "-m", "georeasoner_plugin.backend.cli", "make-tiny", str(target)], "tiny",
                  tr("Building the tiny models..."))

    def _tiny_ready(self, target: Path) -> None:
        paths = json.loads((target / "models.json").read_text(encoding="utf-8"))
        Settings.load().replace(reasoner=paths["reasoner"], segmenter=paths["segmenter"], reasoner_output="").save()
        self._show_choice()
        self._say(tr("Tiny RANDOM models chosen: they answer nonsense, and test that everything runs."))
        self.models_changed.emit()

    # -- downloads ---------------------------------------------------------------------------------
    def download_selected(self) -> None:
        repo = self.selected_repo()
        if not repo:
            return self._say(tr("Select a checkpoint first."))
        python = setup_config.backend_python()
        if not python.exists():
            return self._say(tr("Install the local backend first: downloads run with its Python."))
        extra = {}
        token = self.hub_token.text().strip()
        if token:
            try:
                setup_config.put("hub_authcfg", setup_config.store_token("GeoReasoner hub token", token,
                                                                         setup_config.get("hub_authcfg")))
            except RuntimeError as exc:
                self._say(str(exc))
        stored = setup_config.read_auth_token(setup_config.get("hub_authcfg"))
        if token or stored:
            extra["HF_TOKEN"] = token or stored
        self.downloading = repo
        self.progress.setRange(0, 0)
        self._run([str(python), "-m", "georeasoner_plugin.backend.cli", "download", repo, "--progress-json"],
                  "download", tr("Downloading {0}...").format(repo), extra)

    def cancel(self) -> None:
        if self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning:
            self.process.terminate()  # the download prints "cancelled"; the partial file stays for a resume

    def is_busy(self) -> bool:
        return self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning

    def _run(self, argv, kind: str, text: str, extra_env: Optional[dict] = None) -> None:
        if self.is_busy():
            return self._say(tr("Wait for the running download to end, or cancel it."))
        self.last_error = ""
        self.process = QProcess(self)
        self.process.setProperty("kind", kind)
        env = QProcessEnvironment()
        for key, value in backend_env(extra_env).items():
            env.insert(key, value)
        self.process.setProcessEnvironment(env)
        self.process.readyReadStandardOutput.connect(self._read)
        self.process.finished.connect(self._finished)
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.cancel_button.setEnabled(kind == "download")
        self.download_button.setEnabled(False)
        self._say(text)
        self.process.start(argv[0], argv[1:])

    def _read(self) -> None:
        data = bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        for line in data.splitlines():
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            kind = event.get("event")
            if kind == "plan":
                self._say(tr("Downloading {0}: {1} to fetch of {2}.").format(
                    event["repo"], human_bytes(event["to_download_bytes"]), human_bytes(event["total_bytes"])))
            elif kind == "progress" and event.get("total_bytes"):
                self.progress.setRange(0, 1000)
                self.progress.setValue(int(1000 * event["downloaded_bytes"] / event["total_bytes"]))
            elif kind == "verify":
                self._say(tr("Checking {0}...").format(event["file"]))
            elif kind == "error":
                self.last_error = event["message"]
            elif kind == "cancelled":
                self.last_error = tr("Download cancelled; Download again resumes where it stopped.")

    def _finished(self, code, _status=None) -> None:
        kind = self.process.property("kind")
        self._read()
        self.progress.setVisible(False)
        self.cancel_button.setEnabled(False)
        self.download_button.setEnabled(True)
        if kind == "tiny":
            target = setup_config.work_dir() / "tiny-models"
            if code == 0 and (target / "models.json").is_file():
                return self._tiny_ready(target)
            err = bytes(self.process.readAllStandardError()).decode("utf-8", "replace").strip().splitlines()
            return self._say(tr("Building the tiny models failed: {0}").format(err[-1] if err else code))
        if code == 0:
            repo = self.downloading
            self._choose(CHECKPOINTS[repo].role if repo in CHECKPOINTS else ROLE_REASONER, repo)
            self._say(tr("{0} is downloaded.").format(repo) + " " + self.status.text())
        else:
            self._say(self.last_error or tr("The download stopped (exit code {0}); Download again resumes it.")
                      .format(code))

    def _say(self, text: str) -> None:
        self.status.setText(text)
        self.message.emit(text)
