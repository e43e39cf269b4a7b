"""Key and expiry commands.  They only name keys; no value passes through them.

DBSIZE, FLUSHDB and FLUSHALL act on this cache's namespace, not on the whole Redis
database, which may hold other applications' data: with a key prefix they count or
delete with SCAN under it.  Without a prefix the cache owns the database and they are
forwarded.
"""

from __future__ import annotations

from proxy.commands import replies
from proxy.commands.table import Command, forward_no_keys, register
from proxy.resp import writer

_MULTI = (1, -1, 1)
_ONE = (1, 1, 1)


def _flush_option_error(args: list[bytes]) -> bytes | None:
    # Redis compares the option as a C string: b"sync\0x" is SYNC.
    if len(args) == 2 and args[1].split(b"\0", 1)[0].upper() in (b"ASYNC", b"SYNC"):
        return None
    if len(args) == 1:
        return None
    return writer.error("ERR syntax error")


def run_dbsize(client, command: Command, args: list[bytes]) -> None:
    cache = client.cache
    if not cache.hasher.prefix and not cache.hasher.namespace(client.db):
        forward_no_keys(client, command, args)
        return
    namespace = cache.hasher.namespace(client.db)
    client.run_op(_count(client, namespace))


async def _count(client, namespace: bytes) -> bytes:
    return writer.integer(await client.route.count_prefix(namespace))


def run_flush(client, command: Command, args: list[bytes]) -> None:
    cache = client.cache
    everything = command.name == "flushall"
    namespace = cache.hasher.prefix if everything else cache.hasher.namespace(client.db)
    if not namespace:
        forward_no_keys(client, command, args)
        return
    client.run_op(_flush(client, namespace))


async def _flush(client, namespace: bytes) -> bytes:
    await client.route.delete_prefix(namespace)
    return writer.OK


register(
    Command("del", -2, keys=_MULTI, decode=replies.integer, split="sum"),
    Command("unlink", -2, keys=_MULTI, decode=replies.integer, split="sum"),
    Command("exists", -2, keys=_MULTI, decode=replies.integer, split="sum"),
    Command("touch", -2, keys=_MULTI, decode=replies.integer, split="sum"),
    Command("type", 2, keys=_ONE, decode=replies.status),
    Command("expire", -3, keys=_ONE, decode=replies.integer),
    Command("pexpire", -3, keys=_ONE, decode=replies.integer),
    Command("expireat", -3, keys=_ONE, decode=replies.integer),
    Command("pexpireat", -3, keys=_ONE, decode=replies.integer),
    Command("persist", 2, keys=_ONE, decode=replies.integer),
    Command("ttl", 2, keys=_ONE, decode=replies.integer),
    Command("pttl", 2, keys=_ONE, decode=replies.integer),
    Command("expiretime", 2, keys=_ONE, decode=replies.integer),
    Command("pexpiretime", 2, keys=_ONE, decode=replies.integer),
    Command("dbsize", 1, run=run_dbsize, decode=replies.integer),
    Command("flushdb", -1, run=run_flush, decode=replies.status, check=_flush_option_error),
    Command("flushall", -1, run=run_flush, decode=replies.status, check=_flush_option_error),
)
