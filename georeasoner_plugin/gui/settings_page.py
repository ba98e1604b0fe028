"""GeoReasoner page inside Settings > Options: backend, token, timeout, capture defaults, local backend."""
from __future__ import annotations

from qgis.gui import QgsAuthConfigSelect, QgsFileWidget, QgsOptionsPageWidget, QgsOptionsWidgetFactory
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
)

from ..core.protocol import GRANULARITIES
from ..qgis_io.client import BackendClient
from ..resources_path import icon_path
from ..toolbelt.i18n import tr
from ..toolbelt.settings import Settings


class GeoReasonerOptionsFactory(QgsOptionsWidgetFactory):
    def __init__(self, local_backend):
        super().__init__()
        self.local_backend = local_backend
        self.setTitle(tr("GeoReasoner"))

    def icon(self) -> QIcon:
        return QIcon(str(icon_path()))

    def createWidget(self, parent):
        return GeoReasonerOptionsPage(self.local_backend, parent)


class GeoReasonerOptionsPage(QgsOptionsPageWidget):
    def __init__(self, local_backend, parent=None):
        super().__init__(parent)
        self.setObjectName("GeoReasonerOptionsPage")
        self.local_backend = local_backend
        s = Settings.load()
        layout = QVBoxLayout(self)

        backend = QGroupBox(tr("Backend"), self)
        form = QFormLayout(backend)
        self.url = QLineEdit(s.backend_url, backend)
        form.addRow(tr("URL"), self.url)
        self.auth = QgsAuthConfigSelect(backend)
        self.auth.setConfigId(s.authcfg)
        # the selector's own layout stretches vertically and left a large blank area under it
        self.auth.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self.auth.setMaximumHeight(self.auth.minimumSizeHint().height() + 8)
        form.addRow(tr("Token (authentication config; the token is its password)"), self.auth)
        self.token_file = QgsFileWidget(backend)
        self.token_file.setFilePath(s.token_file)
        form.addRow(tr("Token file of a local backend (empty: the default)"), self.token_file)
        self.timeout = QDoubleSpinBox(backend)
        self.timeout.setRange(5, 3600)
        self.timeout.setSuffix(" s")
        self.timeout.setValue(s.timeout_s)
        form.addRow(tr("Timeout (no data from the backend)"), self.timeout)
        layout.addWidget(backend)

        capture = QGroupBox(tr("Capture defaults"), self)
        form = QFormLayout(capture)
        self.source = QComboBox(capture)
        self.source.addItem(tr("The map as displayed"), "canvas")
        self.source.addItem(tr("A raster, pixel for pixel"), "raster")
        self.source.setCurrentIndex(1 if s.capture_source == "raster" else 0)
        form.addRow(tr("Source"), self.source)
        self.max_size = QSpinBox(capture)
        self.max_size.setRange(64, 16384)
        self.max_size.setValue(s.max_image_size)
        self.max_size.setSuffix(" px")
        form.addRow(tr("Largest image side"), self.max_size)
        outputs = QHBoxLayout()
        self.output_boxes = {}
        titles = {"boxes": tr("Boxes"), "points": tr("Points"), "masks": tr("Mask"), "contours": tr("Contours")}
        for g in GRANULARITIES:
            box = QCheckBox(titles[g], capture)
            box.setChecked(g in s.output_list())
            self.output_boxes[g] = box
            outputs.addWidget(box)
        form.addRow(tr("Outputs"), outputs)
        layout.addWidget(capture)

        local = QGroupBox(tr("Local backend"), self)
        form = QFormLayout(local)
        self.python = QgsFileWidget(local)
        self.python.setFilePath(s.python_path)
        form.addRow(tr("Python interpreter (of the backend venv)"), self.python)
        self.reasoner = QLineEdit(s.reasoner, local)
        self.reasoner.setPlaceholderText(tr("hub id or folder (empty: the profile's checkpoint)"))
        form.addRow(tr("Reasoning model"), self.reasoner)
        self.segmenter = QLineEdit(s.segmenter, local)
        self.segmenter.setPlaceholderText("facebook/sam2.1-hiera-large")
        form.addRow(tr("SAM2 model"), self.segmenter)
        self.replay = QgsFileWidget(local)
        self.replay.setFilePath(s.reasoner_output)
        self.replay.setToolTip(tr("A recorded model answer to replay instead of running a reasoning model "
                                  "(demos, tests)"))
        form.addRow(tr("Replay a recorded answer"), self.replay)
        self.autostart = QCheckBox(tr("Start the local backend when QGIS starts"), local)
        self.autostart.setChecked(s.autostart)
        form.addRow("", self.autostart)
        self.port = QSpinBox(local)
        self.port.setRange(0, 65535)
        self.port.setValue(s.local_port)
        self.port.setSpecialValueText(tr("any free port"))
        form.addRow(tr("Port"), self.port)
        buttons = QHBoxLayout()
        self.start_button = QPushButton(tr("Start"), local)
        self.stop_button = QPushButton(tr("Stop"), local)
        self.start_button.clicked.connect(self.start_backend)
        self.stop_button.clicked.connect(self.stop_backend)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        self.state = QLabel("", local)
        buttons.addWidget(self.state, 1)
        form.addRow(buttons)
        self.log = QPlainTextEdit(local)
        self.log.setReadOnly(True)
        self.log.setPlainText(local_backend.log_text() if local_backend else "")
        form.addRow(tr("Log"), self.log)
        from .doctor_view import DoctorView  # issue 15: georeasoner doctor on this page

        self.doctor = DoctorView(local)
        form.addRow(self.doctor)
        layout.addWidget(local)
        layout.addStretch(1)
        if local_backend is not None:
            local_backend.log_line.connect(self.add_log_line)
            local_backend.started.connect(self._started)
            local_backend.stopped.connect(lambda code: self._update_state())
        self.health_timer = QTimer(self)
        self.health_timer.setInterval(2000)
        self.health_timer.timeout.connect(self._update_state)
        self._update_state()

    def add_log_line(self, line: str) -> None:
        """Append and follow: the newest line stays in view."""
        self.log.appendPlainText(line)
        bar = self.log.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _update_state(self) -> None:
        """The process state, and the models' state from the backend's /v1/health (never blocks)."""
        running = self.local_backend is not None and self.local_backend.is_running()
        if not running:
            self.state.setText(tr("not running"))
            self.health_timer.stop()
            return
        if not self.local_backend.url:
            self.state.setText(tr("starting..."))
            self.health_timer.start()
            return
        client = BackendClient.from_settings(Settings.load(), url=self.local_backend.url)
        client.get_async("/v1/health", self._on_health, self)

    def _on_health(self, data, error) -> None:
        try:
            if data is None:
                self.state.setText(tr("process running, not answering: {0}").format(error))
                self.health_timer.start()
            elif data.get("status") == "ready":
                self.state.setText(tr("ready at {0}").format(self.local_backend.url))
                self.health_timer.stop()
            elif data.get("status") == "loading":
                self.state.setText(tr("loading the models..."))
                self.health_timer.start()
            else:
                self.state.setText(tr("the models failed to load: {0} (see the log)").format(data.get("detail", "")))
                self.health_timer.stop()
        except RuntimeError:  # the page was closed meanwhile
            pass

    def _started(self, url: str) -> None:
        self.url.setText(url)
        self._update_state()

    def settings(self) -> Settings:
        return Settings.load().replace(
            backend_url=self.url.text().strip(), authcfg=self.auth.configId(), token_file=self.token_file.filePath(),
            timeout_s=self.timeout.value(), capture_source=self.source.currentData(),
            max_image_size=self.max_size.value(),
            outputs=",".join(g for g, box in self.output_boxes.items() if box.isChecked()),
            python_path=self.python.filePath(), reasoner=self.reasoner.text().strip(),
            segmenter=self.segmenter.text().strip(), local_port=self.port.value(),
            reasoner_output=self.replay.filePath(), autostart=self.autostart.isChecked())

    def apply(self) -> None:
        self.settings().save()

    def start_backend(self) -> None:
        self.apply()
        try:
            self.local_backend.start(Settings.load())
        except RuntimeError as exc:
            self.add_log_line(str(exc))
        self._update_state()

    def stop_backend(self) -> None:
        self.local_backend.stop()
        self._update_state()
