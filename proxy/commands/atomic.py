"""Read, decide, write: proxy-side operations made atomic with WATCH and MULTI/EXEC.

Operations that cachecloak computes itself (SINTERSTORE and friends, SMOVE, LMOVE between
two keys) read plaintext, decide, and write re-encrypted data.  `atomically` runs the
read phase on a dedicated connection under WATCH of every key involved and sends the
writes in MULTI/EXEC; if another client changed one of the keys meanwhile, EXEC returns
nil and the whole operation runs again (bounded).  On the in-process backend the steps
never yield to the event loop, which makes them atomic as they are.

A plan is `async plan(route) -> (reply_bytes, writes)`: it may only read through
`route`; `writes` are the commands to apply (none: nothing changes).
"""

from __future__ import annotations

from hiredis import ReplyError

from proxy.commands.transactions import MAX_ATTEMPTS, _multi_exec
from proxy.resp import writer

CONTENTION = writer.error("ERR cachecloak: the keys kept changing under other clients' "
                          "writes; try again")


async def atomically(cache, keys: list[bytes], plan) -> bytes:
    backend = cache.backend
    if backend.local:
        reply, writes = await plan(backend)
        for args in writes:
            result = backend.store.execute(args)
            if isinstance(result, ReplyError):
                return writer.error(str(result))
        return reply
    route = backend.dedicated(keys[0])
    clean = True  # no WATCH left on the connection
    try:
        for _attempt in range(MAX_ATTEMPTS):
            clean = False
            watched = await route.call([b"WATCH", *keys])
            if isinstance(watched, ReplyError):
                return writer.error(str(watched))
            reply, writes = await plan(route)
            if not writes:
                await route.call([b"UNWATCH"])
                clean = True
                return reply
            result = await _multi_exec(route, writes)
            clean = True  # EXEC, even aborted, clears the WATCH
            if isinstance(result, bytes):
                return result
            if result is None:
                continue  # a key changed between our reads and EXEC: start again
            for item in result:
                if isinstance(item, ReplyError):
                    return writer.error(str(item))
            return reply
        return CONTENTION
    finally:
        if clean:
            backend.release_dedicated(route)
        else:
            route.close()
