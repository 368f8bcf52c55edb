"""podgate's proxy settings: the TOML file (``podgate serve --config podgate.toml``).

One home for the proxy's configuration. The file is decoded with ``msgspec.toml`` straight
into the Structs below (decoding is the validation); any problem becomes a ``SettingsError``
whose message names the key (``models[1].format``) and what is wrong with it, so that
``podgate serve`` can refuse to start with one clear line.

    [server]
    host = "127.0.0.1"
    port = 8000
    cors_origins = ["https://chat.example.com"]   # optional; default none (no CORS)
    log_format = "json"                      # auto (default: text on a terminal) | text | json
    drain_s = 20.0                           # after SIGTERM, running requests may finish this long

    [runpod]
    base_url = "https://api.runpod.ai/v2"   # default
    api_key_env = "RUNPOD_API_KEY"          # default; the key itself never goes in the file

    [timing]                                 # every knob optional (defaults below)
    keepalive_s = 10.0
    submit_retries = 2                       # refused submits (429/502/503) retried before the first byte
    fallback_queue_threshold = 10            # queue depth (no workers) that sends requests to fallbacks

    [metrics]
    health_interval_s = 15.0                 # /health poll per endpoint (0 = none)

    [[models]]
    name = "llama-3-8b"                      # the model id clients send
    endpoint = "abc123xyz"                   # the RunPod endpoint id
    format = "vllm"                          # vllm | vllm-native | sglang | tgi | text | openai
                                             # (chat, completions); infinity | infinity-native
                                             # (embeddings)
    served_model = "meta-llama/Meta-Llama-3-8B-Instruct"   # optional: what the worker expects
    fallbacks = ["llama-3-8b-spare"]         # optional: models taking over when this endpoint is
                                             #   swamped or refuses (x-podgate-served-by says who)
    retries = 1                              # optional: /retry a FAILED job before any output went
    base_url = "http://127.0.0.1:8100/v2"    # optional per-model upstream override

    [[keys]]                                 # optional; with none, podgate is open
    name = "team-a"                          # shown in logs, never the key
    sha256 = "<hex>"                         # podgate hash-key < key.txt
    models = ["llama-3-8b"]                  # optional; default: every model
    rpm = 600                                # optional requests per minute
    tpm = 200000                             # optional tokens (prompt + completion) per minute

    [redis]                                  # optional: rpm/tpm counters shared by every replica
    url = "redis://redis:6379/0"             # redis:// rediss:// unix://; env PODGATE_REDIS_URL wins

    [budgets]                                # optional: RunPod's per-endpoint limits (adapters.budgets)
    replicas = 1                             # replicas sharing each endpoint's limits
    [budgets.stream]                         # per operation: run runsync status stream cancel
    rate = 2000                              #   retry purge-queue health openai; every key
    per_s = 10                               #   optional (default: RunPod's table); rate = 0 or
    concurrency = 400                        #   concurrency = 0: none

    [console]                                # the live console at /console (proxy.console)
    admin_sha256 = "<hex>"                   # podgate hash-key < admin.txt; needed with [[keys]]

    [[models]]                               # passed through to the endpoint's /openai/v1
    name = "qwen"
    endpoint = "def456uvw"
    format = "openai"
    queue_format = "vllm"                    # optional, with passthrough_max_tokens: requests
    passthrough_max_tokens = 4096            #   for more tokens (or no limit) take the queue

A top-level ``keys_file = "/etc/podgate/keys/keys.toml"`` (before any table; relative to
this file) names a TOML file of more ``[[keys]]`` entries, checked the same way and added
after the ones above, so that the key hashes can live in a Kubernetes Secret while the rest
sits in a ConfigMap; its errors name it (``keys.toml: keys[0].sha256: …``).

The API key is read from the environment (``RUNPOD_API_KEY`` or the variable named by
``api_key_env``) and kept in ``ProxySettings.api_key``; it is never printed (``repr`` hides it),
and no error repeats the value of ``api_key_env`` (someone may have put the key itself
there); nor does anything show a Redis URL's password (``redacted_url``).
``ProxySettings.secrets()`` lists the configured keys (and the Redis password), which the
proxy masks by value in everything it passes on from upstream.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from adapters.budgets import DEFAULT_LIMITS, Limit
from adapters.errors import KeyMask
from adapters.validation import read_validation_error, type_at, value_at

FormatName = Literal["vllm", "vllm-native", "sglang", "tgi", "text", "openai", "infinity", "infinity-native"]
PASSTHROUGH = "openai"
"""The ``format`` of a model passed through to its endpoint's OpenAI gateway (``/openai/v1``)."""
DEFAULT_BASE_URL = "https://api.runpod.ai/v2"
DEFAULT_KEY_ENV = "RUNPOD_API_KEY"
REDIS_URL_ENV = "PODGATE_REDIS_URL"
"""Overrides ``[redis] url``: the URL (with its password) can come from a Secret."""
REDIS_SCHEMES = ("redis", "rediss", "unix")

