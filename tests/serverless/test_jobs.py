"""Unit tests of the job model: RunPod's policy bounds, status bodies and chunk splitting."""

from __future__ import annotations

import msgspec
import pytest

from serverless import jobs
from serverless.chunks import split_chunk


def test_policy_defaults_and_runpod_bounds():
    assert jobs.resolve_policy(None) == (600_000, 86_400_000)
    assert jobs.resolve_policy(jobs.Policy(execution_timeout=5_000, ttl=10_000)) == (5_000, 10_000)
    week = 7 * 24 * 3600 * 1000
    assert jobs.resolve_policy(jobs.Policy(execution_timeout=week, ttl=week)) == (week, week)
    for bad in (jobs.Policy(execution_timeout=4_999), jobs.Policy(ttl=9_999), jobs.Policy(ttl=week + 1),
                jobs.Policy(execution_timeout=week + 1), jobs.Policy(execution_timeout=0)):
        with pytest.raises(jobs.PolicyError):
            jobs.resolve_policy(bad)
    assert jobs.resolve_policy(jobs.Policy(ttl=200), ttl_min_ms=100) == (600_000, 200)


def test_policy_decodes_camel_case():
    p = msgspec.json.decode(b'{"executionTimeout": 6000, "lowPriority": true, "ttl": 20000}', type=jobs.Policy)
    assert (p.execution_timeout, p.low_priority, p.ttl) == (6000, True, 20000)


def test_status_body_fields_appear_as_the_job_progresses():
    job = jobs.Job(id="j", endpoint="e", payload=b"{}", created_at=100.0, expires_at=1e12)
    enc = msgspec.json.encode
    assert msgspec.json.decode(enc(jobs.status_body(job, 101.0))) == {"id": "j", "status": "IN_QUEUE"}
    job.status, job.started_at, job.worker_id = jobs.IN_PROGRESS, 100.5, "w"
    body = msgspec.json.decode(enc(jobs.status_body(job, 101.0)))
    assert body == {"id": "j", "status": "IN_PROGRESS", "delayTime": 500, "executionTime": 500, "workerId": "w"}
    job.status, job.finished_at, job.output, job.error = jobs.FAILED, 102.0, b'{"a":1}', "bad"
    body = msgspec.json.decode(enc(jobs.status_body(job, 500.0)))
    assert body["executionTime"] == 1500 and body["output"] == {"a": 1} and body["error"] == "bad"


def test_split_string_and_list_chunks():
    text = "ab\n\"é" * 500
    parts = split_chunk(msgspec.json.encode(text), 100)
    assert len(parts) > 1 and all(len(p) <= 100 for p in parts)
    assert "".join(msgspec.json.decode(p) for p in parts) == text
    items = [{"k": i} for i in range(100)]
    parts = split_chunk(msgspec.json.encode(items), 100)
    assert all(len(p) <= 100 for p in parts)
    assert [x for p in parts for x in msgspec.json.decode(p)] == items
    obj = msgspec.json.encode({"big": "x" * 500})
    assert split_chunk(obj, 100) == [obj]  # objects cannot be split without changing meaning
    assert split_chunk(b'"small"', 100) == [b'"small"']
