"""Transactions (MULTI, EXEC, DISCARD, WATCH, UNWATCH) and read-modify-write commands.

Both are the same problem on encrypted data, so one engine runs both:

* The client's queued commands are transformed like any other command ("capture": the
  handlers run, but `client.forward` and `client.reply` record instead of acting), so a
  transaction holds exactly the hashed keys and sealed values a single command would.
* Commands whose result depends on the plaintext of the current value (INCR, APPEND,
  SETRANGE, GETRANGE ...) cannot be computed by Redis on a ciphertext.  The engine
  WATCHes their keys on a connection of its own, reads and decrypts the current values,
  computes the results on a scratch in-process store (which has Redis's exact semantics
  and error texts), and sends each as `SET <key> <new envelope> KEEPTTL` inside
  MULTI/EXEC.  If another client changed one of those keys in between, EXEC returns nil
  and the engine starts again (bounded): no update is ever lost.
* A plain command of the transaction that touches one of those keys is replayed on the
  scratch store too (in plaintext), so `SET k 5; INCR k` inside one MULTI gives 6.
* The client's own WATCH runs on the same dedicated connection as its EXEC; when it
  holds, EXEC's nil is the client's abort, as in Redis (no retry then).

The in-process backend needs none of WATCH/MULTI/EXEC: the engine runs the steps
without yielding to the event loop, so no other client can interleave.

Not supported inside MULTI: commands that take several steps of their own (FLUSHDB and
DBSIZE over a key prefix, multi-key set operations); they get an error element.

Must never: send a plaintext value, apply an update twice, or log arguments.
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass, field

from hiredis import ReplyError

from proxy.backends.local import LocalStore, ZSet
from proxy.backends.redis.connection import IGNORE_REPLY
from proxy.cache import DecryptRefused
from proxy.commands import replies
from proxy.commands.table import TABLE, Command, arity_error, arity_ok, register
from proxy.errors import UpstreamError
from proxy.resp import writer
from proxy.resp.writer import NULL_ARRAY

QUEUED = writer.QUEUED
EXECABORT = writer.error("EXECABORT Transaction discarded because of previous errors.")
# Optimistic retries of one read-modify-write when other clients keep changing its keys.
MAX_ATTEMPTS = 32

# Read-modify-write commands: name -> does it write.  HINCRBY and HINCRBYFLOAT act on
# one field of a hash (key, field); the others on a string key.
RMW: dict[str, bool] = {
    "incr": True, "incrby": True, "decr": True, "decrby": True, "incrbyfloat": True,
    "append": True, "setrange": True, "getrange": False,
    "hincrby": True, "hincrbyfloat": True,
}
HASH_RMW = frozenset({"hincrby", "hincrbyfloat"})
# In MULTI these run at once instead of being queued (Redis: processCommand).
NOT_QUEUED = frozenset({"exec", "discard", "multi", "watch", "quit", "reset"})


@dataclass
class MultiState:
    queue: list[list[bytes]] = field(default_factory=list)
    failed: bool = False


class WatchState:
    """The client's WATCHed keys: a dedicated upstream route, or snapshots (local)."""

    def __init__(self, backend):
        self.backend = backend
        self.route = None
        self.tokens: dict[bytes, object] = {}
        # A configuration reload moved the keys (another upstream, other stored names):
        # EXEC answers nil, as when a watched key changed (proxy.server.reload).
        self.lost = False

    def changed(self) -> bool:
        """Local backend only: did a watched key change since WATCH?"""
        return any(not _same(token, _token(self.backend, key))
                   for key, token in self.tokens.items())

    def release(self) -> None:
        route, self.route = self.route, None
        self.tokens = {}
        if route is not None:
            # UNWATCH goes first, so a reused connection carries no stale WATCH.
            route.submit([b"UNWATCH"], IGNORE_REPLY)
            route.flush()
            self.backend.release_dedicated(route)


def _token(backend, key: bytes) -> object:
    value, expires = backend.peek(key)
    if isinstance(value, (dict, set, list)) or hasattr(value, "appendleft"):
        return ("copy", copy.copy(value), expires)
    return ("ref", value, expires)


