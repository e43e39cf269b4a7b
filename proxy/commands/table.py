"""The command table and the generic transformer.

A forwarded command is described, not coded: `keys` says where its keys are (first,
last, step, as Redis's own command table does; a negative last counts from the end),
`value_offset` where each key's value is relative to the key, `decode` what the reply
holds.  `forward` applies the cache's crypto to any such command.  Commands that need
more (SET's GET flag, MSET's pairing) get a `check` or a small `run` of their own.

Commands on hashes, sets, lists and sorted sets have one key (at 1) followed by
arguments with roles, described by `roles`: a pattern applied cyclically to the
arguments after the key (`ROLE_*` below): "fv" for HSET's field/value pairs, "m" for
SADD's members, ".m" for ZINCRBY's increment and member.  `forward_roles` seals each
argument as its role says: field names and members deterministically (AES-SIV, bound
to the key), hash values randomized and bound to their sealed field name, list elements
randomized.  A reply that holds members or values is opened by the command's decoder,
with the stored key (and, for hash values, the sealed field names) as `ctx`.

Must never: forward a command that is not in the table (fail closed), or put a key or
value into an error message or a log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from hiredis import ReplyError

from proxy.cache import DecryptRefused
from proxy.commands import replies
from proxy.resp import writer

log = logging.getLogger("cachecloak.commands")

Decoder = Callable[[object, object, object], bytes]

# Roles of the arguments after the key (Command.roles).
ROLE_FIELD = "f"    # a hash field name: seal_member; a following "v" is bound to it
ROLE_VALUE = "v"    # a hash value: seal with the sealed field name as context
ROLE_MEMBER = "m"   # a set / sorted-set member: seal_member
ROLE_ELEMENT = "e"  # a list element: seal
ROLE_PLAIN = "."    # anything else (a score, an index): passed as it is


@dataclass(slots=True)
class Command:
    name: str                       # lowercase; `client|setname` for a subcommand
    arity: int                      # Redis's convention: n exact, -n at least n
    run: Callable | None = None     # (client, command, args) -> None; None = forward
    keys: tuple[int, int, int] = (0, 0, 0)
    value_offset: int = 0           # value's position relative to its key; 0 = no value
    decode: Decoder = replies.plain
    check: Callable[[list[bytes]], bytes | None] | None = None  # an error reply or None
    subcommands: dict[bytes, Command] | None = None
    # How a cluster route splits this command when its keys live in several slots:
    # "sum" (integer replies added), "mget" (arrays joined in key order), "mset" (+OK),
    # "crossslot" (refused with Redis Cluster's CROSSSLOT error).  None: one slot only.
    split: str | None = None
    # Roles of the arguments after the (single) key, applied cyclically: see ROLE_*.
    # A command with roles is forwarded by `forward_roles`; with an "f" among them its
    # decoder gets (stored key, [sealed field names]) as ctx, else the stored key.
    roles: str = ""
    # Allowed before a client has authenticated to a listener with a password
    # (Redis's no-auth flag: AUTH, HELLO, QUIT, RESET).
    no_auth: bool = False
    # Its run does nothing but transform and `client.forward` once, so it can join a
    # client's batch (proxy.server.client.Batch).  Set for the generic transformers.
    batchable: bool = False

    def __post_init__(self) -> None:
        if self.run is None:
            self.run = forward_roles if self.roles else forward
            self.batchable = True


TABLE: dict[bytes, Command] = {}


def register(*commands: Command) -> None:
    for command in commands:
        name = command.name.encode()
        TABLE[name] = command
        TABLE[name.upper()] = command  # most clients send upper case: skip .lower()


NOAUTH = b"-NOAUTH Authentication required.\r\n"


def arity_error(name: str) -> bytes:
    return writer.error(f"ERR wrong number of arguments for '{name}' command")


def arity_ok(arity: int, argc: int) -> bool:
    return argc == arity if arity > 0 else argc >= -arity


def dispatch(client, args: list[bytes]) -> None:
    command = TABLE.get(args[0])
    if command is None:
        command = TABLE.get(args[0].lower())
    if client.multi is not None:
        from proxy.commands.transactions import queue_in_multi

        if queue_in_multi(client, command, args):
            return
    if command is None:
        from proxy.commands.refusals import refusal

        client.reply(refusal(args))
        return
    arity, argc = command.arity, len(args)
    if argc != arity if arity > 0 else argc < -arity:  # arity_ok, inlined: per command
        if command.name == "exec":  # Redis: a rejected EXEC discards the transaction
            from proxy.commands.transactions import abort_exec

            abort_exec(client, f"wrong number of arguments for '{command.name}' command")
            return
        client.reply(arity_error(command.name))
        return
    if not client.authenticated and not command.no_auth:
        client.reply(NOAUTH)
        return
    if command.check is not None:
        problem = command.check(args)
        if problem is not None:
            client.reply(problem)
            return
    if client.batch is not None and not command.batchable:
        client.end_batch()  # what this command does must come after the batch's commands
    command.run(client, command, args)


def simple_table() -> dict[bytes, tuple[int, int, Decoder, int]]:
    """The commands proxy._native.Forwarder transforms in C, for a client's batch or a
    read's only command, by name as clients send it: (arity, value offset, decoder,
    reply kind).

    Exactly those `forward` handles with one key at 1 and no check, and SET without
    options (run_set's only case that needs no look at the options).  Whatever else a
    read holds goes through dispatch; tests/test_native_forward.py checks both give
    the same requests."""
    from proxy.commands.strings import run_set

    table = {}
    for name, command in TABLE.items():
        if (command.run is forward and command.keys == (1, 1, 1) and command.check is None
                and command.batchable):
            table[name] = (command.arity, command.value_offset, command.decode,
                           replies.REPLY_KINDS.get(command.decode, 0))
        elif command.run is run_set:
            table[name] = (3, 1, replies.status_or_nil, replies.REPLY_KINDS[replies.status_or_nil])
    return table


def subcommands(*commands: Command) -> dict[bytes, Command]:
    """A container's table (CLIENT, CLUSTER): `client|setname` is found as b"setname"."""
    return {c.name.split("|", 1)[1].encode(): c for c in commands}


def dispatch_subcommand(client, command: Command, args: list[bytes]) -> None:
    """For containers (CLIENT, COMMAND): find and run the subcommand, as Redis does."""
    sub = command.subcommands.get(args[1].lower()) if command.subcommands else None
    if sub is None:
        from proxy.commands.refusals import subcommand_refusal

        client.reply(subcommand_refusal(command.name, args[1]))
        return
    if not arity_ok(sub.arity, len(args)):
        client.reply(arity_error(sub.name))
        return
    sub.run(client, sub, args)


def forward(client, command: Command, args: list[bytes]) -> None:
    """Hash every key, seal every value, and send the command to the backend."""
    cache = client.cache
    db = client.db
    first, last, step = command.keys
    offset = command.value_offset
    stored_key = cache.stored_key
    if first == last:  # single-key commands: the common case, kept short
        key = stored_key(db, args[first])
        args[first] = key
        if offset:
            args[first + offset] = cache.seal(db, key, args[first + offset])
        client.forward(args, command.decode, key, command)
        return
    if last < 0:
        last += len(args)
    keys = []
    for i in range(first, last + 1, step):
        key = stored_key(db, args[i])
        args[i] = key
        keys.append(key)
        if offset:
            args[i + offset] = cache.seal(db, key, args[i + offset])
    client.forward(args, command.decode, keys, command)


def forward_no_keys(client, command: Command, args: list[bytes]) -> None:
    client.forward(args, command.decode, None, command)


def forward_roles(client, command: Command, args: list[bytes]) -> None:
    """One key at 1, then arguments sealed as `command.roles` says."""
    cache, db = client.cache, client.db
    key = cache.stored_key(db, args[1])
    args[1] = key
    fields = seal_roles(cache, db, key, args, 2, command.roles)
    client.forward(args, command.decode, key if fields is None else (key, fields), command)


def forward_key(client, command: Command, args: list[bytes], decode: Decoder,
                roles: str = "", start: int = 2) -> None:
    """For small `run`s: hash the key at 1, seal args[start:] by `roles`, forward with
    the decoder chosen for this call."""
    cache, db = client.cache, client.db
    key = cache.stored_key(db, args[1])
    args[1] = key
    fields = seal_roles(cache, db, key, args, start, roles) if roles else None
    client.forward(args, decode, key if fields is None else (key, fields), command)


def seal_roles(cache, db: int, key: bytes, args: list[bytes], start: int,
               roles: str) -> list[bytes] | None:
    """Seal args[start:] in place by `roles` (cyclic).  Returns the sealed field names
    when the roles name fields (the decoder needs them as context), else None."""
    n = len(roles)
    if n == 1:  # one role for every argument: the common case (HDEL, SADD, LPUSH, ZREM)
        role = roles
        if role in (ROLE_MEMBER, ROLE_FIELD):
            seal_member = cache.seal_member
            for i in range(start, len(args)):
                args[i] = seal_member(db, key, args[i])
            return args[start:] if role == ROLE_FIELD else None
        if role == ROLE_ELEMENT:
            seal = cache.seal
            for i in range(start, len(args)):
                args[i] = seal(db, key, args[i])
        return None
    fields: list[bytes] | None = [] if ROLE_FIELD in roles else None
    field = None
    for i in range(start, len(args)):
        role = roles[(i - start) % n]
        if role == ROLE_FIELD:
            field = args[i] = cache.seal_member(db, key, args[i])
            fields.append(field)
        elif role == ROLE_MEMBER:
            args[i] = cache.seal_member(db, key, args[i])
        elif role == ROLE_VALUE:
            args[i] = cache.seal(db, key, args[i], field)
        elif role == ROLE_ELEMENT:
            args[i] = cache.seal(db, key, args[i])
    return fields


def c_word(arg: bytes) -> bytes:
    """An option as Redis's strcasecmp sees it: cut at the first NUL, lower-cased."""
    cut = arg.find(b"\0")
    return (arg if cut < 0 else arg[:cut]).lower()


# -- multi-step operations (client.run_op) ---------------------------------------------

WRONGTYPE = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"


async def call_all(route, commands: list[list[bytes]]) -> list:
    """Send several commands to the backend as one pipeline; their replies, in order
    (an error reply of Redis is a hiredis.ReplyError in the list, not raised)."""
    if len(commands) == 1 or getattr(route, "local", False):
        # The in-process backend answers at once: awaiting its calls one by one never
        # yields to the event loop, which keeps a read-decide-write step atomic there
        # (asyncio.gather would schedule tasks and let other clients run in between).
        return [await route.call(c) for c in commands]
    return list(await asyncio.gather(*(route.call(c) for c in commands)))


def upstream_error(reply) -> bytes | None:
    """An error reply of Redis, ready for the client, or None if `reply` is not one."""
    if type(reply) is ReplyError:
        return writer.error(str(reply))
    return None


async def guarded(name: str, step, *args) -> bytes:
    """The coroutine to give `client.run_op`: runs `step(*args)` (an async function
    returning reply bytes) and turns failures into safe error replies.

    The step's coroutine is made only when the operation starts, so an operation that
    is closed unstarted (inside MULTI) leaves nothing un-awaited.  DecryptRefused and
    backend failures carry safe texts; anything else is a bug whose message might quote
    a key or a member, so only its type is reported."""
    try:
        return await step(*args)
    except DecryptRefused as exc:
        return writer.error(str(exc))
    except Exception as exc:  # noqa: BLE001
        if type(exc).__name__ == "UpstreamFailure":
            return writer.error(f"ERR cachecloak: {exc}")
        log.error("internal error in %s (%s)", name, type(exc).__name__)
        return writer.error(f"ERR cachecloak internal error ({type(exc).__name__}) in "
                            f"'{name}'; it may have been partly applied")
