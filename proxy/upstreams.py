"""The upstreams: one ``RunPodQueueClient`` per distinct base URL, and the model table.

Created at app startup from the settings, closed at shutdown. A route asks
``Upstreams.route(model_name)`` for everything it needs to run a job for a model: the
model's settings, its worker format, the client for its base URL, and the mask of the
configured keys (``key_mask``) that every error passed on to the client goes through.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from adapters.errors import KeyMask
from adapters.formats import WorkerFormat, get_format
from adapters.http_upstream import HTTPUpstream, make_http_client
from adapters.runpod_client import RunPodQueueClient
from proxy.settings import ModelSettings, Settings


@dataclass(frozen=True, slots=True)
class ModelRoute:
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
    def __init__(self, settings: Settings):
        t = settings.timing
        self._clients: dict[str, RunPodQueueClient] = {}
        self._routes: dict[str, ModelRoute] = {}
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
            self._routes[m.name] = ModelRoute(m, get_format(m.format), client, self.key_mask)

    def route(self, model: str) -> ModelRoute | None:
        return self._routes.get(model)

    def __iter__(self) -> Iterator[ModelRoute]:
        return iter(self._routes.values())

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.aclose()
