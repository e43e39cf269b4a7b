"""Set commands.  Members are sealed deterministically and bound to their key.

A member is stored as `cache.seal_member(db, stored key, member)` (AES-SIV), so Redis
can compare members of one set (SADD, SISMEMBER, SREM) but equal members of two
different sets are different bytes in Redis.  Commands that combine sets (SINTER,
SUNION, SDIFF and their STORE forms) or move a member between sets (SMOVE) therefore
cannot run in Redis: cachecloak reads each set (SMEMBERS), opens the members, computes
the result itself and, for the STORE forms and SMOVE, writes the result sealed for the
destination key.

These multi-step operations are not atomic: another client's write between the reads
and the write is not seen, and for the STORE forms the DEL and SADD of the destination
are sent as one pipelined pair on the client's shared upstream connection, not inside
MULTI/EXEC.  A client's own commands stay in order (its later commands wait until the
operation has replied).

Differences from Redis that cannot be avoided:
- SMEMBERS, SINTER, SUNION, SDIFF and SPOP with a count return members in another
  order (Redis's order depends on the stored bytes; cachecloak's set operations return
  them in Python's set order).  Redis does not promise an order.
- SPOP and SRANDMEMBER pick at random, like Redis, but not the same members.
- A member that does not open (changed in Redis) is left out of every reply and of
  every computed result, and reads as nil from SPOP/SRANDMEMBER without a count;
  SCARD still counts it.
- In a Redis Cluster, the set operations and SMOVE work across slots (Redis would
  answer CROSSSLOT): cachecloak reads and writes each key on its own node.
"""

from __future__ import annotations

from proxy.commands import replies
from proxy.commands.atomic import atomically
from proxy.commands.table import (
    TABLE,
    WRONGTYPE,
    Command,
    call_all,
    guarded,
    register,
    upstream_error,
)
from proxy.resp import writer


async def read_sets(route, cache, db: int, keys: list[bytes]) -> list[set[bytes]] | bytes:
    """The plaintext members of each stored key (SMEMBERS, pipelined), or an error
    reply (WRONGTYPE).  A missing key is an empty set, as in Redis; a member that does
    not open is left out."""
    replies_ = await call_all(route, [[b"SMEMBERS", key] for key in keys])
    sets = []
    open_member = cache.open_member
    for key, reply in zip(keys, replies_, strict=True):
        error = upstream_error(reply)
        if error is not None:
            return error
        members = set()
        for blob in reply:
            member = open_member(db, key, blob)
            if member is not None:
                members.add(member)
        sets.append(members)
    return sets


def _combine(op: str, sets: list[set[bytes]]) -> set[bytes]:
    if op == "sinter":
        if not all(sets):
            return set()
        ordered = sorted(sets, key=len)  # smallest first, as Redis does
        return ordered[0].intersection(*ordered[1:])
    if op == "sunion":
        return set().union(*sets)
    first = sets[0]
    return first.difference(*sets[1:]) if first else set()


def run_set_operation(client, command: Command, args: list[bytes]) -> None:
    """SINTER / SUNION / SDIFF key [key ...]."""
    cache, db, proto = client.cache, client.db, client.proto
    keys = [cache.stored_key(db, key) for key in args[1:]]
    client.run_op(guarded(command.name, _set_operation, client.route, cache, db, proto,
                          command.name, keys))


async def _set_operation(route, cache, db: int, proto: int, op: str,
                         keys: list[bytes]) -> bytes:
    sets = await read_sets(route, cache, db, keys)
    if type(sets) is bytes:
        return sets
    result = _combine(op, sets)
    head = b"~%d\r\n" if proto == 3 else b"*%d\r\n"
    return head % len(result) + b"".join(b"$%d\r\n%b\r\n" % (len(m), m) for m in result)


def run_set_store(client, command: Command, args: list[bytes]) -> None:
    """SINTERSTORE / SUNIONSTORE / SDIFFSTORE destination key [key ...]."""
    cache, db = client.cache, client.db
    destination = cache.stored_key(db, args[1])
    keys = [cache.stored_key(db, key) for key in args[2:]]
    op = command.name[:-len("store")]
    client.run_op(guarded(command.name, _set_store, cache, db, op, destination, keys))


async def _set_store(cache, db: int, op: str, destination: bytes, keys: list[bytes]) -> bytes:
    async def plan(route):
        sets = await read_sets(route, cache, db, keys)
        if type(sets) is bytes:
            return sets, []
        result = _combine(op, sets)
        # Redis replaces the destination (whatever its type, dropping its TTL), or
        # deletes it when the result is empty.
        writes = [[b"DEL", destination]]
        if result:
            seal_member = cache.seal_member
            writes.append([b"SADD", destination,
                           *(seal_member(db, destination, m) for m in result)])
        return writer.integer(len(result)), writes

    return await atomically(cache, [destination, *keys], plan)


def run_smove(client, command: Command, args: list[bytes]) -> None:
    """SMOVE source destination member: the member is re-sealed for the destination."""
    cache, db = client.cache, client.db
    if args[1] == args[2]:
        # Same set: Redis answers whether the member is there (after its type checks,
        # which SISMEMBER makes the same way).
        key = cache.stored_key(db, args[1])
        client.forward([b"SISMEMBER", key, cache.seal_member(db, key, args[3])],
                       replies.integer, key, TABLE[b"sismember"])
        return
    source = cache.stored_key(db, args[1])
    destination = cache.stored_key(db, args[2])
    client.run_op(guarded("smove", _smove, cache, db, source, destination, args[3]))


async def _smove(cache, db: int, source: bytes, destination: bytes, member: bytes) -> bytes:
    sealed = cache.seal_member(db, source, member)

    async def plan(route):
        src_type, dst_type, present = await call_all(route, [
            [b"TYPE", source], [b"TYPE", destination], [b"SISMEMBER", source, sealed]])
        for reply in (src_type, dst_type):
            error = upstream_error(reply)
            if error is not None:
                return error, []
        if src_type == b"none":
            return writer.ZERO, []
        if src_type != b"set" or dst_type not in (b"none", b"set"):
            return WRONGTYPE, []
        if present != 1:
            return writer.ZERO, []
        return writer.ONE, [[b"SREM", source, sealed],
                            [b"SADD", destination, cache.seal_member(db, destination, member)]]

    return await atomically(cache, [source, destination], plan)


_ONE = (1, 1, 1)
_ALL = (1, -1, 1)

register(
    Command("sadd", -3, keys=_ONE, roles="m", decode=replies.integer),
    Command("srem", -3, keys=_ONE, roles="m", decode=replies.integer),
    Command("sismember", 3, keys=_ONE, roles="m", decode=replies.integer),
    Command("smismember", -3, keys=_ONE, roles="m", decode=replies.plain),
    Command("smembers", 2, keys=_ONE, decode=replies.member_set),
    Command("scard", 2, keys=_ONE, decode=replies.integer),
    Command("spop", -2, keys=_ONE, decode=replies.member_or_set),
    Command("srandmember", -2, keys=_ONE, decode=replies.member_or_members),
    Command("sinter", -2, run=run_set_operation, keys=_ALL),
    Command("sunion", -2, run=run_set_operation, keys=_ALL),
    Command("sdiff", -2, run=run_set_operation, keys=_ALL),
    Command("sinterstore", -3, run=run_set_store, keys=_ALL),
    Command("sunionstore", -3, run=run_set_store, keys=_ALL),
    Command("sdiffstore", -3, run=run_set_store, keys=_ALL),
    Command("smove", 4, run=run_smove, keys=(1, 2, 1)),
)
