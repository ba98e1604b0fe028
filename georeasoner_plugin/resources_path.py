"""Where the plugin's resources (icons, translations) are: beside the package in the plugin zip,
at the repository root in a checkout."""
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    for candidate in (PACKAGE / name, PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    return PACKAGE / name


def icon_path(name: str = "icon.svg") -> Path:
    return resource_dir("resources") / name
