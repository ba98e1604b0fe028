"""The GeoReasoner dock: ask the map a question, watch the reasoning, keep the answers."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
)
from qgis.gui import QgsDoubleSpinBox, QgsMapLayerComboBox, QgsProjectionSelectionDialog
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.api import (EVENT_QUEUED, STAGE_DONE, STAGE_PARSE, STAGE_PREPROCESS, STAGE_REASON, STAGE_SEGMENT,
                        STAGE_VECTORIZE, QuestionError, check_question)
from ..core.protocol import GRANULARITIES
from ..qgis_io.asker import STAGE_SENDING, Asker
from ..qgis_io.capture import CaptureError, capture_canvas, capture_raster
from ..qgis_io.client import AskRequest, BackendClient, BackendError
from ..qgis_io.export import ExistingFilesError, ExportError, export_answers
from ..qgis_io.layers import answer_extent, answer_layers, find_group
from ..qgis_io.store import AnswerStore, StoredAnswer, store_path_for
from ..toolbelt.i18n import tr
from ..toolbelt.log import log
from ..toolbelt.settings import Settings

STAGE_TITLES = {
    STAGE_SENDING: "sending the image",
    EVENT_QUEUED: "waiting in the backend's queue",
    STAGE_PREPROCESS: "preparing the image",
    STAGE_REASON: "reasoning",
    STAGE_PARSE: "reading the answer",
    STAGE_SEGMENT: "segmenting (SAM2)",
    STAGE_VECTORIZE: "tracing contours",
    STAGE_DONE: "done",
}


class GeoReasonerDock(QDockWidget):
    def __init__(self, iface, parent=None):
        super().__init__(tr("GeoReasoner"), parent)
        self.setObjectName("GeoReasonerDock")
        self.iface = iface
        self.project = QgsProject.instance()
        self.asker = Asker(self.project, self)
        self.last_message = ""
        # set by the plugin: called before a question is sent; False = it will call back (backend starting)
        self.before_ask = None
        self._build()
        self.asker.stage.connect(self._on_stage)
        self.asker.token.connect(self._on_token)
        self.asker.queued.connect(lambda n: self._on_stage(EVENT_QUEUED, n))
        self.asker.answered.connect(self._on_answered)
        self.asker.failed.connect(self._on_failed)
        self.asker.busy_changed.connect(self._set_busy)
        self.project.readProject.connect(self.reload_history)
        self.project.cleared.connect(self.reload_history)
        self.reload_history()

    # -- UI ---------------------------------------------------------------------------------------
    def _build(self) -> None:
        settings = Settings.load()
        body = QWidget(self)
        layout = QVBoxLayout(body)

        self.question = QLineEdit(body)
        self.question.setObjectName("question")
        self.question.setPlaceholderText(tr("Ask the imagery, e.g. which lakes could supply irrigation water?"))
        self.question.returnPressed.connect(self.ask)
        layout.addWidget(self.question)

        form = QFormLayout()
        outputs = QHBoxLayout()
        self.output_boxes = {}
        titles = {"boxes": tr("Boxes"), "points": tr("Points"), "masks": tr("Mask"), "contours": tr("Contours")}
        chosen = settings.output_list()
        for g in GRANULARITIES:
            box = QCheckBox(titles[g], body)
            box.setChecked(g in chosen)
            self.output_boxes[g] = box
            outputs.addWidget(box)
        form.addRow(tr("Outputs"), outputs)

        self.source = QComboBox(body)
        self.source.addItem(tr("Canvas as displayed"), "canvas")
        self.source.addItem(tr("Raster layer at native resolution"), "raster")
        self.source.setCurrentIndex(1 if settings.capture_source == "raster" else 0)
        form.addRow(tr("Capture"), self.source)
        self.raster = QgsMapLayerComboBox(body)
        self.raster.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        form.addRow(tr("Raster"), self.raster)
        self.resolution = QgsDoubleSpinBox(body)
        self.resolution.setRange(0.0, 1e6)
        self.resolution.setDecimals(3)
        self.resolution.setSpecialValueText(tr("native"))
        self.resolution.setValue(settings.ground_resolution)
        form.addRow(tr("Ground resolution"), self.resolution)
        self.source.currentIndexChanged.connect(self._source_changed)
        self._source_changed()

        profile_row = QHBoxLayout()
        self.profile = QComboBox(body)
        self.profile.addItem(tr("backend default"), "")
        profile_row.addWidget(self.profile, 1)
        self.refresh_button = QPushButton(tr("Refresh"), body)
        self.refresh_button.setToolTip(tr("Ask the backend for its models and profiles"))
        self.refresh_button.clicked.connect(self.refresh_info)
        profile_row.addWidget(self.refresh_button)
        form.addRow(tr("Profile"), profile_row)
        self.models_label = QLabel("", body)
        self.models_label.setWordWrap(True)
        form.addRow(tr("Models"), self.models_label)
        layout.addLayout(form)

        buttons = QHBoxLayout()
        self.ask_button = QPushButton(tr("Ask"), body)
        self.ask_button.setObjectName("ask")
        self.ask_button.clicked.connect(self.ask)
        self.cancel_button = QPushButton(tr("Cancel"), body)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.ask_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)

        self.progress = QProgressBar(body)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)
        layout.addWidget(self.progress)
        self.status = QLabel(tr("Ready."), body)
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status)

        layout.addWidget(QLabel(tr("Reasoning"), body))
        self.reasoning = QPlainTextEdit(body)
        self.reasoning.setReadOnly(True)
        self.reasoning.setObjectName("reasoning")
        layout.addWidget(self.reasoning, 2)

        layout.addWidget(QLabel(tr("Answers"), body))
        self.history = QListWidget(body)
        self.history.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        self.history.itemSelectionChanged.connect(self._history_selected)
        layout.addWidget(self.history, 1)
        history_buttons = QHBoxLayout()
        self.export_button = QPushButton(tr("Export..."), body)
        self.export_button.clicked.connect(self.export_selected)
        history_buttons.addWidget(self.export_button)
        layout.addLayout(history_buttons)
        self.setWidget(body)

    def _source_changed(self) -> None:
        raster = self.source.currentData() == "raster"
        self.raster.setEnabled(raster)
        self.resolution.setEnabled(raster)

    def selected_outputs(self) -> List[str]:
        return [g for g, box in self.output_boxes.items() if box.isChecked()]

    # -- messages ---------------------------------------------------------------------------------
    def show_message(self, text: str, level=Qgis.MessageLevel.Warning) -> None:
        self.last_message = text
        self.status.setText(text)
        bar = self.iface.messageBar() if self.iface is not None else None
        if bar is not None:
            bar.pushMessage(tr("GeoReasoner"), text, level, 10)

    # -- actions ----------------------------------------------------------------------------------
    def client(self) -> BackendClient:
        return BackendClient.from_settings(Settings.load())

    def refresh_info(self) -> Optional[dict]:
        try:
            info = self.client().info()
        except BackendError as exc:
            self.show_message(str(exc))
            return None
        current = self.profile.currentData()
        self.profile.clear()
        self.profile.addItem(tr("backend default ({0})").format(info.get("default_profile", "")), "")
        for p in info.get("profiles", []):
            self.profile.addItem(f"{p.get('name')} - {p.get('title', '')}", p.get("name"))
        index = self.profile.findData(current)
        self.profile.setCurrentIndex(max(0, index))
        models = info.get("models", {})
        self.models_label.setText(", ".join(f"{k}: {v}" for k, v in models.items() if v)
                                  + (tr(" (replaying a recorded answer)") if info.get("replay") else ""))
        return info

    def capture(self):
        settings = Settings.load()
        canvas = self.iface.mapCanvas()
        if self.source.currentData() == "raster":
            layer = self.raster.currentLayer()
            if not isinstance(layer, QgsRasterLayer):
                raise CaptureError(tr("Choose a raster layer to read, or capture the canvas."))
            return capture_raster(layer, canvas.extent(), canvas.mapSettings().destinationCrs(),
                                  self.resolution.value(), settings.max_image_size, self.project)
        return capture_canvas(canvas.mapSettings(), max_size=settings.max_image_size)

    def ask(self) -> None:
        if self.asker.is_busy():
            return
        if self.before_ask is not None and not self.before_ask(self.ask):
            return
        try:
            question = check_question(self.question.text())  # the service's own rule (core/api.py)
        except QuestionError as exc:
            empty = exc.code == "empty_question"
            self.show_message(tr("Type a question first.") if empty else str(exc), Qgis.MessageLevel.Info)
            return
        outputs = self.selected_outputs()
        if not outputs:
            self.show_message(tr("Choose at least one output."), Qgis.MessageLevel.Info)
            return
        try:
            capture = self.capture()
        except CaptureError as exc:
            self.show_message(str(exc))
            return
        settings = Settings.load()
        request = AskRequest(question=question, image_bytes=capture.png_bytes(), outputs=outputs,
                             profile=self.profile.currentData() or settings.profile)
        self.reasoning.clear()
        self.asker.ask(self.client(), request, capture)

    def cancel(self) -> None:
        self.asker.cancel()
        self.status.setText(tr("Cancelling..."))

    # -- asker signals ----------------------------------------------------------------------------
    def _set_busy(self, busy: bool) -> None:
        self.ask_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.progress.setRange(0, 0 if busy else 1)
        self.progress.setValue(0)

    def _on_stage(self, stage: str, position: int = 0) -> None:
        title = tr(STAGE_TITLES.get(stage, stage))
        if stage == EVENT_QUEUED:
            title = tr("waiting in the backend's queue (position {0})").format(position)
        self.status.setText(title + "...")

    def _on_token(self, text: str) -> None:
        cursor = self.reasoning.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        cursor.insertText(text)
        self.reasoning.setTextCursor(cursor)

    def _on_answered(self, stored: StoredAnswer) -> None:
        answer = stored.answer
        self.reasoning.setPlainText(answer.reasoning or answer.raw_output)
        text = tr("{0} object(s) found.").format(len(answer.objects))
        for warning in answer.warnings:
            log(warning, "warning")
        if answer.warnings:
            text += " " + tr("{0} note(s) from the backend in the log (GeoReasoner tab).").format(len(answer.warnings))
        self.show_message(text, Qgis.MessageLevel.Success)
        self.reload_history()
        for i in range(self.history.count()):
            if self.history.item(i).data(Qt.ItemDataRole.UserRole) == answer.answer_id:
                self.history.setCurrentRow(i)

    def _on_failed(self, message: str, kind: str) -> None:
        level = Qgis.MessageLevel.Info if kind == "cancelled" else Qgis.MessageLevel.Critical
        self.show_message(message, level)

    # -- history ----------------------------------------------------------------------------------
    def store(self) -> AnswerStore:
        return AnswerStore(self.asker.store_path_override or store_path_for(self.project))

    def stored_answers(self) -> List[StoredAnswer]:
        """Answers whose layers are in this project (read from the store(s) the layers point to)."""
        stores = {}
        for layer in self.project.mapLayers().values():
            if layer.customProperty("georeasoner/answer_id", ""):
                source = layer.source().split("|")[0]
                if source.startswith("GPKG:"):
                    source = source[5:].rsplit(":", 1)[0]
                stores[source] = True
        stores[str(self.store().path)] = True
        present = {lyr.customProperty("georeasoner/answer_id", "") for lyr in self.project.mapLayers().values()}
        out = []
        for path in stores:
            if Path(path).exists():
                out += [s for s in AnswerStore(Path(path)).all() if s.answer.answer_id in present]
        out.sort(key=lambda s: s.answer.created)
        return out

    def reload_history(self, *args) -> None:
        self.history.clear()
        self._answers = {}
        try:
            answers = self.stored_answers()
        except Exception as exc:  # noqa: BLE001 - an unreadable store must not break the dock
            self.show_message(tr("Cannot read the answer store: {0}").format(exc))
            return
        for stored in answers:
            a = stored.answer
            item = QListWidgetItem(f"{a.created[:16].replace('T', ' ')}  {a.question}  ({len(a.objects)})")
            item.setData(Qt.ItemDataRole.UserRole, a.answer_id)
            item.setToolTip(a.reasoning)
            self.history.addItem(item)
            self._answers[a.answer_id] = stored

    def selected_answers(self) -> List[StoredAnswer]:
        ids = [i.data(Qt.ItemDataRole.UserRole) for i in self.history.selectedItems()]
        return [self._answers[i] for i in ids if i in self._answers]

    def _history_selected(self) -> None:
        chosen = self.selected_answers()
        if not chosen:
            return
        stored = chosen[-1]
        self.reasoning.setPlainText(stored.answer.reasoning or stored.answer.raw_output)
        canvas = self.iface.mapCanvas()
        extent = answer_extent(stored.answer.answer_id, canvas.mapSettings().destinationCrs(), self.project)
        if not extent.isEmpty() and extent.isFinite():
            extent.scale(1.2)
            canvas.setExtent(extent)
            canvas.refresh()
        group = find_group(stored.answer.answer_id, self.project)
        view = self.iface.layerTreeView() if hasattr(self.iface, "layerTreeView") else None
        if group is not None:
            group.setItemVisibilityChecked(True)
            group.setExpanded(True)
        layers = answer_layers(stored.answer.answer_id, self.project)
        if view is not None and layers:
            try:
                view.setCurrentLayer(layers[0])
            except Exception:  # noqa: BLE001 - the test interface has no real tree view
                pass

    def export_selected(self) -> None:
        chosen = self.selected_answers()
        if not chosen:
            self.show_message(tr("Select one or more answers to export."), Qgis.MessageLevel.Info)
            return
        formats = [tr("Shapefiles (a folder)"), tr("GeoPackage (one file)")]
        fmt_text, ok = QInputDialog.getItem(self, tr("Export answers"), tr("Format"), formats, 0, False)
        if not ok:
            return
        fmt = "shp" if fmt_text == formats[0] else "gpkg"
        crs_choices = [tr("Source CRS (as captured)"), tr("Project CRS"), tr("Choose a CRS...")]
        crs_text, ok = QInputDialog.getItem(self, tr("Export answers"), tr("Coordinate reference system"),
                                            crs_choices, 0, False)
        if not ok:
            return
        crs: Optional[QgsCoordinateReferenceSystem] = None
        if crs_text == crs_choices[1]:
            crs = self.project.crs()
        elif crs_text == crs_choices[2]:
            dialog = QgsProjectionSelectionDialog(self)
            if not dialog.exec():
                return
            crs = dialog.crs()
        if fmt == "shp":
            target = QFileDialog.getExistingDirectory(self, tr("Export shapefiles to folder"))
        else:
            target, _ = QFileDialog.getSaveFileName(self, tr("Export to GeoPackage"), "", "GeoPackage (*.gpkg)")
        if not target:
            return
        self.export(chosen, Path(target), fmt, crs, confirm=True)

    def export(self, answers, target: Path, fmt: str, crs=None, confirm: bool = True) -> List[Path]:
        try:
            return export_answers(answers, target, fmt, crs, overwrite=False, project=self.project)
        except ExistingFilesError as exc:
            if confirm:
                reply = QMessageBox.question(self, tr("Export answers"),
                                             tr("{0} file(s) exist already in {1}. Overwrite them?")
                                             .format(len(exc.files), target))
                if reply != QMessageBox.StandardButton.Yes:
                    return []
            else:
                return []
            return export_answers(answers, target, fmt, crs, overwrite=True, project=self.project)
        except ExportError as exc:
            self.show_message(str(exc))
            return []
