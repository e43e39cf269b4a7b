"""One pipelined connection to Redis, shared by many clients, that repairs itself.

Every command written is matched to its waiter by position: Redis answers one
connection's commands in order, so a FIFO of waiters is the whole bookkeeping (a client's
batch is in it once per command: `submit_packed`).  When the connection breaks, every
waiter still in the FIFO gets an error reply at once (a write that may or may not have
been applied is reported, never sent again), the FIFO is emptied, and the next command
starts a new connection.  Nothing can then be matched to the wrong command, because a
new connection starts with an empty FIFO.

States: DOWN -> CONNECTING -> HANDSHAKE (AUTH, SELECT) -> READY -> DOWN ...
Commands submitted before READY wait in the write buffer; they are written only after
the handshake succeeded, so a command can never run before its SELECT.

Never logs command arguments (they are hashed keys and ciphertexts, but still not for
logs) nor the password.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import time
from collections import deque
from itertools import repeat

import hiredis

from proxy import speedups
from proxy.backends import Reply, Waiter
from proxy.backends.redis.tls import describe_handshake_error
from proxy.errors import UpstreamError
from proxy.resp import writer
from proxy.resp.reader import feed_as_reads, read_buffer
from proxy.resp.writer import command as pack_request

log = logging.getLogger("cachecloak.upstream")

# hiredis is fed at most this much of a read at a time, and drained in between.  Once it
# has read 1 KiB of its buffer it moves the unread rest to the front at every reply it
# returns: fed a whole 256 KiB read of 4 KiB values, it spent 30 us per value moving
# bytes, and about 0.6 us fed 16 KiB at a time.
FEED_BYTES = 16 * 1024

DOWN, CONNECTING, HANDSHAKE, READY = "down", "connecting", "handshake", "ready"

# Reconnect backoff with full jitter (AWS architecture blog, "Exponential Backoff And
# Jitter"): fast first retries after a blip, at most one attempt per 2 s when Redis is gone.
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 2.0

# Failed attempts to reach Redis, per cache label ('cache "x"') and kind: read at scrape
# time for cachecloak_upstream_connect_failures_total (proxy.metrics).  Keyed by label,
# not by backend object, so a reload that builds a new backend keeps counting (a
# Prometheus counter must not go back).  The kinds are a fixed set: bounded labels.
CONNECT_FAILURE_KINDS = ("dns", "refused", "timeout", "tls", "closed", "handshake", "other")
CONNECT_FAILURES: dict[str, dict[str, int]] = {}


def cache_label(name: str) -> str:
    """The label every upstream message and counter of cache `name` carries."""
    return f'cache "{name}"'


def failure_kind(exc: BaseException) -> str:
    """The CONNECT_FAILURE_KINDS entry of an exception raised while connecting."""
    if isinstance(exc, socket.gaierror):
        return "dns"
    if isinstance(exc, ssl.SSLError):
        return "tls"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return "closed"
    return "other"


def describe_connect_error(exc: OSError, host: str) -> str:
    """One line for a connect that failed below TLS: what, and what to check."""
    if isinstance(exc, socket.gaierror):
        # The name may start resolving again (DNS back, a record added): the caller keeps
        # retrying with backoff either way.
        return (f"the host name {host} does not resolve: {exc.strerror or 'no address'}; "
                "check the name in redis.addresses and that DNS or /etc/hosts answers for it")
    return exc.strerror or type(exc).__name__


def reply_reader():
    """A reader of Redis's replies: proxy._native.ReplyReader when built (it also decodes
    a client batch's replies in C), else hiredis.Reader (the same replies)."""
    if speedups.native is not None:
        return speedups.native.ReplyReader(hiredis.ReplyError, hiredis.ProtocolError)
    return hiredis.Reader()


class UpstreamSettings:
    __slots__ = ("host", "port", "username", "password", "db", "connect_timeout",
                 "command_timeout", "label", "ssl", "tls_profile", "server_name",
                 "connect_failures", "redirects_are_errors")

    def __init__(self, host: str, port: int, *, username: str | None, password: str | None,
                 db: int, connect_timeout: float, command_timeout: float, label: str,
                 ssl=None, tls_profile=None):
        self.host, self.port = host, port
        self.ssl = ssl  # an ssl.SSLContext, or None for plain TCP
        self.tls_profile = tls_profile
        self.server_name = (tls_profile.server_name or host) if tls_profile else None
        self.username, self.password = username, password
        self.db = db
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.label = label  # e.g. 'cache "my-redis"': for messages only
        self.connect_failures = CONNECT_FAILURES.setdefault(label, {})
        # True for a cache that is not in cluster mode: a MOVED or ASK from its server
        # (a cluster node configured as standalone) becomes an error naming the fix
        # instead of reaching the client, which must never be sent to Redis directly.
        self.redirects_are_errors = False


