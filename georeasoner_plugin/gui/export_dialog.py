"""Export answers: format, CRS, destination and masks in one dialog."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from qgis.core import Qgis, QgsCoordinateReferenceSystem, QgsProject
from qgis.gui import QgsFileWidget, QgsProjectionSelectionWidget
from qgis.PyQt.QtCore import QUrl
from qgis.PyQt.QtWidgets import QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QMessageBox

from ..qgis_io.export import ExistingFilesError, ExportError, export_answers
from ..toolbelt.i18n import tr

SOURCE_CRS, PROJECT_CRS, OTHER_CRS = "source", "project", "other"


class ExportDialog(QDialog):
    def __init__(self, count: int, project: QgsProject, parent=None):
        super().__init__(parent)
        self.setObjectName("GeoReasonerExportDialog")
        self.setWindowTitle(tr("Export {0} answer(s)").format(count))
        self.project = project
        form = QFormLayout(self)
        self.format = QComboBox(self)
        self.format.addItem(tr("GeoPackage (one file, with the reasoning)"), "gpkg")
        self.format.addItem(tr("Shapefiles (a folder; the reasoning in a text file)"), "shp")
        form.addRow(tr("Format"), self.format)
        self.crs_choice = QComboBox(self)
        self.crs_choice.addItem(tr("Source CRS (as captured)"), SOURCE_CRS)
        self.crs_choice.addItem(tr("Project CRS ({0})").format(project.crs().authid()), PROJECT_CRS)
        self.crs_choice.addItem(tr("Another CRS"), OTHER_CRS)
        form.addRow(tr("Coordinate reference system"), self.crs_choice)
        self.crs = QgsProjectionSelectionWidget(self)
        self.crs.setCrs(project.crs())
        form.addRow("", self.crs)
        self.path = QgsFileWidget(self)
        form.addRow(tr("Save to"), self.path)
        self.masks = QCheckBox(tr("Masks as GeoTIFF files (beside the export)"), self)
        self.masks.setChecked(True)
        form.addRow("", self.masks)
        self.hint = QLabel("", self)
        self.hint.setWordWrap(True)
        form.addRow(self.hint)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel,
                                        self)
        self.buttons.accepted.connect(self._accept)
        self.buttons.rejected.connect(self.reject)
        form.addRow(self.buttons)
        self.format.currentIndexChanged.connect(self._format_changed)
        self.crs_choice.currentIndexChanged.connect(lambda: self.crs.setEnabled(self.crs_choice.currentData() == OTHER_CRS))
        self.crs.setEnabled(False)
        self._format_changed()

    def fmt(self) -> str:
        return self.format.currentData()

    def _format_changed(self) -> None:
        if self.fmt() == "shp":
            self.path.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
            self.path.setDialogTitle(tr("Export shapefiles to folder"))
        else:
            self.path.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
            self.path.setFilter("GeoPackage (*.gpkg)")
            self.path.setDialogTitle(tr("Export to GeoPackage"))

    def target(self) -> Optional[Path]:
        text = self.path.filePath().strip()
        if not text:
            return None
        path = Path(text)
        if self.fmt() == "gpkg" and path.suffix.lower() != ".gpkg":
            path = path.with_suffix(".gpkg")
        return path

    def target_crs(self) -> Optional[QgsCoordinateReferenceSystem]:
        choice = self.crs_choice.currentData()
        if choice == PROJECT_CRS:
            return self.project.crs()
        if choice == OTHER_CRS:
            return self.crs.crs()
        return None

    def _accept(self) -> None:
        if self.target() is None:
            self.hint.setText(tr("Choose where to save the export."))
            return
        if self.crs_choice.currentData() == OTHER_CRS and not self.crs.crs().isValid():
            self.hint.setText(tr("Choose the coordinate reference system."))
            return
        self.accept()


def export_with_feedback(dock, answers, target: Path, fmt: str, crs=None, confirm: bool = True,
                         masks: bool = False) -> List[Path]:
    """Export, asking before overwriting (when ``confirm``), and say in the dock what was written
    with a link that opens the folder; [] when nothing was written."""
    try:
        try:
            written = export_answers(answers, target, fmt, crs, overwrite=False, project=dock.project, masks=masks)
        except ExistingFilesError as exc:
            if not confirm or QMessageBox.question(
                    dock, tr("Export answers"), tr("{0} file(s) exist already in {1}. Overwrite them?")
                    .format(len(exc.files), target)) != QMessageBox.StandardButton.Yes:
                return []
            written = export_answers(answers, target, fmt, crs, overwrite=True, project=dock.project, masks=masks)
    except ExportError as exc:
        dock.show_message(str(exc))
        return []
    folder = target if fmt == "shp" else target.parent
    link = QUrl.fromLocalFile(str(folder)).toString()
    dock.show_message(tr("Exported {0} answer(s): {1} file(s) in <a href=\"{2}\">{3}</a>.")
                      .format(len(answers), len(written), link, folder), Qgis.MessageLevel.Success)
    return written
