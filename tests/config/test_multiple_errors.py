"""All problems in a file are reported together, one per line, without secrets."""

from __future__ import annotations

from tests.config.conftest import KEY_ENC, config_errors

BROKEN = f"""\
listeners:
  - address: 127.0.0.1:6379
    cache: nope
  - address: 127.0.0.1:6379
    cache: b
caches:
  - name: a
    type: redis
    redis:
      addresses: ["redis:6379"]
      password: hunter2-SECRET
      poolSize: 100
    encryption:
      keys:
        current: short-SECRET
  - name: b
    type: local
    keys: {{prefix: "{{tag}}", disablePrefix: true}}
    databases: 4
    hashing: {{keys: {{current: "{KEY_ENC}"}}}}
    encryption: {{keys: {{current: "{KEY_ENC}"}}, onDecryptError: maybe}}
  - name: b
    type: local
unknown: 1
"""


def test_every_problem_is_reported_in_one_error(write_config) -> None:
    errors = config_errors(write_config(BROKEN))
    assert errors == [
        "unknown: unknown field; allowed fields here: listeners, caches, tls, admin",
        ("caches[0].redis.poolSize: must be a number from 1 to 64; use from 1 to 64 upstream "
        "connections"),
        ('caches[0].encryption.keys.current: must be 64 hex characters (32 bytes); generate one '
        'with "cachecloak keygen"'),
        ('caches[0].hashing.keys.current: required while hashing is enabled; generate a key with '
        '"cachecloak keygen" or set hashing.disabled: true'),
        ("caches[1].keys.prefix: must not contain { or } (they would act as Redis Cluster hash "
        "tags); remove them"),
        ("caches[1].encryption.onDecryptError: must be one of: miss, error; use one of these "
        "values"),
        ("caches[1].databases: must be 1 when keys.disablePrefix is true (without a prefix "
        "logical databases cannot be kept apart); remove databases or set it to 1"),
        ("caches[1].hashing.keys.current: must differ from encryption.keys.current; use a "
        'separate key for hashing (generate one with "cachecloak keygen")'),
        'caches[2].name: duplicate cache name "b" (also caches[1]); give each cache its own name',
        ('listeners[0].cache: cache "nope" is not defined under caches:; define it or use one '
        "of: a, b, local_default"),
        ('listeners[1].address: duplicate listener address "127.0.0.1:6379" (also listeners[0]); '
        "give each listener its own address"),
    ]
    text = "\n".join(errors)
    assert "SECRET" not in text
    assert KEY_ENC not in text


def test_an_invalid_disabled_switch_silences_advice_for_its_section(write_config) -> None:
    text = """\
    caches:
      - {name: a, type: redis, redis: {addresses: ["r:1"], disableTLS: true},
         encryption: {disabled: sometimes}, hashing: {disabled: true}}
    """
    assert config_errors(write_config(text)) == [
        "caches[0].encryption.disabled: must be true or false; write it without quotes",
    ]


def test_errors_in_several_caches_do_not_hide_each_other(write_config) -> None:
    text = """\
    caches:
      - {name: a, type: redis, redis: {addresses: ["r:1"], tls: nope},
         encryption: {disabled: true},
         hashing: {disabled: true}}
      - {name: b, type: local, local: {maxEntries: -5}}
      - {name: c, type: redis, redis: {addresses: ["r:1"], disableTLS: true}}
    listeners:
      - {address: "127.0.0.1:1", cache: a}
    """
    errors = config_errors(write_config(text))
    assert [e.split(":", 1)[0] for e in errors] == [
        "caches[0].redis.tls",
        "caches[1].local.maxEntries",
        "caches[2].encryption.keys.current",
        "caches[2].hashing.keys.current",
    ]
