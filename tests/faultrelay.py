"""A fault-injecting TCP relay for tests, in the spirit of Toxiproxy, driven in-process.

    relay = FaultRelay(redis_port)          # listens on 127.0.0.1:relay.port
    relay.set_latency(downstream_ms=200)    # toxics change at run time, from the test
    relay.cut_downstream_after(120)         # ... take effect before the call returns
    relay.clear()
    relay.close()

The relay forwards bytes between whatever connects to it (the proxy, "downstream") and a
real server (Redis, "upstream"), one upstream connection per accepted connection.  Each
direction is a reader task and a writer task joined by a small bounded queue, so the
relay never buffers much: when a toxic slows a direction, the relay stops reading it and
TCP backpressure reaches the sender, as with a slow real server.

Toxics (all can be combined; `clear()` removes them all):
- latency, per direction: each chunk leaves `ms` after it arrived (latency, not a
  throughput cap: chunks that arrive during the wait are not delayed further).
- bandwidth, per direction, bytes per second.
- cut: after N more bytes from Redis to the proxy on each open connection (and, with
  `new_connections`, after N bytes from the start of each new one), forward exactly
  those bytes, then close both sides: FIN, or RST with `reset=True`.
- reset_all(): RST every open connection now (SO_LINGER 0, then close).
- hang: stop forwarding in both directions and keep the sockets open (what is read
  waits in the queue; reading stops when it is full).  Lifting it forwards what waited.
- refuse: new connections are refused (the listening socket is closed, so connects get
  ECONNREFUSED), or with mode "reset" accepted and reset at once (and counted).

It runs its own asyncio event loop in a daemon thread, so tests using blocking clients
(redis-py, tests.servers.RawClient) can drive it.  Loopback only; it never inspects or
logs what it forwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable
from typing import Any

UP, DOWN = "upstream", "downstream"  # proxy -> Redis, Redis -> proxy
_CHUNK = 16 * 1024
_QUEUE_CHUNKS = 4  # per direction: at most ~64 KiB read ahead of what was forwarded
_BANDWIDTH_SLICE = 0.02  # seconds of bandwidth per write, so the rate is smooth


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with an RST instead of a FIN (SO_LINGER on with a zero timeout)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _wait_sent(writer: asyncio.StreamWriter, limit: float = 1.0) -> None:
    """Wait (bounded) until the kernel sent and got acknowledged what was written, so an
    RST that follows cannot discard it."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            unsent = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ,
                                                    b"\0\0\0\0"))[0]
        except OSError:
            return
        if unsent == 0:
            return
        await asyncio.sleep(0.005)


