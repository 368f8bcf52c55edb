"""A model's ``fallbacks`` take its requests when its endpoint is swamped or refuses the
submit after the retries (issue 11, part 4; ``Upstreams.chain``, ``completion.candidates``).

RunPod is the raw loopback fake (``tests.proxy.fake_runpod``: each endpoint id names how it
behaves), podgate the real ``podgate serve`` process polling ``/health`` every 0.2 s, the
client the real ``openai`` SDK without retries of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from proxy.settings import SettingsError, parse_settings
from tests.proxy.conftest import start_proxy, write_config

USER = [{"role": "user", "content": "hi"}]
MODES = ("stream", "sync")

#: model role → (its endpoint's misbehaviour, its fallbacks' roles)
ROLES = {
    "spare": ("ok", []),
    "main": ("limited", ["spare"]),  # always 429: the fallback takes over after the retries
    "busy": ("swamped", ["spare"]),  # no workers and a queue: passed over without a submit
    "waiting": ("queued", ["spare"]),  # a queue but an idle worker: served by itself
    "sick": ("broken", ["spare"]),  # 500: the job may exist, so no fallback either
    "stuck": ("swamped", ["stuck2"]),  # every endpoint swamped: served by itself
    "stuck2": ("swamped", []),
}


def _model(role: str, mode: str) -> str:
    return f"{role}-{mode}"


def _endpoint(role: str, mode: str) -> str:
    return f"{ROLES[role][0]}-{role}-{mode}"


@pytest.fixture(scope="module")
def client(fake_runpod, tmp_path_factory) -> Iterator[openai.OpenAI]:
    tmp: Path = tmp_path_factory.mktemp("fallbacks")
    extra = {_endpoint(role, mode): {_model(role, mode): ("text", None, {"fallbacks": [_model(f, mode) for f in fbs]})}
             for role, (_, fbs) in ROLES.items() for mode in MODES}
    config = write_config(tmp / "fallbacks.toml", fake_runpod.base, "unused", models={}, extra_endpoints=extra,
                          timing={"fallback_queue_threshold": 10})
    with open(config, "a") as f:
        f.write("\n[metrics]\nhealth_interval_s = 0.2\n")
    proxy = start_proxy(config, "rp_fallback_key_0123456789", tmp)
    try:
        deadline = time.monotonic() + 10  # the swamped endpoints' first readings are in
        while any(fake_runpod.health_polls[_endpoint(r, m)] < 2 for r in ("busy", "stuck", "stuck2") for m in MODES):
            assert time.monotonic() < deadline, "no /health polls"
            time.sleep(0.05)
        yield openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
    finally:
        proxy.stop()


def _ask(client: openai.OpenAI, model: str) -> tuple[str, str, str]:
    """(text, model name of the answer, x-podgate-served-by)"""
    if model.endswith("stream"):
        raw = client.chat.completions.with_raw_response.create(model=model, messages=USER, stream=True)
        chunks = list(raw.parse())
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return text, chunks[0].model, raw.headers["x-podgate-served-by"]
    raw = client.chat.completions.with_raw_response.create(model=model, messages=USER)
    answer = raw.parse()
    return answer.choices[0].message.content or "", answer.model, raw.headers["x-podgate-served-by"]


@pytest.mark.parametrize("mode", MODES)
def test_a_refused_model_falls_back_after_its_retries(client, fake_runpod, mode):
    main, spare = _model("main", mode), _model("spare", mode)
    before = len(fake_runpod.submits[_endpoint("spare", mode)])
    assert _ask(client, main) == ("hello", main, spare)  # the client's model name, the server named
    assert len(fake_runpod.submits[_endpoint("main", mode)]) == 3  # the first try and two retries
    assert len(fake_runpod.submits[_endpoint("spare", mode)]) == before + 1


@pytest.mark.parametrize("mode", MODES)
def test_a_swamped_endpoint_is_passed_over(client, fake_runpod, mode):
    busy = _model("busy", mode)
    assert _ask(client, busy) == ("hello", busy, _model("spare", mode))
    assert fake_runpod.submits[_endpoint("busy", mode)] == []  # never asked


@pytest.mark.parametrize("mode", MODES)
def test_a_queue_with_workers_is_not_swamped(client, fake_runpod, mode):
    waiting = _model("waiting", mode)
    assert _ask(client, waiting) == ("hello", waiting, waiting)
    assert len(fake_runpod.submits[_endpoint("waiting", mode)]) == 1


@pytest.mark.parametrize("mode", MODES)
def test_when_every_endpoint_is_swamped_the_model_itself_serves(client, fake_runpod, mode):
    stuck = _model("stuck", mode)
    assert _ask(client, stuck) == ("hello", stuck, stuck)
    assert fake_runpod.submits[_endpoint("stuck2", mode)] == []


@pytest.mark.parametrize("mode", MODES)
def test_a_500_does_not_fall_back(client, fake_runpod, mode):
    """The submit reached RunPod and failed: the job may exist; running it elsewhere too could
    run it twice."""
    with pytest.raises(openai.APIStatusError) as info:
        _ask(client, _model("sick", mode))
    assert info.value.status_code >= 500
    assert info.value.response.headers["x-podgate-served-by"] == _model("sick", mode)
    assert len(fake_runpod.submits[_endpoint("sick", mode)]) == 1


BASE = ('[runpod]\napi_key_env = "K"\n'
        '[[models]]\nname = "a"\nendpoint = "e1"\nformat = "vllm"\n{a}\n'
        '[[models]]\nname = "b"\nendpoint = "e2"\nformat = "{b_format}"\n')


@pytest.mark.parametrize("a,b_format,problem", [
    ('fallbacks = ["nope"]', "vllm", "models[0].fallbacks[0]: no such model: 'nope'"),
    ('fallbacks = ["a"]', "vllm", "models[0].fallbacks[0]: a model cannot be its own fallback"),
    ('fallbacks = ["b"]', "openai", "models[0].fallbacks[0]: 'b' is not translated into completion jobs"),
    ('fallbacks = ["b"]', "infinity", "models[0].fallbacks[0]: 'b' is not translated into completion jobs"),
])
def test_fallbacks_are_checked_at_load(a, b_format, problem):
    with pytest.raises(SettingsError) as info:
        parse_settings(BASE.format(a=a, b_format=b_format), {"K": "x"})
    assert problem in str(info.value)


def test_a_passed_through_model_has_no_fallbacks():
    config = BASE.format(a="", b_format="openai") + 'fallbacks = ["a"]\n'
    with pytest.raises(SettingsError) as info:
        parse_settings(config, {"K": "x"})
    assert "models[1].fallbacks: only a model podgate translates" in str(info.value)


def test_valid_fallbacks_load():
    settings = parse_settings(BASE.format(a='fallbacks = ["b"]', b_format="tgi"), {"K": "x"})
    assert settings.models[0].fallbacks == ["b"]
    assert settings.timing.fallback_queue_threshold == 10
