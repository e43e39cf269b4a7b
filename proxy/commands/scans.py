"""Listing: KEYS and SCAN (only without key hashing), HSCAN, SSCAN and ZSCAN.

With hashing on, Redis holds HMAC digests: there is nothing to list or match, so KEYS,
SCAN and RANDOMKEY stay refused with that reason.  With `hashing.disabled: true` the
stored names are the application's keys after the cache's namespace, so KEYS and SCAN
run in Redis on `<namespace><pattern>` and the namespace is cut from the names they
return (SCAN's cursor passes through untouched).

HSCAN, SSCAN and ZSCAN walk one key's fields or members and work in both modes; MATCH
needs the plaintext, so with hashing on (members encrypted) it is refused.  An element
that does not decrypt is left out of the page, as elsewhere.

Not served on a Redis Cluster: a cursor there is per node.
"""

from __future__ import annotations

from proxy.backends.redis.connection import glob_escape
from proxy.cache import DecryptRefused
from proxy.commands.table import Command, register
from proxy.resp import writer

_HASHED = writer.error(
    "ERR cachecloak does not serve '{}': keys are stored HMAC-hashed, so cachecloak "
    "cannot list, match or pick them (set hashing.disabled: true to list keys)")
_MATCH_ENCRYPTED = writer.error(
    "ERR cachecloak does not serve MATCH here: fields and members are stored encrypted, "
    "so Redis cannot match them; scan without MATCH and filter in the application")
_CLUSTER = writer.error(
    "ERR cachecloak does not serve KEYS or SCAN on a Redis Cluster (cursors are per "
    "node); use hashing.disabled and a standalone Redis, or track keys yourself")


def _refused_when_hashed(client, name: str) -> bool:
    if client.cache.hasher.enabled:
        client.reply(_HASHED.replace(b"{}", name.encode()))
        return True
    if "cluster" in client.cache.backend.description:
        client.reply(_CLUSTER)
        return True
    return False


def run_keys(client, command, args):
    if _refused_when_hashed(client, "keys"):
        return
    namespace = client.cache.hasher.namespace(client.db)
    client.forward([b"KEYS", glob_escape(namespace) + args[1]], _strip_names,
                   len(namespace), None)


def _strip_names(client, cut, reply) -> bytes:
    return writer.bulks(name[cut:] for name in reply)


def run_scan(client, command, args):
    if _refused_when_hashed(client, "scan"):
        return
    namespace = client.cache.hasher.namespace(client.db)
    pattern = b"*"
    rest: list[bytes] = []
    i = 2
    while i < len(args):
        option = args[i].upper()
        if option == b"MATCH" and i + 1 < len(args):
            pattern = args[i + 1]
        elif option in (b"COUNT", b"TYPE") and i + 1 < len(args):
            rest += [args[i], args[i + 1]]
        else:
            client.reply(writer.error("ERR syntax error"))
            return
        i += 2
    upstream = [b"SCAN", args[1], b"MATCH", glob_escape(namespace) + pattern, *rest]
    client.forward(upstream, _scan_page, len(namespace), None)


def _scan_page(client, cut, reply) -> bytes:
    cursor, names = reply
    return b"*2\r\n" + writer.bulk(cursor) + writer.bulks(name[cut:] for name in names)


def _options_without_match(client, args: list[bytes]) -> bool:
    """True (and an error sent) when MATCH is asked while members are encrypted."""
    if client.cache.members is None:
        return False
    for i in range(3, len(args), 2):
        if args[i].upper() == b"MATCH":
            client.reply(_MATCH_ENCRYPTED)
            return True
    return False


def run_member_scan(client, command, args):
    if _options_without_match(client, args):
        return
    key = client.cache.stored_key(client.db, args[1])
    args[1] = key
    decode = {"hscan": _hscan_page, "sscan": _sscan_page, "zscan": _zscan_page}[command.name]
    client.forward(args, decode, key, command)


def _page(cursor: bytes, items: list[bytes]) -> bytes:
    return b"*2\r\n" + writer.bulk(cursor) + b"*%d\r\n" % len(items) + b"".join(items)


def _sscan_page(client, key, reply) -> bytes:
    cursor, blobs = reply
    cache, db = client.cache, client.db
    try:
        items = [writer.bulk(m) for m in (cache.open_member(db, key, b) for b in blobs)
                 if m is not None]
    except DecryptRefused as exc:
        return writer.error(str(exc))
    return _page(cursor, items)


def _hscan_page(client, key, reply) -> bytes:
    cursor, flat = reply
    cache, db = client.cache, client.db
    items: list[bytes] = []
    try:
        for i in range(0, len(flat) - 1, 2):
            field = cache.open_member(db, key, flat[i])
            value = cache.open(db, key, flat[i + 1], flat[i]) if field is not None else None
            if value is not None:
                items += [writer.bulk(field), writer.bulk(value)]
    except DecryptRefused as exc:
        return writer.error(str(exc))
    return _page(cursor, items)


def _zscan_page(client, key, reply) -> bytes:
    cursor, flat = reply
    cache, db = client.cache, client.db
    items: list[bytes] = []
    try:
        for i in range(0, len(flat) - 1, 2):
            member = cache.open_member(db, key, flat[i])
            if member is not None:
                items += [writer.bulk(member), writer.bulk(flat[i + 1])]
    except DecryptRefused as exc:
        return writer.error(str(exc))
    return _page(cursor, items)


register(
    Command("keys", 2, run=run_keys),
    Command("scan", -2, run=run_scan),
    Command("hscan", -3, run=run_member_scan, keys=(1, 1, 1)),
    Command("sscan", -3, run=run_member_scan, keys=(1, 1, 1)),
    Command("zscan", -3, run=run_member_scan, keys=(1, 1, 1)),
)
