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
from collections.abc import Callable

from proxy import speedups
from proxy.backends.inprocess import LocalBackend
from proxy.backends.redis import make_redis_backend
from proxy.backends.redis.tls import TLSSetupError
from proxy.cache import Cache
from proxy.metrics import IOStats
from proxy.server.client import ClientConnection
from proxy.server.reload import Reloader
from proxy.server.tls import ListenerTLSError, TLSAcceptor, server_context

log = logging.getLogger("cachecloak")

DRAIN_TIMEOUT = 10.0
# How often the encryption counts are compared with the nonce-limit warning thresholds
# (Cache.check_nonce_limit): a few integer comparisons, so often enough to warn promptly.
NONCE_CHECK_INTERVAL = 1.0


class StartupError(Exception):
    """The proxy cannot start (for example, its address is taken); str() says the fix."""


def listen_error(listener, exc: OSError) -> StartupError:
    """The one-line StartupError for a listener whose socket cannot be bound."""
    reason = {errno.EADDRINUSE: "the address is already in use; stop the other "
              "process or choose another address with --listen",
              errno.EADDRNOTAVAIL: "no local interface has that address; use a "
              "local address such as 127.0.0.1",
              errno.EACCES: "permission denied; ports below 1024 need privileges"
              if listener.unix_path is None else "permission denied; the "
              "socket's directory must be writable by this user",
              errno.ENOENT: "the socket's directory does not exist; create it",
              }.get(exc.errno, exc.strerror or str(exc))
    return StartupError(f"cannot listen on {listener.address}: {reason}")


def admin_listen_error(address: str, exc: OSError) -> StartupError:
    """The one-line StartupError for an admin endpoint whose socket cannot be bound."""
    reason = {errno.EADDRINUSE: "the address is already in use; stop the other "
              "process or choose another admin.address",
              errno.EADDRNOTAVAIL: "no local interface has that address; use a "
              "local address such as 127.0.0.1",
              errno.EACCES: "permission denied; ports below 1024 need privileges",
              }.get(exc.errno, exc.strerror or str(exc))
    return StartupError(f"admin: cannot listen on {address}: {reason}")


def build_backend(cfg):
    if cfg.type == "local":
        max_entries = cfg.local.max_entries if cfg.local is not None else None
        return LocalBackend(max_entries)
    try:
        return make_redis_backend(cfg)
    except TLSSetupError as exc:
        raise StartupError(f"caches: {cfg.name}: {exc}") from None


class Server:
    # Set by proxy.server.workers in each --workers process, before run():
    reuse_port = False  # bind TCP listeners with SO_REUSEPORT, shared with the other workers
    inherited_sockets: dict[str, socket.socket] = {}  # Unix listener address -> the socket
    #                                                   the supervisor bound for all workers
    admin_socket_path: str | None = None  # serve admin on this private Unix socket instead
    on_started: Callable[[], None] | None = None  # called once run() has bound everything

    def __init__(self, config):
        self.config = config
        self.caches: dict[str, Cache] = {}
        self.clients: dict[int, ClientConnection] = {}
        self.listener_clients: dict[int, int] = {}  # id(listener) -> connected clients
        self.auth_failures = 0  # wrong listener passwords (AUTH, HELLO ... AUTH)
        self.tls_handshake_failures: dict[str, int] = {}  # listener address -> count
        self._unix_sockets: list[tuple[str, int]] = []  # (path, inode) to remove at stop
        self.started_at = time.time()
        self._servers: list[asyncio.AbstractServer] = []
        self._stop = asyncio.Event()
        self._nonce_watch: asyncio.Task | None = None
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
        self.reloader = Reloader(self)  # SIGHUP: proxy.server.reload

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

            def factory(listener=listener):
                # The running cache: a reload (proxy.server.reload) may have replaced it.
                return ClientConnection(self, listener, self.caches[listener.cache])

            if listener.tls is not None:  # the TLSAcceptor makes clients after handshakes
                try:
                    context = server_context(listener.tls)
                except ListenerTLSError as exc:
                    raise StartupError(f"cannot listen on {listener.address}: {exc}") from None
                factory = TLSAcceptor(self, listener, context, factory).protocol_factory
            try:
                if listener.unix_path is not None:
                    sock = self.inherited_sockets.get(listener.address)
                    if sock is None:  # else bound by the --workers supervisor, which removes it
                        sock = self.bind_unix(listener)
                        self._unix_sockets.append((listener.unix_path,
                                                   os.stat(listener.unix_path).st_ino))
                    server = await loop.create_unix_server(factory, sock=sock, backlog=4096)
                else:
                    server = await loop.create_server(factory, listener.host, listener.port,
                                                      reuse_address=True,
                                                      reuse_port=self.reuse_port, backlog=4096)
            except OSError as exc:
                raise listen_error(listener, exc) from None
            self._servers.append(server)
            log.info("listening on %s%s for cache %s (%s)", listener.address,
                     f" (TLS, profile {listener.tls.name}, clientAuth "
                     f"{listener.tls.client_auth})" if listener.tls is not None else "",
                     cache.name, cache.backend.description)
        if self.admin is not None:
            try:
                await self.admin.start()
            except OSError as exc:
                raise admin_listen_error(self.admin.address, exc) from None
            log.info("admin endpoint (/metrics, /healthz, /readyz) on %s", self.admin.address)
        if speedups.native is not None:
            log.info(speedups.summary())
        else:
            log.warning(speedups.summary())
        self._nonce_watch = loop.create_task(self._watch_nonce_limits())

    def check_nonce_limits(self) -> None:
        """Let every cache warn when its current key nears the random-nonce limit."""
        for cache in list(self.caches.values()):
            try:
                cache.check_nonce_limit()
            except Exception as exc:  # noqa: BLE001 - an advisory check must not stop serving
                log.error("nonce-limit check failed for cache %s: %s", cache.name,
                          type(exc).__name__)

    async def _watch_nonce_limits(self) -> None:
        while True:
            await asyncio.sleep(NONCE_CHECK_INTERVAL)
            self.check_nonce_limits()

    @staticmethod
    def bind_unix(listener) -> socket.socket:
        """Bind a Unix socket at listener.unix_path and chmod it to socketMode.

        A socket file left by an earlier run is removed only when nothing answers on
        it; a live socket or a file that is not a socket stops the start.  (Also used by
        the --workers supervisor, which binds Unix listeners once for all workers.)"""
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
        return sock

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        self.reloader.install(loop)  # SIGHUP reloads the configuration from now on
        if self.on_started is not None:
            self.on_started()
        await self._stop.wait()
        await self.stop()

    async def stop(self) -> None:
        log.info("stopping: no new connections; draining %d client(s)", len(self.clients))
        if self._nonce_watch is not None:
            self._nonce_watch.cancel()
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
        await self.reloader.close()  # and the upstreams a reload replaced
        for cache in self.caches.values():
            await cache.backend.close()
        for path, inode in self._unix_sockets:
            try:
                if os.stat(path).st_ino == inode:
                    os.unlink(path)
            except OSError:
                pass
        self.check_nonce_limits()  # the last encryptions get their warning too
        log.info("stopped")
