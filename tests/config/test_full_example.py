"""The documented full example parses to the right values."""

from __future__ import annotations

from pathlib import Path

from proxy.config import LOCAL_DEFAULT, load_config
from tests.config.conftest import KEY_ENC, KEY_ENC_OLD, KEY_HASH

FULL_EXAMPLE = """\
listeners:
  - address: 127.0.0.1:6379
    cache: my-redis
  - address: "[::1]:6380"
    cache: local_default
  - address: 0.0.0.0:6381
    cache: mem
caches:
  - name: my-redis
    type: redis
    redis:
      addresses: ["redis.internal:6379", "10.0.0.2:6380"]
      disableTLS: true
      db: 3
      username: <vault.redis_user>
      password: <vault.redis_password>
      connectTimeout: 500ms
      commandTimeout: 5s
      poolSize: 4
    keys:
      prefix: "app1:"
      disablePrefix: false
    databases: 4
    encryption:
      keys:
        current: <vault.redis_encryption_key>
        old: [<vault.redis_encryption_key_old>]
      disabled: false
      onDecryptError: error
    hashing:
      keys:
        current: <vault.redis_hashing_key>
      disabled: false
  - name: mem
    type: local
    local:
      maxEntries: 100000
"""

SECRETS_YAML = f"""\
vault:
  redis_user: app1
  redis_password: hunter2-SECRET
  redis_encryption_key: {KEY_ENC}
  redis_encryption_key_old: {KEY_ENC_OLD}
  redis_hashing_key: {KEY_HASH}
"""


def _check_full_example(config) -> None:
    assert [(li.address, li.host, li.port, li.cache) for li in config.listeners] == [
        ("127.0.0.1:6379", "127.0.0.1", 6379, "my-redis"),
        ("[::1]:6380", "::1", 6380, LOCAL_DEFAULT),
        ("0.0.0.0:6381", "0.0.0.0", 6381, "mem"),
    ]
    assert list(config.caches) == ["my-redis", "mem", LOCAL_DEFAULT]

    cache = config.caches["my-redis"]
    assert cache.name == "my-redis"
    assert cache.type == "redis"
    assert cache.local is None
    redis = cache.redis
    assert redis.addresses == [("redis.internal", 6379), ("10.0.0.2", 6380)]
    assert redis.raw_addresses == ["redis.internal:6379", "10.0.0.2:6380"]
    assert redis.disable_tls is True
    assert redis.db == 3
    assert redis.username == "app1"
    assert redis.password == "hunter2-SECRET"
    assert redis.connect_timeout == 0.5
    assert redis.command_timeout == 5.0
    assert redis.pool_size == 4
    assert cache.key_prefix == b"app1:"
    assert cache.prefix_enabled is True
    assert cache.databases == 4
    assert cache.encryption_enabled is True
    assert cache.encryption_current == bytes.fromhex(KEY_ENC)
    assert len(cache.encryption_current) == 32
    assert cache.encryption_old == [bytes.fromhex(KEY_ENC_OLD)]
    assert cache.on_decrypt_error == "error"
    assert cache.hashing_enabled is True
    assert cache.hashing_current == bytes.fromhex(KEY_HASH)

    mem = config.caches["mem"]
    assert mem.type == "local"
    assert mem.redis is None
    assert mem.local.max_entries == 100_000
    assert mem.encryption_enabled is False
    assert mem.hashing_enabled is False


def test_full_example_with_secret_file_provider(write_config, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(SECRETS_YAML)
    config = load_config(write_config(FULL_EXAMPLE), secret_provider=f"secretfile://{secrets}",
                         environ={})
    assert config.source is not None and config.source.endswith("cachecloak.yaml")
    _check_full_example(config)


def test_full_example_with_directory_provider(write_config, tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    (root / "vault").mkdir(parents=True)
    # Kubernetes-style nested files (with the trailing newline editors add) ...
    (root / "vault" / "redis_user").write_text("app1\n")
    (root / "vault" / "redis_password").write_text("hunter2-SECRET\n")
    (root / "vault" / "redis_encryption_key").write_text(KEY_ENC + "\n")
    # ... and Docker/Vault-Agent-style flat files.
    (root / "vault.redis_encryption_key_old").write_text(KEY_ENC_OLD)
    (root / "vault.redis_hashing_key").write_text(KEY_HASH + "\n")
    config = load_config(write_config(FULL_EXAMPLE), environ={
        "CACHECLOAK_SECRET_PROVIDER": f"dir://{root}",
    })
    _check_full_example(config)


def test_literal_keys_in_the_file_need_no_provider(write_config) -> None:
    text = (FULL_EXAMPLE
            .replace("<vault.redis_user>", "app1")
            .replace("<vault.redis_password>", "hunter2-SECRET")
            .replace("<vault.redis_encryption_key>", KEY_ENC.upper())
            .replace("<vault.redis_encryption_key_old>", KEY_ENC_OLD)
            .replace("<vault.redis_hashing_key>", KEY_HASH))
    _check_full_example(load_config(write_config(text), environ={}))
