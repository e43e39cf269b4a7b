"""Every validation rule produces a one-line `<path>: <what>; <fix>` message."""

from __future__ import annotations

import pytest

from proxy.config import load_config
from tests.config.conftest import KEY_ENC, KEY_ENC_OLD, KEY_HASH, REDIS_CACHE, config_errors

KEYGEN = 'generate one with "cachecloak keygen"'


def one_error(write_config, text: str) -> str:
    errors = config_errors(write_config(text))
    assert len(errors) == 1, errors
    return errors[0]


# --- unknown fields -----------------------------------------------------------------

def test_unknown_top_level_field_lists_allowed_names(write_config) -> None:
    assert one_error(write_config, "cache: []\n") == (
        'cache: unknown field (did you mean "caches"?); allowed fields here: listeners, caches, '
        'tls, admin'
    )


def test_unknown_nested_field_names_its_path_and_allowed_names(write_config) -> None:
    text = REDIS_CACHE.replace("disableTLS: true", "disableTLS: true\n      tlsProfile: x")
    assert one_error(write_config, text) == (
        "caches[0].redis.tlsProfile: unknown field; allowed fields here: addresses, disableTLS, "
        "tls, mode, sentinel, db, username, password, connectTimeout, commandTimeout, poolSize"
    )


def test_snake_case_field_is_unknown_and_suggests_the_camel_case_name(write_config) -> None:
    text = REDIS_CACHE.replace("disableTLS: true", "disableTLS: true\n      pool_size: 2")
    line = one_error(write_config, text)
    assert line.startswith('caches[0].redis.pool_size: unknown field (did you mean "poolSize"?);')


def test_unknown_field_in_hashing_keys_lists_only_current(write_config) -> None:
    text = REDIS_CACHE + f'        old: ["{KEY_ENC_OLD}"]\n'
    assert one_error(write_config, text) == (
        "caches[0].hashing.keys.old: unknown field; allowed fields here: current"
    )


def test_unknown_listener_field(write_config) -> None:
    text = "listeners:\n  - address: 127.0.0.1:7000\n    port: 7000\n"
    assert one_error(write_config, text) == (
        "listeners[0].port: unknown field; allowed fields here: address, cache, socketMode, "
        "maxClients, password, tls"
    )


# --- TLS, keys, encryption, hashing ----------------------------------------------------

def test_tls_profile_that_is_not_defined_is_named(write_config) -> None:
    text = REDIS_CACHE.replace("      disableTLS: true\n", "      tls: redis-tls\n")
    assert one_error(write_config, text) == (
        'caches[0].redis.tls: profile "redis-tls" is not defined under tls:; define it there '
        "or use one of: none are defined"
    )


def test_redis_encryption_enabled_without_current_key(write_config) -> None:
    text = REDIS_CACHE.replace(f'    encryption:\n      keys:\n        current: "{KEY_ENC}"\n', "")
    assert one_error(write_config, text) == (
        'caches[0].encryption.keys.current: required while encryption is enabled; generate a '
        'key with "cachecloak keygen" or set encryption.disabled: true'
    )


def test_redis_hashing_enabled_without_current_key(write_config) -> None:
    text = REDIS_CACHE.replace(f'    hashing:\n      keys:\n        current: "{KEY_HASH}"\n', "")
    assert one_error(write_config, text) == (
        'caches[0].hashing.keys.current: required while hashing is enabled; generate a '
        'key with "cachecloak keygen" or set hashing.disabled: true'
    )


def test_local_cache_explicitly_enabled_without_key(write_config) -> None:
    text = "caches:\n  - name: mem\n    type: local\n    encryption: {disabled: false}\n"
    assert one_error(write_config, text).startswith(
        "caches[0].encryption.keys.current: required while encryption is enabled;"
    )


@pytest.mark.parametrize("bad_key", [
    "abcd",
    "zz" * 32,
    "a1" * 33,
    "0x" + "a1" * 31,
])
def test_bad_current_key_format_never_echoes_the_value(write_config, bad_key: str) -> None:
    text = REDIS_CACHE.replace(KEY_ENC, bad_key)
    line = one_error(write_config, text)
    assert line == (
        f"caches[0].encryption.keys.current: must be 64 hex characters (32 bytes); {KEYGEN}")
    assert bad_key not in line


def test_unquoted_numeric_key_is_a_format_error(write_config) -> None:
    text = REDIS_CACHE.replace(f'"{KEY_HASH}"', "1234")
    assert one_error(write_config, text) == (
        f"caches[0].hashing.keys.current: must be 64 hex characters (32 bytes); {KEYGEN}"
    )


