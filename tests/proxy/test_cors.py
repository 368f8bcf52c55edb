"""CORS (``[server] cors_origins``): a podgate that allows one browser origin, with a client
key required, answers that origin's preflight (which carries no key) and marks its answers
readable; another origin gets no CORS headers; without the setting there are none at all."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from proxy.keys import hash_key
from tests.proxy.conftest import ProxyProcess, start_proxy, write_config

ALLOWED = "https://chat.example.com"
KEY = "pg-cors-key-0123456789"
PREFLIGHT = {"access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type"}
BODY = {"model": "vllm-c", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def cors(stack, tmp_path_factory) -> Iterator[ProxyProcess]:
    tmp = tmp_path_factory.mktemp("cors")
    config = write_config(tmp / "cors.toml", stack.endpoint.base, "ep", models={"vllm-c": ("vllm", "era-c")})
    text = config.read_text().replace("[server]\n", f'[server]\ncors_origins = ["{ALLOWED}"]\n', 1)
    config.write_text(text + f'\n[[keys]]\nname = "browser"\nsha256 = "{hash_key(KEY)}"\n')
    proxy = start_proxy(config, stack.endpoint.api_key, tmp)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.mark.parametrize("path", ["/chat/completions", "/models"])
def test_a_preflight_from_the_allowed_origin(cors, path):
    with httpx.Client(base_url=cors.base_url, timeout=10) as http:
        r = http.options(path, headers={"origin": ALLOWED, **PREFLIGHT})
    assert r.status_code in (200, 204)
    assert r.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "authorization" in r.headers["access-control-allow-headers"].lower()


def test_the_allowed_origins_answer_is_readable_and_others_get_nothing(cors):
    with httpx.Client(base_url=cors.base_url, timeout=10, headers={"authorization": f"Bearer {KEY}"}) as http:
        ok = http.post("/chat/completions", json=BODY, headers={"origin": ALLOWED})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ALLOWED
        assert "x-request-id" in ok.headers["access-control-expose-headers"]
        refused = http.options("/chat/completions", headers={"origin": "https://evil.example", **PREFLIGHT})
        assert "access-control-allow-origin" not in refused.headers
        other = http.post("/chat/completions", json=BODY, headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        # a preflight needs no key, but the request itself still does; the browser can read its 401
        unauthorized = http.post("/chat/completions", json=BODY, headers={"origin": ALLOWED, "authorization": ""})
        assert unauthorized.status_code == 401 and unauthorized.headers["access-control-allow-origin"] == ALLOWED
        assert "x-request-id" in unauthorized.headers["access-control-expose-headers"]
        elsewhere = http.post("/chat/completions", json=BODY, headers={"origin": "https://evil.example",
                                                                       "authorization": ""})
        assert elsewhere.status_code == 401 and "access-control-allow-origin" not in elsewhere.headers


def test_off_by_default(http):
    r = http.options("/chat/completions", headers={"origin": ALLOWED, **PREFLIGHT})
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-origin" not in http.post("/chat/completions", json=BODY,
                                                          headers={"origin": ALLOWED}).headers
