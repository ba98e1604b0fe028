#!/usr/bin/env python3
"""Build the QGIS plugin zip: dist/georeasoner_plugin-<version>.zip

One top folder `georeasoner_plugin` holding the package, metadata.txt, LICENSE, resources/, the
compiled translations (i18n/*.qm, made here from i18n/*.ts with lrelease) and
requirements-backend.txt for the backend venv. No tests, training, caches, .pyc or hidden files;
under 25 MB. The rules are checked on the finished zip and the build fails loudly if one is broken.

    python build.py [--out dist] [--no-translations]
"""
from __future__ import annotations

import argparse
import configparser
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PACKAGE = "georeasoner_plugin"
MAX_BYTES = 25 * 1024 * 1024
REQUIRED_METADATA = ("name", "description", "about", "version", "qgisMinimumVersion", "author", "email",
                     "tracker", "repository")
EXPECTED_METADATA = ("homepage", "tags", "category", "icon", "changelog", "experimental",
                     "hasProcessingProvider", "qgisMaximumVersion")
EXCLUDED_PARTS = {"__pycache__", "tests", "training", ".pytest_cache", ".hypothesis", ".cache"}
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".ts", ".orig", ".rej", ".swp")
DEMO_FILES = ("naip_lakes_remotereasoner.txt",)


class BuildError(SystemExit):
    def __init__(self, message: str):
        super().__init__(f"build.py: error: {message}")


def version() -> str:
    text = (ROOT / PACKAGE / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.M)
    if not match:
        raise BuildError("no __version__ in georeasoner_plugin/__init__.py")
    return match.group(1)


def read_metadata() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(ROOT / "metadata.txt", encoding="utf-8")
    return parser


def check_metadata(v: str) -> None:
    meta = read_metadata()
    if "general" not in meta:
        raise BuildError("metadata.txt has no [general] section")
    general = meta["general"]
    missing = [k for k in REQUIRED_METADATA + EXPECTED_METADATA if not general.get(k, "").strip()]
    if missing:
        raise BuildError(f"metadata.txt lacks {', '.join(missing)}")
    if general["version"].strip() != v:
        raise BuildError(f"metadata.txt version {general['version']} differs from __version__ {v}")
    if general["hasProcessingProvider"].strip().lower() != "yes":
        raise BuildError("metadata.txt: hasProcessingProvider must be yes")
    if not (ROOT / general["icon"].strip()).is_file():
        raise BuildError(f"metadata.txt icon {general['icon']} does not exist")


def find_tool(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    for candidate in ("/usr/lib/qt5/bin/lrelease", "/usr/lib/x86_64-linux-gnu/qt5/bin/lrelease"):
        if Path(candidate).exists() and "lrelease" in names:
            return candidate
    return ""


def compile_translations(build_dir: Path) -> list:
    sources = sorted((ROOT / "i18n").glob("*.ts"))
    if not sources:
        return []
    lrelease = find_tool("lrelease", "lrelease-qt5")
    if not lrelease:
        raise BuildError("lrelease not found (Debian: apt-get install qttools5-dev-tools); it compiles i18n/*.ts")
    out = []
    build_dir.mkdir(parents=True, exist_ok=True)
    for ts in sources:
        qm = build_dir / (ts.stem + ".qm")
        result = subprocess.run([lrelease, "-silent", str(ts), "-qm", str(qm)], capture_output=True, text=True)
        if result.returncode != 0 or not qm.is_file():
            raise BuildError(f"lrelease failed on {ts.name}: {result.stderr.strip()}")
        out.append(qm)
    return out


def backend_requirements() -> str:
    # One list for the zip and the plugin's installer: core/requirements.py reads pyproject.toml.
    sys.path.insert(0, str(ROOT))
    from georeasoner_plugin.core.requirements import requirement_lines

    return "\n".join(requirement_lines((ROOT / "pyproject.toml").read_text(encoding="utf-8"))) + "\n"


def included(path: Path) -> bool:
    rel = path.relative_to(ROOT)
    if any(part.startswith(".") for part in rel.parts):
        return False
    if any(part in EXCLUDED_PARTS for part in rel.parts):
        return False
    return path.is_file() and not path.name.endswith(EXCLUDED_SUFFIXES)


def build(out_dir: Path, translations: bool = True) -> Path:
    v = version()
    check_metadata(v)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{PACKAGE}-{v}.zip"
    qms = compile_translations(ROOT / "build" / "i18n") if translations else []
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted((ROOT / PACKAGE).rglob("*")):
            if included(path):
                zf.write(path, f"{PACKAGE}/{path.relative_to(ROOT / PACKAGE).as_posix()}")
        for path in sorted((ROOT / "resources").rglob("*")):
            if included(path):
                zf.write(path, f"{PACKAGE}/{path.relative_to(ROOT).as_posix()}")
        for name in ("metadata.txt", "LICENSE"):
            zf.write(ROOT / name, f"{PACKAGE}/{name}")
        for qm in qms:
            zf.write(qm, f"{PACKAGE}/i18n/{qm.name}")
        zf.writestr(f"{PACKAGE}/requirements-backend.txt", backend_requirements())
        for name in DEMO_FILES:  # the set-up panel's demo backend replays this recorded answer
            zf.write(ROOT / "examples" / name, f"{PACKAGE}/examples/{name}")
    check_zip(tmp, v, expect_translations=bool(qms))
    tmp.replace(target)
    return target


def check_zip(path: Path, v: str, expect_translations: bool) -> None:
    problems = []
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    tops = {n.split("/")[0] for n in names}
    if tops != {PACKAGE}:
        problems.append(f"top folders {sorted(tops)}, expected only {PACKAGE}")
    for name in names:
        parts = name.split("/")
        if any(p.startswith(".") for p in parts):
            problems.append(f"hidden file {name}")
        if any(p in EXCLUDED_PARTS for p in parts):
            problems.append(f"excluded content {name}")
        if name.endswith((".pyc", ".pyo")):
            problems.append(f"compiled Python {name}")
    for required in ("__init__.py", "metadata.txt", "LICENSE", "plugin.py", "requirements-backend.txt",
                     "resources/icon.svg"):
        if f"{PACKAGE}/{required}" not in names:
            problems.append(f"missing {PACKAGE}/{required}")
    if expect_translations and not any(n.endswith(".qm") for n in names):
        problems.append("no compiled translation (.qm)")
    size = path.stat().st_size
    if size >= MAX_BYTES:
        problems.append(f"zip is {size / 1e6:.1f} MB, over the 25 MB limit")
    if problems:
        path.unlink(missing_ok=True)
        raise BuildError("plugin zip breaks the packaging rules:\n  " + "\n  ".join(problems))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "dist"))
    parser.add_argument("--no-translations", action="store_true")
    args = parser.parse_args(argv)
    target = build(Path(args.out), translations=not args.no_translations)
    print(f"{target} ({target.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
