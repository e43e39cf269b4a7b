"""RENAME, RENAMENX and COPY: values are bound to their key, so they are re-encrypted.

Every envelope's associated data holds the stored name of its key, and hash fields and
set / sorted-set members are encrypted bound to the key too.  Redis's own RENAME would
move ciphertexts under a name they do not authenticate for, so cachecloak reads the
source, re-encrypts everything for the destination and writes it, atomically: on a
dedicated connection it WATCHes both keys, reads the source (its type, its content and
its remaining time to live), and writes with MULTI/EXEC, retrying if another client
changed either key meanwhile.  The in-process backend runs the same steps without
yielding, which makes them atomic there.

Costs: the whole value crosses the proxy (as with DUMP/RESTORE); fine for cache-sized
values.  Must never write a source ciphertext under the destination name unchanged.
"""

from __future__ import annotations

from hiredis import ReplyError

from proxy.cache import DecryptRefused
from proxy.commands.table import Command, register
from proxy.commands.transactions import MAX_ATTEMPTS, _multi_exec, _submit
from proxy.resp import writer

NO_SUCH_KEY = writer.error("ERR no such key")
_NOT_INTEGER = writer.error("ERR value is not an integer or out of range")


def run_rename(client, command, args):
    client.run_op(_move(client, args[1], args[2], client.db,
                        mode="renamenx" if command.name == "renamenx" else "rename"))


def run_copy(client, command, args):
    target_db = client.db
    replace = False
    i = 3
    while i < len(args):
        option = args[i].upper()
        if option == b"REPLACE":
            replace = True
            i += 1
        elif option == b"DB" and i + 1 < len(args):
            try:
                target_db = int(args[i + 1])
            except ValueError:
                client.reply(_NOT_INTEGER)
                return
            if not 0 <= target_db < client.cache.databases:
                client.reply(writer.error("ERR DB index is out of range"))
                return
            i += 2
        else:
            client.reply(writer.error("ERR syntax error"))
            return
    client.run_op(_move(client, args[1], args[2], target_db,
                        mode="copy-replace" if replace else "copy"))


async def _move(client, source: bytes, target: bytes, target_db: int, mode: str) -> bytes:
    cache = client.cache
    src = cache.stored_key(client.db, source)
    dst = cache.stored_key(target_db, target)
    backend = cache.backend
    route = backend.dedicated(src)
    state = _State(local=backend.local)
    try:
        return await _attempts(cache, route, state, client.db, src, target_db, dst, mode)
    except _Failed as exc:
        return writer.error(str(exc))
    finally:
        if state.clean:
            backend.release_dedicated(route)
        else:  # it may still hold a WATCH: never lend it again
            route.close()


class _State:
    __slots__ = ("clean", "local")

    def __init__(self, local: bool):
        self.local = local
        self.clean = True  # no WATCH is left on the connection


async def _attempts(cache, route, state: _State, db: int, src: bytes, target_db: int,
                    dst: bytes, mode: str) -> bytes:
    local = state.local
    if src == dst and mode.startswith("copy"):  # Redis checks this before the key exists
        return writer.error("ERR source and destination objects are the same")
    for _attempt in range(MAX_ATTEMPTS):
        if not local:
            state.clean = False
            await _call(route, [b"WATCH", src, dst])
        kind = await _call(route, [b"TYPE", src])
        early = None
        if kind == b"none":
            early = NO_SUCH_KEY if mode.startswith("rename") else writer.ZERO
        elif src == dst:
            if mode.startswith("copy"):
                early = writer.error("ERR source and destination objects are the same")
            else:
                early = writer.ZERO if mode == "renamenx" else writer.OK
        elif mode in ("renamenx", "copy") and await _call(route, [b"EXISTS", dst]):
            early = writer.ZERO
        if early is None:
            content = await _read(route, kind, src)
            ttl = await _call(route, [b"PTTL", src])
            writes = _rewrite(cache, kind, content, db, src, target_db, dst)
            if isinstance(writes, bytes):
                early = writes
        if early is not None:
            if not local:
                await _call(route, [b"UNWATCH"])
                state.clean = True
            return early
        commands = [[b"DEL", dst], *writes]
        if isinstance(ttl, int) and ttl > 0:
            commands.append([b"PEXPIRE", dst, str(ttl).encode()])
        if mode.startswith("rename"):
            commands.append([b"DEL", src])
        if local:
            for args in commands:
                route.store.execute(args)
        else:
            result = await _multi_exec(route, commands)
            state.clean = True  # EXEC, even aborted, clears the WATCH
            if isinstance(result, bytes):
                return result
            if result is None:
                continue  # another client changed a key: read again
            for reply in result:
                if isinstance(reply, ReplyError):
                    return writer.error(str(reply))
        return writer.OK if mode == "rename" else writer.ONE
    return writer.error("ERR cachecloak: the keys kept changing under other clients' "
                        "writes; try again")


