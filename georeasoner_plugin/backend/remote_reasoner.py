"""The reasoning step on any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, ...).

Same generate() contract as reasoner.Reasoner, so the cascade cannot tell them apart. The image
arrives already resized to the profile's model frame (sides multiples of 28 for Qwen2.5-VL, 32 for
Qwen3-VL) and is sent as a lossless PNG: the processor on the serving side then keeps that size (its
smart resize is the identity for such an image within its pixel bounds), so the answer's coordinates
are in the frame the cascade maps back from. Qwen3-VL answers in a 0-1000 frame normalised on both
axes; the profile's frame maps those back just as well. SAM stays local; only the language model is
shared.

Every request asks for ``logprobs``: each streamed chunk then carries the log-probability of the
tokens that wrote it (``choices[0].logprobs.content[*].token / .logprob``), and the answer comes back
as a ``ScoredText`` from which the cascade scores each box (``box_score``). They are whatever the
server reports: vLLM's default is the model's own distribution before temperature and top-p
(``--logprobs-mode`` changes that), the same as the sampled one when greedy. A server that returns
none gives a plain text answer (box_score stays empty); one that refuses the parameter (HTTP 400
naming it) is asked again without it, once per reasoner.
"""
from __future__ import annotations

import base64
import io
import json
import threading
import time
from typing import Callable, Dict, List, Optional
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..core.confidence import ScoredText, TokenLogprob
from ..core.frames import QWEN3_PATCH_FACTOR, QWEN_PATCH_FACTOR
from .reasoning import FrameMismatchError, check_frame, check_generation

# Frames of the model families a server may run (Qwen2.5-VL: 28, Qwen3-VL: 32). The server's model is
# not known here; the profile chosen for the request decides which one the image was resized for.
FRAME_FACTORS = (QWEN_PATCH_FACTOR, QWEN3_PATCH_FACTOR)

API_KEY_ENV = "GEOREASONER_REASONER_API_KEY"
_ERROR_BODY_LIMIT = 4096
_STOP_POLL_S = 0.1


class RemoteReasonerError(RuntimeError):
    """The endpoint could not be reached or refused the request; the message says which and why."""


# The image handed to generate() is not in a model frame: the one error both reasoners raise.
RemoteFrameError = FrameMismatchError


def chat_completions_url(url: str) -> str:
    """Accepts the server's base (http://host:8000/v1) or the full chat-completions address; a query
    string (some gateways take their key there) is kept at the end."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"the reasoner URL must start with http:// or https:// and name a host, e.g. "
                         f"http://gpu-server:8000/v1; got {redact_url(url)!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return urlunsplit(parts._replace(path=path, fragment=""))


def _with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=path))


def image_data_url(image) -> str:
    """A PIL image as a data URL holding a PNG (lossless: the server sees our exact pixels)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def to_openai_messages(messages: List[Dict], data_url: str) -> List[Dict]:
    """transformers-style messages ({'type': 'image'} parts) in the chat-completions format."""
    converted = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "image":
                    parts.append({"type": "image_url", "image_url": {"url": data_url}})
                elif part.get("type") == "text":
                    parts.append({"type": "text", "text": part.get("text", "")})
                else:
                    raise ValueError(f"unsupported message part type {part.get('type')!r}")
            content = parts
        converted.append({"role": message["role"], "content": content})
    return converted


def redact_url(url: str) -> str:
    """The URL for messages, logs and /v1/info: no user:password, no query string, no fragment (a
    key may travel in any of them)."""
    try:
        parts = urlsplit(str(url).strip())
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "<unreadable URL>"
    query = "?<redacted>" if parts.query else ""
    return urlunsplit(parts._replace(netloc=host, query="", fragment="")) + query


