"""The set-up panel in real QGIS: first open, install failures (pip failure, no network, cancel) with
a real venv and a real pip, Remove backend, the first question answered through auto-start without
touching Options, the demo, a backend crash and Restart, a GPU server with a wrong token, an
unreachable one, and a version mismatch. QGIS stays responsive, every message says what to do, and
nothing is marked ready that is not."""
import json
import os
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer

from georeasoner_plugin.gui.dock import GeoReasonerDock
from georeasoner_plugin.plugin import GeoReasonerPlugin
from georeasoner_plugin.qgis_io import setup_config
from georeasoner_plugin.qgis_io.install_task import ABSENT, BROKEN, install_state
from georeasoner_plugin.qgis_io.installer import READY_MARKER
from georeasoner_plugin.qgis_io.local_backend import LocalBackend
from georeasoner_plugin.toolbelt.settings import Settings

from conftest import BACKEND_PY, TINY_DIR, Heartbeat, wait_until
from tests.hub_standin import StandInHub

SHOTS = os.environ.get("GEOREASONER_SHOTS", "")  # folder: save a picture of each panel (README)
SETUP_KEYS = ("mode", "torch_index_url", "hub_authcfg")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """GEOREASONER_HOME for the module: one venv is made once and repaired by the later tests."""
    path = tmp_path_factory.mktemp("georeasoner-home")
    old = os.environ.get("GEOREASONER_HOME")
    os.environ["GEOREASONER_HOME"] = str(path)
    yield path
    if old is None:
        os.environ.pop("GEOREASONER_HOME", None)
    else:
        os.environ["GEOREASONER_HOME"] = old


@pytest.fixture()
def clean_settings(home):
    saved = Settings.load()
    saved_setup = {k: setup_config.get(k) for k in SETUP_KEYS}
    Settings().save()  # defaults: no backend configured
    for k in SETUP_KEYS:
        setup_config.put(k, "")
    yield
    saved.save()
    for k, v in saved_setup.items():
        setup_config.put(k, v)


@pytest.fixture()
def plugin(qgis_iface, clean_settings, naip_path, tmp_path):
    project = QgsProject.instance()
    project.clear()
    layer = QgsRasterLayer(str(naip_path), "naip", "gdal")
    project.addMapLayer(layer)
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(layer.crs())
    canvas.setLayers([layer])
    canvas.setExtent(layer.extent())
    p = GeoReasonerPlugin(qgis_iface)
    p.local_backend = LocalBackend()
    p.dock = GeoReasonerDock(qgis_iface)
    p.dock.asker.store_path_override = tmp_path / "answers.gpkg"
    p._add_setup_panel()  # what initGui does
    p.dock.resize(520, 900)
    yield p
    p.starter.stop()
    if p.setup_panel.task is not None:
        p.setup_panel.cancel_install()
        wait_until(lambda: p.setup_panel.task is None, 60)
    p.dock.deleteLater()


def shot(widget, name):
    """A picture of the whole dock holding the panel (`make screenshot-setup` runs these tests under Xvfb)."""
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        window = widget.window()
        window.resize(600, 1050)
        window.show()
        wait_until(lambda: False, 0.5)
        window.grab().save(str(Path(SHOTS) / f"{name}.png"))


def run_install(panel, timeout=300):
    beat = Heartbeat()
    panel.install()
    assert panel.busy()
    assert wait_until(lambda: panel.task is None, timeout), "the install task did not end"
    return beat.ticks


def assert_not_ready(panel):
    plan = panel.plan()
    assert not (plan.venv / READY_MARKER).exists()
    assert install_state(plan) in (ABSENT, BROKEN)
    assert Settings.load().python_path == "" and setup_config.mode() == ""
    assert not panel.configured()


def offline_pip(tmp_path, **extra):
    """pip with no configuration files (this machine's point at local wheel folders) and no retries."""
    env = {"PIP_CONFIG_FILE": os.devnull, "PIP_RETRIES": "0", "PIP_TIMEOUT": "5", "PIP_FIND_LINKS": "",
           "PIP_EXTRA_INDEX_URL": "", "PIP_CONSTRAINT": ""}
    env.update(extra)
    return env


