"""`cachecloak rekey`: re-encrypt the values still under an old encryption key.

After a rotation (a new `encryption.keys.current`, the previous key moved to `old`),
values written before it stay under the old key until they are rewritten or expire.
This command walks one cache's keys and rewrites every such value under the current
key, so the operator learns when an old key can be removed from the configuration.

How:

* Keys are found with `SCAN <cursor> MATCH <prefix>* COUNT n` on the primary (standalone
  and Sentinel: through the same backend, TLS, ACL and failover handling as `cachecloak
  run`), on every primary of a Redis Cluster one after the other.  Per batch, `TYPE` and
  the values (`GET`, `HGETALL`, `LRANGE 0 -1`) are read in one pipeline each, and every
  envelope is classified by its key identifier and opened (so tampered values are
  counted too).
* A key holding a value under an old key is then rewritten atomically, on a dedicated
  connection: `WATCH key`, read it again, re-seal each value under an old key with the
  current key and the same associated data (logical db, stored name, and for hash
  values the stored field name), and write in `MULTI`/`EXEC`: strings with
  `SET ... KEEPTTL`, hash values with `HSET` (the field stays), list elements with `LSET`
  at their index.  None of these touches the TTL.  If another client changed the key in
  between, EXEC fails and the key is read again (bounded), so a concurrent write is
  never overwritten with an older value.
* Set and sorted-set members are AES-SIV under the hashing key (proxy.crypto.members):
  an encryption-key rotation does not concern them.

Progress is saved after every SCAN batch (cursor per node, counts) to a state file, so
an interrupted run (Ctrl-C, SIGTERM) continues with `--resume`.  SCAN guarantees that a
key present for the whole scan is returned at least once; it may return a key twice, and
a cursor is only roughly valid after a failover, so counts are approximate for a scan
that ran during writes or was resumed.  A run that finds nothing under old keys is the
proof: run it again when in doubt.

Exit status: 0 the scan completed and no value remains under an old key (nothing was
skipped); 1 Redis could not be used (the run stopped; resume later); 2 configuration or
usage error; 3 the scan completed but values remain under an old key (a dry run that
found some, keys that kept changing or were migrating); 130 (SIGINT) or 143 (SIGTERM)
interrupted.

Never prints, logs or saves a key name (stored or not), a value, or key material: only
counts, key identifiers (public: 4 bytes derived from the key, shown in INFO too),
addresses, the prefix and Redis error codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from hiredis import ReplyError

from proxy.backends.redis.connection import (
    IGNORE_REPLY,
    UpstreamConnection,
    UpstreamFailure,
    _FutureWaiter,
    _hostport,
    glob_escape,
)
from proxy.crypto import DecryptError, ValueSealer

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REMAINING = 3
EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143

DEFAULT_COUNT = 200  # SCAN COUNT: a hint; Redis's own default is 10, redis-cli --scan's 10
DEFAULT_PARALLEL = 4  # keys rewritten at once, each on its own dedicated connection
DEFAULT_PROGRESS_INTERVAL = 10.0  # seconds between progress lines when not on a terminal
_TTY_REFRESH = 0.1  # at most ten redraws of the progress line a second
# Optimistic retries of one key that other clients keep changing (as the proxy's own
# read-modify-write: proxy.commands.transactions.MAX_ATTEMPTS).
MAX_ATTEMPTS = 32
# A connection that fails (failover, restart) is retried with these pauses before the run
# stops; a Sentinel or standalone failover is usually over well within them.
_RETRY_PAUSES = (0.1, 0.3, 1.0, 2.0, 4.0)
STATE_VERSION = 1

_READS = {
    "string": lambda name: [b"GET", name],
    "hash": lambda name: [b"HGETALL", name],
    "list": lambda name: [b"LRANGE", name, b"0", b"-1"],
}
_ACL_HINT = ("allow the ACL user SCAN, TYPE, GET, HGETALL, LRANGE, WATCH, UNWATCH, MULTI, "
             "EXEC, SET, HSET and LSET on the cache's keys")


class RekeyFailure(Exception):
    """The run cannot go on (Redis unusable, a command refused).  One safe line."""


class RekeyUsage(Exception):
    """The command line or the state file does not fit.  One safe line; exit 2."""


def _code(reply: ReplyError) -> str:
    """The error code of a Redis error (WRONGPASS, NOPERM, MOVED ...): never its text,
    which may quote arguments."""
    return str(reply).split(" ", 1)[0] or "ERR"


# -- counting ----------------------------------------------------------------------------

@dataclass
class Tally:
    """What a scan found.  Key identifiers are hex strings (public, see proxy.crypto.keys)."""

    keys: int = 0
    types: Counter = field(default_factory=Counter)
    current: int = 0  # values under the current key (re-encrypted ones included)
    reencrypted: int = 0
    remaining: Counter = field(default_factory=Counter)  # old key id -> values still under it
    undecryptable: Counter = field(default_factory=Counter)  # reason -> values
    unknown_ids: Counter = field(default_factory=Counter)  # key id not configured -> values
    skipped: Counter = field(default_factory=Counter)  # reason -> keys left as they were
    foreign: int = 0  # names under the prefix that cachecloak does not make

    _COUNTERS = ("types", "remaining", "undecryptable", "unknown_ids", "skipped")
    _INTS = ("keys", "current", "reencrypted", "foreign")

    def merge(self, other: Tally) -> None:
        for name in self._INTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in self._COUNTERS:
            getattr(self, name).update(getattr(other, name))

    def rewritten(self) -> None:
        """The key's values under old keys were re-sealed and EXEC applied them."""
        moved = sum(self.remaining.values())
        self.reencrypted += moved
        self.current += moved
        self.remaining.clear()

    def to_json(self) -> dict:
        data: dict = {name: getattr(self, name) for name in self._INTS}
        for name in self._COUNTERS:
            data[name] = dict(getattr(self, name))
        return data

    @classmethod
    def from_json(cls, data: dict) -> Tally:
        tally = cls()
        for name in cls._INTS:
            setattr(tally, name, int(data.get(name, 0)))
        for name in cls._COUNTERS:
            getattr(tally, name).update({str(k): int(v)
                                         for k, v in dict(data.get(name, {})).items()})
        return tally


