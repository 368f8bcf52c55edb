"""The app in-process: liveness/readiness routes and the id headers on every response."""

from __future__ import annotations

from litestar.testing import TestClient

from proxy.app import create_app
from proxy.settings import ModelSettings, ProxySettings


def make_app(readiness=None):
    settings = ProxySettings(models=[ModelSettings(name="m", endpoint="ep", format="vllm"),
                                ModelSettings(name="org/model-7b", endpoint="ep2", format="sglang")], api_key="k")
    return create_app(settings, readiness=readiness)


def test_health_and_readiness():
    state = {"ready": False}

    async def ready() -> bool:
        return state["ready"]

    with TestClient(app=make_app(ready)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json() == {"ready": False}
        state["ready"] = True
        assert client.get("/readyz").status_code == 200
        r = client.get("/v1/models")
        assert [m["id"] for m in r.json()["data"]] == ["m", "org/model-7b"]
        assert client.get("/v1/models/org/model-7b").json()["id"] == "org/model-7b"
        r = client.get("/v1/models/org")
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert r.headers["x-request-id"].startswith("req_")
        assert "x-runpod-job-id" not in r.headers
    with TestClient(app=make_app()) as client:  # no readiness check: ready once started
        assert client.get("/readyz").status_code == 200
