"""Shared fixtures: real redis-server processes, started per module and always stopped."""

from __future__ import annotations

import pytest

from tests.servers import start_redis


@pytest.fixture(scope="module")
def redis_server():
    server = start_redis()
    yield server
    server.stop()
