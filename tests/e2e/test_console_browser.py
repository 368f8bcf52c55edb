"""The live console in a real browser: Debian's chromium, headless, driven by Playwright (the
registry's Python package, pointed at the system browser: nothing downloads a browser).

``podgate serve`` (the embedded default: proxy → local endpoint → SmolLM2 on llama.cpp) is
started as the README says; the test opens ``/console`` (open on loopback: no keys), sends a
message from the playground and sees the answer grow, sees that request appear in the live
table and vanish when done, then starts a slow stream from outside with the real ``openai``
SDK, cancels it with the table's button and sees its job end CANCELLED on the local endpoint.
It takes screenshots along the way (into ``$PODGATE_CONSOLE_SCREENSHOTS`` when set — how the
README's copies under docs/console/ are made — else a temporary directory).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from tests.e2e.test_serve_default import HELLO, MODEL, serve, wait_for  # the shared tree fixture

CHROMIUM = "/usr/bin/chromium"
STORY = "Tell me a story about a lighthouse keeper."

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no system chromium at {CHROMIUM}")

__all__ = ["serve"]  # the module-scoped fixture, used here


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    where = os.environ.get("PODGATE_CONSOLE_SCREENSHOTS")
    path = Path(where) if where else tmp_path_factory.mktemp("console-shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def page(browser, serve):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    pg = context.new_page()
    pg.goto(serve.root + "/console")
    pg.wait_for_selector("#status.ok", timeout=30_000)  # "live": the feed's first snapshot came
    try:
        yield pg
    finally:
        context.close()


def live_rows(page) -> list[dict]:
    return page.eval_on_selector_all("#live tbody tr", "rows => rows.map(r => ({request: r.dataset.request, "
                                     "job: r.dataset.job, text: r.textContent}))")


def test_the_banner_prints_the_console_url(serve):
    assert f"Console   {serve.root}/console" in "".join(serve.stdout)


def test_the_page_shows_the_model_and_its_endpoint(page):
    assert MODEL in page.inner_text("#models")
    assert "smollm2" in page.inner_text("#endpoints")
    assert page.locator("#play-model option").all_inner_texts() == [MODEL]


def test_playground_streams_an_answer_and_the_live_table_follows_it(page, shots):
    # record every length the answer takes, and every request the live table shows meanwhile
    page.evaluate("""() => {
        window.lengths = []; window.seen = new Set();
        new MutationObserver(() => window.lengths.push(document.getElementById('play-output').textContent.length))
            .observe(document.getElementById('play-output'), {childList: true, characterData: true, subtree: true});
        new MutationObserver(() => document.querySelectorAll('#live tbody tr').forEach(r => window.seen.add(r.dataset.request)))
            .observe(document.querySelector('#live tbody'), {childList: true});
    }""")

    def long_enough(route) -> None:  # SmolLM2 may say hello in three tokens: a stream shorter than the
        body = route.request.post_data_json  # feed's one-second tick might never show in the table
        route.continue_(post_data=json.dumps({**body, "max_tokens": 250, "ignore_eos": True, "temperature": 0}))

    page.route("**/v1/chat/completions", long_enough)
    page.fill("#play-input", STORY)
    page.click("#play-send")
    page.wait_for_function("() => document.getElementById('play-output').textContent.length > 0", timeout=60_000)
    page.screenshot(path=str(shots / "playground.png"))
    page.wait_for_function("() => !document.getElementById('play-send').disabled", timeout=120_000)
    page.unroute("**/v1/chat/completions")
    lengths = page.evaluate("() => window.lengths")
    assert len(set(lengths) - {0}) >= 2, lengths  # it grew, piece by piece
    stats = page.inner_text("#play-stats")
    assert "TTFT" in stats and "250 tokens" in stats and "tokens/s" in stats, stats  # the usage, at the end
    assert page.evaluate("() => window.seen.size") >= 1  # the playground's request was in the table …
    page.wait_for_function("() => document.querySelectorAll('#live tbody tr').length === 0", timeout=30_000)
    assert page.is_visible("#live-empty")  # … and is gone now it is done


def test_cancel_button_cancels_a_slow_stream_from_outside(page, serve, shots):
    client = OpenAI(base_url=serve.base_url, api_key="anything", max_retries=0, timeout=120)
    outcome: dict = {}

    def slow() -> None:
        try:
            with client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4000, stream=True,
                                                extra_body={"ignore_eos": True}) as stream:
                for _ in stream:
                    pass
            outcome["ended"] = "done"
        except openai.APIError as exc:  # the cancelled job ends the stream with an in-stream error
            outcome["ended"] = exc

    thread = threading.Thread(target=slow, daemon=True)
    thread.start()
    page.wait_for_selector("#live tbody tr:not([data-job=''])", timeout=60_000)
    [row] = wait_for(lambda: [r for r in live_rows(page) if r["job"]] or None, 30, "the stream's row with its job id")
    assert MODEL in row["text"]
    page.wait_for_function("() => +document.querySelector('#live tbody tr td:nth-child(5)').textContent > 1",
                           timeout=60_000)  # tokens are counted as they come
    page.screenshot(path=str(shots / "console.png"), full_page=True)
    page.click(f"#live tbody tr[data-request='{row['request']}'] button.cancel")
    wait_for(lambda: serve.endpoint_status(row["job"])["status"] == "CANCELLED", 30, "the job CANCELLED")
    page.wait_for_function("() => document.querySelectorAll('#live tbody tr').length === 0", timeout=30_000)
    thread.join(30)
    assert isinstance(outcome.get("ended"), openai.APIError), outcome
    page.wait_for_function("() => /Cancels sent\\s*[1-9]/.test(document.getElementById('cost').innerText)",
                           timeout=30_000)
    page.screenshot(path=str(shots / "after-cancel.png"), full_page=True)


ADMIN = "pg-console-admin-0123456789abcdef"


@pytest.fixture(scope="module")
def keyed(serve, tmp_path_factory):
    """A second podgate (``serve --config``) with client keys, in front of the same local
    endpoint: its console needs the admin key, which is also a client key (the playground's)."""
    from proxy.keys import hash_key
    from tests.proxy.conftest import start_proxy

    tmp = tmp_path_factory.mktemp("keyed-console")
    config = tmp / "keyed.toml"
    config.write_text(f'[server]\nhost = "127.0.0.1"\nport = 0\n\n[runpod]\nbase_url = "{serve.endpoint_url}"\n'
                      f'api_key_env = "PODGATE_TEST_RUNPOD_KEY"\n\n[console]\nadmin_sha256 = "{hash_key(ADMIN)}"\n\n'
                      f'[[models]]\nname = "{MODEL}"\nendpoint = "smollm2"\nformat = "vllm"\n\n'
                      f'[[keys]]\nname = "admin"\nsha256 = "{hash_key(ADMIN)}"\n')
    proxy = start_proxy(config, serve.key, tmp)
    try:
        yield proxy.base_url.removesuffix("/v1")
    finally:
        proxy.stop()


def test_keyed_console_asks_for_the_admin_key(browser, keyed, shots):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        response = page.goto(keyed + "/console")
        assert response.status == 401
        page.wait_for_selector("#login:not([hidden])")
        assert page.is_hidden("#console")  # nothing but the form before the key
        page.fill("#key", "not-the-key")
        page.click("#login button")
        page.wait_for_function("() => document.getElementById('login-error').textContent.includes('refused')")
        page.screenshot(path=str(shots / "login.png"))
        page.fill("#key", ADMIN)
        page.click("#login button")
        page.wait_for_selector("#status.ok", timeout=30_000)
        assert page.is_visible("#console") and MODEL in page.inner_text("#models")
        page.fill("#play-input", HELLO[0]["content"])  # the playground sends the key too
        page.click("#play-send")
        page.wait_for_function("() => !document.getElementById('play-send').disabled", timeout=120_000)
        assert page.inner_text("#play-output").strip() and "TTFT" in page.inner_text("#play-stats")
        assert ADMIN not in page.content()  # kept in sessionStorage, never shown
    finally:
        context.close()
