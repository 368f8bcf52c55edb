"""A raw HTTP server on loopback that plays RunPod's queue API and ``/openai/v1`` gateway for
the tests of what podgate does when RunPod refuses (``test_submit_retries``,
``test_fallbacks``): RunPod's cloud cannot run here, and the local endpoint cannot be told
to answer 503 twice then 200.

Each endpoint id names its misbehaviour (the part before the first dash, ``FAULTS``,
``HEALTH``); every job answers ``hello``. It records every submit (``/run``,
``/runsync``, ``/openai/…``) and when it came, and counts the ``/health`` polls. An
embeddings request (``/openai/v1/embeddings``, or a job whose input has infinity's
``openai_route``) gets ``EMBEDDINGS`` instead.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

#: misbehaviour → the answers to a submit, in order (the last one repeats): (status, Retry-After)
FAULTS: dict[str, list[tuple[int, str | None]]] = {
    "after": [(429, "1"), (200, None)],  # 429 with Retry-After, then accepted
    "unavail": [(503, None), (503, None), (200, None)],  # 503 twice (no Retry-After: backoff), then accepted
    "limited": [(429, "0.3")],  # always 429
    "broken": [(500, None), (200, None)],  # 500 once: the job may exist, so never repeated
    "patient": [(429, "2")],  # always 429, come back in 2 s: the client leaves before that
    "far": [(429, "120")],  # always 429, come back in 2 minutes: longer than podgate waits
    "ok": [(200, None)],
    "swamped": [(200, None)],  # no workers and a queue of 50 (its /health)
    "queued": [(200, None)],  # a queue of 50, and an idle worker (its /health)
    "flaky": [(200, None)],  # its job's first run FAILS before any output; run again, it answers
    "doomed": [(200, None)],  # its job FAILS every run
    "expired": [(200, None)],  # its job FAILS, and /retry answers 404 (RunPod no longer has it)
}

#: misbehaviour → how many runs of its job fail before one answers (``/retry`` starts a run)
FAILING_RUNS = {"flaky": 1, "doomed": 1_000, "expired": 1_000}
FAILED = {"status": "FAILED", "error": "the worker crashed"}

#: misbehaviour → its ``/health`` answer (default: an idle worker, no queue)
HEALTH = {"swamped": {"jobs": {"inQueue": 50}, "workers": {"idle": 0, "running": 0, "ready": 0}},
          "queued": {"jobs": {"inQueue": 50}, "workers": {"idle": 1}}}

CHUNK = json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "served",
                    "choices": [{"index": 0, "delta": {"content": "hello"}, "finish_reason": "stop"}]})
ANSWER = json.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "served",
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
                                  "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
EMBEDDINGS = {"object": "list", "model": "served", "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}],
              "usage": {"prompt_tokens": 1, "total_tokens": 1}}


@dataclass
class FakeRunPod:
    base: str = ""
    submits: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    """endpoint → when each submit (``/run``, ``/runsync``, ``/openai/…``) came (monotonic)."""
    streamed: set[str] = field(default_factory=set)
    """The jobs whose one chunk ``/stream`` delivered."""
    health_polls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """endpoint → how many ``/health`` calls it answered."""
    retries: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """job → how many times ``/retry`` ran it again."""

    def failing(self, job: str) -> bool:
        """The job's current run ended FAILED."""
        return self.retries[job] < FAILING_RUNS.get(job.split("-")[0], 0)


def _response(status: int, body: str, content_type: str = "application/json", extra: str = "") -> bytes:
    data = body.encode()
    return (f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {len(data)}\r\n"
            f"connection: close\r\n{extra}\r\n").encode() + data


def _make_handler(fake: FakeRunPod):
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        target = head.split(b" ")[1]
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length")), 0)
        body = json.loads(await reader.readexactly(length)) if length else {}
        path = target.decode().split("?")[0].split("/")[2:]  # [endpoint, operation, …]
        endpoint, op = path[0], path[1]
        if op in ("run", "runsync", "openai"):
            fake.submits[endpoint].append(time.monotonic())
            answers = FAULTS[endpoint.split("-")[0]]
            status, retry_after = answers[min(len(fake.submits[endpoint]), len(answers)) - 1]
            if status != 200:
                extra = f"retry-after: {retry_after}\r\n" if retry_after else ""
                writer.write(_response(status, json.dumps({"error": "refused"}), extra=extra))
            elif op in ("run", "runsync"):  # a new job, named for its endpoint and submit
                job = f"{endpoint}.{len(fake.submits[endpoint])}"
                output = EMBEDDINGS if "openai_route" in body.get("input", {}) else "hello"
                done = {"status": "IN_QUEUE"} if op == "run" else FAILED if fake.failing(job) else \
                    {"status": "COMPLETED", "output": output}
                writer.write(_response(200, json.dumps({"id": job, **done})))
            elif path[-1] == "embeddings":
                writer.write(_response(200, json.dumps(EMBEDDINGS)))
            elif body.get("stream"):
                writer.write(_response(200, f"data: {CHUNK}\n\ndata: [DONE]\n\n", "text/event-stream"))
            else:
                writer.write(_response(200, ANSWER))
        elif op == "stream" and fake.failing(path[2]):
            writer.write(_response(200, json.dumps({"status": "FAILED", "stream": []})))
        elif op == "stream":  # the job's one chunk, once
            job = path[2]
            items = [] if job in fake.streamed else [{"output": "hello"}]
            fake.streamed.add(job)
            writer.write(_response(200, json.dumps({"status": "COMPLETED", "stream": items})))
        elif op == "retry" and endpoint.startswith("expired"):
            writer.write(_response(404, json.dumps({"error": "job not found"})))
        elif op == "retry" and not fake.failing(path[2]):
            writer.write(_response(400, json.dumps({"error": "only FAILED or TIMED_OUT jobs can be retried"})))
        elif op == "retry":
            fake.retries[path[2]] += 1
            writer.write(_response(200, json.dumps({"id": path[2], "status": "IN_QUEUE"})))
        elif op == "status" and fake.failing(path[2]):
            writer.write(_response(200, json.dumps({"id": path[2], **FAILED})))
        elif op == "health":
            fake.health_polls[endpoint] += 1
            default = {"jobs": {"inQueue": 0}, "workers": {"idle": 1}}
            writer.write(_response(200, json.dumps(HEALTH.get(endpoint.split("-")[0], default))))
        else:  # /status, /cancel
            writer.write(_response(200, json.dumps({"id": "job-1", "status": "COMPLETED", "output": "hello"})))
        await writer.drain()
        writer.close()

    return answer


@contextmanager
def serve_fake_runpod() -> Iterator[FakeRunPod]:
    """The fake on a loopback port of its own, in a thread, while the ``with`` lasts."""
    fake = FakeRunPod()
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(_make_handler(fake), "127.0.0.1", 0))
    fake.base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v2"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield fake
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
