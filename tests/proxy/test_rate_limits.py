"""Per-key rpm/tpm (``proxy.ratelimit``), driven by the real ``openai`` SDK (no retries) through
real ``podgate serve --config`` processes in front of the shared stack's endpoint: counted in
memory, shared by two processes through the real Redis at 127.0.0.1:6379 (a key prefix of
its own per run), and through a Redis that goes away and comes back (a private
``redis-server``)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import redis

from proxy.keys import hash_key
from tests.conftest import REDIS_URL, require_redis
from tests.proxy.conftest import ProxyProcess, start_proxy, write_config

RPM_KEY = "pg-rate-rpm-0123456789abcdef"
TPM_KEY = "pg-rate-tpm-fedcba9876543210"
FREE_KEY = "pg-rate-free-00112233445566"
SHARED_KEY = "pg-rate-shared-8899aabbccdd"
USER = [{"role": "user", "content": "Say hello"}]
MODELS = {"vllm-c": ("vllm", "era-c")}
#: the test worker's usage: 11 prompt tokens and 7 completion tokens per choice
PROMPT_TOKENS, COMPLETION_TOKENS = 11, 7
REDIS_PASSWORD = "redis-pass-5up3r-s3cret"


def keyed_proxy(stack, tmp: Path, name: str, keys: list[dict], redis_section: str = "") -> ProxyProcess:
    keys_toml = "".join("\n[[keys]]\n" + "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in key.items())
                        for key in keys)
    config = write_config(tmp / f"{name}.toml", stack.endpoint.base, "ep", models=MODELS,
                          extra=redis_section + keys_toml)
    return start_proxy(config, stack.endpoint.api_key, tmp)


def client(proxy: ProxyProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0)


def ask(proxy: ProxyProcess, key: str, n: int = 1):
    """One chat completion; the raw response (headers and the parsed answer)."""
    return client(proxy, key).chat.completions.with_raw_response.create(model="vllm-c", messages=USER, n=n)


def secrets_of(stack) -> list[str]:
    keys = [RPM_KEY, TPM_KEY, FREE_KEY, SHARED_KEY]
    return [*keys, *map(hash_key, keys), stack.endpoint.api_key, REDIS_PASSWORD]


@pytest.fixture(scope="module")
def limited(stack, tmp_path_factory) -> Iterator[ProxyProcess]:
    """One podgate, counting in its own memory: a key with rpm 2, one with tpm 30, one free."""
    proxy = keyed_proxy(stack, tmp_path_factory.mktemp("limits"), "limited", [
        {"name": "team-rpm", "sha256": hash_key(RPM_KEY), "rpm": 2},
        {"name": "team-tpm", "sha256": hash_key(TPM_KEY), "tpm": 30},
        {"name": "team-free", "sha256": hash_key(FREE_KEY)},
    ])
    try:
        yield proxy
    finally:
        proxy.stop()


def test_over_rpm_is_a_429_with_retry_after(limited, stack):
    first = ask(limited, RPM_KEY)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    assert "x-ratelimit-limit-tokens" not in first.headers  # the key has no tpm
    assert ask(limited, RPM_KEY).headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as info:
        client(limited, RPM_KEY).chat.completions.create(model="vllm-c", messages=USER)
    err = info.value
    assert err.status_code == 429
    assert err.body["type"] == "requests" and err.body["code"] == "rate_limit_exceeded" and err.body["param"] is None
    assert err.body["message"].startswith("Rate limit reached for requests per min (RPM) on key team-rpm: "
                                          "Limit 2, Used 2. Please try again in ")
    retry_after = err.response.headers["retry-after"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 60
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert err.response.headers["x-request-id"]  # podgate's usual headers, on the 429 too
    for secret in secrets_of(stack):
        assert secret not in err.response.text + str(err.response.headers)


def test_over_tpm_after_a_big_answer(limited):
    # 11 prompt + 3 × 7 completion tokens: over the key's 30 in one answer
    big = ask(limited, TPM_KEY, n=3)
    assert big.parse().usage.total_tokens == PROMPT_TOKENS + 3 * COMPLETION_TOKENS > 30
    assert big.headers["x-ratelimit-limit-tokens"] == "30"
    assert big.headers["x-ratelimit-remaining-tokens"] == "30"  # counted once it was answered
    with pytest.raises(openai.RateLimitError) as info:
        client(limited, TPM_KEY).chat.completions.create(model="vllm-c", messages=USER)
    err = info.value
    assert err.body["type"] == "tokens" and err.body["code"] == "rate_limit_exceeded"
    assert "tokens per min (TPM) on key team-tpm: Limit 30, Used 30." in err.body["message"]
    assert int(err.response.headers["retry-after"]) >= 1
    assert err.response.headers["x-ratelimit-remaining-tokens"] == "0"


def test_streamed_tokens_count_too(stack, tmp_path):
    proxy = keyed_proxy(stack, tmp_path, "streamed", [{"name": "team-tpm", "sha256": hash_key(TPM_KEY), "tpm": 20}])
    try:
        chunks = list(client(proxy, TPM_KEY).chat.completions.create(model="vllm-c", messages=USER, stream=True))
        assert chunks  # 18 tokens: under 20, the next request still runs
        client(proxy, TPM_KEY).chat.completions.create(model="vllm-c", messages=USER)
        with pytest.raises(openai.RateLimitError):
            client(proxy, TPM_KEY).chat.completions.create(model="vllm-c", messages=USER, stream=True)
    finally:
        proxy.stop()


def test_a_key_without_limits_is_not_limited(limited):
    for _ in range(6):
        answer = ask(limited, FREE_KEY)
        assert answer.parse().choices[0].message.content
        assert not any(h.startswith("x-ratelimit-") for h in answer.headers)


def test_no_key_or_hash_in_429s_or_the_log(limited, stack):
    with pytest.raises(openai.RateLimitError) as info:
        for _ in range(3):
            client(limited, RPM_KEY).models.list()
    log = limited.output()
    assert "note=rate-limited" in log and "key=team-rpm" in log
    for secret in secrets_of(stack):
        assert secret not in log
        assert secret not in info.value.response.text + str(info.value.response.headers)


# -- shared through Redis -------------------------------------------------------------------

@pytest.fixture
def redis_prefix() -> Iterator[str]:
    require_redis()
    prefix = f"podgate-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    admin = redis.Redis.from_url(REDIS_URL)
    try:
        for key in admin.scan_iter(match=f"{prefix}:*", count=500):
            admin.delete(key)
    finally:
        admin.close()


def test_two_processes_share_limits_through_redis(stack, tmp_path, redis_prefix):
    limit = 5
    section = f'\n[redis]\nurl = "{REDIS_URL}"\nkey_prefix = "{redis_prefix}"\n'
    keys = [{"name": "team-shared", "sha256": hash_key(SHARED_KEY), "rpm": limit},
            {"name": "team-tpm", "sha256": hash_key(TPM_KEY), "tpm": 30}]
    proxies = [keyed_proxy(stack, tmp_path, f"replica{i}", keys, section) for i in range(2)]
    try:
        def one(i: int) -> int:
            try:
                ask(proxies[i % 2], SHARED_KEY)
                return 200
            except openai.RateLimitError as exc:
                assert exc.body["type"] == "requests"
                return 429

        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(one, range(3 * limit)))
        assert statuses.count(200) == limit and statuses.count(429) == 2 * limit
        # tokens spent through one replica count in the other
        ask(proxies[0], TPM_KEY, n=3)  # 32 tokens, over 30
        for p in proxies:  # (the first replica's own refusal waits for its count to be stored)
            with pytest.raises(openai.RateLimitError) as info:
                ask(p, TPM_KEY)
            assert info.value.body["type"] == "tokens"
        stored = [k.decode() for k in redis.Redis.from_url(REDIS_URL).keys(f"{redis_prefix}:*")]
        limits = [k for k in stored if ":budget:" not in k]  # the upstream budgets share the prefix
        assert {k.split("/")[1] for k in limits} == {"team-shared", "team-tpm"}  # names, never keys
        for p in proxies:
            assert "unreachable" not in p.output()
    finally:
        for p in proxies:
            p.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_without_redis_requests_are_served_and_limited_per_process(stack, tmp_path):
    """A Redis that is not there: no 500, no refusal for it; the process counts alone, warns
    once, and shares again once a Redis answers at the URL."""
    redis_server = shutil.which("redis-server")
    assert redis_server, "redis-server is needed (it is installed with Redis)"
    port = free_port()  # nothing listens there yet
    prefix = f"podgate-test-{uuid.uuid4().hex[:12]}"
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"
    section = f'\n[redis]\nurl = "{url}"\nkey_prefix = "{prefix}"\n'
    proxy = keyed_proxy(stack, tmp_path, "no-redis", [
        {"name": "team-rpm", "sha256": hash_key(RPM_KEY), "rpm": 3},
        {"name": "team-tpm", "sha256": hash_key(TPM_KEY), "tpm": 100000},
    ], section)
    server = None
    try:
        for _ in range(3):
            ask(proxy, RPM_KEY)
        with pytest.raises(openai.RateLimitError):  # still limited: by this process's own count
            ask(proxy, RPM_KEY)
        for _ in range(3):
            ask(proxy, TPM_KEY)
        log = proxy.output()
        assert log.count("rate limits are counted by each process alone") == 1, log  # one warning for the outage
        assert f"redis://:***@127.0.0.1:{port}/0" in log

        server = subprocess.Popen([redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--requirepass", REDIS_PASSWORD],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        back = redis.Redis(host="127.0.0.1", port=port, password=REDIS_PASSWORD)
        deadline = time.monotonic() + 30
        while "is back: rate limits are shared again" not in proxy.output() and time.monotonic() < deadline:
            ask(proxy, TPM_KEY)
            time.sleep(0.2)
        log = proxy.output()
        assert "is back: rate limits are shared again" in log, log
        ask(proxy, RPM_KEY)  # counted in Redis again, where the key has spent nothing yet
        assert back.keys(f"{prefix}:requests/team-rpm/*")
        assert log.count("rate limits are counted by each process alone") == 1
        for secret in secrets_of(stack):
            assert secret not in log
        back.close()
    finally:
        proxy.stop()
        if server is not None:
            server.terminate()
            server.wait(10)
