"""The console's routes (``proxy.console.routes``) on a real podgate in front of the shared
stack's endpoint (real SDK workers): who gets in (401 with client keys and no admin key,
loopback only when open), the SSE feed's snapshots, and the cancel button's path — a slow
stream started with the real ``openai`` SDK shows in the feed, is cancelled through
``POST /console/cancel/…`` and ends CANCELLED on the endpoint."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import msgspec
import openai
import pytest
from litestar import Request

from proxy.console.routes import Access
from proxy.keys import hash_key
from proxy.settings import ConsoleSettings, KeySettings, ModelSettings, ProxySettings
from tests.proxy.conftest import ProxyProcess, running_proxy, write_config

ADMIN = "pg-console-admin-0123456789abcdef"
CLIENT = "pg-console-client-0123456789abcdef"
SLOW = [{"role": "user", "content": "#slow"}]


@pytest.fixture(scope="module")
def keyed(stack, tmp_path_factory) -> Iterator[ProxyProcess]:
    tmp = tmp_path_factory.mktemp("console")
    config = write_config(tmp / "keyed.toml", stack.endpoint.base, "ep",
                          models={"vllm-c": ("vllm", "era-c"), "pass-c": ("openai", "era-c")},
                          extra=f'\n[console]\nadmin_sha256 = "{hash_key(ADMIN)}"\n\n'
                                f'[[keys]]\nname = "team"\nsha256 = "{hash_key(CLIENT)}"\n')
    with running_proxy(config, stack.endpoint.api_key, tmp) as proxy:
        yield proxy


def root(proxy: ProxyProcess) -> str:
    return proxy.base_url.removesuffix("/v1")


def first_snapshot(url: str, headers: dict | None = None, want=lambda s: True, timeout: float = 20.0) -> dict:
    """Read the feed until a snapshot satisfies ``want`` (bounded: a hang-guard)."""
    deadline = time.monotonic() + timeout
    last = None
    with httpx.Client(timeout=timeout) as c, c.stream("GET", url + "/console/events", headers=headers) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                last = msgspec.json.decode(line[6:])
                if want(last):
                    return last
            if time.monotonic() > deadline:
                break
    raise AssertionError(f"no wanted snapshot within {timeout} s; last: {last}")


@pytest.mark.parametrize("method, path", [("GET", "/console"), ("GET", "/console/events"),
                                          ("POST", "/console/cancel/req_x")])
@pytest.mark.parametrize("auth", [None, f"Bearer {CLIENT}", "Bearer wrong"])
def test_keyed_console_needs_the_admin_key(keyed, method, path, auth):
    headers = {"authorization": auth} if auth else {}
    r = httpx.request(method, root(keyed) + path, headers=headers, timeout=10)
    assert r.status_code == 401
    if path == "/console":  # the page is its own login form: a browser shows it
        assert r.headers["content-type"].startswith("text/html") and b'id="login"' in r.content
    else:
        assert r.json()["error"]["code"] == "invalid_api_key"
    assert ADMIN not in r.text and hash_key(ADMIN) not in r.text


def test_admin_key_opens_the_page_and_the_feed(keyed):
    admin = {"authorization": f"Bearer {ADMIN}"}
    r = httpx.get(root(keyed) + "/console", headers=admin, timeout=10)
    assert r.status_code == 200 and b"/console/static/console.js" in r.content
    assert "default-src 'self'" in r.headers["content-security-policy"] and r.headers["x-frame-options"] == "DENY"
    for name in ("console.js", "console.css"):  # code only, open like the login form
        assert httpx.get(root(keyed) + f"/console/static/{name}", timeout=10).status_code == 200
    assert httpx.get(root(keyed) + "/console/static/nope.js", timeout=10).status_code == 404
    s = first_snapshot(root(keyed), admin)
    assert s["keyed"] is True and [m["name"] for m in s["models"]] == ["vllm-c", "pass-c"]
    assert ADMIN not in msgspec.json.encode(s).decode()


def test_open_console_answers_loopback_only():
    settings = ProxySettings(models=[ModelSettings(name="m", endpoint="ep", format="vllm")])
    access = Access(settings)

    def request(host: str, auth: str | None = None) -> Request:
        headers = [(b"authorization", auth.encode())] if auth else []
        return Request({"type": "http", "method": "GET", "path": "/console", "headers": headers,
                        "client": (host, 5000), "query_string": b""})

    assert access.refusal(request("127.0.0.1")) is None
    assert access.refusal(request("::1")) is None
    assert access.refusal(request("10.1.2.3")).status_code == 403
    with_admin = Access(ProxySettings(models=settings.models, console=ConsoleSettings(admin_sha256=hash_key(ADMIN))))
    assert with_admin.refusal(request("10.1.2.3", f"Bearer {ADMIN}")) is None
    assert with_admin.refusal(request("10.1.2.3", "Bearer nope")).status_code == 403
    keyed_no_admin = Access(ProxySettings(models=settings.models, keys=[KeySettings(name="k", sha256=hash_key(CLIENT))]))
    assert keyed_no_admin.refusal(request("127.0.0.1")).status_code == 401  # keys: loopback is no key


def test_the_open_stack_console_is_open_on_loopback(stack):
    s = first_snapshot(stack.base_url.removesuffix("/v1"))
    assert s["keyed"] is False and "vllm-c" in [m["name"] for m in s["models"]]


def test_cancel_button_path_ends_the_job_cancelled(stack, keyed):
    admin = {"authorization": f"Bearer {ADMIN}"}
    client = openai.OpenAI(base_url=keyed.base_url, api_key=CLIENT, max_retries=0, timeout=60)
    outcome: dict = {}

    def slow_stream() -> None:
        try:
            for chunk in client.chat.completions.create(model="vllm-c", messages=SLOW, stream=True, max_tokens=500):
                outcome.setdefault("chunks", []).append(chunk)
        except Exception as exc:  # the cancelled job ends the stream with an in-stream error
            outcome["error"] = exc

    thread = threading.Thread(target=slow_stream, daemon=True)
    thread.start()
    s = first_snapshot(root(keyed), admin, want=lambda s: any(r["job_id"] for r in s["live"]))
    [row] = s["live"]
    assert row["model"] == "vllm-c" and row["key"] == "team"
    r = httpx.post(root(keyed) + f"/console/cancel/{row['request_id']}", headers=admin, timeout=10)
    assert r.status_code == 202, r.text
    assert r.json()["job_id"] == row["job_id"]
    assert stack.wait_status(row["job_id"], "CANCELLED", timeout=20) == "CANCELLED"
    thread.join(30)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), openai.APIError), outcome  # the stream ends with an in-stream error
    s = first_snapshot(root(keyed), admin, want=lambda s: not s["live"] and s["cost"]["cancels_sent"] >= 1)
    assert s["cost"]["median_lag_s"] is not None
    used = s["endpoints"]["ep"]["budgets"]  # Budgets.usage(): the operations called so far
    assert {"run", "stream", "cancel"} <= set(used) and all(0 <= f <= 1 for f in used.values()), used
    assert "worker" not in s["errors"]  # an operator's cancel is no worker failure
    gone = httpx.post(root(keyed) + f"/console/cancel/{row['request_id']}", headers=admin, timeout=10)
    assert gone.status_code == 404


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "nonstream"])
def test_cancel_button_closes_a_passed_through_request(stack, keyed, stream):
    """No job id to ``/cancel``: the button closes the upstream request, the endpoint cancels
    the job, and the client gets what a cancelled job gives on the queue path."""
    admin = {"authorization": f"Bearer {ADMIN}"}
    client = openai.OpenAI(base_url=keyed.base_url, api_key=CLIENT, max_retries=0, timeout=60)
    before = set(stack.markers.glob("*.started"))
    outcome: dict = {}

    def slow() -> None:
        try:
            if stream:
                for chunk in client.chat.completions.create(model="pass-c", messages=SLOW, stream=True):
                    outcome.setdefault("chunks", []).append(chunk)
            else:
                outcome["answer"] = client.chat.completions.create(
                    model="pass-c", messages=[{"role": "user", "content": "#slow_nonstream"}])
        except openai.APIError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=slow, daemon=True)
    thread.start()
    def ours(s: dict) -> list[dict]:  # (the other case's request may not have left the table yet)
        return [r for r in s["live"] if r["model"] == "pass-c" and r["stream"] is stream]

    [row] = ours(first_snapshot(root(keyed), admin, want=ours))
    assert row["job_id"] is None and row["cancellable"], row
    deadline = time.monotonic() + 15
    while not (jobs := [p for p in stack.markers.glob("*.started") if p not in before]):
        assert time.monotonic() < deadline, "the passed-through job never started"
        time.sleep(0.05)
    job = jobs[0].name.removesuffix(".started")
    r = httpx.post(root(keyed) + f"/console/cancel/{row['request_id']}", headers=admin, timeout=10)
    assert r.status_code == 202, r.text
    assert r.json() == {"request_id": row["request_id"], "job_id": None, "cancel": "upstream request closed"}
    thread.join(30)
    assert not thread.is_alive()
    error = outcome.get("error")
    assert isinstance(error, openai.APIError) and "cancelled" in str(error), outcome
    if not stream:
        assert isinstance(error, openai.APIStatusError) and error.status_code == 502
    assert stack.wait_status(job, "CANCELLED", timeout=20) == "CANCELLED"
    assert stack.wait_marker(f"{job}.cancelled"), "the handler did not see its cancellation"