def test_first_open_offers_the_three_choices(plugin):
    panel = plugin.setup_panel
    assert "No backend yet" in panel.state.text()
    assert panel.body.isVisibleTo(panel) and panel.toggle.isChecked()
    texts = [b.text() for b in panel.mode_buttons.buttons()]
    assert texts == ["Install a local backend", "Connect to a GPU server", "Try it without a GPU (demo)"]
    assert "free" in panel.detected.text() and ("GPU" in panel.detected.text())
    plan_text = panel.plan_label.text()
    assert "python3" in plan_text and "GB" in plan_text and "RemoteReasoner 16.6 GB" in plan_text
    assert panel.models.table.rowCount() >= 8
    row = [panel.models.table.item(0, c).text() for c in range(6)]
    assert row[1] == "1e12Leon/RemoteReasoner" and row[2] == "16.6 GB" and row[3] == "19.0 GB"
    assert row[4] in ("no GPU", "yes", "no")
    assert "No backend yet" in plugin.dock.status.text()  # not "Ready." with nothing to ask
    shot(panel, "setup-local")
    panel.mode_buttons.button(1).click()
    shot(panel, "setup-server")
    panel.mode_buttons.button(2).click()
    shot(panel, "setup-demo")


def test_pip_failure_stops_with_the_pip_line_and_advice(plugin, tmp_path):
    panel = plugin.setup_panel
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    panel.requirements_override = ["georeasoner-no-such-package==0.0.1"]
    panel.install_env = offline_pip(tmp_path, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels))
    ticks = run_install(panel, 180)
    assert ticks > 5, "QGIS was not responsive during the install"
    message = panel.state.text()
    assert "installing the backend requirements failed" in message
    assert "-m pip install" in message and "-r" in message  # the pip line that failed
    assert "no build" in message  # what to try
    assert "No matching distribution" in panel.log.toPlainText()
    assert panel.plan().python.exists()  # the venv was really made
    assert_not_ready(panel)
    assert panel.install_button.text() == "Repair"
    shot(panel, "setup-install-failed")


def test_no_network_during_install(plugin, tmp_path):
    panel = plugin.setup_panel
    panel.requirements_override = ["tqdm==4.70.1"]
    port = free_port()  # nothing listens there: the index cannot be reached
    # one retry: pip names the connection error only when it retries
    panel.install_env = offline_pip(tmp_path, PIP_INDEX_URL=f"http://127.0.0.1:{port}/simple", PIP_RETRIES="1")
    ticks = run_install(panel, 180)
    assert ticks > 5
    assert "could not reach the package index" in panel.state.text(), panel.state.text()
    assert "repairing" in panel.log.toPlainText()  # the second run reuses the venv
    assert_not_ready(panel)


class SlowIndex:
    """A package index that accepts the connection and never answers (pip waits on it)."""

    def __init__(self):
        self.release = threading.Event()
        index = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                index.release.wait(60)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_cancel_during_install(plugin, tmp_path):
    panel = plugin.setup_panel
    index = SlowIndex()
    try:
        panel.requirements_override = ["tqdm==4.70.1"]
        panel.install_env = offline_pip(tmp_path, PIP_INDEX_URL=index.url, PIP_TIMEOUT="60")
        beat = Heartbeat()
        panel.install()
        assert wait_until(lambda: "-m pip install" in panel.log.toPlainText(), 120)
        started = time.monotonic()
        wait_until(lambda: False, 1.0)  # pip is now waiting on the index
        panel.cancel_install()
        assert wait_until(lambda: panel.task is None, 60), "cancel did not stop the install"
        assert time.monotonic() - started < 30
        assert beat.ticks > 10
        assert "Cancelled" in panel.state.text() and "Install again" in panel.state.text()
        assert_not_ready(panel)
    finally:
        index.stop()


def test_remove_backend(plugin):
    panel = plugin.setup_panel
    plan = panel.plan()
    plan.venv.mkdir(parents=True, exist_ok=True)  # what the failed installs above left (or a fresh one)
    panel.refresh_state()
    assert panel.remove_button.isEnabled()
    panel.remove()
    assert wait_until(lambda: panel.remove_task is None, 120)
    assert not plan.venv.exists()
    assert "removed" in panel.state.text() and "No backend yet" in panel.state.text()
    assert panel.install_button.text() == "Install"


def use_existing_backend(tiny_models):
    """An already installed backend (the test machine's backend venv) with the tiny models chosen."""
    Settings.load().replace(python_path=str(BACKEND_PY), token_file="", authcfg="").save()
    setup_config.put("mode", setup_config.MODE_LOCAL)


