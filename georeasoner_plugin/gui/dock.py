"""The GeoReasoner dock: ask the map a question, watch the reasoning, keep the answers."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from qgis.core import Qgis, QgsMapLayerProxyModel, QgsProject, QgsRasterLayer
from qgis.gui import QgsDoubleSpinBox, QgsMapLayerComboBox, QgsMessageBarItem
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.api import (EVENT_QUEUED, QuestionError, check_question)
from ..core.protocol import GRANULARITIES
from ..qgis_io.asker import Asker
from ..qgis_io.capture import CaptureError, prepare_canvas, prepare_raster
from ..qgis_io.client import AskRequest, BackendClient
from ..qgis_io.layers import (ANSWERS, UnsavedAnswers, answer_extent, move_answers_into_project_store,
                               source_rasters)
from ..qgis_io.service import Question
from ..qgis_io.store import StoredAnswer, store_path_for
from ..toolbelt.i18n import tr
from ..toolbelt.log import log
from ..toolbelt.settings import Settings
from . import tiled_modes
from .advanced import AdvancedBox
from .area import AreaBand, AreaChooser, AreaError
from .export_dialog import ExportDialog, export_with_feedback
from .history import HistoryPanel
from .labels import STAGE_TITLES, wrapping_label as _wrapping_label

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
        self._bar_item: Optional[QgsMessageBarItem] = None
        self.info: Optional[dict] = None
        self.health: Optional[dict] = None
        self.area_band = AreaBand(iface.mapCanvas())
        self._build()
        self.asker.stage.connect(self._on_stage)
        self.asker.token.connect(self._on_token)
        self.asker.queued.connect(lambda n: self._on_stage(EVENT_QUEUED, n))
        self.asker.answered.connect(self._on_answered)
        self.asker.failed.connect(self._on_failed)
        self.asker.busy_changed.connect(self._set_busy)
        self.project.readProject.connect(self._project_changed)
        self.project.cleared.connect(self._project_changed)
        self.project.layersAdded.connect(self._update_raster_choices)
        self.project.layersRemoved.connect(self._update_raster_choices)
        self.project.projectSaved.connect(self._project_saved)
        self.unsaved_answers = UnsavedAnswers(self.project, self)
        self._saving_again = False
        ANSWERS.changed.connect(self.history_panel.reload)
        self._project_changed()
        QTimer.singleShot(0, self.refresh_info)  # health and models as soon as the dock opens

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
        for g in GRANULARITIES:
            box = QCheckBox(titles[g], body)
            box.setChecked(g in settings.output_list())
            self.output_boxes[g] = box
            outputs.addWidget(box)
        form.addRow(tr("Outputs"), outputs)

        self.source = QComboBox(body)
        self.source.addItem(tr("The map as displayed"), "canvas")
        self.source.addItem(tr("A raster, pixel for pixel"), "raster")
        self.source.setCurrentIndex(1 if settings.capture_source == "raster" else 0)
        self.source.setToolTip(tr("What the model sees: the rendered map at screen resolution, or one raster at "
                                  "its own (or the chosen ground) resolution"))
        form.addRow(tr("Read"), self.source)
        self.raster = QgsMapLayerComboBox(body)
        self.raster.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        form.addRow(tr("Raster"), self.raster)
        self.resolution = QgsDoubleSpinBox(body)
        self.resolution.setRange(0.0, 1e6)
        self.resolution.setDecimals(3)
        self.resolution.setSpecialValueText(tr("native"))
        self.resolution.setValue(settings.ground_resolution)
        form.addRow(tr("Ground resolution"), self.resolution)
        self.area = AreaChooser(self.iface.mapCanvas(), body)
        form.addRow(tr("Area"), self.area)
        self.source.currentIndexChanged.connect(self._source_changed)
        self._source_changed()

        profile_row = QHBoxLayout()
        self.profile = QComboBox(body)
        self.profile.addItem(tr("backend default"), "")
        profile_row.addWidget(self.profile, 1)
        self.refresh_button = QPushButton(tr("Refresh"), body)
        self.refresh_button.setToolTip(tr("Ask the backend for its state, models and profiles"))
        self.refresh_button.clicked.connect(self.refresh_info)
        profile_row.addWidget(self.refresh_button)
        form.addRow(tr("Profile"), profile_row)
        self.models_label = _wrapping_label(tr("asking the backend..."), body)
        form.addRow(tr("Models"), self.models_label)
        self.zoom = QCheckBox(tr("Zoom to each new answer"), body)
        self.zoom.setChecked(settings.zoom_to_answer)
        self.zoom.setToolTip(tr("Zooming changes the visible extent, and with it the area of the next question"))
        self.zoom.toggled.connect(lambda on: Settings.load().replace(zoom_to_answer=on).save())
        form.addRow("", self.zoom)
        layout.addLayout(form)
        self.advanced = AdvancedBox(settings, body)
        for name in ("min_area", "simplify", "temperature", "seed", "max_tokens"):
            setattr(self, name, getattr(self.advanced, name))
        layout.addWidget(self.advanced)

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
        self.progress.setRange(0, 0)
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(6)
        self.progress.setVisible(False)  # only while a question runs
        layout.addWidget(self.progress)
        self.status = _wrapping_label(tr("Ready."), body)
        self.status.setObjectName("status")
        layout.addWidget(self.status)

        layout.addWidget(QLabel(tr("Reasoning"), body))
        self.reasoning = QPlainTextEdit(body)
        self.reasoning.setReadOnly(True)
        self.reasoning.setObjectName("reasoning")
        layout.addWidget(self.reasoning, 2)
        self.notes = _wrapping_label("", body)
        self.notes.setObjectName("notes")
        self.notes.setVisible(False)
        layout.addWidget(self.notes)

        layout.addWidget(QLabel(tr("Answers"), body))
        self.history_panel = HistoryPanel(self.project, body)
        self.history = self.history_panel.list
        self.history_panel.selected.connect(self._history_selected)
        self.history_panel.message.connect(self.show_message)
        self.history_panel.export_requested.connect(self.export_dialog)
        self.history_panel.correct_requested.connect(self.correct)
        layout.addWidget(self.history_panel, 1)
        self.setWidget(body)
        tiled_modes.install(self)  # "Whole layer (tiled)", "Current extent at ground resolution" (issue 10)

    def _source_changed(self) -> None:
        raster = self.source.currentData() == "raster"
        self.resolution.setEnabled(raster)

    def _update_raster_choices(self, *args) -> None:
        """The Raster picker offers source rasters only, never our own mask layers."""
        excluded = [lyr for lyr in self.project.mapLayers().values()
                    if isinstance(lyr, QgsRasterLayer) and lyr not in source_rasters(self.project)]
        self.raster.setExceptedLayerList(excluded)
        current = self.raster.currentLayer()
        if current is None or current in excluded:
            rasters = source_rasters(self.project)
            self.raster.setLayer(rasters[0] if rasters else None)

    def _project_changed(self, *args) -> None:
        self._update_raster_choices()
        self.history_panel.reload()

    def _project_saved(self, *args) -> None:
        """First save (or Save As elsewhere): the answers move into the store beside the project file
        and the layers point there; the project is then written once more so the file says so
        (relative paths, as QGIS writes them)."""
        if self._saving_again:
            return
        try:
            moved = move_answers_into_project_store(self.project)
        except Exception as exc:  # noqa: BLE001 - the project itself is saved; say what went wrong
            self.show_message(tr("Could not move the answers beside the project: {0}").format(exc))
            return
        if moved:
            # QGIS is still packing the .qgz it just wrote: write again once it is done
            QTimer.singleShot(0, self._save_again)
            self.history_panel.reload()

    def _save_again(self) -> None:
        self._saving_again = True
        try:
            if not self.project.write():
                self.show_message(tr("The answers moved beside the project, but saving the project again "
                                     "failed: {0}. Save it once more.").format(self.project.error()))
        finally:
            self._saving_again = False

    def reload_history(self, *args) -> None:
        self.history_panel.reload()

    def selected_outputs(self) -> List[str]:
        return [g for g, box in self.output_boxes.items() if box.isChecked()]

    # -- messages ---------------------------------------------------------------------------------
    def show_message(self, text: str, level=Qgis.MessageLevel.Warning) -> None:
        """The status line, and one message in QGIS's message bar (it replaces our previous one)."""
        self.last_message = text
        self.status.setText(text)
        bar = self.iface.messageBar()
        if self._bar_item is not None:
            try:
                bar.popWidget(self._bar_item)
            except RuntimeError:  # already closed by the user or timed out
                pass
        self._bar_item = QgsMessageBarItem(tr("GeoReasoner"), text, level, 10)
        bar.pushItem(self._bar_item)

    # -- backend state ----------------------------------------------------------------------------
    def client(self) -> BackendClient:
        return BackendClient.from_settings(Settings.load())

    def refresh_info(self) -> None:
        """Never blocks: /v1/health, then /v1/info; the Models row and the profiles follow."""
        client = self.client()
        try:
            self.models_label.setText(tr("asking the backend at {0}...").format(client.base_url))
        except RuntimeError:  # a timer fired after the dock was closed
            return
        client.get_async("/v1/health", lambda data, error: self._on_health(client, data, error), self)

    def _on_health(self, client, data, error) -> None:
        self.health = data
        if data is None:
            self.models_label.setText(error)
            return
        state = data.get("status")
        if state == "loading":
            self.models_label.setText(tr("loading the models... ({0})").format(data.get("detail", "")))
            QTimer.singleShot(3000, self.refresh_info)
            return
        if state == "error":
            self.models_label.setText(tr("the models failed to load: {0}").format(data.get("detail", "")))
            return
        client.get_async("/v1/info", self._on_info, self)

    def _on_info(self, info, error) -> None:
        if info is None:
            self.models_label.setText(error)
            return
        self.info = info
        current = self.profile.currentData()
        self.profile.clear()
        self.profile.addItem(tr("backend default ({0})").format(info.get("default_profile", "")), "")
        for p in info.get("profiles", []):
            self.profile.addItem(f"{p.get('name')} - {p.get('title', '')}", p.get("name"))
        self.profile.setCurrentIndex(max(0, self.profile.findData(current)))
        models = info.get("models", {})
        self.models_label.setText(tr("ready: ") + ", ".join(f"{k}: {v}" for k, v in models.items() if v)
                                  + (tr(" (replaying a recorded answer)") if info.get("replay") else ""))

    # -- asking -----------------------------------------------------------------------------------
    def request(self, question: str) -> AskRequest:
        settings = Settings.load()
        return AskRequest(question=question, image_bytes=b"", outputs=self.selected_outputs(),
                          profile=self.profile.currentData() or settings.profile,
                          max_new_tokens=self.max_tokens.value(), temperature=self.temperature.value(),
                          seed=None if self.seed.value() < 0 else self.seed.value(),
                          simplify_tolerance=self.simplify.value(), min_area=self.min_area.value())

    def questions(self, question: str) -> List[Question]:
        """One Question per area, prepared on the GUI thread (the reading happens in the task)."""
        settings = Settings.load()
        canvas = self.iface.mapCanvas()
        raster = self.raster.currentLayer() if isinstance(self.raster.currentLayer(), QgsRasterLayer) else None
        reading_raster = self.source.currentData() == "raster"
        if reading_raster and raster is None:
            raise CaptureError(tr("Choose a raster layer to read, or read the map as displayed."))
        context = self.project.transformContext()
        out = []
        for area in self.area.areas(raster):
            if reading_raster:
                spec = prepare_raster(raster, canvas.extent(), canvas.mapSettings().destinationCrs(),
                                      self.resolution.value(), settings.max_image_size, context, area.geometry,
                                      area.crs)
            else:
                spec = prepare_canvas(canvas.mapSettings(), max_size=settings.max_image_size, area=area.geometry,
                                      area_crs=area.crs, transform_context=context)
            out.append(Question(self.request(question), spec, store_path_for(self.project), context,
                                self.project.ellipsoid(), area.label))
        return out

    def ask(self) -> None:
        if self.asker.is_busy() or self.tiled.is_busy():
            return
        if self.before_ask is not None and not self.before_ask(self.ask):
            return
        try:
            question = check_question(self.question.text())  # the service's own rule (core/api.py)
        except QuestionError as exc:
            empty = exc.code == "empty_question"
            self.show_message(tr("Type a question first.") if empty else str(exc), Qgis.MessageLevel.Info)
            return
        if not self.selected_outputs():
            self.show_message(tr("Choose at least one output."), Qgis.MessageLevel.Info)
            return
        try:
            if tiled_modes.is_tiled(self):
                return tiled_modes.start(self, question)
            questions = self.questions(question)
        except (CaptureError, AreaError) as exc:
            self.show_message(str(exc))
            return
        self.area_band.show([(q.spec.footprint(), q.spec.capture_crs()) for q in questions])
        self.reasoning.clear()
        self.notes.setVisible(False)
        self.asker.start(self.client(), questions)

    def cancel(self) -> None:
        if not self.asker.is_busy() and not self.tiled.is_busy():
            return
        # Say so first: a task that has not started yet finishes inside cancel().
        self.status.setText(tr("Cancelling..."))
        self.asker.cancel()
        self.tiled.cancel()

    # -- asker signals ----------------------------------------------------------------------------
    def _set_busy(self, busy: bool) -> None:
        self.ask_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.progress.setVisible(busy)
        if not busy:
            self.area_band.hide()
            if self.status.text() == tr("Cancelling..."):
                self.status.setText(tr("Cancelled."))

    def _on_stage(self, stage: str, position: int = 0) -> None:
        title = tr(STAGE_TITLES.get(stage, stage))
        if stage == EVENT_QUEUED:
            title = tr("waiting in the backend's queue (position {0})").format(position)
        if self.status.text() != tr("Cancelling..."):
            self.status.setText(title + "...")

    def _on_token(self, text: str) -> None:
        cursor = self.reasoning.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        cursor.insertText(text)
        self.reasoning.setTextCursor(cursor)

    def _on_answered(self, stored: StoredAnswer) -> None:
        answer = stored.answer
        self.reasoning.setPlainText(answer.reasoning or answer.raw_output)
        for warning in answer.warnings:
            log(warning, "warning")
        self.show_notes(answer.warnings)
        self.show_message(tr("{0} object(s) found.").format(len(answer.objects)), Qgis.MessageLevel.Success)
        self.history_panel.reload()
        self.history.blockSignals(True)
        self.history_panel.select(answer.answer_id)
        self.history.blockSignals(False)
        if self.zoom.isChecked():
            self.zoom_to(stored)

    def show_notes(self, notes: List[str]) -> None:
        self.notes.setText("\n".join("• " + n for n in notes))
        self.notes.setVisible(bool(notes))

    def _on_failed(self, message: str, kind: str) -> None:
        level = Qgis.MessageLevel.Info if kind == "cancelled" else Qgis.MessageLevel.Critical
        self.show_message(message, level)

    # -- history ----------------------------------------------------------------------------------
    def selected_answers(self) -> List[StoredAnswer]:
        return self.history_panel.selected_answers()

    def zoom_to(self, stored: StoredAnswer) -> None:
        canvas = self.iface.mapCanvas()
        extent = answer_extent(stored.answer.answer_id, canvas.mapSettings().destinationCrs(), self.project)
        if not extent.isEmpty() and extent.isFinite():
            extent.scale(1.2)
            canvas.setExtent(extent)
            canvas.refresh()

    def _history_selected(self, stored: StoredAnswer) -> None:
        self.reasoning.setPlainText(stored.answer.reasoning or stored.answer.raw_output)
        self.show_notes(stored.answer.warnings)
        self.zoom_to(stored)

    def correct(self, stored: StoredAnswer):
        """The correction tool on the map for this answer (see gui/correct_tool.py)."""
        from ..qgis_io.correct import CorrectionError, Corrector
        from .correct_tool import CorrectTool

        try:
            corrector = Corrector(stored, self.client())
        except CorrectionError as exc:
            self.show_message(str(exc))
            return None
        self.correct_tool = CorrectTool(self.iface.mapCanvas(), corrector, self.project)
        self.correct_tool.message.connect(
            lambda text, error: self.show_message(text, Qgis.MessageLevel.Critical if error else Qgis.MessageLevel.Info))
        self.iface.mapCanvas().setMapTool(self.correct_tool)
        self.show_message(tr("Correcting: click an object of the answer, then add points (left: inside, right: "
                             "outside) or drag a new box; drag on empty ground adds an object; Delete, Ctrl+Z."),
                          Qgis.MessageLevel.Info)
        return self.correct_tool

    def export_dialog(self, answers: List[StoredAnswer]) -> None:
        dialog = ExportDialog(len(answers), self.project, self)
        if not dialog.exec():
            return
        self.export(answers, dialog.target(), dialog.fmt(), dialog.target_crs(), masks=dialog.masks.isChecked())

    def export(self, answers, target: Path, fmt: str, crs=None, confirm: bool = True, masks: bool = False) -> List[Path]:
        return export_with_feedback(self, answers, target, fmt, crs, confirm, masks)
