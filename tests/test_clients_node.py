"""Node.js clients through cachecloak: ioredis and node-redis, each in the ways apps use them.

Each variant runs tests/clients/node/workload.js (strings with expiry, counters, hashes,
MULTI/EXEC, a pipeline of 1,000 commands, every reply checked) against a real cachecloak
in front of a real Redis with hashing and encryption on, then reads Redis directly to show
it holds only hashed names and envelopes.  The pinned packages are installed into
tests/clients/node/node_modules on first use (`npm ci`); without node and npm, or without
the npm registry, the module is skipped with the reason.

The Cluster variants point the libraries' cluster clients at cachecloak's single address:
cachecloak answers CLUSTER SLOTS / INFO as one node owning every slot
(proxy/commands/cluster_info.py), so they route everything to it.
"""

from __future__ import annotations

import pytest

from tests.clients.support import (
    assert_only_ciphertext,
    ensure_node_modules,
    node_toolchain_missing,
    run_workload,
)

pytestmark = pytest.mark.skipif(node_toolchain_missing() is not None,
                                reason=node_toolchain_missing() or "")

VARIANTS = {
    # variant: (package, protocol the client must end up speaking)
    "ioredis-resp3": ("ioredis", "RESP3"),          # ioredis 6's default: HELLO 3
    "ioredis-resp2": ("ioredis", "RESP2"),
    "ioredis-autopipeline": ("ioredis", "RESP3"),   # enableAutoPipelining, resp3 mapping
    "ioredis-cluster": ("ioredis", "RESP3"),        # Redis.Cluster at cachecloak's address
    "node-redis-resp2": ("redis (node-redis)", "RESP2"),
    "node-redis-resp3": ("redis (node-redis)", "RESP3"),
    "node-redis-cluster": ("redis (node-redis)", "RESP3"),  # createCluster, RESP3
}


@pytest.fixture(scope="module")
def node_dir():
    return ensure_node_modules()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_node_client_workload(node_dir, client_proxy, redis_server, variant):
    upstream = redis_server.client()
    upstream.flushall()  # the ciphertext check below then sees this variant's data only
    upstream.close()
    report = run_workload(["node", "workload.js", variant, "127.0.0.1", str(client_proxy.port)],
                          cwd=node_dir)
    package, protocol = VARIANTS[variant]
    assert report["client"] == package
    assert report["protocol"] == protocol
    assert report["commands"] == 1000
    # Everything it wrote went through seal and hash: Redis holds no plaintext of it.
    keys = assert_only_ciphertext(redis_server.port, report["written"], min_keys=250)
    assert keys >= 250
    assert client_proxy.proc.poll() is None, client_proxy.log()
