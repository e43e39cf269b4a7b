"""Sorted-set commands.  Members are sealed deterministically; scores stay plaintext.

A member is stored as `cache.seal_member(db, stored key, member)` (AES-SIV, bound to the
key) so that Redis can find it (ZSCORE, ZREM, ZADD updates); its score is stored as it
is, so that Redis can order and select by score (ZRANGE, ZCOUNT, ZREMRANGEBYSCORE...).
Redis therefore learns the scores.

Lexicographic commands (ZRANGEBYLEX, ZREVRANGEBYLEX, ZLEXCOUNT, ZREMRANGEBYLEX, and
ZRANGE ... BYLEX) are refused: Redis would compare encrypted members, whose order is
meaningless, and the range bounds would reach Redis in plaintext.

Differences from Redis that cannot be avoided:
- Members with equal scores are ordered by their sealed bytes in Redis, not by their
  plaintext: ZRANGE, ZRANK/ZREVRANK, ZPOPMIN/ZPOPMAX and ZREMRANGEBYRANK order (and
  cut) ties differently from Redis with plaintext members.  Members with different
  scores are ordered exactly as in Redis.
- A member that does not open (changed in Redis) is left out of ZRANGE-style and
  ZPOPMIN/ZPOPMAX replies; ZCARD, ZCOUNT and ranks still count it.
"""

from __future__ import annotations

from proxy.commands import replies
from proxy.commands.connection import _parse_ll
from proxy.commands.table import ROLE_MEMBER, ROLE_PLAIN, Command, c_word, forward_key, register
from proxy.resp import writer

_SCORE_MEMBER = ROLE_PLAIN + ROLE_MEMBER
_ZADD_FLAGS = frozenset((b"nx", b"xx", b"ch", b"incr", b"gt", b"lt"))
_SYNTAX = writer.error("ERR syntax error")
_NOT_INTEGER = writer.error("ERR value is not an integer or out of range")
_LEX_WITHSCORES = writer.error(
    "ERR syntax error, WITHSCORES not supported in combination with BYLEX")
_BYLEX = writer.error(
    "ERR cachecloak does not serve 'zrange' with BYLEX: sorted-set members are stored "
    "encrypted, so their lexicographic order in Redis is meaningless")


def run_zadd(client, command: Command, args: list[bytes]) -> None:
    """ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...]: the flags
    are found as Redis finds them, then the members after them are sealed."""
    start = 2
    argc = len(args)
    while start < argc and c_word(args[start]) in _ZADD_FLAGS:
        start += 1
    forward_key(client, command, args, replies.integer_or_double, _SCORE_MEMBER, start)


def _range_options(args: list[bytes], auto_direction: bool, auto_type: bool):
    """Redis's option loop of ZRANGE and its older forms (t_zset.c): an error reply, or
    (withscores, bylex)."""
    withscores = bylex = False
    j, argc = 4, len(args)
    while j < argc:
        word = c_word(args[j])
        if word == b"withscores":
            withscores = True
        elif word == b"limit" and argc - j - 1 >= 2:
            if _parse_ll(args[j + 1]) is None or _parse_ll(args[j + 2]) is None:
                return _NOT_INTEGER
            j += 2
        elif auto_direction and word == b"rev":
            auto_direction = False
        elif auto_type and word == b"bylex":
            auto_type, bylex = False, True
        elif auto_type and word == b"byscore":
            auto_type = False
        else:
            return _SYNTAX
        j += 1
    return withscores, bylex


def run_zrange(client, command: Command, args: list[bytes]) -> None:
    """ZRANGE, ZRANGEBYSCORE, ZREVRANGE, ZREVRANGEBYSCORE.  Redis validates the options;
    cachecloak only needs WITHSCORES to decode, and never forwards a BYLEX range (its
    bounds are plaintext members)."""
    withscores = False
    for arg in args[4:]:
        word = c_word(arg)
        if word == b"withscores":
            withscores = True
        elif word == b"bylex":
            # Answer as Redis would, up to where it would serve the range: errors in the
            # options are Redis's; a valid BYLEX range is refused.
            auto = command.name == "zrange"
            parsed = _range_options(args, auto, auto)
            if type(parsed) is bytes:
                client.reply(parsed)
            else:
                client.reply(_LEX_WITHSCORES if parsed[0] else _BYLEX)
            return
    forward_key(client, command, args, replies.scored if withscores else replies.members)


def run_zpop(client, command: Command, args: list[bytes]) -> None:
    """ZPOPMIN / ZPOPMAX key [count]: RESP3 nests the pairs only when a count is given."""
    forward_key(client, command, args, replies.scored if len(args) > 2 else replies.scored_flat)


_ONE = (1, 1, 1)

register(
    Command("zadd", -4, run=run_zadd, keys=_ONE),
    Command("zincrby", 4, keys=_ONE, roles=_SCORE_MEMBER, decode=replies.double),
    Command("zrem", -3, keys=_ONE, roles=ROLE_MEMBER, decode=replies.integer),
    Command("zscore", 3, keys=_ONE, roles=ROLE_MEMBER, decode=replies.double),
    Command("zmscore", -3, keys=_ONE, roles=ROLE_MEMBER, decode=replies.doubles),
    Command("zrank", 3, keys=_ONE, roles=ROLE_MEMBER, decode=replies.plain),
    Command("zrevrank", 3, keys=_ONE, roles=ROLE_MEMBER, decode=replies.plain),
    Command("zcard", 2, keys=_ONE, decode=replies.integer),
    Command("zcount", 4, keys=_ONE, decode=replies.integer),
    Command("zrange", -4, run=run_zrange, keys=_ONE),
    Command("zrangebyscore", -4, run=run_zrange, keys=_ONE),
    Command("zrevrange", -4, run=run_zrange, keys=_ONE),
    Command("zrevrangebyscore", -4, run=run_zrange, keys=_ONE),
    Command("zremrangebyscore", 4, keys=_ONE, decode=replies.integer),
    Command("zremrangebyrank", 4, keys=_ONE, decode=replies.integer),
    Command("zpopmin", -2, run=run_zpop, keys=_ONE),
    Command("zpopmax", -2, run=run_zpop, keys=_ONE),
)
