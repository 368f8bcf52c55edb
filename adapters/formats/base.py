"""What every worker format shares: the interface, the job input it returns, and the one
policy for parameters a format cannot honour.

``chat_input`` / ``completion_input`` return a ``JobInput``: ``input`` is the RunPod job
``input`` object to send, ``ignored`` lists the request parameters the worker cannot
honour but that could be dropped without changing the answer's meaning (for a response
header). Parameters that would change the meaning raise ``UnsupportedParameter`` (400).

``Capabilities`` says what a format can do; ``check_chat`` / ``check_completion`` apply
the policy of shared/DESIGN.md ("Unsupported parameters") to a request once, for every
format: e.g. ``tools`` (function or custom) with ``tool_choice`` absent / ``"auto"`` /
``"none"`` / ``allowed_tools`` in mode ``"auto"`` on a format without tools → ignored; a
choice that forces a call (``"required"``, a named tool, ``allowed_tools`` in mode
``"required"``) → 400. Sampling parameters that a format does not pass on to its worker
(``Capabilities.honours``; e.g. ``presence_penalty`` for TGI) are named as ignored.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from adapters.errors import UnsupportedParameter
from adapters.events import Event
from adapters.openai_protocol import ChatCompletionRequest, CompletionRequest, Kind

__all__ = [
    "JobInput", "WorkerFormat", "OutputDecoder", "Capabilities", "check_chat", "check_completion",
    "SAMPLING", "finish_for_count",
]


class JobInput(msgspec.Struct):
    """A RunPod job ``input`` plus the names of request parameters that were ignored."""

    input: dict[str, Any]
    ignored: list[str] = []


class OutputDecoder(Protocol):
    def feed(self, item: Any) -> list[Event]:
        """One ``/stream`` item's ``output`` value → events."""

    def close(self) -> list[Event]:
        """The stream ended: flush (a partial SSE event, synthesised finish reasons)."""

    def decode_final(self, output: Any) -> list[Event]:
        """A whole ``/status`` or ``/runsync`` ``output`` (aggregate list unwrapped) → events,
        ``close()`` included."""


class WorkerFormat(Protocol):
    name: str

    def chat_input(self, req: ChatCompletionRequest, model: str, *, stream: bool) -> JobInput: ...

    def completion_input(self, req: CompletionRequest, model: str, *, stream: bool) -> JobInput: ...

    def decoder(
        self, kind: Kind, *, request: ChatCompletionRequest | CompletionRequest | None = None
    ) -> OutputDecoder:
        """A fresh decoder for one job. ``request`` (optional) lets it know ``n`` and the
        token limit, to synthesise finish reasons for formats that have none."""


#: The sampling parameters of a request (OpenAI's and vLLM's): a worker that lacks one still
#: answers the request, so a format that does not pass one on names it as ignored.
#: (``max_tokens`` every format passes; ``n``, ``logprobs``, ``logit_bias`` have rules of
#: their own; bookkeeping such as ``user`` or ``metadata`` changes nothing.)
SAMPLING = (
    "temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty",
    "top_k", "min_p", "repetition_penalty", "min_tokens", "ignore_eos", "skip_special_tokens",
    "include_stop_str_in_output", "stop_token_ids",
)


class Capabilities(msgspec.Struct, frozen=True):
    # the SAMPLING parameters the format passes on to its worker (None: all of them)
    honours: frozenset[str] | None = None
    tools: bool = False
    logprobs: bool = False
    multiple_choices: bool = False  # n > 1
    response_format: bool = False  # json_object / json_schema
    logit_bias: bool = False
    non_text_content: bool = False  # image / audio / file parts
    tool_messages: bool = False  # tool role, assistant tool_calls in history
    chat_template_kwargs: bool = False
    extra_params: bool = False  # unknown / vLLM-only keys forwarded to the worker
    echo: bool = False
    suffix: bool = False
    best_of: bool = False
    prompt_lists: bool = False  # several prompts, token-id prompts


