"""LangChain's ``ChatOpenAI`` (invoke, stream, bind_tools) and LlamaIndex's ``OpenAILike``
(chat and completions, streaming and not) against podgate, as real users configure them."""

from __future__ import annotations

import pytest

from tests.proxy.handlers.workers import TEXT, TOOLS

EXPECTED = "".join(TEXT)


@pytest.fixture
def chat_openai(stack):
    from langchain_openai import ChatOpenAI

    def make(model: str, **kw):
        return ChatOpenAI(model=model, base_url=stack.base_url, api_key="x", max_retries=0, max_tokens=64, **kw)

    return make


@pytest.mark.parametrize("model", ["vllm-c", "native", "tgi", "pass-c"])
def test_langchain_invoke_and_stream(chat_openai, model):
    llm = chat_openai(model)
    msg = llm.invoke("Say hello")
    assert msg.content == EXPECTED
    assert msg.response_metadata["finish_reason"] == "stop"
    assert msg.usage_metadata["total_tokens"] > 0
    chunks = list(chat_openai(model, stream_usage=True).stream("Say hello"))
    assert "".join(c.content for c in chunks) == EXPECTED
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    assert total.usage_metadata["output_tokens"] > 0


@pytest.mark.parametrize("scenario", ["tools_whole", "tools_split"])
def test_langchain_bind_tools(chat_openai, scenario):
    def get_weather(city: str, unit: str) -> str:
        """Weather in a city."""
        return "sunny"

    def get_time(tz: str) -> str:
        """Time in a timezone."""
        return "noon"

    llm = chat_openai("vllm-c").bind_tools([get_weather, get_time])
    msg = llm.invoke(f"#{scenario} weather?")
    want = [(tid, name) for tid, name, _ in TOOLS]
    assert [(c["id"], c["name"]) for c in msg.tool_calls] == want
    assert msg.tool_calls[0]["args"] == {"city": "Parisé", "unit": "c"}
    total = None
    for chunk in llm.stream(f"#{scenario} weather?"):
        total = chunk if total is None else total + chunk
    assert [(c["id"], c["name"], c["args"]) for c in total.tool_calls] == \
        [(c["id"], c["name"], c["args"]) for c in msg.tool_calls]


@pytest.mark.parametrize("chat_model,completion_model", [("vllm-b", "sglang"), ("pass-b", "pass-c")])
def test_llamaindex_openai_like(stack, chat_model, completion_model):
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    chat = OpenAILike(model=chat_model, api_base=stack.base_url, api_key="x", is_chat_model=True, max_retries=0,
                      timeout=30)
    assert chat.chat([ChatMessage(role="user", content="Say hello")]).message.content == EXPECTED
    streamed = "".join(r.delta or "" for r in chat.stream_chat([ChatMessage(role="user", content="Say hello")]))
    assert streamed == EXPECTED
    # the default (is_chat_model=False) uses /v1/completions
    comp = OpenAILike(model=completion_model, api_base=stack.base_url, api_key="x", max_retries=0, timeout=30)
    assert comp.complete("Say hello").text == EXPECTED
    assert "".join(r.delta or "" for r in comp.stream_complete("Say hello")) == EXPECTED
