"""A real Redis Cluster for the tests: three primaries (no replicas) on loopback ports.

Each node is a `redis-server --cluster-enabled yes` started by `tests.servers.start_redis`
(own data directory, kernel-chosen port); `redis-cli --cluster create` assigns the slots.
`start_cluster` returns once every node reports `cluster_state:ok` and every node sees
the same three slot ranges.  `RedisCluster.stop()` stops every process it started, also
when the start failed half-way.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field

from tests.servers import RedisServer, free_port, start_redis

SLOTS = 16384


@dataclass
class RedisCluster:
    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def addresses(self) -> list[str]:
        return [node.address for node in self.nodes]

    def clients(self):
        return [node.client() for node in self.nodes]

    def node_ids(self) -> dict[int, str]:
        """port -> cluster node id."""
        return {node.port: node.client().execute_command("CLUSTER", "MYID").decode()
                for node in self.nodes}

    def owner_of(self, slot: int) -> RedisServer:
        """The node that serves `slot` according to the first node's view."""
        for start, end, primary, *_ in self.nodes[0].client().execute_command(
                "CLUSTER", "SLOTS"):
            if start <= slot <= end:
                port = int(primary[1])
                return next(node for node in self.nodes if node.port == port)
        raise LookupError(f"slot {slot} is not served")

    def stable(self) -> bool:
        """Every node says cluster_state:ok and sees the same slot map, with no slot
        migrating or importing."""
        maps = []
        for node in self.nodes:
            client = node.client()
            try:
                info = client.execute_command("CLUSTER", "INFO")
                if isinstance(info, bytes):
                    info = info.decode()
                if "cluster_state:ok" not in str(info):
                    return False
                slots = client.execute_command("CLUSTER", "SLOTS")
                maps.append(sorted((s[0], s[1], int(s[2][1])) for s in slots))
                nodes = client.execute_command("CLUSTER", "NODES")
                text = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
                if "->-" in text or "-<-" in text:
                    return False
            finally:
                client.close()
        covered = sum(end - start + 1 for start, end, _ in maps[0]) if maps else 0
        return covered == SLOTS and all(m == maps[0] for m in maps)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_cluster(primaries: int = 3, timeout: float = 30.0) -> RedisCluster:
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RuntimeError("redis-cli is not installed (it comes with redis-server)")
    cluster = RedisCluster()
    try:
        for _ in range(primaries):
            # The bus port is chosen too: the default (port + 10000) fails above 55535.
            cluster.nodes.append(start_redis(
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(free_port()),
                "--cluster-node-timeout", "5000", "--cluster-require-full-coverage", "yes"))
        subprocess.run([cli, "--cluster", "create", *cluster.addresses,
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=timeout)
        deadline = time.monotonic() + timeout
        while not cluster.stable():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cluster did not reach cluster_state:ok in {timeout}s")
            time.sleep(0.05)
    except BaseException:
        cluster.stop()
        raise
    return cluster
