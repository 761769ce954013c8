"""A minimal OpenAI-compatible chat server over an in-process explainer (the bundled SmolLM2 by default), on the
standard library's ``http.server``: ``POST /v1/chat/completions`` and ``GET /v1/models``.

It is what the endpoint client is tested against (real sockets, real HTTP, a real model) and a way to share one
loaded model between processes; it is not a production server (one generation at a time, no streaming).
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from actlab.explain.explainers import Explainer


def completion_body(content: str, model: str, finish: str = "stop") -> dict:
    """An OpenAI chat.completion object holding ``content``."""
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                         "finish_reason": finish}]}


def _handler(explainer: Explainer, model_name: str, counter: dict):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:   # quiet
            pass

        def _send(self, code: int, obj: dict) -> None:
            data = json.dumps(obj).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._send(200, {"object": "list", "data": [{"id": model_name, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            counter["requests"] += 1
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                messages = body["messages"]
                if not isinstance(messages, list) or not messages:
                    raise ValueError("messages must be a non-empty list")
                max_tokens = int(body.get("max_tokens") or 64)
                temperature = float(body.get("temperature") or 0.0)
            except (ValueError, KeyError, TypeError) as e:
                self._send(400, {"error": {"message": f"bad request: {e}"}})
                return
            try:
                text = explainer.complete(messages, max_tokens=max_tokens, temperature=temperature)
            except Exception as e:  # noqa: BLE001  (any failure goes back to the client as HTTP 500)
                self._send(500, {"error": {"message": f"{type(e).__name__}: {e}"}})
                return
            self._send(200, completion_body(text, model_name))
    return Handler


class ChatServer:
    """``ChatServer(explainer).start()`` serves on ``host:port`` (0: a free port) in a daemon thread;
    ``base_url`` is what an :class:`EndpointConfig` takes; ``stop()`` shuts it down."""

    def __init__(self, explainer: Explainer, host: str = "127.0.0.1", port: int = 0, model_name: str = ""):
        self.counter = {"requests": 0}
        self.model_name = model_name or explainer.name
        self.httpd = ThreadingHTTPServer((host, port), _handler(explainer, self.model_name, self.counter))
        self.httpd.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> ChatServer:
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
