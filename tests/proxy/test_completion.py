"""A request as one immutable value (``proxy.completion.Completion``), and the SSE writer
that lives with the streaming code (``proxy.streaming.SSEWriter``). In-process: a real
``Upstreams`` from real settings (its RunPod clients are never called here)."""

from __future__ import annotations

import msgspec
import pytest

from adapters.events import TextDelta
from adapters.openai_protocol import ChatCompletionRequest
from proxy.completion import Completion, read_completion
from proxy.context import RequestContext
from proxy.settings import ModelSettings, ProxySettings
from proxy.streaming import SSEWriter
from proxy.upstreams import Upstreams


@pytest.fixture
async def upstreams():
    settings = ProxySettings(models=[ModelSettings(name="m", endpoint="ep", format="vllm-native", served_model="served")],
                        api_key="k")
    upstreams = Upstreams(settings)
    yield upstreams
    await upstreams.aclose()


def _body(**kw) -> bytes:
    return msgspec.json.encode({"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw})


def test_a_request_is_one_immutable_value(upstreams):
    ctx = RequestContext()
    completion = read_completion(_body(stream=True, mystery=1), "chat", upstreams, ctx)
    assert set(Completion.__struct_fields__) == {"kind", "params", "binding", "format", "job_input", "response_id", "created",
                                                 "model"}
    assert completion.model == "m"  # the name the answer carries (a fallback's too)
    assert isinstance(completion.params, ChatCompletionRequest) and completion.stream
    assert completion.binding is upstreams.binding("m") and completion.job_input
    assert completion.response_id == "chatcmpl-" + ctx.request_id.removeprefix("req_")
    assert (ctx.model, ctx.endpoint, ctx.headers["x-podgate-ignored-params"]) == ("m", "ep", "mystery")
    with pytest.raises(AttributeError):
        completion.job_input = {}  # type: ignore[misc]
    assert completion.new_decoder() is not completion.new_decoder()  # a factory: one per run


async def test_the_stream_writer_closes_with_podgates_count(upstreams):
    ctx = RequestContext()
    completion = read_completion(_body(stream=True, max_tokens=2, stream_options={"include_usage": True}),
                                 "chat", upstreams, ctx)
    writer = SSEWriter(completion)
    assert writer.feed([TextDelta("hello world there")]).startswith(b"data: ")
    closing = [msgspec.json.decode(line[len(b"data: "):]) for line in (await writer.finish(ctx)).split(b"\n\n")
               if line]
    assert closing[0]["choices"][0]["finish_reason"] == "length"  # the count reached max_tokens
    assert closing[-1]["choices"] == [] and closing[-1]["usage"]["completion_tokens"] == 3
    assert ctx.headers["x-podgate-usage-estimated"] == "true" and ctx.note == "usage-estimated"
