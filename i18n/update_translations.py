#!/usr/bin/env python3
"""Refresh i18n/georeasoner_<locale>.ts from the plugin's tr("...") strings (context GeoReasoner).

Existing translations are kept; new strings are added unfinished; strings no longer in the code are
marked obsolete. `python build.py` compiles the .ts files to .qm with lrelease.

    python i18n/update_translations.py            # every existing .ts
    python i18n/update_translations.py zh_CN      # create or refresh one locale
"""
from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent / "georeasoner_plugin"
CONTEXT = "GeoReasoner"
SKIP = {"backend", "core"}


def extract() -> list:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if SKIP & set(path.relative_to(PACKAGE).parts):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "tr"
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                found.append(node.args[0].value)
            # constants passed through tr() later (START_HINT, STAGE_TITLES values)
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in ("START_HINT", "STAGE_TITLES")
                                                    for t in node.targets):
                for c in ast.walk(node.value):
                    if isinstance(c, ast.Constant) and isinstance(c.value, str) and " " in c.value or (
                            isinstance(c, ast.Constant) and c.value in ("reasoning", "done")):
                        if isinstance(node.value, ast.Dict) and c in node.value.keys:
                            continue
                        found.append(c.value)
    return list(dict.fromkeys(found))


def read_ts(path: Path) -> dict:
    if not path.exists():
        return {}
    root = ET.parse(path).getroot()
    out = {}
    for message in root.iter("message"):
        source = message.findtext("source")
        translation = message.find("translation")
        if source is not None and translation is not None and translation.text and \
                translation.get("type") not in ("unfinished", "obsolete", "vanished"):
            out[source] = translation.text
    return out


def write_ts(path: Path, locale: str, sources: list, translations: dict) -> None:
    root = ET.Element("TS", version="2.1", language=locale)
    context = ET.SubElement(root, "context")
    ET.SubElement(context, "name").text = CONTEXT
    for source in sources:
        message = ET.SubElement(context, "message")
        ET.SubElement(message, "source").text = source
        tr = ET.SubElement(message, "translation")
        if source in translations:
            tr.text = translations[source]
        else:
            tr.set("type", "unfinished")
    for source in translations:
        if source not in sources:
            message = ET.SubElement(context, "message")
            ET.SubElement(message, "source").text = source
            tr = ET.SubElement(message, "translation", type="vanished")
            tr.text = translations[source]
    ET.indent(root)
    path.write_text('<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE TS>\n'
                    + ET.tostring(root, encoding="unicode") + "\n", encoding="utf-8")


def main(argv) -> int:
    sources = extract()
    locales = argv or [p.stem.split("_", 1)[1] for p in HERE.glob("georeasoner_*.ts")]
    for locale in locales:
        path = HERE / f"georeasoner_{locale}.ts"
        translations = read_ts(path)
        write_ts(path, locale, sources, translations)
        missing = [s for s in sources if s not in translations]
        print(f"{path.name}: {len(sources)} strings, {len(missing)} untranslated")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
