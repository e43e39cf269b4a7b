"""String commands.  Values are sealed on the way in and opened on the way out."""

from __future__ import annotations

from proxy.commands import replies
from proxy.commands.table import Command, arity_error, register


def run_set(client, command: Command, args: list[bytes]) -> None:
    """SET key value [NX|XX] [GET] [EX|PX|EXAT|PXAT n|KEEPTTL]: options pass through
    (Redis validates them); only the GET flag changes what the reply holds."""
    cache, db = client.cache, client.db
    key = cache.stored_key(db, args[1])
    args[1] = key
    args[2] = cache.seal(db, key, args[2])
    wants_old = False
    if len(args) > 3:
        for option in args[3:]:
            # Redis compares options as C strings, so b"get\0x" is GET too: missing it
            # would send the old envelope to the client as a status line.
            if option[:3].upper() == b"GET" and (len(option) == 3 or option[3] == 0):
                wants_old = True
                break
    if wants_old:
        client.forward(args, replies.value, key, command)
    else:
        client.forward(args, replies.status_or_nil, key, command)


def _check_pairs(name: str):
    def check(args: list[bytes]) -> bytes | None:
        return arity_error(name) if len(args) % 2 == 0 else None
    return check


register(
    Command("get", 2, keys=(1, 1, 1), decode=replies.value),
    Command("set", -3, run=run_set, keys=(1, 1, 1), batchable=True),
    Command("setnx", 3, keys=(1, 1, 1), value_offset=1, decode=replies.integer),
    Command("setex", 4, keys=(1, 1, 1), value_offset=2, decode=replies.status),
    Command("psetex", 4, keys=(1, 1, 1), value_offset=2, decode=replies.status),
    Command("getset", 3, keys=(1, 1, 1), value_offset=1, decode=replies.value),
    Command("getdel", 2, keys=(1, 1, 1), decode=replies.value),
    Command("getex", -2, keys=(1, 1, 1), decode=replies.value),
    Command("mget", -2, keys=(1, -1, 1), decode=replies.values, split="mget"),
    Command("mset", -3, keys=(1, -1, 2), value_offset=1, decode=replies.status,
            check=_check_pairs("mset"), split="mset"),
    Command("msetnx", -3, keys=(1, -1, 2), value_offset=1, decode=replies.integer,
            check=_check_pairs("msetnx"), split="crossslot"),
    Command("strlen", 2, keys=(1, 1, 1), decode=replies.plaintext_length),
)
