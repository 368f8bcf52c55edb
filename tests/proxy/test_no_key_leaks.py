"""No key ever leaves podgate: not the RunPod key, not a client key, not a key's hash — in
no answer, header, log line or metric, on the paths where a leak is likeliest: errors.

Three podgates in front of the shared stack's endpoint, each with client keys: one with the
right RunPod key, one with a wrong one (every upstream call answers 401), one whose upstream
is unreachable; each is driven through success and failure on both paths (queue and
passthrough, stream and not), then its log and ``/metrics`` are read. Bad settings files
are checked too: their errors must not repeat a key either."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from proxy.keys import hash_key
from tests.proxy.conftest import ROOT, ProxyProcess, start_proxy, write_config

CLIENT = "pg-client-key-5f0c1d2e3a4b"
OTHER = "pg-other-key-9e8d7c6b5a40"
WRONG_RUNPOD = "rp_wrong_key_0a1b2c3d4e5f6a7b"
USER = [{"role": "user", "content": "Say hello"}]
MODELS = {"vllm-c": ("vllm", "era-c"), "pass-c": ("openai", "era-c")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keyed_proxy(tmp, name: str, base: str, runpod_key: str) -> ProxyProcess:
    config = write_config(tmp / f"{name}.toml", base, "ep", models=MODELS,
                          timing={"request_timeout_s": 5.0, "upstream_timeout_s": 3.0, "connect_timeout_s": 1.0},
                          extra=f'\n[[keys]]\nname = "client"\nsha256 = "{hash_key(CLIENT)}"\n'
                                f'\n[[keys]]\nname = "other"\nsha256 = "{hash_key(OTHER)}"\nmodels = ["pass-c"]\n')
    return start_proxy(config, runpod_key, tmp)


@pytest.fixture(scope="module")
def proxies(stack, tmp_path_factory) -> Iterator[dict[str, ProxyProcess]]:
    tmp = tmp_path_factory.mktemp("leaks")
    started = {"right": _keyed_proxy(tmp, "right", stack.endpoint.base, stack.endpoint.api_key),
               "wrong": _keyed_proxy(tmp, "wrong", stack.endpoint.base, WRONG_RUNPOD),
               "unreachable": _keyed_proxy(tmp, "unreachable", f"http://127.0.0.1:{_free_port()}/v2",
                                           stack.endpoint.api_key)}
    try:
        yield started
    finally:
        for proxy in started.values():
            proxy.stop()


def _exchanges(proxy: ProxyProcess) -> list[httpx.Response]:
    """Success and failure on every path a key could leak through."""
    good = {"authorization": f"Bearer {CLIENT}"}
    out = []
    with httpx.Client(base_url=proxy.base_url, timeout=15) as http:
        for model in MODELS:
            for stream in (False, True):
                body = {"model": model, "messages": USER, "stream": stream}
                out.append(http.post("/chat/completions", json=body, headers=good))
                out.append(http.post("/chat/completions", json=body, headers={"authorization": f"Bearer {CLIENT}x"}))
                out.append(http.post("/chat/completions", json={**body, "messages": [
                    {"role": "user", "content": "#error_raise"}]}, headers=good))
            out.append(http.post("/completions", json={"model": model, "prompt": "hi"},
                                 headers={"authorization": f"Bearer {OTHER}"}))
        out.append(http.post("/chat/completions", json={"model": "vllm-c"}, headers=good))  # 400
        out.append(http.post("/chat/completions", content=b"{not json", headers=good))
        out.append(http.post("/chat/completions", json={"model": "vllm-c", "messages": USER}))  # no key
        out.append(http.get("/models", headers={"authorization": f"Basic {CLIENT}"}))
        out.append(http.get("/models", headers=good))
        out.append(http.get(f"http://127.0.0.1:{proxy.port}/readyz"))
        out.append(http.get(f"http://127.0.0.1:{proxy.port}/metrics"))
    return out


def test_no_key_in_answers_headers_logs_or_metrics(proxies, stack):
    secrets = {"client key": CLIENT, "other client key": OTHER, "client key hash": hash_key(CLIENT),
               "other hash": hash_key(OTHER), "RunPod key": stack.endpoint.api_key, "wrong RunPod key": WRONG_RUNPOD}
    first = {}
    for name, proxy in proxies.items():
        exchanges = _exchanges(proxy)
        first[name] = exchanges[0].status_code  # a good key's first completion
        metrics = exchanges[-1]
        assert metrics.status_code == 200 and "podgate_requests_total" in metrics.text
        texts = {f"{name} {r.request.method} {r.request.url.path} → {r.status_code}":
                 r.text + "".join(f"{k}: {v}\n" for k, v in r.headers.items()) for r in exchanges}
        texts[f"{name} log"] = proxy.output()
        for where, text in texts.items():
            for what, secret in secrets.items():
                assert secret not in text, f"{what} in {where}"
    # each podgate went through what it was made for: an answer, RunPod's 401 (podgate's
    # misconfiguration: 500), no upstream at all
    assert first["right"] == 200 and first["wrong"] == 500 and first["unreachable"] in (502, 503), first


@pytest.mark.parametrize("toml", [
    'api_key = "{key}"\n',                                        # the key put in the file
    '[runpod]\napi_key_env = "{key}"\n',                          # the key where its variable's name goes
    '[runpod]\nbase_url = "{key}"\n',                             # the key where a URL goes
    '[[keys]]\nname = "a"\nsha256 = "{key}"\n',                   # a client key where its hash goes
])
def test_a_bad_settings_file_does_not_repeat_a_key(tmp_path, toml):
    key = "rp_secret_value_7d3e2f1a0b9c"
    path = tmp_path / "bad.toml"
    path.write_text(toml.format(key=key) + '\n[[models]]\nname = "m"\nendpoint = "e"\nformat = "vllm"\n')
    done = subprocess.run([sys.executable, "-m", "proxy.cli", "serve", "--config", str(path)], cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "RUNPOD_API_KEY": key}, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2, done.stderr
    assert "podgate serve:" in done.stderr and key not in done.stdout + done.stderr
