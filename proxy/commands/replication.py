"""WAIT numreplicas timeout: how many replicas hold every write this client made before it.

Redis answers WAIT with the number of replicas that acknowledged the replication offset
of the calling connection's last write.  Behind cachecloak a client's writes travel on
several upstream connections (its pooled route, shared with other clients, and the
dedicated connections of its transactions and read-modify-write commands), so WAIT
cannot simply be forwarded on one of them.  Instead, once every earlier command of the
client has its reply, cachecloak takes a dedicated connection, makes one write of its
own there (MULTI, SET of a fresh random name under the cache's prefix, DEL of it, EXEC:
replicated, yet no key ever shows) and sends WAIT on that connection.  That write's
offset is past every acknowledged write of the client, whichever connection carried it.
(Redis 7.0 sets a connection's offset after any command, newer versions only after a
replicated one: the write makes both right.)  WAIT blocks only that dedicated
connection, never the route other clients share.

Limits, each because the alternative would be worse:
* timeout 0 (wait forever) and timeouts longer than half of `redis.commandTimeout` are
  shortened to that half: a longer silence makes the connection's watchdog give it up.
* When cachecloak saw the primary change (a failover) since this client connected or
  last called WAIT, WAIT answers 0: writes acknowledged by the old primary may be lost,
  and the new primary's replicas say nothing about them.
* The built-in local cache has no replicas: 0.  A Redis Cluster cache refuses WAIT (a
  client's writes span nodes; one node's answer would overstate).  Inside MULTI it is an
  error element, as for cachecloak's other multi-step commands.

Must never: put a key, a value or the marker's name into a reply or a log.
"""

from __future__ import annotations

import os

from hiredis import ReplyError

from proxy.commands.connection import _parse_ll
from proxy.commands.table import Command, register
from proxy.resp import writer

_NOT_INTEGER = writer.error("ERR value is not an integer or out of range")
_TIMEOUT_NOT_INTEGER = writer.error("ERR timeout is not an integer or out of range")
_TIMEOUT_NEGATIVE = writer.error("ERR timeout is negative")
_CLUSTER = writer.error(
    "ERR cachecloak does not serve WAIT for a Redis Cluster cache: a client's writes span "
    "several primaries, and one node's count would overstate; use a standalone or "
    "Sentinel cache")
ZERO = writer.integer(0)


def _pool(backend):
    """The standalone / Sentinel pool behind `backend`, or None (local, cluster, or mode
    auto before it reached Redis)."""
    from proxy.backends.redis.pool import RedisBackend

    backend = getattr(backend, "chosen", backend)  # mode auto: what it decided on
    return backend if isinstance(backend, RedisBackend) else None


def primary_epoch(backend) -> int:
    """How many times cachecloak has seen the primary move (0 without a topology)."""
    pool = _pool(backend)
    locator = getattr(pool, "locator", None)
    return locator.moves if locator is not None else 0


def run_wait(client, command: Command, args: list[bytes]) -> None:
    replicas = _parse_ll(args[1])
    if replicas is None:
        client.reply(_NOT_INTEGER)
        return
    timeout = _parse_ll(args[2])
    if timeout is None:
        client.reply(_TIMEOUT_NOT_INTEGER)
        return
    if timeout < 0:
        client.reply(_TIMEOUT_NEGATIVE)
        return
    backend = client.cache.backend
    if backend.local:
        client.reply(ZERO)
        return
    client.run_op(_wait(client, backend, replicas, timeout))


async def _wait(client, backend, replicas: int, timeout: int) -> bytes:
    pool = _pool(backend)
    if pool is None:
        if getattr(backend, "chosen", backend) is not None:
            return _CLUSTER
        backend.dedicated()  # mode auto has not reached Redis: raises with the reason
    since = getattr(client, "wait_epoch", 0)
    cap = max(int(pool._settings.command_timeout * 500), 1)
    timeout = cap if timeout == 0 or timeout > cap else timeout
    marker = client.cache.hasher.prefix + b"wait:" + os.urandom(12).hex().encode()
    conn = pool.dedicated()
    clean = False
    try:
        # A write that Redis replicates and that leaves nothing behind, not even for a
        # moment: the key is made and deleted in one transaction.
        replies = [await conn.call(args) for args in (
            [b"MULTI"], [b"SET", marker, b""], [b"DEL", marker], [b"EXEC"])]
        clean = True  # EXEC, even refused, ends the transaction
        problem = next((r for r in replies if isinstance(r, ReplyError)), None)
        if problem is None and isinstance(replies[-1], list):
            problem = next((r for r in replies[-1] if isinstance(r, ReplyError)), None)
        if problem is not None or not isinstance(replies[-1], list):
            # READONLY (the primary just became a replica), NOPERM, OOM: Redis's own words.
            return writer.error(str(problem) if problem is not None else
                                "ERR cachecloak: the write WAIT relies on was not applied")
        count = await conn.call([b"WAIT", b"%d" % replicas, b"%d" % timeout])
    except BaseException:
        clean = False
        raise
    finally:
        if clean:
            pool.release_dedicated(conn)
        else:
            conn.close()
    if isinstance(count, ReplyError):
        return writer.error(str(count))
    epoch = primary_epoch(backend)
    client.wait_epoch = epoch
    if epoch != since or not isinstance(count, int):
        return ZERO
    return writer.integer(count)


register(Command("wait", 3, run=run_wait))

__all__ = ["primary_epoch", "run_wait"]
