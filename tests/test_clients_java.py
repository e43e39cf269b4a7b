"""Java clients through cachecloak: Jedis and Lettuce, RESP2 and RESP3.

Each variant runs `cachecloak.clients.Workload` (tests/clients/java: strings with expiry,
counters, hashes, MULTI/EXEC, a pipeline of 1,000 commands, every reply checked; Lettuce
pipelines asynchronously with manual flushing and speaks RESP3 by default) against a real
cachecloak in front of a real Redis with hashing and encryption on, then reads Redis
directly to show it holds only hashed names and envelopes.  The pinned dependencies are
resolved with Maven on first use (into the user's Maven repository) and the workload is
compiled with javac once; without a JDK and Maven, or without the Maven repository, the
module is skipped with the reason.
"""

from __future__ import annotations

import pytest

from tests.clients.support import (
    JAVA_DIR,
    assert_only_ciphertext,
    ensure_java_build,
    java_toolchain_missing,
    pom_versions,
    run_workload,
)

pytestmark = [
    pytest.mark.skipif(java_toolchain_missing() is not None,
                       reason=java_toolchain_missing() or ""),
    # The first run resolves the dependencies with Maven: allow for a cold repository.
    pytest.mark.timeout(900),
]

VARIANTS = {
    # variant: (library, protocol the client must end up speaking)
    "jedis-resp2": ("jedis", "RESP2"),
    "jedis-resp3": ("jedis", "RESP3"),
    "lettuce-resp3": ("lettuce", "RESP3"),  # Lettuce's default: HELLO 3
    "lettuce-resp2": ("lettuce", "RESP2"),
}


@pytest.fixture(scope="module")
def classpath():
    return ensure_java_build()


def test_pinned_versions_are_named():
    # The README's compatibility matrix names these versions.
    assert set(pom_versions()) == {"jedis", "lettuce"}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_java_client_workload(classpath, client_proxy, redis_server, variant):
    upstream = redis_server.client()
    upstream.flushall()  # the ciphertext check below then sees this variant's data only
    upstream.close()
    report = run_workload(["java", "-cp", classpath, "cachecloak.clients.Workload", variant,
                           "127.0.0.1", str(client_proxy.port)], cwd=JAVA_DIR)
    library, protocol = VARIANTS[variant]
    assert report["client"] == library
    assert report["protocol"] == protocol
    assert report["commands"] == 1000
    keys = assert_only_ciphertext(redis_server.port, report["written"], min_keys=250)
    assert keys >= 250
    assert client_proxy.proc.poll() is None, client_proxy.log()