class _FutureWaiter:
    """Adapts a waiter to an asyncio future, for multi-step operations."""

    __slots__ = ("future", "client")
    in_c = False  # not a batch (UpstreamCore.buffer_updated's take_batch looks)

    def __init__(self, future: asyncio.Future):
        self.future = future
        self.client = None

    def complete(self, reply: Reply) -> None:
        if not self.future.done():
            self.future.set_result(reply)

    def fail(self, error_reply: bytes) -> None:
        if not self.future.done():
            self.future.set_exception(UpstreamFailure(error_reply[1:].rstrip(b"\r\n").decode()))


class _HandshakeWaiter:
    __slots__ = ("conn", "step", "client")
    in_c = False

    def __init__(self, conn: UpstreamConnection, step: str):
        self.conn = conn
        self.step = step
        self.client = None

    def complete(self, reply: Reply) -> None:
        self.conn._handshake_reply(self.step, reply)

    def fail(self, error_reply: bytes) -> None:
        return None


class UpstreamFailure(UpstreamError):
    """A multi-step operation could not finish; str() is a safe one-line message."""


class PythonUpstreamCore:
    """The Python twin of proxy._native.UpstreamCore, an upstream connection's hot
    methods (its fields are UpstreamConnection's state, _waiters, _wbuf,
    _flush_scheduled, _last_progress, loop, _reader and transport).  Where C differs:

    - submit_one queues a command on a READY connection in C and calls _submit_one
      otherwise (here: always);
    - buffer_updated takes the replies of the Singles and batches at the head of the
      FIFO in C, from the read buffer where they lie, and hands the rest of the read to
      _replies_read as soon as anything else comes (here: all of it, fed to the reader
      a slice at a time)."""

    __slots__ = ()

    # The BufferedProtocol's: replies are read into the thread's read buffer.
    get_buffer = staticmethod(read_buffer)

    def submit_one(self, request: bytes, waiter: Waiter) -> None:
        """Queue one command already packed; sent at the end of this loop iteration."""
        self._submit_one(request, waiter)

    def buffer_updated(self, nbytes: int) -> None:
        """`nbytes` of replies were read into get_buffer()'s buffer."""
        data = self.get_buffer(0)  # the same buffer: nothing reads into it before we return
        fed = min(nbytes, FEED_BYTES)  # a slice at a time: see FEED_BYTES
        self._reader.feed(data, 0, fed)
        self._last_progress = time.monotonic()
        self._replies_read(data, fed, nbytes, [])

    def _write_queued(self) -> None:
        """Write what submit_one queued (scheduled once per event-loop iteration)."""
        self._flush_scheduled = False
        if self._wbuf and self.state is READY:
            # writelines: large values are not copied into one bytes object first
            # (uvloop writes the list with one writev; the SSL transport joins it).
            wbuf = self._wbuf
            self._wbuf = []
            self.transport.writelines(wbuf)


UpstreamCore = (speedups.native.UpstreamCore if speedups.native is not None
                else PythonUpstreamCore)
if speedups.native is not None and speedups.native.UPSTREAM_FEED_BYTES != FEED_BYTES:
    raise ImportError("proxy._native is out of date (UPSTREAM_FEED_BYTES); reinstall it")


