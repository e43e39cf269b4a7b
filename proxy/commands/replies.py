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
from proxy.resp.writer import NULL_ARRAY, NULL_BULK, OK


def status(client, ctx, reply) -> bytes:
    return OK if reply == b"OK" else b"+" + reply + b"\r\n"


def integer(client, ctx, reply) -> bytes:
    return b":%d\r\n" % reply


def plain(client, ctx, reply) -> bytes:
    """Any reply that holds no value of ours (bulk text, arrays of names, nil)."""
    return writer.value(reply, client.proto)


def value(client, ctx, reply) -> bytes:
    """A bulk string holding one envelope, stored under the name `ctx`."""
    if reply is None:
        return NULL_BULK[client.proto]
    bulk = client.cache.open_bulk(client.db, ctx, reply)
    if bulk is not None:
        return bulk
    try:  # an old key, or not authentic: the reason and the policy
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
    return OK if reply == b"OK" else b"+" + reply + b"\r\n"


def plaintext_length(client, ctx, reply) -> bytes:
    """STRLEN: Redis measured the envelope; report the plaintext's length."""
    return b":%d\r\n" % client.cache.plaintext_length(reply)


# -- hashes, sets, lists, sorted sets ---------------------------------------------------
#
# Members and hash field names come back AES-SIV-sealed (`cache.open_member`), hash values
# and list elements as envelopes (`cache.open`, hash values with their sealed field name
# as context).  What does not open is never returned: under the default policy a single
# reply (HGET, LINDEX, SPOP without count) reads as nil, an entry of a positional array
# (HMGET) as nil in its place, and an entry of a collection (SMEMBERS, HGETALL, LRANGE,
# ZRANGE) is left out, as if it were not there; it is counted either way.  Under
# `onDecryptError: error` the whole reply is that error.  Scores are plaintext: Redis
# sends them as bulk text (RESP2) and they become RESP3 doubles for RESP3 clients.

def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(data), data)


def _members(client, key: bytes, blobs: list) -> list[bytes]:
    """Bulk replies of the members that open; the rest are left out (and counted)."""
    open_member, db = client.cache.open_member, client.db
    out = []
    for blob in blobs:
        member = open_member(db, key, blob)
        if member is not None:
            out.append(b"$%d\r\n%b\r\n" % (len(member), member))
    return out


def member(client, key, reply) -> bytes:
    """One member or field name, or nil (SPOP, SRANDMEMBER, HRANDFIELD without count)."""
    if reply is None:
        return NULL_BULK[client.proto]
    try:
        plaintext = client.cache.open_member(client.db, key, reply)
    except DecryptRefused as exc:
        return writer.error(str(exc))
    return NULL_BULK[client.proto] if plaintext is None else _bulk(plaintext)


def members(client, key, reply) -> bytes:
    """An array of members or field names (HKEYS, SRANDMEMBER n, ZRANGE)."""
    try:
        out = _members(client, key, reply)
    except DecryptRefused as exc:
        return writer.error(str(exc))
    return b"*%d\r\n" % len(out) + b"".join(out)


def member_set(client, key, reply) -> bytes:
    """A set of members: a RESP3 set (`~`), an array in RESP2 (SMEMBERS, SPOP n)."""
    try:
        out = _members(client, key, reply)
    except DecryptRefused as exc:
        return writer.error(str(exc))
    return (b"~%d\r\n" if client.proto == 3 else b"*%d\r\n") % len(out) + b"".join(out)


def member_or_set(client, key, reply) -> bytes:
    """SPOP: one member (no count) or a set of them (count)."""
    return member_set(client, key, reply) if type(reply) is list else member(client, key, reply)


def member_or_members(client, key, reply) -> bytes:
    """SRANDMEMBER: one member (no count) or an array of them (count)."""
    return members(client, key, reply) if type(reply) is list else member(client, key, reply)


def hash_value(client, ctx, reply) -> bytes:
    """HGET: one hash value; ctx is (stored key, [sealed field name])."""
    if reply is None:
        return NULL_BULK[client.proto]
    key, fields = ctx
    try:
        plaintext = client.cache.open(client.db, key, reply, fields[0])
    except DecryptRefused as exc:
        return writer.error(str(exc))
    return NULL_BULK[client.proto] if plaintext is None else _bulk(plaintext)


def hash_values(client, ctx, reply) -> bytes:
    """HMGET: values in the order of the fields asked for; nil for missing ones."""
    key, fields = ctx
    open_, db, null = client.cache.open, client.db, NULL_BULK[client.proto]
    out = [b"*%d\r\n" % len(reply)]
    try:
        for field, blob in zip(fields, reply, strict=False):
            plaintext = None if blob is None else open_(db, key, blob, field)
            out.append(null if plaintext is None else _bulk(plaintext))
    except DecryptRefused as exc:
        return writer.error(str(exc))
    return b"".join(out)


