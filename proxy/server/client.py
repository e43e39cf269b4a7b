"""One client connection: parse, dispatch, and write replies in order.

Order is a queue of slots (see GUIDE): every command takes a slot at the tail of the
client's FIFO when it is dispatched; a slot is filled by a local answer, an upstream
reply or an error, in any order; filled slots at the head leave together in one write.
Pipelining, mixed local and upstream replies, upstream failures and multi-step
operations are all the same problem this way.  A run of forwarded commands from one
read shares one slot (a Batch), filled when the last of their replies is there; a read
of one simple command gets a Single, made in C with its request, whose reply C decodes.

While a multi-step operation runs (FLUSHDB over SCAN, for example), the client's later
commands wait in a backlog, so they cannot overtake it.

Must never: write a reply out of order, write twice for one command, or log a command's
arguments.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import time
import traceback
from collections import deque
from time import perf_counter

from hiredis import ReplyError

from proxy.commands import dispatch
from proxy.commands.replication import primary_epoch
from proxy.commands.replies import REPLY_KINDS
from proxy.errors import UpstreamError
from proxy.resp import writer
from proxy.resp.reader import RequestReader, feed_as_reads
from proxy.resp.writer import command as pack_request
from proxy.speedups import native

log = logging.getLogger("cachecloak.client")
_monotonic = time.monotonic

# Stop reading a client that has this many commands waiting for replies; resume at half.
# Redis bounds a client's output with client-output-buffer-limit; a proxy must also bound
# what it has accepted but not answered, or a client that never reads grows it forever.
MAX_INFLIGHT = 16 * 1024
# A flush of several replies is written as they are (writelines: one writev, no copy)
# when the first is at least this long (a pipeline of large values), and joined into one
# write otherwise: a join costs a copy of every byte, writelines a few hundred
# nanoseconds per part in uvloop.  One length to look at, not all: summing them costs as
# much as joining small ones.
WRITELINES_PART_BYTES = 2048

_ids = itertools.count(1)


def _client_bytes(waiter, decode, ctx, reply) -> bytes:
    """What the client gets for an upstream reply: an error reply as it is, anything
    else through the command's decoder (whose failure is an error reply, not a crash)."""
    if type(reply) is ReplyError:
        return writer.error(str(reply))
    try:
        return decode(waiter, ctx, reply)
    except Exception as exc:  # noqa: BLE001 - a bad reply must not kill the loop
        log.error("could not decode a reply (%s)", type(exc).__name__)
        return writer.error("ERR cachecloak could not decode Redis's reply")


class Slot:
    """A reply position.  Doubles as the backend's waiter for forwarded commands.

    It keeps the client's logical db and protocol as they were when the command was
    dispatched, and is what decoders get as their `client`: a pipelined SELECT or HELLO
    after the command must not change how its reply is opened or encoded.
    """

    __slots__ = ("client", "decode", "ctx", "data", "cache", "db", "proto", "start", "stat",
                 "t0")
    in_c = False  # not a Batch: the upstream reader's fast path is not for it

    def __init__(self, client, decode, ctx):
        self.client = client
        self.decode = decode
        self.ctx = ctx
        self.data: bytes | None = None
        self.stat = None  # with metrics: the command's entry, told when data is there
        self.start: asyncio.Future | None = None  # a multi-step operation waiting its turn
        if client is not None:
            self.cache = client.cache
            self.db = client.db
            self.proto = client.proto

    def complete(self, reply) -> None:
        self.data = _client_bytes(self, self.decode, self.ctx, reply)
        if self.stat is not None:
            self.stat.finish(self.t0, self.data)

    def fail(self, error_reply: bytes) -> None:
        self.data = error_reply
        if self.stat is not None:
            self.stat.finish(self.t0, error_reply)