def test_bad_old_key_names_its_index(write_config) -> None:
    text = REDIS_CACHE.replace(
        f'current: "{KEY_ENC}"\n',
        f'current: "{KEY_ENC}"\n        old: ["{KEY_ENC_OLD}", "nothex-SECRET"]\n'
    )
    line = one_error(write_config, text)
    assert line == (
        f"caches[0].encryption.keys.old[1]: must be 64 hex characters (32 bytes); {KEYGEN}")
    assert "nothex-SECRET" not in line


def test_old_key_equal_to_current_key(write_config) -> None:
    text = REDIS_CACHE.replace(
        f'current: "{KEY_ENC}"\n',
        f'current: "{KEY_ENC}"\n        old: ["{KEY_ENC_OLD}", "{KEY_ENC.upper()}"]\n'
    )
    line = one_error(write_config, text)
    assert line.startswith("caches[0].encryption.keys.old[1]: is the same key as keys.current; "
                           "remove it from old")
    assert KEY_ENC not in line and KEY_ENC.upper() not in line


def test_hashing_key_must_differ_from_encryption_key(write_config) -> None:
    text = REDIS_CACHE.replace(KEY_HASH, KEY_ENC)
    line = one_error(write_config, text)
    assert line.startswith("caches[0].hashing.keys.current: must differ from "
                           "encryption.keys.current;")
    assert KEY_ENC not in line


def test_on_decrypt_error_must_be_miss_or_error(write_config) -> None:
    text = REDIS_CACHE.replace("    hashing:", "      onDecryptError: ignore\n    hashing:")
    assert one_error(write_config, text) == (
        "caches[0].encryption.onDecryptError: must be one of: miss, error; use one of these values"
    )


# --- caches: names, types, sections ------------------------------------------------------

def test_duplicate_cache_names(write_config) -> None:
    text = "caches:\n  - {name: a, type: local}\n  - {name: a, type: local}\n" \
           "listeners: [{address: '127.0.0.1:1', cache: a}]\n"
    assert one_error(write_config, text) == (
        'caches[1].name: duplicate cache name "a" (also caches[0]); give each cache its own name'
    )


def test_local_default_cannot_be_defined(write_config) -> None:
    text = "caches:\n  - {name: local_default, type: local}\n"
    assert one_error(write_config, text) == (
        "caches[0].name: local_default is the reserved name of the built-in cache; choose "
        "another name (listeners may still use cache: local_default)"
    )


def test_cache_name_characters(write_config) -> None:
    text = "caches:\n  - {name: 'my cache', type: local}\n"
    assert one_error(write_config, text).startswith(
        "caches[0].name: may contain only letters, digits, '_', '.' and '-';"
    )


def test_cache_name_and_type_are_required(write_config) -> None:
    errors = config_errors(write_config("caches:\n  - {local: {maxEntries: 5}}\n"))
    assert errors == [
        "caches[0].name: required; give the cache a unique name, for example name: main",
        "caches[0].type: required; set type: redis or type: local",
    ]


def test_unknown_cache_type(write_config) -> None:
    assert one_error(write_config, "caches:\n  - {name: m, type: memcached}\n") == (
        "caches[0].type: must be one of: redis, local; use one of these values"
    )


def test_redis_section_required_for_type_redis(write_config) -> None:
    text = "caches:\n  - {name: r, type: redis, encryption: {disabled: true}, " \
           "hashing: {disabled: true}}\n"
    assert one_error(write_config, text) == (
        'caches[0].redis: required for type redis; add a redis: section with addresses: '
        '["HOST:PORT"] and disableTLS: true'
    )


def test_redis_section_forbidden_for_type_local(write_config) -> None:
    text = "caches:\n  - {name: m, type: local, redis: {addresses: ['r:1'], disableTLS: true}}\n"
    assert one_error(write_config, text) == (
        "caches[0].redis: is only allowed for type redis; remove it or set type: redis"
    )


def test_local_section_forbidden_for_type_redis(write_config) -> None:
    text = REDIS_CACHE + "    local: {maxEntries: 5}\n"
    assert one_error(write_config, text) == (
        "caches[0].local: is only allowed for type local; remove it or set type: local"
    )


def test_cache_entry_must_be_a_mapping(write_config) -> None:
    assert one_error(write_config, "caches:\n  - main\n") == (
        "caches[0]: must be a mapping with the fields name, type, redis, local, keys, "
        "databases, encryption, hashing; write them as 'field: value' lines indented under it"
    )


