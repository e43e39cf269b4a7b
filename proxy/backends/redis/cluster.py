"""Redis Cluster: commands routed by the slot of their stored (hashed) key.

* Slot map: `CLUSTER SLOTS` from any reachable node (known primaries first, then the
  configured seed addresses), loaded at start and refreshed in the background whenever a
  reply says the map is stale (MOVED), a connection fails, or a slot has no owner.
  `ready()` means every one of the 16384 slots has a primary.
* Connections: per primary node a small pool (`poolSize`) of the same self-healing
  pipelined `UpstreamConnection`s the standalone backend uses, created on first use.
  Each client's `ClusterRoute` uses connection number `index` on every node, so one
  client's commands to one node stay in order (Redis executes a connection's commands in
  order), exactly as a standalone client's do.
* Redirects: every keyed command travels inside a `_Redirectable` waiter that keeps its
  arguments.  `-MOVED slot host:port` updates that slot's owner, schedules a full refresh
  and sends the command again to the new owner (Redis did not execute it); `-ASK slot
  host:port` sends `ASKING` plus the command to that node, for this command only;
  `-TRYAGAIN` (a multi-key command during a slot migration) is sent again after a short,
  growing delay.  After MAX_REDIRECTS hops (or TRYAGAIN_MAX tries) the error goes to the
  client unchanged.  Every other reply goes to the real waiter unchanged, exactly once.
* Multi-key commands whose keys live in several slots are split per `Command.split`:
  one sub-command per slot (slots in first-seen order, keys in their original order), the
  replies merged: "sum" adds integers, "mget" rebuilds the array in the original key
  order, "mset" answers OK once every part did; the first failing part (in slot order)
  wins.  "crossslot" (MSETNX) is refused with Redis Cluster's own CROSSSLOT error
  without sending anything; a command without a split mode goes to its first key's node,
  which answers CROSSSLOT itself.
* Commands without keys (DBSIZE, FLUSHDB, FLUSHALL forwarded with the prefix disabled)
  go to every primary; integers are added, other replies must all agree (OK).
  `count_prefix` / `delete_prefix` SCAN every primary.

The slot of a stored name is CRC16 (XMODEM: polynomial 0x1021, initial value 0) of its
hash tag, or of the whole name, mod 16384.  `binascii.crc_hqx(data, 0)` is exactly that
CRC, computed by CPython's 256-entry table in C: no per-byte Python loop on the hot path.
Stored names keep a client key's hash tag as a hashed tag (see proxy.crypto.hashing) and
the prefix never contains braces, so keys that share a tag share a slot.

Like the rest of the backends: never logs arguments, keys or values.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from binascii import crc_hqx

from hiredis import ReplyError

from proxy.backends.redis.connection import (
    IGNORE_REPLY,
    UpstreamConnection,
    UpstreamFailure,
    UpstreamSettings,
    _FutureWaiter,
)
from proxy.backends.redis.tls import client_context
from proxy.resp import writer

log = logging.getLogger("cachecloak.cluster")

SLOTS = 16384
MAX_REDIRECTS = 5  # MOVED / ASK hops of one command
# TRYAGAIN lasts as long as a slot's keys are split between two nodes (a migration in
# progress): retry with growing delays (5 ms doubling, at most 100 ms) for about 2 s.
TRYAGAIN_MAX = 25
_REFRESH_MIN_INTERVAL = 0.05  # at most ~20 slot-map loads a second, whatever the storm
_REFRESH_BACKOFF_MAX = 2.0
_TRYAGAIN_FIRST, _TRYAGAIN_LONGEST = 0.005, 0.1

CROSSSLOT = writer.error("CROSSSLOT Keys in request don't hash to the same slot")
SLOT_NOT_SERVED = writer.error("CLUSTERDOWN Hash slot not served")
_ASKING = [b"ASKING"]
_CLUSTER_SLOTS = [b"CLUSTER", b"SLOTS"]


def key_slot(key: bytes) -> int:
    """Redis Cluster's HASH_SLOT: CRC16 of the hash tag if the key has one, else of the
    whole key, mod 16384.  Same tag rule as proxy.crypto.hashing.find_hash_tag."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return crc_hqx(key[start + 1:end], 0) & 0x3FFF
    return crc_hqx(key, 0) & 0x3FFF


