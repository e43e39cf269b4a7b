"""Real, unmodified clients against the real proxy: redis-py (RESP2 and RESP3, Python and
hiredis parsers) and redis-cli (one-shot, -3, --pipe, -r, interactive under a pty).

The proxy forwards to a real redis-server with hashing and encryption on, so every value
a client reads back has been through seal and open.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import socket
import subprocess
import threading
import time

import pytest
import redis
from redis.connection import _HiredisParser, _RESP2Parser, _RESP3Parser

from tests.proxyproc import wait_until
from tests.servers import RawClient, encode_command, start_proxy

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated:DeprecationWarning")

REDIS_CLI = shutil.which("redis-cli")
needs_cli = pytest.mark.skipif(REDIS_CLI is None, reason="redis-cli is not installed")


@pytest.fixture(scope="module")
def proxy(redis_server):
    config = f"""\
caches:
  - name: clients
    type: redis
    redis:
      addresses: ["127.0.0.1:{redis_server.port}"]
      disableTLS: true
    encryption:
      keys:
        current: "{'5a' * 32}"
    hashing:
      keys:
        current: "{'6b' * 32}"
"""
    proc = start_proxy(config)
    yield proc
    code = proc.stop()
    assert code == 0, proc.log()


def _client(port: int, protocol: int | None, parser) -> redis.Redis:
    kwargs = {"host": "127.0.0.1", "port": port, "socket_timeout": 10}
    if protocol is not None:
        kwargs["protocol"] = protocol
    if parser is not None:
        kwargs["parser_class"] = parser
    return redis.Redis(connection_pool=redis.ConnectionPool(**kwargs))


CLIENT_VARIANTS = [
    pytest.param(3, _HiredisParser, id="resp3-hiredis"),
    pytest.param(3, _RESP3Parser, id="resp3-python"),
    pytest.param(2, _HiredisParser, id="resp2-hiredis"),
    pytest.param(2, _RESP2Parser, id="resp2-python"),
    pytest.param(None, None, id="default"),
]


@pytest.mark.parametrize("protocol, parser", CLIENT_VARIANTS)
def test_redis_py(proxy, redis_server, protocol, parser):
    c = _client(proxy.port, protocol, parser)
    p = f"rp-{protocol}-{parser.__name__ if parser else 'default'}:"
    # The connection speaks the protocol the same client negotiates with Redis itself
    # (redis-py 8 sends HELLO 3 by default).
    direct = _client(redis_server.port, protocol, parser)
    negotiated = str(direct.client_info()["resp"])
    direct.close()
    assert negotiated == ("2" if protocol == 2 else "3") or protocol is None
    assert str(c.client_info()["resp"]) == negotiated

    value = ("é-unicode-" + "x" * 100).encode()
    assert c.set(p + "a", value) is True
    assert c.get(p + "a") == value
    assert c.get(p + "missing") is None
    assert c.set(p + "a", b"v2", get=True) == value
    assert c.set(p + "a", b"v3", nx=True) is None
    pairs = {f"{p}m{i}".encode(): f"mv-{i}".encode() * (i + 1) for i in range(20)}
    assert c.mset(pairs) is True
    assert c.mget([*pairs, p + "missing"]) == [*pairs.values(), None]
    assert c.expire(p + "m0", 100) is True
    assert 0 < c.ttl(p + "m0") <= 100
    assert c.ttl(p + "m1") == -1
    assert c.ttl(p + "missing") == -2
    assert c.exists(p + "m0", p + "m1", p + "missing") == 2
    assert c.delete(p + "m0", p + "missing") == 1
    assert c.exists(p + "m0") == 0
    assert c.strlen(p + "m2") == len(pairs[f"{p}m2".encode()])
    binary = bytes(range(256)) * 40
    assert c.set(p + "bin", binary) is True  # > redis-py's buffer cutoff: sent in pieces
    assert c.get(p + "bin") == binary

    pipe = c.pipeline(transaction=False)
    expected = []
    for i in range(250):
        key = f"{p}pipe{i}"
        val = f"pipeline-value-{i}-".encode() + b"z" * (i % 37)
        pipe.set(key, val)
        expected.append(True)
        pipe.get(key)
        expected.append(val)
        pipe.expire(key, 1000)
        expected.append(True)
        pipe.exists(key, p + "missing")
        expected.append(1)
    assert len(pipe) == 1000
    assert pipe.execute() == expected
    pipe = c.pipeline(transaction=False)
    for i in range(250):
        pipe.delete(f"{p}pipe{i}")
    assert pipe.execute() == [1] * 250
    assert c.ping() is True
    c.close()

    # Nothing the client wrote is visible in plaintext in Redis.
    upstream = redis_server.client()
    for key in upstream.scan_iter(match="cachecloak:clients:*", count=1000):
        assert p.encode() not in key
    upstream.close()


def _cli(port: int, *args: str, input: bytes | None = None,
         timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *args],
                          input=input, capture_output=True, timeout=timeout)


@needs_cli
def test_redis_cli_one_shot_and_resp3(proxy):
    assert _cli(proxy.port, "SET", "cli:k", "hello world").stdout == b"OK\n"
    assert _cli(proxy.port, "GET", "cli:k").stdout == b"hello world\n"
    out = _cli(proxy.port, "-3", "--no-raw", "MGET", "cli:k", "cli:missing").stdout
    assert out == b'1) "hello world"\n2) (nil)\n', out
    out = _cli(proxy.port, "-3", "CLIENT", "INFO").stdout
    assert b"resp=3" in out, out
    out = _cli(proxy.port, "-3", "--no-raw", "HELLO", "3").stdout
    assert b'"proto"' in out and b"(integer) 3" in out, out
    out = _cli(proxy.port, "-3", "SET", "cli:k3", "resp3 value").stdout
    assert out == b"OK\n"
    assert _cli(proxy.port, "-3", "GET", "cli:k3").stdout == b"resp3 value\n"
    result = _cli(proxy.port, "-3", "--no-raw", "GET", "cli:missing")
    assert result.stdout == b"(nil)\n"
    result = _cli(proxy.port, "--no-raw", "INCR", "cli:k")  # not a number: Redis's error
    assert result.stdout == b"(error) ERR value is not an integer or out of range\n"
    result = _cli(proxy.port, "--no-raw", "KEYS", "*")  # refused, with the reason
    assert b"ERR cachecloak does not serve 'keys'" in result.stdout


@needs_cli
def test_redis_cli_pipe_mass_insertion(proxy):
    n = 3000
    data = b"".join(encode_command(["SET", f"mass:{i}", f"value-{i}"]) for i in range(n))
    result = _cli(proxy.port, "--pipe", input=data, timeout=60)
    assert result.returncode == 0, result.stderr
    summary = result.stdout.decode().strip().splitlines()[-1]
    assert summary == f"errors: 0, replies: {n}", result.stdout
    c = redis.Redis(host="127.0.0.1", port=proxy.port)
    keys = [f"mass:{i}" for i in range(0, n, 7)]
    assert c.mget(keys) == [f"value-{i}".encode() for i in range(0, n, 7)]
    c.close()


@needs_cli
def test_redis_cli_repeat(proxy):
    result = _cli(proxy.port, "-r", "100", "SET", "repeat:k", "again")
    assert result.stdout == b"OK\n" * 100
    result = _cli(proxy.port, "-r", "100", "GET", "repeat:k")
    assert result.stdout == b"again\n" * 100
    result = _cli(proxy.port, "-r", "100", "PING")
    assert result.stdout == b"PONG\n" * 100


class Tap:
    """A loopback TCP relay that records both directions (to see what redis-cli sent)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.to_server = bytearray()
        self.to_client = bytearray()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.listener.settimeout(10)
        try:
            a, _ = self.listener.accept()
        except OSError:
            return
        b = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
        deadline = time.monotonic() + 30
        with a, b:
            while not self._stop.is_set() and time.monotonic() < deadline:
                ready, _, _ = select.select([a, b], [], [], 0.1)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is a:
                        self.to_server += data
                        b.sendall(data)
                    else:
                        self.to_client += data
                        a.sendall(data)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.listener.close()


