"""QGIS-side tests: run in QGIS's own Python (.venv-qgis) through pytest-qgis, headless.

`make test-qgis` runs them. Under the backend venv (no qgis module) this folder is not collected.
The end-to-end fixtures start a real backend subprocess with the backend venv's Python, exactly
as a user's QGIS does: tiny SAM2 plus the recorded NAIP answer replayed, or tiny models.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

try:
    import qgis.core  # noqa: F401
except ImportError:  # the backend venv runs the rest of the suite; these tests need QGIS's Python
    collect_ignore_glob = ["*"]

from georeasoner_plugin.core.api import HEALTH_PATH, STATE_ERROR, STATE_READY, parse_listening_line  # noqa: E402

SHARED_DATA = Path(os.environ.get("GEOREASONER_SHARED_DATA", ROOT.parent / "shared" / "data"))
NAIP = SHARED_DATA / "naip_nd_2020.tif"
RECORDED = ROOT / "examples" / "naip_lakes_remotereasoner.txt"
BACKEND_PY = Path(os.environ.get("GEOREASONER_BACKEND_PYTHON", ROOT / ".venv-backend" / "bin" / "python"))
TINY_DIR = Path(os.environ.get("GEOREASONER_TINY_DIR", ROOT / ".cache" / "tiny-models"))


@pytest.fixture(scope="session", autouse=True)
def fresh_plugin_data():
    """pytest-qgis keeps its QGIS profile in <repo>/.qgis-settings from run to run; the plugin's
    folder there (the unsaved-projects store, captures, backends) starts empty for every session,
    so one run's answers never slow down or leak into the next."""
    import shutil

    from qgis.core import QgsApplication

    shutil.rmtree(Path(QgsApplication.qgisSettingsDirPath()) / "georeasoner", ignore_errors=True)


@pytest.fixture(scope="session")
def naip_path():
    if not NAIP.is_file():
        pytest.skip(f"sample raster {NAIP} is absent (../shared/data beside the repository)")
    return NAIP


def backend_available() -> str:
    """'' when a backend can be started, else the reason it cannot."""
    if not BACKEND_PY.exists():
        return f"backend venv python {BACKEND_PY} is missing (make setup creates it)"
    return ""


@pytest.fixture(scope="session")
def tiny_models():
    reason = backend_available()
    if reason:
        pytest.skip(reason)
    # `make-tiny` writes models.json (role -> folder) last, so its presence marks a complete build
    # (backend/cli.py TINY_MANIFEST; the Makefile's `tiny` target checks the same file).
    manifest = TINY_DIR / "models.json"
    if not manifest.is_file():
        subprocess.run([str(BACKEND_PY), "-m", "georeasoner_plugin.backend.cli", "make-tiny", str(TINY_DIR)],
                       cwd=ROOT, check=True, capture_output=True, timeout=600)
    roles = json.loads(manifest.read_text(encoding="utf-8"))
    # The folders by name, beside the manifest (the recorded absolute paths may be another checkout's).
    return {role: TINY_DIR / Path(roles[role]).name for role in ("reasoner", "segmenter")}


def _die_with_parent():
    """Linux: the backend gets SIGTERM when the test process dies (a crash must not leak servers)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort
        pass


class Backend:
    """A live backend subprocess (`cli serve`), its URL, token and log."""

    def __init__(self, args, workdir: Path, script: Path = None):
        """`script`: a test-only entry point run instead of the CLI module (same `serve` arguments)."""
        self.token_file = workdir / "token"
        self.log_path = workdir / "backend.log"
        env = dict(os.environ, PYTHONPATH=str(ROOT), GEOREASONER_TOKEN_FILE=str(self.token_file))
        env.pop("QT_QPA_PLATFORM", None)
        self.log = open(self.log_path, "w+", encoding="utf-8")
        self.proc = subprocess.Popen(
            [str(BACKEND_PY), *([str(script)] if script else ["-m", "georeasoner_plugin.backend.cli"]), "serve",
             "--host", "127.0.0.1",
             "--port", "0", "--token-file", str(self.token_file), *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=self.log, text=True, preexec_fn=_die_with_parent)
        self.url = ""
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    break
                continue
            url = parse_listening_line(line)
            if url:
                self.url = url.rstrip("/")
                break
        if not self.url:
            self.stop()
            raise RuntimeError(f"backend did not start; log:\n{self.log_text()}")
        self.wait_ready()
        self.token = self.token_file.read_text().strip()

    def wait_ready(self, timeout=240):
        import urllib.request

        deadline = time.monotonic() + timeout
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while time.monotonic() < deadline:
            try:
                with opener.open(self.url + HEALTH_PATH, timeout=5) as r:
                    status = json.loads(r.read().decode()).get("status")
                if status == STATE_READY:
                    return
                if status == STATE_ERROR:
                    raise RuntimeError(f"backend failed to load; log:\n{self.log_text()}")
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"backend exited; log:\n{self.log_text()}")
            time.sleep(0.3)
        raise RuntimeError("backend not ready in time")

    def log_text(self):
        self.log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self.log.close()


@pytest.fixture(scope="session")
def replay_backend(tiny_models, tmp_path_factory):
    """Tiny SAM2 + the recorded NAIP answer replayed through the real parser and everything after."""
    backend = Backend(["--reasoner-output", str(RECORDED), "--segmenter", str(tiny_models["segmenter"])],
                      tmp_path_factory.mktemp("replay-backend"))
    yield backend
    backend.stop()


@pytest.fixture()
def tiny_backend(tiny_models, tmp_path):
    """Tiny random reasoner and SAM2: streams tokens (nonsense) for cancel/kill tests."""
    backend = Backend(["--reasoner", str(tiny_models["reasoner"]), "--segmenter", str(tiny_models["segmenter"])],
                      tmp_path)
    yield backend
    backend.stop()


@pytest.fixture()
def settings_for(monkeypatch):
    """Point the plugin's settings at a backend (restored after the test)."""
    from georeasoner_plugin.toolbelt.settings import Settings

    saved = Settings.load()

    def apply(backend, **changes):
        values = dict(backend_url=backend.url if backend else "http://127.0.0.1:9",
                      token_file=str(backend.token_file) if backend else "", authcfg="")
        values.update(changes)
        s = Settings.load().replace(**values)
        s.save()
        return s

    yield apply
    saved.save()


class Heartbeat:
    """Counts GUI-thread timer ticks: QGIS stays responsive while something runs."""

    def __init__(self):
        from qgis.PyQt.QtCore import QTimer

        self.ticks = 0
        self.timer = QTimer()
        self.timer.setInterval(50)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self):
        self.ticks += 1


def wait_until(predicate, timeout=120.0):
    from qgis.PyQt.QtCore import QCoreApplication

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        QCoreApplication.processEvents()
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture(scope="session", autouse=True)
def real_message_bar(request):
    """pytest-qgis's interface has a recording stand-in for the message bar; the plugin uses QGIS's
    own QgsMessageBar API (pushItem / popWidget), so give the interface a real one."""
    if "qgis_iface" not in request.fixturenames and not _has_qgis():
        yield None
        return
    iface = request.getfixturevalue("qgis_iface")
    from qgis.gui import QgsMessageBar

    bar = QgsMessageBar(iface.mainWindow())
    iface._messageBar = bar
    yield bar


def _has_qgis() -> bool:
    try:
        import qgis.gui  # noqa: F401
        return True
    except ImportError:
        return False
