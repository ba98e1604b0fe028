"""Translation: tr() for plugin strings, and the translator for QGIS's locale."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from qgis.core import QgsSettings
from qgis.PyQt.QtCore import QCoreApplication, QLocale, QTranslator

CONTEXT = "GeoReasoner"
I18N_DIR = Path(__file__).resolve().parent.parent / "i18n"


def tr(text: str) -> str:
    return QCoreApplication.translate(CONTEXT, text)


def qgis_locale() -> str:
    """The locale QGIS runs in (its own override setting first, then the system's)."""
    settings = QgsSettings()
    if settings.value("locale/overrideFlag", False, type=bool):
        name = settings.value("locale/userLocale", "", type=str)
        if name:
            return name
    name = settings.value("locale/userLocale", "", type=str)
    return name or QLocale.system().name()


def find_translation(locale: str, folder: Path = I18N_DIR) -> Optional[Path]:
    """georeasoner_<locale>.qm, trying zh_CN, then zh."""
    for name in (locale, locale.split("_")[0]):
        candidate = folder / f"georeasoner_{name}.qm"
        if candidate.is_file():
            return candidate
    return None


def install_translator(locale: Optional[str] = None) -> Optional[QTranslator]:
    """Load and install the translation for `locale` (QGIS's by default); None when there is none."""
    path = find_translation(locale or qgis_locale())
    if path is None:
        return None
    translator = QTranslator()
    if not translator.load(str(path)):
        return None
    QCoreApplication.installTranslator(translator)
    return translator
