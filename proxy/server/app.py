"""The running proxy: caches and backends built from the configuration, listeners,
signals, and a clean stop.

SIGTERM and SIGINT stop accepting, give in-flight commands up to DRAIN_TIMEOUT to be
answered, then close everything and return (exit code 0).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import stat
import time

from proxy.backends.inprocess import LocalBackend
from proxy.backends.redis import make_redis_backend
from proxy.backends.redis.tls import TLSSetupError
from proxy.cache import Cache
from proxy.metrics import IOStats
from proxy.server.client import ClientConnection

log = logging.getLogger("cachecloak")

DRAIN_TIMEOUT = 10.0


class StartupError(Exception):
    """The proxy cannot start (for example, its address is taken); str() says the fix."""


def build_backend(cfg):
    if cfg.type == "local":
        max_entries = cfg.local.max_entries if cfg.local is not None else None
        return LocalBackend(max_entries)
    try:
        return make_redis_backend(cfg)
    except TLSSetupError as exc:
        raise StartupError(f"caches: {cfg.name}: {exc}") from None


class Server:
    def __init__(self, config):
        self.config = config
        self.caches: dict[str, Cache] = {}
        self.clients: dict[int, ClientConnection] = {}
        self.listener_clients: dict[int, int] = {}  # id(listener) -> connected clients
        self.auth_failures = 0  # wrong listener passwords (AUTH, HELLO ... AUTH)
        self._unix_sockets: list[tuple[str, int]] = []  # (path, inode) to remove at stop
        self.started_at = time.time()
        self._servers: list[asyncio.AbstractServer] = []
        self._stop = asyncio.Event()
        self._io: dict[int, IOStats] = {}  # id(listener) -> bytes in and out
        used = {listener.cache for listener in config.listeners}
        for name, cfg in config.caches.items():
            if name in used:
                self.caches[name] = Cache.from_config(cfg, build_backend(cfg))
        # Per-command metrics and the admin endpoint exist only with an admin: section.
        self.metrics = None
        self.admin = None
        admin_cfg = getattr(config, "admin", None)
        if admin_cfg is not None:
            from proxy.metrics import Metrics
            from proxy.server.admin import AdminServer

            self.metrics = Metrics(self)
            self.admin = AdminServer(self, self.metrics, admin_cfg)

    def io_stats(self, listener) -> IOStats:
        """The byte counters of `listener` (shared by its clients)."""
        stats = self._io.get(id(listener))
        if stats is None:
            stats = self._io[id(listener)] = IOStats()
        return stats

    def command_metrics(self, cache_name: str):
        """The per-command metrics of a cache, or None without an admin: section."""
        return self.metrics.caches.get(cache_name) if self.metrics is not None else None

    def admit(self, listener) -> bool:
        """Count a new connection on `listener`; False when it already has maxClients."""
        key = id(listener)
        count = self.listener_clients.get(key, 0)
        if count >= listener.max_clients:
            return False
        self.listener_clients[key] = count + 1
        return True

    def client_connected(self, client: ClientConnection) -> None:
        self.clients[client.id] = client

    def client_disconnected(self, client: ClientConnection) -> None:
        if self.clients.pop(client.id, None) is not None:
            key = id(client.listener)
            self.listener_clients[key] = self.listener_clients.get(key, 1) - 1

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for cache in self.caches.values():
            await cache.backend.start()
        for listener in self.config.listeners:
            cache = self.caches[listener.cache]

            def factory(listener=listener, cache=cache):
                return ClientConnection(self, listener, cache)

            try:
                if listener.unix_path is not None:
                    sock = self._bind_unix(listener)
                    server = await loop.create_unix_server(factory, sock=sock, backlog=4096)
                else:
                    server = await loop.create_server(factory, listener.host, listener.port,
                                                      reuse_address=True, backlog=4096)
            except OSError as exc:
                reason = {errno.EADDRINUSE: "the address is already in use; stop the other "
                          "process or choose another address with --listen",
                          errno.EADDRNOTAVAIL: "no local interface has that address; use a "
                          "local address such as 127.0.0.1",
                          errno.EACCES: "permission denied; ports below 1024 need privileges"
                          if listener.unix_path is None else "permission denied; the "
                          "socket's directory must be writable by this user",
                          errno.ENOENT: "the socket's directory does not exist; create it",
                          }.get(exc.errno, exc.strerror or str(exc))
                raise StartupError(f"cannot listen on {listener.address}: {reason}") from None
            self._servers.append(server)
            log.info("listening on %s for cache %s (%s)", listener.address, cache.name,
                     cache.backend.description)
        if self.admin is not None:
            try:
                await self.admin.start()
            except OSError as exc:
                reason = {errno.EADDRINUSE: "the address is already in use; stop the other "
                          "process or choose another admin.address",
                          errno.EADDRNOTAVAIL: "no local interface has that address; use a "
                          "local address such as 127.0.0.1",
                          errno.EACCES: "permission denied; ports below 1024 need privileges",
                          }.get(exc.errno, exc.strerror or str(exc))
                raise StartupError(f"admin: cannot listen on {self.admin.config.address}: "
                                   f"{reason}") from None
            log.info("admin endpoint (/metrics, /healthz, /readyz) on %s",
                     self.admin.config.address)

    def _bind_unix(self, listener) -> socket.socket:
        """Bind a Unix socket at listener.unix_path and chmod it to socketMode.

        A socket file left by an earlier run is removed only when nothing answers on
        it; a live socket or a file that is not a socket stops the start."""
        path = listener.unix_path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode):
                raise StartupError(f"cannot listen on {listener.address}: the path exists "
                                   "and is not a socket; remove it or choose another path")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.settimeout(1.0)
                probe.connect(path)
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(path)  # stale: nobody is listening on it
                log.info("removed the stale socket file of %s", listener.address)
            except OSError:
                pass  # let bind() report what is wrong
            else:
                raise StartupError(f"cannot listen on {listener.address}: another process "
                                   "is listening on it; stop it or choose another path")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            os.chmod(path, listener.socket_mode)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._unix_sockets.append((path, os.stat(path).st_ino))
        return sock

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        await self._stop.wait()
        await self.stop()

    async def stop(self) -> None:
        log.info("stopping: no new connections; draining %d client(s)", len(self.clients))
        for server in self._servers:
            server.close()
        if self.admin is not None:
            await self.admin.stop()
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while any(c.has_pending() for c in self.clients.values()):
            if time.monotonic() > deadline:
                log.warning("drain timeout: closing clients with commands still in flight")
                break
            await asyncio.sleep(0.01)
        for client in list(self.clients.values()):
            if client.transport is not None:
                client.transport.close()
        for cache in self.caches.values():
            await cache.backend.close()
        for path, inode in self._unix_sockets:
            try:
                if os.stat(path).st_ino == inode:
                    os.unlink(path)
            except OSError:
                pass
        log.info("stopped")
