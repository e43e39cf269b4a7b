"""The admin HTTP endpoint (``admin:`` in the configuration), on the proxy's event loop.

    GET /metrics   Prometheus text format (proxy.metrics)
    GET /healthz   200 "ok" while the process serves
    GET /readyz    200 when every listener's cache has a usable upstream, else 503 with
                   one line per cache that is not ready (its name only)

With --workers, the supervisor serves admin.address (proxy.server.workers: it asks
every worker, which answers on a private Unix socket, through the hooks not_healthy,
not_ready and render_metrics).

Anything else is 404 (405 for a method other than GET or HEAD).  A minimal HTTP/1.1
server, deliberately: one request per connection, the request head bounded in size
(MAX_HEAD_BYTES) and time (REQUEST_TIMEOUT), the connection closed after the response.
It never serves a key, a value, a password or key material.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("cachecloak.admin")

MAX_HEAD_BYTES = 8 * 1024
REQUEST_TIMEOUT = 5.0
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TEXT = "text/plain; charset=utf-8"

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}


class AdminServer:
    def __init__(self, server, metrics, config) -> None:
        self.server = server  # proxy.server.app.Server
        self.metrics = metrics  # proxy.metrics.Metrics
        self.config = config  # AdminConfig
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    @property
    def address(self) -> str:
        """Where it listens: admin.address, or a worker's private Unix socket."""
        path = getattr(self.server, "admin_socket_path", None)
        return f"unix:{path}" if path else self.config.address

    async def start(self) -> None:
        path = getattr(self.server, "admin_socket_path", None)
        if path:  # a --workers process: the supervisor serves admin.address, asks us here
            self._server = await asyncio.start_unix_server(self._handle, path,
                                                           limit=MAX_HEAD_BYTES)
            return
        self._server = await asyncio.start_server(
            self._handle, self.config.host, self.config.port, reuse_address=True,
            limit=MAX_HEAD_BYTES)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()

    # -- requests -------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            except asyncio.LimitOverrunError:
                status, ctype, body = 431, TEXT, b"request header too large\n"
                method = "GET"
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            except TimeoutError:
                status, ctype, body = 408, TEXT, b"request timeout\n"
                method = "GET"
            else:
                method, status, ctype, body = await self._respond(head)
            await asyncio.wait_for(self._write(writer, method, status, ctype, body),
                                   REQUEST_TIMEOUT)
        except (ConnectionError, TimeoutError, asyncio.CancelledError):
            pass
        except Exception as exc:  # noqa: BLE001 - the admin endpoint must not stop the proxy
            log.error("admin endpoint: internal error (%s)", type(exc).__name__)
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _respond(self, head: bytes) -> tuple[str, int, str, bytes]:
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return "GET", 400, TEXT, b"bad request\n"
        method, target = parts[0], parts[1]
        path = target.split("?", 1)[0]
        if path not in ("/metrics", "/healthz", "/readyz"):
            return method, 404, TEXT, b"not found\n"
        if method not in ("GET", "HEAD"):
            return method, 405, TEXT, b"method not allowed\n"
        if path == "/healthz":
            problems = await self.not_healthy()
            if problems:
                return method, 503, TEXT, "".join(f"{p}\n" for p in problems).encode()
            return method, 200, TEXT, b"ok\n"
        if path == "/readyz":
            problems = await self.not_ready()
            if problems:
                return method, 503, TEXT, "".join(f"{p}\n" for p in problems).encode()
            return method, 200, TEXT, b"ready\n"
        return method, 200, METRICS_CONTENT_TYPE, await self.render_metrics()

    # What the three paths answer; the --workers supervisor (proxy.server.workers)
    # overrides them to ask every worker.

    async def not_healthy(self) -> list[str]:
        """Nothing: this process answers, so it serves."""
        return []

    async def render_metrics(self) -> bytes:
        return self.metrics.render()

    async def not_ready(self) -> list[str]:
        """One line per listener cache without a usable upstream (name only)."""
        problems = []
        for name in dict.fromkeys(listener.cache for listener in self.server.config.listeners):
            cache = self.server.caches.get(name)
            if cache is None or not cache.backend.ready():
                problems.append(f"cache {name}: upstream not ready")
        return problems

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, method: str, status: int, ctype: str,
                     body: bytes) -> None:
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n").encode("latin-1")
        writer.write(head if method == "HEAD" else head + body)
        await writer.drain()
