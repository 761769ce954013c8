"""Security of the explorer: path traversal (``../``, URL-encoded, double-encoded, absolute, backslash, symlink out of
the served folder) -> 403/404 with nothing leaked; oversized bodies (declared and streamed) -> 413; generation and
prompt length limits -> 422; unknown ids -> 404; extra fields -> 422; loopback by default, a warning otherwise."""
from __future__ import annotations

import socket

import httpx
import pytest

from .conftest import Server

SECRET = "top secret outside the served folder"


@pytest.fixture(scope="module")
def served(tmp_path_factory, artifacts, model):
    """A served folder holding a figure, a symlink to a file outside it and a symlink to a folder outside it."""
    from actlab.web import Limits, create_app

    base = tmp_path_factory.mktemp("sec")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text(f'{{"s": "{SECRET}"}}')
    root = base / "root"
    root.mkdir()
    (root / "ok.json").write_text('{"fine": 1}')
    (root / "link.json").symlink_to(outside / "secret.json")
    (root / "dirlink").symlink_to(outside, target_is_directory=True)
    (root / "inner.json").symlink_to(root / "ok.json")     # a symlink that stays inside is fine
    (outside / "stats.json").write_text('{"meta": {"n_tokens": 1}, "massive": {}}')
    (root / "evil").mkdir()
    (root / "evil" / "stats.json").symlink_to(outside / "stats.json")   # an artifact file pointing out
    s = Server(create_app([root, artifacts["root"]], model=model, limits=Limits(max_new_tokens=8,
                                                                                 max_body_bytes=4096)))
    yield s
    s.stop()


def raw_get(server: Server, target: str) -> tuple[int, str]:
    """Send the request line exactly as written (no client-side normalisation of ``..`` or ``%2e``)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.decode("latin-1").partition("\r\n\r\n")
    return int(head.split()[1]), body


def test_registry_skips_symlinked_artifacts(served):
    ids = [a["id"] for a in httpx.get(served.url + "/api/index").json()["artifacts"]]
    assert ids and not any("evil" in i for i in ids)


def test_served_file_and_inner_symlink(served):
    assert raw_get(served, "/api/file/0/ok.json") == (200, '{"fine": 1}')
    assert raw_get(served, "/api/file/0/inner.json")[0] == 200


@pytest.mark.parametrize("target", [
    "/api/file/0/../outside/secret.json",
    "/api/file/0/..%2foutside%2fsecret.json",
    "/api/file/0/%2e%2e/outside/secret.json",
    "/api/file/0/%2e%2e%2foutside%2fsecret.json",
    "/api/file/0/%252e%252e%252foutside%252fsecret.json",
    "/api/file/0//etc/passwd",
    "/api/file/0/%2fetc%2fpasswd",
    "/api/file/0/..%5coutside%5csecret.json",
    "/api/file/0/link.json",
    "/api/file/0/dirlink/secret.json",
    "/api/file/0/ok.json%00.png",
    "/api/file/1/../../outside/secret.json",
    "/api/file/9/ok.json",
    "/api/file/0/~/secret.json",
    "/static/../../../etc/passwd",
    "/static/%2e%2e/app.py",
])
def test_traversal_refused(served, target):
    status, body = raw_get(served, target)
    assert status in (400, 403, 404, 422), (target, status)
    assert SECRET not in body and "root:" not in body


def test_only_allowed_file_types(served):
    status, _ = raw_get(served, "/api/file/1/sae/dictionary.safetensors")
    assert status == 403


def test_oversized_bodies(served):
    with httpx.Client(base_url=served.url, timeout=30) as c:
        big = '{"text": "' + "a" * 10_000 + '"}'
        r = c.post("/api/prompt", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413

        def stream():      # chunked, no content-length: counted as it arrives
            for _ in range(10):
                yield b"a" * 1000
        r = c.post("/api/prompt", content=stream(), headers={"content-type": "application/json"})
        assert r.status_code == 413


def test_generation_and_prompt_limits(served):
    with httpx.Client(base_url=served.url, timeout=30) as c:
        ok = {"prompt": "ab", "sae": "art-cache", "feature": 1, "max_new_tokens": 8}
        assert c.post("/api/steer", json=ok).status_code == 200
        assert c.post("/api/steer", json={**ok, "max_new_tokens": 9}).status_code == 422
        assert c.post("/api/steer", json={**ok, "max_new_tokens": 10**9}).status_code == 422
        assert c.post("/api/steer", json={**ok, "max_new_tokens": 0}).status_code == 422
        assert c.post("/api/steer", json={**ok, "strength": "NaN"}).status_code == 422
        assert c.post("/api/steer", json={**ok, "evil": 1}).status_code == 422
        assert c.post("/api/prompt", json={"text": "a" * 2001}).status_code == 422
        assert c.post("/api/prompt", json={"text": "a" * 300}).status_code == 422     # > 256 tokens
        assert c.post("/api/steer", json={**ok, "sae": "../../etc"}).status_code == 404
        assert c.post("/api/steer", json={**ok, "kind": "direction", "direction": "/etc/passwd"}).status_code == 404
        assert c.get("/api/sae/..%2f..%2fetc/features").status_code == 404
        assert c.get("/api/patch/art-cache").status_code == 404       # wrong kind


def test_read_only(served):
    with httpx.Client(base_url=served.url, timeout=30) as c:
        for m in ("PUT", "DELETE", "PATCH"):
            assert c.request(m, "/api/file/0/ok.json").status_code == 405
        assert c.post("/api/index").status_code == 405


def test_default_bind_is_loopback_and_others_warn(monkeypatch, capsys, artifacts):
    import uvicorn

    from actlab.cli import build_parser
    from actlab.web import app as webapp

    a = build_parser().parse_args(["serve", str(artifacts["root"])])
    assert a.host == "127.0.0.1" and a.cfg.max_new_tokens == 64
    assert build_parser().parse_args(["serve", "x", "--max-new-tokens", "9"]).cfg.max_new_tokens == 9
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: seen.update(host=host, port=port))
    webapp.serve([str(artifacts["root"])])
    assert seen["host"] == "127.0.0.1" and "warning" not in capsys.readouterr().err
    webapp.serve([str(artifacts["root"])], host="0.0.0.0")
    assert seen["host"] == "0.0.0.0" and "warning: binding 0.0.0.0" in capsys.readouterr().err
    assert webapp.is_loopback("::1") and webapp.is_loopback("localhost") and not webapp.is_loopback("10.0.0.1")


def test_security_headers(served):
    r = httpx.get(served.url + "/")
    assert "default-src 'self'" in r.headers["content-security-policy"] and r.headers["x-content-type-options"]
