"""Export answers: format, CRS, destination and masks in one dialog."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from qgis.core import QgsCoordinateReferenceSystem, QgsProject
from qgis.gui import QgsFileWidget, QgsProjectionSelectionWidget
from qgis.PyQt.QtWidgets import QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel

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
