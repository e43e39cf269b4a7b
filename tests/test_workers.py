"""`cachecloak run --workers N`: several processes serving the same listeners.

Real `cachecloak run --workers 2` processes in front of a real redis-server: connections
spread over both workers (INFO's process_id tells which one answered), the supervisor's
admin endpoint aggregates the workers, SIGTERM drains every worker, a killed worker is
replaced, startup errors stop the start instead of looping, SIGHUP reaches every worker
(and a worker started later runs the reloaded configuration), and `cachecloak reload`
reports one outcome for all workers: the supervisor checks the configuration first, then
collects every worker's outcome.  Which key wrote a value is read from the raw envelope
in Redis (version byte, then the 4-byte key identifier).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.crypto.keys import derive_key_id
from proxy.server.workers import MAX_WORKERS, WorkerAnswer, aggregate_reload, parse_workers
from tests.proxyproc import proxy_env, run_cli, start_proxy_listeners, wait_until
from tests.servers import ProxyProcess, RawClient, free_port, start_redis, wait_for_port
from tests.test_admin import http_get

KEY_A = "3f" * 16 + "a1" * 16
KEY_B = "8e" * 16 + "42" * 16
HASH_KEY = "5c" * 16 + "07" * 16
CONNECTIONS = 40


def _config(redis_port: int, port: int, admin_port: int | None = None, *,
            current: str = KEY_A, old: str | None = None, extra: str = "") -> str:
    admin = f'admin:\n  address: "127.0.0.1:{admin_port}"\n' if admin_port else ""
    old_keys = f'\n        old: ["{old}"]' if old else ""
    return f"""{admin}caches:
  - name: main
    type: redis
    redis:
      addresses: ["127.0.0.1:{redis_port}"]
      disableTLS: true
      poolSize: 1{extra}
    encryption:
      keys:
        current: "{current}"{old_keys}
    hashing:
      keys:
        current: "{HASH_KEY}"
listeners:
  - address: "127.0.0.1:{port}"
    cache: main
"""


@pytest.fixture
def redis_server():
    server = start_redis()
    yield server
    server.stop()


def start_workers(config_text: str, port: int, *extra: str, count: int = 2):
    proc = start_proxy_listeners(config_text, [port], "--workers", str(count), *extra)
    try:
        wait_until(lambda: f"all {count} workers serving" in proc.log(), timeout=20,
                   what="every worker to serve")
    except AssertionError:
        proc.stop()
        raise AssertionError(proc.log()) from None
    return proc


def worker_pids(proc) -> dict[int, int]:
    """The latest pid of every worker index, from the supervisor's log."""
    pids = {}
    for index, pid in re.findall(r"worker (\d+) serving \(pid (\d+)\)", proc.log()):
        pids[int(index)] = int(pid)
    return pids


def process_id(client: RawClient) -> int:
    info = client.call("INFO", "server").decode()
    return int(re.search(r"process_id:(\d+)", info).group(1))


def parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"PPid:\s+(\d+)", status).group(1))


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def stop(proc, sig: int = signal.SIGTERM) -> int:
    proc.proc.send_signal(sig)
    try:
        return proc.proc.wait(30)
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait(5)


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    status, text = http_get(port, "/metrics")
    assert status == 200, text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples, name: str, **labels) -> dict[str, float]:
    """Value per worker label of the samples `name` with `labels`."""
    out: dict[str, float] = {}
    for (sample, sample_labels), value in samples.items():
        have = dict(sample_labels)
        if sample == name and all(have.get(k) == v for k, v in labels.items()):
            out[have["worker"]] = out.get(have["worker"], 0) + value
    return out


def test_two_workers_share_one_port_and_the_admin_endpoint(redis_server):
    port, admin_port = free_port(), free_port()
    proc = start_workers(_config(redis_server.port, port, admin_port), port)
    try:
        pids = worker_pids(proc)
        assert sorted(pids) == [0, 1]
        assert all(parent_of(pid) == proc.proc.pid for pid in pids.values())

        clients = [RawClient(port) for _ in range(CONNECTIONS)]
        try:
            served_by = [process_id(c) for c in clients]
            # The kernel spreads connections over both workers' sockets (SO_REUSEPORT).
            assert set(served_by) == set(pids.values()), served_by
            assert clients[0].call("SET", "shared", "across-workers") == b"+OK\r\n"
            for c in clients:
                assert c.call("GET", "shared") == b"$14\r\nacross-workers\r\n"

            assert http_get(admin_port, "/healthz") == (200, "ok\n")
            assert http_get(admin_port, "/readyz") == (200, "ready\n")
            samples = scrape(admin_port)
            info = total(samples, "cachecloak_commands_total", command="info", outcome="ok")
            assert sorted(info) == ["0", "1"]
            assert sum(info.values()) == CONNECTIONS
            gets = total(samples, "cachecloak_commands_total", command="get", outcome="ok")
            assert sum(gets.values()) == CONNECTIONS
            connected = total(samples, "cachecloak_client_connections")
            assert sum(connected.values()) == CONNECTIONS
            assert total(samples, "cachecloak_worker_up") == {"0": 1, "1": 1}
            assert samples[("cachecloak_workers", ())] == 2
        finally:
            for c in clients:
                c.close()
    finally:
        code = stop(proc)
    assert code == 0, proc.log()
    assert all(gone(pid) for pid in pids.values())
    assert "all workers stopped" in proc.log()


