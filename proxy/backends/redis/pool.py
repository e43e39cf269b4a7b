"""A small, bounded pool of pipelined upstream connections for one cache.

Clients are spread over the pool and stay on their connection (see proxy.backends for
why).  The pool never grows with the number of clients: a thousand clients share
`poolSize` connections, which is what keeps Redis's connection count and the proxy's
memory flat.

With a locator (proxy.backends.redis.topology: several standalone addresses, or
Sentinel), every connect asks it where the primary is, a READONLY reply makes a
connection find it again, and when the locator sees the primary move the pool drops
its connections to the old one.
"""

from __future__ import annotations

import asyncio

from proxy.backends.redis.connection import (
    DOWN,
    READY,
    UpstreamConnection,
    UpstreamSettings,
    _hostport,
)
from proxy.backends.redis.tls import client_context

# Dedicated connections kept open for reuse after a transaction or read-modify-write;
# more than this many at once are opened for the occasion and closed afterwards.
MAX_IDLE_DEDICATED = 4


class RedisBackend:
    local = False

    def __init__(self, cfg, locator=None) -> None:
        """`locator`, when given, is a class from proxy.backends.redis.topology, built
        here with (cfg, settings); without it the pool uses the first address."""
        redis = cfg.redis
        host, port = redis.addresses[0]
        scheme = "rediss" if redis.tls is not None else "redis"
        self._description = f"{scheme} {host}:{port}"
        context = client_context(redis.tls) if redis.tls is not None else None
        self._settings = UpstreamSettings(
            host, port, username=redis.username, password=redis.password, db=redis.db,
            connect_timeout=redis.connect_timeout, command_timeout=redis.command_timeout,
            label=f'cache "{cfg.name}"', ssl=context, tls_profile=redis.tls)
        self._settings.redirects_are_errors = True  # not cluster mode: never pass MOVED on
        self._size = redis.pool_size
        self.connections: list[UpstreamConnection] = []
        self.locator = locator(cfg, self._settings) if locator is not None else None
        self._idle_dedicated: list[UpstreamConnection] = []
        self._lent: set[UpstreamConnection] = set()

    @property
    def description(self) -> str:
        if self.locator is not None:
            return self.locator.describe()
        return self._description

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        locator = self.locator
        if locator is None:
            self.connections = [UpstreamConnection(self._settings, loop)
                                for _ in range(self._size)]
        else:
            locator.on_primary = self._on_primary
            self.connections = [UpstreamConnection(self._settings, loop, locate=locator.locate,
                                                   follow_primary=True)
                                for _ in range(self._size)]
            await locator.start()
        for conn in self.connections:
            conn._start_connect()

    def _on_primary(self, primary: tuple[str, int]) -> None:
        """The locator found the primary (it moved, or exists again): connect there now."""
        for conn in [*self.connections, *self._lent, *self._idle_dedicated]:
            if conn.state is not DOWN and (conn.host, conn.port) != primary:
                conn.abandon(f"the primary moved to {_hostport(*primary)}")
            conn.retry_now()  # only acts on a connection that is down

    def route(self) -> UpstreamConnection:
        conn = min(self.connections, key=lambda c: c.clients)
        conn.clients += 1
        return conn

    def dedicated(self, key: bytes | None = None) -> UpstreamConnection:
        """A connection no other client uses, for WATCH/MULTI/EXEC (see proxy.backends)."""
        while self._idle_dedicated:
            conn = self._idle_dedicated.pop()
            if conn.state is not DOWN:
                self._lent.add(conn)
                return conn
            conn.close()
        loop = asyncio.get_running_loop()
        if self.locator is None:
            conn = UpstreamConnection(self._settings, loop)
        else:
            conn = UpstreamConnection(self._settings, loop, locate=self.locator.locate,
                                      follow_primary=True)
        self._lent.add(conn)
        return conn

    def release_dedicated(self, conn: UpstreamConnection) -> None:
        self._lent.discard(conn)
        if (conn.state is READY and not conn.busy()
                and len(self._idle_dedicated) < MAX_IDLE_DEDICATED):
            self._idle_dedicated.append(conn)
        else:
            conn.close()

    def release(self, route: UpstreamConnection) -> None:
        route.clients -= 1

    def info(self) -> list[tuple[str, object]]:
        """Fields for INFO's cachecloak section (none without a locator)."""
        return self.locator.info() if self.locator is not None else []

    def ready(self) -> bool:
        return any(c.state is READY for c in self.connections)

    async def close(self) -> None:
        if self.locator is not None:
            await self.locator.close()
        for conn in [*self.connections, *self._lent, *self._idle_dedicated]:
            conn.close()
