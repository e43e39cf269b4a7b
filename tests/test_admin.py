"""The admin endpoint: /metrics, /healthz, /readyz and the admin: configuration.

Real proxy processes in front of a real redis-server; /metrics is parsed with
prometheus_client's own parser.
"""

from __future__ import annotations

import http.client
import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.crypto.keys import derive_key_id
from proxy.resp.writer import python_command
from tests.proxyproc import run_cli, start_proxy_listeners, wait_until
from tests.servers import RawClient, free_port, start_redis

ENC_KEY = "3f" * 16 + "a1" * 16
HASH_KEY = "5c" * 16 + "07" * 16
PASSWORD = "listener-pw-5d1e9a"


def _config(redis_port: int, port: int, admin_port: int, *, password: bool = False) -> str:
    pw = f'\n    password: "{PASSWORD}"' if password else ""
    return f"""
admin:
  address: "127.0.0.1:{admin_port}"
caches:
  - name: main
    type: redis
    redis:
      addresses: ["127.0.0.1:{redis_port}"]
      disableTLS: true
      poolSize: 2
    encryption:
      keys:
        current: "{ENC_KEY}"
    hashing:
      keys:
        current: "{HASH_KEY}"
listeners:
  - address: "127.0.0.1:{port}"
    cache: main{pw}
"""


