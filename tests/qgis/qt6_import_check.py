"""Import every plugin module under PyQt6 with QGIS stubbed (QGIS 4 readiness); run by a test in a
fresh interpreter. Prints OK or the failures."""
import importlib
import re
import sys
import types
from pathlib import Path

ROOT = Path(sys.argv[1])
sys.path.insert(0, str(ROOT))

from PyQt6 import QtCore, QtGui, QtNetwork, QtWidgets  # noqa: E402


class _StubMeta(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _stub(name)


def _stub(name):
    return _StubMeta(name, (), {"__init__": lambda self, *a, **k: None})


def stub_module(name, qt_base=None):
    module = types.ModuleType(name)
    stubs = {}

    def __getattr__(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        if attr not in stubs:
            # classes that the plugin subclasses together with Qt signals need a QObject base
            qobject_bases = ("QgsTask", "QgsProcessingProvider", "QgsOptionsWidgetFactory")
            if attr in qobject_bases:
                stubs[attr] = _StubMeta.__class__(attr, (QtCore.QObject,), {})  # a real QObject subclass
            elif attr in ("QgsOptionsPageWidget",):
                stubs[attr] = type(attr, (QtWidgets.QWidget,), {})
            else:
                stubs[attr] = _stub(attr)
        return stubs[attr]

    module.__getattr__ = __getattr__
    sys.modules[name] = module
    return module


qgis = types.ModuleType("qgis")
qgis.__path__ = []
sys.modules["qgis"] = qgis
pyqt = types.ModuleType("qgis.PyQt")
pyqt.__path__ = []
sys.modules["qgis.PyQt"] = pyqt
for sub, real in (("QtCore", QtCore), ("QtGui", QtGui), ("QtWidgets", QtWidgets), ("QtNetwork", QtNetwork)):
    sys.modules[f"qgis.PyQt.{sub}"] = real
    setattr(pyqt, sub, real)
# qgis.PyQt.QtWidgets.QAction lives in QtGui under Qt6; QGIS 4's qgis.PyQt shim re-exports it
QtWidgets.QAction = QtGui.QAction
for sub in ("core", "gui", "processing", "utils"):
    setattr(qgis, sub, stub_module(f"qgis.{sub}"))

failures = []
package = ROOT / "georeasoner_plugin"
modules = []
for path in sorted(package.rglob("*.py")):
    rel = path.relative_to(ROOT).with_suffix("")
    if "backend" in rel.parts:
        continue  # the torch side never runs inside QGIS
    name = ".".join(rel.parts)
    if name.endswith(".__init__"):
        name = name[: -len(".__init__")]
    modules.append(name)
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001
        failures.append(f"{name}: {type(exc).__name__}: {exc}")

# Every Qt enum the plugin names must exist, scoped, in PyQt6.
qt_classes = {n: getattr(m, n) for m in (QtCore, QtGui, QtWidgets, QtNetwork) for n in dir(m) if n.startswith("Q")}
qt_classes["Qt"] = QtCore.Qt
pattern = re.compile(r"\b(Q[A-Za-z]+|Qt)\.([A-Z][A-Za-z]+)\.([A-Za-z_]+)\b")
for path in sorted(package.rglob("*.py")):
    if "backend" in path.parts:
        continue
    for cls, enum, member in pattern.findall(path.read_text(encoding="utf-8")):
        if cls not in qt_classes:
            continue  # a QGIS class (Qgs*, Qgis): checked by the real QGIS tests
        try:
            getattr(getattr(qt_classes[cls], enum), member)
        except AttributeError:
            failures.append(f"{path.name}: {cls}.{enum}.{member} is not in PyQt6")
    text = path.read_text(encoding="utf-8")
    if re.search(r"\.exec_\(", text):
        failures.append(f"{path.name}: exec_() (use exec())")
    if re.search(r"^\s*(from|import) PyQt5", text, re.M):
        failures.append(f"{path.name}: imports PyQt5 directly (use qgis.PyQt)")

print(f"modules: {len(modules)}")
print("OK" if not failures else "FAILURES\n" + "\n".join(failures))