def test_first_question_answered_through_autostart(plugin, tiny_models):
    panel, dock = plugin.setup_panel, plugin.dock
    use_existing_backend(tiny_models)
    Settings.load().replace(reasoner_output="").save()
    panel.models.choose_folder(str(tiny_models["reasoner"]))
    panel.models.choose_folder(str(tiny_models["segmenter"]))
    s = Settings.load()
    assert s.reasoner == str(tiny_models["reasoner"]) and s.segmenter == str(tiny_models["segmenter"])
    panel.refresh_state()
    assert "starts on your first question" in panel.state.text()
    panel.doctor.run()  # georeasoner doctor, as the Options page shows it too
    assert wait_until(lambda: panel.doctor.button.isEnabled(), 120)
    assert panel.doctor.summary.text() == "All good.", panel.doctor.report.toPlainText()
    assert "torch" in panel.doctor.report.toPlainText()
    states = []
    plugin.starter.state_changed.connect(lambda phase, msg: states.append((phase, msg)))
    beat = Heartbeat()
    dock.question.setText("Which lakes could supply irrigation water?")
    dock.ask()
    assert not dock.asker.is_busy()  # waiting for the backend, not asking yet
    assert wait_until(lambda: plugin.starter.phase == "ready", 240), states
    assert wait_until(lambda: not dock.asker.is_busy() and "object(s) found" in dock.last_message or
                      "could not be read" in dock.last_message or "Backend error" in dock.last_message, 240)
    phases = [p for p, _ in states]
    assert phases[0] == "checking" and "starting" in phases and phases[-1] == "ready"
    assert any(msg.startswith("Loading models (") for p, msg in states if p == "loading")
    assert beat.ticks > 10
    assert plugin.local_backend.is_running()
    assert Settings.load().backend_url == plugin.local_backend.url
    # tiny random models answer nonsense, but the question went through the started backend
    assert dock.reasoning.toPlainText() or dock.last_message


def test_demo_answers_and_a_crash_offers_restart(plugin, tiny_models):
    panel, dock = plugin.setup_panel, plugin.dock
    use_existing_backend(tiny_models)
    tiny = setup_config.work_dir() / "tiny-models"
    if not tiny.exists():
        tiny.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(TINY_DIR, tiny, symlinks=True)
    # the recorded answer is the NAIP image's: ask about that raster read at native resolution
    dock.source.setCurrentIndex(dock.source.findData("raster"))
    dock.raster.setLayer(QgsProject.instance().mapLayersByName("naip")[0])
    panel.mode_buttons.button(2).click()
    panel.start_demo()
    assert setup_config.mode() == setup_config.MODE_DEMO
    assert wait_until(lambda: plugin.starter.phase == "ready", 240), panel.state.text()
    assert "DEMO" in panel.state.text()
    shot(panel, "setup-demo-ready")
    dock.question.setText("Which lakes could supply irrigation water?")
    dock.ask()
    assert wait_until(lambda: not dock.asker.is_busy() and "object(s) found" in dock.last_message, 240), \
        dock.last_message
    assert not dock.last_message.startswith("0 ")

    beat = Heartbeat()
    plugin.local_backend.process.kill()  # the backend dies after start
    assert wait_until(lambda: plugin.starter.phase == "crashed", 30)
    assert panel.crash.isVisibleTo(panel) and panel.restart_button.isEnabled()
    assert "exited with code" in panel.crash_log.toPlainText() or panel.crash_log.toPlainText()
    assert "Restart" in panel.state.text()
    assert beat.ticks > 0
    assert plugin.starter.phase != "ready"  # not marked ready
    shot(panel, "setup-crashed")
    panel.restart()
    assert wait_until(lambda: plugin.starter.phase == "ready", 240), panel.state.text()
    assert not panel.crash.isVisibleTo(panel)


def test_gpu_server_wrong_token_then_right_one(plugin, replay_backend):
    panel = plugin.setup_panel
    panel.mode_buttons.button(1).click()
    panel.server_url.setText(replay_backend.url)
    panel.server_token.setText("not-the-token")
    beat = Heartbeat()
    panel.use_server()
    assert "Wrong token" in panel.server_result.text() and "token file" in panel.server_result.text()
    assert setup_config.mode() == "" and Settings.load().authcfg == ""
    panel.server_token.setText(replay_backend.token)
    assert panel.test_connection(), panel.server_result.text()
    text = panel.server_result.text()
    assert text.startswith("Connected") and "segmenter" in text and "remotereasoner" in text
    shot(panel, "setup-server-connected")
    # "Use this server" keeps the token in QGIS's authentication manager (its master password set here,
    # as a user types it when QGIS asks)
    manager = QgsApplication.authManager()
    if not manager.masterPasswordIsSet() and not manager.setMasterPassword("georeasoner-tests", True):
        pytest.skip("this profile's authentication database has another master password")
    panel.use_server()
    s = Settings.load()
    assert setup_config.mode() == setup_config.MODE_REMOTE and s.backend_url == replay_backend.url
    assert s.authcfg and setup_config.read_auth_token(s.authcfg) == replay_backend.token
    assert "Using the GPU server" in panel.state.text()
    dock = plugin.dock
    dock.source.setCurrentIndex(dock.source.findData("raster"))
    dock.raster.setLayer(QgsProject.instance().mapLayersByName("naip")[0])
    dock.question.setText("Which lakes could supply irrigation water?")
    dock.ask()  # a GPU server is not started by the plugin: the question goes straight out
    assert dock.asker.is_busy()
    assert wait_until(lambda: not dock.asker.is_busy(), 240)
    assert "object(s) found" in dock.last_message, dock.last_message
    assert beat.ticks > 0


