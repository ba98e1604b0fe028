"""The dock's "Advanced" fold: request options sent with each question."""
from __future__ import annotations

from qgis.gui import QgsCollapsibleGroupBox, QgsDoubleSpinBox
from qgis.PyQt.QtWidgets import QFormLayout, QSpinBox

from ..toolbelt.i18n import tr
from ..toolbelt.settings import Settings


class AdvancedBox(QgsCollapsibleGroupBox):
    def __init__(self, settings: Settings, parent=None):
        super().__init__(tr("Advanced"), parent)
        self.setObjectName("advanced")
        self.setCollapsed(True)
        form = QFormLayout(self)
        self.min_area = QgsDoubleSpinBox(self)
        self.min_area.setRange(0.0, 1e9)
        self.min_area.setSuffix(tr(" px"))
        self.min_area.setValue(settings.min_area)
        self.min_area.setToolTip(tr("Contour polygons smaller than this many image pixels are dropped"))
        form.addRow(tr("Minimum area"), self.min_area)
        self.simplify = QgsDoubleSpinBox(self)
        self.simplify.setRange(0.0, 1000.0)
        self.simplify.setSuffix(tr(" px"))
        self.simplify.setValue(settings.simplify_tolerance)
        form.addRow(tr("Simplification"), self.simplify)
        self.temperature = QgsDoubleSpinBox(self)
        self.temperature.setRange(0.0, 2.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setValue(settings.temperature)
        form.addRow(tr("Temperature"), self.temperature)
        self.seed = QSpinBox(self)
        self.seed.setRange(-1, 2 ** 31 - 1)
        self.seed.setSpecialValueText(tr("none"))
        self.seed.setValue(settings.seed)
        form.addRow(tr("Seed"), self.seed)
        self.max_tokens = QSpinBox(self)
        self.max_tokens.setRange(16, 32768)
        self.max_tokens.setValue(settings.max_new_tokens)
        form.addRow(tr("Token limit"), self.max_tokens)

        for widget in (self.min_area, self.simplify, self.temperature, self.seed, self.max_tokens):
            widget.valueChanged.connect(self.save)

    def save(self, *args) -> None:
        """Remembered for the next QGIS session."""
        Settings.load().replace(min_area=self.min_area.value(), simplify_tolerance=self.simplify.value(),
                                temperature=self.temperature.value(), seed=self.seed.value(),
                                max_new_tokens=self.max_tokens.value()).save()