class _Node:
    """One primary (or an address a redirect or seed named): its connection pool."""

    __slots__ = ("host", "port", "settings", "conns", "loop")

    def __init__(self, host: str, port: int, settings: UpstreamSettings, size: int, loop):
        self.host, self.port = host, port
        self.settings = settings
        self.conns: list[UpstreamConnection | None] = [None] * size
        self.loop = loop

    def make(self, index: int) -> UpstreamConnection:
        conn = self.conns[index] = UpstreamConnection(self.settings, self.loop)
        return conn

    def close(self) -> None:
        for conn in self.conns:
            if conn is not None:
                conn.close()


class _Redirectable:
    """Wraps a waiter: follows MOVED / ASK / TRYAGAIN, passes everything else on.

    Exposes the real waiter's `client`, so the connection that delivers the final reply
    flushes that client, whichever node it came from."""

    __slots__ = ("route", "args", "waiter", "client", "slot", "node", "hops", "tries")

    def __init__(self, route: ClusterRoute, args: list[bytes], waiter, slot: int, node: _Node):
        self.route = route
        self.args = args
        self.waiter = waiter
        self.client = waiter.client
        self.slot = slot
        self.node = node
        self.hops = 0
        self.tries = 0

    def complete(self, reply) -> None:
        if type(reply) is ReplyError:
            text = str(reply)
            if (text.startswith(("MOVED ", "ASK ", "TRYAGAIN"))
                    and self.route._redirect(self, text)):
                return
        self.waiter.complete(reply)

    def fail(self, error_reply: bytes) -> None:
        self.route.backend.schedule_refresh()  # a node may have failed over
        self.waiter.fail(error_reply)


class _Part:
    """The waiter of one sub-command of a split (or broadcast) command."""

    __slots__ = ("gather", "index", "client")

    def __init__(self, gather: _Gather, index: int):
        self.gather = gather
        self.index = index
        self.client = gather.client

    def complete(self, reply) -> None:
        self.gather.part_done(self.index, reply, False)

    def fail(self, error_reply: bytes) -> None:
        self.gather.part_done(self.index, error_reply, True)


_SUM, _MGET, _SAME = "sum", "mget", "same"


class _Gather:
    """Merges the replies of a split command's parts and completes the real waiter once.

    `positions` (mget only): for each part, the position in the reply of each of its keys.
    """

    __slots__ = ("waiter", "client", "mode", "left", "result", "error", "error_index",
                 "positions")

    def __init__(self, waiter, mode: str, parts: int, positions=None, keys: int = 0):
        self.waiter = waiter
        self.client = waiter.client
        self.mode = mode
        self.left = parts
        self.result = [None] * keys if mode is _MGET else None
        self.error = None
        self.error_index = parts
        self.positions = positions

    def part_done(self, index: int, reply, failed: bool) -> None:
        if failed or type(reply) is ReplyError:
            if index < self.error_index:
                self.error, self.error_index = (reply, failed), index
        elif self.mode is _MGET:
            result = self.result
            if type(reply) is list:
                for position, item in zip(self.positions[index], reply, strict=False):
                    result[position] = item
        elif type(reply) is int:
            self.result = reply if self.result is None else self.result + reply
        elif self.result is None:
            self.result = reply  # OK: every part's must agree
        elif self.result != reply and index < self.error_index:
            self.error = (ReplyError("ERR cachecloak: the cluster's nodes disagreed"), False)
            self.error_index = index
        self.left -= 1
        if self.left == 0:
            if self.error is not None:
                error, failed = self.error
                if failed:
                    self.waiter.fail(error)
                else:
                    self.waiter.complete(error)
            else:
                self.waiter.complete(self.result)


