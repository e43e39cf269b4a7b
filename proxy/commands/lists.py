"""List commands.  Every element is an envelope with a fresh random nonce.

An element is sealed like a string value (`cache.seal(db, stored key, element)`), so
equal elements look unrelated in Redis.  That is why LREM, LPOS and LINSERT, which
need Redis to compare elements with a given value, are refused (refusals.py).  An
element is bound to its key, not to its position, so LSET, LTRIM and moves within one
list work in Redis.

LMOVE (and RPOPLPUSH) between two different lists must re-seal the element for the
destination key: cachecloak checks both keys' types (TYPE, pipelined), pops the element,
opens it and pushes it sealed for the destination.  This is not atomic (another client
may act between the steps) and waits for dedicated upstream connections.  LMOVE within
one list is forwarded to Redis as it is.

Differences from Redis that cannot be avoided:
- An element that does not open (changed in Redis) reads as nil from LINDEX, LPOP and
  RPOP without a count and LMOVE, and is left out of LRANGE and of LPOP/RPOP with a
  count; LLEN still counts it.  LMOVE between two lists drops such an element: it was
  popped but cannot be re-sealed for the destination.
"""

from __future__ import annotations

from proxy.commands import replies
from proxy.commands.atomic import atomically
from proxy.commands.table import (
    WRONGTYPE,
    Command,
    c_word,
    call_all,
    forward_key,
    guarded,
    register,
    upstream_error,
)
from proxy.resp import writer
from proxy.resp.writer import NULL_BULK

_SYNTAX = writer.error("ERR syntax error")
_ENDS = {b"left": b"L", b"right": b"R"}


def run_pop(client, command: Command, args: list[bytes]) -> None:
    """LPOP / RPOP key [count]: a bulk (nil) without a count, an array (nil array) with."""
    forward_key(client, command, args, replies.elements if len(args) > 2 else replies.value)


def run_lmove(client, command: Command, args: list[bytes]) -> None:
    """LMOVE source destination LEFT|RIGHT LEFT|RIGHT, and RPOPLPUSH source destination."""
    if command.name == "rpoplpush":
        side_from, side_to = b"R", b"L"
    else:
        side_from = _ENDS.get(c_word(args[3]))
        side_to = _ENDS.get(c_word(args[4]))
        if side_from is None or side_to is None:
            client.reply(_SYNTAX)
            return
    if args[1] == args[2]:
        # One list: the element stays under its key, Redis can rotate it.
        cache, db = client.cache, client.db
        key = cache.stored_key(db, args[1])
        args[1] = args[2] = key
        client.forward(args, replies.value, key, command)
        return
    cache, db = client.cache, client.db
    source = cache.stored_key(db, args[1])
    destination = cache.stored_key(db, args[2])
    client.run_op(guarded(command.name, _lmove, cache, db, client.proto, source,
                          destination, side_from, side_to))


async def _lmove(cache, db: int, proto: int, source: bytes, destination: bytes,
                 side_from: bytes, side_to: bytes) -> bytes:
    end = b"0" if side_from == b"L" else b"-1"

    async def plan(route):
        src_type, dst_type, blob = await call_all(route, [
            [b"TYPE", source], [b"TYPE", destination], [b"LINDEX", source, end]])
        for reply in (src_type, dst_type):
            error = upstream_error(reply)
            if error is not None:
                return error, []
        # Redis: a missing source is nil whatever the destination; then both types.
        if src_type == b"none":
            return NULL_BULK[proto], []
        if src_type != b"list" or dst_type not in (b"none", b"list"):
            return WRONGTYPE, []
        element = cache.open(db, source, blob) if isinstance(blob, bytes) else None
        if element is None:
            # It does not open (counted): it is consumed as a miss, so a list used as a
            # queue does not stay stuck behind it; it cannot be re-encrypted anyway.
            return NULL_BULK[proto], [[side_from + b"POP", source]]
        return b"$%d\r\n%b\r\n" % (len(element), element), [
            [side_from + b"POP", source],
            [side_to + b"PUSH", destination, cache.seal(db, destination, element)]]

    return await atomically(cache, [source, destination], plan)


_ONE = (1, 1, 1)

register(
    Command("lpush", -3, keys=_ONE, roles="e", decode=replies.integer),
    Command("rpush", -3, keys=_ONE, roles="e", decode=replies.integer),
    Command("lpushx", -3, keys=_ONE, roles="e", decode=replies.integer),
    Command("rpushx", -3, keys=_ONE, roles="e", decode=replies.integer),
    Command("lpop", -2, run=run_pop, keys=_ONE),
    Command("rpop", -2, run=run_pop, keys=_ONE),
    Command("lrange", 4, keys=_ONE, decode=replies.elements),
    Command("llen", 2, keys=_ONE, decode=replies.integer),
    Command("lindex", 3, keys=_ONE, decode=replies.value),
    Command("lset", 4, keys=_ONE, roles=".e", decode=replies.status),
    Command("ltrim", 4, keys=_ONE, decode=replies.status),
    Command("lmove", 5, run=run_lmove, keys=(1, 2, 1)),
    Command("rpoplpush", 3, run=run_lmove, keys=(1, 2, 1)),
)
