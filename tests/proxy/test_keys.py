"""Keys never reach a client or stderr (issue 7 item 6f): the configured key is masked by
value in everything podgate passes on from upstream, whatever its shape, and a settings
file that names the key's value instead of a variable does not print it."""

from __future__ import annotations

import subprocess
import sys

import openai
import pytest

from proxy.settings import SettingsError, parse_settings
from tests.proxy.conftest import ROOT, start_proxy, write_config

#: A key of a shape no pattern knows (not rpa_…, sk-…, Bearer …).
ODD_KEY = "pg.Zr4q.9X2w.live.77c1"
FAULTS = "tests.proxy.handlers.faults:handler"
MODELS = '[[models]]\nname = "m"\nendpoint = "e"\nformat = "vllm"\n'


def test_key_mask():
    from adapters.errors import KeyMask

    mask = KeyMask([ODD_KEY, "", "short"])
    assert mask.text(f"a {ODD_KEY} b {ODD_KEY}") == "a *** b ***"
    assert mask.text("short words stay") == "short words stay"  # too short to be a key
    assert not KeyMask([])


@pytest.mark.parametrize("extra", ["", 'api_key = "x"\n'], ids=["unset", "key-in-file"])
def test_settings_error_never_shows_api_key_env_value(extra):
    text = f'{extra}[runpod]\napi_key_env = "{ODD_KEY}"\n{MODELS}'
    with pytest.raises(SettingsError) as info:
        parse_settings(text, {}, source="podgate.toml")
    msg = str(info.value)
    assert ODD_KEY not in msg
    assert msg.startswith("podgate.toml: api_key:" if extra else "podgate.toml: runpod.api_key_env:")


def test_serve_does_not_print_the_key(tmp_path):
    config = tmp_path / "podgate.toml"
    config.write_text(f'[runpod]\napi_key_env = "{ODD_KEY}"\n{MODELS}')
    r = subprocess.run([sys.executable, "-m", "proxy.cli", "serve", "--config", str(config)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin"})
    assert r.returncode == 2
    assert "runpod.api_key_env" in r.stderr
    assert ODD_KEY not in r.stderr + r.stdout


@pytest.fixture(scope="module")
def leaky(module_endpoint_factory, tmp_path_factory):
    """An endpoint whose key is ``ODD_KEY``, and a worker whose errors quote its key."""
    server = module_endpoint_factory(endpoints=("lk",), api_key=ODD_KEY)
    server.worker(FAULTS, endpoint="lk", concurrency=2)
    tmp = tmp_path_factory.mktemp("leak")
    proxy = start_proxy(write_config(tmp / "lk.toml", server.base, "lk", models={"m": ("text", None)}), ODD_KEY, tmp)
    try:
        yield openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
    finally:
        proxy.stop()


@pytest.mark.parametrize("scenario,stream", [("leak", False), ("leak", True), ("leak_midstream", True)],
                         ids=["nonstream", "stream", "stream-after-first-byte"])
def test_worker_error_quoting_the_key_is_masked(leaky, scenario, stream):
    messages = [{"role": "user", "content": f"#{scenario}"}]
    text = ""
    with pytest.raises(openai.APIError) as info:
        if not stream:
            leaky.chat.completions.create(model="m", messages=messages)
        for chunk in leaky.chat.completions.create(model="m", messages=messages, stream=True):
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    err = info.value
    assert "upstream refused the credential *** for this job" in err.message
    assert ODD_KEY not in str(err.body) and ODD_KEY not in err.message
    if scenario == "leak_midstream":
        assert text == "partial " and not isinstance(err, openai.APIStatusError)  # an in-stream error
    elif not stream:
        assert isinstance(err, openai.InternalServerError)
