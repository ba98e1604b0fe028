"""The wire under the backend client: which Qt network manager a request goes through, QGIS's
authentication on a request, and multipart bodies (client.py builds the requests on these)."""
from __future__ import annotations

import json
import uuid
from typing import List

from qgis.core import QgsApplication, QgsNetworkAccessManager
from qgis.PyQt.QtCore import QCoreApplication, QThread, QUrl
from qgis.PyQt.QtNetwork import QNetworkProxy, QNetworkRequest

from ..core.api import is_loopback_host, parse_error_body

_GUI_LOOPBACK_MANAGER: list = []  # the GUI thread's loopback manager, made once and kept


def network_manager_for(url: str):
    """(manager, made_for_this_call): QGIS's manager for remote addresses; a proxy-free one of our own
    for loopback addresses. The GUI thread keeps one; a worker thread gets a new one per request,
    which the caller deletes in that thread when the request is done (`sip.delete`). Left to Python's
    collector instead, a manager was destroyed with its replies at an arbitrary moment, in whichever
    thread the collection ran."""
    if not is_loopback_host(QUrl(url).host()):
        return QgsNetworkAccessManager.instance(), False
    app = QCoreApplication.instance()
    if app is not None and QThread.currentThread() == app.thread():
        if not _GUI_LOOPBACK_MANAGER:
            _GUI_LOOPBACK_MANAGER.append(_loopback_manager())
        return _GUI_LOOPBACK_MANAGER[0], False
    return _loopback_manager(), True


def _loopback_manager():
    nam = QgsNetworkAccessManager()
    nam.setProxy(QNetworkProxy(QNetworkProxy.ProxyType.NoProxy))
    return nam


def qgis_proxy_in_use() -> bool:
    """Whether QGIS sends its requests through a proxy (Settings > Options > Network)."""
    from qgis.core import QgsSettings

    return bool(QgsSettings().value("proxy/proxyEnabled", False, type=bool))


def apply_auth(request: QNetworkRequest, authcfg: str) -> bool:
    """Let QGIS's authentication manager put the config's credentials on the request."""
    if not authcfg:
        return False
    result = QgsApplication.authManager().updateNetworkRequest(request, authcfg)
    return bool(result[0] if isinstance(result, tuple) else result)


def error_code(body: bytes) -> str:
    """The `code` of an API error body (core/api.py's shape), "" for anything else."""
    try:
        error = parse_error_body(json.loads(body.decode("utf-8")))
    except (UnicodeDecodeError, ValueError):
        return ""
    return error["code"] if error else ""


def multipart_body(fields_: List[tuple]) -> tuple:
    """(content_type, body) of multipart/form-data; fields are (name, filename|None, type, bytes).
    Written out rather than Qt's QHttpMultiPart: that is a QObject bound to one reply, and a task's
    request goes through the standard library (plain_http.py), which needs the bytes."""
    boundary = "georeasoner-" + uuid.uuid4().hex
    chunks = []
    for name, filename, ctype, data in fields_:
        disposition = f'form-data; name="{name}"'
        if filename:
            disposition += f'; filename="{filename}"'
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: {ctype}\r\n\r\n"
                      .encode("utf-8"))
        chunks.append(data)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode("utf-8"))
    return f"multipart/form-data; boundary={boundary}", b"".join(chunks)
