"""podgate's proxy settings: the TOML file (``podgate serve --config podgate.toml``).

One home for the proxy's configuration. The file is decoded with ``msgspec.toml`` straight
into the Structs below (decoding is the validation); any problem becomes a ``SettingsError``
whose message names the key (``models[1].format``) and what is wrong with it, so that
``podgate serve`` can refuse to start with one clear line.

    [server]
    host = "127.0.0.1"
    port = 8000
    cors_origins = ["https://chat.example.com"]   # optional; default none (no CORS)
    drain_s = 20.0                           # after SIGTERM, running requests may finish this long

    [runpod]
    base_url = "https://api.runpod.ai/v2"   # default
    api_key_env = "RUNPOD_API_KEY"          # default; the key itself never goes in the file

    [timing]                                 # every knob optional (defaults below)
    keepalive_s = 10.0

    [[models]]
    name = "llama-3-8b"                      # the model id clients send
    endpoint = "abc123xyz"                   # the RunPod endpoint id
    format = "vllm"                          # vllm | vllm-native | sglang | tgi | text | openai
                                             # (chat, completions); infinity | infinity-native
                                             # (embeddings)
    served_model = "meta-llama/Meta-Llama-3-8B-Instruct"   # optional: what the worker expects
    base_url = "http://127.0.0.1:8100/v2"    # optional per-model upstream override

    [[keys]]                                 # optional; with none, podgate is open
    name = "team-a"                          # shown in logs, never the key
    sha256 = "<hex>"                         # podgate hash-key < key.txt
    models = ["llama-3-8b"]                  # optional; default: every model

    [[models]]                               # passed through to the endpoint's /openai/v1
    name = "qwen"
    endpoint = "def456uvw"
    format = "openai"
    queue_format = "vllm"                    # optional, with passthrough_max_tokens: requests
    passthrough_max_tokens = 4096            #   for more tokens (or no limit) take the queue

The API key is read from the environment (``RUNPOD_API_KEY`` or the variable named by
``api_key_env``) and kept in ``ProxySettings.api_key``; it is never printed (``repr`` hides it),
and no error repeats the value of ``api_key_env`` (someone may have put the key itself
there). ``ProxySettings.secrets()`` lists the configured keys, which the proxy masks by value in
everything it passes on from upstream.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from adapters.validation import read_validation_error, type_at, value_at

FormatName = Literal["vllm", "vllm-native", "sglang", "tgi", "text", "openai", "infinity", "infinity-native"]
PASSTHROUGH = "openai"
"""The ``format`` of a model passed through to its endpoint's OpenAI gateway (``/openai/v1``)."""
DEFAULT_BASE_URL = "https://api.runpod.ai/v2"
DEFAULT_KEY_ENV = "RUNPOD_API_KEY"

# The ranges are msgspec constraints, so decoding is the validation; ``_range_problem`` words
# a broken one for the settings' errors.
Port = Annotated[int, Meta(ge=0, le=65535)]
Seconds = Annotated[float, Meta(ge=0)]
Millis = Annotated[int, Meta(ge=0)]
Count = Annotated[int, Meta(ge=0)]
PositiveSeconds = Annotated[float, Meta(gt=0)]
PositiveCount = Annotated[int, Meta(ge=1)]


class SettingsError(ValueError):
    """The settings file is unusable; the message names the key and the problem."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base for TOML sections: an unknown key is an error (typos must not pass silently)."""


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: Port = 8000
    cors_origins: list[str] = msgspec.field(default_factory=list)
    """Browser origins allowed to call podgate (``["https://chat.example.com"]``, or
    ``["*"]``); none: no CORS headers, preflights refused (the default)."""
    drain_s: Seconds = 20.0
    """Graceful shutdown (``proxy.drain``): after SIGTERM, requests already running may finish
    for this long; then streams still running end with an in-stream ``server_shutting_down``
    error and ``[DONE]``, waiting requests get 503, and their jobs are cancelled. Keep
    Kubernetes' ``terminationGracePeriodSeconds`` above ``preStop`` + ``drain_s`` + 10."""


class RunPodSettings(_Section):
    base_url: str = DEFAULT_BASE_URL
    api_key_env: str = DEFAULT_KEY_ENV