class ClusterRoute:
    """A client's route: connection number `index` of every node (see the module doc)."""

    __slots__ = ("backend", "slots", "index", "dirty")

    def __init__(self, backend: ClusterBackend, index: int):
        self.backend = backend
        self.slots = backend.slots  # updated in place by the backend
        self.index = index
        self.dirty: set[UpstreamConnection] = set()

    def conn(self, node: _Node) -> UpstreamConnection:
        return node.conns[self.index] or node.make(self.index)

    # -- the Route interface --------------------------------------------------------

    def submit(self, args: list[bytes], waiter, command=None) -> None:
        if command is None:
            command = _lookup(args[0])
        first, last, step = command.keys if command is not None else (0, 0, 0)
        if first == last:
            if not first:
                self._broadcast(args, waiter)
                return
            # One key, the common case: _send inlined.
            slot = key_slot(args[first])
            node = self.slots[slot]
            if node is None:
                waiter.fail(self.backend.unmapped_reply())
                return
            conn = node.conns[self.index] or node.make(self.index)
            conn.submit(args, _Redirectable(self, args, waiter, slot, node))
            self.dirty.add(conn)
            return
        if last < 0:
            last += len(args)
        slot_of = [key_slot(args[i]) for i in range(first, last + 1, step)]
        slot = slot_of[0]
        if slot_of.count(slot) == len(slot_of):
            self._send(args, waiter, slot)
            return
        split = command.split
        if split is None:
            self._send(args, waiter, slot)  # Redis answers CROSSSLOT itself
            return
        if split == "crossslot":
            waiter.fail(CROSSSLOT)
            return
        groups: dict[int, list[int]] = {}
        for ordinal, key_slot_ in enumerate(slot_of):
            group = groups.get(key_slot_)
            if group is None:
                groups[key_slot_] = [ordinal]
            else:
                group.append(ordinal)
        mode = _MGET if split == "mget" else _SUM if split == "sum" else _SAME
        positions = list(groups.values())
        gather = _Gather(waiter, mode, len(groups), positions, len(slot_of))
        head, tail = args[:first], args[last + 1:]
        for index, (part_slot, ordinals) in enumerate(groups.items()):
            sub = list(head)
            for ordinal in ordinals:
                i = first + ordinal * step
                sub.extend(args[i:i + step])
            sub.extend(tail)
            self._send(sub, _Part(gather, index), part_slot)

    def flush(self) -> None:
        dirty = self.dirty
        if dirty:
            for conn in dirty:
                conn.flush()
            dirty.clear()

    async def call(self, args: list[bytes]):
        future = asyncio.get_running_loop().create_future()
        self.submit(args, _FutureWaiter(future))
        self.flush()
        return await future

    async def count_prefix(self, prefix: bytes) -> int:
        count = 0
        for node in await self.backend.primaries_now():
            async for batch in self.conn(node)._scan(prefix):
                count += len(batch)
        return count

    async def delete_prefix(self, prefix: bytes) -> int:
        """UNLINK every key under `prefix` on every primary.  The keys SCAN finds are
        unlinked slot by slot through the normal routing, so a key that moves meanwhile
        is followed (MOVED / ASK) like any other command's."""
        loop = asyncio.get_running_loop()
        deleted = 0
        for node in await self.backend.primaries_now():
            async for batch in self.conn(node)._scan(prefix):
                groups: dict[int, list[bytes]] = {}
                for key in batch:
                    groups.setdefault(key_slot(key), []).append(key)
                futures = []
                for slot, keys in groups.items():
                    future = loop.create_future()
                    self._send([b"UNLINK", *keys], _FutureWaiter(future), slot)
                    futures.append(future)
                self.flush()
                for reply in await asyncio.gather(*futures):
                    if type(reply) is ReplyError:
                        raise UpstreamFailure(f"UNLINK failed: {reply}")
                    deleted += reply
        return deleted

    # -- internals ------------------------------------------------------------------

    def _send(self, args: list[bytes], waiter, slot: int) -> None:
        node = self.slots[slot]
        if node is None:
            waiter.fail(self.backend.unmapped_reply())
            return
        conn = node.conns[self.index] or node.make(self.index)
        conn.submit(args, _Redirectable(self, args, waiter, slot, node))
        self.dirty.add(conn)

    def _broadcast(self, args: list[bytes], waiter) -> None:
        primaries = self.backend.primaries
        if not primaries:
            waiter.fail(self.backend.unmapped_reply())
            return
        gather = _Gather(waiter, _SAME, len(primaries))
        for index, node in enumerate(primaries):
            conn = self.conn(node)
            conn.submit(args, _Part(gather, index))
            self.dirty.add(conn)

    def _redirect(self, w: _Redirectable, text: str) -> bool:
        """Follow a MOVED / ASK / TRYAGAIN reply; False: give the error to the client."""
        backend = self.backend
        if text.startswith("TRYAGAIN"):
            if w.tries >= TRYAGAIN_MAX:
                return False
            backend.tryagain_retries += 1
            delay = min(_TRYAGAIN_FIRST * (1 << min(w.tries, 10)), _TRYAGAIN_LONGEST)
            w.tries += 1
            w.hops = 0  # ASK then TRYAGAIN from the importing node is one more try
            backend.loop.call_later(delay, self._retry, w)
            return True
        parts = text.split(" ", 3)
        kind = parts[0]
        if w.hops >= MAX_REDIRECTS or len(parts) < 3:
            return False
        host, _, port = parts[2].rpartition(":")
        try:
            slot, port_number = int(parts[1]), int(port)
        except ValueError:
            return False
        if not 0 <= slot < SLOTS:
            return False
        node = backend.node(host or w.node.host, port_number)
        w.hops += 1
        w.node = node
        conn = self.conn(node)
        if kind == "MOVED":
            backend.moved_redirects += 1
            backend.slots[slot] = node
            backend.schedule_refresh()
        else:
            backend.ask_redirects += 1
            conn.submit(_ASKING, IGNORE_REPLY)
        conn.submit(w.args, w)
        conn.flush()
        return True

    def _retry(self, w: _Redirectable) -> None:
        node = self.slots[w.slot]
        if node is None or self.backend.closed:
            w.waiter.fail(self.backend.unmapped_reply())
        else:
            w.node = node
            conn = self.conn(node)
            conn.submit(w.args, w)
            conn.flush()
        if w.client is not None:
            w.client.flush()