class PythonBatch:
    """The reply position of a run of forwarded commands from one read.

    A pipelined read of GETs and SETs becomes one slot and one submission instead of
    one of each per command: the route queues the packed commands together and puts
    this waiter in its FIFO once per command, so `complete` is called once per reply,
    in order.  The client's reply is the decoded replies, there when the last one is:
    `data` is then the list of each reply's bytes, which the client's flush writes
    together (joined, or as they are when large).  Only commands that do nothing but
    forward (`Command.batchable`) join a batch, so nothing can reach Redis between them;
    anything else ends the batch first.
    Like Slot, it is the `client` its decoders get (one db and protocol for the batch:
    SELECT and HELLO are not batchable).
    With the C part, `Batch` is proxy._native.Batch with these methods: the same fields,
    and ClientCore makes them itself for a read of simple commands only (see
    proxy/_native.c, client_batch).
    """

    __slots__ = ("client", "decoders", "ctxs", "packed", "parts", "data", "cache", "db",
                 "proto", "start", "count", "kinds", "in_c", "gcm", "stats", "t0", "names")

    def __init__(self, client):
        self.client = client
        self.cache = self.db = self.proto = None  # set when its first command joins
        # What each reply holds (replies.REPLY_KINDS), for proxy._native.ReplyReader.take;
        # in_c: whether the upstream reader may use it (the cache's crypto runs in C).
        self.kinds = bytearray()
        self.in_c = False
        self.gcm = None
        # With per-command metrics: the commands' names, and when the read came; each
        # is counted when the batch's replies are all there (they leave together).
        self.stats = client.stats
        self.t0 = perf_counter() if self.stats is not None else 0.0
        self.names: list[bytes] = []
        self.decoders: list = []
        self.ctxs: list = []
        self.packed: list[bytes] = []
        self.parts: list[bytes] = []
        self.data: list[bytes] | None = None
        self.start = None
        self.count = 0

    def complete(self, reply) -> None:
        parts = self.parts
        index = len(parts)
        parts.append(_client_bytes(self, self.decoders[index], self.ctxs[index], reply))
        if len(parts) == self.count:
            self._done()

    def fail(self, error_reply: bytes) -> None:
        parts = self.parts
        parts.append(error_reply)
        if len(parts) == self.count:
            self._done()

    def _done(self) -> None:
        parts = self.parts
        self.data = parts
        stats = self.stats
        if stats is not None:
            t0, entries = self.t0, stats.entries
            # One name per command (buffer_updated records them); zip, not strict: a
            # counting slip must never stop the upstream reader that calls this.
            for name, part in zip(self.names, parts, strict=False):
                entry = entries.get(name)
                if entry is None:
                    entry = stats.resolve(name)
                entry.finish(t0, part)

    def take_replies(self, reader) -> int:
        """Let the upstream reader (proxy._native.ReplyReader) decode what it can of the
        next replies in C; returns how many it took."""
        parts = self.parts
        taken = reader.take(parts, self.kinds, self.ctxs, self.proto, self.gcm, self.db)
        if len(parts) == self.count:
            self._done()
        return taken


if native is not None:
    class Batch(native.Batch):
        """PythonBatch's methods on proxy._native.Batch's fields (see PythonBatch)."""

        __slots__ = ()
        complete = PythonBatch.complete
        fail = PythonBatch.fail
        _done = PythonBatch._done
        take_replies = PythonBatch.take_replies

    class Single(native.Single):
        """The reply position of a read that held one command simple enough for C.

        proxy._native.Forwarder.one makes it (the request hashed, sealed and packed as
        `forward` would) and the upstream reader decodes its reply in C
        (ReplyReader.take_singles), runs of them at a time; a reply C leaves (an error,
        an old key's envelope) comes here as to a Slot.  Pipeline depth 1 is mostly
        these.  Its fields are a Slot's (see proxy/_native.c).
        """

        __slots__ = ()
        in_c = False  # not a Batch (the upstream reader's take_singles is for these)
        complete = Slot.complete
        fail = Slot.fail
else:
    Batch = PythonBatch
    Single = None


# The attributes of a connection that Core's two methods use; Core holds them (in C,
# proxy._native.ClientCore's fields), ClientConnection the rest.
CORE_FIELDS = (
    "reader", "_slots", "route", "cache", "_forwarder", "stats", "io", "transport", "_backlog",
    "_out", "db", "proto", "authenticated", "multi", "capture", "_closing", "_closed",
    "_paused", "_write_paused", "_blocked", "_batched", "last_active")