def _same(a, b) -> bool:
    if a[0] != b[0] or a[2] != b[2]:
        return False
    return a[1] == b[1] if a[0] == "copy" else a[1] is b[1]


# -- command handlers ------------------------------------------------------------------

def queue_in_multi(client, command: Command | None, args: list[bytes]) -> bool:
    """Called by dispatch while the client is in MULTI; True when the command was handled
    here (queued, or refused and the transaction flagged)."""
    if command is not None and command.name in NOT_QUEUED:
        return False
    multi = client.multi
    if command is None:
        from proxy.commands.refusals import refusal

        client.reply(refusal(args))
        multi.failed = True
        return True
    if not arity_ok(command.arity, len(args)):
        client.reply(arity_error(command.name))
        multi.failed = True
        return True
    multi.queue.append(args)
    client.reply(QUEUED)
    return True


def abort_exec(client, reason: str) -> None:
    """Redis answers a rejected EXEC (wrong arity) with EXECABORT and discards."""
    client.multi = None
    _unwatch(client)
    client.reply(writer.error(f"EXECABORT Transaction discarded because of: {reason}"))


def run_multi(client, command, args):
    if client.multi is not None:
        client.reply(writer.error("ERR MULTI calls can not be nested"))
        return
    client.multi = MultiState()
    client.reply(writer.OK)


def run_discard(client, command, args):
    if client.multi is None:
        client.reply(writer.error("ERR DISCARD without MULTI"))
        return
    client.multi = None
    _unwatch(client)
    client.reply(writer.OK)


def run_exec(client, command, args):
    multi = client.multi
    if multi is None:
        client.reply(writer.error("ERR EXEC without MULTI"))
        return
    client.multi = None
    watch, client.watch = client.watch, None
    if multi.failed:
        if watch is not None:
            watch.release()
        client.reply(EXECABORT)
        return
    client.run_op(_exec_reply(client, multi.queue, watch))


async def _exec_reply(client, queue, watch) -> bytes:
    elements = await execute(client, queue, watch)
    if elements is None:
        return NULL_ARRAY[client.proto]
    if isinstance(elements, bytes):
        return elements  # an error for the whole transaction
    return b"*%d\r\n" % len(elements) + b"".join(elements)


def run_watch(client, command, args):
    if client.multi is not None:
        client.reply(writer.error("ERR WATCH inside MULTI is not allowed"))
        return
    cache, db = client.cache, client.db
    keys = [cache.stored_key(db, key) for key in args[1:]]
    client.run_op(_watch(client, keys))


async def _watch(client, keys: list[bytes]) -> bytes:
    backend = client.cache.backend
    watch = client.watch
    if watch is None:
        watch = client.watch = WatchState(backend)
    if backend.local:
        for key in keys:
            watch.tokens.setdefault(key, _token(backend, key))
        return writer.OK
    if watch.route is None:
        watch.route = backend.dedicated(keys[0])
    reply = await watch.route.call([b"WATCH", *keys])
    if isinstance(reply, ReplyError):
        return writer.error(str(reply))
    return writer.OK


def run_unwatch(client, command, args):
    _unwatch(client)
    client.reply(writer.OK)


def _unwatch(client) -> None:
    watch, client.watch = client.watch, None
    if watch is not None:
        watch.release()


def run_rmw(client, command, args):
    """INCR, APPEND, GETRANGE ...: a one-command transaction (or part of the client's)."""
    if client.capture is not None:
        client.capture.append(("rmw", args, client.db, command))
        return
    client.run_op(_single(client, args))


async def _single(client, args) -> bytes:
    elements = await execute(client, [args], None)
    if isinstance(elements, bytes):
        return elements
    return elements[0]


# -- the engine ------------------------------------------------------------------------

def _assemble(client, queue: list[list[bytes]]) -> tuple[list[tuple], int]:
    """Transform the queued commands without sending them; also return the logical db
    the client has after them (SELECT inside MULTI takes effect at EXEC)."""
    from proxy.commands.table import dispatch

    items: list[tuple] = []
    db_before = client.db
    client.capture = captured = []
    try:
        for args in queue:
            before = len(captured)
            dispatch(client, list(args))
            if len(captured) != before + 1:  # defensive: exactly one element per command
                del captured[before:]
                captured.append(("local", writer.error(
                    "ERR cachecloak could not queue this command")))
            items.append((args, captured[-1]))
    finally:
        client.capture = None
        db_after, client.db = client.db, db_before
    return items, db_after


