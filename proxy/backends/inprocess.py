"""The in-process backend: a LocalStore behind the Backend interface.

Commands complete synchronously, inside the client's read, so local replies and their
ordering need no special case in the server.  Each worker process has its own store.
"""

from __future__ import annotations

from proxy.backends import Reply, Waiter
from proxy.backends.local import LocalStore


class LocalBackend:
    """Backend and Route at once: there is nothing per client to keep."""

    def __init__(self, max_entries: int | None):
        self.store = LocalStore(max_entries=max_entries)
        self._execute = self.store.execute
        self.description = "in-process memory"

    local = True

    def route(self) -> LocalBackend:
        return self

    def dedicated(self, key: bytes | None) -> LocalBackend:
        return self

    def release_dedicated(self, route) -> None:
        return None

    def ready(self) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def peek(self, key: bytes) -> tuple[object, int | None]:
        """The live value object and expiry of a key, for WATCH on this backend."""
        store = self.store
        return store._lookup_notouch(key), store._expires.get(key)

    def submit(self, args: list[bytes], waiter: Waiter, command=None) -> None:
        waiter.complete(self._execute(args))

    def flush(self) -> None:
        return None

    async def call(self, args: list[bytes]) -> Reply:
        return self._execute(args)

    async def delete_prefix(self, prefix: bytes) -> int:
        return self.store.delete_prefix(prefix)

    async def count_prefix(self, prefix: bytes) -> int:
        return self.store.count_prefix(prefix)
