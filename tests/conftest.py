"""Shared fixtures: real redis-server processes, started per module and always stopped.

The differential fixtures (`direct_redis`, `upstream_redis`, `proxies`, `backend`) give
each test module a reference Redis, and two cachecloak processes with hashing and
encryption on: one in front of a second Redis (`redis` backend), one serving its
in-process store (`local`).  A module that needs other proxies defines its own
`proxies`, which takes precedence.
"""

from __future__ import annotations

import pytest

from tests.differential import proxy_config
from tests.servers import start_proxy, start_redis


@pytest.fixture(scope="module")
def redis_server():
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def direct_redis():
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def upstream_redis():
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxies(upstream_redis):
    started = {}
    try:
        started["redis"] = start_proxy(proxy_config("redis", upstream_redis.address))
        started["local"] = start_proxy(proxy_config("local"))
        yield started
    finally:
        for proxy in started.values():
            proxy.stop()


@pytest.fixture(params=["redis", "local"])
def backend(request):
    return request.param


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def proto(request):
    return request.param
