"""``serverless.outage`` alone: the retry loop of a request that can wait, and the sweeper's
allowance for an outage (the integration is tested in ``test_redis_outage`` and
``tests/faults/test_redis_restart``)."""

from __future__ import annotations

import pytest

from serverless.outage import OutageClock, ride_out
from serverless.store.base import StoreUnavailable


async def test_a_call_is_retried_until_the_store_answers():
    tries = []

    async def call() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise StoreUnavailable("out")
        return "ok"

    assert await ride_out(call, 30.0) == "ok"
    assert len(tries) == 3


async def test_past_its_budget_the_outage_is_raised():
    tries = []

    async def call() -> str:
        tries.append(1)
        raise StoreUnavailable("out")

    with pytest.raises(StoreUnavailable):
        await ride_out(call, 0.2)
    assert len(tries) >= 2
    tries.clear()
    with pytest.raises(StoreUnavailable):  # no budget: one try
        await ride_out(call, 0.0)
    assert len(tries) == 1


def test_the_outage_is_allowed_for_one_worker_timeout_after_it_ended():
    clock = OutageClock()
    assert clock.allowance(100.0) == 0.0
    clock.failed(100.0)
    clock.failed(101.0)  # the outage began at the first failure
    assert clock.allowance(103.0) == 3.0
    clock.succeeded(104.0, worker_timeout=10.0)
    assert clock.allowance(105.0) == 4.0
    assert clock.allowance(117.9) == 4.0
    assert clock.allowance(118.1) == 0.0
    clock.succeeded(120.0, worker_timeout=10.0)  # no outage in between: nothing changes
    assert clock.allowance(120.0) == 0.0
