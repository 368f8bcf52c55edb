"""An endpoint replica killed under load: two ``podgate endpoint`` replicas on one Redis (of
this test's own), a real ``runpod`` SDK worker on each, jobs submitted to both (``/run``, and
``/runsync`` held on each), then replica A is SIGKILLed.

What is seen then:

- Callers of A: their held requests end with a transport error (the connection is cut; no
  HTTP answer). Their jobs are in Redis, not in A: they run to completion all the same, and
  ``/status`` through B shows them.
- Callers of B: nothing happens to them; B's held ``/runsync`` answers as usual.
- A's worker: its result posts and its pings fail (connection refused), the SDK drops the
  results after its retries, and its job-take fails at once: ``podgate worker`` paces it
  (``serverless.take_backoff``; the SDK alone polls again at once, tens of thousands of
  times a second). B's sweeper finds the worker lost after ``worker_timeout``
  and re-queues its jobs (``max_attempts``), which B's worker runs. No job is lost: every
  job ends COMPLETED, with the right output, and none is left running or queued.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import EndpointServer
from tests.faults.endpoint_cluster import HANDLER, OwnRedis, new_prefix, replica, tracebacks
from tests.faults.outage_handlers import ANSWER

N_RUN = 40      # /run jobs, half through each replica
N_SYNC = 4      # /runsync requests held on each replica when A dies
BOUND = 60.0    # seconds for every job to end (a hang guard)


@pytest.fixture
def replicas(endpoint_factory, tmp_path: Path) -> Iterator[tuple[EndpointServer, EndpointServer]]:
    own = OwnRedis(tmp_path)
    own.start()
    try:
        prefix = new_prefix()
        servers = (replica(endpoint_factory, own, prefix, workers_max=100),
                   replica(endpoint_factory, own, prefix, workers_max=100))
        for server in servers:
            server.worker(HANDLER, wait=False)
        servers[1].wait_for_workers(count=2)
        yield servers
    finally:
        endpoint_factory.close()
        own.close()


def _loaded(health: dict) -> bool:
    """Every job was submitted (the held /runsync ones too), and both workers run some."""
    jobs = health["jobs"]
    return (jobs["inQueue"] + jobs["inProgress"] + jobs["completed"] >= N_RUN + 2 * N_SYNC
            and health["workers"]["running"] >= 2)


def _output_text(status: dict) -> str:
    output = status.get("output")
    return "".join(output) if isinstance(output, list) else repr(output)


async def test_a_replica_killed_under_load_loses_no_job(replicas: tuple[EndpointServer, EndpointServer]):
    a, b = replicas
    headers = a.headers()
    async with httpx.AsyncClient(headers=headers, timeout=BOUND) as http:
        ids = []
        for k in range(N_RUN):
            server = a if k % 2 == 0 else b
            answer = await http.post(f"{server.url()}/run", json={"input": {"k": k}})
            ids.append(answer.raise_for_status().json()["id"])
        held = {name: [asyncio.create_task(http.post(f"{server.url()}/runsync", params={"wait": int(BOUND * 1000)},
                                                     json={"input": {"sync": k}}))
                       for k in range(N_SYNC)]
                for name, server in (("a", a), ("b", b))}
        deadline = time.monotonic() + 30
        while not _loaded((await http.get(f"{b.url()}/health")).json()):
            assert time.monotonic() < deadline, "the jobs were not all submitted and running on both workers"
            await asyncio.sleep(0.05)

        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait(5)
        killed = time.monotonic()

        on_a = await asyncio.gather(*held["a"], return_exceptions=True)
        assert all(isinstance(r, httpx.TransportError) for r in on_a), on_a  # cut, not answered
        on_b = await asyncio.gather(*held["b"])
        assert [(r.status_code, r.json()["status"], _output_text(r.json())) for r in on_b] == \
            [(200, "COMPLETED", ANSWER)] * N_SYNC

        statuses = {}
        deadline = time.monotonic() + BOUND
        for job_id in ids:
            while (status := (await http.get(f"{b.url()}/status/{job_id}")).json())["status"] in \
                    ("IN_QUEUE", "IN_PROGRESS"):
                assert time.monotonic() < deadline, status
                await asyncio.sleep(0.2)
            statuses[job_id] = (status["status"], _output_text(status))
        assert statuses == {job_id: ("COMPLETED", ANSWER) for job_id in ids}

        jobs = (await http.get(f"{b.url()}/health")).json()["jobs"]
        assert (jobs["completed"], jobs["failed"], jobs["inProgress"], jobs["inQueue"]) == \
            (N_RUN + 2 * N_SYNC, 0, 0, 0), jobs  # A's held /runsync jobs completed too
    assert tracebacks(b.stderr()) == 0, b.stderr()[-5000:]
    # A's worker polls its dead server on: paced (``serverless.take_backoff``), about one
    # failed poll a second, not the tens of thousands a second of the SDK alone
    [orphan] = a.workers
    failed = orphan.output().count("Failed to get job")
    assert 1 <= failed <= 2 * (time.monotonic() - killed) + 10, failed
