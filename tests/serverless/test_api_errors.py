"""Bad client input gets the right status and a JSON ``{"error": ...}`` body, never a 500."""

from __future__ import annotations

import httpx
import pytest

from serverless.payloads import MAX_JSON_DEPTH

KEY = "test-key"


@pytest.fixture(scope="module", params=["memory", "redis"])
def server(module_endpoint_factory, request):
    return module_endpoint_factory(endpoints=("ep",), store=request.param, api_key=KEY,
                                   max_run_body=12_000, max_runsync_body=24_000)


@pytest.fixture
def client(server):
    with server.client() as c:
        yield c


def assert_error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert isinstance(body.get("error"), str) and body["error"]
    return body


@pytest.mark.parametrize("body", [b"{", b"not json", b'{"input": {"a": 1}', b"\xff\xfe"])
def test_malformed_json_is_400(server, client, body):
    assert_error(client.post(f"{server.url()}/run", content=body), 400)
    assert_error(client.post(f"{server.url()}/runsync?wait=1000", content=body), 400)


@pytest.mark.parametrize("body", [
    b"[]", b'"x"', b'{"input": [1]}', b'{"input": "text"}', b'{"input": 3}',
    b'{"input": {}, "policy": {"ttl": "long"}}', b'{"input": {}, "policy": []}', b'{"input": {}, "webhook": 5}',
    b'{"input": {}, "webhook": "ftp://x"}', b'{"input": {}, "s3Config": [1]}',
    b'{"input": {}, "policy": {"ttl": 700000000000}}', b'{"input": {}, "policy": {"executionTimeout": -1}}',
    b'{"input": {}, "policy": {"executionTimeout": 604800001}}',
])
def test_invalid_body_is_400(server, client, body):
    assert_error(client.post(f"{server.url()}/run", content=body), 400)


def test_valid_body_with_extras_is_accepted(server, client):
    resp = client.post(f"{server.url()}/run", json={"input": {"a": 1}, "unknown": 1, "s3Config": None,
                                                    "policy": {"ttl": 60000, "lowPriority": True}})
    assert resp.status_code == 200 and resp.json()["status"] == "IN_QUEUE"


def test_unknown_endpoint_is_404(server, client):
    for method, op in [("POST", "run"), ("GET", "health"), ("GET", "status/x"), ("POST", "cancel/x")]:
        resp = client.request(method, f"{server.base}/nope/{op}", json={"input": {}})
        assert_error(resp, 404)


def test_unknown_job_is_404(server, client):
    for method, op in [("GET", "status"), ("POST", "status"), ("GET", "stream"), ("GET", "status-sync"),
                       ("POST", "cancel"), ("POST", "retry")]:
        assert_error(client.request(method, f"{server.url()}/{op}/no-such-job"), 404)


def test_unknown_route_is_404(server, client):
    assert_error(client.get(f"{server.url()}/nothing-here"), 404)
    assert_error(client.get(f"http://127.0.0.1:{server.port}/"), 404)


def test_wrong_method_is_405(server, client):
    assert_error(client.get(f"{server.url()}/run"), 405)
    assert_error(client.put(f"{server.url()}/status/x"), 405)
    assert_error(client.post(f"{server.url()}/health"), 405)
    assert_error(client.delete(f"{server.url()}/cancel/x"), 405)


def test_oversize_body_is_413(server, client):
    big = b'{"input": {"x": "' + b"a" * 13_000 + b'"}}'
    assert_error(client.post(f"{server.url()}/run", content=big), 413)
    # /runsync allows twice as much (20 MB vs 10 MB in production)
    resp = client.post(f"{server.url()}/runsync?wait=1000", content=big)
    assert resp.status_code == 200 and resp.json()["status"] in ("IN_QUEUE", "IN_PROGRESS")
    bigger = b'{"input": {"x": "' + b"a" * 25_000 + b'"}}'
    assert_error(client.post(f"{server.url()}/runsync?wait=1000", content=bigger), 413)


def test_oversize_chunked_body_is_413(server, client):
    def gen():
        yield b'{"input": {"x": "'
        for _ in range(10):
            yield b"a" * 1300
        yield b'"}}'
    assert_error(client.post(f"{server.url()}/run", content=gen()), 413)