def _field_value_pairs(client, key: bytes, reply: list) -> list[tuple[bytes, bytes]]:
    """(field, value) bulk pairs from a flat field, value, ... reply: a pair whose field
    or value does not open is left out."""
    cache, db = client.cache, client.db
    open_member, open_ = cache.open_member, cache.open
    pairs = []
    for i in range(0, len(reply) - 1, 2):
        sealed_field = reply[i]
        field = open_member(db, key, sealed_field)
        if field is None:
            continue
        value = open_(db, key, reply[i + 1], sealed_field)
        if value is None:
            continue
        pairs.append((_bulk(field), _bulk(value)))
    return pairs


def hash_map(client, key, reply) -> bytes:
    """HGETALL: a RESP3 map, a flat field, value, ... array in RESP2."""
    try:
        pairs = _field_value_pairs(client, key, reply)
    except DecryptRefused as exc:
        return writer.error(str(exc))
    return writer.map_(client.proto, pairs)


def hash_vals(client, key, reply) -> bytes:
    """HVALS, sent upstream as HGETALL: a value opens only with its field name."""
    try:
        pairs = _field_value_pairs(client, key, reply)
    except DecryptRefused as exc:
        return writer.error(str(exc))
    return b"*%d\r\n" % len(pairs) + b"".join(value for _, value in pairs)


def field_value_array(client, key, reply) -> bytes:
    """HRANDFIELD n WITHVALUES: flat in RESP2, an array of [field, value] in RESP3."""
    try:
        pairs = _field_value_pairs(client, key, reply)
    except DecryptRefused as exc:
        return writer.error(str(exc))
    if client.proto == 3:
        return b"*%d\r\n" % len(pairs) + b"".join(b"*2\r\n" + f + v for f, v in pairs)
    return b"*%d\r\n" % (2 * len(pairs)) + b"".join(f + v for f, v in pairs)


def elements(client, key, reply) -> bytes:
    """List elements (LRANGE, LPOP/RPOP with a count); nil array for a missing key."""
    if reply is None:
        return NULL_ARRAY[client.proto]
    open_, db = client.cache.open, client.db
    out = []
    try:
        for blob in reply:
            plaintext = open_(db, key, blob)
            if plaintext is not None:
                out.append(b"$%d\r\n%b\r\n" % (len(plaintext), plaintext))
    except DecryptRefused as exc:
        return writer.error(str(exc))
    return b"*%d\r\n" % len(out) + b"".join(out)


def double(client, ctx, reply) -> bytes:
    """A score (ZSCORE, ZINCRBY) or nil."""
    if reply is None:
        return NULL_BULK[client.proto]
    if client.proto == 3:
        return b",%b\r\n" % reply
    return b"$%d\r\n%b\r\n" % (len(reply), reply)


def doubles(client, ctx, reply) -> bytes:
    """ZMSCORE: scores or nils, in the order asked for."""
    proto = client.proto
    null = NULL_BULK[proto]
    return b"*%d\r\n" % len(reply) + b"".join(
        null if score is None else writer.double(proto, score) for score in reply)


def integer_or_double(client, ctx, reply) -> bytes:
    """ZADD: the number of members added (or changed), or with INCR the new score / nil."""
    if type(reply) is int:
        return b":%d\r\n" % reply
    return double(client, ctx, reply)


def _scored_pairs(client, key: bytes, reply: list) -> list[tuple[bytes, bytes]]:
    open_member, db, proto = client.cache.open_member, client.db, client.proto
    double_ = writer.double
    pairs = []
    for i in range(0, len(reply) - 1, 2):
        plaintext = open_member(db, key, reply[i])
        if plaintext is not None:
            pairs.append((_bulk(plaintext), double_(proto, reply[i + 1])))
    return pairs


def scored(client, key, reply) -> bytes:
    """Members with scores (ZRANGE WITHSCORES, ZPOPMIN n): flat member, score, ... in
    RESP2; an array of [member, score] pairs in RESP3."""
    try:
        pairs = _scored_pairs(client, key, reply)
    except DecryptRefused as exc:
        return writer.error(str(exc))
    if client.proto == 3:
        return b"*%d\r\n" % len(pairs) + b"".join(b"*2\r\n" + m + s for m, s in pairs)
    return b"*%d\r\n" % (2 * len(pairs)) + b"".join(m + s for m, s in pairs)


def scored_flat(client, key, reply) -> bytes:
    """ZPOPMIN / ZPOPMAX without a count: [member, score], flat in RESP3 too."""
    try:
        pairs = _scored_pairs(client, key, reply)
    except DecryptRefused as exc:
        return writer.error(str(exc))
    return b"*%d\r\n" % (2 * len(pairs)) + b"".join(m + s for m, s in pairs)


# What proxy._native.ReplyReader.take can decode in C for a client's batch, by decoder
# (the numbers are its KIND_* constants; tests/test_native.py checks they agree and that
# take gives these decoders' bytes).  Any other decoder's replies are decoded here.
REPLY_KINDS = {value: 1, status_or_nil: 2, status: 3, integer: 4}

