"""Two ``podgate endpoint`` processes on one Redis (one random prefix) serve one endpoint as
one: a few thousand jobs submitted to both, taken and finished through both by workers that
drive the worker API directly, plus real ``runpod`` SDK workers, plus a worker that dies
holding jobs. Every job completes exactly once, none is handed out twice, none is lost.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
import uuid

import httpx
import msgspec
import pytest

from tests.conftest import REDIS_URL

pytestmark = pytest.mark.usefixtures("redis_required")

N_JOBS = 2000          # via /run, split across both replicas
N_SYNC = 20            # via /runsync on one replica while the other finishes them
N_DIRECT_WORKERS = 6   # worker-API clients in this process
BATCH = 8
CRASH_BATCH = 10       # jobs held by a worker that then disappears
DEADLINE = 50.0        # seconds for the whole run (bounded loops)
UNLIMITED = {op: (0, 0) for op in ("run", "runsync", "status", "health")}


class _Taken(msgspec.Struct):
    id: str
    input: dict


_take_decoder = msgspec.json.Decoder(list[_Taken])


def _n_of(output: object) -> int:
    """The input number a job's output carries (direct workers and the SDK echo handler)."""
    assert isinstance(output, dict), output
    return output["n"] if "n" in output else output["echo"]["n"]


async def test_two_replicas_share_one_queue(endpoint_factory):
    prefix = f"podgate-test:{uuid.uuid4().hex}:"
    settings = dict(store="redis", redis_prefix=prefix, workers_max=N_JOBS, limits=UNLIMITED)
    servers = [endpoint_factory(**settings), endpoint_factory(**settings)]
    try:
        await _run_workload(servers)
    finally:
        for server in servers:
            server.stop()
        from serverless.store.redis import RedisStore

        store = RedisStore(REDIS_URL, prefix=prefix)
        await store.delete_all()
        await store.close()


async def _run_workload(servers) -> None:
    a, b = servers
    for server in servers:  # one real SDK worker on each replica
        server.worker("tests.serverless.handlers:echo_sync")
    key = a.api_key
    caller = {"Authorization": f"Bearer {key}"}
    worker_auth = {"Authorization": key}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    rng = random.Random(1234)
    taken: dict[str, list[str]] = collections.defaultdict(list)
    done_status = collections.Counter()
    accepted: set[str] = set()  # jobs whose result a direct worker posted and the server took
    all_done = asyncio.Event()
    deadline = time.monotonic() + DEADLINE

    async with httpx.AsyncClient(headers=caller, timeout=30, limits=limits) as client, \
            httpx.AsyncClient(headers=worker_auth, timeout=30, limits=limits) as wclient:

        async def take(server, wid: str, count: int) -> list[_Taken]:
            r = await wclient.get(f"{server.url()}/job-take-batch/{wid}", params={"batch_size": count})
            assert r.status_code in (200, 204), r.text
            return _take_decoder.decode(r.content) if r.status_code == 200 else []

        async def direct_worker(wid: str) -> None:
            while not all_done.is_set() and time.monotonic() < deadline:
                jobs = await take(rng.choice(servers), wid, BATCH)
                for job in jobs:
                    taken[wid].append(job.id)
                    r = await wclient.post(  # the result goes to either replica
                        f"{rng.choice(servers).url()}/job-done/{wid}/{job.id}",
                        content=msgspec.json.encode({"output": {"n": job.input["n"], "by": wid}}),
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
                    done_status[r.status_code] += 1
                    if r.status_code == 200:
                        accepted.add(job.id)

        async def submit(n: int) -> str:
            server = servers[n % 2]
            r = await client.post(f"{server.url()}/run", json={"input": {"n": n}})
            assert r.status_code == 200, r.text
            return r.json()["id"]

        async def submit_all() -> list[str]:
            sem = asyncio.Semaphore(32)

            async def one(n: int) -> str:
                async with sem:
                    return await submit(n)

            return await asyncio.gather(*(one(n) for n in range(N_JOBS)))

        async def runsync(k: int) -> dict:
            r = await client.post(f"{a.url()}/runsync", json={"input": {"n": -k}}, params={"wait": 60000})
            assert r.status_code == 200, r.text
            return r.json()

        workers = [asyncio.create_task(direct_worker(f"d{i}")) for i in range(N_DIRECT_WORKERS)]
        submitting = asyncio.create_task(submit_all())
        # a worker takes a batch through replica b and is never heard from again: the sweeps
        # (on both replicas) must re-queue its jobs once it counts as lost
        while not (crashed := await take(b, "crasher", CRASH_BATCH)):
            assert time.monotonic() < deadline
        syncs = await asyncio.gather(*(runsync(k) for k in range(1, N_SYNC + 1)))
        ids = await submitting

        expected = N_JOBS + N_SYNC
        while True:
            health = (await client.get(f"{a.url()}/health")).json()
            if health["jobs"]["completed"] >= expected:
                break
            assert time.monotonic() < deadline, f"jobs lost or stuck: {health}"
            await asyncio.sleep(0.2)
        all_done.set()
        await asyncio.gather(*workers)

        # every /runsync answered with its own result, through the other replica's workers
        assert sorted(_n_of(s["output"]) for s in syncs if s["status"] == "COMPLETED") == \
            sorted(-k for k in range(1, N_SYNC + 1))

        # every /run job is COMPLETED with its own output, read through either replica: each
        # one an SDK worker finished, and a sample of those the direct workers finished (their
        # results were accepted, and the shared counter below shows each was counted once)
        crashed_ids = {job.id for job in crashed}
        sample = set(rng.sample(sorted(accepted), min(200, len(accepted)))) | crashed_ids
        check = [(n, job_id) for n, job_id in enumerate(ids) if job_id not in accepted or job_id in sample]
        sem = asyncio.Semaphore(32)

        async def status(n: int, job_id: str) -> tuple[int, dict]:
            async with sem:
                r = await client.get(f"{servers[n % 2 - 1].url()}/status/{job_id}")
                assert r.status_code == 200, r.text
                return n, r.json()

        for n, body in await asyncio.gather(*(status(n, job_id) for n, job_id in check)):
            assert body["status"] == "COMPLETED", body
            assert _n_of(body["output"]) == n
            assert body["workerId"] != "crasher"

        # nobody was handed a job twice (only the crasher's jobs were handed out again, after
        # it was declared lost), and every result a worker posted was accepted
        counts = collections.Counter(job_id for wid, got in taken.items() for job_id in got)
        assert max(counts.values()) == 1, [j for j, c in counts.items() if c > 1][:5]
        assert set(done_status) == {200}, done_status

        # both replicas see the same shared counts: each job counted once
        for server in servers:
            h = (await client.get(f"{server.url()}/health")).json()["jobs"]
            assert (h["completed"], h["failed"], h["inQueue"], h["inProgress"]) == (expected, 0, 0, 0), h

        print(f"\n{expected} jobs; direct workers finished {done_status[200]}, SDK workers "
              f"{expected - done_status[200]}; {len(crashed_ids)} re-queued after a lost worker")
