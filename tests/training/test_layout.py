"""training/'s layering, read from the source (ast; nothing is imported): the library modules never
import the command line, and each user-facing exception is defined once (training/errors.py)."""
import ast
from pathlib import Path

import pytest

TRAINING = Path(__file__).resolve().parents[2] / "training"
CLI_MODULES = {"cli.py", "__main__.py"}
SOURCES = sorted(TRAINING.rglob("*.py"))


def imported_modules(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ["training"] + list(path.relative_to(TRAINING).parent.parts)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            yield module
            if not node.module:
                yield from (f"{module}.{alias.name}" for alias in node.names)


@pytest.mark.parametrize("path", [p for p in SOURCES if p.name not in CLI_MODULES],
                         ids=lambda p: str(p.relative_to(TRAINING)))
def test_library_modules_never_import_the_command_line(path):
    for module in imported_modules(path):
        assert module != "training.cli", f"{path.relative_to(TRAINING)} imports training.cli"


def test_user_errors_are_defined_once():
    defined = {}
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                defined.setdefault(node.name, []).append(path.name)
    assert all(files == ["errors.py"] for files in defined.values()), defined
    assert {"ConfigError", "DatasetError", "OptionError", "ExportError"} <= set(defined)
