"""The upstreams: one ``RunPodQueueClient`` per distinct base URL, and the model table.

Created at app startup from the settings, closed at shutdown. A route asks
``Upstreams.binding(model_name)`` for the model's ``ModelBinding``: everything it needs to
run a job for the model (its settings, its worker format, the client for its base URL, and
the mask of the configured keys, ``key_mask``, that every error passed on to the client
goes through).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from adapters.errors import KeyMask
from adapters.formats import WorkerFormat, get_format
from adapters.http_upstream import HTTPUpstream, make_http_client
from adapters.runpod_client import RunPodQueueClient
from proxy.settings import ModelSettings, ProxySettings


@dataclass(frozen=True, slots=True)
class ModelBinding:
    """A model bound to its RunPod endpoint: settings, worker format, client, key mask."""

    settings: ModelSettings
    format: WorkerFormat
    client: RunPodQueueClient
    key_mask: KeyMask

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def endpoint(self) -> str:
        return self.settings.endpoint

    @property
    def served_model(self) -> str:
        return self.settings.served_model or self.settings.name


class Upstreams:
    def __init__(self, settings: ProxySettings):
        t = settings.timing
        self._clients: dict[str, RunPodQueueClient] = {}
        self._bindings: dict[str, ModelBinding] = {}
        self.key_mask = KeyMask(settings.secrets())
        for m in settings.models:
            base = settings.upstream_url(m)
            client = self._clients.get(base)
            if client is None:
                http = make_http_client(
                    base,
                    connect_timeout=t.connect_timeout_s,
                    read_timeout=t.upstream_timeout_s,
                    max_connections=t.max_connections,
                    max_keepalive_connections=t.max_keepalive_connections,
                )
                upstream = HTTPUpstream(http, settings.api_key, read_timeout=t.upstream_timeout_s)
                client = self._clients[base] = RunPodQueueClient(upstream)
            self._bindings[m.name] = ModelBinding(m, get_format(m.format), client, self.key_mask)

    def binding(self, model: str) -> ModelBinding | None:
        return self._bindings.get(model)

    def __iter__(self) -> Iterator[ModelBinding]:
        return iter(self._bindings.values())

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.aclose()
