"""Shared fixtures: real redis-server processes, started per module and always stopped.

The differential fixtures (`direct_redis`, `upstream_redis`, `proxies`, `backend`) give
each test module a reference Redis, and two cachecloak processes with hashing and
encryption on: one in front of a second Redis (`redis` backend), one serving its
in-process store (`local`).  A module that needs other proxies defines its own
`proxies`, which takes precedence.
"""

from __future__ import annotations

import pytest

from tests import secrets_registry
from tests.differential import proxy_config
from tests.servers import start_proxy, start_redis

# The client-compatibility modules share their proxy fixture (client_proxy).
pytest_plugins = ["tests.clients.support"]


@pytest.fixture(scope="session", autouse=True)
def logs_hold_no_secrets():
    """At the end of the session, every log any test produced (proxy processes, CLI
    runs, in-process loggers) is scanned for the secrets the helpers registered and for
    key hex (tests/secrets_registry.py); a hit fails the run, naming file and line."""
    capture = secrets_registry.LogCapture().install()
    yield
    capture.remove()
    findings = secrets_registry.scan()
    if findings:
        secrets, logs = secrets_registry.registered_counts()
        pytest.fail(f"{len(findings)} log line(s) hold a secret ({secrets} secrets checked "
                    f"in {logs} logs; shown redacted):\n"
                    + "\n".join(str(f) for f in findings), pytrace=False)
    secrets_registry.discard_session_dir()


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