class RemoteReasoner:  # implements reasoning.ReasonerProtocol
    """Qwen2.5-VL (or a compatible VLM) served elsewhere, spoken to over chat completions with streaming."""

    def __init__(self, url: str, model: str, *, api_key: Optional[str] = None, connect_timeout_s: float = 10.0,
                 read_timeout_s: float = 600.0):
        if not model or not model.strip():
            raise ValueError("the remote reasoner needs the served model's name (--reasoner-model)")
        self.endpoint = chat_completions_url(url)
        endpoint_path = urlsplit(self.endpoint).path
        self.base_url = _with_path(self.endpoint, endpoint_path[: -len("/chat/completions")])
        self.models_url = _with_path(self.endpoint, endpoint_path[: -len("/chat/completions")] + "/models")
        self.model = model.strip()
        self.name = self.model
        self.display_url = redact_url(self.base_url)
        given = urlsplit(url.strip())
        self._secrets = [v for v in (given.query, given.password, given.username, api_key) if v]
        headers = {"Accept": "text/event-stream, application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # The read timeout bounds the wait between two streamed chunks (a long prefill on a busy server).
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s))
        self.last_timings: Dict[str, float] = {}
        self.ask_logprobs = True  # turned off for good when the server refuses the parameter

    def close(self) -> None:
        self._client.close()

    def _scrub(self, text: str) -> str:
        """A message without the URL's credentials or query string, whatever library wrote it."""
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text

    def list_models(self) -> List[str]:
        """Model names the endpoint serves (GET /models); RemoteReasonerError when it cannot say."""
        try:
            response = self._client.get(self.models_url, timeout=10.0)
        except httpx.HTTPError as exc:
            raise RemoteReasonerError(f"the reasoning server at {self.display_url} cannot be reached: "
                                      f"{self._scrub(_describe(exc))}") from None
        if response.status_code != 200:
            raise RemoteReasonerError(f"the reasoning server at {self.display_url} answered HTTP "
                                      f"{response.status_code} to GET /models")
        try:
            return [str(item["id"]) for item in response.json().get("data", [])]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise RemoteReasonerError(f"the reasoning server at {self.display_url} did not answer GET /models "
                                      f"with an OpenAI-style model list") from None

    def generate(self, image, messages: List[Dict], *, max_new_tokens: int = 512, temperature: float = 0.0,
                 top_p: float = 1.0, top_k: Optional[int] = None, seed: Optional[int] = None,
                 on_token: Optional[Callable[[str], None]] = None,
                 should_stop: Optional[Callable[[], bool]] = None) -> str:
        """The model's answer text about `image` (a PIL image already in the model frame): a ScoredText
        carrying the tokens' log-probabilities when the server sent them for every chunk of text."""
        width, height = image.size
        check_frame(width, height, FRAME_FACTORS)
        check_generation(max_new_tokens, temperature)
        started = time.perf_counter()
        payload = {
            "model": self.model,
            "messages": to_openai_messages(messages, image_data_url(image)),
            "max_tokens": int(max_new_tokens),
            "temperature": float(temperature),
            "top_p": float(top_p) if temperature > 0 else 1.0,
            "stream": True,
        }
        if top_k:
            payload["top_k"] = int(top_k)
        if seed is not None:
            payload["seed"] = int(seed)
        prepared = time.perf_counter()
        stop = should_stop or (lambda: False)
        pieces: List[str] = []
        scored = _ScoredPieces()
        cancelled = threading.Event()
        try:
            response = self._open_stream(payload)
            try:
                watchdog = _StopWatchdog(stop, response, cancelled)
                watchdog.start()
                try:
                    for piece, logprobs in _sse_text_pieces(response):
                        if stop():
                            cancelled.set()
                            break
                        pieces.append(piece)
                        scored.add(piece, logprobs)
                        if on_token is not None:
                            on_token(piece)
                finally:
                    watchdog.finish()
            finally:
                response.close()
        except (httpx.HTTPError, httpx.StreamError) as exc:
            # Closing the response from the watchdog breaks the read: that is a cancel, not a failure.
            if not cancelled.is_set():
                raise RemoteReasonerError(f"the reasoning server at {self.display_url} failed: "
                                          f"{self._scrub(_describe(exc))}") from None
        finished = time.perf_counter()
        self.last_timings = {"preprocess_s": prepared - started, "reason_s": finished - prepared,
                             "chunks": len(pieces), "cancelled": cancelled.is_set()}
        return ScoredText("".join(pieces), scored.tokens())

    def _open_stream(self, payload: Dict) -> httpx.Response:
        """The streaming response (status 200), asking for logprobs unless this server refused them."""
        if self.ask_logprobs:
            payload = dict(payload, logprobs=True)
        response = self._client.send(self._client.build_request("POST", self.endpoint, json=payload), stream=True)
        if response.status_code == 200:
            return response
        try:
            message = self._http_error(response)
        finally:
            response.close()
        if response.status_code == 400 and self.ask_logprobs and "logprob" in message.lower():
            self.ask_logprobs = False  # an endpoint without logprobs: answers without box_score
            payload = {k: v for k, v in payload.items() if k != "logprobs"}
            return self._open_stream(payload)
        raise RemoteReasonerError(message)

    def _http_error(self, response: httpx.Response) -> str:
        body = b""
        try:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > _ERROR_BODY_LIMIT:
                    break
        except httpx.HTTPError:
            pass
        detail = _error_message(body[:_ERROR_BODY_LIMIT])
        hint = ""
        if response.status_code in (401, 403):
            hint = f"; set the endpoint's API key in the environment variable {API_KEY_ENV}"
        elif response.status_code == 404:
            hint = f"; check --reasoner-url (the server's /v1 base) and --reasoner-model ({self.model})"
        return self._scrub(f"the reasoning server at {self.display_url} answered HTTP {response.status_code}"
                           f"{': ' + detail if detail else ''}{hint}")