def test_sigterm_drains_pipelines_on_every_worker(redis_server):
    port = free_port()
    proc = start_workers(_config(redis_server.port, port), port)
    pids = worker_pids(proc)
    clients: list[RawClient] = []
    try:
        # Four connections on each worker (the kernel picks; bounded to 100 attempts).
        per_worker: dict[int, int] = {}
        for _ in range(100):
            c = RawClient(port, timeout=30)
            pid = process_id(c)
            if per_worker.get(pid, 0) >= 4:
                c.close()
                continue
            per_worker[pid] = per_worker.get(pid, 0) + 1
            clients.append(c)
            if len(clients) == 8:
                break
        assert per_worker == dict.fromkeys(pids.values(), 4)
        # Redis holds writes back for a while: the SETs are in flight in the workers
        # when SIGTERM comes.  The GET in front of them (a read, not held) answers
        # first, which shows that a worker has read the whole pipeline.
        redis_server.client().execute_command("CLIENT", "PAUSE", 1500, "WRITE")
        pipeline = b"*2\r\n$3\r\nGET\r\n$5\r\nprobe\r\n" + b"".join(
            b"*3\r\n$3\r\nSET\r\n$4\r\nk%03d\r\n$4\r\nv%03d\r\n" % (i, i)
            for i in range(300))
        for c in clients:
            c.send_raw(pipeline)
        for c in clients:
            assert c.read_reply() == b"$-1\r\n"
        proc.proc.send_signal(signal.SIGTERM)
        for c in clients:
            for _ in range(300):
                assert c.read_reply() == b"+OK\r\n"
    finally:
        for c in clients:
            c.close()
    assert proc.proc.wait(30) == 0, proc.log()
    assert all(gone(pid) for pid in pids.values())
    assert redis_server.client().dbsize() == 300


def test_a_killed_worker_is_replaced(redis_server):
    port, admin_port = free_port(), free_port()
    proc = start_workers(_config(redis_server.port, port, admin_port), port)
    try:
        before = worker_pids(proc)
        os.kill(before[0], signal.SIGKILL)
        wait_until(lambda: worker_pids(proc)[0] != before[0], timeout=20,
                   what="worker 0 to be replaced")
        new_pid = worker_pids(proc)[0]
        assert parent_of(new_pid) == proc.proc.pid
        assert f"worker 0 (pid {before[0]}) was killed by SIGKILL; restarting it" in proc.log()
        # New connections reach the new worker too (bounded: 200 connections at most).
        seen = set()
        for _ in range(200):
            with RawClient(port) as c:
                seen.add(process_id(c))
                assert c.call("PING") == b"+PONG\r\n"
            if new_pid in seen and before[1] in seen:
                break
        assert {new_pid, before[1]} <= seen
        assert before[0] not in seen
        samples = scrape(admin_port)
        assert total(samples, "cachecloak_worker_restarts_total") == {"0": 1, "1": 0}
        assert http_get(admin_port, "/healthz") == (200, "ok\n")
    finally:
        code = stop(proc)
    assert code == 0, proc.log()