class _Target:
    """What one read-modify-write reads and writes: a string key, or one hash field."""

    __slots__ = ("db", "key", "field", "sealed_field")

    def __init__(self, cache, item):
        _, args, db, command = item
        self.db = db
        self.key = cache.stored_key(db, args[1])
        if command.name in HASH_RMW:
            self.field = args[2]
            self.sealed_field = cache.seal_member(db, self.key, args[2])
        else:
            self.field = self.sealed_field = None

    def ident(self) -> tuple:
        return (self.key, self.sealed_field)

    def read(self) -> list[bytes]:
        if self.field is None:
            return [b"GET", self.key]
        return [b"HGET", self.key, self.sealed_field]


def _targets(cache, items) -> list[_Target]:
    seen: dict[tuple, _Target] = {}
    for _args, item in items:
        if item[0] == "rmw":
            target = _Target(cache, item)
            seen.setdefault(target.ident(), target)
    return list(seen.values())


def _touched_keys(item) -> list[bytes]:
    """Stored keys a forwarded item names (from its command's key positions)."""
    _kind, args, _decode, _ctx, _db, command = item
    if command is None:
        return []
    first, last, step = command.keys
    if first == 0:
        return []
    if last < 0:
        last += len(args)
    return [args[i] for i in range(first, last + 1, step)]


def _mirror_args(cache, db: int, plain: list[bytes], command: Command) -> list[bytes]:
    """The plaintext command with its keys replaced by stored names, for the scratch."""
    args = list(plain)
    first, last, step = command.keys
    if last < 0:
        last += len(args)
    for i in range(first, last + 1, step):
        args[i] = cache.stored_key(db, args[i])
    return args


def _placeholder(kind: bytes):
    """A stand-in value of Redis type `kind`, so the scratch store answers WRONGTYPE
    exactly where Redis would (its content is never read)."""
    return {b"string": b"", b"hash": {b"": b""}, b"set": {b""},
            b"list": deque([b""]), b"zset": ZSet([(0.0, b"")])}.get(kind)


def _load_scratch(cache, reads: list[tuple[_Target, object]],
                  types: dict[bytes, bytes] | None = None
                  ) -> tuple[LocalStore, bytes | None]:
    """A scratch store holding the decrypted current values the transaction reads.

    `types` (key -> Redis TYPE reply) fills in keys whose reads answered WRONGTYPE
    with a stand-in of their real type."""
    scratch = LocalStore()
    for key, kind in (types or {}).items():
        placeholder = _placeholder(kind)
        if placeholder is not None and kind != b"string" and kind != b"hash":
            scratch._store(key, placeholder)
    for target, blob in reads:
        key = target.key
        if isinstance(blob, ReplyError):  # WRONGTYPE: the key holds another type
            kind = (types or {}).get(key)
            if not scratch.execute([b"EXISTS", key]):
                placeholder = _placeholder(kind) if kind else None
                scratch._store(key, placeholder if placeholder is not None else
                               ({} if target.field is None else b""))
            continue
        if blob is None:
            continue
        try:
            if target.field is None:
                plain = cache.open(target.db, key, blob)
            else:
                plain = cache.open(target.db, key, blob, target.sealed_field)
        except DecryptRefused as exc:
            return scratch, writer.error(str(exc))
        if plain is None:  # a value that does not open reads as missing (a miss)
            continue
        if target.field is None:
            scratch._store(key, plain)
        else:
            scratch.execute([b"HSET", key, target.field, plain])
    for key, kind in (types or {}).items():
        # A hash whose fields the transaction reads were all missing: it still exists,
        # so a queued SADD on it must fail with WRONGTYPE in the scratch as in Redis.
        if kind == b"hash" and not scratch.execute([b"EXISTS", key]):
            scratch._store(key, {})
    return scratch, None


