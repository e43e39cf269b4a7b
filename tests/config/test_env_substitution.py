"""{{ env.NAME }} placeholders are replaced in the raw text before YAML parsing."""

from __future__ import annotations

import pytest

from proxy.config import load_config
from tests.config.conftest import KEY_ENC, REDIS_CACHE, config_errors


def test_env_placeholders_with_and_without_spaces(write_config) -> None:
    text = REDIS_CACHE.replace('"127.0.0.1:6379"', '"{{env.REDIS_HOST}}:{{ env.REDIS_PORT }}"') \
        + "    databases: {{   env.DBS }}\n"
    config = load_config(write_config(text), environ={
        "REDIS_HOST": "redis.internal", "REDIS_PORT": "6380", "DBS": "8",
    })
    cache = config.caches["main"]
    assert cache.redis.addresses == [("redis.internal", 6380)]
    assert cache.databases == 8


def test_env_value_can_be_a_key(write_config) -> None:
    text = REDIS_CACHE.replace(f'"{KEY_ENC}"', '"{{ env.ENC_KEY }}"')
    key = "d4" * 32
    config = load_config(write_config(text), environ={"ENC_KEY": key})
    assert config.caches["main"].encryption_current == bytes.fromhex(key)


def test_unset_variable_names_the_variable_and_line(write_config) -> None:
    text = REDIS_CACHE.replace("disableTLS: true", "disableTLS: {{ env.NO_TLS }}")
    path = write_config(text)
    assert config_errors(path, environ={}) == [
        (f"{path} line 6: environment variable NO_TLS is not set; export NO_TLS or replace "
        "{{ env.NO_TLS }} with a value")
    ]


def test_every_unset_variable_is_reported(write_config) -> None:
    path = write_config("listeners:\n  - address: '{{ env.A }}:{{ env.B }}'\n"
                        "    cache: '{{ env.C }}'\n")
    errors = config_errors(path, environ={"B": "1"})
    assert [e.split(": ", 1)[1].split(";")[0] for e in errors] == [
        "environment variable A is not set",
        "environment variable C is not set",
    ]
    assert errors[0].startswith(f"{path} line 2:")
    assert errors[1].startswith(f"{path} line 3:")


def test_placeholders_in_comment_lines_are_ignored(write_config) -> None:
    path = write_config("# address: {{ env.UNSET }}\ncaches: []\n")
    assert load_config(path, environ={}).listeners[0].address == "127.0.0.1:6379"


def test_unsupported_template_expression(write_config) -> None:
    path = write_config("listeners:\n  - address: '{{ vault.x }}'\n")
    [line] = config_errors(path)
    assert line == (f"{path} line 2: unsupported {{{{ }}}} expression; only {{{{ env.NAME }}}} is "
                    "supported (NAME: letters, digits and _)")


def test_multi_line_env_value_is_refused_without_echoing_it(write_config) -> None:
    path = write_config("caches:\n  - {name: '{{ env.N }}', type: local}\n")
    [line] = config_errors(path, environ={"N": "first\nSECRET-second"})
    assert line.startswith(f"{path} line 2: environment variable N contains a line break;")
    assert "SECRET" not in line


def test_environ_defaults_to_the_process_environment(write_config,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHECLOAK_TEST_LISTEN_PORT", "7123")
    monkeypatch.delenv("CACHECLOAK_SECRET_PROVIDER", raising=False)
    path = write_config(
        "listeners:\n  - address: 127.0.0.1:{{ env.CACHECLOAK_TEST_LISTEN_PORT }}\n")
    assert load_config(path).listeners[0].port == 7123
