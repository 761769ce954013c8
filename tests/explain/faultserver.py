"""A real local OpenAI-compatible HTTP server for the endpoint tests whose answers follow a script of faults:
HTTP 500, 429 with Retry-After, a response slower than the client's timeout, malformed JSON, then good answers
("echo: <last user message>")."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultServer:
    def __init__(self, script=(), delay: float = 0.0):
        self.script = list(script)
        self.delay = delay
        self.requests: list[dict] = []
        self.times: list[float] = []
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        owner = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, code, data: bytes, headers=()):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.requests.append({"body": body, "auth": self.headers.get("Authorization")})
                    owner.times.append(time.time())
                    step = owner.script.pop(0) if owner.script else ("ok",)
                    owner.in_flight += 1
                    owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
                try:
                    self._answer(body, step)
                finally:
                    with owner.lock:
                        owner.in_flight -= 1

            def _answer(self, body, step):
                if owner.delay:
                    time.sleep(owner.delay)
                kind = step[0]
                if kind == "status":
                    self._send(step[1], json.dumps({"error": {"message": "injected"}}).encode())
                elif kind == "429":
                    self._send(429, b'{"error": {"message": "slow down"}}', [("Retry-After", str(step[1]))])
                elif kind == "slow":
                    time.sleep(step[1])
                    self._send(200, _ok(body))
                elif kind == "malformed":
                    self._send(200, b'{"choices": [{"message": ')
                elif kind == "nochoices":
                    self._send(200, b'{"object": "chat.completion"}')
                else:
                    self._send(200, _ok(body))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.httpd.shutdown()
        self.httpd.server_close()


def echo(body_or_messages) -> str:
    msgs = body_or_messages["messages"] if isinstance(body_or_messages, dict) else body_or_messages
    return "echo: " + msgs[-1]["content"]


def _ok(body) -> bytes:
    return json.dumps({"object": "chat.completion", "model": body.get("model"),
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": echo(body)},
                                    "finish_reason": "stop"}]}).encode()