def test_an_address_in_use_stops_the_start(tmp_path):
    port = free_port()
    cfg = tmp_path / "cachecloak.yaml"
    cfg.write_text(f"listeners:\n  - address: 127.0.0.1:{port}\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = run_cli("run", "--config", str(cfg), "--workers", "2")
    assert result.returncode == 1
    assert (f"cannot listen on 127.0.0.1:{port}: the address is already in use"
            in result.stderr)
    assert "starting 2 workers" not in result.stderr


def test_another_group_of_workers_on_the_same_port_is_refused(tmp_path):
    """SO_REUSEPORT would let a second group share the port silently; the supervisor's
    probe (bound without it) refuses instead."""
    port = free_port()
    proc = start_workers(f"listeners:\n  - address: 127.0.0.1:{port}\n", port)
    try:
        cfg = tmp_path / "second.yaml"
        cfg.write_text(f"listeners:\n  - address: 127.0.0.1:{port}\n")
        result = run_cli("run", "--config", str(cfg), "--workers", "2")
        assert result.returncode == 1
        assert "the address is already in use" in result.stderr
    finally:
        assert stop(proc) == 0, proc.log()


def test_a_worker_failing_at_startup_stops_the_supervisor(tmp_path, redis_server):
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    port = free_port()
    text = _config(redis_server.port, port).replace(
        "      disableTLS: true\n", "      tls: broken\n")
    text = f"tls:\n  broken:\n    caFile: {ca}\n" + text
    cfg = tmp_path / "cachecloak.yaml"
    cfg.write_text(text)
    result = run_cli("run", "--config", str(cfg), "--workers", "2", timeout=60)
    assert result.returncode == 1, result.stderr
    assert "caFile" in result.stderr
    assert "before it served; stopping" in result.stderr
    assert "restarting" not in result.stderr


def test_sighup_reaches_every_worker_and_restarted_workers_run_the_new_config(
        tmp_path, redis_server):
    port = free_port()
    pid_file = tmp_path / "cachecloak.pid"
    proc = start_workers(_config(redis_server.port, port), port, "--pid-file", str(pid_file))
    try:
        assert int(pid_file.read_text()) == proc.proc.pid  # the supervisor's
        pids = worker_pids(proc)
        # Rotate: B becomes current, A stays readable.
        (proc.workdir / "cachecloak.yaml").write_text(
            _config(redis_server.port, port, current=KEY_B, old=KEY_A))
        proc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: all(f"cachecloak[worker {i}]: config reloaded" in proc.log()
                               for i in (0, 1)), timeout=20, what="both workers to reload")
        assert worker_pids(proc) == pids  # reloaded in place, not restarted

        # A worker started after the reload must run the reloaded configuration too.
        os.kill(pids[1], signal.SIGKILL)
        wait_until(lambda: worker_pids(proc)[1] != pids[1], timeout=20,
                   what="worker 1 to be replaced")
        replacement = worker_pids(proc)[1]
        served = set()
        for i in range(200):
            with RawClient(port) as c:
                served.add(process_id(c))
                assert c.call("SET", f"after:{i}", "v") == b"+OK\r\n"
            if replacement in served and pids[0] in served:
                break
        assert {replacement, pids[0]} <= served
        direct = redis_server.client()
        key_b = derive_key_id(bytes.fromhex(KEY_B))
        stored = [direct.get(name) for name in direct.keys("*")]
        assert stored and all(blob[1:5] == key_b for blob in stored)
    finally:
        code = stop(proc)
    assert code == 0, proc.log()
    assert not pid_file.exists()


