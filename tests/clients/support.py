"""Shared parts of the client compatibility tests (tests/test_clients_*.py).

* `client_proxy_config`: a cachecloak in front of a real Redis with hashing and
  encryption on, the setup every client workload runs against.
* `assert_only_ciphertext`: reads everything a Redis holds, directly, and shows that no
  key, field, member or value a workload wrote is there in plaintext and that every value
  is an envelope.
* `ensure_node_modules` / `ensure_java_build`: install the pinned npm packages and Maven
  dependencies on first use (and compile the Java workload once), under a file lock.
  They skip the calling test, saying why, only when the toolchain is absent or the
  package registry cannot be reached; any other install failure fails the test.

Must never: install anything outside tests/clients (npm) or the user's Maven repository,
or hide a failing install behind a skip.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import redis

CLIENTS_DIR = Path(__file__).resolve().parent
NODE_DIR = CLIENTS_DIR / "node"
JAVA_DIR = CLIENTS_DIR / "java"

CACHE_NAME = "clients"
STORED_PREFIX = f"cachecloak:{CACHE_NAME}:".encode()
ENVELOPE_VERSION = 1
ENVELOPE_OVERHEAD = 33  # version, key id, nonce, GCM tag (proxy/crypto/envelope.py)

# What a package client prints when it cannot reach its registry at all (DNS, refused,
# timed out, no route): only these make a missing dependency a skip instead of a failure.
_UNREACHABLE = re.compile(
    r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|"
    r"network request to .* failed|Unknown host|UnknownHostException|"
    r"Could not transfer artifact|Network is unreachable|Connection refused|"
    r"Connect timed out|Read timed out|No route to host", re.I)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def client_proxy_config(redis_port: int) -> str:
    return f"""\
caches:
  - name: {CACHE_NAME}
    type: redis
    redis:
      addresses: ["127.0.0.1:{redis_port}"]
      disableTLS: true
    encryption:
      keys:
        current: "{'5a' * 32}"
    hashing:
      keys:
        current: "{'6b' * 32}"
