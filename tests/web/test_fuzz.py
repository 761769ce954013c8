"""API fuzzing with hypothesis over the app's own OpenAPI schema: for every operation, requests built from its
parameter and body schemas (valid values, boundary values, wrong types, unknown ids, random paths) never get a 5xx
and each answers within a few seconds (no hang)."""
from __future__ import annotations

import time

import pytest

hyp = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TEXT = st.text(max_size=40) | st.sampled_from(["", "art-cache", "art-patch", "art-direction", "../x", "%2e%2e",
                                                "blocks.0.mlp_act", "blocks.1.resid_post", "nope", "12", "-1"])
JUNK = st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False, allow_infinity=False) | TEXT


def from_schema(schema: dict, spec: dict, depth: int = 0):
    """A strategy for JSON values of ``schema`` (resolving $ref), mixed with junk of other types."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return from_schema(spec["components"]["schemas"][name], spec, depth)
    if "anyOf" in schema:
        return st.one_of([from_schema(s, spec, depth) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"]) | JUNK
    if "const" in schema:
        return st.just(schema["const"])
    t = schema.get("type")
    if t == "integer":
        lo, hi = schema.get("minimum", -10**6), schema.get("maximum", 10**6)
        return st.integers(lo - 2, hi + 2) | st.sampled_from([lo, hi, 0, 1, 3, 127, 128])
    if t == "number":
        return st.floats(allow_nan=False, allow_infinity=False, min_value=-1e5, max_value=1e5)
    if t == "boolean":
        return st.booleans()
    if t == "string":
        return TEXT
    if t == "array":
        return st.lists(from_schema(schema.get("items", {}), spec, depth + 1), max_size=3)
    if t == "object" and depth < 3:
        props = schema.get("properties", {})
        req = set(schema.get("required", []))
        return st.fixed_dictionaries({k: from_schema(v, spec, depth + 1) for k, v in props.items() if k in req},
                                     optional={k: from_schema(v, spec, depth + 1) for k, v in props.items()
                                               if k not in req})
    return JUNK


@pytest.fixture(scope="module")
def fuzz_server(artifacts, model):
    from actlab.web import Limits, create_app

    from .conftest import Server

    s = Server(create_app([artifacts["root"]], model=model, limits=Limits(max_new_tokens=4, max_tokens=64)))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(fuzz_server):
    import httpx

    with httpx.Client(base_url=fuzz_server.url, timeout=15) as c:
        yield c


@pytest.fixture(scope="module")
def spec(client):
    return client.get("/openapi.json").json()


def _operations(spec):
    return [(path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


def test_schema_covers_the_api(spec):
    paths = set(spec["paths"])
    assert {"/api/index", "/api/model", "/api/sae/{sid}", "/api/sae/{sid}/features", "/api/sae/{sid}/feature/{j}",
            "/api/patch/{pid}", "/api/file/{root}/{path}", "/api/prompt", "/api/attention", "/api/steer"} <= paths


def _check(client, method, url, params, body):
    t0 = time.perf_counter()
    r = client.request(method.upper(), url, params=params, json=body)
    assert r.status_code < 500, (method, url, params, body, r.status_code, r.text[:300])
    assert time.perf_counter() - t0 < 10, (method, url, "took too long")


OPERATIONS = [("/api/index", "get"), ("/api/model", "get"), ("/api/sae/{sid}", "get"),
              ("/api/sae/{sid}/features", "get"), ("/api/sae/{sid}/feature/{j}", "get"), ("/api/patch/{pid}", "get"),
              ("/api/file/{root}/{path}", "get"), ("/api/prompt", "post"), ("/api/attention", "post"),
              ("/api/steer", "post")]


@pytest.mark.parametrize("path,method", OPERATIONS)
def test_fuzz_operation(client, spec, path, method):
    """40 requests per operation: schema-shaped values (mostly) and junk, parameters and body."""
    op = spec["paths"][path][method]

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None)
    @given(data=st.data())
    def run(data):
        url, params = path, {}
        for p in op.get("parameters", []):
            val = data.draw(from_schema(p.get("schema", {}), spec) if p.get("required") or data.draw(st.booleans())
                            else st.none())
            if val is None:
                if p["in"] != "path":
                    continue
                val = ""
            if p["in"] == "path":
                from urllib.parse import quote

                url = url.replace("{" + p["name"] + "}", quote(str(val), safe="") or "x")
            else:
                params[p["name"]] = val if not isinstance(val, (dict, list)) else str(val)
        body = None
        if "requestBody" in op:
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            body = data.draw(st.one_of(from_schema(schema, spec), from_schema(schema, spec), from_schema(schema, spec),
                                       JUNK))
        _check(client, method, url, params, body)

    run()
