"""The set-up panel at the top of the dock: install a local backend, connect to a GPU server, or try
the demo; then the model picker. Every state it shows says what to do next."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from qgis.core import QgsApplication, QgsTask
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QButtonGroup,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ..core.catalog import CHECKPOINTS, human_bytes
from ..qgis_io import setup_config
from ..qgis_io.autostart import CRASHED, FAILED, protocol_problem
from ..qgis_io.client import BackendClient, BackendError
from ..qgis_io.install_task import ABSENT, BROKEN, READY as INSTALLED, STALE, InstallTask, install_state, \
    remove_backend
from ..toolbelt.i18n import tr
from ..toolbelt.settings import Settings

PAGES = (setup_config.MODE_LOCAL, setup_config.MODE_REMOTE, setup_config.MODE_DEMO)


class SetupPanel(QWidget):
    def __init__(self, local_backend, starter, parent=None):
        super().__init__(parent)
        self.setObjectName("GeoReasonerSetupPanel")
        self.local_backend = local_backend
        self.starter = starter
        self.task: Optional[InstallTask] = None
        self.remove_task = None
        self.requirements_override: Optional[List[str]] = None  # tests install a smaller pinned set
        self.install_env: Optional[dict] = None
        self.demo_after_install = False
        self.last_install_seconds = 0.0
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        self.state = QLabel("", self)
        self.state.setObjectName("setup_state")
        self.state.setWordWrap(True)
        self.state.setStyleSheet("font-weight: bold")
        head.addWidget(self.state, 1)
        self.toggle = QPushButton(tr("Set-up..."), self)
        self.toggle.setCheckable(True)
        self.toggle.toggled.connect(self._toggle)
        head.addWidget(self.toggle)
        outer.addLayout(head)

        self.body = QGroupBox(tr("Set up the backend"), self)
        body = QVBoxLayout(self.body)
        choices = QHBoxLayout()
        self.mode_buttons = QButtonGroup(self)
        for index, text in enumerate((tr("Install a local backend"), tr("Connect to a GPU server"),
                                      tr("Try it without a GPU (demo)"))):
            button = QPushButton(text, self.body)
            button.setCheckable(True)
            self.mode_buttons.addButton(button, index)
            choices.addWidget(button)
        self.mode_buttons.idClicked.connect(self.show_page)
        body.addLayout(choices)
        self.stack = QStackedWidget(self.body)
        self.stack.addWidget(self._local_page())
        self.stack.addWidget(self._remote_page())
        self.stack.addWidget(self._demo_page())
        scroll = QScrollArea(self.body)  # the dock may be short: the pages scroll instead of squeezing
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # labels wrap instead
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self.stack)
        body.addWidget(scroll, 1)

        self.crash = QGroupBox(tr("The backend stopped"), self.body)
        crash = QVBoxLayout(self.crash)
        self.crash_log = QPlainTextEdit(self.crash)
        self.crash_log.setReadOnly(True)
        self.crash_log.setMaximumHeight(140)
        crash.addWidget(self.crash_log)
        self.restart_button = QPushButton(tr("Restart"), self.crash)
        self.restart_button.clicked.connect(self.restart)
        crash.addWidget(self.restart_button)
        self.crash.setVisible(False)
        body.addWidget(self.crash)
        outer.addWidget(self.body)

        starter.state_changed.connect(self._starter_state)
        starter.crashed.connect(self._crashed)
        start_page = PAGES.index(setup_config.mode()) if setup_config.mode() in PAGES else 0
        self.mode_buttons.button(start_page).setChecked(True)
        self.stack.setCurrentIndex(start_page)
        self.refresh_state()
        self.toggle.setChecked(not self.configured())
        self._toggle(self.toggle.isChecked())

    # -- pages -------------------------------------------------------------------------------------
    def _local_page(self) -> QWidget:
        page = QWidget(self)
        layout = QVBoxLayout(page)
        self.detected = QLabel("", page)
        self.detected.setWordWrap(True)
        layout.addWidget(self.detected)
        self.plan_label = QLabel("", page)
        self.plan_label.setWordWrap(True)
        layout.addWidget(self.plan_label)
        form = QFormLayout()
        self.torch_index = QLineEdit(setup_config.get("torch_index_url"), page)
        self.torch_index.setPlaceholderText(tr("optional: a PyTorch wheel index (its cpu/cuXXX folders)"))
        self.torch_index.editingFinished.connect(self._index_changed)
        form.addRow(tr("torch wheel index"), self.torch_index)
        layout.addLayout(form)
        buttons = QHBoxLayout()
        self.install_button = QPushButton(tr("Install"), page)
        self.install_button.clicked.connect(self.install)
        self.cancel_button = QPushButton(tr("Cancel"), page)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_install)
        self.remove_button = QPushButton(tr("Remove backend"), page)
        self.remove_button.clicked.connect(self.remove)
        for b in (self.install_button, self.cancel_button, self.remove_button):
            buttons.addWidget(b)
        layout.addLayout(buttons)
        from .doctor_view import DoctorView  # noqa: PLC0415

        self.doctor = DoctorView(page)
        layout.addWidget(self.doctor)
        self.progress = QProgressBar(page)
        self.progress.setRange(0, 100)
        layout.addWidget(self.progress)
        self.log = QPlainTextEdit(page)
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(3000)
        self.log.setMinimumHeight(70)
        self.log.setMaximumHeight(130)
        layout.addWidget(self.log)
        from .model_picker import ModelPicker  # noqa: PLC0415 - keeps this file's imports short

        self.models = ModelPicker(page)
        self.models.models_changed.connect(self.refresh_state)
        layout.addWidget(self.models)
        return page

    def _remote_page(self) -> QWidget:
        page = QWidget(self)
        form = QFormLayout(page)
        settings = Settings.load()
        self.server_url = QLineEdit(settings.backend_url if setup_config.mode() == setup_config.MODE_REMOTE else "",
                                    page)
        self.server_url.setPlaceholderText("http://gpu-host:8765")
        form.addRow(tr("Server URL"), self.server_url)
        self.server_token = QLineEdit(page)
        self.server_token.setEchoMode(QLineEdit.EchoMode.Password)
        self.server_token.setPlaceholderText(tr("the server's token (kept in QGIS's authentication manager)"))
        form.addRow(tr("Token"), self.server_token)
        row = QHBoxLayout()
        self.test_button = QPushButton(tr("Test connection"), page)
        self.test_button.clicked.connect(self.test_connection)
        self.use_server_button = QPushButton(tr("Use this server"), page)
        self.use_server_button.clicked.connect(self.use_server)
        row.addWidget(self.test_button)
        row.addWidget(self.use_server_button)
        form.addRow(row)
        self.server_result = QLabel("", page)
        self.server_result.setWordWrap(True)
        form.addRow(self.server_result)
        return page

    def _demo_page(self) -> QWidget:
        page = QWidget(self)
        layout = QVBoxLayout(page)
        text = QLabel(tr("<b>DEMO, not real answers.</b> A backend on tiny random models that replays one recorded "
                         "answer (the lakes of the NAIP sample) through the real parser, segmenter and layers, so "
                         "you can learn the dock, the answer layers and export in two minutes. Runs on the CPU; "
                         "it needs the local backend installed (no GPU, no model download)."), page)
        text.setWordWrap(True)
        layout.addWidget(text)
        self.demo_button = QPushButton(tr("Start the demo"), page)
        self.demo_button.clicked.connect(self.start_demo)
        layout.addWidget(self.demo_button)
        layout.addStretch(1)
        return page

    def show_page(self, index: int) -> None:
        self.stack.setCurrentIndex(index)
        self.refresh_state()

    def _toggle(self, shown: bool) -> None:
        self.body.setVisible(shown)
        self.toggle.setText(tr("Hide set-up") if shown else tr("Set-up..."))

    def _index_changed(self) -> None:
        setup_config.put("torch_index_url", self.torch_index.text().strip())
        self.refresh_state()

    # -- state -------------------------------------------------------------------------------------
    def configured(self) -> bool:
        mode = setup_config.mode()
        if mode == setup_config.MODE_REMOTE:
            return True
        return mode in (setup_config.MODE_LOCAL, setup_config.MODE_DEMO) and self._python_ok()

    def _python_ok(self) -> bool:
        python = Settings.load().python_path.strip()
        return bool(python) and Path(python).exists()

    def plan(self):
        return setup_config.current_plan(self.requirements_override)

    def refresh_state(self) -> None:
        hw = setup_config.hardware()
        plan = self.plan()
        self.detected.setText(tr("Detected: {0}.").format(hw.describe()))
        sizes = "; ".join(f"{c.repo_id.split('/')[-1]} {human_bytes(c.download_bytes)}"
                          for c in CHECKPOINTS.values() if not c.gated and c.params_b < 10)
        self.plan_label.setText(plan.summary() + "\n" + tr("Models (download sizes): {0}.").format(sizes))
        installed = install_state(plan)
        self.install_button.setText(tr("Repair") if installed in (INSTALLED, STALE, BROKEN) else tr("Install"))
        self.remove_button.setEnabled(installed != ABSENT and not self.busy())
        self.models.setEnabled(installed == INSTALLED or self._python_ok())
        self.state.setText(self.next_step(installed))

    def next_step(self, installed: str) -> str:
        mode = setup_config.mode()
        s = Settings.load()
        if self.busy():
            return tr("Installing the local backend... (Cancel stops it; nothing is marked ready until it is done.)")
        if mode == setup_config.MODE_REMOTE:
            return tr("Using the GPU server {0}. Ask a question; Set-up... changes it.").format(s.backend_url)
        if mode == setup_config.MODE_DEMO and self._python_ok():
            return tr("DEMO backend (tiny random models replaying a recorded answer): it starts on your first "
                      "question.")
        if mode == setup_config.MODE_LOCAL and self._python_ok():
            if not s.reasoner and not s.reasoner_output and installed == INSTALLED:
                return tr("Local backend installed. Next: choose a model below (download it, pick a local folder, "
                          "or the tiny models for a smoke test).")
            return tr("Local backend ready to start: it starts on your first question (models: {0}).").format(
                s.reasoner or tr("the profile's checkpoint"))
        if installed == STALE:
            return tr("The local backend was installed for other package versions: press Repair.")
        if installed == BROKEN:
            return tr("The local backend is incomplete (an install failed or was cancelled): press Repair, or "
                      "Remove backend.")
        return tr("No backend yet. Choose one: install a local backend (a GPU gives real answers), connect to a "
                  "GPU server, or try the demo.")

    def busy(self) -> bool:
        return self.task is not None

    def _say(self, text: str) -> None:
        self.state.setText(text)

    # -- install -----------------------------------------------------------------------------------
    def install(self) -> None:
        if self.busy():
            return
        plan = self.plan()
        if plan.error:
            return self._say(plan.error)
        if self.local_backend.is_running():
            self.starter.stop()
        self.log.clear()
        self.progress.setValue(0)
        self.task = InstallTask(plan, self.install_env)
        self.task.line.connect(self.log.appendPlainText)
        self.task.step_started.connect(lambda i, title: self._say(
            tr("Installing: {0} (step {1} of {2})... Cancel stops it.").format(title, i + 1, len(plan.steps))))
        self.task.progressChanged.connect(lambda p: self.progress.setValue(int(p)))
        self.task.taskCompleted.connect(lambda: self._install_done(True))
        self.task.taskTerminated.connect(lambda: self._install_done(False))
        self.install_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.remove_button.setEnabled(False)
        QgsApplication.taskManager().addTask(self.task)

    def cancel_install(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self._say(tr("Cancelling the install..."))

    def _install_done(self, ok: bool) -> None:
        task, self.task = self.task, None
        if task is None:
            return
        self.last_install_seconds = task.seconds
        self.install_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        python = str(task.plan.python)
        settings = Settings.load()
        if ok:
            token = setup_config.work_dir() / "token"
            settings.replace(python_path=python, token_file=str(token), authcfg="",
                             backend_url="http://127.0.0.1:0").save()
            setup_config.put("mode", setup_config.MODE_DEMO if self.demo_after_install else setup_config.MODE_LOCAL)
            self.models.refresh(task.doctor)
            self.refresh_state()
            self._say(tr("Installed in {0:.0f} s; doctor found the environment complete. ").format(task.seconds)
                      + self.state.text())
            if self.demo_after_install:
                self.demo_after_install = False
                self.start_demo()
            return
        if settings.python_path == python:  # never leave a failed install configured as the backend
            settings.replace(python_path="").save()
            if setup_config.mode() in (setup_config.MODE_LOCAL, setup_config.MODE_DEMO):
                setup_config.put("mode", "")
        self.demo_after_install = False
        self.refresh_state()
        self._say(task.error or tr("Install cancelled: nothing was marked as installed. Install again to finish "
                                   "(it repairs what is there)."))

    def remove(self) -> None:
        plan = self.plan()
        self.starter.stop()
        settings = Settings.load()
        if settings.python_path == str(plan.python):
            settings.replace(python_path="").save()
            setup_config.put("mode", "")
        self.remove_button.setEnabled(False)
        self._say(tr("Removing {0}...").format(plan.venv))

        def done(exception, result=None):
            self.remove_task = None
            self.refresh_state()
            if exception is not None or result:
                self._say(result or str(exception))
            else:
                self._say(tr("The local backend was removed. ") + self.state.text())

        self.remove_task = QgsTask.fromFunction(tr("GeoReasoner: remove the local backend"),
                                                lambda _task: remove_backend(plan.venv), on_finished=done)
        QgsApplication.taskManager().addTask(self.remove_task)

    # -- GPU server --------------------------------------------------------------------------------
    def test_connection(self) -> bool:
        url = self.server_url.text().strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            self.server_result.setText(tr("Type the server's URL, e.g. http://gpu-host:8765."))
            return False
        client = BackendClient(url, token=self.server_token.text().strip(), timeout_s=15, connect_timeout_s=5)
        self.server_result.setText(tr("Testing {0}...").format(url))
        try:
            health = client.health()
        except BackendError as exc:
            self.server_result.setText(tr("Server unreachable: {0}").format(exc))
            return False
        try:
            info = client.info()
        except BackendError as exc:
            if exc.kind == "auth":
                self.server_result.setText(tr("Wrong token: the server answers but refuses this token. Paste the "
                                              "token from the server's token file (its path is printed when "
                                              "`georeasoner serve` starts)."))
            else:
                self.server_result.setText(str(exc))
            return False
        problem = protocol_problem(info)
        if problem:
            self.server_result.setText(problem)
            return False
        models = ", ".join(f"{k}: {v}" for k, v in (info.get("models") or {}).items() if v)
        profiles = ", ".join(p.get("name", "") for p in info.get("profiles", []))
        self.server_result.setText(tr("Connected: GeoReasoner {0}, {1}; models {2}; profiles {3}; device {4}.")
                                   .format(info.get("version", "?"), health.get("status", "?"), models or "-",
                                           profiles or "-", info.get("device", "?")))
        return True

    def use_server(self) -> None:
        if not self.test_connection():
            return
        settings = Settings.load()
        try:
            authcfg = setup_config.store_token("GeoReasoner server token", self.server_token.text().strip(),
                                               settings.authcfg)
        except RuntimeError as exc:
            self.server_result.setText(str(exc))
            return
        self.starter.stop()
        settings.replace(backend_url=self.server_url.text().strip().rstrip("/"), authcfg=authcfg).save()
        setup_config.put("mode", setup_config.MODE_REMOTE)
        self.refresh_state()

    # -- demo --------------------------------------------------------------------------------------
    def start_demo(self) -> None:
        settings = Settings.load()
        plan = self.plan()
        python = settings.python_path if self._python_ok() else ""
        if not python and install_state(plan) == INSTALLED:
            python = str(plan.python)
        if not python:
            self.demo_after_install = True
            self._say(tr("The demo needs the local backend (CPU is enough): installing it first..."))
            self.stack.setCurrentIndex(0)
            return self.install()
        tiny = setup_config.work_dir() / "tiny-models"
        if not (tiny / "models.json").is_file():
            Settings.load().replace(python_path=python).save()
            self.models.models_changed.connect(self._demo_tiny_ready)
            return self.models.use_tiny()
        self._configure_demo(python, tiny)

    def _demo_tiny_ready(self) -> None:
        self.models.models_changed.disconnect(self._demo_tiny_ready)
        self._configure_demo(Settings.load().python_path, setup_config.work_dir() / "tiny-models")

    def _configure_demo(self, python: str, tiny: Path) -> None:
        import json
        paths = json.loads((tiny / "models.json").read_text(encoding="utf-8"))
        Settings.load().replace(python_path=python, reasoner="", reasoner_output=str(setup_config.demo_answer_path()),
                                segmenter=paths["segmenter"], token_file=str(setup_config.work_dir() / "token"),
                                authcfg="").save()
        setup_config.put("mode", setup_config.MODE_DEMO)
        self.refresh_state()
        self.starter.phase = ""
        self.starter.start()

    # -- backend life ------------------------------------------------------------------------------
    def _starter_state(self, phase: str, message: str) -> None:
        self.state.setText(message)
        if phase != CRASHED:
            self.crash.setVisible(False)
        if phase == FAILED:
            self.toggle.setChecked(True)

    def _crashed(self, lines: str) -> None:
        self.crash_log.setPlainText(lines)
        self.crash.setVisible(True)
        self.toggle.setChecked(True)

    def restart(self) -> None:
        self.crash.setVisible(False)
        self.starter.restart()

