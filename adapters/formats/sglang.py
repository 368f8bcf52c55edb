"""worker-sglang (``sglang``): OpenAI mode through ``openai_route`` / ``openai_input``.

Input is built as for ``vllm`` (``openai_input`` is always sent: the worker crashes
without it). Output quirks, all handled by the sniffing decoder: non-stream answers
arrive as JSON *strings* (one per line of SGLang's body), stream events are re-serialised
as pretty-printed multi-line ``data:`` events (joined per the SSE spec), and all of them
arrive at once when generation ends (the worker reads the whole response first).
"""

from __future__ import annotations

from adapters.formats.vllm import OpenAIRouteFormat

__all__ = ["SGLangFormat"]


class SGLangFormat(OpenAIRouteFormat):
    name = "sglang"
