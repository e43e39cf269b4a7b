"""The command table and the generic transformer.

A forwarded command is described, not coded: `keys` says where its keys are (first,
last, step, as Redis's own command table does; a negative last counts from the end),
`value_offset` where each key's value is relative to the key, `decode` what the reply
holds.  `forward` applies the cache's crypto to any such command.  Commands that need
more (SET's GET flag, MSET's pairing) get a `check` or a small `run` of their own.

Must never: forward a command that is not in the table (fail closed), or put a key or
value into an error message or a log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from proxy.commands import replies
from proxy.resp import writer

Decoder = Callable[[object, object, object], bytes]


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

    def __post_init__(self) -> None:
        if self.run is None:
            self.run = forward


TABLE: dict[bytes, Command] = {}


def register(*commands: Command) -> None:
    for command in commands:
        name = command.name.encode()
        TABLE[name] = command
        TABLE[name.upper()] = command  # most clients send upper case: skip .lower()


def arity_error(name: str) -> bytes:
    return writer.error(f"ERR wrong number of arguments for '{name}' command")


def arity_ok(arity: int, argc: int) -> bool:
    return argc == arity if arity > 0 else argc >= -arity


def dispatch(client, args: list[bytes]) -> None:
    command = TABLE.get(args[0])
    if command is None:
        command = TABLE.get(args[0].lower())
        if command is None:
            from proxy.commands.refusals import refusal

            client.reply(refusal(args))
            return
    if not arity_ok(command.arity, len(args)):
        client.reply(arity_error(command.name))
        return
    if command.check is not None:
        problem = command.check(args)
        if problem is not None:
            client.reply(problem)
            return
    command.run(client, command, args)


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
