"""The settings of per-key limits: ``[[keys]] rpm``/``tpm``, ``[redis]`` (and
``PODGATE_REDIS_URL``), and ``keys_file``; each error names its file and key, and none repeats
a Redis password."""

from __future__ import annotations

import pytest

from proxy.keys import hash_key
from proxy.ratelimit import duration
from proxy.settings import SettingsError, load_settings, parse_settings

ENV = {"RUNPOD_API_KEY": "rp-key-0000"}
M = '[[models]]\nname = "m"\nendpoint = "e"\nformat = "vllm"\n'
PASSWORD = "hunter2-redis-secret"


def key(name: str, **more: object) -> str:
    lines = [f'name = "{name}"', f'sha256 = "{hash_key(name)}"'] + [f"{k} = {v!r}".replace("'", '"') for k, v in more.items()]
    return "\n[[keys]]\n" + "\n".join(lines) + "\n"


def test_rpm_and_tpm_are_optional_positive_counts():
    s = parse_settings(M + key("a", rpm=600, tpm=200000) + key("b"), ENV)
    assert [(k.rpm, k.tpm) for k in s.keys] == [(600, 200000), (None, None)]
    for field in ("rpm", "tpm"):
        with pytest.raises(SettingsError) as info:
            parse_settings(M + key("a", **{field: 0}), ENV, source="podgate.toml")
        assert str(info.value) == f"podgate.toml: keys[0].{field}: must be positive"


def test_redis_url_and_the_environment_override():
    s = parse_settings(M + '[redis]\nurl = "redis://cache:6379/2"\n', ENV)
    assert s.redis.url == "redis://cache:6379/2" and s.redis.key_prefix == "podgate"
    assert parse_settings(M, ENV).redis.url is None
    env = {**ENV, "PODGATE_REDIS_URL": f"rediss://:{PASSWORD}@cache:6380/0"}
    s = parse_settings(M + '[redis]\nurl = "redis://cache:6379/2"\nkey_prefix = "pg-eu"\n', env)
    assert s.redis.url == f"rediss://:{PASSWORD}@cache:6380/0" and s.redis.key_prefix == "pg-eu"
    assert PASSWORD not in repr(s.redis) and "rediss://:***@cache:6380/0" in repr(s.redis)
    assert PASSWORD in s.secrets()  # masked wherever the keys are
    assert parse_settings(M + '[redis]\nurl = "unix:///run/redis/redis.sock?db=1"\n', ENV).redis.url


@pytest.mark.parametrize("url", [f"http://:{PASSWORD}@cache:6379", f"{PASSWORD}", "redis://", f"redis://u:{PASSWORD}@h:port/0",
                                 "unix://", f"redis+sentinel://:{PASSWORD}@h/0"])
def test_a_bad_redis_url_is_named_but_never_repeated(url):
    with pytest.raises(SettingsError) as info:
        parse_settings(M + f'[redis]\nurl = "{url}"\n', ENV, source="podgate.toml")
    message = str(info.value)
    assert message.startswith("podgate.toml: redis.url: must be a redis://host:port[/db], rediss://")
    assert PASSWORD not in message
    with pytest.raises(SettingsError) as info:
        parse_settings(M, {**ENV, "PODGATE_REDIS_URL": url}, source="podgate.toml")
    assert str(info.value).startswith("podgate.toml: redis.url (from PODGATE_REDIS_URL): must be")
    assert PASSWORD not in str(info.value)


def test_keys_file_adds_keys_after_the_inline_ones(tmp_path):
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "keys.toml").write_text(key("team-b", tpm=1000) + key("team-c", models=["m"]))
    config = tmp_path / "podgate.toml"
    config.write_text('keys_file = "secret/keys.toml"\n' + M + key("team-a", rpm=10))  # relative to the config
    s = load_settings(config, ENV)
    assert [(k.name, k.rpm, k.tpm, k.models) for k in s.keys] == [
        ("team-a", 10, None, None), ("team-b", None, 1000, None), ("team-c", None, None, ["m"])]
    assert parse_settings(f'keys_file = "{tmp_path / "secret" / "keys.toml"}"\n' + M, ENV).keys[0].name == "team-b"


@pytest.mark.parametrize("keys,problem", [
    ('[[keys]]\nname = "x"\nsha256 = "not-a-hash"\n', "keys[0].sha256: must be the key's SHA-256 in lowercase hex"),
    (key("x") + key("y", tpm=0), "keys[1].tpm: must be positive"),
    (key("x", models=["nope"]), "keys[0].models: no such model: 'nope'"),
    (key("x") + "\n[[models]]\nname = \"m2\"\nendpoint = \"e\"\nformat = \"vllm\"\n", "models: unknown key"),
    (key("inline"), "keys[0].name: duplicate key name 'inline' (also podgate.toml: keys[0])"),
    ('[[keys]]\nname = "twin"\nsha256 = "' + hash_key("inline") + '"\n', "keys[0].sha256: the same key as podgate.toml: keys[0]"),
    (key("x") + key("x"), "keys[1].name: duplicate key name 'x' (also keys[0])"),
    ("[[keys]\n", "not valid TOML"),
])
def test_keys_file_errors_name_the_file_and_the_key(tmp_path, keys, problem):
    (tmp_path / "keys.toml").write_text(keys)
    config = tmp_path / "podgate.toml"
    config.write_text('keys_file = "keys.toml"\n' + M + key("inline"))
    with pytest.raises(SettingsError) as info:
        load_settings(config, ENV)
    message = str(info.value).replace(f"{tmp_path}/", "")  # the settings file is named by its path
    assert message.startswith("keys.toml: ") and problem in message, message
    assert hash_key("inline") not in message


def test_a_missing_keys_file(tmp_path):
    config = tmp_path / "podgate.toml"
    config.write_text('keys_file = "/nonexistent/keys.toml"\n' + M)
    with pytest.raises(SettingsError, match=r"^/nonexistent/keys.toml: cannot read: No such file"):
        load_settings(config, ENV)


@pytest.mark.parametrize("seconds,text", [(0.0, "0ms"), (0.02, "20ms"), (0.6664, "666ms"), (1, "1s"), (1.5, "1.5s"),
                                          (59.25, "59.25s"), (60, "1m0s"), (86.4, "1m26.4s"), (360, "6m0s")])
def test_reset_durations_are_written_as_openai_does(seconds, text):
    assert duration(seconds) == text
