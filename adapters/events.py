"""Normalized stream events: the one vocabulary between worker formats and OpenAI.

Every worker format's decoder turns its output items into a list of these events;
the OpenAI side (chunks for SSE, or one aggregated response object) is built from
events only, so a new worker format never touches the OpenAI code and vice versa.

``JobOutput`` carries an answer that is one object rather than text (an embeddings list),
as the worker gave it.

``index`` is always the OpenAI choice index (``n > 1`` gives several choices).
"""

from __future__ import annotations

from typing import Any

import msgspec


class TextDelta(msgspec.Struct, tag="text", tag_field="kind", frozen=True):
    """A piece of generated text for one choice."""

    text: str
    index: int = 0


class ReasoningDelta(msgspec.Struct, tag="reasoning", tag_field="kind", frozen=True):
    """A piece of reasoning text (vLLM's ``reasoning`` / ``reasoning_content``)."""

    text: str
    index: int = 0


class ToolCallDelta(msgspec.Struct, tag="tool_call", tag_field="kind", frozen=True):
    """A piece of one tool call, as OpenAI streams them.

    ``tool_index`` is the call's position within the choice. ``id``, ``name`` come
    with the first delta of a call; ``arguments`` is a fragment of the JSON text.
    """

    tool_index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    index: int = 0


class LogprobsDelta(msgspec.Struct, tag="logprobs", tag_field="kind", frozen=True):
    """Log probabilities for the text of one choice, in the OpenAI shape the route
    uses: for chat ``{"content": [...]}``; for completions ``{"tokens", "token_logprobs",
    "top_logprobs", "text_offset"}``."""

    logprobs: Any
    index: int = 0


class Usage(msgspec.Struct, tag="usage", tag_field="kind", frozen=True):
    """Token counts for the whole request (cumulative: the last one wins)."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Finish(msgspec.Struct, tag="finish", tag_field="kind", frozen=True):
    """A choice has ended. ``reason`` is OpenAI's: stop, length, tool_calls,
    content_filter (or a worker's own string, passed through)."""

    reason: str
    index: int = 0


class ErrorEvent(msgspec.Struct, tag="error", tag_field="kind", frozen=True):
    """The worker reported an error inside its output.

    ``status`` is the HTTP status the error deserves (400 for a bad request the
    worker refused, 500 when the worker broke, 504 for a timeout, ...).
    """

    message: str
    type: str = "server_error"
    code: str | int | None = None
    param: str | None = None
    status: int = 500


class JobOutput(msgspec.Struct, tag="output", tag_field="kind", frozen=True):
    """A job's whole answer when it is one object, not text (embeddings): the worker's
    output as it gave it (a one-element aggregate list is unwrapped by its reader)."""

    value: Any


Event = TextDelta | ReasoningDelta | ToolCallDelta | LogprobsDelta | Usage | Finish | ErrorEvent | JobOutput
