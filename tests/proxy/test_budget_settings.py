"""``[budgets]`` in the settings: RunPod's table by default, overrides per operation (a key
left out keeps RunPod's value), and errors that name the key."""

from __future__ import annotations

import pytest

from adapters.budgets import DEFAULT_LIMITS, Limit
from proxy.settings import SettingsError, parse_settings

MODEL = '[[models]]\nname = "m"\nendpoint = "ep"\nformat = "vllm"\n'
ENV = {"RUNPOD_API_KEY": "rp-key"}


def test_default_is_runpods_table_for_one_replica():
    budgets = parse_settings(MODEL, ENV).budgets
    assert budgets.replicas == 1
    assert budgets.limits() == DEFAULT_LIMITS


def test_overrides_per_operation():
    text = """
[budgets]
replicas = 3
[budgets.stream]
rate = 20
per_s = 2
[budgets.purge-queue]
rate = 5
burst = 5
[budgets.health]
concurrency = 4
[budgets.cancel]
concurrency = 0
"""
    budgets = parse_settings(text + MODEL, ENV).budgets
    limits = budgets.limits()
    assert budgets.replicas == 3
    assert limits["stream"] == Limit(20, 2.0, 400)  # the cap kept from RunPod's table
    assert limits["purge-queue"] == Limit(5, 10.0, 0, burst=5)
    assert limits["health"] == Limit(0, 10.0, 4)  # not in the table: only what was set
    assert limits["cancel"] == Limit(100, 10.0, 0)  # 0: no cap
    assert limits["run"] == DEFAULT_LIMITS["run"]


@pytest.mark.parametrize(("text", "error"), [
    ("[budgets.strem]\nrate = 1\n", "budgets.strem: unknown key"),
    ("[budgets.stream]\nrat = 1\n", "budgets.stream.rat: unknown key"),
    ("[budgets.stream]\nrate = -1\n", "budgets.stream.rate: must not be negative"),
    ("[budgets.purge-queue]\nper_s = 0\n", "budgets.purge-queue.per_s: must be positive"),
    ("[budgets.cancel]\nburst = 101\n", "budgets.cancel.burst: must not exceed the rate (100)"),
    ("[budgets]\nreplicas = 0\n", "budgets.replicas: must be positive"),
])
def test_errors_name_the_key(text, error):
    with pytest.raises(SettingsError) as info:
        parse_settings(text + MODEL, ENV)
    assert str(info.value) == f"settings: {error}"