async def _call(route, args):
    reply = await _submit_and_flush(route, args)
    if isinstance(reply, ReplyError):
        raise _Failed(str(reply))
    return reply


async def _submit_and_flush(route, args):
    if hasattr(route, "store"):  # the in-process backend: synchronous
        return route.store.execute(args)
    future = _submit(route, args)
    route.flush()
    return await future


class _Failed(Exception):
    pass


async def _read(route, kind: bytes, src: bytes):
    if kind == b"string":
        return await _call(route, [b"GET", src])
    if kind == b"hash":
        return await _call(route, [b"HGETALL", src])
    if kind == b"set":
        return await _call(route, [b"SMEMBERS", src])
    if kind == b"zset":
        return await _call(route, [b"ZRANGE", src, b"0", b"-1", b"WITHSCORES"])
    if kind == b"list":
        return await _call(route, [b"LRANGE", src, b"0", b"-1"])
    raise _Failed(f"ERR cachecloak cannot copy a key of type {kind.decode(errors='replace')}")


def _rewrite(cache, kind, content, db, src, target_db, dst):
    """The commands that write `content` (read from src) re-encrypted for dst."""
    try:
        if kind == b"string":
            value = cache.open(db, src, content)
            if value is None:
                return writer.error("ERR cachecloak could not decrypt the source value; "
                                    "nothing was copied")
            return [[b"SET", dst, cache.seal(target_db, dst, value)]]
        if kind == b"list":
            items = [cache.open(db, src, blob) for blob in content]
            items = [item for item in items if item is not None]
            if not items:
                return []
            return [[b"RPUSH", dst, *(cache.seal(target_db, dst, item) for item in items)]]
        if kind == b"set":
            members = [cache.open_member(db, src, m) for m in content]
            members = [m for m in members if m is not None]
            if not members:
                return []
            return [[b"SADD", dst, *(cache.seal_member(target_db, dst, m) for m in members)]]
        if kind == b"zset":
            out = [b"ZADD", dst]
            for member, score in zip(content[::2], content[1::2], strict=True):
                plain = cache.open_member(db, src, member)
                if plain is not None:
                    out += [score, cache.seal_member(target_db, dst, plain)]
            return [out] if len(out) > 2 else []
        if kind == b"hash":
            out = [b"HSET", dst]
            for field, blob in zip(content[::2], content[1::2], strict=True):
                plain_field = cache.open_member(db, src, field)
                if plain_field is None:
                    continue
                value = cache.open(db, src, blob, field)
                if value is None:
                    continue
                new_field = cache.seal_member(target_db, dst, plain_field)
                out += [new_field, cache.seal(target_db, dst, value, new_field)]
            return [out] if len(out) > 2 else []
    except DecryptRefused as exc:
        return writer.error(str(exc))
    return writer.error("ERR cachecloak cannot copy this key")


register(
    Command("rename", 3, run=run_rename, keys=(1, 2, 1)),
    Command("renamenx", 3, run=run_rename, keys=(1, 2, 1)),
    Command("copy", -3, run=run_copy, keys=(1, 2, 1)),
)
