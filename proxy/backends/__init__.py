"""Backends execute transformed commands: a pool of Redis connections or an in-process store.

One interface for both, so the client side never knows which one it talks to:

* `Backend.route()` gives a new client its `Route`.  All of a client's commands go to
  the same route, in order, which is what keeps a client's writes and reads ordered
  (Redis executes one connection's commands in order).
* `Route.submit(args, waiter, command)` queues a command (`command` is its table entry,
  which a cluster route needs to find and split keys); `Route.flush()` sends what was queued
  (a client calls it once per read, so a pipeline leaves in one write).  The route later
  calls `waiter.complete(reply)` with the reply as hiredis parses RESP2 (bytes, int,
  None, list, hiredis.ReplyError), or `waiter.fail(error_reply_bytes)` when no reply
  can come.  Each waiter is completed exactly once.
* `Route.call(args)` is the awaitable form for multi-step operations.
* `Backend.dedicated(key)` lends a route that no other client shares, for WATCH,
  MULTI/EXEC and read-modify-write (on a cluster: on the node that owns `key`'s slot);
  `Backend.release_dedicated(route)` gives it back.  The in-process backend lends
  itself: it runs an operation's steps without yielding, so they are atomic anyway.

Backends never see plaintext keys or values and never log arguments.
"""

from __future__ import annotations

from typing import Any, Protocol

Reply = Any  # bytes | int | None | list | hiredis.ReplyError


class Waiter(Protocol):
    client: Any

    def complete(self, reply: Reply) -> None: ...

    def fail(self, error_reply: bytes) -> None: ...


class Route(Protocol):
    def submit(self, args: list[bytes], waiter: Waiter, command=None) -> None: ...

    def flush(self) -> None: ...

    async def call(self, args: list[bytes]) -> Reply: ...

    async def delete_prefix(self, prefix: bytes) -> int: ...

    async def count_prefix(self, prefix: bytes) -> int: ...


class Backend(Protocol):
    description: str
    local: bool  # in-process: no WATCH/MULTI/EXEC needed, steps never interleave

    def route(self) -> Route: ...

    def dedicated(self, key: bytes | None) -> Route: ...

    def release_dedicated(self, route: Route) -> None: ...

    def ready(self) -> bool: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...
