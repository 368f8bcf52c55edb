"""The upstreams: one ``HTTPUpstream`` per distinct base URL behind its budgets
(``adapters.budgets.BudgetedUpstream``: RunPod's per-endpoint limits, ``[budgets]``, shared
through Redis with ``[redis] url``), with its two clients (the queue client
``RunPodQueueClient`` and the ``/openai/*`` passthrough ``OpenAIPassthrough``), and the model
table.

Created at app startup from the settings, closed at shutdown. A route asks
``Upstreams.binding(model_name)`` for the model's ``ModelBinding``: everything it needs to
serve the model (its settings, its worker format — None when the model is passed through to
the endpoint's OpenAI gateway (``format = "openai"``) — the clients for its base URL, and the
mask of the configured keys, ``key_mask``, that every error passed on to the client goes
through).

A model's ``fallbacks`` (other models, checked at settings load) take its requests when its
endpoint is swamped (``swamped``: no workers and a queue, by the ``/health`` poll) or refuses
the submit after its retries (``Upstreams.chain`` gives the order; ``proxy.fallback`` walks
it, for every route); ``Upstreams.observer`` hears of the retries and fallbacks (metrics).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from adapters.budgets import BudgetedUpstream, Budgets, SharedRates, WaitHook
from adapters.errors import KeyMask
from adapters.formats import WorkerFormat, get_format
from adapters.http_upstream import AnswerHook, HTTPUpstream, make_transport
from adapters.passthrough import OpenAIPassthrough
from adapters.runpod_client import RunPodQueueClient
from proxy.health import HealthReading
from proxy.keys import may_use
from proxy.settings import PASSTHROUGH, KeySettings, ModelSettings, ProxySettings, redacted_url
from proxy.submit import RetryObserver


@dataclass(frozen=True, slots=True)
class ModelBinding:
    """A model bound to its RunPod endpoint: settings, worker format, clients, key mask."""

    settings: ModelSettings
    format: WorkerFormat | None
    """How podgate translates requests into jobs for the worker (a passed-through model's
    ``queue_format``); None: every request is passed through."""
    client: RunPodQueueClient
    openai: OpenAIPassthrough
    key_mask: KeyMask

    @property
    def passthrough(self) -> bool:
        """The model is served by its endpoint's OpenAI gateway (``format = "openai"``)."""
        return self.settings.format == PASSTHROUGH

    def passes_through(self, max_output_tokens: int | None) -> bool:
        """Whether a completion asking for ``max_output_tokens`` (None: no limit) goes to the
        endpoint's OpenAI gateway rather than through the queue (``passthrough_max_tokens``)."""
        if not self.passthrough:
            return False
        limit = self.settings.passthrough_max_tokens
        return self.format is None or limit is None or (max_output_tokens is not None and max_output_tokens <= limit)

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def endpoint(self) -> str:
        return self.settings.endpoint

    @property
    def served_model(self) -> str:
        return self.settings.served_model or self.settings.name


def swamped(reading: HealthReading | None, queue_threshold: int) -> bool:
    """An endpoint that cannot take a request soon, by its last ``/health`` reading: no worker
    ready, idle or running, and at least ``queue_threshold`` jobs in its queue (no reading:
    not known to be swamped)."""
    if reading is None:
        return False
    workers = reading.health.workers
    ready = workers.get("ready", 0) + workers.get("idle", 0) + workers.get("running", 0)
    return ready == 0 and reading.health.jobs.get("inQueue", 0) >= queue_threshold


class Upstreams:
    """The settings' upstreams and models; ``on_answer`` hears of every upstream call,
    ``on_budget_wait`` of each call's wait for its budget, ``observer`` of the submits'
    retries, the re-runs and the fallbacks (metrics)."""

    def __init__(self, settings: ProxySettings, *, on_answer: AnswerHook | None = None,
                 on_budget_wait: WaitHook | None = None, observer: RetryObserver | None = None):
        t = settings.timing
        self.observer = observer
        self._upstreams: dict[str, tuple[BudgetedUpstream, RunPodQueueClient, OpenAIPassthrough]] = {}
        self._bindings: dict[str, ModelBinding] = {}
        self.key_mask = KeyMask(settings.secrets())
        r = settings.redis
        self._shared = None if not r.url else SharedRates(r.url, key_prefix=r.key_prefix, shown_url=redacted_url(r.url))
        limits = settings.budgets.limits()
        for m in settings.models:
            base = settings.upstream_url(m)
            clients = self._upstreams.get(base)
            if clients is None:
                upstream = HTTPUpstream(make_transport(max_connections=t.max_connections), base, settings.api_key,
                                        connect_timeout=t.connect_timeout_s, read_timeout=t.upstream_timeout_s,
                                        on_answer=on_answer)
                budgets = Budgets(base, limits, replicas=settings.budgets.replicas, shared=self._shared)
                budgeted = BudgetedUpstream(upstream, budgets, on_wait=on_budget_wait)
                clients = self._upstreams[base] = (budgeted, RunPodQueueClient(budgeted), OpenAIPassthrough(budgeted))
            queue_format = m.queue_format if m.format == PASSTHROUGH else m.format
            fmt = None if queue_format is None else get_format(queue_format)
            self._bindings[m.name] = ModelBinding(m, fmt, clients[1], clients[2], self.key_mask)

    def binding(self, model: str, key: KeySettings | None = None) -> ModelBinding | None:
        """The model's binding; None when there is no such model or ``key`` may not use it
        (a key sees the models it may not use as absent)."""
        return self._bindings.get(model) if may_use(key, model) else None

    def chain(self, binding: ModelBinding, key: KeySettings | None, health: Mapping[str, HealthReading],
              queue_threshold: int) -> list[ModelBinding]:
        """Where a request for ``binding``'s model goes, in order: the model and its
        ``fallbacks`` (those ``key`` may use) whose endpoint is not ``swamped`` by its last
        ``health`` reading; the model alone when every one is (it is the one asked for)."""
        if not binding.settings.fallbacks:
            return [binding]
        chain = [binding, *(b for name in binding.settings.fallbacks if (b := self.binding(name, key)) is not None)]
        return [b for b in chain if not swamped(health.get(b.endpoint), queue_threshold)] or [binding]

    def budget_usage(self) -> dict[str, dict[str, float]]:
        """Per endpoint and operation, the share of RunPod's rate this process used in the
        last window (``adapters.budgets.Budgets.usage``)."""
        used: dict[str, dict[str, float]] = {}
        for upstream, _, _ in self._upstreams.values():
            for endpoint, ops in upstream.budgets.usage().items():
                used.setdefault(endpoint, {}).update(ops)
        return used

    def visible(self, key: KeySettings | None = None) -> list[ModelBinding]:
        """The bindings ``key`` may use (``/v1/models``)."""
        return [b for b in self._bindings.values() if may_use(key, b.name)]

    def __iter__(self) -> Iterator[ModelBinding]:
        return iter(self._bindings.values())

    async def aclose(self) -> None:
        for upstream, _, _ in self._upstreams.values():
            await upstream.aclose()
        if self._shared is not None:
            await self._shared.aclose()