def _plan(client, items, scratch: LocalStore):
    """Walk the transaction: what to send upstream per element, and how to answer it.

    Returns a list of (upstream_args | None, answer) where answer is ("local", bytes),
    ("decode", item) or ("scratch", reply)."""
    cache = client.cache
    rmw_keys = {cache.stored_key(item[2], item[1][1])
                for _a, item in items if item[0] == "rmw"}
    plan: list[tuple[list[bytes] | None, tuple]] = []
    for plain, item in items:
        kind = item[0]
        if kind == "local":
            plan.append((None, ("local", item[1])))
            continue
        if kind == "forward":
            command = item[5]
            if rmw_keys and command is not None and any(
                    k in rmw_keys for k in _touched_keys(item)):
                scratch.execute(_mirror_args(cache, item[4], plain, command))
            plan.append((item[1], ("decode", item)))
            continue
        _, args, db, command = item
        target = _Target(cache, item)
        key = target.key
        reply = scratch.execute([args[0], key, *args[2:]])
        if isinstance(reply, ReplyError) or not RMW[command.name]:
            plan.append((None, ("scratch", reply)))
            continue
        if target.field is None:
            new = scratch.execute([b"GET", key])
            if new is None:  # nothing was created (SETRANGE "" on a missing key)
                plan.append((None, ("scratch", reply)))
                continue
            write = [b"SET", key, cache.seal(db, key, new), b"KEEPTTL"]
        else:
            new = scratch.execute([b"HGET", key, target.field])
            write = [b"HSET", key, target.sealed_field,
                     cache.seal(db, key, new, target.sealed_field)]
        plan.append((write, ("scratch", reply)))
    return plan


def _answer(client, answer, reply) -> bytes:
    kind = answer[0]
    if kind == "local":
        return answer[1]
    if kind == "scratch":
        if reply is not None and isinstance(reply, ReplyError):
            return writer.error(str(reply))  # the write itself failed (OOM, READONLY)
        value = answer[1]
        if isinstance(value, ReplyError):
            return writer.error(str(value))
        return writer.value(value, client.proto)
    from proxy.server.client import Slot

    item = answer[1]
    slot = Slot(client, item[2], item[3])
    slot.db = item[4]
    slot.complete(reply)
    return slot.data


async def execute(client, queue: list[list[bytes]], watch: WatchState | None):
    """Run a transaction; the list of element replies, None when a WATCH aborted it, or
    one error reply for the whole transaction."""
    if watch is not None and watch.lost:
        watch.release()
        return None
    cache = client.cache
    backend = cache.backend
    items, db_after = _assemble(client, queue)
    if not items:
        if watch is not None:
            watch.release()
        return []
    if backend.local:
        return _execute_local(client, items, watch, db_after)
    route = watch.route if watch is not None and watch.route is not None else None
    if watch is not None:
        watch.route = None  # EXEC ends the client's WATCH whatever happens
    if route is None:
        first_key = next(iter(_first_keys(cache, items)), None)
        route = backend.dedicated(first_key)
    clean = False  # True once no WATCH can be left on the connection
    try:
        targets = _targets(cache, items)
        rmw_keys = list(dict.fromkeys(target.key for target in targets))
        for _attempt in range(MAX_ATTEMPTS):
            scratch, problem = LocalStore(), None
            if rmw_keys:
                read = await _watch_and_read(route, rmw_keys, targets)
                if isinstance(read, bytes):
                    return read
                reads, types = read
                scratch, problem = _load_scratch(cache, reads, types)
                if problem is not None:
                    return problem
            plan = _plan(client, items, scratch)
            upstream = [args for args, _ in plan if args is not None]
            result = await _multi_exec(route, upstream)
            clean = True  # EXEC (even an aborted one) clears every WATCH
            if isinstance(result, bytes):
                return result
            if result is None:
                if watch is not None or not rmw_keys:
                    return None  # the client's own WATCH saw a change: its abort
                clean = False
                continue  # another client changed a key we read: compute again
            replies_iter = iter(result)
            elements = []
            for args, answer in plan:
                reply = next(replies_iter) if args is not None else None
                elements.append(_answer(client, answer, reply))
            client.db = db_after
            return elements
        return writer.error("ERR cachecloak: the keys of this read-modify-write kept "
                            "changing under other clients' writes; try again")
    finally:
        if clean:
            backend.release_dedicated(route)
        else:  # it may still hold a WATCH: never lend it again
            route.close()