def http_get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Samples of /metrics as {(sample name, sorted labels): value}."""
    status, text = http_get(port, "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def redis_server():
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture
def proxy(redis_server):
    port, admin_port = free_port(), free_port()
    proc = start_proxy_listeners(_config(redis_server.port, port, admin_port, password=True),
                                 [port, admin_port])
    proc.admin_port = admin_port
    yield proc
    assert proc.stop() == 0, proc.log()


def test_metrics_count_every_command_of_a_pipelined_read(proxy):
    """One read of mixed commands becomes batches (proxy.server.client.Batch), some
    forwarded in C: each command is still counted once, with its own outcome."""
    with RawClient(proxy.port) as c:
        assert c.call("AUTH", PASSWORD) == b"+OK\r\n"
        pipeline = ([("SET", f"k{i}", "v") for i in range(20)]  # the C forwarder
                    + [("GET",), ("SET", "k0", "v", "EX", "100"), ("KEYS", "*")]
                    + [("GET", f"k{i}") for i in range(5)] + [("GET", "missing")]
                    + [("LPUSH", "k1", "x"), ("HSET", "h", "f", "v"), ("PING",)])
        c.send_raw(b"".join(python_command([str(a).encode() for a in args])
                            for args in pipeline))
        got = [c.read_reply() for _ in pipeline]
        assert got[:20] == [b"+OK\r\n"] * 20
        assert got[20].startswith(b"-ERR wrong number of arguments")
        assert got[21] == b"+OK\r\n" and got[22].startswith(b"-ERR cachecloak does not")
        assert got[23:28] == [b"$1\r\nv\r\n"] * 5 and got[28] == b"$-1\r\n"
        assert got[29].startswith(b"-WRONGTYPE") and got[30:] == [b":1\r\n", b"+PONG\r\n"]

        samples = scrape(proxy.admin_port)

    def count(command: str, outcome: str) -> float:
        return value(samples, "cachecloak_commands_total", cache="main", command=command,
                     outcome=outcome)

    assert count("set", "ok") == 21 and count("get", "ok") == 6 and count("get", "error") == 1
    assert count("keys", "refused") == 1 and count("lpush", "error") == 1
    assert count("hset", "ok") == 1 and count("ping", "ok") == 1
    assert value(samples, "cachecloak_command_duration_seconds_count", cache="main") == (
        1 + len(pipeline))


def test_metrics_count_a_workload(proxy, redis_server):
    listener = f"127.0.0.1:{proxy.port}"
    with RawClient(proxy.port) as c:
        assert c.call("AUTH", "wrong-password").startswith(b"-WRONGPASS")
        assert c.call("AUTH", PASSWORD) == b"+OK\r\n"
        for i in range(10):
            assert c.call("SET", f"user:{i}", f"secret-value-{i}") == b"+OK\r\n"
        for i in range(5):
            assert c.call("GET", f"user:{i}") == f"$14\r\nsecret-value-{i}\r\n".encode()
        assert c.call("KEYS", "*").startswith(b"-ERR cachecloak does not serve 'keys'")
        assert c.call("GET").startswith(b"-ERR wrong number of arguments")

        samples = scrape(proxy.admin_port)
        assert value(samples, "cachecloak_commands_total", cache="main", command="set",
                     outcome="ok") == 10
        assert value(samples, "cachecloak_commands_total", cache="main", command="get",
                     outcome="ok") == 5
        assert value(samples, "cachecloak_commands_total", cache="main", command="get",
                     outcome="error") == 1
        assert value(samples, "cachecloak_commands_total", cache="main", command="keys",
                     outcome="refused") == 1
        assert value(samples, "cachecloak_commands_total", cache="main", command="auth",
                     outcome="error") == 1
        assert value(samples, "cachecloak_auth_failures_total") == 1
        # 2 AUTH + 10 SET + 5 GET + KEYS + GET
        assert value(samples, "cachecloak_command_duration_seconds_count", cache="main") == 19
        assert value(samples, "cachecloak_command_duration_seconds_sum", cache="main") > 0
        assert value(samples, "cachecloak_client_connections", listener=listener) == 1
        assert value(samples, "cachecloak_bytes_received_total", listener=listener) > 300
        assert value(samples, "cachecloak_bytes_sent_total", listener=listener) > 100
        key_id = derive_key_id(bytes.fromhex(ENC_KEY)).hex()
        assert value(samples, "cachecloak_encryptions_total", cache="main",
                     key_id=key_id) == 10
        assert value(samples, "cachecloak_upstream_connections", cache="main",
                     state="ready") >= 1

        # Tamper with a stored value in Redis directly: the next read is a miss, counted.
        direct = redis_server.client()
        stored = sorted(direct.keys("*"))
        assert len(stored) == 10
        for name in stored:
            blob = bytearray(direct.get(name))
            blob[-1] ^= 0x01
            direct.set(name, bytes(blob))
        assert c.call("GET", "user:7") == b"$-1\r\n"
        samples = scrape(proxy.admin_port)
        assert value(samples, "cachecloak_decrypt_failures_total", cache="main",
                     reason="authentication-failed") == 1

    wait_until(lambda: value(scrape(proxy.admin_port), "cachecloak_client_connections",
                             listener=listener) == 0, what="the client gauge to drop")

    # Nothing secret on the page: no key material, no key names, values or passwords,
    # not even the hashed names Redis holds.
    _, text = http_get(proxy.admin_port, "/metrics")
    for secret in (ENC_KEY, HASH_KEY, PASSWORD, "user:", "secret-value", "wrong-password",
                   *(name.decode("latin-1") for name in stored)):
        assert secret.lower() not in text.lower()
    assert bytes.fromhex(ENC_KEY).hex() not in text


def test_health_ready_and_not_found(redis_server):
    port, admin_port = free_port(), free_port()
    proc = start_proxy_listeners(_config(redis_server.port, port, admin_port),
                                 [port, admin_port])
    try:
        assert http_get(admin_port, "/healthz") == (200, "ok\n")
        wait_until(lambda: http_get(admin_port, "/readyz")[0] == 200, what="readyz 200")
        assert http_get(admin_port, "/nope")[0] == 404
        assert http_get(admin_port, "/")[0] == 404
        assert http_get(admin_port, "/metrics", "POST")[0] == 405

        redis_server.proc.terminate()
        redis_server.proc.wait(5)
        _, body = wait_until(
            lambda: (r := http_get(admin_port, "/readyz"))[0] == 503 and r,
            what="readyz 503 with Redis stopped")
        assert body == "cache main: upstream not ready\n"
        assert http_get(admin_port, "/healthz")[0] == 200
        samples = scrape(admin_port)
        assert value(samples, "cachecloak_upstream_connections", cache="main",
                     state="ready") == 0

        restarted = start_redis(port=redis_server.port)
        try:
            wait_until(lambda: http_get(admin_port, "/readyz")[0] == 200, timeout=15,
                       what="readyz 200 after Redis restarted")
        finally:
            restarted.stop()
    finally:
        assert proc.stop() == 0, proc.log()


def test_request_limits(proxy):
    # An oversized request head is refused; the connection is then closed.
    with socket.create_connection(("127.0.0.1", proxy.admin_port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 20000 + b"\r\n\r\n")
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 431 ")
    with socket.create_connection(("127.0.0.1", proxy.admin_port), timeout=10) as s:
        s.sendall(b"garbage\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize(("admin", "expected"), [
    ('admin:\n  address: "127.0.0.1:99999"\n', "admin.address: the port must be"),
    ('admin:\n  address: "localhost"\n', "admin.address: must be HOST:PORT"),
    ('admin:\n  address: "127.0.0.1:9121"\n  port: 9121\n', "admin.port: unknown field"),
    ("admin: 9121\n", "admin: must be a mapping"),
])
def test_admin_config_errors(tmp_path, admin, expected):
    cfg = tmp_path / "cachecloak.yaml"
    cfg.write_text(admin)
    result = run_cli("run", "--config", str(cfg))
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr


def test_admin_is_off_by_default(tmp_path):
    from proxy.config import load_config

    cfg = tmp_path / "cachecloak.yaml"
    cfg.write_text("caches: []\n")
    assert load_config(str(cfg)).admin is None
    cfg.write_text("admin:\n")
    admin = load_config(str(cfg)).admin
    assert (admin.host, admin.port) == ("127.0.0.1", 9121)
