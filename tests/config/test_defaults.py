"""The built-in default configuration and the defaults filled into a minimal file."""

from __future__ import annotations

from proxy.config import LOCAL_DEFAULT, CacheConfig, Config, load_config
from tests.config.conftest import KEY_ENC, KEY_HASH, REDIS_CACHE


def test_no_file_gives_one_listener_on_localhost_serving_local_default() -> None:
    config = load_config(None, environ={})
    assert isinstance(config, Config)
    assert config.source is None
    assert len(config.listeners) == 1
    listener = config.listeners[0]
    assert (listener.address, listener.host, listener.port) == ("127.0.0.1:6379", "127.0.0.1", 6379)
    assert listener.cache == LOCAL_DEFAULT
    assert list(config.caches) == [LOCAL_DEFAULT]


def test_local_default_is_local_without_encryption_or_hashing() -> None:
    cache = load_config(None, environ={}).caches[LOCAL_DEFAULT]
    assert isinstance(cache, CacheConfig)
    assert cache.name == LOCAL_DEFAULT
    assert cache.type == "local"
    assert cache.redis is None
    assert cache.local is not None and cache.local.max_entries == 1_000_000
    assert cache.encryption_enabled is False and cache.encryption_current is None
    assert cache.hashing_enabled is False and cache.hashing_current is None
    assert cache.encryption_old == []
    assert cache.on_decrypt_error == "miss"
    assert cache.key_prefix == b""
    assert cache.databases == 16


def test_empty_file_is_the_default_configuration(write_config) -> None:
    config = load_config(write_config(""), environ={})
    assert [(li.address, li.cache) for li in config.listeners] == [("127.0.0.1:6379",
                                                                    LOCAL_DEFAULT)]
    assert list(config.caches) == [LOCAL_DEFAULT]


def test_single_user_cache_is_served_by_the_default_listener(write_config) -> None:
    config = load_config(write_config(REDIS_CACHE), environ={})
    assert [(li.address, li.cache) for li in config.listeners] == [("127.0.0.1:6379", "main")]
    assert list(config.caches) == ["main", LOCAL_DEFAULT]


def test_minimal_redis_cache_gets_documented_defaults(write_config) -> None:
    cache = load_config(write_config(REDIS_CACHE), environ={}).caches["main"]
    assert cache.type == "redis"
    assert cache.local is None
    redis = cache.redis
    assert redis is not None
    assert redis.addresses == [("127.0.0.1", 6379)]
    assert redis.raw_addresses == ["127.0.0.1:6379"]
    assert redis.disable_tls is True
    assert redis.db == 0
    assert redis.username is None and redis.password is None
    assert redis.connect_timeout == 2.0
    assert redis.command_timeout == 5.0
    assert redis.pool_size == 1
    assert cache.key_prefix == b"cachecloak:main:"
    assert cache.prefix_enabled is True
    assert cache.databases == 16
    assert cache.encryption_enabled is True
    assert cache.encryption_current == bytes.fromhex(KEY_ENC)
    assert cache.encryption_old == []
    assert cache.on_decrypt_error == "miss"
    assert cache.hashing_enabled is True
    assert cache.hashing_current == bytes.fromhex(KEY_HASH)


def test_redis_cache_with_encryption_and_hashing_disabled_needs_no_keys(write_config) -> None:
    path = write_config("""\
        caches:
          - name: plain
            type: redis
            redis: {addresses: ["r:6379"], disableTLS: true}
            encryption: {disabled: true}
            hashing: {disabled: true}
        """)
    cache = load_config(path, environ={}).caches["plain"]
    assert cache.encryption_enabled is False and cache.encryption_current is None
    assert cache.hashing_enabled is False and cache.hashing_current is None


def test_local_cache_defaults_to_no_encryption_and_no_hashing(write_config) -> None:
    path = write_config("""\
        caches:
          - name: mem
            type: local
        """)
    cache = load_config(path, environ={}).caches["mem"]
    assert cache.type == "local"
    assert cache.redis is None
    assert cache.local is not None and cache.local.max_entries == 1_000_000
    assert cache.encryption_enabled is False
    assert cache.hashing_enabled is False
    assert cache.key_prefix == b""


def test_local_cache_with_keys_enables_encryption_and_hashing(write_config) -> None:
    path = write_config(f"""\
        caches:
          - name: mem
            type: local
            encryption: {{keys: {{current: "{KEY_ENC}"}}}}
            hashing: {{keys: {{current: "{KEY_HASH}"}}}}
        """)
    cache = load_config(path, environ={}).caches["mem"]
    assert cache.encryption_enabled is True
    assert cache.encryption_current == bytes.fromhex(KEY_ENC)
    assert cache.hashing_enabled is True
    assert cache.hashing_current == bytes.fromhex(KEY_HASH)


def test_disable_prefix_stores_keys_without_prefix_and_one_database(write_config) -> None:
    path = write_config(REDIS_CACHE + "    keys: {disablePrefix: true}\n")
    cache = load_config(path, environ={}).caches["main"]
    assert cache.prefix_enabled is False
    assert cache.key_prefix == b""
    assert cache.databases == 1


def test_durations_accept_milliseconds_seconds_and_plain_numbers(write_config) -> None:
    text = REDIS_CACHE.replace(
        "disableTLS: true",
        "disableTLS: true\n      connectTimeout: 250ms\n      commandTimeout: 1.5",
    )
    redis = load_config(write_config(text), environ={}).caches["main"].redis
    assert redis is not None
    assert redis.connect_timeout == 0.25
    assert redis.command_timeout == 1.5


def test_repr_of_the_config_shows_no_keys_or_password(write_config) -> None:
    text = REDIS_CACHE.replace("disableTLS: true", "disableTLS: true\n      password: pw-SECRET-1")
    config = load_config(write_config(text), environ={})
    shown = repr(config)
    assert "pw-SECRET-1" not in shown
    assert repr(bytes.fromhex(KEY_ENC)) not in shown
    assert repr(bytes.fromhex(KEY_HASH)) not in shown