def _first_keys(cache, items):
    for _plain, item in items:
        if item[0] == "forward":
            keys = _touched_keys(item)
            if keys:
                yield keys[0]
        elif item[0] == "rmw":
            yield cache.stored_key(item[2], item[1][1])


async def _watch_and_read(route, keys: list[bytes], targets: list[_Target]):
    """WATCH the keys, then read their types and the targets: ([(target, blob or
    WRONGTYPE error)], {key: type}), or an error reply."""
    futures = [_submit(route, [b"WATCH", *keys])]
    futures += [_submit(route, [b"TYPE", key]) for key in keys]
    futures += [_submit(route, target.read()) for target in targets]
    route.flush()
    results = [await f for f in futures]
    if isinstance(results[0], ReplyError):
        return writer.error(str(results[0]))
    types = dict(zip(keys, results[1:1 + len(keys)], strict=True))
    reads = []
    for target, reply in zip(targets, results[1 + len(keys):], strict=True):
        if isinstance(reply, ReplyError) and not str(reply).startswith("WRONGTYPE"):
            return writer.error(str(reply))
        reads.append((target, reply))
    return reads, types


async def _multi_exec(route, commands: list[list[bytes]]):
    """MULTI, the commands, EXEC on one connection: EXEC's array, None (aborted by a
    WATCH), or an error reply for the whole transaction (EXECABORT)."""
    futures = [_submit(route, [b"MULTI"])]
    futures += [_submit(route, args) for args in commands]
    futures.append(_submit(route, [b"EXEC"]))
    route.flush()
    results = [await f for f in futures]
    exec_reply = results[-1]
    if isinstance(exec_reply, ReplyError):
        return writer.error(str(exec_reply))
    return exec_reply


def _submit(route, args: list[bytes]):
    import asyncio

    from proxy.backends.redis.connection import _FutureWaiter

    future = asyncio.get_running_loop().create_future()
    route.submit(args, _FutureWaiter(future))
    return future


def _execute_local(client, items, watch, db_after):
    """The in-process backend: run every element now, without yielding (atomic)."""
    cache = client.cache
    store = cache.backend
    if watch is not None:
        changed = watch.changed()
        watch.release()
        if changed:
            return None
    elements = []
    for plain, item in items:
        kind = item[0]
        if kind == "local":
            elements.append(item[1])
        elif kind == "forward":
            elements.append(_answer(client, ("decode", item), store.store.execute(item[1])))
        else:
            target = _Target(cache, item)
            blob = store.store.execute(target.read())
            kind = store.store.execute([b"TYPE", target.key])
            scratch, problem = _load_scratch(cache, [(target, blob)], {target.key: kind})
            if problem is not None:
                elements.append(problem)
                continue
            plan = _plan(client, [(plain, item)], scratch)
            write, answer = plan[0]
            reply = store.store.execute(write) if write is not None else None
            elements.append(_answer(client, answer, reply))
    client.db = db_after
    return elements


def _install() -> None:
    register(
        Command("multi", 1, run=run_multi),
        Command("exec", 1, run=run_exec),
        Command("discard", 1, run=run_discard),
        Command("watch", -2, run=run_watch, keys=(1, -1, 1)),
        Command("unwatch", 1, run=run_unwatch),
        Command("incr", 2, run=run_rmw, keys=(1, 1, 1)),
        Command("decr", 2, run=run_rmw, keys=(1, 1, 1)),
        Command("incrby", 3, run=run_rmw, keys=(1, 1, 1)),
        Command("decrby", 3, run=run_rmw, keys=(1, 1, 1)),
        Command("incrbyfloat", 3, run=run_rmw, keys=(1, 1, 1)),
        Command("append", 3, run=run_rmw, keys=(1, 1, 1)),
        Command("setrange", 4, run=run_rmw, keys=(1, 1, 1)),
        Command("getrange", 4, run=run_rmw, keys=(1, 1, 1)),
        Command("hincrby", 4, run=run_rmw, keys=(1, 1, 1)),
        Command("hincrbyfloat", 4, run=run_rmw, keys=(1, 1, 1)),
    )


_install()
assert all(name.encode() in TABLE for name in RMW)
__all__ = ["UpstreamError", "execute", "queue_in_multi", "replies"]
