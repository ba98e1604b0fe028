"""HTTP client for the GeoReasoner backend, over QGIS's network stack.

Requests go through a QgsNetworkAccessManager, so QGIS's SSL settings (and its proxy settings, for
remote backends) apply. A backend on a loopback address never goes through a proxy: its requests
use a private QgsNetworkAccessManager with the proxy switched off.

Everything here is synchronous and meant to run inside a QgsTask (or a Processing algorithm):
each call spins a local event loop, honours an inactivity timeout and a cancel check, and turns
every failure into a BackendError whose message says how to fix it.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from qgis.PyQt.QtCore import QByteArray, QCoreApplication, QEvent, QEventLoop, QThread, QTimer, QUrl
from qgis.PyQt.QtNetwork import QNetworkReply, QNetworkRequest

from ..core.api import (ASK_FIELDS, ASK_STREAM_PATH, CODE_IMAGE_NOT_CACHED, EVENT_ANSWER, EVENT_ERROR, HEALTH_PATH,
                        IMAGE_PART, INFO_PATH, NDJSON_MEDIA_TYPE, REQUEST_PART, SEGMENT_PATH, QuestionError,
                        check_question, image_key, is_loopback_host, parse_error_body)
from ..core.protocol import Answer, ProtocolError
from ..toolbelt.i18n import tr
from ..toolbelt.settings import Settings
from .wire import apply_auth, error_code, multipart_body, network_manager_for, qgis_proxy_in_use

_PENDING: set = set()
START_HINT = ("Start one from Settings > Options > GeoReasoner (Local backend > Start), or in a shell: "
              "georeasoner serve")


class BackendError(Exception):
    """A failed backend call; str() is a message for the analyst (what happened, what to do)."""

    def __init__(self, message: str, kind: str = "error", status: int = 0):
        super().__init__(message)
        self.kind = kind  # down | timeout | cancelled | closed | http | protocol | auth | invalid
        self.status = status


class Cancelled(BackendError):
    def __init__(self):
        super().__init__(tr("Cancelled."), "cancelled")


@dataclass
class AskRequest:
    question: str
    image_bytes: bytes  # PNG, TIFF or WebP (image_encode.encode_image; image_name/type say which)
    profile: str = ""
    # Defaults (and the server's limits) are the contract's: core/api.py ASK_FIELDS.
    outputs: List[str] = field(default_factory=lambda: list(ASK_FIELDS["outputs"][0]))
    max_new_tokens: int = ASK_FIELDS["max_new_tokens"][0]
    temperature: float = ASK_FIELDS["temperature"][0]
    top_p: float = ASK_FIELDS["top_p"][0]
    seed: Optional[int] = None
    simplify_tolerance: float = ASK_FIELDS["simplify_tolerance"][0]
    min_area: float = ASK_FIELDS["min_area"][0]
    image_name: str = "capture.png"
    image_type: str = "image/png"
    image_path: str = ""  # core/transport.py "path": a capture in the backend's shared folder, no upload

    def request_json(self) -> Dict:
        """The JSON of the request part; BackendError when the question breaks the contract's rule."""
        try:
            question = check_question(self.question)
        except QuestionError as exc:
            raise BackendError(str(exc), "invalid") from None
        body = {"question": question, "outputs": list(self.outputs),
                "max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "simplify_tolerance": self.simplify_tolerance, "min_area": self.min_area}
        if self.profile:
            body["profile"] = self.profile
        if self.seed is not None:
            body["seed"] = self.seed
        if self.image_path:
            body["image_path"] = self.image_path
        return body


def read_token(settings: Settings) -> str:
    """The bearer token of a token file: the one in the settings, else GEOREASONER_TOKEN_FILE, else the
    local backend's default (core/api.py's rule). (A token in an authentication config is applied to
    each request by QGIS's authentication manager instead, see BackendClient.authcfg.)"""
    try:
        return settings.token_path().read_text(encoding="utf-8").strip()
    except OSError:
        return ""


class BackendClient:
    def __init__(self, base_url: str, token: str = "", timeout_s: float = 120.0, connect_timeout_s: float = 10.0,
                 is_cancelled: Optional[Callable[[], bool]] = None, authcfg: str = ""):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.authcfg = authcfg
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.is_cancelled = is_cancelled or (lambda: False)
        # Read here (a client is made in the GUI thread): a remote backend is reached directly unless
        # QGIS goes through a proxy, which only Qt's stack (QgsNetworkAccessManager) applies.
        self._direct = is_loopback_host(QUrl(self.base_url).host()) or not qgis_proxy_in_use()

    @classmethod
    def from_settings(cls, settings: Optional[Settings] = None, url: str = "", authcfg: Optional[str] = None,
                      **kwargs) -> "BackendClient":
        """A client for the settings' backend (or `url`); the token from the authentication config
        (`authcfg`, default the settings') when one is set, else from the token file."""
        settings = settings or Settings.load()
        authcfg = settings.authcfg if authcfg is None else authcfg
        token = "" if authcfg else read_token(settings)
        return cls(url or settings.backend_url, token, settings.timeout_s, settings.connect_timeout_s,
                   authcfg=authcfg, **kwargs)

    # -- public calls -------------------------------------------------------------------------
    def health(self) -> Dict:
        status, body = self._request("GET", HEALTH_PATH, timeout_s=self.connect_timeout_s)
        return self._json(status, body)

    def info(self) -> Dict:
        status, body = self._request("GET", INFO_PATH, timeout_s=self.connect_timeout_s)
        return self._json(status, body)

    def ask_stream(self, request: AskRequest, on_event: Callable[[Dict], None]) -> Answer:
        """POST /v1/ask/stream (the only ask the plugin makes: it shows progress); on_event gets every
        event but the final one (queued, stage, token; core/api.py) as it arrives."""
        ctype, body = self._ask_body(request)
        buffer = bytearray()
        result: Dict = {}

        def on_data(chunk: bytes) -> None:
            buffer.extend(chunk)
            while b"\n" in buffer:
                line, _, rest = bytes(buffer).partition(b"\n")
                buffer[:] = rest
                self._stream_line(line, on_event, result)

        status, data = self._request("POST", ASK_STREAM_PATH, body=body, content_type=ctype, on_data=on_data,
                                     stream=True)
        if status != 200:
            return self._answer(self._json(status, data))  # raises with the server's message
        if buffer.strip():
            self._stream_line(bytes(buffer), on_event, result)
        if EVENT_ANSWER in result:
            return self._answer(result[EVENT_ANSWER])
        if EVENT_ERROR in result:
            err = result[EVENT_ERROR]
            raise self._http_error(int(err.get("status") or 500), str(err.get("message") or ""))
        raise BackendError(tr("The backend closed the answer stream before answering: it may have crashed or "
                              "been stopped. Look at its log (Options > GeoReasoner > Local backend log), then "
                              "start it again."), "closed")

    def segment(self, image_png: bytes, objects: List[Dict], simplify_tolerance: float = 0.0,
                min_area: float = 0.0, image_held: bool = False) -> Dict:
        """POST /v1/segment: per object {"box", "points", "labels"} in image pixels -> masks, polygons.

        image_held: the backend was sent this image before, so only its key goes (no upload); when the
        backend no longer holds it (restarted, or newer images took its place), the image is sent."""
        body = {"objects": objects, "simplify_tolerance": simplify_tolerance, "min_area": min_area,
                "image_key": image_key(image_png)}
        parts = [(REQUEST_PART, None, "application/json", json.dumps(body).encode("utf-8"))]
        if image_held:
            ctype, data = multipart_body(parts)
            status, reply = self._request("POST", SEGMENT_PATH, body=data, content_type=ctype)
            if status != 409 or error_code(reply) != CODE_IMAGE_NOT_CACHED:
                return self._json(status, reply)
        ctype, data = multipart_body(parts + [(IMAGE_PART, "capture.png", "image/png", image_png)])
        status, reply = self._request("POST", SEGMENT_PATH, body=data, content_type=ctype)
        return self._json(status, reply)

    def get_async(self, path: str, callback: Callable[[Optional[Dict], str], None], receiver=None):
        """GUI thread, never blocks: GET `path`, then callback(json, "") or callback(None, message);
        nothing is called when `receiver` (the widget that asked) is gone by then."""
        url = self.base_url + path
        nam, _ = network_manager_for(url)  # a manager made for this call stays referenced by `keep`
        request = QNetworkRequest(QUrl(url))
        request.setTransferTimeout(int(self.connect_timeout_s * 1000))
        try:
            if self.token:
                request.setRawHeader(b"Authorization", f"Bearer {self.token}".encode("utf-8"))
            elif self.authcfg:
                apply_auth(request, self.authcfg)
        except BackendError:
            pass
        reply = nam.get(request)

        def finished():
            status = reply.attribute(QNetworkRequest.Attribute.HttpStatusCodeAttribute)
            data = bytes(reply.readAll())
            error = reply.errorString()
            reply.deleteLater()
            _PENDING.discard(keep)
            if not status:
                result = (None, tr("No GeoReasoner backend answers at {0} ({1}). ").format(self.base_url, error)
                          + tr(START_HINT))
            else:
                try:
                    result = (self._json(int(status), data), "")
                except BackendError as exc:
                    result = (None, str(exc))
            try:
                callback(*result)
            except RuntimeError:  # the widget that asked (`receiver`) was closed meanwhile
                if receiver is None:
                    raise

        keep = (nam, reply, finished)
        _PENDING.add(keep)  # the manager, the reply and the slot live until the reply finishes
        reply.finished.connect(finished)
        return reply

    # -- internals ----------------------------------------------------------------------------
    def _ask_body(self, request: AskRequest):
        parts = [(REQUEST_PART, None, "application/json", json.dumps(request.request_json()).encode("utf-8"))]
        if not request.image_path:
            parts.append((IMAGE_PART, request.image_name, request.image_type, request.image_bytes))
        return multipart_body(parts)

    def _stream_line(self, line: bytes, on_event, result: Dict) -> None:
        line = line.strip()
        if not line:
            return
        try:
            event = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise BackendError(tr("The backend sent a stream line that is not JSON; are the plugin and the "
                                  "backend the same version?"), "protocol") from None
        kind = event.get("event")
        if kind == EVENT_ANSWER:
            result[EVENT_ANSWER] = event.get("answer")
        elif kind == EVENT_ERROR:
            result[EVENT_ERROR] = event
        else:
            on_event(event)

    def _answer(self, data) -> Answer:
        try:
            return Answer.from_dict(data)
        except ProtocolError as exc:
            raise BackendError(tr("The backend's answer does not follow the answer protocol: {0}").format(exc),
                               "protocol") from None

    def _json(self, status: int, body: bytes) -> Dict:
        try:
            data = json.loads(body.decode("utf-8")) if body else {}
        except (UnicodeDecodeError, ValueError):
            data = None
        if status == 200 and isinstance(data, dict):
            return data
        if status == 200:
            raise BackendError(tr("The backend answered with something that is not JSON."), "protocol", status)
        error = parse_error_body(data)
        raise self._http_error(status, error["message"] if error else "")

    def _http_error(self, status: int, message: str) -> BackendError:
        hints = {
            401: tr("The backend refused the token. Set the token in Options > GeoReasoner (a local backend's "
                    "token file, whose path the backend prints when it starts, or an authentication config)."),
            403: tr("The backend refused the request (its host check). Use the address it printed."),
            413: tr("The image is too large for the backend. Lower the capture size in Options > GeoReasoner."),
            415: tr("The backend cannot read the captured image format."),
            429: tr("The backend is busy with other questions; try again in a moment."),
            503: tr("The backend is not ready (models still loading, or they failed to load). Wait, or look "
                    "at its log."),
            504: tr("The backend timed out answering. Try a smaller capture or a lighter model."),
        }
        hint = hints.get(status, tr("Look at the backend's log."))
        kind = "auth" if status in (401, 403) else "http"
        if status == 401:  # the hint says it all; the server's own text would say it a second time
            return BackendError(tr("Backend error 401:") + " " + hint, kind, status)
        text = tr("Backend error {0}: {1}").format(status, message or "-") + " " + hint
        return BackendError(text, kind, status)

    def _plain_http(self, url: str) -> bool:
        """A worker thread asking a backend over plain http, with a token or no authentication, and no
        proxy in the way: the standard library (plain_http.py says why), not Qt's network stack.
        https stays with Qt: QGIS's certificate settings and SSL exceptions apply there only."""
        app = QCoreApplication.instance()
        qurl = QUrl(url)
        return (app is not None and QThread.currentThread() != app.thread() and qurl.scheme() == "http"
                and self._direct and (bool(self.token) or not self.authcfg))

    def _request_plain(self, url, method, body, content_type, timeout, on_data, stream):
        from . import plain_http

        headers = {"Accept": NDJSON_MEDIA_TYPE if stream else "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if content_type:
            headers["Content-Type"] = content_type
        try:
            return plain_http.request(url, method, body or b"", headers, timeout_s=timeout,
                                      connect_timeout_s=self.connect_timeout_s, is_cancelled=self.is_cancelled,
                                      on_data=on_data)
        except plain_http.Stopped:
            raise Cancelled() from None
        except plain_http.Stalled:
            raise self._stalled(timeout) from None
        except plain_http.Refused:
            raise self._down() from None
        except plain_http.Lost as exc:
            raise (self._closed_mid_answer() if stream and exc.answered else self._lost(str(exc))) from None

    def _request(self, method: str, path: str, body: Optional[bytes] = None, content_type: str = "",
                 timeout_s: Optional[float] = None, on_data: Optional[Callable[[bytes], None]] = None,
                 stream: bool = False):
        """(status, body) of one request; raises BackendError for transport failures."""
        url = self.base_url + path
        timeout = float(timeout_s if timeout_s is not None else self.timeout_s)
        if self._plain_http(url):
            return self._request_plain(url, method, body, content_type, timeout, on_data, stream)
        request = QNetworkRequest(QUrl(url))
        request.setRawHeader(b"Accept", NDJSON_MEDIA_TYPE.encode("ascii") if stream else b"application/json")
        request.setAttribute(QNetworkRequest.Attribute.RedirectPolicyAttribute,
                             QNetworkRequest.RedirectPolicy.NoLessSafeRedirectPolicy)
        if self.token:
            request.setRawHeader(b"Authorization", f"Bearer {self.token}".encode("utf-8"))
        elif self.authcfg and not apply_auth(request, self.authcfg):
            raise BackendError(tr("The authentication config {0} (Options > GeoReasoner > Token) cannot be "
                                  "used: it is missing or the master password was not given.").format(self.authcfg),
                               "auth")
        if content_type:
            request.setHeader(QNetworkRequest.KnownHeaders.ContentTypeHeader, content_type)
        nam, own_manager = network_manager_for(url)
        if method == "GET":
            reply = nam.get(request)
        else:
            reply = nam.post(request, QByteArray(body or b""))

        loop = QEventLoop()
        received = bytearray()
        state = {"last": time.monotonic(), "why": "", "error": None}

        def read_ready():
            try:
                chunk = bytes(reply.readAll())
            except RuntimeError:  # a late signal of a reply already deleted: nothing left to read
                return
            if not chunk:
                return
            state["last"] = time.monotonic()
            status = reply.attribute(QNetworkRequest.Attribute.HttpStatusCodeAttribute)
            if on_data is not None and status == 200:
                try:
                    on_data(chunk)
                except BackendError as exc:
                    state["error"] = exc
                    reply.abort()
            else:
                received.extend(chunk)

        def tick():
            why = "cancelled" if self.is_cancelled() else \
                "timeout" if time.monotonic() - state["last"] > timeout else ""
            if why:
                state["why"] = why
                try:
                    reply.abort()
                except RuntimeError:  # already finished and gone: the loop below ends anyway
                    loop.quit()

        reply.readyRead.connect(read_ready)
        reply.finished.connect(loop.quit)
        timer = QTimer()
        timer.setInterval(100)
        timer.timeout.connect(tick)
        timer.start()
        if not reply.isFinished():
            loop.exec()
        timer.stop()
        read_ready()
        try:
            status = reply.attribute(QNetworkRequest.Attribute.HttpStatusCodeAttribute)
            error = reply.error()
            error_text = reply.errorString()
        except RuntimeError:  # the reply object is gone already (seen once in a while after an abort)
            status, error, error_text = None, QNetworkReply.NetworkError.OperationCanceledError, "reply deleted"
        try:  # no late readyRead may reach read_ready once the reply is gone (it would abort QGIS)
            reply.readyRead.disconnect(read_ready)
            reply.finished.disconnect(loop.quit)
        except (TypeError, RuntimeError):
            pass
        if own_manager:
            from qgis.PyQt import sip

            sip.delete(nam)  # here, in this thread, with its reply
            # and this thread's deferred deletes (all ours) now, not during a later request's loop
            QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        else:
            try:
                reply.deleteLater()
            except RuntimeError:
                pass
        if state["error"] is not None:
            raise state["error"]
        if state["why"] == "cancelled":
            raise Cancelled()
        if state["why"] == "timeout":
            raise self._stalled(timeout)
        if status is None or int(status) == 0:
            refused = (QNetworkReply.NetworkError.ConnectionRefusedError, QNetworkReply.NetworkError.HostNotFoundError)
            raise self._down() if error in refused else self._lost(error_text)
        if error in (QNetworkReply.NetworkError.RemoteHostClosedError,) and stream:
            raise self._closed_mid_answer()
        return int(status), bytes(received)

    # The transport failures, worded once for both paths.
    def _stalled(self, timeout: float) -> BackendError:
        return BackendError(tr("The backend at {0} sent nothing for {1:.0f} s: it is stalled or too slow for "
                               "this request. Raise the timeout in Options > GeoReasoner, or use a smaller "
                               "capture or a lighter model.").format(self.base_url, timeout), "timeout")

    def _down(self) -> BackendError:
        return BackendError(tr("No GeoReasoner backend answers at {0}. ").format(self.base_url) + tr(START_HINT), "down")

    def _lost(self, detail: str) -> BackendError:
        return BackendError(tr("Lost the connection to the backend at {0} ({1}): it may have crashed or been "
                               "stopped. Look at its log, then start it again. ").format(self.base_url, detail)
                            + tr(START_HINT), "closed")

    def _closed_mid_answer(self) -> BackendError:
        return BackendError(tr("The backend closed the connection mid-answer: it may have crashed or been "
                               "stopped. Look at its log, then start it again."), "closed")
