"""Why a command is not served.  Fail closed: whatever is not in the table is refused here.

Every Redis 7 command that cachecloak does not serve has a reason a user can act on.
Unknown commands get Redis's own "unknown command" error, except that cachecloak does
not echo the arguments back: they may hold keys or values, and error texts end up in
application logs.
"""

from __future__ import annotations

from proxy.resp import writer

_LISTING = "keys are stored HMAC-hashed, so cachecloak cannot list, match or pick them"
_SCRIPTS = "a script would run inside Redis on hashed keys and encrypted values"
_CIPHERTEXT = ("it would have Redis compute on encrypted values, which only cachecloak "
               "can read")
_NOT_YET = "it is not served by this version of cachecloak"
_ADMIN = ("it administers the Redis server itself; run it against Redis directly, "
          "with an operator's credentials")
_PUBSUB = "publish/subscribe is not served: cachecloak is a cache proxy"
_BLOCKING = "blocking commands are not served: they would hold a shared upstream connection"
_RAW = "it exposes or writes Redis's raw stored bytes, bypassing encryption"

_EQUALITY = ("list elements are encrypted with a fresh random nonce each, so Redis cannot "
             "compare them with a given value")
_LEX = ("sorted-set members are stored encrypted, so their lexicographic order in Redis is "
        "meaningless")

_GROUPS: dict[str, tuple[str, ...]] = {
    _LISTING: ("keys", "scan", "randomkey"),
    _EQUALITY: ("lrem", "lpos", "linsert"),
    _LEX: ("zrangebylex", "zrevrangebylex", "zlexcount", "zremrangebylex"),
    _SCRIPTS: ("eval", "eval_ro", "evalsha", "evalsha_ro", "fcall", "fcall_ro", "function",
               "script"),
    _CIPHERTEXT: ("setbit", "getbit", "bitcount", "bitop", "bitfield", "bitfield_ro", "bitpos",
                  "lcs", "sort", "sort_ro", "pfadd", "pfcount", "pfmerge", "pfdebug",
                  "pfselftest", "substr"),
    _RAW: ("dump", "restore", "restore-asking", "migrate", "object", "memory", "debug"),
    _ADMIN: ("acl", "bgrewriteaof", "bgsave", "save", "config", "shutdown", "slaveof",
             "replicaof", "replconf", "sync", "psync", "failover", "module", "monitor",
             "slowlog", "latency", "lastsave", "lolwut", "role", "swapdb", "move"),
    _PUBSUB: ("subscribe", "unsubscribe", "psubscribe", "punsubscribe", "publish", "pubsub",
              "ssubscribe", "sunsubscribe", "spublish"),
    _BLOCKING: ("blpop", "brpop", "brpoplpush", "blmove", "blmpop", "bzpopmin", "bzpopmax",
                "bzmpop", "xread", "xreadgroup"),
    _NOT_YET: (
        "sintercard", "lmpop", "zrangestore", "zdiff",
        "zdiffstore", "zinter", "zintercard", "zinterstore", "zunion", "zunionstore",
        "zrandmember", "zmpop", "geoadd", "geodist", "geohash", "geopos", "georadius",
        "georadius_ro", "georadiusbymember", "georadiusbymember_ro", "geosearch",
        "geosearchstore", "xack", "xadd", "xautoclaim", "xclaim", "xdel", "xgroup", "xinfo",
        "xlen", "xpending", "xrange", "xrevrange", "xsetid", "xtrim"),
}

REFUSALS: dict[str, str] = {name: reason for reason, names in _GROUPS.items() for name in names}

# Subcommands Redis 7 has and cachecloak does not serve, with the reason.
_SUBCOMMAND_REFUSALS = {
    "client": ({"caching", "getredir", "help", "kill", "no-evict", "pause", "reply", "tracking",
                "trackinginfo", "unblock", "unpause", "no-touch"},
               "only CLIENT SETNAME, GETNAME, ID, SETINFO, INFO and LIST are served"),
    "command": ({"getkeys", "getkeysandflags", "help"},
                "only COMMAND COUNT, INFO, DOCS and LIST are served"),
    # cachecloak shows a cluster client one node owning every slot (cluster_info.py).
    "cluster": ({"addslots", "addslotsrange", "bumpepoch", "count-failure-reports",
                 "countkeysinslot", "delslots", "delslotsrange", "failover", "flushslots",
                 "forget", "getkeysinslot", "help", "links", "meet", "myshardid", "replicas",
                 "replicate", "reset", "saveconfig", "set-config-epoch", "setslot", "slaves"},
                "cachecloak presents itself as a single node owning every slot and serves "
                "only CLUSTER SLOTS, SHARDS, NODES, INFO, MYID and KEYSLOT; administer the "
                "Redis Cluster behind it directly"),
}


def _printable(name: bytes) -> bytes:
    """A name as Redis's '%.128s' shows it: cut at the first NUL byte, then at 128 bytes;
    CR and LF become spaces (writer.error does that).  The bytes stay as they were sent."""
    cut = name.find(b"\0")
    return (name if cut < 0 else name[:cut])[:128]


def refusal(args: list[bytes]) -> bytes:
    name = args[0].lower()
    text = name.decode("utf-8", "replace")
    reason = REFUSALS.get(text)
    if reason is not None:
        return writer.error(f"ERR cachecloak does not serve '{text}': {reason}")
    return writer.error(b"ERR unknown command '" + _printable(args[0]) +
                        b"', with args beginning with: ")


def subcommand_refusal(container: str, sub: bytes) -> bytes:
    known, hint = _SUBCOMMAND_REFUSALS.get(container, (set(), ""))
    text = sub.lower().decode("utf-8", "replace")
    if text in known:
        return writer.error(f"ERR cachecloak does not serve '{container}|{text}': {hint}")
    return writer.error(b"ERR unknown subcommand '" + _printable(sub) + b"'. Try " +
                        container.upper().encode() + b" HELP.")