class TimingSettings(_Section):
    """Timing knobs; production defaults, all settable so tests can shorten them."""

    keepalive_s: PositiveSeconds = 10.0
    """An SSE ``: keep-alive`` comment after this long without a byte to the client."""
    first_byte_wait_s: Seconds = 1.0
    """A stream's headers wait up to this long for the job's first event, so that an error
    known early still gets a real HTTP status instead of an in-stream error."""
    stream_wait_ms: Millis = 1000
    """``?wait=`` sent with ``/stream`` polls (the upstream may hold the poll that long)."""
    poll_min_ms: Millis = 25
    """First pause after an empty ``/stream`` poll that the upstream did not hold."""
    poll_max_ms: Millis = 1000
    """Longest pause between polls while the job is idle (backoff doubles up to this)."""
    runsync_wait_ms: Millis = 2000
    """``?wait=`` for ``/runsync``; after it, the job's ``/stream`` is read as for a stream.
    It bounds how late the cancel of an abandoned non-streaming request can be (the job id
    arrives with the answer)."""
    restart_check_s: Seconds = 2.0
    """A job's output that resumes after a pause this long is checked (one ``/status`` at
    the pause and one at the resume) to be from the same run: a job whose worker was lost
    is re-queued and runs again from the start, and its output must not be appended to
    what the first run sent. Keep it below the upstream's lost-worker timeout."""
    request_timeout_s: PositiveSeconds = 600.0
    """A request still unanswered after this long is cancelled upstream (504)."""
    connect_timeout_s: Seconds = 10.0
    upstream_timeout_s: Seconds = 30.0
    """Read timeout for one upstream call, on top of any ``wait`` it asked the upstream for."""
    max_connections: PositiveCount = 400
    """Per upstream base URL: RunPod allows 400 concurrent ``/runsync``/``/status``/``/stream``."""
    cancel_concurrency: PositiveCount = 20
    """Concurrent ``/cancel`` calls (RunPod allows 20 per endpoint)."""
    cancel_retries: Count = 3


class ModelSettings(_Section):
    name: str
    endpoint: str
    format: FormatName
    served_model: str | None = None
    base_url: str | None = None
    queue_format: FormatName | None = None
    """For a passed-through model (``format = "openai"``): the worker format of the queue path
    that takes the requests RunPod's gateway might cut (see ``passthrough_max_tokens``)."""
    passthrough_max_tokens: PositiveCount | None = None
    """With ``queue_format``: a request asking for more tokens than this, or setting no limit,
    goes through the queue (``/run`` + ``/stream``) instead of the gateway, whose streams
    RunPod cuts after a few minutes."""


Sha256Hex = Annotated[str, Meta(pattern="^[0-9a-f]{64}$")]


class KeySettings(_Section):
    """A client key (``[[keys]]``): only its SHA-256 is stored (``podgate hash-key``)."""

    name: str
    """Shown in logs instead of the key."""
    sha256: Sha256Hex
    models: list[str] | None = None
    """The models the key may use (default: every model); others answer 404 as if absent."""


class ProxySettings(_Section):
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    runpod: RunPodSettings = msgspec.field(default_factory=RunPodSettings)
    timing: TimingSettings = msgspec.field(default_factory=TimingSettings)
    models: list[ModelSettings] = msgspec.field(default_factory=list)
    keys: list[KeySettings] = msgspec.field(default_factory=list)
    """Client keys; none: podgate is open to whoever reaches it."""
    api_key: str = ""
    """Filled from the environment by ``load_settings``; not a TOML key."""

    def __repr__(self) -> str:  # never show the key
        models = [m.name for m in self.models]
        return f"ProxySettings(server={self.server!r}, runpod={self.runpod!r}, models={models!r})"

    def secrets(self) -> list[str]:
        """The configured keys: values that must never reach a client or a log."""
        return [self.api_key] if self.api_key else []

    def upstream_url(self, model: ModelSettings) -> str:
        return (model.base_url or self.runpod.base_url).rstrip("/")


def parse_settings(data: bytes | str, env: Mapping[str, str] | None = None, *,
                   source: str = "settings") -> ProxySettings:
    """Decode TOML text into ProxySettings and check what decoding cannot; raise SettingsError."""
    env = os.environ if env is None else env
    try:
        settings = msgspec.toml.decode(data, type=ProxySettings)
    except msgspec.ValidationError as exc:
        failure = read_validation_error(exc)
        problem = failure.problem
        key = failure.path or ""
        if failure.unknown is not None:  # the path is the unknown field's parent
            key = f"{key}.{failure.unknown}" if key else failure.unknown
            problem = "unknown key"
        elif failure.bound is not None:
            problem = _range_problem(key, data)
        elif key.endswith(".sha256"):
            problem = "must be the key's SHA-256 in lowercase hex, as `podgate hash-key < key.txt` prints it"
        raise SettingsError(f"{source}: {key or '(top level)'}: {problem}") from None
    except msgspec.DecodeError as exc:
        raise SettingsError(f"{source}: not valid TOML: {exc}") from None
    # the value of api_key_env is never repeated in an error: it may be the key itself
    if "api_key" in _raw_keys(data):
        raise SettingsError(f"{source}: api_key: the key must not be in the file; set the environment "
                            f"variable that runpod.api_key_env names (default {DEFAULT_KEY_ENV})")
    _check(settings, source)
    name = settings.runpod.api_key_env
    key = env.get(name, "")
    if not key:
        which = f"environment variable {name}" if name == DEFAULT_KEY_ENV else \
            "the environment variable it names (the variable's name, not the key)"
        raise SettingsError(f"{source}: runpod.api_key_env: {which} is not set")
    settings.api_key = key
    return settings