def test_caches_must_be_a_list(write_config) -> None:
    assert one_error(write_config, "caches: {name: a}\n") == (
        "caches: must be a list; write [a, b] or one '- item' line per entry"
    )


def test_boolean_fields_reject_other_words(write_config) -> None:
    text = REDIS_CACHE.replace("disableTLS: true", "disableTLS: maybe")
    assert one_error(write_config, text) == (
        "caches[0].redis.disableTLS: must be true or false; write it without quotes"
    )


def test_string_fields_reject_numbers(write_config) -> None:
    text = REDIS_CACHE.replace("disableTLS: true", "disableTLS: true\n      password: 12345")
    assert one_error(write_config, text) == (
        "caches[0].redis.password: must be a string; write the value in quotes"
    )


# --- redis section values -----------------------------------------------------------------

def test_addresses_must_not_be_empty(write_config) -> None:
    text = REDIS_CACHE.replace('["127.0.0.1:6379"]', "[]")
    assert one_error(write_config, text) == (
        "caches[0].redis.addresses: must not be empty; add at least one entry"
    )


@pytest.mark.parametrize(("address", "message"), [
    ("redis.internal", "must be HOST:PORT;"),
    ("::1:6379", "IPv6 addresses must be written in brackets;"),
    ("[nothost]:6379", "the host in brackets must be an IPv6 address;"),
    ("redis:0", "the port must be a number from 1 to 65535;"),
    ("redis:70000", "the port must be a number from 1 to 65535;"),
    ("redis:http", "the port must be a number from 1 to 65535;"),
    ("bad host:1", "the host must be a hostname or IP address"),
])
def test_bad_redis_address_names_its_index(write_config, address: str, message: str) -> None:
    text = REDIS_CACHE.replace('["127.0.0.1:6379"]', f'["127.0.0.1:6379", "{address}"]')
    line = one_error(write_config, text)
    assert line.startswith(f"caches[0].redis.addresses[1]: {message}")


def test_ipv6_redis_address(write_config) -> None:
    text = REDIS_CACHE.replace('["127.0.0.1:6379"]', '["[::1]:6379"]')
    redis = load_config(write_config(text), environ={}).caches["main"].redis
    assert redis.addresses == [("::1", 6379)]
    assert redis.raw_addresses == ["[::1]:6379"]


def test_duplicate_redis_address(write_config) -> None:
    text = REDIS_CACHE.replace('["127.0.0.1:6379"]', '["Redis:6379", "redis:6379"]')
    assert one_error(write_config, text) == (
        "caches[0].redis.addresses[1]: duplicate of addresses[0]; list each server once"
    )


@pytest.mark.parametrize(("field", "value", "message"), [
    ("db", "-1", "caches[0].redis.db: must be a number of at least 0;"),
    ("db", "true", "caches[0].redis.db: must be a whole number, not true/false;"),
    ("poolSize", "0", "caches[0].redis.poolSize: must be a number from 1 to 64;"),
    ("poolSize", "65", "caches[0].redis.poolSize: must be a number from 1 to 64;"),
    ("poolSize", "two", "caches[0].redis.poolSize: must be a whole number;"),
    ("connectTimeout", "soon", "caches[0].redis.connectTimeout: must be a duration;"),
    ("connectTimeout", "0s", "caches[0].redis.connectTimeout: must be greater than zero;"),
    ("commandTimeout", "5m", "caches[0].redis.commandTimeout: must be a duration;"),
])
def test_redis_numbers_and_durations(write_config, field: str, value: str, message: str) -> None:
    text = REDIS_CACHE.replace("disableTLS: true", f"disableTLS: true\n      {field}: {value}")
    assert one_error(write_config, text).startswith(message)


def test_local_max_entries_must_be_positive(write_config) -> None:
    text = "caches:\n  - {name: m, type: local, local: {maxEntries: 0}}\n"
    assert one_error(write_config, text).startswith(
        "caches[0].local.maxEntries: must be a number of at least 1;"
    )


# --- keys and databases ---------------------------------------------------------------------

@pytest.mark.parametrize(("prefix", "message"), [
    ("app {1}:", "must not contain { or } (they would act as Redis Cluster hash tags)"),
    ("app 1:", "must contain only printable ASCII characters and no spaces"),
    ("caf\u00e9:", "must contain only printable ASCII characters and no spaces"),
    ("x" * 65, "must be at most 64 characters; shorten it"),
])
def test_key_prefix_rules(write_config, prefix: str, message: str) -> None:
    text = REDIS_CACHE + f'    keys: {{prefix: "{prefix}"}}\n'
    assert one_error(write_config, text).startswith(f"caches[0].keys.prefix: {message}")


