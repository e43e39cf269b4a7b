"""Helpers for the upstream TLS, ACL and `cachecloak check` tests.

* `start_tls_redis` starts a TLS-only redis-server (`--port 0 --tls-port P`) with
  certificates from tests/certs.py; `start_sentinel` a Sentinel for one primary.  The
  caller stops them (fixtures do).
* `tls_client` is a redis-py client for such a server, to look at what Redis holds.
* `cache_yaml` writes the configuration of one `type: redis` cache.
* `run_cli` runs `python -m proxy ...` to completion; `wait_until` polls, bounded.

Nothing here mocks anything: these are real redis-server and cachecloak processes.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.certs import CertPair, TestCA
from tests.proxyproc import proxy_env, run_cli, wait_until  # noqa: F401 - re-exported
from tests.secrets_registry import register_secret
from tests.servers import RedisServer, free_port, wait_for_port

ENC = "5e" * 32
HASH = "6f" * 32
register_secret(ENC, "encryption key")  # never in any log (checked at session end)
register_secret(HASH, "hashing key")


def start_tls_redis(ca: TestCA, server: CertPair, *extra_args: str,
                    auth_clients: str = "no") -> RedisServer:
    """A redis-server that only speaks TLS; `.port` is its TLS port."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed; run ./scripts/test, which installs it")
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="cachecloak-redis-tls-"))
    args = [exe, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(server.cert), "--tls-key-file", str(server.key),
            "--tls-ca-cert-file", str(ca.cert_path), "--tls-auth-clients", auth_clients,
            "--save", "", "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no",
            "--logfile", str(workdir / "redis.log"), *extra_args]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc=proc)
    except (RuntimeError, TimeoutError):
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        log = (workdir / "redis.log").read_text(errors="replace")
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(f"TLS redis-server did not start:\n{log}") from None
    return RedisServer(port=port, proc=proc, workdir=workdir, extra_args=list(extra_args))


def start_sentinel(master_name: str, primary_port: int) -> RedisServer:
    """A Sentinel monitoring 127.0.0.1:`primary_port` as `master_name` (quorum 1)."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed; run ./scripts/test, which installs it")
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="cachecloak-sentinel-"))
    conf = workdir / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
                    f"logfile {workdir / 'sentinel.log'}\n"
                    f"sentinel monitor {master_name} 127.0.0.1 {primary_port} 1\n")
    proc = subprocess.Popen([exe, str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    server = RedisServer(port=port, proc=proc, workdir=workdir)
    try:
        wait_for_port(port, proc=proc)
    except (RuntimeError, TimeoutError):
        server.stop()
        raise
    return server


def tls_client(server: RedisServer, ca: TestCA, client: CertPair | None = None, **kwargs):
    import redis

    if client is not None:
        kwargs.update(ssl_certfile=str(client.cert), ssl_keyfile=str(client.key))
    return redis.Redis(host="127.0.0.1", port=server.port, ssl=True,
                       ssl_ca_certs=str(ca.cert_path), socket_timeout=5, **kwargs)


def cache_yaml(addresses: list[str] | str, *, name: str = "app", tls: str | None = None,
               profiles: str = "", redis_extra: str = "", enc: str = ENC,
               hashing: str = HASH, extra_caches: str = "") -> str:
    """One redis cache.  `tls=None` means plain TCP (disableTLS: true); `profiles` is the
    body of the top-level `tls:` map (already indented by two spaces)."""
    if isinstance(addresses, str):
        addresses = [addresses]
    listed = ", ".join(f'"{a}"' for a in addresses)
    transport = "      disableTLS: true\n" if tls is None else f"      tls: {tls}\n"
    head = f"tls:\n{profiles}" if profiles else ""
    return f"""{head}caches:
  - name: {name}
    type: redis
    redis:
      addresses: [{listed}]
{transport}{redis_extra}    encryption:
      keys:
        current: "{enc}"
    hashing:
      keys:
        current: "{hashing}"
{extra_caches}"""


