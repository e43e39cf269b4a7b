"""Hash commands.  Field names are sealed deterministically, values randomized.

A field name is a member (`cache.seal_member`: AES-SIV bound to the logical db and the
stored key), so Redis can still find a field by name.  A value is an envelope
(`cache.seal`) whose associated data also holds the sealed field name: a value copied
to another field, or to the same field of another key, does not open (it reads as a
miss and is counted).  So every reply that holds values also needs their field names:
HVALS is sent to Redis as HGETALL and only the values are returned; HRANDFIELD
WITHVALUES gets the fields with the values anyway.

Differences from Redis that cannot be avoided:
- HKEYS, HVALS and HGETALL list fields in Redis's order, which depends on the stored
  (sealed) bytes, so it is not the order Redis would give for the plaintext fields
  (Redis does not promise one either).
- HRANDFIELD picks at random, like Redis, from the same fields, not the same picks.
- HSTRLEN is computed from the envelope's length (fixed overhead), as STRLEN is.
- A value or field name that does not open is left out of HGETALL, HVALS, HKEYS and
  HRANDFIELD, and reads as nil in HGET and HMGET; HLEN still counts it.

HINCRBY and HINCRBYFLOAT are read-modify-write on encrypted values: they are served by
the transaction engine (transactions.py), not here.
"""

from __future__ import annotations

from proxy.commands import replies
from proxy.commands.table import Command, arity_error, forward_key, register


def _check_field_value_pairs(name: str):
    def check(args: list[bytes]) -> bytes | None:
        # Redis: "wrong number of arguments" when the field/value list is odd.
        return arity_error(name) if len(args) % 2 == 1 else None
    return check


def run_hvals(client, command: Command, args: list[bytes]) -> None:
    """HVALS: a value opens only with its sealed field name, so ask for both."""
    args[0] = b"HGETALL"
    forward_key(client, command, args, replies.hash_vals)


def run_hrandfield(client, command: Command, args: list[bytes]) -> None:
    """HRANDFIELD key [count [WITHVALUES]]: the reply's shape depends on the arguments
    (Redis rejects a fourth argument that is not WITHVALUES before replying)."""
    argc = len(args)
    decode = (replies.member if argc == 2 else replies.members if argc == 3
              else replies.field_value_array)
    forward_key(client, command, args, decode)


_ONE = (1, 1, 1)

register(
    Command("hset", -4, keys=_ONE, roles="fv", decode=replies.integer,
            check=_check_field_value_pairs("hset")),
    Command("hmset", -4, keys=_ONE, roles="fv", decode=replies.status,
            check=_check_field_value_pairs("hmset")),
    Command("hsetnx", 4, keys=_ONE, roles="fv", decode=replies.integer),
    Command("hget", 3, keys=_ONE, roles="f", decode=replies.hash_value),
    Command("hmget", -3, keys=_ONE, roles="f", decode=replies.hash_values),
    Command("hdel", -3, keys=_ONE, roles="f", decode=replies.integer),
    Command("hexists", 3, keys=_ONE, roles="f", decode=replies.integer),
    Command("hstrlen", 3, keys=_ONE, roles="f", decode=replies.plaintext_length),
    Command("hlen", 2, keys=_ONE, decode=replies.integer),
    Command("hgetall", 2, keys=_ONE, decode=replies.hash_map),
    Command("hkeys", 2, keys=_ONE, decode=replies.members),
    Command("hvals", 2, run=run_hvals, keys=_ONE),
    Command("hrandfield", -2, run=run_hrandfield, keys=_ONE),
)