# The ranges are msgspec constraints, so decoding is the validation; ``_range_problem`` words
# a broken one for the settings' errors.
Port = Annotated[int, Meta(ge=0, le=65535)]
Seconds = Annotated[float, Meta(ge=0)]
Millis = Annotated[int, Meta(ge=0)]
Count = Annotated[int, Meta(ge=0)]
PositiveSeconds = Annotated[float, Meta(gt=0)]
PositiveCount = Annotated[int, Meta(ge=1)]


_T = TypeVar("_T")


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
    log_format: Literal["auto", "text", "json"] = "auto"
    """``json``: one JSON object per log line (the access line carries the request's fields);
    ``auto``: text on a terminal, JSON otherwise (``proxy.logs``)."""
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
    result_ttl_ms: Millis = 10_000
    """Once podgate has read a ``/runsync`` job's result, RunPod keeps it only this much longer
    (``/status?ttl=``; RunPod's own: a minute); 0 leaves it."""
    stream_result_ttl_ms: Millis = 0
    """The same for a streamed (``/run``) job's result (RunPod's own: 30 minutes): one more
    call per stream, so off (0) by default."""
    cancel_concurrency: PositiveCount = 20
    """Concurrent ``/cancel`` calls (RunPod allows 20 per endpoint)."""
    cancel_retries: Count = 10
    """How often a ``/cancel`` that failed retryably (429, 5xx, unreachable) is tried again,
    after ``Retry-After`` or a pause doubling from 0.5 s up to 10 s: the default rides out about
    a minute of refusals (a 429 storm, a RunPod blip), since a job nobody cancels runs on, paid for."""
    submit_retries: Count = 2
    """Before the first byte, a submit (``/run``, ``/runsync``, a passthrough call) that RunPod
    refused (429, 502, 503, or never reached) is tried again up to this many times, after
    its ``Retry-After`` or a jittered pause that doubles from 0.5 s (``proxy.submit``); a 500
    or a timeout after sending is never repeated (the job may exist). 0: no retries."""
    fallback_queue_threshold: Count = 10
    """A model's endpoint with no worker ready, idle or running and at least this many jobs in
    its queue (its last ``/health`` reading, ``[metrics] health_interval_s``) is passed over
    for the model's ``fallbacks``."""


class MetricsSettings(_Section):
    """What ``GET /metrics`` reports beyond the requests (``proxy.metrics``)."""

    health_interval_s: Seconds = 15.0
    """Every this many seconds, one ``/health`` call per RunPod endpoint (never one per
    request) feeds the queue-depth and worker gauges (``proxy.health``); 0: no poll."""