class UpstreamConnection(UpstreamCore, asyncio.BufferedProtocol):
    """A self-healing pipelined Redis connection; also the Route of its clients.

    Replies are read into the thread's read buffer (proxy.resp.reader.read_buffer, a C
    function when built, so no Python frame per read) and fed from there to the reply
    reader, which keeps its own copy of what it has not yet returned (the C read takes
    the replies it decodes where they lie, and copies in only what it leaves)."""

    def __init__(self, settings: UpstreamSettings, loop: asyncio.AbstractEventLoop | None = None,
                 *, locate=None, follow_primary: bool = False):
        """`locate`, when given, is an async callable returning the (host, port) to connect
        to next (the current primary, found by the topology); otherwise the settings'
        address is used.  With `follow_primary`, a READONLY reply (the server became a
        replica) abandons the connection so the next one finds the new primary."""
        self.settings = settings
        self.loop = loop or asyncio.get_event_loop()
        self._locate = locate
        self._follow_primary = follow_primary
        self.host, self.port = settings.host, settings.port
        self.state = DOWN
        self.transport: asyncio.Transport | None = None
        self._reader = reply_reader()
        self._waiters: deque = deque()
        self._wbuf: list[bytes] = []
        self._handshake_left = 0
        self._last_error = "not connected yet"
        self._retry_at = 0.0
        self._backoff = _BACKOFF_FIRST
        self._connect_task: asyncio.Task | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._last_progress = 0.0
        self._closed = False
        self._flush_scheduled = False
        self.clients = 0  # how many clients use this route (for balancing)
        self.connects = 0
        self._redirect_warned = False

    # -- the Route interface --------------------------------------------------------

    @property
    def label(self) -> str:
        return f"{self.settings.label} at {_hostport(self.host, self.port)}"

    def submit(self, args: list[bytes], waiter: Waiter, command=None) -> None:
        self.submit_one(pack_request(args), waiter)

    def _submit_one(self, request: bytes, waiter: Waiter) -> None:
        """Queue one command already packed; it is sent at the end of this event-loop
        iteration (see flush), without the caller having to call flush().  This is
        UpstreamCore.submit_one's general case (C does the READY one itself)."""
        state = self.state
        if state is DOWN and not self._start_connect():
            waiter.fail(self._unavailable_reply())
            return
        if not self._waiters:
            self._last_progress = time.monotonic()
        self._wbuf.append(request)
        self._waiters.append(waiter)
        if state is READY and not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._write_queued)

    def submit_packed(self, packed: list[bytes], waiter: Waiter, count: int) -> None:
        """Queue `count` commands already packed (a client's batch), with `waiter` in the
        FIFO once per command: it is completed once per reply, in order."""
        if self.state is DOWN and not self._start_connect():
            error = self._unavailable_reply()
            for _ in range(count):
                waiter.fail(error)
            return
        if not self._waiters:
            self._last_progress = time.monotonic()
        self._wbuf += packed
        self._waiters.extend(repeat(waiter, count))

    def busy(self) -> bool:
        """Commands are waiting for replies (a lent connection must be idle to be reused)."""
        return bool(self._waiters)

    def flush(self) -> None:
        """Send what was queued, once per event-loop iteration.

        Many clients share this connection; each calls flush() after its read.  Writing
        at the end of the loop iteration instead turns N small writes (one syscall each)
        into one, which is most of the proxy's cost under load.
        """
        if self._wbuf and not self._flush_scheduled and self.state is READY:
            self._flush_scheduled = True
            self.loop.call_soon(self._write_queued)

    async def call(self, args: list[bytes]) -> Reply:
        future = self.loop.create_future()
        self.submit(args, _FutureWaiter(future))
        self.flush()
        return await future

    async def delete_prefix(self, prefix: bytes) -> int:
        """UNLINK every key under `prefix`, found with SCAN (never KEYS: it blocks Redis)."""
        deleted = 0
        async for batch in self._scan(prefix):
            reply = await self.call([b"UNLINK", *batch])
            if isinstance(reply, int):
                deleted += reply
        return deleted

    async def count_prefix(self, prefix: bytes) -> int:
        count = 0
        async for batch in self._scan(prefix):
            count += len(batch)
        return count

    async def _scan(self, prefix: bytes):
        pattern = glob_escape(prefix) + b"*"
        cursor = b"0"
        seen_first = False
        while cursor != b"0" or not seen_first:
            seen_first = True
            reply = await self.call([b"SCAN", cursor, b"MATCH", pattern, b"COUNT", b"1000"])
            if isinstance(reply, hiredis.ReplyError):
                raise UpstreamFailure(f"SCAN failed on {self.label}: {reply}")
            cursor, keys = reply
            if keys:
                yield keys

    # -- connection management ------------------------------------------------------

    def _unavailable_reply(self) -> bytes:
        return writer.error(f"ERR cachecloak: Redis for {self.label} is unavailable "
                            f"({self._last_error}); retrying in the background")

    def _start_connect(self) -> bool:
        """Begin connecting unless we are backing off; False means fail fast."""
        if self._closed or time.monotonic() < self._retry_at:
            return False
        self.state = CONNECTING
        self._connect_task = self.loop.create_task(self._connect())
        return True

    async def _connect(self) -> None:
        s = self.settings
        try:
            if self._locate is not None:
                self.host, self.port = await self._locate()
            server_name = None
            if s.ssl is not None:
                server_name = s.tls_profile.server_name or self.host
            await asyncio.wait_for(
                self.loop.create_connection(lambda: self, self.host, self.port, ssl=s.ssl,
                                            server_hostname=server_name),
                timeout=s.connect_timeout)
        except TimeoutError:
            self._connect_failed(f"connect timed out after {s.connect_timeout:g}s", "timeout")
        except ssl.SSLError as exc:
            self._connect_failed(describe_handshake_error(exc, s.tls_profile), "tls")
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as exc:
            reason, kind = exc.strerror or str(exc) or type(exc).__name__, "closed"
            if s.ssl is not None:  # TCP was up: the TLS handshake was cut off
                reason, kind = (f"TLS handshake failed: the connection was closed during the "
                                f"handshake ({reason}); check that addresses point at Redis's "
                                "tls-port and that nothing between cuts the connection"), "tls"
            self._connect_failed(reason, kind)
        except OSError as exc:
            self._connect_failed(describe_connect_error(exc, self.host), failure_kind(exc))
        except UpstreamFailure as exc:  # the topology found no usable server
            self._connect_failed(str(exc), None)  # its probes counted their own failures
        except Exception as exc:  # noqa: BLE001 - any failure must reach the waiters
            self._connect_failed(type(exc).__name__, "other")

    def _count_failure(self, kind: str) -> None:
        failures = self.settings.connect_failures
        failures[kind] = failures.get(kind, 0) + 1

    def _connect_failed(self, reason: str, kind: str | None) -> None:
        if self.state is READY or self._closed:
            return
        if kind is not None:
            self._count_failure(kind)
        self.state = DOWN
        self._note_failure(reason)
        self._fail_all(self._unavailable_reply())

    def _note_failure(self, reason: str) -> None:
        first = self._last_error != reason
        self._last_error = reason
        delay = random.uniform(0, self._backoff)
        self._retry_at = time.monotonic() + delay
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX)
        if first:
            log.warning("upstream %s: %s; retrying with backoff", self.label, reason)
        if not self._closed:
            # Keep trying in the background so the route is healthy before it is needed.
            self.loop.call_later(delay + 0.001, self._background_retry)

    def _background_retry(self) -> None:
        if self.state is DOWN and not self._closed:
            early = self._retry_at - time.monotonic()
            if early > 0:
                # The loop's clock (uvloop: cached per iteration, in milliseconds) can fire
                # the timer before _retry_at; _start_connect would then refuse and, with
                # no client traffic, nothing would ever retry again.
                self.loop.call_later(early + 0.001, self._background_retry)
                return
            self._start_connect()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._reader = reply_reader()
        self.state = HANDSHAKE
        self.connects += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        s = self.settings
        steps: list[tuple[str, list[bytes]]] = []
        if s.password is not None:
            auth = [b"AUTH"]
            if s.username:
                auth.append(s.username.encode())
            auth.append(s.password.encode())
            steps.append(("AUTH", auth))
        if s.db:
            steps.append(("SELECT", [b"SELECT", str(s.db).encode()]))
        steps.append(("CLIENT SETNAME", [b"CLIENT", b"SETNAME", b"cachecloak"]))
        self._handshake_left = len(steps)
        handshake = []
        for i, (step, args) in enumerate(steps):
            handshake.append(hiredis.pack_command(tuple(args)))
            self._waiters.insert(i, _HandshakeWaiter(self, step))
        self._last_progress = time.monotonic()
        transport.write(b"".join(handshake))
        self._arm_watchdog()

    def _handshake_reply(self, step: str, reply: Reply) -> None:
        if isinstance(reply, hiredis.ReplyError):
            reason = str(reply).split(" ", 1)[0]
            hint = {"AUTH": "check redis.username and redis.password",
                    "SELECT": "check redis.db against the server's `databases` setting"}.get(
                        step, "check the Redis server's configuration")
            if reason == "NOAUTH":
                hint = "Redis requires a password: set redis.password (and redis.username)"
            self._broken(f"Redis refused {step} ({reason}); {hint}", kind="handshake")
            return
        self._handshake_left -= 1
        if self._handshake_left == 0:
            self.state = READY
            self._backoff = _BACKOFF_FIRST
            if self._last_error != "not connected yet":
                log.info("upstream %s: connected", self.label)
            self._last_error = "connection lost"
            self.flush()

    def data_received(self, data: bytes) -> None:
        """Bytes read elsewhere (bench.inprocess): handled as if the loop had read them."""
        feed_as_reads(self, data)

    def _replies_read(self, data, fed: int, nbytes: int, touched: list) -> None:
        """The replies of a read (UpstreamCore.buffer_updated's general case): `nbytes`
        were read into `data`, the read buffer, and the first `fed` of them fed to the
        reader; `touched` holds the clients whose replies were already taken (to flush,
        in order; consecutive replies are mostly one client's)."""
        waiters = self._waiters
        reader = self._reader
        in_c = hasattr(reader, "take")  # proxy._native.ReplyReader, not hiredis
        try:
            while True:
                if in_c and waiters:
                    # Replies decoded in C, as many as are here and need no Python
                    # (proxy.server.client): a batch's, or single commands' (filled,
                    # popped and their clients put in `touched` by take_singles).
                    head = waiters[0]
                    if getattr(head, "in_c", False):
                        taken = head.take_replies(reader)
                        if taken:
                            for _ in range(taken):
                                waiters.popleft()
                            client = head.client
                            if not touched or touched[-1] is not client:
                                touched.append(client)
                            continue
                    elif reader.take_singles(waiters, touched):
                        continue
                reply = reader.gets()
                if reply is False:
                    if fed < nbytes:
                        step = min(nbytes - fed, FEED_BYTES)
                        reader.feed(data, fed, step)
                        fed += step
                        continue
                    break
                if not waiters:
                    raise hiredis.ProtocolError("reply without a pending command")
                waiter = waiters.popleft()
                if type(reply) is not hiredis.ReplyError:
                    waiter.complete(reply)
                elif not self._error_reply(waiter, reply):
                    if waiter.client is not None:
                        touched.append(waiter.client)
                    break
                client = waiter.client
                if client is not None and (not touched or touched[-1] is not client):
                    touched.append(client)
                if self._waiters is not waiters:
                    break  # the connection was abandoned (a failed handshake step)
        except hiredis.ProtocolError:
            self._broken("Redis sent an invalid reply")
        for client in touched:  # a client twice (interleaved replies) is harmless: the
            client.flush()      # second flush finds nothing left to write

    def _error_reply(self, waiter, reply: hiredis.ReplyError) -> bool:
        """Hand an error reply to its waiter; False when the connection must stop
        reading (the server became a replica)."""
        if self.settings.redirects_are_errors:
            reply = self._screen_redirect(reply)
        waiter.complete(reply)
        if self._follow_primary and str(reply).startswith("READONLY"):
            self._broken("the server became a replica (READONLY)")
            self.retry_now()  # find the new primary now, not after the backoff
            return False
        return True

    def _screen_redirect(self, reply: hiredis.ReplyError) -> hiredis.ReplyError:
        """A MOVED or ASK outside cluster mode becomes an error naming the fix.

        The client talks to cachecloak as to a standalone Redis: it cannot act on a slot
        of a hashed key, and following the redirect would send its plaintext straight
        to Redis.  Any other error reaches the client unchanged, with Redis's prefix."""
        text = str(reply)
        if not text.startswith(("MOVED ", "ASK ")):
            return reply
        word = text.split(" ", 1)[0]
        problem = (f"answered {word}: it is a Redis Cluster node, but the cache is not in "
                   "cluster mode; set redis.mode: cluster (with a single address, mode auto "
                   "finds out by itself)")
        if not self._redirect_warned:  # once per connection: a log line per reply would flood
            self._redirect_warned = True
            log.warning("upstream %s %s", self.label, problem)
        return hiredis.ReplyError(f"ERR cachecloak: Redis for {self.label} {problem}")

    def connection_lost(self, exc: Exception | None) -> None:
        # transport is None: this is the loss of a transport already abandoned by
        # _broken(), arriving after a new connect began (this object is the protocol of
        # every transport it ever had); it must not knock down the new attempt.
        if self.state is not DOWN and self.transport is not None:
            reason = "connection lost" if exc is None else f"connection lost: {exc}"
            kind = "closed"
            if (self.state is HANDSHAKE and isinstance(exc, ssl.SSLError)
                    and self.settings.tls_profile is not None):
                # TLS 1.3: the server checks the client certificate after the client
                # finished its side of the handshake, so its alert arrives here.
                reason, kind = describe_handshake_error(exc, self.settings.tls_profile), "tls"
            self._to_down(reason, kind=kind)

    def _broken(self, reason: str, hint: str = "", kind: str = "closed") -> None:
        """Abandon this connection: every in-flight command gets an error reply."""
        transport = self.transport
        self._to_down(reason, hint, kind)
        if transport is not None:
            transport.abort()

    def _to_down(self, reason: str, hint: str = "", kind: str = "closed") -> None:
        if self.state is HANDSHAKE:  # never became usable: a failed attempt to reach Redis
            self._count_failure(kind)
        sent = self.state is READY  # before READY, clients' commands wait unsent in _wbuf
        self.state = DOWN
        self.transport = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._note_failure(reason)
        if not sent:
            self._fail_all(self._unavailable_reply())
            return
        self._fail_all(writer.error(
            f"ERR cachecloak: {reason} on {self.label} before Redis replied; the "
            f"command may or may not have been applied{hint}"))

    def _fail_all(self, error_reply: bytes) -> None:
        self._wbuf.clear()
        waiters, self._waiters = self._waiters, deque()
        touched = set()
        while waiters:
            waiter = waiters.popleft()
            waiter.fail(error_reply)
            if waiter.client is not None:
                touched.add(waiter.client)
        for client in touched:
            client.flush()

    def _arm_watchdog(self) -> None:
        interval = max(min(self.settings.command_timeout / 4, 1.0), 0.05)
        self._watchdog = self.loop.call_later(interval, self._check_progress)

    def _check_progress(self) -> None:
        """A Redis that stops answering must not hang clients: give up on it after
        command_timeout without a reply while commands are waiting.

        The clock of the oldest waiting command starts when it is sent with nothing
        ahead of it, and restarts whenever Redis sends bytes (Redis answers in order,
        so bytes arriving mean the head of the queue moves).  A slow or bandwidth-limited
        Redis that keeps answering is latency, not failure; a silent one is a failure
        within command_timeout plus one check interval.  One timer per connection, not
        per command, keeps the hot path to one time.monotonic() per reply batch."""
        self._watchdog = None
        if self.state is DOWN:
            return
        if self._waiters and time.monotonic() - self._last_progress > self.settings.command_timeout:
            self._broken(f"no reply within commandTimeout {self.settings.command_timeout:g}s",
                         "; Redis is stalled or unreachable (if its commands are just slow, "
                         "raise redis.commandTimeout)", kind="timeout")
            return
        self._arm_watchdog()

    def retry_now(self) -> None:
        """Connect now, skipping the backoff: the topology found where to."""
        if self.state is DOWN and not self._closed:
            self._retry_at = 0.0
            self._backoff = _BACKOFF_FIRST
            self._start_connect()

    def abandon(self, reason: str) -> None:
        """Drop an established connection (the primary moved); in-flight commands get an
        error reply and the next connect locates the target again."""
        if self.state in (HANDSHAKE, READY) and self.transport is not None:
            self._broken(reason)

    def close(self) -> None:
        self._closed = True
        if self.transport is not None:
            self.transport.close()


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def glob_escape(prefix: bytes) -> bytes:
    """`prefix` as a Redis glob that matches it literally (for SCAN MATCH, KEYS)."""
    out = bytearray()
    for b in prefix:
        if b in b"*?[]\\":
            out.append(0x5C)
        out.append(b)
    return bytes(out)


class _IgnoreReply:
    """The waiter of a command whose reply is nobody's (ASKING, a clean-up UNWATCH)."""

    __slots__ = ()
    client = None
    in_c = False

    def complete(self, reply) -> None:
        return None

    def fail(self, error_reply: bytes) -> None:
        return None


IGNORE_REPLY = _IgnoreReply()