def load_settings(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> ProxySettings:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise SettingsError(f"{p}: cannot read: {exc.strerror or exc}") from None
    return parse_settings(data, env, source=str(p))


def _raw_keys(data: bytes | str) -> set[str]:
    try:
        raw = msgspec.toml.decode(data)
    except msgspec.DecodeError:
        return set()
    return set(raw) if isinstance(raw, dict) else set()


def _check(s: ProxySettings, source: str) -> None:
    def fail(key: str, problem: str) -> None:
        raise SettingsError(f"{source}: {key}: {problem}")

    _check_url(s.runpod.base_url, "runpod.base_url", fail)
    for i, origin in enumerate(s.server.cors_origins):
        if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
            fail(f"server.cors_origins[{i}]", f'must be "*" or an origin like "https://chat.example.com", got {origin!r}')
    if not s.runpod.api_key_env:
        fail("runpod.api_key_env", "must name an environment variable")
    if not s.models:
        fail("models", "at least one [[models]] entry is required")
    seen: set[str] = set()
    for i, m in enumerate(s.models):
        for field in ("name", "endpoint"):
            if not getattr(m, field).strip():
                fail(f"models[{i}].{field}", "must not be empty")
        if "/" in m.endpoint or "?" in m.endpoint:
            fail(f"models[{i}].endpoint", f"must be a RunPod endpoint id, got {m.endpoint!r}")
        if m.name in seen:
            fail(f"models[{i}].name", f"duplicate model name {m.name!r}")
        seen.add(m.name)
        if m.base_url is not None:
            _check_url(m.base_url, f"models[{i}].base_url", fail)
        if m.queue_format is not None and m.format != PASSTHROUGH:
            fail(f"models[{i}].queue_format", f'only a model with format = "{PASSTHROUGH}" has a queue fallback')
        if m.queue_format == PASSTHROUGH:
            fail(f"models[{i}].queue_format", "must be a queue format (vllm, vllm-native, sglang, tgi or text)")
        if (m.passthrough_max_tokens is None) != (m.queue_format is None):
            fail(f"models[{i}].passthrough_max_tokens", "queue_format and passthrough_max_tokens go together")
    names = {m.name for m in s.models}
    key_names: set[str] = set()
    for i, k in enumerate(s.keys):
        if not k.name.strip():
            fail(f"keys[{i}].name", "must not be empty")
        if k.name in key_names:
            fail(f"keys[{i}].name", f"duplicate key name {k.name!r}")
        key_names.add(k.name)
        unknown = [m for m in k.models or () if m not in names]
        if unknown:
            fail(f"keys[{i}].models", f"no such model: {', '.join(map(repr, unknown))}")
    if s.timing.poll_min_ms > s.timing.poll_max_ms:
        fail("timing.poll_min_ms", "must not exceed timing.poll_max_ms")


def _range_problem(key: str, data: bytes | str) -> str:
    """A value outside its ``Meta`` range, in the settings' words: ``must be 0..65535, got
    70000`` for a field bounded on both sides, else ``must not be negative`` / ``must be
    positive``."""
    value: Any = value_at(msgspec.toml.decode(data), key)  # decoded once already: it is valid TOML
    expected: Any = type_at(ProxySettings, key)
    low = expected.ge if expected.ge is not None else expected.gt
    high = expected.le if expected.le is not None else expected.lt
    if low is not None and high is not None:
        return f"must be {low}..{high}, got {value}"
    return "must not be negative" if value < 0 else "must be positive"


def _check_url(url: str, key: str, fail: Callable[[str, str], None]) -> None:
    if not re.match(r"^https?://[^/\s]+", url):
        fail(key, f"must be an http(s) URL, got {url!r}")