class ModelSettings(_Section):
    name: str
    endpoint: str
    format: FormatName
    served_model: str | None = None
    base_url: str | None = None
    queue_format: FormatName | None = None
    """For a passed-through model (``format = "openai"``): the worker format of the queue path
    that takes the requests RunPod's gateway might cut (see ``passthrough_max_tokens``)."""
    fallbacks: list[str] = msgspec.field(default_factory=list)
    """Other models (by name) that take this model's requests, in order, when its endpoint
    is swamped (by the ``/health`` poll: no worker ready, idle or running and at least
    ``timing.fallback_queue_threshold`` jobs queued) or still refuses the submit after
    ``timing.submit_retries`` (before the first byte only). Only one level is followed (a
    fallback's own fallbacks are not); the answer keeps this model's name and says which model
    served it in ``x-podgate-served-by``. Models of the same kind: completion models (translated
    or ``openai``) for a completion model, embedding models (``infinity*`` or ``openai``) for an
    embedding model; an ``openai`` model may have both (each route uses those that fit)."""
    retries: Count = 0
    """A job of this model that ended FAILED (or TIMED_OUT) before any of its output reached the
    client is run again with RunPod's ``/retry`` up to this many times (same job id). 0: never
    (a job that fails may fail the same way again, and each run is paid for)."""
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
    rpm: PositiveCount | None = None
    """Requests per minute (default: no limit); over it, 429 (``proxy.ratelimit``)."""
    tpm: PositiveCount | None = None
    """Tokens (prompt + completion) per minute (default: no limit)."""


class ConsoleSettings(_Section):
    """``[console]``: who may open the live console (``/console``, ``proxy.console``)."""

    admin_sha256: Sha256Hex | None = None
    """The SHA-256 of the admin key (``podgate hash-key``). With ``[[keys]]`` configured the
    console needs it (none: the console answers 401 to everyone); with none, the console is
    open on loopback only, and this key opens it from elsewhere."""


class KeysFile(_Section):
    """The file ``keys_file`` names: more ``[[keys]]``, nothing else."""

    keys: list[KeySettings] = msgspec.field(default_factory=list)


class RedisSettings(_Section):
    """``[redis]``: where the per-key rpm/tpm counters live, shared by every replica (none:
    each process counts alone)."""

    url: str | None = None
    """``redis://[[user]:password@]host:6379/0``, ``rediss://…`` (TLS) or
    ``unix:///run/redis.sock``; ``PODGATE_REDIS_URL`` overrides it."""
    key_prefix: str = "podgate"
    """The prefix of podgate's keys in Redis (deployments sharing one Redis keep apart)."""

    def __repr__(self) -> str:  # never show the password
        url = redacted_url(self.url) if self.url else None
        return f"RedisSettings(url={url!r}, key_prefix={self.key_prefix!r})"


class OperationBudget(_Section):
    """``[budgets.<operation>]``: one operation's limit, per endpoint; a key left out keeps
    RunPod's value (``adapters.budgets.DEFAULT_LIMITS``)."""

    rate: Count | None = None
    """Calls per ``per_s`` seconds; 0: no rate limit."""
    per_s: PositiveSeconds | None = None
    concurrency: Count | None = None
    """Calls at once (all replicas together); 0: no cap."""
    burst: PositiveCount | None = None
    """Calls of the rate that may go at once (default: a tenth of it)."""


_NO_OVERRIDE = OperationBudget()


class BudgetSettings(_Section):
    """``[budgets]``: what podgate lets itself send to each RunPod endpoint, per operation,
    so that RunPod never answers 429 (``adapters.budgets``): calls over budget wait."""

    replicas: PositiveCount = 1
    """How many podgate replicas share each endpoint's limits: each replica's concurrency cap
    is its share, and so is its rate without Redis (or while Redis is out); with ``[redis]
    url`` the rate is shared exactly."""
    run: OperationBudget = msgspec.field(default_factory=OperationBudget)
    runsync: OperationBudget = msgspec.field(default_factory=OperationBudget)
    status: OperationBudget = msgspec.field(default_factory=OperationBudget)
    stream: OperationBudget = msgspec.field(default_factory=OperationBudget)
    cancel: OperationBudget = msgspec.field(default_factory=OperationBudget)
    retry: OperationBudget = msgspec.field(default_factory=OperationBudget)
    purge_queue: OperationBudget = msgspec.field(default_factory=OperationBudget, name="purge-queue")
    health: OperationBudget = msgspec.field(default_factory=OperationBudget)
    openai: OperationBudget = msgspec.field(default_factory=OperationBudget)
    """The ``/openai/*`` gateway, all routes together."""

    def limits(self) -> dict[str, Limit]:
        """Every operation's limit: RunPod's, with these overrides."""
        limits = dict(DEFAULT_LIMITS)
        for name, field in _BUDGET_FIELDS.items():
            o = getattr(self, field)
            if o != _NO_OVERRIDE:
                base = limits.get(name, Limit())
                limits[name] = Limit(rate=base.rate if o.rate is None else o.rate,
                                     per_s=base.per_s if o.per_s is None else o.per_s,
                                     concurrency=base.concurrency if o.concurrency is None else o.concurrency,
                                     burst=o.burst)
        return limits