def _common(req: ChatCompletionRequest | CompletionRequest, caps: Capabilities, ignored: list[str]) -> None:
    if req.n is not None and req.n > 1 and not caps.multiple_choices:
        raise UnsupportedParameter("n", "This model's worker returns one choice only: 'n' must be 1.")
    if req.logit_bias and not caps.logit_bias:
        raise UnsupportedParameter("logit_bias", "This model's worker does not support 'logit_bias'.")
    rf = req.response_format
    if rf is not None and rf.type != "text" and not caps.response_format:
        raise UnsupportedParameter(
            "response_format", f"This model's worker does not support response_format '{rf.type}'."
        )
    if caps.honours is not None:
        ignored.extend(name for name in SAMPLING if name not in caps.honours and getattr(req, name) is not None)
    if not caps.extra_params:
        ignored.extend(sorted(req.extra_body()))


def check_chat(req: ChatCompletionRequest, caps: Capabilities) -> list[str]:
    """Apply the unsupported-parameter policy; return the ignored parameter names."""
    ignored: list[str] = []
    _common(req, caps, ignored)
    if (req.logprobs or req.top_logprobs) and not caps.logprobs:
        raise UnsupportedParameter("logprobs", "This model's worker cannot return log probabilities.")
    forced = _forces_call(req.tool_choice)
    if req.tools and not caps.tools:
        if forced:
            raise UnsupportedParameter(
                "tool_choice", "This model's worker cannot call tools, so 'tool_choice' cannot be honoured."
            )
        ignored.append("tools")
        if req.tool_choice is not None:
            ignored.append("tool_choice")
    elif forced and not req.tools:
        raise UnsupportedParameter("tool_choice", "'tool_choice' needs 'tools'.")
    if req.chat_template_kwargs and not caps.chat_template_kwargs:
        raise UnsupportedParameter(
            "chat_template_kwargs", "This model's worker does not accept 'chat_template_kwargs'."
        )
    if req.reasoning_effort is not None and not caps.extra_params:
        ignored.append("reasoning_effort")
    for i, m in enumerate(req.messages):
        if not caps.tool_messages and (m.role in ("tool", "function") or m.tool_calls or m.function_call):
            raise UnsupportedParameter(
                f"messages[{i}]", "This model's worker does not support tool calls or tool results in messages."
            )
        if not caps.non_text_content and isinstance(m.content, list):
            for p in m.content:
                if p.type != "text":
                    raise UnsupportedParameter(
                        f"messages[{i}].content", f"This model's worker accepts text only, not '{p.type}' parts."
                    )
    return ignored


def _forces_call(choice: Any) -> bool:
    """Whether a ``tool_choice`` obliges the model to call a tool."""
    if choice is None or isinstance(choice, str):
        return choice == "required"
    return choice.forces_call


def check_completion(req: CompletionRequest, caps: Capabilities) -> list[str]:
    """Apply the unsupported-parameter policy; return the ignored parameter names."""
    ignored: list[str] = []
    _common(req, caps, ignored)
    if req.logprobs is not None and not caps.logprobs:
        raise UnsupportedParameter("logprobs", "This model's worker cannot return log probabilities.")
    if req.echo and not caps.echo:
        raise UnsupportedParameter("echo", "This model's worker does not support 'echo'.")
    if req.suffix and not caps.suffix:
        raise UnsupportedParameter("suffix", "This model's worker does not support 'suffix'.")
    if req.best_of is not None and req.best_of > 1 and not caps.best_of:
        raise UnsupportedParameter("best_of", "This model's worker does not support 'best_of'.")
    if not caps.prompt_lists and not isinstance(req.prompt, str):
        if not (len(req.prompt) == 1 and isinstance(req.prompt[0], str)):
            raise UnsupportedParameter("prompt", "This model's worker accepts a single text prompt only.")
    return ignored


def finish_for_count(completion_tokens: int, limit: int | None) -> str:
    """The finish reason of a choice the worker gave none: ``"length"`` when it reached
    the request's token limit, else ``"stop"``."""
    return "length" if limit and completion_tokens >= limit else "stop"


def single_prompt(req: CompletionRequest) -> str:
    """The prompt as one string (after ``check_completion`` without ``prompt_lists``)."""
    return req.prompt if isinstance(req.prompt, str) else req.prompt[0]  # type: ignore[return-value]
