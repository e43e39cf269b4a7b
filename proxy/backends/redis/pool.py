"""A small, bounded pool of pipelined upstream connections for one cache.

Clients are spread over the pool and stay on their connection (see proxy.backends for
why).  The pool never grows with the number of clients: a thousand clients share
`poolSize` connections, which is what keeps Redis's connection count and the proxy's
memory flat.
"""

from __future__ import annotations

import asyncio

from proxy.backends.redis.connection import READY, UpstreamConnection, UpstreamSettings
from proxy.backends.redis.tls import client_context


class RedisBackend:
    def __init__(self, cfg) -> None:
        redis = cfg.redis
        host, port = redis.addresses[0]
        scheme = "rediss" if redis.tls is not None else "redis"
        self.description = f"{scheme} {host}:{port}"
        context = client_context(redis.tls) if redis.tls is not None else None
        self._settings = UpstreamSettings(
            host, port, username=redis.username, password=redis.password, db=redis.db,
            connect_timeout=redis.connect_timeout, command_timeout=redis.command_timeout,
            label=f'cache "{cfg.name}"', ssl=context, tls_profile=redis.tls)
        self._size = redis.pool_size
        self.connections: list[UpstreamConnection] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.connections = [UpstreamConnection(self._settings, loop) for _ in range(self._size)]
        for conn in self.connections:
            conn._start_connect()

    def route(self) -> UpstreamConnection:
        conn = min(self.connections, key=lambda c: c.clients)
        conn.clients += 1
        return conn

    def release(self, route: UpstreamConnection) -> None:
        route.clients -= 1

    def ready(self) -> bool:
        return any(c.state is READY for c in self.connections)

    async def close(self) -> None:
        for conn in self.connections:
            conn.close()