_BUDGET_FIELDS = {f.encode_name: f.name for f in msgspec.structs.fields(BudgetSettings) if f.name != "replicas"}
"""``[budgets]`` operation tables: the operation's name → the field's."""


class ProxySettings(_Section):
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    runpod: RunPodSettings = msgspec.field(default_factory=RunPodSettings)
    timing: TimingSettings = msgspec.field(default_factory=TimingSettings)
    metrics: MetricsSettings = msgspec.field(default_factory=MetricsSettings)
    models: list[ModelSettings] = msgspec.field(default_factory=list)
    keys: list[KeySettings] = msgspec.field(default_factory=list)
    """Client keys; none: podgate is open to whoever reaches it. After ``parse_settings``
    they include those of ``keys_file``."""
    keys_file: str | None = None
    """A TOML file of more ``[[keys]]`` (relative to the settings file)."""
    redis: RedisSettings = msgspec.field(default_factory=RedisSettings)
    budgets: BudgetSettings = msgspec.field(default_factory=BudgetSettings)
    console: ConsoleSettings = msgspec.field(default_factory=ConsoleSettings)
    api_key: str = ""
    """Filled from the environment by ``load_settings``; not a TOML key."""

    def __repr__(self) -> str:  # never show the key
        models = [m.name for m in self.models]
        return f"ProxySettings(server={self.server!r}, runpod={self.runpod!r}, models={models!r})"

    def secrets(self) -> list[str]:
        """The configured keys: values that must never reach a client or a log."""
        password = urlsplit(self.redis.url).password if self.redis.url else None
        return [s for s in (self.api_key, password) if s]

    def upstream_url(self, model: ModelSettings) -> str:
        return (model.base_url or self.runpod.base_url).rstrip("/")


def parse_settings(data: bytes | str, env: Mapping[str, str] | None = None, *,
                   source: str = "settings", base_dir: Path | None = None) -> ProxySettings:
    """Decode TOML text into ProxySettings and check what decoding cannot; raise SettingsError.
    ``base_dir``: where a relative ``keys_file`` is (default: the working directory). An error
    never repeats the RunPod key: a value quoted in it (a bad URL, origin …) that is the key
    (someone pasted it in the wrong place) is masked."""
    env = os.environ if env is None else env
    try:
        return _parse_settings(data, env, source, base_dir)
    except SettingsError as exc:
        raise SettingsError(KeyMask(_key_candidates(data, env)).text(str(exc))) from None


def _key_candidates(data: bytes | str, env: Mapping[str, str]) -> list[str]:
    """What the RunPod key may be: the default variable's value and that of the variable the
    file names (when it names one)."""
    names = {DEFAULT_KEY_ENV}
    try:
        raw = msgspec.toml.decode(data)
        named = raw.get("runpod", {}).get("api_key_env") if isinstance(raw, dict) else None
        if isinstance(named, str):
            names.add(named)
    except (msgspec.DecodeError, AttributeError):
        pass
    return [env[name] for name in names if env.get(name)]