# -- the state file ----------------------------------------------------------------------

class State:
    """Where the scan is (a SCAN cursor per node, "done" when finished) and what it found.

    Written after every batch (atomically: a temporary file renamed over it, mode 0600)
    and removed when the scan completes.  Holds counts, cursors, addresses and public
    key identifiers: never a key name or a value."""

    def __init__(self, path: Path | None, identity: dict):
        self.path = path
        self.identity = identity
        self.cursors: dict[str, str] = {}
        self.tally = Tally()
        self.resumed = False
        self._warned = False

    @classmethod
    def resume(cls, path: Path, identity: dict) -> State:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise RekeyUsage(f"--resume: no state file at {path} (a completed run removes "
                             "it); run without --resume to start a scan") from None
        except (OSError, ValueError) as exc:
            raise RekeyUsage(f"--resume: cannot read the state file {path} "
                             f"({type(exc).__name__}); remove it and run without --resume"
                             ) from None
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise RekeyUsage(f"--resume: {path} is not a state file of this version of "
                             "cachecloak rekey; remove it and run without --resume")
        saved = data.get("identity", {})
        for name, what in (("cache", "another cache"), ("prefix", "another key prefix"),
                           ("current_key_id", "another current encryption key"),
                           ("dry_run", "a run with another --dry-run setting"),
                           ("cluster", "another Redis topology")):
            if saved.get(name) != identity[name]:
                raise RekeyUsage(f"--resume: the state file {path} belongs to {what}; "
                                 "run without --resume to start over (or give the matching "
                                 "options)")
        state = cls(path, identity)
        state.cursors = {str(k): str(v) for k, v in dict(data.get("cursors", {})).items()}
        state.tally = Tally.from_json(dict(data.get("tally", {})))
        state.resumed = True
        return state

    def save(self, err: TextIO) -> None:
        if self.path is None:
            return
        data = {"version": STATE_VERSION, "identity": self.identity,
                "cursors": self.cursors, "tally": self.tally.to_json(),
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                print(f"cachecloak rekey: cannot write the state file {self.path} "
                      f"({exc.strerror or type(exc).__name__}); an interrupted run will have "
                      "to start over; pass --state PATH to a writable place", file=err)

    def remove(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()


# -- progress ----------------------------------------------------------------------------

def scan_fraction(cursor: int) -> float:
    """How much of a (non-cluster) keyspace a SCAN cursor has covered, about.

    Redis advances the cursor by incrementing its bit-reversed value (dictScan), so the
    reversed cursor over 2^64 is the share of hash-table buckets already visited,
    whatever the table size."""
    return int(f"{cursor:064b}"[::-1], 2) / 2 ** 64


class Progress:
    """A line redrawn in place on a terminal; a line every `interval` seconds otherwise."""

    def __init__(self, stream: TextIO, label: str, tty: bool, interval: float):
        self.stream = stream
        self.label = label
        self.tty = tty
        self.interval = _TTY_REFRESH if tty else interval
        self.started = time.monotonic()
        self._last = self.started
        self._drawn = False
        self._keys_at_start = 0

    def start(self, keys_so_far: int) -> None:
        self._keys_at_start = keys_so_far

    def update(self, tally: Tally, where: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        elapsed = max(now - self.started, 1e-6)
        rate = (tally.keys - self._keys_at_start) / elapsed
        text = (f"{self.label}: {tally.keys:,} keys scanned, {tally.reencrypted:,} values "
                f"re-encrypted, {where}, {rate:,.0f} keys/s")
        if self.tty:
            self.stream.write(f"\r\x1b[K{text}")
            self._drawn = True
        else:
            self.stream.write(f"cachecloak rekey: {text}\n")
        self.stream.flush()

    def clear(self) -> None:
        """End the in-place line before other output."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


# -- Redis I/O ---------------------------------------------------------------------------

async def _pipeline(conn: UpstreamConnection, commands: list[list[bytes]]) -> list:
    """Send `commands` in one write; their replies in order (Redis errors as ReplyError).
    Raises UpstreamFailure when the connection failed (after every reply settled)."""
    loop = asyncio.get_running_loop()
    futures = []
    for args in commands:
        future = loop.create_future()
        conn.submit(args, _FutureWaiter(future))
        futures.append(future)
    conn.flush()
    results = await asyncio.gather(*futures, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


class _Conns:
    """One worker's dedicated connections: one to the primary, or one per cluster node.

    Dedicated because WATCH belongs to a connection: no other command may share it."""

    def __init__(self, backend, cluster: bool):
        self.backend = backend
        self.cluster = cluster
        self.single: UpstreamConnection | None = None
        self.by_node: dict[tuple[str, int], UpstreamConnection] = {}

    def for_key(self, name: bytes) -> UpstreamConnection | None:
        if not self.cluster:
            if self.single is None:
                self.single = self.backend.dedicated(None)
            return self.single
        from proxy.backends.redis.cluster import key_slot

        node = self.backend.slots[key_slot(name)]
        if node is None:
            return None
        conn = self.by_node.get((node.host, node.port))
        if conn is None:
            conn = self.by_node[(node.host, node.port)] = UpstreamConnection(
                node.settings, asyncio.get_running_loop())
        return conn

    def close(self) -> None:
        for conn in [self.single, *self.by_node.values()]:
            if conn is not None:
                conn.close()


# -- the sweep ---------------------------------------------------------------------------

@dataclass
class Options:
    dry_run: bool = False
    count: int = DEFAULT_COUNT
    rate: float | None = None  # keys per second
    parallel: int = DEFAULT_PARALLEL


class Rekey:
    """One cache's sweep.  `run()` returns True when the scan completed, False when it
    was interrupted (state saved); raises RekeyFailure when Redis cannot be used."""

    def __init__(self, cache, backend, options: Options, state: State, progress: Progress,
                 err: TextIO, prefix_enabled: bool = True):
        from proxy.backends.redis.cluster import ClusterBackend

        self.cache = cache
        self.hasher = cache.hasher
        self.sealer: ValueSealer = cache.sealer
        self.current_id = self.sealer.key_id
        self.backend = backend
        self.cluster = isinstance(backend, ClusterBackend)
        self.options = options
        self.state = state
        self.progress = progress
        self.err = err
        self.stop = asyncio.Event()
        prefix = self.hasher.prefix
        self.pattern = glob_escape(prefix) + b"*"
        self.prefix = prefix
        self.databases = cache.databases
        self.prefix_enabled = prefix_enabled
        self.scan_count = options.count
        if options.rate:
            # Small batches keep a rate-limited sweep smooth instead of bursty.
            self.scan_count = max(1, min(options.count, int(options.rate // 10) or 1))
        self._paced_keys = 0
        self._paced_since = 0.0
        self.workers = [_Conns(backend, self.cluster) for _ in range(options.parallel)]
        self._failure: RekeyFailure | None = None

    # -- driving ------------------------------------------------------------------------

    async def run(self) -> bool:
        self._paced_since = time.monotonic()
        try:
            if self.cluster:
                nodes = await self.backend.primaries_now()
                names = [_hostport(n.host, n.port) for n in nodes]
                gone = [n for n in self.state.cursors if n not in names]
                if gone:
                    print(f"cachecloak rekey: the state file names nodes that are no longer "
                          f"primaries ({', '.join(sorted(gone))}); keys they held are found "
                          "only where their new owner is still to be scanned: run once more "
                          "without --resume afterwards to be sure", file=self.err)
                for index, (node, name) in enumerate(zip(nodes, names, strict=True)):
                    conn = UpstreamConnection(node.settings, asyncio.get_running_loop())
                    try:
                        if not await self._scan_node(conn, name, f"node {index + 1}/"
                                                     f"{len(nodes)}"):
                            return False
                    finally:
                        conn.close()
            else:
                conn = self.backend.dedicated(None)
                try:
                    if not await self._scan_node(conn, "primary", None):
                        return False
                finally:
                    conn.close()
            return True
        finally:
            for worker in self.workers:
                worker.close()

    async def _scan_node(self, conn: UpstreamConnection, node: str, where: str | None) -> bool:
        cursors = self.state.cursors
        cursor = cursors.get(node, "0")
        if cursor == "done":
            return True
        while True:
            if self.stop.is_set():
                return False
            reply = await self._retrying(conn, [[b"SCAN", cursor.encode(), b"MATCH",
                                                 self.pattern, b"COUNT",
                                                 str(self.scan_count).encode()]], "SCAN")
            reply = reply[0]
            if isinstance(reply, ReplyError):
                raise RekeyFailure(f"Redis refused SCAN ({_code(reply)}) on {conn.label}; "
                                   f"{_ACL_HINT}")
            next_cursor, names = reply[0].decode(), reply[1]
            if names:
                await self._pace(len(names))
                if self.stop.is_set():
                    return False
                if not await self._batch(conn, names):
                    return False
            cursors[node] = "done" if next_cursor == "0" else next_cursor
            self.state.save(self.err)
            text = where or f"~{scan_fraction(int(next_cursor)) * 100:.0f}%"
            if next_cursor == "0":
                text = where or "100%"
            self.progress.update(self.state.tally, text)
            if next_cursor == "0":
                return True
            cursor = next_cursor

    async def _pace(self, keys: int) -> None:
        """--rate: wait until this batch fits in the budget (interruptible)."""
        rate = self.options.rate
        if not rate:
            return
        due = self._paced_since + self._paced_keys / rate
        self._paced_keys += keys
        delay = due - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)

    async def _retrying(self, conn: UpstreamConnection, commands: list[list[bytes]],
                        what: str) -> list:
        """A pipeline of reads, retried (same commands) while the connection recovers."""
        for pause in (*_RETRY_PAUSES, None):
            try:
                return await _pipeline(conn, commands)
            except UpstreamFailure as exc:
                if pause is None or self.stop.is_set():
                    raise RekeyFailure(f"{what} failed: {exc}") from None
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    # -- one batch ----------------------------------------------------------------------

    def _db_of(self, name: bytes) -> int | None:
        """The logical database a stored name belongs to, None if cachecloak did not make
        the name (it still matched the prefix)."""
        if not self.prefix_enabled:
            return 0  # disablePrefix: one logical database, every key is the cache's
        rest = name[len(self.prefix):]
        colon = rest.find(b":")
        digits = rest[:colon]
        if colon <= 0 or not digits.isdigit():
            return None
        db = int(digits)
        if db >= self.databases or self.hasher.namespace(db) != name[:len(self.prefix) + colon + 1]:
            return None
        return db

    async def _batch(self, conn: UpstreamConnection, names: list[bytes]) -> bool:
        """Classify a SCAN batch; rewrite what is under old keys.  False if interrupted
        before every key was done (the batch then runs again on resume)."""
        batch = Tally()
        ours: list[tuple[int, bytes]] = []
        for name in names:
            db = self._db_of(name)
            if db is None:
                batch.keys += 1
                batch.foreign += 1
            else:
                ours.append((db, name))
        types = await self._retrying(conn, [[b"TYPE", name] for _, name in ours], "TYPE")
        readable: list[tuple[int, bytes, str]] = []
        todo: deque[tuple[int, bytes, str | None]] = deque()
        for (db, name), kind in zip(ours, types, strict=True):
            if isinstance(kind, ReplyError):
                if self.cluster and _code(kind) in ("MOVED", "ASK", "TRYAGAIN"):
                    todo.append((db, name, None))  # moving: the worker follows it
                    continue
                raise RekeyFailure(f"Redis refused TYPE ({_code(kind)}) on {conn.label}; "
                                   f"{_ACL_HINT}")
            kind = kind.decode()
            if kind in _READS:
                readable.append((db, name, kind))
            else:
                batch.keys += 1
                batch.types[_type_label(kind)] += 1
        contents = await self._retrying(
            conn, [_READS[kind](name) for _, name, kind in readable], "read")
        for (db, name, kind), content in zip(readable, contents, strict=True):
            if isinstance(content, ReplyError):
                if _code(content) == "WRONGTYPE" or (self.cluster and _code(content) in (
                        "MOVED", "ASK", "TRYAGAIN")):
                    todo.append((db, name, None))  # changed meanwhile: look again
                    continue
                raise RekeyFailure(f"Redis refused a read ({_code(content)}) on "
                                   f"{conn.label}; {_ACL_HINT}")
            key = Tally()
            self._examine(key, db, name, kind, content)
            if key.remaining and not self.options.dry_run:
                todo.append((db, name, kind))  # counted again under WATCH
                continue
            key.keys = 1
            key.types[kind] += 1
            batch.merge(key)
        if todo:
            # A dry run gets here only with keys that moved or changed type: the worker
            # path reads them once more, without WATCH and without writing.
            done = await self._rewrite_all(todo, batch)
            if not done:
                # Interrupted: keep only the work done (re-encryptions); the batch is
                # scanned again on resume and counts its keys then.
                self.state.tally.reencrypted += batch.reencrypted
                return False
        self.state.tally.merge(batch)
        return True

    async def _rewrite_all(self, todo: deque, batch: Tally) -> bool:
        async def worker(conns: _Conns) -> None:
            while todo and not self.stop.is_set() and self._failure is None:
                db, name, kind = todo.popleft()
                try:
                    batch.merge(await self.rekey_key(conns, db, name, kind))
                except RekeyFailure as exc:
                    self._failure = exc
                    self.stop.set()
        await asyncio.gather(*(worker(conns) for conns in self.workers[:len(todo)]))
        if self._failure is not None:
            self.state.tally.reencrypted += batch.reencrypted
            raise self._failure
        return not todo

    def _examine(self, tally: Tally, db: int, name: bytes, kind: str, content,
                 reseal: bool = False) -> list[list[bytes]]:
        """Count the envelopes of one key; with `reseal`, the commands that rewrite those
        under an old key (none if there are none)."""
        value = self._value
        if kind == "string":
            new = value(tally, db, name, content, None, reseal)
            return [[b"SET", name, new, b"KEEPTTL"]] if new is not None else []
        if kind == "hash":
            hset: list[bytes] = [b"HSET", name]
            for i in range(0, len(content) - 1, 2):
                stored_field = content[i]
                new = value(tally, db, name, content[i + 1], stored_field, reseal)
                if new is not None:
                    hset += [stored_field, new]
            return [hset] if len(hset) > 2 else []
        writes = []
        for index, blob in enumerate(content):
            new = value(tally, db, name, blob, None, reseal)
            if new is not None:
                writes.append([b"LSET", name, str(index).encode(), new])
        return writes

    def _value(self, tally: Tally, db: int, name: bytes, blob, context: bytes | None,
               reseal: bool) -> bytes | None:
        """Count one envelope; its replacement under the current key when it is under an
        old one and `reseal` (else None).  The associated data is rebuilt from what
        Redis holds: db, stored name, stored field name."""
        if not isinstance(blob, bytes):
            tally.undecryptable["not-an-envelope"] += 1
            return None
        key_id = ValueSealer.key_id_of(blob)
        try:
            plain = self.sealer.open(db, name, blob, context)
        except DecryptError as exc:
            tally.undecryptable[exc.reason] += 1
            if exc.reason == "unknown-key-id" and key_id is not None:
                tally.unknown_ids[key_id.hex()] += 1
            return None
        if key_id == self.current_id:
            tally.current += 1
            return None
        tally.remaining[key_id.hex()] += 1
        return self.sealer.seal(db, name, plain, context) if reseal else None

    async def before_write(self, db: int, name: bytes) -> None:
        """Called between the watched read and MULTI/EXEC (a seam for tests that prove
        a concurrent write wins over the rewrite)."""
        return None

    async def rekey_key(self, conns: _Conns, db: int, name: bytes,
                        kind: str | None) -> Tally:
        """Rewrite one key's values under old keys atomically; what it holds afterwards.

        WATCH, TYPE and the read go in one pipeline; the rewrite in MULTI/EXEC.  A failed
        EXEC (the key changed) starts again; a dry run only reads."""
        failures = 0
        attempts = 0
        dry = self.options.dry_run
        while True:
            tally = Tally(keys=1)
            conn = conns.for_key(name)
            if conn is None:
                await self._refresh_slots()
                conn = conns.for_key(name)
                if conn is None:
                    raise RekeyFailure("a Redis Cluster slot has no primary "
                                       "(CLUSTERDOWN); run again with --resume once the "
                                       "cluster is whole")
            commands = [] if dry else [[b"WATCH", name]]
            commands.append([b"TYPE", name])
            if kind in _READS:
                commands.append(_READS[kind](name))
            try:
                replies = await _pipeline(conn, commands)
            except UpstreamFailure as exc:
                failures = await self._after_failure(failures, exc)
                continue
            watched = not dry
            if not dry and isinstance(replies[0], ReplyError):
                code = _code(replies[0])
                if self.cluster and code == "MOVED" and attempts < MAX_ATTEMPTS:
                    attempts += 1
                    await self._refresh_slots()
                    continue
                if self.cluster and code in ("ASK", "TRYAGAIN", "MOVED"):
                    tally.skipped["slot migrating"] += 1
                    return tally
                raise RekeyFailure(f"Redis refused WATCH ({code}); {_ACL_HINT}")
            replies = replies[0 if dry else 1:]
            actual = replies[0]
            if isinstance(actual, ReplyError):
                if watched:
                    self._unwatch(conn)
                if self.cluster and _code(actual) in ("MOVED", "ASK", "TRYAGAIN"):
                    if attempts < MAX_ATTEMPTS and _code(actual) == "MOVED":
                        attempts += 1
                        await self._refresh_slots()
                        continue
                    tally.skipped["slot migrating"] += 1
                    return tally
                raise RekeyFailure(f"Redis refused TYPE ({_code(actual)}); {_ACL_HINT}")
            actual = actual.decode()
            if actual != kind:
                if watched:
                    self._unwatch(conn)
                if actual in _READS and attempts < MAX_ATTEMPTS:
                    kind = actual
                    attempts += 1
                    continue
                tally.types[_type_label(actual)] += 1
                return tally
            content = replies[1]
            if isinstance(content, ReplyError):
                if watched:
                    self._unwatch(conn)
                raise RekeyFailure(f"Redis refused a read ({_code(content)}); {_ACL_HINT}")
            tally.types[kind] += 1
            writes = self._examine(tally, db, name, kind, content, reseal=not dry)
            if not writes:
                if watched:
                    self._unwatch(conn)
                return tally
            await self.before_write(db, name)
            try:
                results = await _pipeline(conn, [[b"MULTI"], *writes, [b"EXEC"]])
            except UpstreamFailure as exc:
                # Applied or not, the next attempt reads what is there and counts it.
                failures = await self._after_failure(failures, exc)
                continue
            outcome = results[-1]
            if outcome is None:  # the key changed after our read: read it again
                attempts += 1
                if attempts >= MAX_ATTEMPTS:
                    tally.skipped["kept changing"] += 1
                    return tally
                continue
            if isinstance(outcome, ReplyError):
                raise RekeyFailure(f"Redis refused the rewrite ({_code(outcome)}); "
                                   f"{_write_hint(_code(outcome))}")
            for item in outcome:
                if isinstance(item, ReplyError):
                    raise RekeyFailure(f"Redis refused the rewrite ({_code(item)}); "
                                       f"{_write_hint(_code(item))}")
            tally.rewritten()
            return tally

    def _unwatch(self, conn: UpstreamConnection) -> None:
        # In order on the connection before the next key's WATCH; no need to wait.
        conn.submit([b"UNWATCH"], IGNORE_REPLY)
        conn.flush()

    async def _after_failure(self, failures: int, exc: UpstreamFailure) -> int:
        if failures >= len(_RETRY_PAUSES) or self.stop.is_set():
            raise RekeyFailure(str(exc))
        await asyncio.sleep(_RETRY_PAUSES[failures])
        return failures + 1

    async def _refresh_slots(self) -> None:
        task = self.backend.schedule_refresh()
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), 10.0)


def _type_label(kind: str) -> str:
    return "deleted meanwhile" if kind == "none" else kind


def _write_hint(code: str) -> str:
    if code == "NOPERM":
        return _ACL_HINT
    if code == "OOM":
        return "Redis is out of memory; check maxmemory and the eviction policy"
    if code == "READONLY":
        return "the server became a replica; run again with --resume"
    return "check the Redis server"


# -- the command -------------------------------------------------------------------------

def _pick_cache(config, name: str | None):
    """The cache to rekey, or (None, message) when there is nothing to do."""
    from proxy.config import LOCAL_DEFAULT

    if name is not None:
        cfg = config.caches.get(name)
        if cfg is None:
            known = ", ".join(n for n in config.caches if n != LOCAL_DEFAULT) or "none"
            raise RekeyUsage(f'--cache: no cache named "{name}" in the configuration '
                             f"(caches: {known})")
        return cfg
    redis_caches = [c for c in config.caches.values() if c.type == "redis"]
    if len(redis_caches) > 1:
        names = ", ".join(c.name for c in redis_caches)
        raise RekeyUsage(f"the configuration has several redis caches ({names}); choose one "
                         "with --cache NAME")
    if not redis_caches:
        return None
    return redis_caches[0]


def _summary(cfg, tally: Tally, sealer: ValueSealer, *, complete: bool, dry_run: bool,
             resumed: bool, elapsed: float) -> list[str]:
    current = sealer.key_id.hex()
    old_ids = [k.hex() for k in sealer.key_ids if k != sealer.key_id]
    state = "scan complete" if complete else "interrupted (counts so far)"
    if dry_run:
        state += ", dry run: nothing was written"
    if resumed:
        state += ", counts include the earlier part of this resumed scan"
    lines = [f'cache "{cfg.name}": {state}, {elapsed:.1f}s']
    kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(tally.types.items()))
    if tally.foreign:
        kinds += (", " if kinds else "") + f"not named by cachecloak {tally.foreign:,}"
    lines.append(f"keys scanned: {tally.keys:,}" + (f" ({kinds})" if kinds else ""))
    if "set" in tally.types or "zset" in tally.types:
        lines.append("  (set and sorted-set members use the hashing key: a rotation of the "
                     "encryption key does not concern them)")
    verb = "would be re-encrypted" if dry_run else "re-encrypted"
    changed = sum(tally.remaining.values()) if dry_run else tally.reencrypted
    lines.append(f"values {verb}: {changed:,}")
    lines.append(f"values under the current key {current}: {tally.current:,}")
    for key_id in old_ids:
        left = tally.remaining.get(key_id, 0)
        if not complete:
            note = ""
        elif left == 0:
            note = ("; no value needs this key any more: it can be removed from "
                    "encryption.keys.old")
        elif dry_run:
            note = "; run without --dry-run to re-encrypt them"
        else:
            note = "; run again to re-encrypt them"
        lines.append(f"values remaining under old key {key_id}: {left:,}{note}")
    for key_id, left in sorted(tally.remaining.items()):
        if key_id not in old_ids:  # an old key of an earlier part of a resumed scan
            lines.append(f"values remaining under old key {key_id}: {left:,}")
    bad = sum(tally.undecryptable.values())
    if bad:
        reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(tally.undecryptable.items()))
        lines.append(f"values that do not decrypt (left unchanged; they read as misses): "
                     f"{bad:,} ({reasons})")
        if tally.unknown_ids:
            ids = ", ".join(f"{k} {n:,}" for k, n in tally.unknown_ids.most_common(10))
            lines.append(f"  under key ids this configuration does not have: {ids}")
    skipped = sum(tally.skipped.values())
    if skipped:
        reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(tally.skipped.items()))
        lines.append(f"keys skipped (left as they were; run again): {skipped:,} ({reasons})")
    return lines


async def _start_backend(cfg):
    from proxy.backends.redis import make_redis_backend
    from proxy.backends.redis.topology import AutoBackend

    backend = make_redis_backend(cfg)
    await backend.start()
    if isinstance(backend, AutoBackend):
        deadline = time.monotonic() + cfg.redis.connect_timeout + cfg.redis.command_timeout
        while backend.chosen is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if backend.chosen is None:
            reason = backend.unavailable()
            await backend.close()
            raise RekeyFailure(reason)
        return backend, backend.chosen
    return backend, backend


async def _main(cfg, args, out: TextIO, err: TextIO) -> int:
    from proxy.cache import Cache

    cache = Cache.from_config(cfg, backend=None)
    sealer = cache.sealer
    options = Options(dry_run=args.dry_run, count=args.count, rate=args.rate,
                      parallel=args.parallel)
    identity = {"cache": cfg.name, "prefix": cache.hasher.prefix.decode("latin-1"),
                "current_key_id": sealer.key_id.hex(), "dry_run": bool(args.dry_run),
                "cluster": None}
    state_path = Path(args.state) if args.state else Path(f"cachecloak-rekey-{cfg.name}.json")
    loop = asyncio.get_running_loop()
    outer, backend = await _start_backend(cfg)
    try:
        from proxy.backends.redis.cluster import ClusterBackend

        identity["cluster"] = isinstance(backend, ClusterBackend)
        if args.resume:
            state = State.resume(state_path, identity)
        else:
            if state_path.exists():
                print(f"cachecloak rekey: starting a new scan; the state file {state_path} "
                      "of an earlier run is replaced (use --resume to continue that one)",
                      file=err)
            state = State(state_path, identity)
        label = f'rekey cache "{cfg.name}"'
        tty = err.isatty()
        progress = Progress(err, label, tty, args.progress_interval)
        progress.start(state.tally.keys)
        old = [k.hex() for k in sealer.key_ids if k != sealer.key_id]
        what = "counting values per key (dry run)" if args.dry_run else "re-encrypting"
        print(f"cachecloak {label} ({backend.description}, keys {identity['prefix']!s}*): "
              f"{what}; current key {sealer.key_id.hex()}, old keys "
              f"{', '.join(old) if old else 'none'}"
              + (", resuming" if state.resumed else ""), file=err, flush=True)
        if not old:
            print("cachecloak rekey: encryption.keys.old is empty, so nothing can be "
                  "re-encrypted; counting values per key only", file=err, flush=True)
        rekey = Rekey(cache, backend, options, state, progress, err, cfg.prefix_enabled)
        received: list[int] = []
        main_task = asyncio.current_task()

        def on_signal(signum: int) -> None:
            received.append(signum)
            if len(received) == 1:
                rekey.stop.set()
                progress.clear()
                print("cachecloak rekey: stopping after the keys in progress (press Ctrl-C "
                      "again to stop at once)", file=err, flush=True)
            elif main_task is not None:
                main_task.cancel()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            complete = await rekey.run()
        except asyncio.CancelledError:
            complete = False
        except RekeyFailure as exc:
            progress.clear()
            state.save(err)
            print(f"cachecloak rekey: stopped: {exc}", file=err)
            print(f"cachecloak rekey: progress is saved in {state_path}; run the same "
                  "command with --resume to continue", file=err, flush=True)
            return EXIT_FAILED
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        progress.clear()
        elapsed = time.monotonic() - progress.started
        if complete:
            state.remove()
        else:
            state.save(err)
        for line in _summary(cfg, state.tally, sealer, complete=complete,
                             dry_run=args.dry_run, resumed=state.resumed, elapsed=elapsed):
            print(line, file=out)
        out.flush()
        if not complete:
            where = ", ".join(f"{node} at cursor {cursor}" for node, cursor
                              in state.cursors.items()) or "before the first batch"
            print(f"cachecloak rekey: interrupted: stopped at {where}; progress is saved in "
                  f"{state_path}; run the same command with --resume to continue",
                  file=err, flush=True)
            return 128 + (received[0] if received else signal.SIGINT)
        tally = state.tally
        if sum(tally.remaining.values()) or sum(tally.skipped.values()):
            return EXIT_REMAINING
        return EXIT_DONE
    finally:
        await outer.close()


def add_arguments(parser) -> None:
    """The options of `cachecloak rekey` (--config and --secret-provider come from cli)."""
    parser.add_argument("--cache", metavar="NAME",
                        help="the cache to rekey (needed when the configuration has several "
                             "redis caches)")
    parser.add_argument("--dry-run", action="store_true",
                        help="only count values per key id; write nothing")
    parser.add_argument("--count", "--batch", type=int, default=DEFAULT_COUNT, metavar="N",
                        help=f"SCAN COUNT: keys asked for per batch (default {DEFAULT_COUNT})")
    parser.add_argument("--rate", type=float, metavar="KEYS_PER_SECOND",
                        help="at most this many keys a second (default: no limit)")
    parser.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL, metavar="N",
                        help="keys rewritten at once, each on its own connection "
                             f"(default {DEFAULT_PARALLEL})")
    parser.add_argument("--state", metavar="FILE",
                        help="where progress is saved after every batch (default "
                             "cachecloak-rekey-<cache>.json in the current directory)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted scan saved in the state file")
    parser.add_argument("--progress-interval", type=float, default=DEFAULT_PROGRESS_INTERVAL,
                        metavar="SECONDS",
                        help="seconds between progress lines when stderr is not a terminal "
                             f"(default {DEFAULT_PROGRESS_INTERVAL:g})")


def cmd_rekey(args) -> int:
    """The `cachecloak rekey` entry point (arguments from proxy.cli)."""
    from proxy.config import ConfigError, load_config
    from proxy.logs import setup_logging

    out, err = sys.stdout, sys.stderr
    # The backends log connection trouble (addresses and reasons only) as warnings.
    setup_logging("warning", "text")
    try:
        config = load_config(args.config, secret_provider=args.secret_provider)
    except ConfigError as exc:
        print(f"cachecloak: configuration error in {args.config or 'the built-in default'}:",
              file=err)
        for line in str(exc).splitlines():
            print(f"  {line}", file=err)
        return EXIT_USAGE
    if args.count < 1 or args.parallel < 1 or args.parallel > 64 or (
            args.rate is not None and args.rate <= 0):
        print("cachecloak rekey: --count must be at least 1, --parallel 1 to 64, and --rate "
              "above 0", file=err)
        return EXIT_USAGE
    try:
        cfg = _pick_cache(config, args.cache)
    except RekeyUsage as exc:
        print(f"cachecloak rekey: {exc}", file=err)
        return EXIT_USAGE
    if cfg is None or cfg.type != "redis":
        which = f'cache "{cfg.name}" is' if cfg is not None else "the configuration has no"
        kind = " type local" if cfg is not None else " type: redis cache; its caches are"
        print(f"cachecloak rekey: {which}{kind} in-process memory: nothing is stored outside "
              "a running cachecloak, so there is nothing to rekey (its values are gone at "
              "the next restart, which also applies a new key)", file=err)
        return EXIT_DONE
    if not cfg.encryption_enabled:
        print(f'cachecloak rekey: cache "{cfg.name}" has encryption.disabled: true; values '
              "are stored as they are, so there is nothing to re-encrypt", file=err)
        return EXIT_DONE
    try:
        return asyncio.run(_main(cfg, args, out, err))
    except RekeyUsage as exc:
        print(f"cachecloak rekey: {exc}", file=err)
        return EXIT_USAGE
    except (RekeyFailure, UpstreamFailure) as exc:
        print(f"cachecloak rekey: {exc}", file=err)
        return EXIT_FAILED
    except KeyboardInterrupt:  # before the signal handlers were in place
        return EXIT_SIGINT
