"""A test double of vLLM: an OpenAI-compatible chat-completions server on 127.0.0.1.

It serves one in-process reasoner (the tiny Qwen2.5-VL in tests) through our own Reasoner, so an
answer obtained through the HTTP path can be compared with the in-process answer token for token.
Like vLLM it accepts images as data URLs inside `image_url` parts, streams Server-Sent Events
(`data: {chunk}` ... `data: [DONE]`), lists its model at GET /v1/models, and stops generating when
the client goes away. Only what GeoReasoner's RemoteReasoner uses is implemented.

Log-probabilities: a double made with ``logprobs=True`` answers a request asking for them as vLLM
does, each chunk carrying ``choices[0].logprobs.content = [{"token", "logprob"}, ...]`` for the tokens
that wrote it; they come from the served reasoner's ScoredText, so the answer is generated first and
then streamed token by token. Made without, it ignores the parameter (a server without logprobs);
with ``logprobs="refuse"`` it answers 400 to a request asking for them (a server that rejects it).
"""
from __future__ import annotations

import base64
import io
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional

from PIL import Image


class OpenAIDouble:
    """`with OpenAIDouble(reasoner) as double:` serves at double.url (the /v1 base) until the block ends."""

    def __init__(self, reasoner, model_name: str = "tiny-qwen2.5-vl", api_key: Optional[str] = None,
                 token_delay_s: float = 0.0, logprobs=False):
        self.reasoner = reasoner
        self.logprobs = logprobs
        self.model_name = model_name
        self.api_key = api_key
        self.token_delay_s = token_delay_s
        self.requests: List[Dict] = []  # what each chat request carried (image size, sampling options)
        self.cancelled = 0  # generations stopped because the client went away
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self.url = ""

    def __enter__(self) -> "OpenAIDouble":
        double = self

        class Handler(_Handler):
            owner = double

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, name="openai-double", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class _Handler(BaseHTTPRequestHandler):
    owner: OpenAIDouble
    protocol_version = "HTTP/1.0"  # one response per connection, ended by closing it (like a plain SSE server)

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    def _authorised(self) -> bool:
        if self.owner.api_key is None:
            return True
        if self.headers.get("Authorization") == f"Bearer {self.owner.api_key}":
            return True
        self._json(401, {"error": {"message": "invalid API key", "type": "AuthenticationError", "code": 401}})
        return False

    def _json(self, status: int, body: Dict) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - http.server's naming
        if not self._authorised():
            return
        if self.path.rstrip("/") == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": self.owner.model_name, "object": "model",
                                                         "owned_by": "test-double"}]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "NotFoundError", "code": 404}})

    def do_POST(self):  # noqa: N802
        if not self._authorised():
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "NotFoundError", "code": 404}})
            return
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        if body.get("model") != self.owner.model_name:
            self._json(404, {"error": {"message": f"The model `{body.get('model')}` does not exist.",
                                       "type": "NotFoundError", "code": 404}})
            return
        try:
            image, messages = _from_openai_messages(body["messages"])
        except (KeyError, ValueError) as exc:
            self._json(400, {"error": {"message": str(exc), "type": "BadRequestError", "code": 400}})
            return
        self.owner.requests.append({"image_size": image.size, "max_tokens": body.get("max_tokens"),
                                    "temperature": body.get("temperature"), "top_p": body.get("top_p"),
                                    "seed": body.get("seed"), "stream": bool(body.get("stream")),
                                    "logprobs": body.get("logprobs")})
        if body.get("logprobs") and self.owner.logprobs == "refuse":
            self._json(400, {"error": {"message": "logprobs is not supported by this server",
                                       "type": "BadRequestError", "code": 400}})
            return
        options = dict(max_new_tokens=int(body.get("max_tokens") or 512), temperature=float(body.get("temperature", 1.0)),
                       top_p=float(body.get("top_p", 1.0)), seed=body.get("seed"))
        if body.get("stream") and body.get("logprobs") and self.owner.logprobs is True:
            self._stream_with_logprobs(image, messages, options)
        elif body.get("stream"):
            self._stream(image, messages, options)
        else:
            text = self.owner.reasoner.generate(image, messages, **options)
            self._json(200, {"id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion",
                             "model": self.owner.model_name,
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                          "finish_reason": "stop"}]})

    def _stream(self, image, messages, options) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        completion_id = "chatcmpl-" + uuid.uuid4().hex
        gone = threading.Event()

        def send(delta: Dict, finish_reason=None) -> None:
            chunk = {"id": completion_id, "object": "chat.completion.chunk", "model": self.owner.model_name,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            self._event(json.dumps(chunk), gone)

        send({"role": "assistant", "content": ""})

        def on_token(piece: str) -> None:
            if self.owner.token_delay_s:
                time.sleep(self.owner.token_delay_s)
            send({"content": piece})

        self.owner.reasoner.generate(image, messages, on_token=on_token, should_stop=gone.is_set, **options)
        if gone.is_set():
            self.owner.cancelled += 1
            return
        send({}, "stop")
        self._event("[DONE]", gone)

    def _stream_with_logprobs(self, image, messages, options) -> None:
        text = self.owner.reasoner.generate(image, messages, **options)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        completion_id = "chatcmpl-" + uuid.uuid4().hex
        gone = threading.Event()

        def send(delta: Dict, logprobs=None, finish_reason=None) -> None:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            if logprobs is not None:
                choice["logprobs"] = {"content": logprobs}
            self._event(json.dumps({"id": completion_id, "object": "chat.completion.chunk",
                                    "model": self.owner.model_name, "choices": [choice]}), gone)

        send({"role": "assistant", "content": ""})
        # One chunk per token; tokens that only together make a character (one shared span) go in one
        # chunk, each named by its id, as vLLM names a partial character "bytes:...".
        groups: Dict = {}
        for n, token in enumerate(text.token_logprobs):
            if token.end > token.start:  # special tokens write nothing
                groups.setdefault((token.start, token.end), []).append((n, token.logprob))
        for (start, end), tokens in groups.items():
            piece = text[start:end]
            names = [piece] if len(tokens) == 1 else [f"<id {text.token_ids[n]}>" for n, _ in tokens]
            send({"content": piece}, [{"token": name, "logprob": value} for name, (_, value) in zip(names, tokens)])
        send({}, finish_reason="stop")
        self._event("[DONE]", gone)

    def _event(self, data: str, gone: threading.Event) -> None:
        if gone.is_set():
            return
        try:
            self.wfile.write(f"data: {data}\n\n".encode("utf-8"))
            self.wfile.flush()
        except OSError:  # the client went away: vLLM aborts the request, so does the double
            gone.set()


def _from_openai_messages(messages: List[Dict]):
    """(the one PIL image, transformers-style messages with an {'type': 'image'} part in its place)."""
    image = None
    converted = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            parts = []
            for part in content:
                if part["type"] == "image_url":
                    url = part["image_url"]["url"]
                    header, _, encoded = url.partition(",")
                    if not header.startswith("data:image/") or ";base64" not in header:
                        raise ValueError("only base64 data URLs are supported by the double")
                    image = Image.open(io.BytesIO(base64.b64decode(encoded)))
                    image.load()
                    parts.append({"type": "image"})
                else:
                    parts.append({"type": "text", "text": part["text"]})
            content = parts
        converted.append({"role": message["role"], "content": content})
    if image is None:
        raise ValueError("the request holds no image")
    return image, converted
