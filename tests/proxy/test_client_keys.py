"""Client keys (``[[keys]]``, ``proxy.keys``): a podgate with two keys in front of the shared
stack's endpoint, driven by the real ``openai`` SDK; ``podgate hash-key``; and the key, its
hash and the RunPod key never showing in an answer or the log."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import openai
import pytest

from proxy.keys import hash_key
from proxy.settings import SettingsError, parse_settings
from tests.proxy.conftest import ROOT, ProxyProcess, running_proxy, write_config
from tests.proxy.handlers.workers import TEXT

ALL = "pg-team-all-0123456789abcdef"
ONE = "pg-team-one-fedcba9876543210"
RUNPOD_KEY_NAME = "PODGATE_TEST_RUNPOD_KEY"
USER = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def keyed(stack, tmp_path_factory) -> Iterator[ProxyProcess]:
    tmp = tmp_path_factory.mktemp("keys")
    config = write_config(tmp / "keyed.toml", stack.endpoint.base, "ep",
                          models={"vllm-c": ("vllm", "era-c"), "pass-c": ("openai", "era-c")},
                          extra=f'\n[[keys]]\nname = "team-all"\nsha256 = "{hash_key(ALL)}"\n'
                                f'\n[[keys]]\nname = "team-one"\nsha256 = "{hash_key(ONE)}"\nmodels = ["pass-c"]\n')
    with running_proxy(config, stack.endpoint.api_key, tmp) as proxy:
        yield proxy


def client(proxy: ProxyProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0)


def test_no_key_and_a_wrong_key_are_401(keyed):
    with httpx.Client(base_url=keyed.base_url, timeout=10) as http:
        missing = http.post("/chat/completions", json={"model": "vllm-c", "messages": USER})
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "invalid_api_key" and "didn't provide" in missing.json()["error"]["message"]
        assert http.get("/models").status_code == 401
        assert http.get(f"http://127.0.0.1:{keyed.port}/healthz").status_code == 200  # probes stay open
    with pytest.raises(openai.AuthenticationError) as info:
        client(keyed, "pg-not-a-key-000000").chat.completions.create(model="vllm-c", messages=USER)
    assert info.value.status_code == 401 and "pg-not-a-key" not in str(info.value.body)


@pytest.mark.parametrize("model", ["vllm-c", "pass-c"])
def test_a_right_key_works_on_both_paths(keyed, model):
    answer = client(keyed, ALL).chat.completions.create(model=model, messages=USER)
    assert answer.choices[0].message.content == "".join(TEXT) and answer.model == model
    streamed = "".join(c.choices[0].delta.content or "" for c in client(keyed, ALL).chat.completions.create(
        model=model, messages=USER, stream=True) if c.choices)
    assert streamed == "".join(TEXT)


def test_a_key_limited_to_a_model_sees_only_it(keyed):
    limited = client(keyed, ONE)
    assert [m.id for m in limited.models.list()] == ["pass-c"]
    assert [m.id for m in client(keyed, ALL).models.list()] == ["vllm-c", "pass-c"]
    with pytest.raises(openai.NotFoundError) as info:
        limited.chat.completions.create(model="vllm-c", messages=USER)
    assert info.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        limited.models.retrieve("vllm-c")
    assert limited.chat.completions.create(model="pass-c", messages=USER).model == "pass-c"


def test_no_key_hash_or_runpod_key_in_answers_or_the_log(keyed, stack):
    with httpx.Client(base_url=keyed.base_url, timeout=10) as http:
        answers = [http.post("/chat/completions", json={"model": "vllm-c", "messages": USER},
                             headers={"authorization": f"Bearer {ALL}x"}),
                   http.post("/chat/completions", json={"model": "vllm-c", "messages": [{"role": "user", "content": "#error_raise"}]},
                             headers={"authorization": f"Bearer {ALL}"})]
    log = keyed.output()
    assert "key=team-all" in log  # the key's name is logged
    secrets = [ALL, ONE, hash_key(ALL), hash_key(ONE), stack.endpoint.api_key]
    for text in [log, *(a.text + str(a.headers) for a in answers)]:
        for secret in secrets:
            assert secret not in text


def test_hash_key_reads_stdin_and_the_settings_check_the_hash():
    done = subprocess.run([sys.executable, "-m", "proxy.cli", "hash-key"], input=f"{ALL}\n", cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.strip() == hash_key(ALL) and ALL not in done.stdout
    base = '[[models]]\nname = "m"\nendpoint = "e"\nformat = "vllm"\n[[keys]]\nname = "k"\n'
    with pytest.raises(SettingsError, match=r"keys\[0\]\.sha256"):
        parse_settings(base + 'sha256 = "not-hex"\n', {"RUNPOD_API_KEY": "x"})
    with pytest.raises(SettingsError, match=r"keys\[0\]\.models: no such model: 'other'"):
        parse_settings(base + f'sha256 = "{hash_key("k")}"\nmodels = ["other"]\n', {"RUNPOD_API_KEY": "x"})
