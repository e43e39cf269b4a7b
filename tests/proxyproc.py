"""Process helpers for the security, client and fault tests, on top of tests.servers.

* `start_proxy_listeners` starts `python -m proxy run` with a configuration that names its
  own listeners (no --listen), for a proxy serving several caches at once.
* `run_cli` runs `python -m proxy ...` to completion (config errors, keygen, ...).
* `wait_until` is the bounded polling every test uses instead of fixed sleeps.

Nothing here mocks anything: these are the real proxy processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.secrets_registry import register_cli_run
from tests.servers import REPO_ROOT, ProxyProcess, wait_for_port


def proxy_env(env: dict | None = None) -> dict:
    full_env = dict(os.environ)
    full_env.pop("CACHECLOAK_CONFIG", None)
    full_env.pop("CACHECLOAK_SECRET_PROVIDER", None)
    full_env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    return full_env


def start_proxy_listeners(config_text: str, ports: list[int], *extra_args: str,
                          env: dict | None = None) -> ProxyProcess:
    """Start the proxy with a config whose `listeners:` use `ports`; wait for all of them.

    The returned ProxyProcess's `port` is the first listener's.
    """
    workdir = Path(tempfile.mkdtemp(prefix="cachecloak-proxy-"))
    cfg = workdir / "cachecloak.yaml"
    cfg.write_text(config_text)
    args = [sys.executable, "-m", "proxy", "run", "--config", str(cfg), *extra_args]
    with open(workdir / "cachecloak.log", "wb") as logf:
        proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT,
                                env=proxy_env(env), cwd=str(workdir))
    try:
        for port in ports:
            wait_for_port(port, proc=proc)
    except (RuntimeError, TimeoutError) as exc:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        raise RuntimeError(f"cachecloak did not start: {exc}\n" +
                           (workdir / "cachecloak.log").read_text(errors="replace")) from None
    return ProxyProcess(port=ports[0], proc=proc, workdir=workdir)


def run_cli(*args: str, env: dict | None = None, timeout: float = 30.0,
            cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run `python -m proxy ARGS` to completion; text output, never a shell."""
    result = subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True,
                            text=True, env=proxy_env(env), timeout=timeout,
                            cwd=cwd or tempfile.gettempdir())
    register_cli_run(args, result)
    return result


def wait_until(predicate: Callable[[], object], timeout: float = 10.0,
               interval: float = 0.02, what: str = "condition") -> object:
    """Poll `predicate` until it returns something truthy; bounded in time and count."""
    deadline = time.monotonic() + timeout
    attempts = max(int(timeout / interval) + 1, 1)
    last_exc: Exception | None = None
    for _ in range(attempts * 2):
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - keep polling; reported on timeout
            last_exc = exc
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_exc!r})" if last_exc else ""))