def _parse_settings(data: bytes | str, env: Mapping[str, str], source: str, base_dir: Path | None) -> ProxySettings:
    settings = _decode(data, ProxySettings, source)
    # the value of api_key_env is never repeated in an error: it may be the key itself
    if "api_key" in _raw_keys(data):
        raise SettingsError(f"{source}: api_key: the key must not be in the file; set the environment "
                            f"variable that runpod.api_key_env names (default {DEFAULT_KEY_ENV})")
    _check(settings, source)
    keys = [(source, i, k) for i, k in enumerate(settings.keys)]
    if settings.keys_file is not None:
        keys_source = settings.keys_file
        path = (base_dir or Path()) / settings.keys_file
        extra = _decode(_read(path, keys_source), KeysFile, keys_source).keys
        keys += [(keys_source, i, k) for i, k in enumerate(extra)]
        settings.keys = settings.keys + extra
    _check_keys(keys, {m.name for m in settings.models})
    if env.get(REDIS_URL_ENV):
        settings.redis.url = env[REDIS_URL_ENV]
        _check_redis_url(settings.redis.url, f"{source}: redis.url (from {REDIS_URL_ENV})")
    elif settings.redis.url is not None:
        _check_redis_url(settings.redis.url, f"{source}: redis.url")
    name = settings.runpod.api_key_env
    key = env.get(name, "")
    if not key:
        which = f"environment variable {name}" if name == DEFAULT_KEY_ENV else \
            "the environment variable it names (the variable's name, not the key)"
        raise SettingsError(f"{source}: runpod.api_key_env: {which} is not set")
    settings.api_key = key
    return settings


def _decode(data: bytes | str, cls: type[_T], source: str) -> _T:
    """``data`` decoded as ``cls``; a problem becomes a SettingsError naming ``source`` and the key."""
    try:
        return msgspec.toml.decode(data, type=cls)
    except msgspec.ValidationError as exc:
        failure = read_validation_error(exc)
        problem = failure.problem
        key = failure.path or ""
        if failure.unknown is not None:  # the path is the unknown field's parent
            key = f"{key}.{failure.unknown}" if key else failure.unknown
            problem = "unknown key"
        elif failure.bound is not None:
            problem = _range_problem(key, data, cls)
        elif key.endswith("sha256"):  # keys[i].sha256, console.admin_sha256
            problem = "must be the key's SHA-256 in lowercase hex, as `podgate hash-key < key.txt` prints it"
        raise SettingsError(f"{source}: {key or '(top level)'}: {problem}") from None
    except msgspec.DecodeError as exc:
        raise SettingsError(f"{source}: not valid TOML: {exc}") from None


