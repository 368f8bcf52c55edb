"""A model's ``fallbacks`` take its requests when its endpoint is swamped or refuses the
submit after the retries (issue 11, part 4; ``Upstreams.chain``, ``proxy.fallback``), on every
route: translated completions, passed-through ones (``format = "openai"``), a mix of both,
and embeddings (queue or passthrough).

RunPod is the raw loopback fake (``tests.proxy.fake_runpod``: each endpoint id names how it
behaves), podgate the real ``podgate serve`` process polling ``/health`` every 0.2 s, the
client the real ``openai`` SDK without retries of its own. Each test asks its own models, so
their ``podgate_fallbacks_total`` series (``/metrics``) are the test's alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from proxy.settings import SettingsError, parse_settings
from tests.proxy.conftest import ProxyProcess, running_proxy, write_config
from tests.proxy.test_metrics import scrape

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
    # passed through (``openai``), and mixed with the queue
    "pspare": ("ok", []),
    "pmain": ("limited", ["pspare"]),  # a passthrough refused: its passthrough fallback
    "pbusy": ("swamped", ["pspare"]),
    "psick": ("broken", ["pspare"]),
    "qmix": ("limited", ["pspare"]),  # a translated model refused: a passed-through fallback
    "pmix": ("limited", ["spare"]),  # a passthrough refused: a translated fallback
    # embeddings
    "espare": ("ok", []),
    "emain": ("limited", ["espare"]),
    "ebusy": ("swamped", ["espare"]),
    "esick": ("broken", ["espare"]),
    "epspare": ("ok", []),
    "epmain": ("limited", ["espare"]),  # passed through, refused: a queue fallback
    "emix": ("limited", ["epspare"]),  # queue, refused: a passed-through fallback
    "epboth": ("limited", ["spare", "espare"]),  # a passthrough's fallbacks of both kinds: each route its own
}
#: model role → its format (default ``text``)
FORMATS = {"pspare": "openai", "pmain": "openai", "pbusy": "openai", "psick": "openai", "pmix": "openai",
           "espare": "infinity", "emain": "infinity", "ebusy": "infinity", "esick": "infinity",
           "epspare": "openai", "epmain": "openai", "emix": "infinity", "epboth": "openai"}


def _model(role: str, mode: str) -> str:
    return f"{role}-{mode}"


def _endpoint(role: str, mode: str) -> str:
    return f"{ROLES[role][0]}-{role}-{mode}"


@pytest.fixture(scope="module")
def proxy(fake_runpod, tmp_path_factory) -> Iterator[ProxyProcess]:
    tmp: Path = tmp_path_factory.mktemp("fallbacks")
    extra = {_endpoint(role, mode): {_model(role, mode): (FORMATS.get(role, "text"), "served",
                                                          {"fallbacks": [_model(f, mode) for f in fbs]})}
             for role, (_, fbs) in ROLES.items() for mode in MODES}
    config = write_config(tmp / "fallbacks.toml", fake_runpod.base, "unused", models={}, extra_endpoints=extra,
                          timing={"fallback_queue_threshold": 10}, extra="\n[metrics]\nhealth_interval_s = 0.2\n")
    with running_proxy(config, "rp_fallback_key_0123456789", tmp) as proxy:
        deadline = time.monotonic() + 10  # the swamped endpoints' first readings are in
        swamped = [r for r, (fault, _) in ROLES.items() if fault == "swamped"]
        while any(fake_runpod.health_polls[_endpoint(r, m)] < 2 for r in swamped for m in MODES):
            assert time.monotonic() < deadline, "no /health polls"
            time.sleep(0.05)
        yield proxy


@pytest.fixture(scope="module")
def client(proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)


def fallbacks(proxy: ProxyProcess, model: str) -> dict[str, float]:
    """``podgate_fallbacks_total`` of requests for ``model``, by the fallback that took them."""
    return {dict(labels)["to"]: v for (name, labels), v in scrape(proxy).items()
            if name == "podgate_fallbacks_total" and dict(labels)["model"] == model}


def _ask(client: openai.OpenAI, model: str, *, embed: bool = False) -> tuple[str, str, str]:
    """(text — the embedding's first value for ``embed`` —, model name of the answer,
    x-podgate-served-by)"""
    if embed:
        raw = client.embeddings.with_raw_response.create(model=model, input="hi")
        answer = raw.parse()
        return str(answer.data[0].embedding[0]), answer.model, raw.headers["x-podgate-served-by"]
    if model.endswith("stream"):
        raw = client.chat.completions.with_raw_response.create(model=model, messages=USER, stream=True)
        chunks = list(raw.parse())
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return text, chunks[0].model, raw.headers["x-podgate-served-by"]
    raw = client.chat.completions.with_raw_response.create(model=model, messages=USER)
    answer = raw.parse()
    return answer.choices[0].message.content or "", answer.model, raw.headers["x-podgate-served-by"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("main,spare", [("main", "spare"), ("pmain", "pspare"), ("qmix", "pspare"), ("pmix", "spare")])
def test_a_refused_model_falls_back_after_its_retries(client, proxy, fake_runpod, mode, main, spare):
    main, spare = _model(main, mode), _model(spare, mode)
    before = len(fake_runpod.submits[_endpoint(spare.rsplit("-", 1)[0], mode)])
    assert _ask(client, main) == ("hello", main, spare)  # the client's model name, the server named
    assert len(fake_runpod.submits[_endpoint(main.rsplit("-", 1)[0], mode)]) == 3  # the first try and two retries
    assert len(fake_runpod.submits[_endpoint(spare.rsplit("-", 1)[0], mode)]) == before + 1
    assert fallbacks(proxy, main) == {spare: 1}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("busy,spare", [("busy", "spare"), ("pbusy", "pspare")])
def test_a_swamped_endpoint_is_passed_over(client, proxy, fake_runpod, mode, busy, spare):
    busy_model = _model(busy, mode)
    assert _ask(client, busy_model) == ("hello", busy_model, _model(spare, mode))
    assert fake_runpod.submits[_endpoint(busy, mode)] == []  # never asked
    assert fallbacks(proxy, busy_model) == {_model(spare, mode): 1}


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
@pytest.mark.parametrize("sick,spare", [("sick", "spare"), ("psick", "pspare")])
def test_a_500_does_not_fall_back(client, proxy, fake_runpod, mode, sick, spare):
    """The submit reached RunPod and failed: the job may exist; running it elsewhere too could
    run it twice."""
    with pytest.raises(openai.APIStatusError) as info:
        _ask(client, _model(sick, mode))
    assert info.value.status_code >= 500
    assert info.value.response.headers["x-podgate-served-by"] == _model(sick, mode)
    assert len(fake_runpod.submits[_endpoint(sick, mode)]) == 1
    assert fallbacks(proxy, _model(sick, mode)) == {_model(spare, mode): 0}


@pytest.mark.parametrize("main,spare", [("emain", "espare"), ("ebusy", "espare"), ("epmain", "espare"),
                                        ("emix", "epspare")])
def test_embeddings_fall_back(client, proxy, fake_runpod, main, spare):
    main, spare = _model(main, "sync"), _model(spare, "sync")
    assert _ask(client, main, embed=True) == ("0.5", main, spare)
    assert fallbacks(proxy, main) == {spare: 1}


def test_a_500_on_embeddings_does_not_fall_back(client, proxy, fake_runpod):
    sick = _model("esick", "sync")
    with pytest.raises(openai.APIStatusError) as info:
        _ask(client, sick, embed=True)
    assert info.value.status_code >= 500
    assert info.value.response.headers["x-podgate-served-by"] == sick
    assert len(fake_runpod.submits[_endpoint("esick", "sync")]) == 1


@pytest.mark.parametrize("mode", MODES)
def test_each_route_takes_the_fallbacks_that_serve_it(client, proxy, mode):
    """A passed-through model with a completion fallback and an embedding fallback: chat goes
    to the first, embeddings to the second."""
    both = _model("epboth", mode)
    assert _ask(client, both) == ("hello", both, _model("spare", mode))
    assert _ask(client, both, embed=True) == ("0.5", both, _model("espare", mode))
    assert fallbacks(proxy, both) == {_model("spare", mode): 1, _model("espare", mode): 1}


BASE = ('[runpod]\napi_key_env = "K"\n'
        '[[models]]\nname = "a"\nendpoint = "e1"\nformat = "vllm"\n{a}\n'
        '[[models]]\nname = "b"\nendpoint = "e2"\nformat = "{b_format}"\n')


@pytest.mark.parametrize("a,b_format,problem", [
    ('fallbacks = ["nope"]', "vllm", "models[0].fallbacks[0]: no such model: 'nope'"),
    ('fallbacks = ["a"]', "vllm", "models[0].fallbacks[0]: a model cannot be its own fallback"),
    ('fallbacks = ["b"]', "infinity", "models[0].fallbacks[0]: 'b' cannot serve completion requests "
                                      "(its format is 'infinity')"),
])
def test_fallbacks_are_checked_at_load(a, b_format, problem):
    with pytest.raises(SettingsError) as info:
        parse_settings(BASE.format(a=a, b_format=b_format), {"K": "x"})
    assert problem in str(info.value)


def test_an_embedding_model_falls_back_to_embedding_models_only():
    config = BASE.format(a="", b_format="infinity") + 'fallbacks = ["a"]\n'
    with pytest.raises(SettingsError) as info:
        parse_settings(config, {"K": "x"})
    assert "models[1].fallbacks[0]: 'a' cannot serve embedding requests (its format is 'vllm')" in str(info.value)


@pytest.mark.parametrize("a,b_format,b", [
    ('fallbacks = ["b"]', "tgi", ""),
    ('fallbacks = ["b"]', "openai", ""),  # a translated model, a passed-through fallback
    ("", "openai", 'fallbacks = ["a"]'),  # and the reverse
])
def test_valid_fallbacks_load(a, b_format, b):
    settings = parse_settings(BASE.format(a=a, b_format=b_format) + b + "\n", {"K": "x"})
    assert [m.fallbacks for m in settings.models] == [["b"] if a else [], ["a"] if b else []]
    assert settings.timing.fallback_queue_threshold == 10