@needs_cli
def test_redis_cli_interactive_under_a_pty(proxy):
    tap = Tap(proxy.port)
    pid, fd = pty.fork()
    if pid == 0:  # the child: become redis-cli on the pty
        os.environ["TERM"] = "dumb"
        os.execv(REDIS_CLI, [REDIS_CLI, "-h", "127.0.0.1", "-p", str(tap.port)])
    out = bytearray()

    def read_until(needle: bytes, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while needle not in out and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    return needle in out
                if not chunk:
                    break
                out.extend(chunk)
        return needle in out

    try:
        prompt = f"127.0.0.1:{tap.port}> ".encode()
        assert read_until(prompt), bytes(out)
        os.write(fd, b"set interactive:k 'hello tty'\r")
        assert read_until(b"OK\r\n"), bytes(out)
        os.write(fd, b"get interactive:k\r")
        assert read_until(b'"hello tty"'), bytes(out)
        os.write(fd, b"quit\r")
        status = None
        deadline = time.monotonic() + 5
        while status is None and time.monotonic() < deadline:
            read_until(b"\x00never", 0.1)
            done, code = os.waitpid(pid, os.WNOHANG)
            status = code if done else None
        assert status is not None, "redis-cli did not exit after quit"
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
        tap.close()
    assert b"not connected" not in out
    assert b"ERR" not in out
    # redis-cli asked for COMMAND DOCS at startup (for its hints) and got a real answer.
    sent = bytes(tap.to_server)
    assert sent.startswith(b"*2\r\n$7\r\nCOMMAND\r\n$4\r\nDOCS\r\n"), sent[:80]
    received = bytes(tap.to_client)
    assert received[:1] in (b"*", b"%"), received[:80]
    assert b"$3\r\nget\r\n" in received and b"summary" in received


def test_pipelined_local_and_remote_replies_come_back_in_order(proxy):
    value = b"remote-value"
    commands = [
        ("SET", "mix:k", value),
        ("PING",),
        ("GET", "mix:k"),
        ("ECHO", "local-1"),
        ("SET", "mix:k2", "v2"),
        ("GET", "mix:k2"),
        ("SELECT", "1"),
        ("GET", "mix:k2"),
        ("SET", "mix:k2", "in-db-1"),
        ("GET", "mix:k2"),
        ("SELECT", "0"),
        ("GET", "mix:k2"),
        ("CLIENT", "SETNAME", "mixer"),
        ("CLIENT", "GETNAME"),
        ("EXISTS", "mix:k", "mix:k2", "mix:none"),
        ("NOSUCHCOMMAND", "x"),
        ("DEL", "mix:k2"),
        ("GET", "mix:k2"),
        ("PING", "last"),
    ]
    expected = [
        b"+OK\r\n", b"+PONG\r\n", b"$12\r\nremote-value\r\n", b"$7\r\nlocal-1\r\n",
        b"+OK\r\n", b"$2\r\nv2\r\n", b"+OK\r\n", b"$-1\r\n", b"+OK\r\n",
        b"$7\r\nin-db-1\r\n", b"+OK\r\n", b"$2\r\nv2\r\n", b"+OK\r\n", b"$5\r\nmixer\r\n",
        b":2\r\n", None, b":1\r\n", b"$-1\r\n", b"$4\r\nlast\r\n",
    ]
    with RawClient(proxy.port) as raw:
        raw.send_raw(b"".join(encode_command(c) for c in commands))
        replies = [raw.read_reply() for _ in commands]
        for got, want, command in zip(replies, expected, commands, strict=True):
            if want is None:
                assert got.startswith(b"-ERR unknown command"), (command, got)
            else:
                assert got == want, (command, got)
        # RESP3 in the same way: HELLO 3 in the middle of a pipeline changes the nils.
        raw.send_raw(b"".join(encode_command(c) for c in (
            ("GET", "mix:none"), ("HELLO", "3"), ("GET", "mix:none"), ("GET", "mix:k"))))
        assert raw.read_reply() == b"$-1\r\n"
        assert raw.read_reply().startswith(b"%7\r\n")
        assert raw.read_reply() == b"_\r\n"
        assert raw.read_reply() == b"$12\r\nremote-value\r\n"

    # A long pipeline alternating local and remote replies keeps its order.
    n = 2000
    with RawClient(proxy.port) as raw:
        setup = [("SET", f"order:{i}", f"val-{i}") for i in range(0, n, 2)]
        raw.send_raw(b"".join(encode_command(c) for c in setup))
        assert [raw.read_reply() for _ in setup] == [b"+OK\r\n"] * len(setup)
        batch = []
        for i in range(n):
            batch.append(("ECHO", f"echo-{i}") if i % 2 else ("GET", f"order:{i}"))
        raw.send_raw(b"".join(encode_command(c) for c in batch))
        for i in range(n):
            text = f"echo-{i}" if i % 2 else f"val-{i}"
            assert raw.read_reply() == b"$%d\r\n%b\r\n" % (len(text), text.encode()), i
    wait_until(lambda: proxy.proc.poll() is None, timeout=1, what="the proxy to be running")


def _cli_script(p: str) -> tuple[bytes, bytes, list[str]]:
    """redis-cli's scripted workload (one connection, commands from stdin): the script,
    the raw output it must print, and the plaintexts it writes."""
    steps = [
        # Strings with expiry.
        (f'SET {p}s1 "plain {p}s1 value" EX 100', "OK"),
        (f"GET {p}s1", f"plain {p}s1 value"),
        (f"SET {p}short plain-{p}short-value PX 150", "OK"),
        (f"PTTL {p}keep", "-2"),
        (f"SET {p}keep plain-{p}keep-value", "OK"),
        (f"TTL {p}keep", "-1"),
        (f"MSET {p}m1 plain-{p}m1-value {p}m2 plain-{p}m2-value", "OK"),
        (f"MGET {p}m1 {p}missing {p}m2", f"plain-{p}m1-value\n\nplain-{p}m2-value"),
        # Counters.
        (f"INCR {p}counter", "1"),
        (f"INCRBY {p}counter 41", "42"),
        (f"DECR {p}counter", "41"),
        (f"INCRBYFLOAT {p}float 2.5", "2.5"),
        # redis-cli prints an empty line after an error (as it does against Redis).
        (f"INCR {p}s1", "ERR value is not an integer or out of range\n"),
        # Hashes.
        (f"HSET {p}hash field-{p}name plain-{p}name-value field-{p}city plain-{p}city", "2"),
        (f"HINCRBY {p}hash field-{p}visits 3", "3"),
        (f"HGET {p}hash field-{p}name", f"plain-{p}name-value"),
        (f"HDEL {p}hash field-{p}city field-{p}nope", "1"),
        (f"HLEN {p}hash", "2"),
        # A transaction.
        ("MULTI", "OK"),
        (f"SET {p}tx plain-{p}tx-value", "QUEUED"),
        (f"INCR {p}counter", "QUEUED"),
        (f"HSET {p}hash field-{p}tx plain-{p}tx-field", "QUEUED"),
        (f"GET {p}tx", "QUEUED"),
        ("EXEC", f"OK\n42\n1\nplain-{p}tx-value"),
        (f"HGET {p}hash field-{p}tx", f"plain-{p}tx-field"),
    ]
    script = "".join(command + "\n" for command, _ in steps).encode()
    expected = "".join(output + "\n" for _, output in steps).encode()
    written = [f"{p}{name}" for name in ("s1", "short", "keep", "m1", "m2", "counter",
                                          "float", "hash", "tx")]
    written += [f"plain {p}s1 value", f"plain-{p}city"] + [
        f"plain-{p}{name}-value" for name in ("short", "keep", "m1", "m2", "name", "tx")]
    written += [f"field-{p}{name}" for name in ("name", "city", "visits", "tx")]
    written.append(f"plain-{p}tx-field")
    return script, expected, written


@needs_cli
@pytest.mark.parametrize("protocol", ["2", "3"])
def test_redis_cli_scripted_workload_leaves_only_ciphertext(proxy, redis_server, protocol):
    """The scripted workload of every client (tests/test_clients_*.py), through redis-cli:
    commands on stdin, -3, --pipe with 1,000 mixed commands, -r; then Redis holds no
    plaintext of it."""
    from tests.clients.support import assert_only_ciphertext

    redis_server.client().flushall()
    p = f"cli-wl-resp{protocol}:"
    proto = ["-3"] if protocol == "3" else []
    script, expected, written = _cli_script(p)
    result = _cli(proxy.port, *proto, input=script)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected
    time.sleep(0.4)
    assert _cli(proxy.port, *proto, "GET", f"{p}short").stdout == b"\n"  # PX 150 expired

    # --pipe: a pipeline of 1,000 mixed commands.
    commands = []
    for i in range(250):
        key, value = f"{p}pipe:{i}", f"plain-pipe-{p}{i}-" + "z" * (i % 37)
        written += [key, value, f"field-{p}p{i}"]
        commands += [["SET", key, value], ["GET", key], ["INCRBY", f"{p}pipe:sum", str(i)],
                     ["HSET", f"{p}pipe:hash", f"field-{p}p{i}", value]]
    written += [f"{p}pipe:sum", f"{p}pipe:hash"]
    data = b"".join(encode_command(c) for c in commands)
    result = _cli(proxy.port, *proto, "--pipe", input=data, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip().splitlines()[-1] == "errors: 0, replies: 1000"
    assert _cli(proxy.port, "GET", f"{p}pipe:sum").stdout == b"%d\n" % sum(range(250))
    assert _cli(proxy.port, "HGET", f"{p}pipe:hash", f"field-{p}p7").stdout == (
        f"plain-pipe-{p}7-".encode() + b"z" * 7 + b"\n")

    # -r: one command repeated on one connection.
    result = _cli(proxy.port, *proto, "-r", "5", "INCR", f"{p}repeat")
    assert result.stdout == b"1\n2\n3\n4\n5\n"
    written.append(f"{p}repeat")

    assert assert_only_ciphertext(redis_server.port, written, min_keys=250) >= 250