def load_settings(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> ProxySettings:
    p = Path(path)
    return parse_settings(_read(p, str(p)), env, source=str(p), base_dir=p.parent)


def _read(path: Path, source: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"{source}: cannot read: {exc.strerror or exc}") from None


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
    _check_fallbacks(s.models, fail)
    if s.timing.poll_min_ms > s.timing.poll_max_ms:
        fail("timing.poll_min_ms", "must not exceed timing.poll_max_ms")
    limits = s.budgets.limits()
    for name, field in _BUDGET_FIELDS.items():
        o = getattr(s.budgets, field)
        if o.burst is not None and o.burst > limits[name].rate:
            fail(f"budgets.{name}.burst", f"must not exceed the rate ({limits[name].rate})")


_COMPLETION_FORMATS = ("vllm", "vllm-native", "sglang", "tgi", "text")
_EMBEDDING_FORMATS = ("infinity", "infinity-native")


def _check_fallbacks(models: list[ModelSettings], fail: Callable[[str, str], None]) -> None:
    """Every fallback names another configured model that serves the same kind of requests: a
    completion model's, a completion model; an embedding model's, an embedding model — either
    translated or passed through (``openai``, which may serve both; a passed-through model's
    fallbacks may be of both kinds, each route passing over those that cannot serve it)."""
    by_name = {m.name: m for m in models}
    for i, m in enumerate(models):
        kind = "completion" if m.format in _COMPLETION_FORMATS else "embedding" if m.format in _EMBEDDING_FORMATS \
            else None
        allowed = {"completion": (*_COMPLETION_FORMATS, PASSTHROUGH), "embedding": (*_EMBEDDING_FORMATS, PASSTHROUGH),
                   None: (*_COMPLETION_FORMATS, *_EMBEDDING_FORMATS, PASSTHROUGH)}[kind]
        for j, name in enumerate(m.fallbacks):
            other = by_name.get(name)
            if name == m.name:
                fail(f"models[{i}].fallbacks[{j}]", "a model cannot be its own fallback")
            elif other is None:
                fail(f"models[{i}].fallbacks[{j}]", f"no such model: {name!r}")
            elif other.format not in allowed:
                fail(f"models[{i}].fallbacks[{j}]", f"{name!r} cannot serve {kind} requests "
                     f"(its format is {other.format!r})")


def _check_keys(keys: list[tuple[str, int, KeySettings]], models: set[str]) -> None:
    """The client keys of the settings file and of ``keys_file`` (``(source, index, key)``),
    checked together: a name or a key (hash) used twice is an error wherever each is."""
    names: dict[str, tuple[str, str]] = {}
    hashes: dict[str, tuple[str, str]] = {}
    for source, i, k in keys:
        problem = _key_problem(k, source, models, names, hashes)
        if problem is not None:
            raise SettingsError(f"{source}: keys[{i}].{problem[0]}: {problem[1]}")
        names[k.name] = hashes[k.sha256] = (source, f"keys[{i}]")


def _key_problem(k: KeySettings, source: str, models: set[str], names: dict[str, tuple[str, str]],
                 hashes: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    """``(field, problem)`` for a key that cannot be used, given those before it."""

    def other(seen: tuple[str, str]) -> str:  # "keys[0]", or "podgate.toml: keys[0]" in another file
        return seen[1] if seen[0] == source else f"{seen[0]}: {seen[1]}"

    if not k.name.strip():
        return "name", "must not be empty"
    if k.name in names:
        return "name", f"duplicate key name {k.name!r} (also {other(names[k.name])})"
    if k.sha256 in hashes:
        return "sha256", f"the same key as {other(hashes[k.sha256])}"
    unknown = [m for m in k.models or () if m not in models]
    if unknown:
        return "models", f"no such model: {', '.join(map(repr, unknown))}"
    return None


def redacted_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: for logs and reprs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return "(a URL that cannot be parsed)"
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def _check_redis_url(url: str, where: str) -> None:
    """A Redis URL podgate can use; the error repeats only its scheme (never a password)."""
    scheme = url.partition("://")[0] if "://" in url else ""
    try:
        parts = urlsplit(url)
        usable = scheme in REDIS_SCHEMES and bool(parts.path if scheme == "unix" else parts.hostname)
        usable = usable and (parts.port is None or parts.port > 0)
    except ValueError:  # a port that is not a number, a broken [IPv6] host
        usable = False
    if not usable:
        got = f"scheme {scheme!r}" if scheme in REDIS_SCHEMES or scheme.isalpha() else "no scheme"
        raise SettingsError(f"{where}: must be a redis://host:port[/db], rediss://… or unix:///path URL "
                            f"(got {got}; the value is not repeated: it may hold a password)")


def _range_problem(key: str, data: bytes | str, cls: type = ProxySettings) -> str:
    """A value outside its ``Meta`` range, in the settings' words: ``must be 0..65535, got
    70000`` for a field bounded on both sides, else ``must not be negative`` / ``must be
    positive``."""
    value: Any = value_at(msgspec.toml.decode(data), key)  # decoded once already: it is valid TOML
    expected: Any = type_at(cls, key)
    low = expected.ge if expected.ge is not None else expected.gt
    high = expected.le if expected.le is not None else expected.lt
    if low is not None and high is not None:
        return f"must be {low}..{high}, got {value}"
    return "must not be negative" if value < 0 else "must be positive"


def _check_url(url: str, key: str, fail: Callable[[str, str], None]) -> None:
    if not re.match(r"^https?://[^/\s]+", url):
        fail(key, f"must be an http(s) URL, got {url!r}")
