"""--listen HOST:PORT replaces the address of the single listener."""

from __future__ import annotations

from proxy.config import LOCAL_DEFAULT, load_config
from tests.config.conftest import REDIS_CACHE, config_errors


def test_listen_replaces_the_default_listener() -> None:
    config = load_config(None, listen="0.0.0.0:7000", environ={})
    assert [(li.address, li.host, li.port, li.cache) for li in config.listeners] == [
        ("0.0.0.0:7000", "0.0.0.0", 7000, LOCAL_DEFAULT)
    ]


def test_listen_replaces_the_single_configured_listener_and_keeps_its_cache(write_config) -> None:
    path = write_config(REDIS_CACHE + "listeners:\n  - {address: '127.0.0.1:6000', cache: main}\n")
    config = load_config(path, listen="[::1]:6001", environ={})
    assert [(li.address, li.host, li.port, li.cache) for li in config.listeners] == [
        ("[::1]:6001", "::1", 6001, "main")
    ]


def test_listen_with_several_listeners_is_an_error(write_config) -> None:
    path = write_config("listeners:\n  - address: 127.0.0.1:6000\n  - address: 127.0.0.1:6001\n")
    assert config_errors(path, listen="127.0.0.1:7000") == [
        ("--listen: the configuration defines 2 listeners; --listen can only replace a single "
        "listener, so edit listeners: in the file instead")
    ]


def test_invalid_listen_address() -> None:
    assert config_errors(None, listen="7000") == [
        '--listen: must be HOST:PORT; for example "127.0.0.1:6379" or "[::1]:6379"'
    ]
