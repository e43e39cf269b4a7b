"""Reply decoders: turn a backend reply (as hiredis parses RESP2) into client bytes.

A decoder is `decode(client, ctx, reply) -> bytes`.  `client` is the command's slot: its
`cache`, and the `db` and `proto` the client had when the command was dispatched (a later
pipelined SELECT or HELLO must not change them).  `ctx` is what the transformer kept
for it (the stored name of the key whose value the reply holds, for example).  Error
replies never reach a decoder: the waiter passes them through first.  Decoders open
envelopes through the client's cache and never return a stored value that does not
authenticate.
"""

from __future__ import annotations

from proxy.cache import DecryptRefused
from proxy.resp import writer
from proxy.resp.writer import NULL_ARRAY, NULL_BULK


def status(client, ctx, reply) -> bytes:
    return b"+" + reply + b"\r\n"


def integer(client, ctx, reply) -> bytes:
    return b":%d\r\n" % reply


def plain(client, ctx, reply) -> bytes:
    """Any reply that holds no value of ours (bulk text, arrays of names, nil)."""
    return writer.value(reply, client.proto)


def value(client, ctx, reply) -> bytes:
    """A bulk string holding one envelope, stored under the name `ctx`."""
    if reply is None:
        return NULL_BULK[client.proto]
    try:
        plaintext = client.cache.open(client.db, ctx, reply)
    except DecryptRefused as exc:
        return writer.error(str(exc))
    if plaintext is None:
        return NULL_BULK[client.proto]
    return b"$%d\r\n%b\r\n" % (len(plaintext), plaintext)


def values(client, ctx, reply) -> bytes:
    """An array of envelopes (MGET); `ctx` lists the stored names in the same order."""
    if reply is None:
        return NULL_ARRAY[client.proto]
    cache, db, null = client.cache, client.db, NULL_BULK[client.proto]
    out = [b"*%d\r\n" % len(reply)]
    try:
        for stored_key, blob in zip(ctx, reply, strict=False):
            if blob is None:
                out.append(null)
                continue
            plaintext = cache.open(db, stored_key, blob)
            out.append(null if plaintext is None else
                       b"$%d\r\n%b\r\n" % (len(plaintext), plaintext))
    except DecryptRefused as exc:
        return writer.error(str(exc))
    return b"".join(out)


def status_or_nil(client, ctx, reply) -> bytes:
    """SET without GET: +OK, or nil when NX/XX prevented the write."""
    if reply is None:
        return NULL_BULK[client.proto]
    return b"+" + reply + b"\r\n"


def plaintext_length(client, ctx, reply) -> bytes:
    """STRLEN: Redis measured the envelope; report the plaintext's length."""
    return b":%d\r\n" % client.cache.plaintext_length(reply)
