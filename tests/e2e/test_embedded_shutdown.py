"""``podgate serve`` with no config drains on SIGTERM like ``podgate serve --config``
(``proxy.drain``), before it stops its local endpoint and worker: a stream running at the
signal completes; a second signal ends the drain at once, and a stream still running then
ends with an in-stream ``server_shutting_down`` error and ``[DONE]``; the tree exits cleanly.

The real SmolLM2 worker (one at a time: the second stream's tokens come after the first's),
so max_tokens stay small where an answer must complete.
"""

from __future__ import annotations

import json
import signal
import time

from tests.e2e.serve_process import ServeProcess
from tests.proxy.sse_reader import SSEReader

MODEL = "smollm2-135m-instruct"


def _chat(max_tokens: int) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Count from one to a thousand."}],
            "max_tokens": max_tokens, "stream": True, "ignore_eos": True}


def _contents(data: list[str]) -> list[dict]:
    return [json.loads(d) for d in data if d != "[DONE]"]


def test_sigterm_drains_the_proxy_before_the_tree_stops():
    serve = ServeProcess().start()
    try:
        serve.wait_ready()
        short = SSEReader(serve.base_url, _chat(24))
        short.start()
        assert short.first.wait(60) and short.error is None, short.error
        long = SSEReader(serve.base_url, _chat(4000))  # would take most of a minute
        long.start()
        assert long.first.wait(30) and long.error is None, long.error  # its response has started

        serve.proc.send_signal(signal.SIGTERM)
        data = short.result()
        assert data[-1] == "[DONE]"
        chunks = _contents(data)
        assert not any("error" in c for c in chunks), chunks
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"  # all 24 tokens

        deadline = time.monotonic() + 30
        while not any(c.get("choices") and c["choices"][0]["delta"].get("content") for c in _contents(long.data)):
            assert time.monotonic() < deadline, "the second stream never generated"
            time.sleep(0.05)
        assert serve.proc.poll() is None  # still draining (20 s by default)
        serve.proc.send_signal(signal.SIGTERM)  # a second signal: stop waiting
        data = long.result()
        assert data[-1] == "[DONE]"
        error = json.loads(data[-2])["error"]
        assert error["code"] == "server_shutting_down" and error["type"] == "server_error"
        assert serve.proc.wait(30) == 0, serve.output()
    finally:
        serve.stop(signal.SIGKILL)