class _ScoredPieces:
    """Token log-probabilities placed on the characters of the streamed text.

    A chunk's tokens get their own characters when their texts add up to the chunk's text, else each
    gets the whole chunk (a token that is part of a character, "bytes:..." in vLLM); a chunk of text
    without logprobs makes the whole answer unscored (a box over it could not be scored honestly).
    """

    def __init__(self):
        self.length = 0
        self.placed: List[TokenLogprob] = []
        self.complete = True
        self.any = False

    def add(self, piece: str, logprobs: Optional[List[Dict]]) -> None:
        start, end = self.length, self.length + len(piece)
        self.length = end
        entries = [e for e in logprobs or [] if isinstance(e, dict)]
        values = [e.get("logprob") for e in entries]
        if not entries or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            self.complete = self.complete and not piece
            return
        self.any = True
        texts = [e.get("token") if isinstance(e.get("token"), str) else None for e in entries]
        if None not in texts and "".join(texts) == piece:
            at = start
            for text, value in zip(texts, values):
                self.placed.append(TokenLogprob(at, at + len(text), min(0.0, float(value))))
                at += len(text)
        else:
            self.placed.extend(TokenLogprob(start, end, min(0.0, float(v))) for v in values)

    def tokens(self) -> Optional[List[TokenLogprob]]:
        return self.placed if self.any and self.complete else None


class _StopWatchdog(threading.Thread):
    """Closes the response when should_stop() turns true while the reader is blocked waiting for a chunk."""

    def __init__(self, should_stop: Callable[[], bool], response: httpx.Response, cancelled: threading.Event):
        super().__init__(name="remote-reasoner-watchdog", daemon=True)
        self.should_stop = should_stop
        self.response = response
        self.cancelled = cancelled
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(_STOP_POLL_S):
            if self.should_stop():
                self.cancelled.set()
                try:
                    self.response.close()
                except Exception:  # noqa: BLE001 - the reader sees the broken stream either way
                    pass
                return

    def finish(self) -> None:
        self.done.set()


def _sse_text_pieces(response: httpx.Response):
    """(text delta, its logprobs entries or None) of a chat-completions event stream, until [DONE] or
    the end of the stream."""
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue  # comments, event names, keep-alives, blank separators
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            event = json.loads(data)
        except ValueError:
            raise RemoteReasonerError(f"the reasoning server sent an unreadable stream event: {data[:200]!r}") \
                from None
        if not isinstance(event, dict):
            continue
        if event.get("error"):
            raise RemoteReasonerError(f"the reasoning server reported an error: {_error_message(event)}")
        for choice in event.get("choices") or []:
            delta = choice.get("delta") or {}
            piece = delta.get("content")
            logprobs = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) \
                else None
            if isinstance(piece, str) and piece:
                yield piece, logprobs if isinstance(logprobs, list) else None


def _error_message(body) -> str:
    if isinstance(body, (bytes, bytearray)):
        try:
            body = json.loads(body.decode("utf-8", "replace"))
        except ValueError:
            return body.decode("utf-8", "replace").strip()[:300]
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message") or error.get("detail") or error)[:300]
        return str(body.get("message") or body.get("detail") or error)[:300]
    return str(body)[:300]


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unknown; is the server running and the URL right?"
    if isinstance(exc, httpx.TimeoutException):
        return "it did not answer in time"
    return f"{type(exc).__name__}: {exc}"