class _Connection:
    """One accepted connection and its upstream twin."""

    def __init__(self, relay: FaultRelay, down_r, down_w, up_r, up_w) -> None:
        self.relay = relay
        self.writers = {UP: up_w, DOWN: down_w}  # where each direction writes to
        self.readers = {UP: down_r, DOWN: up_r}  # where each direction reads from
        self.queues: dict[str, asyncio.Queue] = {
            UP: asyncio.Queue(_QUEUE_CHUNKS), DOWN: asyncio.Queue(_QUEUE_CHUNKS)}
        cut = relay._cut
        self.budget: int | None = cut["new"] if cut is not None else None
        self.reset_on_cut = bool(cut and cut["reset"])
        self.tasks: list[asyncio.Task] = []
        self.closed = False
        self.down_bytes = 0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for direction in (UP, DOWN):
            self.tasks.append(loop.create_task(self._read(direction)))
            self.tasks.append(loop.create_task(self._write(direction)))

    async def _read(self, direction: str) -> None:
        reader, queue = self.readers[direction], self.queues[direction]
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                await queue.put((loop.time(), data))
        except (ConnectionError, OSError):
            pass
        await queue.put(None)  # the writer closes the pair once the rest is forwarded

    async def _write(self, direction: str) -> None:
        relay, queue, writer = self.relay, self.queues[direction], self.writers[direction]
        loop = asyncio.get_running_loop()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                arrived, data = item
                while data:
                    await relay._flowing.wait()  # hang: hold everything, keep the sockets
                    delay = arrived + relay._latency[direction] - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                        continue  # the toxics may have changed meanwhile
                    piece = data
                    rate = relay._bandwidth[direction]
                    if rate:
                        piece = data[:max(1, int(rate * _BANDWIDTH_SLICE))]
                    last = False
                    if direction == DOWN and self.budget is not None:
                        if len(piece) >= self.budget:
                            piece, last = piece[:self.budget], True
                        self.budget -= len(piece)
                    if piece:
                        writer.write(piece)
                        await writer.drain()
                        if direction == DOWN:
                            self.down_bytes += len(piece)
                            relay.bytes_down += len(piece)
                        else:
                            relay.bytes_up += len(piece)
                    if last:
                        await self.cut(reset=self.reset_on_cut)
                        return
                    data = data[len(piece):]
                    if rate:
                        await asyncio.sleep(len(piece) / rate)
        except (ConnectionError, OSError):
            pass
        self.close()

    async def cut(self, *, reset: bool) -> None:
        if reset:
            await _wait_sent(self.writers[DOWN])
        self.close(reset=reset)

    def close(self, *, reset: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.relay._connections.discard(self)
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        for writer in self.writers.values():
            if reset:
                _rst(writer)
            else:
                writer.close()


class FaultRelay:
    """See the module docstring.  Counters: `accepted`, `bytes_up`, `bytes_down`."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.accepted = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self._latency = {UP: 0.0, DOWN: 0.0}
        self._bandwidth: dict[str, int | None] = {UP: None, DOWN: None}
        self._cut: dict[str, Any] | None = None
        self._refuse: str | None = None
        self._connections: set[_Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-relay",
                                        daemon=True)
        self._thread.start()
        self._flowing: asyncio.Event = self._call(self._make_event)
        self._call(self._listen)

    # -- running things on the relay's loop ------------------------------------------

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` (plain or coroutine function) on the relay's loop; wait for it."""

        async def run():
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    @staticmethod
    def _make_event() -> asyncio.Event:
        event = asyncio.Event()
        event.set()
        return event

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.accepted += 1
        if self._refuse == "reset":
            _rst(writer)
            return
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:  # Redis is down: the proxy sees its connection reset
            _rst(writer)
            return
        for w in (writer, up_w):
            sock = w.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Connection(self, reader, writer, up_r, up_w)
        self._connections.add(conn)
        conn.start()
        # Stay until the pair is done: some Python versions close a stream whose
        # connection callback returned.
        with contextlib.suppress(asyncio.CancelledError):  # close(): end quietly
            await asyncio.gather(*conn.tasks, return_exceptions=True)

    # -- toxics -----------------------------------------------------------------------

    def set_latency(self, upstream_ms: float = 0, downstream_ms: float = 0) -> None:
        def apply():
            self._latency = {UP: upstream_ms / 1000, DOWN: downstream_ms / 1000}
        self._call(apply)

    def set_bandwidth(self, upstream: int | None = None, downstream: int | None = None) -> None:
        """Bytes per second per direction; None is unlimited."""
        def apply():
            self._bandwidth = {UP: upstream, DOWN: downstream}
        self._call(apply)

    def cut_downstream_after(self, nbytes: int | None, *, reset: bool = False,
                             new_connections: bool = False) -> None:
        """Each open connection forwards `nbytes` more bytes from Redis, then is closed
        (FIN, or RST with `reset`); with `new_connections`, each later connection too,
        counted from its start.  None removes the toxic."""
        def apply():
            self._cut = None if nbytes is None or not new_connections else {
                "new": nbytes, "reset": reset}
            for conn in self._connections:
                conn.budget = nbytes
                conn.reset_on_cut = reset
        self._call(apply)

    def set_hang(self, on: bool) -> None:
        def apply():
            if on:
                self._flowing.clear()
            else:
                self._flowing.set()
        self._call(apply)

    def set_refuse(self, on: bool, *, mode: str = "closed") -> None:
        """`closed`: nothing listens (ECONNREFUSED); `reset`: accept, count, and RST."""
        assert mode in ("closed", "reset")

        async def apply():
            self._refuse = mode if on else None
            if on and mode == "closed" and self._server is not None:
                self._server.close()
                self._server = None
            elif not on and self._server is None:
                await self._listen()
        self._call(apply)
        if on and mode == "closed":
            self._wait_refused()

    def _wait_refused(self, timeout: float = 10.0) -> None:
        """Return once a connect to the port is refused.  The listening socket's
        descriptor is closed when the relay's loop gets to it (uvloop: a later phase of
        the loop, after Server.close returns); until then a connect lands in its backlog
        and is reset instead of refused.  A probe that lands there is never accepted."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                probe = socket.create_connection(("127.0.0.1", self.port), timeout=1)
            except ConnectionRefusedError:
                return
            except OSError:
                pass
            else:
                probe.close()
            if time.monotonic() > deadline:
                raise AssertionError(f"port {self.port} still takes connections after "
                                     f"{timeout} s of refusing")
            time.sleep(0.005)

    def reset_all(self) -> None:
        """RST every open connection, both sides, now."""
        def apply():
            for conn in list(self._connections):
                conn.close(reset=True)
        self._call(apply)

    def clear(self) -> None:
        """Remove every toxic (latency, bandwidth, cut, hang, refuse)."""
        self.set_latency()
        self.set_bandwidth()
        self.cut_downstream_after(None)
        self.set_hang(False)
        self.set_refuse(False)

    # -- observing --------------------------------------------------------------------

    @property
    def open_connections(self) -> int:
        return self._call(lambda: len(self._connections))

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        if not self._thread.is_alive():
            return

        async def stop():
            if self._server is not None:
                self._server.close()
            self._flowing.set()
            for conn in list(self._connections):
                conn.close()
            current = asyncio.current_task()
            others = [t for t in asyncio.all_tasks() if t is not current]
            for task in others:
                task.cancel()
            await asyncio.wait(others, timeout=2) if others else None

        with contextlib.suppress(Exception):
            self._call(stop)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> FaultRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
