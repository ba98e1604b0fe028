"""The import rules of docs/ARCHITECTURE.md, read from the source (ast; nothing is imported).

core/ is pure Python (standard library and core only); the QGIS side (gui, qgis_io, processing,
toolbelt, plugin.py) never imports the backend or the heavy libraries; nothing imports upwards.
"""
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "georeasoner_plugin"
QGIS_SIDE = ("gui", "qgis_io", "processing", "toolbelt", "plugin.py", "resources_path.py", "rle.py", "__init__.py")
HEAVY = {"torch", "torchvision", "transformers", "cv2", "rasterio", "fastapi", "uvicorn", "starlette", "pyogrio",
         "shapely", "pyproj", "peft", "trl", "accelerate", "scipy", "httpx"}


def imports_of(path: Path):
    """(absolute module names) imported by one file, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = list(path.relative_to(ROOT).with_suffix("").parts)[:-1]  # the file's package (__init__ too)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
                names += [module] if node.module else [f"{module}.{alias.name}" for alias in node.names]
            else:
                names.append(node.module)
    return names


def test_relative_imports_are_resolved():
    names = imports_of(PACKAGE / "gui" / "dock.py")
    assert "georeasoner_plugin.core.api" in names and "georeasoner_plugin.qgis_io.asker" in names
    assert "georeasoner_plugin.core.protocol" in imports_of(PACKAGE / "core" / "fields.py")


def files(*parts):
    for part in parts:
        target = PACKAGE / part
        yield from ([target] if target.is_file() else sorted(target.rglob("*.py")))


@pytest.mark.parametrize("path", list(files("core")), ids=lambda p: p.name)
def test_core_imports_only_the_standard_library_and_core(path):
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for name in imports_of(path):
        top = name.split(".")[0]
        assert top in stdlib or name.startswith("georeasoner_plugin.core"), f"{path.name} imports {name}"


@pytest.mark.parametrize("path", list(files(*QGIS_SIDE)), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_qgis_side_never_imports_the_backend_or_heavy_libraries(path):
    for name in imports_of(path):
        assert name.split(".")[0] not in HEAVY, f"{path.relative_to(ROOT)} imports {name}"
        assert not name.startswith("georeasoner_plugin.backend"), f"{path.relative_to(ROOT)} imports {name}"
        assert not name.startswith("training"), f"{path.relative_to(ROOT)} imports {name}"


@pytest.mark.parametrize("path", list(files("backend")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_backend_never_imports_the_qgis_side_or_training(path):
    for name in imports_of(path):
        assert name.split(".")[0] not in ("qgis", "PyQt5", "PyQt6", "training"), f"{path.name} imports {name}"
        for side in ("gui", "qgis_io", "processing", "toolbelt", "plugin"):
            assert not name.startswith(f"georeasoner_plugin.{side}"), f"{path.name} imports {name}"


def source_files():
    for folder in (PACKAGE, ROOT / "bench"):
        yield from sorted(folder.rglob("*.py"))


@pytest.mark.parametrize("fact,pattern", [
    ("the start-up line", "backend listening on"),
    ("the token file's default folder", '/ ".config"'),
    ("the token file's environment variable", '"GEOREASONER_TOKEN_FILE"'),
    ("the question limit", "MAX_QUESTION_CHARS = "),
])
def test_contract_facts_are_defined_once_in_core_api(fact, pattern):
    """grep for a contract fact finds one definition: core/api.py (issue 11)."""
    holders = [str(p.relative_to(ROOT)) for p in source_files() if pattern in p.read_text(encoding="utf-8")]
    assert holders == ["georeasoner_plugin/core/api.py"], f"{fact} is written in {holders}"