"""


# -- what Redis holds ------------------------------------------------------------------

@pytest.fixture(scope="module")
def client_proxy(redis_server):
    """cachecloak in front of the module's Redis (client_proxy_config), for the client
    modules (tests/conftest.py loads this module as a plugin); it must stop cleanly."""
    from tests.servers import start_proxy

    proc = start_proxy(client_proxy_config(redis_server.port))
    yield proc
    code = proc.stop()
    assert code == 0, proc.log()


def stored_items(redis_port: int) -> dict[bytes, tuple[bytes, list[bytes], list[bytes]]]:
    """Every key in Redis: its type, the parts that must be envelopes (string values, hash
    values, list elements) and the other stored parts (hash fields, set and sorted-set
    members), read directly from Redis."""
    upstream = redis.Redis(host="127.0.0.1", port=redis_port, socket_timeout=10)
    items = {}
    try:
        for key in upstream.scan_iter(count=1000):
            kind = upstream.type(key)
            sealed: list[bytes] = []
            other: list[bytes] = []
            if kind == b"string":
                value = upstream.get(key)
                sealed = [value] if value is not None else []
            elif kind == b"hash":
                fields = upstream.hgetall(key)
                other, sealed = list(fields), list(fields.values())
            elif kind == b"list":
                sealed = upstream.lrange(key, 0, -1)
            elif kind == b"set":
                other = list(upstream.smembers(key))
            elif kind == b"zset":
                other = upstream.zrange(key, 0, -1)
            items[key] = (kind, sealed, other)
    finally:
        upstream.close()
    return items


def assert_only_ciphertext(redis_port: int, written: Iterable[str | bytes],
                           min_keys: int = 1) -> int:
    """Fail unless Redis holds none of `written` (keys, fields, values a client wrote in
    plaintext) anywhere, every key is a hashed name under cachecloak's prefix and every
    value is an AES-GCM envelope.  Returns the number of keys examined."""
    plaintexts = {w.encode() if isinstance(w, str) else bytes(w) for w in written}
    # Short texts could occur in random ciphertext by chance; the workloads' texts are
    # long and distinctive, so insist on that rather than skip any.
    short = sorted(p for p in plaintexts if len(p) < 8)
    assert not short, f"plaintexts too short to search for: {short[:5]}"
    assert not any(b"\0" in p for p in plaintexts), "plaintexts must not hold NUL"
    items = stored_items(redis_port)
    assert len(items) >= min_keys, f"Redis holds {len(items)} keys, expected >= {min_keys}"
    blobs: list[tuple[str, bytes]] = []
    for key, (kind, sealed, other) in items.items():
        assert key.startswith(STORED_PREFIX), f"a key outside cachecloak's prefix: {key[:60]!r}"
        for value in sealed:
            assert value[:1] == bytes([ENVELOPE_VERSION]) and len(value) >= ENVELOPE_OVERHEAD, (
                f"a {kind.decode()} value under {key[:40]!r}... is not an envelope")
        blobs.append(("key name", key))
        blobs.extend((f"{kind.decode()} part", blob) for blob in (*sealed, *other))
    # One search per plaintext over everything Redis holds; NUL separates the stored
    # parts, and no plaintext holds one, so a match never spans two parts.
    everything = b"\0".join(blob for _, blob in blobs)
    for plaintext in plaintexts:
        if plaintext in everything:
            where = next(what for what, blob in blobs if plaintext in blob)
            pytest.fail(f"Redis holds the plaintext {plaintext[:60]!r} in a {where}")
    return len(items)


# -- installs ----------------------------------------------------------------------------

@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One installer at a time (parallel pytest processes share these folders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:])[:400]


def _install_failed(what: str, result: subprocess.CompletedProcess) -> None:
    output = _ANSI.sub("", (result.stdout or "") + "\n" + (result.stderr or ""))
    found = _UNREACHABLE.search(output)
    if found:
        line = output[found.start():].split("\n", 1)[0].strip()
        pytest.skip(f"{what}: the package registry is unreachable from this machine "
                    f"({line[:240]}); these client tests need it once, to install their "
                    f"pinned dependencies")
    pytest.fail(f"{what} failed (exit {result.returncode}): {_last_lines(output)}")


def node_toolchain_missing() -> str | None:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        return (f"{' and '.join(missing)} not installed: the Node.js client tests need "
                f"Node.js 20+ with npm (e.g. apt-get install nodejs npm)")
    return None


def _node_packages_load() -> bool:
    """The installed packages load (a stamp alone could sit beside a partial copy)."""
    probe = subprocess.run(
        ["node", "-e", "require('ioredis'); require('redis'); require('redis/package.json')"],
        cwd=NODE_DIR, capture_output=True, timeout=60)
    return probe.returncode == 0


def ensure_node_modules() -> Path:
    """`npm ci` into tests/clients/node/node_modules, once per package-lock.json."""
    reason = node_toolchain_missing()
    if reason:
        pytest.skip(reason)
    stamp = NODE_DIR / "node_modules" / ".cachecloak-installed"
    wanted = _digest(NODE_DIR / "package.json", NODE_DIR / "package-lock.json")
    with _locked(NODE_DIR / ".install.lock"):
        if stamp.exists() and stamp.read_text() == wanted and _node_packages_load():
            return NODE_DIR
        try:
            result = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=NODE_DIR, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.skip("npm ci: no answer from the package registry within 300 s")
        if result.returncode != 0:
            _install_failed("npm ci (tests/clients/node)", result)
        stamp.write_text(wanted)
    return NODE_DIR


def java_toolchain_missing() -> str | None:
    missing = [tool for tool in ("java", "javac", "mvn") if shutil.which(tool) is None]
    if missing:
        return (f"{', '.join(missing)} not installed: the Java client tests need a JDK 17+ "
                f"and Maven (e.g. apt-get install openjdk-17-jdk-headless maven)")
    return None


def pom_versions() -> dict[str, str]:
    """The client versions pinned in tests/clients/java/pom.xml."""
    text = (JAVA_DIR / "pom.xml").read_text()
    return {name: re.search(rf"<{name}\.version>([^<]+)<", text).group(1)
            for name in ("jedis", "lettuce")}


def ensure_java_build() -> str:
    """Resolve the pom's dependencies (the Maven repository of the user, ~/.m2 by
    default) and compile the workload with javac, each only when its inputs changed.
    Returns the class path to run `cachecloak.clients.Workload` with."""
    reason = java_toolchain_missing()
    if reason:
        pytest.skip(reason)
    target = JAVA_DIR / "target"
    classpath_file = target / "classpath.txt"
    classes = target / "classes"
    sources = sorted((JAVA_DIR / "src").rglob("*.java"))
    with _locked(JAVA_DIR / ".install.lock"):
        pom_stamp = target / ".cachecloak-resolved"
        wanted = _digest(JAVA_DIR / "pom.xml")
        if not (classpath_file.exists() and pom_stamp.exists()
                and pom_stamp.read_text() == wanted):
            target.mkdir(exist_ok=True)
            try:
                result = subprocess.run(
                    ["mvn", "-B", "-q", "-Dstyle.color=never", "dependency:build-classpath",
                     f"-Dmdep.outputFile={classpath_file}"],
                    cwd=JAVA_DIR, capture_output=True, text=True, timeout=600)
            except subprocess.TimeoutExpired:
                pytest.skip("mvn dependency:build-classpath: no answer from the Maven "
                            "repository within 600 s")
            if result.returncode != 0:
                _install_failed("mvn dependency:build-classpath (tests/clients/java)", result)
            pom_stamp.write_text(wanted)
        dependencies = classpath_file.read_text().strip()
        class_stamp = target / ".cachecloak-compiled"
        wanted = _digest(*sources) + wanted
        if not (class_stamp.exists() and class_stamp.read_text() == wanted):
            shutil.rmtree(classes, ignore_errors=True)
            classes.mkdir(parents=True)
            result = subprocess.run(
                ["javac", "-encoding", "UTF-8", "--release", "17", "-d", str(classes),
                 "-cp", dependencies, *map(str, sources)],
                capture_output=True, text=True, timeout=300)
            if result.returncode != 0:
                pytest.fail(f"javac failed: {_last_lines(result.stderr, 10)}")
            class_stamp.write_text(wanted)
    return os.pathsep.join([str(classes), dependencies])


# -- running a workload -----------------------------------------------------------------

def run_workload(argv: list[str], cwd: Path, timeout: float = 120) -> dict:
    """Run a workload process to completion; its JSON report, or a failure that shows
    what the workload printed."""
    try:
        result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{argv[:3]} did not finish within {timeout} s: "
                    f"{_last_lines(str(exc.stderr or ''), 10)}")
    if result.returncode != 0:
        pytest.fail(f"{argv[:3]} exited {result.returncode}:\n{result.stderr[-4000:]}")
    lines = result.stdout.strip().splitlines()
    assert lines, f"{argv[:3]} printed nothing; stderr: {result.stderr[-2000:]}"
    return json.loads(lines[-1])