def test_gpu_server_unreachable(plugin):
    panel = plugin.setup_panel
    panel.server_url.setText(f"http://127.0.0.1:{free_port()}")
    assert not panel.test_connection()
    assert panel.server_result.text().startswith("Server unreachable")
    assert setup_config.mode() == ""


class OtherRelease:
    """A backend of another release: health is fine, /v1/info names protocol 999."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = {"/v1/health": {"status": "ready", "detail": "", "version": "9.0"},
                        "/v1/info": {"version": "9.0", "protocol_version": 999, "models": {}, "profiles": []}
                        }.get(self.path, {})
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def test_version_mismatch_is_explained(plugin):
    other = OtherRelease()
    try:
        panel = plugin.setup_panel
        panel.server_url.setText(other.url)
        panel.server_token.setText("x")
        panel.use_server()
        assert "Version mismatch" in panel.server_result.text() and "999" in panel.server_result.text()
        assert setup_config.mode() == ""
    finally:
        other.server.shutdown()


def test_model_picker_downloads_with_progress_and_cancel(plugin, tiny_models, tmp_path, monkeypatch):
    """The tiny SAM2 served as facebook/sam2.1-hiera-large by a stand-in hub (HF_ENDPOINT), standing in
    for the real download."""
    picker = plugin.setup_panel.models
    use_existing_backend(tiny_models)
    hub = StandInHub({"facebook/sam2.1-hiera-large": tiny_models["segmenter"]}).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        picker.select_repo("facebook/sam2.1-hiera-large")
        hub.throttle_bps = 100_000  # ~15 s for the 1.4 MB weights: time to press Cancel
        beat = Heartbeat()
        picker.download_selected()
        assert picker.is_busy()
        assert wait_until(lambda: picker.progress.maximum() == 1000 and picker.progress.value() > 0, 120)
        picker.cancel()
        assert wait_until(lambda: not picker.is_busy(), 60)
        assert "cancelled" in picker.status.text() and "resumes" in picker.status.text()
        assert Settings.load().segmenter == ""  # nothing chosen that is not there
        hub.throttle_bps = None
        values = []
        picker.progress.valueChanged.connect(values.append)
        picker.download_selected()
        assert wait_until(lambda: not picker.is_busy(), 120)
        assert "is downloaded" in picker.status.text(), picker.status.text()
        assert values and values[-1] == 1000
        assert Settings.load().segmenter == "facebook/sam2.1-hiera-large"
        assert beat.ticks > 10
        assert list((tmp_path / "hub-cache").rglob("model.safetensors"))
    finally:
        hub.stop()


def test_model_missing_is_said_before_starting(plugin, tiny_models, tmp_path):
    panel, dock = plugin.setup_panel, plugin.dock
    use_existing_backend(tiny_models)
    Settings.load().replace(reasoner=str(tmp_path / "not-copied-yet"), segmenter=str(tiny_models["segmenter"]),
                            reasoner_output="").save()
    dock.question.setText("Which lakes could supply irrigation water?")
    dock.ask()
    assert wait_until(lambda: plugin.starter.phase == "failed", 120), panel.state.text()
    message = panel.state.text()
    assert message.startswith("Model missing") and "folder" in message
    assert dock.status.text() == message
    assert not plugin.local_backend.is_running() and not dock.asker.is_busy()
    assert panel.body.isVisibleTo(panel)  # the panel opens where the fix is


def test_every_backend_state_says_what_to_do():
    from georeasoner_plugin.core.protocol import PROTOCOL_VERSION
    from georeasoner_plugin.qgis_io.autostart import advice_for_health_error, advice_for_problem, protocol_problem

    oom = advice_for_health_error("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert oom.startswith("Out of GPU memory") and "smaller checkpoint" in oom and "GPU server" in oom
    missing = advice_for_health_error("The model '1e12Leon/RemoteReasoner' ... is not in the local cache while ...")
    assert missing.startswith("Model missing") and "download" in missing
    other = advice_for_health_error("something odd")
    assert "something odd" in other and "Restart" in other
    assert protocol_problem({"protocol_version": PROTOCOL_VERSION}) == ""
    assert "Version mismatch" in protocol_problem({"protocol_version": PROTOCOL_VERSION + 1})
    assert advice_for_problem("gpu_memory", "close things").startswith("Not enough GPU memory: close things")
