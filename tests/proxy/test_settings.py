"""``podgate serve --config``: the TOML settings and their errors (each names the key)."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest

from proxy.settings import DEFAULT_BASE_URL, ProxySettings, SettingsError, load_settings, parse_settings
from tests.proxy.conftest import ROOT

GOOD = """
[server]
host = "0.0.0.0"
port = 9000

[runpod]
api_key_env = "MY_KEY"

[timing]
keepalive_s = 2.5

[[models]]
name = "llama"
endpoint = "abc123"
format = "vllm"
served_model = "meta-llama/Llama-3-8B"

[[models]]
name = "local"
endpoint = "ep"
format = "tgi"
base_url = "http://127.0.0.1:8100/v2"
"""

ENV = {"MY_KEY": "rp_secret_key_123"}


def test_good_file():
    s = parse_settings(GOOD, ENV)
    assert (s.server.host, s.server.port) == ("0.0.0.0", 9000)
    assert s.runpod.base_url == DEFAULT_BASE_URL
    assert s.api_key == "rp_secret_key_123"
    assert s.timing.keepalive_s == 2.5 and s.timing.stream_wait_ms == 1000
    assert [m.name for m in s.models] == ["llama", "local"]
    assert s.upstream_url(s.models[0]) == DEFAULT_BASE_URL
    assert s.upstream_url(s.models[1]) == "http://127.0.0.1:8100/v2"
    assert "rp_secret" not in repr(s)


def test_default_key_variable():
    s = parse_settings('[[models]]\nname = "m"\nendpoint = "e"\nformat = "text"\n', {"RUNPOD_API_KEY": "k"})
    assert s.api_key == "k" and s.server.port == 8000


M = '[[models]]\nname = "m"\nendpoint = "e"\nformat = "vllm"\n'


@pytest.mark.parametrize("text,key,problem", [
    ('[server]\nport = 70000\n' + M, "server.port", "must be 0..65535, got 70000"),
    ('[server]\nport = -1\n' + M, "server.port", "must be 0..65535, got -1"),
    ('[timing]\nkeepalive_s = -1\n' + M, "timing.keepalive_s", "must not be negative"),
    ('[timing]\nupstream_timeout_s = -0.5\n' + M, "timing.upstream_timeout_s", "must not be negative"),
    ('[timing]\nkeepalive_s = 0\n' + M, "timing.keepalive_s", "must be positive"),
    ('[timing]\nmax_connections = 0\n' + M, "timing.max_connections", "must be positive"),
    ('[timing]\ncancel_concurrency = 0\n' + M, "timing.cancel_concurrency", "must be positive"),
    ('[timing]\nrequest_timeout_s = 0.0\n' + M, "timing.request_timeout_s", "must be positive"),
    ('[timing]\npoll_min_ms = 50\npoll_max_ms = 40\n' + M, "timing.poll_min_ms", "must not exceed timing.poll_max_ms"),
    ('mystery = 1\n' + M, "mystery", "unknown key"),  # not "(top level).mystery"
])
def test_range_errors_name_the_key(text, key, problem):
    with pytest.raises(SettingsError) as info:
        parse_settings(text, {"RUNPOD_API_KEY": "k"}, source="podgate.toml")
    assert str(info.value) == f"podgate.toml: {key}: {problem}"


def test_the_ranges_are_declared_on_the_structs():
    """The bounds are msgspec constraints (``Meta``), so decoding is the validation."""
    for raw in ({"server": {"port": 70000}}, {"timing": {"poll_min_ms": -1}}, {"timing": {"keepalive_s": 0}},
                {"timing": {"max_connections": 0}}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(raw, ProxySettings)


@pytest.mark.parametrize("text,key,problem", [
    ('[server]\nport = "x"', "server.port", "Expected `int`, got `str`"),
    ('[server]\nprot = 1', "server.prot", "unknown key"),
    ('[[models]]\nname = "m"\nendpoint = "e"\nformat = "llama"', "models[0].format", "Invalid enum value 'llama'"),
    ('[[models]]\nname = "m"\nformat = "vllm"', "models[0]", "missing required field `endpoint`"),
    ("", "models", "at least one"),
    ('[[models]]\nname = "m"\nendpoint = "e"\nformat = "vllm"\n[[models]]\nname = "m"\nendpoint = "f"\nformat = "vllm"',
     "models[1].name", "duplicate"),
    ('[runpod]\nbase_url = "ftp://x"\n[[models]]\nname = "m"\nendpoint = "e"\nformat = "vllm"', "runpod.base_url", "http(s) URL"),
    ('[timing]\npoll_min_ms = -1\n[[models]]\nname = "m"\nendpoint = "e"\nformat = "vllm"', "timing.poll_min_ms", "negative"),
    ('api_key = "x"\n[[models]]\nname = "m"\nendpoint = "e"\nformat = "vllm"', "api_key", "must not be in the file"),
    ("[server\n", "", "not valid TOML"),
    ('[[models]]\nname = "m"\nendpoint = "e"\nformat = "vllm"\nqueue_format = "vllm"', "models[0].queue_format",
     'only a model with format = "openai"'),
    ('[[models]]\nname = "m"\nendpoint = "e"\nformat = "openai"\nqueue_format = "openai"\npassthrough_max_tokens = 9',
     "models[0].queue_format", "must be a queue format"),
    ('[[models]]\nname = "m"\nendpoint = "e"\nformat = "openai"\nqueue_format = "vllm"',
     "models[0].passthrough_max_tokens", "go together"),
    ('[[models]]\nname = "m"\nendpoint = "e"\nformat = "openai"\npassthrough_max_tokens = 0',
     "models[0].passthrough_max_tokens", "must be positive"),
    ('[server]\ncors_origins = ["https://ok.example", "https://x.example/path"]\n[[models]]\nname = "m"\nendpoint = "e"\n'
     'format = "vllm"', "server.cors_origins[1]", "must be \"*\" or an origin"),
])
def test_errors_name_the_key(text, key, problem):
    with pytest.raises(SettingsError) as info:
        parse_settings(text, {"RUNPOD_API_KEY": "k"}, source="podgate.toml")
    msg = str(info.value)
    assert msg.startswith("podgate.toml: ")
    assert f": {key}:" in msg or not key
    assert problem in msg


def test_missing_key_env():
    with pytest.raises(SettingsError, match=r"runpod.api_key_env: the environment variable it names .* is not set"):
        parse_settings(GOOD, {})
    with pytest.raises(SettingsError, match=r"runpod.api_key_env: environment variable RUNPOD_API_KEY is not set"):
        parse_settings('[[models]]\nname = "m"\nendpoint = "e"\nformat = "text"\n', {})


def test_missing_file(tmp_path):
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(tmp_path / "nope.toml", ENV)


def test_serve_refuses_bad_file_before_starting(tmp_path):
    bad = tmp_path / "podgate.toml"
    bad.write_text('[[models]]\nname = "m"\nendpoint = "e"\nformat = "vlm"\n')
    r = subprocess.run([sys.executable, "-m", "proxy.cli", "serve", "--config", str(bad)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, env={"RUNPOD_API_KEY": "k", "PATH": "/usr/bin"})
    assert r.returncode == 2
    assert "models[0].format" in r.stderr and "'vlm'" in r.stderr
