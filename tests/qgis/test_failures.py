"""Backend down, stalled, cancelled mid-answer, killed mid-stream: a message that says what to do,
QGIS stays responsive, and no half-made layers."""
import socket
import threading

import pytest
from qgis.core import QgsProject, QgsRasterLayer

from georeasoner_plugin.gui.dock import GeoReasonerDock
from georeasoner_plugin.qgis_io.client import BackendClient, BackendError

from conftest import Heartbeat, wait_until


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def dock(qgis_iface, naip_path, tmp_path):
    project = QgsProject.instance()
    project.clear()
    layer = QgsRasterLayer(str(naip_path), "naip", "gdal")
    project.addMapLayer(layer)
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(layer.crs())
    canvas.setLayers([layer])
    canvas.setExtent(layer.extent())
    widget = GeoReasonerDock(qgis_iface)
    widget.question.setText("Which lakes could supply irrigation water?")
    yield widget
    widget.asker.cancel()
    wait_until(lambda: not widget.asker.is_busy(), 30)
    widget.deleteLater()



def answer_layer_count():
    return len([lyr for lyr in QgsProject.instance().mapLayers().values()
                if lyr.customProperty("georeasoner/answer_id", "")])


def finish(dock, timeout=120):
    assert wait_until(lambda: not dock.asker.is_busy(), timeout), "the question did not end"


def test_backend_down(dock, settings_for):
    settings_for(None, backend_url=f"http://127.0.0.1:{free_port()}")
    dock.ask()
    finish(dock, 30)
    assert "No GeoReasoner backend answers" in dock.last_message
    assert "serve" in dock.last_message  # says how to start one
    assert answer_layer_count() == 0
    assert dock.ask_button.isEnabled()


def test_backend_stalled_times_out(dock, settings_for):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    port = server.getsockname()[1]
    conns = []
    threading.Thread(target=lambda: conns.append(server.accept()), daemon=True).start()
    settings_for(None, backend_url=f"http://127.0.0.1:{port}", timeout_s=5.0)
    beat = Heartbeat()
    dock.ask()
    finish(dock, 60)
    assert "sent nothing for 5 s" in dock.last_message and "timeout" in dock.last_message
    # The GUI thread kept handling events during the wait (~100 ticks unloaded; a blocked GUI gives 0-1).
    assert beat.ticks > 10
    assert answer_layer_count() == 0
    server.close()


def test_cancel_mid_answer(dock, settings_for, tiny_backend):
    settings_for(tiny_backend)
    tokens = []
    dock.asker.token.connect(tokens.append)
    beat = Heartbeat()
    dock.ask()
    assert wait_until(lambda: len(tokens) >= 3, 120), "no tokens streamed"
    assert dock.reasoning.toPlainText()  # reasoning streams into the dock
    dock.cancel()
    finish(dock, 60)
    assert "Cancelled" in dock.last_message
    assert beat.ticks >= 2  # the GUI thread ran while tokens streamed and the cancel went through
    assert answer_layer_count() == 0
    assert dock.history.count() == 0


def test_backend_killed_mid_stream(dock, settings_for, tiny_backend):
    settings_for(tiny_backend)
    tokens = []
    dock.asker.token.connect(tokens.append)
    dock.ask()
    assert wait_until(lambda: len(tokens) >= 3, 120), "no tokens streamed"
    tiny_backend.kill()
    finish(dock, 60)
    assert "crashed or been stopped" in dock.last_message, dock.last_message
    assert answer_layer_count() == 0


def test_loopback_bypasses_a_configured_proxy(replay_backend):
    from qgis.core import QgsNetworkAccessManager, QgsSettings

    settings = QgsSettings()
    saved = {k: settings.value(k) for k in ("proxy/proxyEnabled", "proxy/proxyType", "proxy/proxyHost",
                                            "proxy/proxyPort")}
    try:
        settings.setValue("proxy/proxyEnabled", True)
        settings.setValue("proxy/proxyType", "HttpProxy")
        settings.setValue("proxy/proxyHost", "127.0.0.1")
        settings.setValue("proxy/proxyPort", str(free_port()))  # nothing listens: a proxy that is down
        QgsNetworkAccessManager.instance().setupDefaultProxyAndCache()
        client = BackendClient(replay_backend.url, replay_backend.token, timeout_s=20)
        assert client.health()["status"] == "ready"
    finally:
        for key, value in saved.items():
            if value is None:
                settings.remove(key)
            else:
                settings.setValue(key, value)
        QgsNetworkAccessManager.instance().setupDefaultProxyAndCache()


def test_which_requests_of_a_task_go_through_the_standard_library():
    """PyQt objects made in several threads at once are not safe (plain_http.py): a task's request
    avoids Qt wherever Qt adds nothing -- plain http with a token (or no authentication) and no
    proxy. https (QGIS's certificate settings) and a proxy keep Qt's stack. Decided without sending
    anything: only 127.0.0.1 may be reached from the tests."""
    import threading

    from qgis.core import QgsSettings

    def decide(clients):
        out = {}
        worker = threading.Thread(target=lambda: out.update(
            {name: client._plain_http(client.base_url + "/v1/info") for name, client in clients.items()}))
        worker.start()
        worker.join(10)
        return out

    def clients():
        return {"loopback": BackendClient("http://127.0.0.1:8765", "t"),
                "remote": BackendClient("http://10.1.2.3:8765", "t"),
                "remote https": BackendClient("https://gpu.example", "t"),
                "remote authcfg": BackendClient("http://10.1.2.3:8765", "", authcfg="abc1234"),
                "loopback authcfg": BackendClient("http://127.0.0.1:8765", "", authcfg="abc1234")}

    assert decide(clients()) == {"loopback": True, "remote": True, "remote https": False, "remote authcfg": False,
                                 "loopback authcfg": False}
    assert not any(c._plain_http(c.base_url + "/v1/info") for c in clients().values())  # the GUI thread: Qt
    settings = QgsSettings()
    saved = settings.value("proxy/proxyEnabled")
    try:
        settings.setValue("proxy/proxyEnabled", True)
        decided = decide(clients())
        assert decided["loopback"] and not decided["remote"]  # a proxy applies to remote addresses only
    finally:
        if saved is None:
            settings.remove("proxy/proxyEnabled")
        else:
            settings.setValue("proxy/proxyEnabled", saved)


def test_wrong_token_message(replay_backend):
    with pytest.raises(BackendError) as info:
        BackendClient(replay_backend.url, "not-the-token", timeout_s=20).info()
    assert info.value.status == 401 and "token" in str(info.value)
