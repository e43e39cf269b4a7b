"""Cluster discovery answered by cachecloak: it presents itself as one node owning every slot.

Cluster clients (ioredis's and node-redis's Cluster, Jedis's JedisCluster, Lettuce's
RedisClusterClient, redis-py's RedisCluster) refuse to start unless the address they are
given answers CLUSTER SLOTS (or SHARDS / NODES) and CLUSTER INFO.  cachecloak routes
every key itself (to a standalone Redis, a Sentinel-managed primary, or the nodes of a
real Redis Cluster, following MOVED and ASK there), so the truthful view for a client is
a cluster of one node, at the very address the client reached, that owns slots 0-16383.
Such a client then sends every command to cachecloak, which is what it should do.

Replies have Redis 7.0's exact shape (tests/test_cluster_info.py compares them with a
real single-node Redis Cluster): the address is the connection's local address (the one
the client connected to), the node id a fixed 40-hex-digit name derived from the
listener's configured address (the same for every connection and restart), epochs 0,
the cluster bus port 0 (there is no bus).  READONLY, READWRITE and ASKING are accepted
with +OK as a cluster node does: there are no replicas to read from, and cachecloak
never redirects.  CLUSTER KEYSLOT computes the slot of the key as given, as Redis does.
On a Unix-socket listener there is no TCP address to announce, so the cluster commands
get the error of a Redis without cluster support and a cluster client fails clearly.

Behind a NAT or a port mapping the local address is not the one the client dialled;
as with Redis's cluster-announce-ip, the client then needs its own address mapping
(ioredis `natMap`, node-redis `nodeAddressMap`).

Must never: describe the upstream Redis (its addresses, node ids or slot map) to the
client, or answer a subcommand that changes or reveals key placement (COUNTKEYSINSLOT,
GETKEYSINSLOT: the stored keys are hashed, so their slots say nothing about the client's
keys) or administers a cluster: those are refused by proxy.commands.refusals.
"""

from __future__ import annotations

import hashlib

from proxy.backends.redis.cluster import key_slot
from proxy.commands.table import Command, dispatch_subcommand, register, subcommands
from proxy.resp import writer

SLOTS = 16384
_LAST_SLOT = SLOTS - 1

# Redis's answer to a cluster command when cluster support is disabled.
NO_CLUSTER = writer.error("ERR This instance has cluster support disabled")

# CLUSTER INFO of a healthy one-node cluster, line for line as Redis 7.0 writes it.
_INFO_TEXT = (
    b"cluster_state:ok\r\n"
    b"cluster_slots_assigned:16384\r\n"
    b"cluster_slots_ok:16384\r\n"
    b"cluster_slots_pfail:0\r\n"
    b"cluster_slots_fail:0\r\n"
    b"cluster_known_nodes:1\r\n"
    b"cluster_size:1\r\n"
    b"cluster_current_epoch:0\r\n"
    b"cluster_my_epoch:0\r\n"
    b"cluster_stats_messages_sent:0\r\n"
    b"cluster_stats_messages_received:0\r\n"
    b"total_cluster_links_buffer_limit_exceeded:0\r\n"
)


def node_id(listener_address: str) -> bytes:
    """40 lowercase hex digits, like a Redis Cluster node id; stable for a listener."""
    digest = hashlib.sha1(b"cachecloak cluster node\0" + listener_address.encode("utf-8"))
    return digest.hexdigest().encode("ascii")


def _endpoint(client) -> tuple[bytes, int] | None:
    """The (ip, port) this client connected to, or None on a Unix socket."""
    if client.listener.unix_path is not None or client.transport is None:
        return None
    sockname = client.transport.get_extra_info("sockname")
    if not isinstance(sockname, tuple) or len(sockname) < 2:
        return None
    return str(sockname[0]).encode("ascii"), int(sockname[1])


def _served_here(run):
    """Wrap a handler so that it answers like Redis without cluster support where
    cachecloak has no TCP address to announce."""
    def wrapped(client, command, args):
        endpoint = _endpoint(client)
        if endpoint is None:
            client.reply(NO_CLUSTER)
            return
        run(client, args, endpoint)
    wrapped.__name__ = run.__name__
    return wrapped


@_served_here
def run_cluster_slots(client, args, endpoint):
    ip, port = endpoint
    metadata = b"%0\r\n" if client.proto == 3 else b"*0\r\n"  # no hostname to announce
    node = writer.array([writer.bulk(ip), writer.integer(port),
                         writer.bulk(node_id(client.listener.address)), metadata])
    client.reply(writer.array([
        writer.array([writer.integer(0), writer.integer(_LAST_SLOT), node])]))


@_served_here
def run_cluster_shards(client, args, endpoint):
    ip, port = endpoint
    proto = client.proto
    node = writer.map_(proto, [
        (writer.bulk(b"id"), writer.bulk(node_id(client.listener.address))),
        (writer.bulk(b"port"), writer.integer(port)),
        (writer.bulk(b"ip"), writer.bulk(ip)),
        (writer.bulk(b"endpoint"), writer.bulk(ip)),
        (writer.bulk(b"role"), writer.bulk(b"master")),
        (writer.bulk(b"replication-offset"), writer.integer(0)),
        (writer.bulk(b"health"), writer.bulk(b"online")),
    ])
    shard = writer.map_(proto, [
        (writer.bulk(b"slots"), writer.array([writer.integer(0), writer.integer(_LAST_SLOT)])),
        (writer.bulk(b"nodes"), writer.array([node])),
    ])
    client.reply(writer.array([shard]))


@_served_here
def run_cluster_nodes(client, args, endpoint):
    ip, port = endpoint
    line = b"%s %s:%d@0 myself,master - 0 0 0 connected 0-%d\n" % (
        node_id(client.listener.address), ip, port, _LAST_SLOT)
    client.reply(writer.verbatim(client.proto, line))


@_served_here
def run_cluster_info(client, args, endpoint):
    client.reply(writer.verbatim(client.proto, _INFO_TEXT))


@_served_here
def run_cluster_myid(client, args, endpoint):
    client.reply(writer.bulk(node_id(client.listener.address)))


@_served_here
def run_cluster_keyslot(client, args, endpoint):
    client.reply(writer.integer(key_slot(args[2])))


@_served_here
def run_accept(client, args, endpoint):
    # READONLY, READWRITE, ASKING: a cluster node's +OK.  Reads already go wherever
    # cachecloak sends them, and cachecloak never answers with an ASK redirect.
    client.reply(writer.OK)


register(
    Command("cluster", -2, run=dispatch_subcommand, subcommands=subcommands(
        Command("cluster|slots", 2, run=run_cluster_slots),
        Command("cluster|shards", 2, run=run_cluster_shards),
        Command("cluster|nodes", 2, run=run_cluster_nodes),
        Command("cluster|info", 2, run=run_cluster_info),
        Command("cluster|myid", 2, run=run_cluster_myid),
        Command("cluster|keyslot", 3, run=run_cluster_keyslot),
    )),
    Command("readonly", 1, run=run_accept),
    Command("readwrite", 1, run=run_accept),
    Command("asking", 1, run=run_accept),
)