def test_auth(server):
    url = f"{server.url()}/health"
    assert_error(httpx.get(url), 401)
    assert_error(httpx.get(url, headers={"Authorization": "Bearer wrong"}), 401)
    assert_error(httpx.get(url, headers={"Authorization": "wrong"}), 401)
    assert_error(httpx.get(url, headers={"Authorization": "Bearer"}), 401)
    assert httpx.get(url, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert httpx.get(url, headers={"Authorization": KEY}).status_code == 200
    # the worker API too
    assert_error(httpx.get(f"{server.url()}/job-take/w1"), 401)
    assert_error(httpx.post(f"{server.url()}/job-done/w1/x", content=b"{}"), 401)


def test_bad_query_values_are_400(server, client):
    resp = client.post(f"{server.url()}/run", json={"input": {}})
    job_id = resp.json()["id"]
    assert_error(client.get(f"{server.url()}/status/{job_id}?ttl=abc"), 400)
    assert_error(client.get(f"{server.url()}/status/{job_id}?ttl=-5"), 400)
    assert_error(client.get(f"{server.url()}/stream/{job_id}?wait=soon"), 400)
    assert_error(client.post(f"{server.url()}/runsync?wait=x", json={"input": {}}), 400)


def test_worker_bad_bodies(server, client):
    w = {"Authorization": KEY}
    assert_error(httpx.post(f"{server.url()}/job-done/w1/none", content=b"{", headers=w), 400)
    assert_error(httpx.post(f"{server.url()}/job-done/w1/none", content=b"{}", headers=w), 404)
    assert_error(httpx.post(f"{server.url()}/job-stream/w1/none", content=b"[", headers=w), 400)
    assert_error(httpx.post(f"{server.url()}/job-stream/w1/none", content=b'{"output": 1}', headers=w), 404)
    assert_error(httpx.get(f"{server.url()}/job-take-batch/w1?batch_size=many", headers=w), 400)


def nested(depth: int) -> bytes:
    """A JSON value of ``depth`` nested containers (arrays and objects, alternating)."""
    opening = b"".join(b"[" if i % 2 else b'{"k":' for i in range(depth))
    closing = b"".join(b"]" if i % 2 else b"}" for i in reversed(range(depth)))
    return opening + b"1" + closing


#: Bodies that are JSON to a lenient reader but that a job-take batch carrying them could not
#: be decoded from by the runpod SDK worker (Python's json; the SDK drops the whole batch).
UNDELIVERABLE = {
    "invalid UTF-8 in a string": b'{"input": {"a": "\xff\xfe"}}',
    "UTF-8-encoded surrogate": b'{"input": {"a": "\xed\xa0\x80"}}',
    "lone surrogate escape": b'{"input": {"a": "\\ud800"}}',
    "integer of 5000 digits": b'{"input": {"a": 1' + b"2" * 4999 + b'}}',
    "negative integer of 4301 digits": b'{"input": {"a": [-' + b"9" * 4301 + b']}}',
    "invalid UTF-8 in s3Config": b'{"input": {}, "s3Config": {"bucketName": "\xc3"}}',
    "nested 980 levels deep": b'{"input": ' + nested(980) + b'}',
    "nested one level deeper than allowed": b'{"input": ' + nested(MAX_JSON_DEPTH) + b'}',
}


@pytest.mark.parametrize("body", list(UNDELIVERABLE.values()), ids=list(UNDELIVERABLE))
def test_undeliverable_input_is_400(server, client, body):
    """No 500 and no accepted job that would break the worker's job-take batch."""
    assert_error(client.post(f"{server.url()}/run", content=body), 400)
    assert_error(client.post(f"{server.url()}/runsync?wait=1000", content=body), 400)


@pytest.mark.parametrize("body", [
    b'{"input": {"a": 1' + b"2" * 4299 + b', "b": 1.' + b"5" * 2000 + b', "c": 1e' + b"0" * 2000 + b'1}}',
    b'{"input": {"digits": "' + b"7" * 6000 + b'"}}',
    b'{"input": {"text": "\xf0\x9f\x98\x80 \\ud83d\\ude00 \\u0000"}}',
    b'{"input": ' + nested(MAX_JSON_DEPTH - 1) + b'}',
], ids=["long numbers a worker can decode", "digits in a string", "valid UTF-8 and escapes",
        "nested as deep as allowed"])
def test_deliverable_input_is_accepted(server, client, body):
    resp = client.post(f"{server.url()}/run", content=body)
    assert resp.status_code == 200 and resp.json()["status"] == "IN_QUEUE", resp.text


def test_worker_bodies_nested_too_deep_are_400(server, client):
    w = {"Authorization": KEY}
    for depth in (MAX_JSON_DEPTH, 980, 5000):
        deep = b'{"output": ' + nested(depth) + b'}'
        assert_error(httpx.post(f"{server.url()}/job-done/w1/none", content=deep, headers=w), 400)
        assert_error(httpx.post(f"{server.url()}/job-stream/w1/none", content=deep, headers=w), 400)