def test_unix_socket_shared_by_workers_and_the_local_cache_warning(tmp_path):
    port = free_port()
    path = tmp_path / "cachecloak.sock"
    proc = start_workers(f"""caches:
  - name: small
    type: local
listeners:
  - address: 127.0.0.1:{port}
    cache: small
  - address: unix:{path}
    socketMode: "0660"
    cache: small
""", port)
    try:
        assert "each of the 2 workers has its own memory" in proc.log()
        assert oct(path.stat().st_mode & 0o777) == "0o660"
        pids = set(worker_pids(proc).values())
        for _ in range(10):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(10)
                sock.connect(str(path))
                sock.sendall(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
                data = b""
                while b"process_id:" not in data or not data.endswith(b"\r\n\r\n"):
                    chunk = sock.recv(65536)
                    assert chunk
                    data += chunk
                assert int(re.search(rb"process_id:(\d+)", data).group(1)) in pids
    finally:
        code = stop(proc, signal.SIGINT)
    assert code == 0, proc.log()
    assert not path.exists()


def test_workers_count_is_checked():
    assert parse_workers("2") == 2
    assert parse_workers(" AUTO ") >= 1
    for bad in ("0", "-1", "two", str(MAX_WORKERS + 1), ""):
        with pytest.raises(argparse.ArgumentTypeError, match="from 1 to"):
            parse_workers(bad)
    result = run_cli("run", env={"CACHECLOAK_WORKERS": "many"})
    assert result.returncode == 2
    assert "--workers" in result.stderr and "'many'" in result.stderr


def test_port_zero_cannot_be_shared(tmp_path):
    cfg = tmp_path / "cachecloak.yaml"
    cfg.write_text("listeners:\n  - address: 127.0.0.1:0\n")
    result = run_cli("run", "--config", str(cfg), "--workers", "2")
    assert result.returncode == 2
    assert "listeners[0].address: port 0" in result.stderr


# -- `cachecloak reload` with workers: one truthful outcome -------------------------------

KEY_ID_A = derive_key_id(bytes.fromhex(KEY_A))
KEY_ID_B = derive_key_id(bytes.fromhex(KEY_B))


def write_on_every_worker(port: int, prefix: str, pids: set[int]) -> int:
    """SET `prefix:i` over new connections until every worker in `pids` has served one
    (bounded: 200 connections); how many were written."""
    served: set[int] = set()
    for i in range(200):
        with RawClient(port) as c:
            served.add(process_id(c))
            assert c.call("SET", f"{prefix}:{i}", "v") == b"+OK\r\n"
        if pids <= served:
            return i + 1
    raise AssertionError(f"connections reached workers {served}, not all of {pids}")


def key_ids(redis_server, names) -> set[bytes]:
    direct = redis_server.client()
    return {direct.get(name)[1:5] for name in names}


def per_worker_lines(stdout: str) -> dict[int, list[str]]:
    """The `  worker N: ...` / `  workers 0, 1: ...` lines of cachecloak reload, by worker."""
    out: dict[int, list[str]] = {}
    for who, text in re.findall(r"^  workers? ([\d, ]+): (.*)$", stdout, re.M):
        for index in who.split(","):
            out.setdefault(int(index), []).append(text)
    return out


def test_cachecloak_reload_reports_every_worker_and_each_uses_the_new_key(
        tmp_path, redis_server):
    port, admin_port = free_port(), free_port()
    pid_file = tmp_path / "cachecloak.pid"
    proc = start_workers(_config(redis_server.port, port, admin_port), port,
                         "--pid-file", str(pid_file))
    try:
        pids = worker_pids(proc)
        direct = redis_server.client()
        write_on_every_worker(port, "before", set(pids.values()))
        before = set(direct.keys("*"))
        assert before and key_ids(redis_server, before) == {KEY_ID_A}

        (proc.workdir / "cachecloak.yaml").write_text(
            _config(redis_server.port, port, admin_port, current=KEY_B, old=KEY_A))
        result = run_cli("reload", "--pid-file", str(pid_file))
        assert result.returncode == 0, result.stdout + result.stderr + proc.log()
        assert f"config reloaded (pid {proc.proc.pid}, 2 workers)" in result.stdout
        lines = per_worker_lines(result.stdout)
        assert sorted(lines) == [0, 1], result.stdout
        for index in (0, 1):
            assert any(line.startswith(f"cache main: encryption key id {KEY_ID_B.hex()} "
                                       f"current, 1 old key ({KEY_ID_A.hex()})")
                       for line in lines[index]), result.stdout
        # One outcome, the supervisor's: no worker wrote the file.
        record = json.loads((tmp_path / "cachecloak.pid.reload.json").read_text())
        assert (record["pid"], record["outcome"], record["workers"]) == (proc.proc.pid,
                                                                           "ok", 2)
        assert worker_pids(proc) == pids  # reloaded in place
        assert "config reloaded by 2 of 2 workers" in proc.log()
        samples = scrape(admin_port)
        assert samples[("cachecloak_supervisor_config_reloads_total",
                        (("outcome", "ok"),))] == 1
        assert total(samples, "cachecloak_config_reloads_total", outcome="ok") == {
            "0": 1, "1": 1}

        # Both workers write with the new key now.
        write_on_every_worker(port, "after", set(pids.values()))
        after = set(direct.keys("*")) - before
        assert after and key_ids(redis_server, after) == {KEY_ID_B}
        for secret in (KEY_A, KEY_B, HASH_KEY):
            assert secret not in result.stdout + proc.log()
    finally:
        code = stop(proc)
    assert code == 0, proc.log()


def test_an_invalid_config_is_rejected_once_and_every_worker_keeps_the_old_key(
        tmp_path, redis_server):
    port, admin_port = free_port(), free_port()
    pid_file = tmp_path / "cachecloak.pid"
    proc = start_workers(_config(redis_server.port, port, admin_port), port,
                         "--pid-file", str(pid_file))
    try:
        pids = worker_pids(proc)
        (proc.workdir / "cachecloak.yaml").write_text(
            _config(redis_server.port, port, admin_port, current="zz" + KEY_B[2:], old=KEY_A))
        result = run_cli("reload", "--pid-file", str(pid_file))
        assert result.returncode == 2, result.stdout + result.stderr + proc.log()
        assert "the new configuration was rejected" in result.stderr
        assert "caches[0].encryption.keys.current: must be 64 hex characters" in result.stderr
        log = proc.log()
        # Checked once by the supervisor; no worker was asked to try it.
        assert log.count("caches[0].encryption.keys.current: must be 64 hex") == 1
        assert "no worker was signalled" in log
        assert "[worker" not in "".join(line for line in log.splitlines(keepends=True)
                                        if "config reload" in line)
        assert worker_pids(proc) == pids
        samples = scrape(admin_port)
        assert samples[("cachecloak_supervisor_config_reloads_total",
                        (("outcome", "rejected"),))] == 1
        assert sum(total(samples, "cachecloak_config_reloads_total").values()) == 0

        direct = redis_server.client()
        write_on_every_worker(port, "still", set(pids.values()))
        written = set(direct.keys("*"))
        assert written and key_ids(redis_server, written) == {KEY_ID_A}
        for secret in (KEY_A, KEY_B, KEY_B[2:], HASH_KEY):
            assert secret not in result.stderr + proc.log()
    finally:
        code = stop(proc)
    assert code == 0, proc.log()


def test_a_sighup_during_startup_is_not_lost(tmp_path, redis_server):
    """SIGHUP as soon as the pid file exists: before or after the supervisor's handler is
    installed (whichever it is), one reload of every worker follows, with one outcome."""
    port = free_port()
    pid_file = tmp_path / "cachecloak.pid"
    cfg = tmp_path / "cachecloak.yaml"
    cfg.write_text(_config(redis_server.port, port))
    with open(tmp_path / "cachecloak.log", "wb") as logf:
        popen = subprocess.Popen(
            [sys.executable, "-m", "proxy", "run", "--config", str(cfg), "--workers", "2",
             "--pid-file", str(pid_file)], stdout=logf, stderr=subprocess.STDOUT,
            env=proxy_env(), cwd=str(tmp_path))
    proc = ProxyProcess(port=port, proc=popen, workdir=tmp_path)
    try:
        wait_until(lambda: pid_file.exists(), timeout=20, interval=0.002,
                   what="the pid file")
        cfg.write_text(_config(redis_server.port, port, current=KEY_B, old=KEY_A))
        popen.send_signal(signal.SIGHUP)
        outcome = tmp_path / "cachecloak.pid.reload.json"
        wait_until(outcome.exists, timeout=30, what="the reload outcome")
        record = json.loads(outcome.read_text())
        assert (record["pid"], record["outcome"], record["workers"]) == (popen.pid, "ok", 2), \
            record
        wait_for_port(port, proc=popen)
        wait_until(lambda: "all 2 workers serving" in proc.log(), timeout=20,
                   what="every worker to serve")
        direct = redis_server.client()
        write_on_every_worker(port, "k", set(worker_pids(proc).values()))
        assert key_ids(redis_server, direct.keys("*")) == {KEY_ID_B}
    finally:
        code = stop(proc)
    assert code == 0, proc.log()


def test_reload_outcomes_of_the_workers_add_up_to_one():
    ok = [WorkerAnswer(0, "ok", ["cache main: unchanged"]),
          WorkerAnswer(1, "ok", ["cache main: unchanged"])]
    assert aggregate_reload(ok, 12) == ("ok", ["workers 0, 1: cache main: unchanged"], 2)

    # A worker that was being restarted starts with the new configuration anyway.
    outcome, lines, reloaded = aggregate_reload(
        [ok[0], WorkerAnswer(1, "absent")], 12)
    assert (outcome, reloaded) == ("ok", 1)
    assert lines[1] == ("worker 1: was not running (being restarted); it starts with the "
                        "new configuration")

    rejected = [WorkerAnswer(i, "rejected", ["caches: main: bad"]) for i in (0, 1)]
    assert aggregate_reload([*rejected, WorkerAnswer(2, "exited")], 12) == (
        "rejected", ["workers 0, 1: caches: main: bad", "worker 2: ended during the reload; "
                     "its replacement starts with the running configuration"], 0)

    # Only some workers took it: partial, saying which did what.
    outcome, lines, reloaded = aggregate_reload(
        [ok[0], rejected[1], WorkerAnswer(2, "silent")], 12)
    assert (outcome, reloaded) == ("partial", 1)
    assert lines == ["worker 0: reloaded: cache main: unchanged",
                     "worker 1: rejected: caches: main: bad",
                     "worker 2: no outcome within 12s (still reloading, or stuck); its log "
                     "lines say more"]
    # No worker answered: not a rejection (nobody said no), not ok either.
    assert aggregate_reload([WorkerAnswer(0, "silent")], 12)[0] == "partial"