def _lookup(name: bytes):
    """The table entry of a command given to `call()` without one (to find its keys)."""
    from proxy.commands.table import TABLE

    return TABLE.get(name) or TABLE.get(name.lower())


class ClusterBackend:
    local = False

    def __init__(self, cfg) -> None:
        redis = cfg.redis
        self._redis = redis
        self._label = f'cache "{cfg.name}"'
        self._ssl = client_context(redis.tls) if redis.tls is not None else None
        self._seeds = list(redis.addresses)
        self._size = redis.pool_size
        self.slots: list[_Node | None] = [None] * SLOTS
        self.nodes: dict[tuple[str, int], _Node] = {}
        self.primaries: list[_Node] = []
        self.covered = 0
        self.moved_redirects = 0
        self.ask_redirects = 0
        self.tryagain_retries = 0
        self.refreshes = 0
        self.closed = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._load = [0] * self._size  # clients per connection index
        self._refresh_task: asyncio.Task | None = None
        self._refresh_again = False
        self._attempted = asyncio.Event()  # set (and replaced) after each load attempt
        self._last_refresh = 0.0
        self._last_error = "the slot map is not loaded yet"

    @property
    def description(self) -> str:
        return f"redis cluster ({len(self.primaries)} primaries)"

    def info(self) -> list[tuple[str, object]]:
        """Fields for INFO's cachecloak section."""
        return [("cluster_primaries", len(self.primaries)),
                ("cluster_slots_covered", self.covered),
                ("cluster_moved_redirects", self.moved_redirects),
                ("cluster_ask_redirects", self.ask_redirects),
                ("cluster_tryagain_retries", self.tryagain_retries),
                ("cluster_slot_map_loads", self.refreshes)]

    # -- the Backend interface ------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self._await_map()  # a cluster not reachable yet must not stop the start

    async def _await_map(self) -> None:
        """Wait (bounded) for the next attempt to load the slot map, successful or not;
        after a failure the attempts go on in the background."""
        if self.schedule_refresh() is None:
            return
        cfg = self._redis
        try:
            await asyncio.wait_for(self._attempted.wait(),
                                   min(cfg.connect_timeout + cfg.command_timeout, 10.0))
        except TimeoutError:
            pass

    def route(self) -> ClusterRoute:
        load = self._load
        index = load.index(min(load))
        load[index] += 1
        return ClusterRoute(self, index)

    def release(self, route: ClusterRoute) -> None:
        self._load[route.index] -= 1

    def dedicated(self, key: bytes | None = None) -> UpstreamConnection:
        """A connection of its own to the node that owns `key`'s slot (any primary when
        there is no key): a transaction's keys must share a slot in a cluster anyway."""
        node = self.slots[key_slot(key)] if key is not None else None
        if node is None and self.primaries:
            node = self.primaries[0]
        if node is None:
            raise UpstreamFailure(f"the Redis Cluster slot map is not known "
                                  f"({self._last_error})")
        return UpstreamConnection(node.settings, self.loop)

    def release_dedicated(self, conn: UpstreamConnection) -> None:
        conn.close()

    def ready(self) -> bool:
        return self.covered == SLOTS

    async def close(self) -> None:
        self.closed = True
        if self._refresh_task is not None:
            self._refresh_task.cancel()
        for node in self.nodes.values():
            node.close()

    # -- nodes and the slot map -----------------------------------------------------

    def node(self, host: str, port: int) -> _Node:
        node = self.nodes.get((host, port))
        if node is None:
            r = self._redis
            settings = UpstreamSettings(
                host, port, username=r.username, password=r.password, db=0,
                connect_timeout=r.connect_timeout, command_timeout=r.command_timeout,
                label=self._label, ssl=self._ssl, tls_profile=r.tls)
            node = self.nodes[(host, port)] = _Node(host, port, settings, self._size,
                                                    self.loop)
        return node

    def unmapped_reply(self) -> bytes:
        self.schedule_refresh()
        if not self.primaries:
            return writer.error(f"ERR cachecloak: the Redis Cluster slot map for "
                                f"{self._label} is not known ({self._last_error}); "
                                "retrying in the background")
        return SLOT_NOT_SERVED

    async def primaries_now(self) -> list[_Node]:
        """The primaries, loading the slot map first if it is not known yet."""
        if not self.primaries:
            await self._await_map()
        if not self.primaries:
            raise UpstreamFailure(f"the Redis Cluster slot map is not known "
                                  f"({self._last_error})")
        return list(self.primaries)

    def schedule_refresh(self) -> asyncio.Task | None:
        """Load the slot map in the background (one load at a time; a request while one
        runs makes it load once more afterwards)."""
        if self.closed or self.loop is None:
            return None
        task = self._refresh_task
        if task is not None and not task.done():
            self._refresh_again = True
            return task
        self._refresh_task = task = self.loop.create_task(self._refresh_loop())
        return task

    async def _refresh_loop(self) -> None:
        backoff = _REFRESH_MIN_INTERVAL
        while not self.closed:
            wait = self._last_refresh + _REFRESH_MIN_INTERVAL - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._refresh_again = False
            self._last_refresh = time.monotonic()
            try:
                await self._load_map()
            except Exception as exc:  # noqa: BLE001 - keep trying, whatever went wrong
                reason = str(exc) if isinstance(exc, UpstreamFailure) else type(exc).__name__
                if reason != self._last_error:
                    log.warning("%s: cannot load the Redis Cluster slot map (%s); retrying",
                                self._label, reason)
                self._last_error = reason
                self._attempt_finished()
                await asyncio.sleep(random.uniform(backoff / 2, backoff))
                backoff = min(backoff * 2, _REFRESH_BACKOFF_MAX)
                continue
            self._attempt_finished()
            if not self._refresh_again:
                return

    def _attempt_finished(self) -> None:
        self._attempted.set()
        self._attempted = asyncio.Event()

    async def _load_map(self) -> None:
        candidates = list(self.primaries)
        for host, port in self._seeds:
            node = self.node(host, port)
            if node not in candidates:
                candidates.append(node)
        reason = "no node answered"
        for node in candidates:
            conn = node.conns[0] or node.make(0)
            try:
                reply = await conn.call(_CLUSTER_SLOTS)
            except UpstreamFailure as exc:
                reason = str(exc)
                continue
            if type(reply) is ReplyError:
                reason = f"CLUSTER SLOTS failed on {conn.label}: {reply}"
                continue
            try:
                ranges = _parse_slots(reply, node.host)
            except (TypeError, ValueError, IndexError):
                reason = f"CLUSTER SLOTS on {conn.label} sent an unexpected reply"
                continue
            self._apply(ranges)
            return
        raise UpstreamFailure(reason)

    def _apply(self, ranges: list[tuple[int, int, str, int]]) -> None:
        slots: list[_Node | None] = [None] * SLOTS
        primaries: list[_Node] = []
        for start, end, host, port in ranges:
            node = self.node(host, port)
            if node not in primaries:
                primaries.append(node)
            slots[start:end + 1] = [node] * (end - start + 1)
        before = len(self.primaries), self.covered
        self.slots[:] = slots  # in place: routes hold this list
        self.primaries = primaries
        self.covered = sum(1 for node in slots if node is not None)
        self.refreshes += 1
        self._last_error = "the cluster serves no slots"
        if (len(primaries), self.covered) != before:
            log.info("%s: Redis Cluster slot map: %d primaries, %d of %d slots served",
                     self._label, len(primaries), self.covered, SLOTS)


def _parse_slots(reply, default_host: str) -> list[tuple[int, int, str, int]]:
    """CLUSTER SLOTS: [[start, end, [host, port, id, ...], replica...], ...].  An empty
    or unknown ("?") host means the node that answered."""
    ranges = []
    for entry in reply:
        start, end, primary = int(entry[0]), int(entry[1]), entry[2]
        host = primary[0]
        host = host.decode() if isinstance(host, bytes) and host not in (b"", b"?") else ""
        ranges.append((start, end, host or default_host, int(primary[1])))
        if not 0 <= start <= end < SLOTS:
            raise ValueError("slot out of range")
    return ranges