class PythonCore:
    """The Python twin of proxy._native.ClientCore: a connection's read and write.

    This passes every read to `_commands_read`.  ClientCore does the same in C, except
    for a read of one command that proxy._native.Forwarder.one takes on a connection in
    its plain state: that one it forwards itself, as a Single.  That path exists only
    with the C part and does what dispatch would (tests/test_native_forward.py).
    """

    __slots__ = CORE_FIELDS

    def buffer_updated(self, nbytes: int) -> None:
        """`nbytes` of the client's stream were read into get_buffer()'s buffer."""
        if self._closing:
            return
        self.last_active = _monotonic()
        self.io.received += nbytes
        self._commands_read(self.reader.feed(nbytes))

    def flush(self) -> None:
        """Write the replies that are there, in order."""
        self._flush()


Core = native.ClientCore if native is not None else PythonCore
if native is not None and (native.CLIENT_MAX_INFLIGHT != MAX_INFLIGHT or getattr(
        native, "CLIENT_WRITELINES_PART_BYTES", None) != WRITELINES_PART_BYTES):
    raise ImportError("proxy._native is out of date (CLIENT_MAX_INFLIGHT or "
                      "CLIENT_WRITELINES_PART_BYTES); reinstall it")


class ClientConnection(Core, asyncio.BufferedProtocol):
    """One client's connection: reads its commands, runs them, writes replies in order.

    The read and write of the common case are Core's (proxy._native.ClientCore, or
    PythonCore); the rest is here.  Core holds the attributes those two use.
    """

    # Declared: a connection has more attributes than CPython 3.11 shares dict keys for
    # (30), and without sharing every `self.x` on the hot path is a hash lookup.
    __slots__ = (
        "server", "listener", "listener_port", "password", "rejected", "get_buffer", "id",
        "lib_name", "lib_ver", "created", "last_command", "peer", "local", "fd",
        # connection state (reset_state) and what command handlers keep on it
        "name", "watch", "wait_epoch", "auth_failure_logged", "batch", "__weakref__")

    def __init__(self, server, listener, cache):
        self.server = server
        self.listener = listener
        self.listener_port = listener.port
        self.password: bytes | None = (
            listener.password.encode("utf-8") if listener.password is not None else None)
        self.rejected = False
        self.cache = cache
        self.io = server.io_stats(listener)  # bytes in and out, per listener
        self.stats = server.command_metrics(cache.name)  # None without admin:
        self.route = None
        self._forwarder = None  # see use_route
        self.transport: asyncio.Transport | None = None
        self.reader = RequestReader()
        # The event loop reads into the parser's buffer (BufferedProtocol; the parser's
        # own method, so no Python frame per read) and calls buffer_updated.
        self.get_buffer = self.reader.get_buffer
        self._slots: deque[Slot] = deque()
        self._out: list[bytes] = []
        self._backlog: deque[list[bytes]] = deque()
        self._blocked = 0
        self.batch: Batch | None = None  # open while a read's commands are dispatched
        self._batched = 0  # commands in batches in _slots beyond one per batch
        self._closing = False
        self._closed = False
        self._paused = False
        self._write_paused = False
        self.id = next(_ids)
        self.reset_state()
        self.lib_name: bytes | None = None
        self.lib_ver: bytes | None = None
        self.created = self.last_active = time.monotonic()
        self.last_command = "NULL"
        self.peer = self.local = "?"
        self.fd = -1

    def reset_state(self) -> None:
        """Connection state that RESET returns to its defaults."""
        self.db = 0
        self.proto = 2
        self.name: bytes | None = None
        # With a listener password, RESET makes the client authenticate again (as Redis).
        self.authenticated = self.password is None
        # MULTI ... EXEC: commands queued by the client (proxy.commands.transactions).
        self.multi = None
        # While a transaction is being assembled, forward() and reply() record what the
        # commands would send and answer instead of doing it.
        self.capture: list | None = None
        watch = getattr(self, "watch", None)
        self.watch = None  # WATCHed keys and the dedicated route they are watched on
        if watch is not None:
            watch.release()

    # -- asyncio callbacks ----------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        if not self.server.admit(self.listener):
            # Redis's own reply when maxclients is reached; the others are unaffected.
            self.rejected = self._closing = self._closed = True
            transport.write(b"-ERR max number of clients reached\r\n")
            transport.close()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.fd = sock.fileno()
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.listener.unix_path is not None:
            # As Redis: addr=/path:0 laddr=/path:0 for a Unix socket client.
            self.peer = self.local = f"{self.listener.unix_path}:0"
        else:
            self.peer = _address(transport.get_extra_info("peername"))
            self.local = _address(transport.get_extra_info("sockname"))
        # A configuration reload may have replaced the cache since this object was made.
        self.use_route(self.server.caches.get(self.cache.name, self.cache), None)
        # WAIT answers 0 once the primary moved after this (proxy.commands.replication).
        self.wait_epoch = primary_epoch(self.cache.backend)
        self.server.client_connected(self)

    def use_route(self, cache, route) -> None:
        """Serve with `cache` from now on, over `route` (None: a new route of its
        backend).  Whatever depends on the two is refreshed here: the C path for a
        read of simple commands (one: a Single; several: a Batch) uses the cache's
        keys, and routes that queue packed requests."""
        self.cache = cache
        self.route = route = route if route is not None else cache.backend.route()
        forwarder = cache.forwarder
        self._forwarder = (forwarder if forwarder is not None
                           and hasattr(route, "submit_one") else None)

    def connection_lost(self, exc) -> None:
        self._closed = True
        if self.rejected:
            return
        for slot in self._slots:
            if slot.start is not None and not slot.start.done():
                slot.start.cancel()
        if self.watch is not None:
            self.watch.release()
            self.watch = None
        self._slots.clear()
        self._backlog.clear()
        release = getattr(self.cache.backend, "release", None)
        if release is not None and self.route is not None:
            release(self.route)
        self.server.client_disconnected(self)

    def pause_writing(self) -> None:
        # The client is not reading its replies: stop reading its commands.
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        """Bytes read elsewhere (bench.inprocess): handled as if the loop had read them."""
        feed_as_reads(self, data)

    def _commands_read(self, commands: list) -> None:
        """The commands of a read that Core.buffer_updated did not forward itself."""
        reader = self.reader
        if self._blocked or self._backlog:
            self._backlog.extend(commands)
            self._run_backlog()
        else:
            stats = self.stats
            forwarder = None
            if len(commands) > 1 and hasattr(self.route, "submit_packed"):
                self.batch = Batch(self)  # see Batch; dispatch ends it before other commands
                forwarder = self.cache.forwarder
            index, count = 0, len(commands)
            while index < count:
                if forwarder is not None:
                    index = self._forward_simple(forwarder, commands, index)
                    if index == count:
                        break
                args = commands[index]
                index += 1
                if stats is None:  # without metrics: no per-command call of our own
                    try:
                        dispatch(self, args)
                    except Exception as exc:  # noqa: BLE001 - see _run
                        self._internal_error(exc)
                else:
                    self._dispatch(args)
                if self._blocked or self._closing:
                    if not self._closing:
                        self._backlog.extend(commands[index:])
                    break
            if self.batch is not None:
                self.end_batch(reopen=False)
        if reader.error is not None and not self._closing:
            if self._blocked or self._backlog:
                self._backlog.append([b"\x00protocol-error"])
            else:
                self._protocol_error()
        self.route.flush()
        # Usually every command went upstream and nothing can be written or paused yet:
        # skip the two calls (flush() pops only filled slots at the head, so a multi-step
        # operation's turn cannot have come without it).
        slots = self._slots
        if self._out or self._closing or (slots and slots[0].data is not None):
            self.flush()
        if (self._paused or self._write_paused or len(slots) + self._batched > MAX_INFLIGHT
                or len(self._backlog) > MAX_INFLIGHT):
            self._update_reading()

    # -- used by command handlers ---------------------------------------------------

    def reply(self, data: bytes) -> None:
        if self.capture is not None:
            self.capture.append(("local", data))
            return
        if self.batch is not None and self.batch.count:
            self.end_batch()  # a batch's replies are one run: later commands go after this
        if self._slots:
            slot = Slot(None, None, None)
            slot.data = data
            self._slots.append(slot)
        else:
            self._out.append(data)

    def forward(self, args: list[bytes], decode, ctx, command=None) -> None:
        if self.capture is not None:
            self.capture.append(("forward", args, decode, ctx, self.db, command))
            return
        batch = self.batch
        if batch is not None:
            if not batch.count:
                self._open_batch(batch)
            batch.count += 1
            batch.packed.append(pack_request(args))
            batch.decoders.append(decode)
            batch.ctxs.append(ctx)
            batch.kinds.append(REPLY_KINDS.get(decode, 0))
            return
        slot = Slot(self, decode, ctx)
        self._slots.append(slot)
        self.route.submit(args, slot, command)

    def _open_batch(self, batch: Batch) -> None:
        """Its first command joins: its place in the reply order is that command's."""
        cache = batch.cache = self.cache
        batch.db, batch.proto = self.db, self.proto
        batch.in_c = cache.replies_in_c
        batch.gcm = cache.reply_gcm
        self._slots.append(batch)

    def _forward_simple(self, forwarder, commands: list, index: int) -> int:
        """Forward commands[index:] in C while they are the simplest kind (see
        proxy._native.Forwarder); returns the index of the first one left for dispatch."""
        if not self.authenticated or self.multi is not None or self.capture is not None:
            return index
        batch = self.batch
        end = forwarder.forward(commands, index, self.db, batch.packed, batch.decoders,
                                batch.ctxs, batch.kinds)
        if end > index:
            if not batch.count:
                self._open_batch(batch)
            batch.count += end - index
            if batch.stats is not None:
                batch.names.extend(args[0] for args in commands[index:end])
        return end

    def end_batch(self, reopen: bool = True) -> None:
        """Submit the open batch's commands; with `reopen`, later ones start a new batch
        (dispatch calls this before a command that is not batchable)."""
        batch = self.batch
        self.batch = Batch(self) if reopen else None
        if batch.count:
            self._batched += batch.count - 1
            self.route.submit_packed(batch.packed, batch, batch.count)
            batch.packed = None

    def run_op(self, operation) -> None:
        """Run a multi-step operation (a coroutine returning reply bytes) in order.

        It starts once every earlier command of this client has its reply (so it sees
        their effects, whichever connection they took), and later commands wait for it.
        """
        if self.capture is not None:  # inside a transaction being assembled
            operation.close()
            self.capture.append(("local", writer.error(
                "ERR cachecloak cannot run this command inside MULTI: it takes several "
                "steps; run it outside the transaction")))
            return
        slot = Slot(self, None, None)
        self._slots.append(slot)
        self._blocked += 1
        asyncio.get_running_loop().create_task(self._run_operation(slot, operation))

    def close_after_reply(self) -> None:
        self._closing = True
        self._backlog.clear()

    def has_pending(self) -> bool:
        return bool(self._slots or self._backlog)

    # -- internals ------------------------------------------------------------------

    def _dispatch(self, args: list[bytes]) -> None:
        stats = self.stats
        if stats is None:
            self._run(args)
            return
        # Metrics: from here to the moment the command's reply is there (now, or when
        # its slot is filled).
        t0 = perf_counter()
        entry = stats.entries.get(args[0])
        if entry is None:
            entry = stats.resolve(args[0])
        slots, out = self._slots, self._out
        before_slots, before_out = len(slots), len(out)
        batch = self.batch
        before_batch = batch.count if batch is not None else 0
        self._run(args)
        if batch is not None and self.batch is batch and batch.count > before_batch:
            batch.names.append(args[0])  # counted when the batch is complete (Batch._done)
            return
        if len(slots) > before_slots:
            slot = slots[before_slots]
            if slot.data is None:  # answered later: Slot.complete/fail or _run_operation
                slot.t0 = t0
                slot.stat = entry
                return
            entry.finish(t0, slot.data)
        elif len(out) > before_out:
            entry.finish(t0, out[before_out])
        else:  # recorded for a transaction, or no reply at all
            entry.finish(t0, None)

    def _run(self, args: list[bytes]) -> None:
        try:
            dispatch(self, args)
        except Exception as exc:  # noqa: BLE001 - one bad command must not drop the client
            self._internal_error(exc)

    def _internal_error(self, exc: Exception) -> None:
        # Type and place only: an exception's message may quote a key or a value.
        log.error("internal error while handling a command: %s at %s",
                  type(exc).__name__, _where(exc))
        self.reply(writer.error(
            f"ERR cachecloak internal error ({type(exc).__name__}); the command was not run"))

    def _protocol_error(self) -> None:
        error = self.reader.error
        log.info("client %s sent malformed input (%s); closing its connection", self.peer, error)
        self.reply(writer.error(f"ERR {error}"))
        self.close_after_reply()

    async def _run_operation(self, slot: Slot, operation) -> None:
        started = False
        try:
            if self._slots and self._slots[0] is not slot:
                slot.start = asyncio.get_running_loop().create_future()
                await slot.start
            started = True
            slot.data = await operation
        except UpstreamError as exc:
            slot.data = writer.error(f"ERR cachecloak: {exc}")
        except asyncio.CancelledError:
            slot.data = writer.error("ERR cachecloak: the operation was cancelled")
        except Exception as exc:  # noqa: BLE001 - the client must get a reply
            log.error("internal error in a multi-step operation: %s at %s",
                      type(exc).__name__, _where(exc))
            slot.data = writer.error(f"ERR cachecloak internal error ({type(exc).__name__})")
        finally:
            if not started:
                operation.close()
        if slot.stat is not None:
            slot.stat.finish(slot.t0, slot.data)
        self._blocked -= 1
        if self._closed:
            return
        self._run_backlog()
        self.route.flush()
        self.flush()
        self._update_reading()

    def _run_backlog(self) -> None:
        backlog = self._backlog
        while backlog and not self._blocked and not self._closing:
            args = backlog.popleft()
            if args[0] == b"\x00protocol-error":
                self._protocol_error()
                break
            self._dispatch(args)

    def _flush(self) -> None:
        """Write the replies that are there, in order (Core.flush's general case)."""
        if self._closed:
            return
        out = self._out
        slots = self._slots
        while slots and slots[0].data is not None:
            slot = slots.popleft()
            if type(slot) is Batch:
                self._batched -= slot.count - 1
                out.extend(slot.data)
            else:
                out.append(slot.data)
        if slots:
            start = slots[0].start
            if start is not None and not start.done():
                start.set_result(None)  # a multi-step operation's turn has come
        if out:
            if len(out) == 1:
                data = out[0]
                self.io.sent += len(data)
                self.transport.write(data)
            elif len(out[0]) >= WRITELINES_PART_BYTES:
                self.io.sent += sum(map(len, out))
                self.transport.writelines(out)  # it keeps the parts, not the list
            else:
                data = b"".join(out)
                self.io.sent += len(data)
                self.transport.write(data)
            out.clear()
        if self._closing and not slots:
            self.transport.close()
            self._closed = True
        elif self._paused:
            self._update_reading()

    def _update_reading(self) -> None:
        if self._closed:
            return
        queued = len(self._slots) + self._batched
        should_pause = self._write_paused or queued > MAX_INFLIGHT or (
            len(self._backlog) > MAX_INFLIGHT)
        if should_pause and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        elif not should_pause and self._paused and queued < MAX_INFLIGHT // 2:
            self._paused = False
            self.transport.resume_reading()


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in frames[::-1][:4])


def _address(name) -> str:
    if isinstance(name, tuple):
        host = name[0]
        return f"[{host}]:{name[1]}" if ":" in host else f"{host}:{name[1]}"
    return str(name or "?")