def test_prefix_of_64_characters_is_accepted(write_config) -> None:
    text = REDIS_CACHE + f'    keys: {{prefix: "{"x" * 64}"}}\n'
    assert load_config(write_config(text), environ={}).caches["main"].key_prefix == b"x" * 64


def test_prefix_together_with_disable_prefix(write_config) -> None:
    text = REDIS_CACHE + '    keys: {prefix: "a:", disablePrefix: true}\n'
    assert one_error(write_config, text) == (
        "caches[0].keys.prefix: conflicts with keys.disablePrefix: true; remove prefix or set "
        "disablePrefix: false"
    )


@pytest.mark.parametrize("value", ["0", "1025"])
def test_databases_range(write_config, value: str) -> None:
    text = REDIS_CACHE + f"    databases: {value}\n"
    assert one_error(write_config, text).startswith(
        "caches[0].databases: must be a number from 1 to 1024;"
    )


def test_databases_must_be_1_without_prefix(write_config) -> None:
    text = REDIS_CACHE + "    keys: {disablePrefix: true}\n    databases: 16\n"
    assert one_error(write_config, text) == (
        "caches[0].databases: must be 1 when keys.disablePrefix is true (without a prefix "
        "logical databases cannot be kept apart); remove databases or set it to 1"
    )


# --- listeners ------------------------------------------------------------------------------

TWO_CACHES = "caches:\n  - {name: a, type: local}\n  - {name: b, type: local}\n"


def test_listener_naming_an_unknown_cache(write_config) -> None:
    text = TWO_CACHES + "listeners:\n  - {address: '127.0.0.1:7000', cache: x}\n"
    assert one_error(write_config, text) == (
        'listeners[0].cache: cache "x" is not defined under caches:; define it or use one of: '
        "a, b, local_default"
    )


def test_listener_cache_required_with_several_caches(write_config) -> None:
    text = TWO_CACHES + "listeners:\n  - {address: '127.0.0.1:7000', cache: a}\n" \
                        "  - {address: '127.0.0.1:7001'}\n"
    assert one_error(write_config, text) == (
        "listeners[1].cache: required when several caches are defined; set it to one of: "
        "a, b, local_default"
    )


def test_default_listener_needs_a_cache_choice_with_several_caches(write_config) -> None:
    assert one_error(write_config, TWO_CACHES) == (
        "listeners: required when several caches are defined; add a listener with "
        "address: HOST:PORT and cache: one of: a, b, local_default"
    )


def test_listener_may_use_local_default(write_config) -> None:
    text = TWO_CACHES + "listeners:\n  - {address: '127.0.0.1:7000', cache: local_default}\n"
    config = load_config(write_config(text), environ={})
    assert config.listeners[0].cache == "local_default"


def test_listener_cache_is_optional_with_one_cache(write_config) -> None:
    text = REDIS_CACHE + "listeners:\n  - address: 127.0.0.1:7000\n"
    assert load_config(write_config(text), environ={}).listeners[0].cache == "main"


def test_duplicate_listener_addresses(write_config) -> None:
    text = "listeners:\n  - address: 127.0.0.1:7000\n  - address: 127.0.0.1:7000\n"
    assert one_error(write_config, text) == (
        'listeners[1].address: duplicate listener address "127.0.0.1:7000" (also listeners[0]); '
        "give each listener its own address"
    )


def test_listener_address_is_required_and_checked(write_config) -> None:
    errors = config_errors(write_config("listeners:\n  - cache: local_default\n"
                                        "  - address: localhost\n"))
    assert errors == [
        ("listeners[0].address: required; set it to HOST:PORT or unix:/path, for example "
        "address: 127.0.0.1:6379"),
        'listeners[1].address: must be HOST:PORT; for example "127.0.0.1:6379" or "[::1]:6379"',
    ]


def test_empty_listener_list(write_config) -> None:
    assert one_error(write_config, "listeners: []\n") == (
        "listeners: must not be empty; add a listener or remove listeners: to use the default "
        "127.0.0.1:6379"
    )


def test_listener_port_zero_lets_the_kernel_choose(write_config) -> None:
    config = load_config(write_config("listeners:\n  - address: 127.0.0.1:0\n"), environ={})
    assert config.listeners[0].port == 0
