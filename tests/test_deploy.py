"""The deployment examples (Dockerfile, deploy/) stay true to the code.

* deploy/kubernetes/pod.yaml: parses; the cachecloak configuration in its ConfigMap loads
  with proxy.config.load_config when the Secret volumes it mounts provide the files its
  references name; probes, mounts, user and grace period agree with the code.
* deploy/compose: parses and agrees with its cachecloak.yaml; and the example runs
  without Docker: gen-certs.sh makes the test CA, certificates and secrets, a real
  redis-server starts with the compose file's own arguments (mutual TLS, ACL file), and
  cachecloak runs with the compose configuration and command, its container paths mapped
  to the generated files.  The Dockerfile's HEALTHCHECK command is run against it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath

import pytest
import yaml

from proxy.cli import _parser
from proxy.config import load_config
from proxy.server.app import DRAIN_TIMEOUT
from tests.proxyproc import start_proxy_listeners, wait_until
from tests.servers import REPO_ROOT, RawClient, free_port, wait_for_port
from tests.test_admin import http_get

DEPLOY = REPO_ROOT / "deploy"
POD = DEPLOY / "kubernetes" / "pod.yaml"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
SECRET_REF = re.compile(r"<([A-Za-z0-9_-]+)\.([A-Za-z0-9_.-]+)>")
FILE_FIELDS = re.compile(r"(?:caFile|certFile|keyFile):\s*(\S+)")


def uncommented(text: str) -> str:
    """YAML text without its comments (the examples' comments show references too)."""
    return "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in text.splitlines())


def fake_secret(namespace: str, key: str) -> str:
    """64 hex characters, different per reference: fits keys, user names, passwords."""
    return hashlib.sha256(f"{namespace}.{key}".encode()).hexdigest()


def dockerfile_stages() -> list[str]:
    return re.split(r"(?m)^FROM ", DOCKERFILE.read_text())[1:]


def dockerfile_uid() -> int:
    return int(re.search(r"(?m)^USER (\d+)", dockerfile_stages()[-1]).group(1))


def healthcheck_command() -> list[str]:
    text = dockerfile_stages()[-1].replace("\\\n", " ")
    return json.loads(re.search(r"(?m)^HEALTHCHECK .*?CMD (\[.*\])\s*$", text).group(1))


def duration(text: str | int) -> float:
    value = str(text)
    return float(value[:-1]) if value.endswith("s") else float(value)


# -- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_final_stage_is_small_and_non_root():
    build, final = dockerfile_stages()
    assert "--only-binary=:all:" in build  # dependencies are never compiled
    # The proxy's own C part is, in the build stage only, and the build checks it.
    assert "libssl-dev" in build and 'python -c "import proxy._native"' in build
    assert "COPY pyproject.toml setup.py" in build
    assert "COPY --from=build /opt/cachecloak /opt/cachecloak" in final
    for tool in ("pip install", "apt-get", "gcc", "build-essential"):
        assert tool not in final
    assert dockerfile_uid() != 0
    assert healthcheck_command()[0] == "python"
    assert "ENV " in final and "CACHECLOAK_HEALTH_URL=http://127.0.0.1:9121/healthz" in final
    assert re.search(r'(?m)^ENTRYPOINT \["cachecloak"\]', final)


# -- Kubernetes ----------------------------------------------------------------------------


def test_kubernetes_pod_example_loads_with_its_secret_volumes(tmp_path):
    docs = list(yaml.safe_load_all(POD.read_text()))
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    (pod,) = [d for d in docs if d["kind"] == "Pod"]
    spec = pod["spec"]
    (sidecar,) = [c for c in spec["initContainers"] if c["name"] == "cachecloak"]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: up before the app
    env = {e["name"]: e["value"] for e in sidecar["env"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in sidecar["volumeMounts"]}

    config_path = PurePosixPath(env["CACHECLOAK_CONFIG"])
    assert mounts[str(config_path.parent)]["configMap"]["name"] == config_map["metadata"]["name"]
    text = config_map["data"][config_path.name]

    # Every <namespace.key> is a file of a Secret volume mounted at <dir>/<namespace>.
    provider = env["CACHECLOAK_SECRET_PROVIDER"]
    assert provider.startswith("dir:///")
    secret_dir = provider[len("dir://"):]
    local = tmp_path / "secrets"
    refs = set(SECRET_REF.findall(uncommented(text)))
    assert {"keys", "redis"} <= {ns for ns, _ in refs}
    for namespace, key in refs:
        volume = mounts.get(f"{secret_dir}/{namespace}")
        assert volume is not None and "secret" in volume, f"<{namespace}.{key}>"
        (local / namespace).mkdir(parents=True, exist_ok=True)
        (local / namespace / key).write_text(fake_secret(namespace, key) + "\n")
    for path in FILE_FIELDS.findall(uncommented(text)):  # TLS files: the same volumes
        assert path.startswith(secret_dir + "/"), path
        target = local / path[len(secret_dir) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("-----BEGIN CERTIFICATE-----\n")
    config_file = tmp_path / "cachecloak.yaml"
    config_file.write_text(text.replace(secret_dir, str(local)))
    config = load_config(str(config_file), secret_provider=f"dir://{local}", environ={})

    assert [listener.cache for listener in config.listeners] == ["app", "app"]
    cache = config.caches["app"]
    assert cache.encryption_current == bytes.fromhex(fake_secret("keys", "encryption-current"))
    assert cache.redis.password == fake_secret("redis", "password")
    assert cache.redis.tls.ca_file == str(local / "redis" / "ca.crt")

    # The probes ask the admin endpoint the configuration opens.
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports["admin"] == config.admin.port
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert sidecar[probe]["httpGet"]["port"] == "admin"

    # The arguments are cachecloak's; what they need to write is writable.
    args = _parser().parse_args(sidecar["args"])
    assert args.command == "run" and args.workers == 2
    writable = {path for path, volume in mounts.items() if "emptyDir" in volume}
    assert "/tmp" in writable  # --workers: the private admin sockets
    assert str(PurePosixPath(args.pid_file).parent) in writable
    (app,) = spec["containers"]
    app_mounts = {m["mountPath"] for m in app["volumeMounts"]}
    for listener in config.listeners:
        if listener.unix_path is not None:
            directory = str(PurePosixPath(listener.unix_path).parent)
            assert directory in writable and directory in app_mounts

    security = sidecar["securityContext"]
    assert security["runAsUser"] == dockerfile_uid()
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["terminationGracePeriodSeconds"] >= DRAIN_TIMEOUT + 10


# -- Compose -------------------------------------------------------------------------------


def volume_map(service: dict) -> dict[str, str]:
    """Container path -> path relative to the compose directory, for bind mounts."""
    out = {}
    for entry in service.get("volumes", []):
        host, container = entry.split(":")[:2]
        out[container] = host
    return out


def test_compose_example_is_consistent():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    redis_args, cachecloak, app = (services["redis"]["command"], services["cachecloak"],
                                   services["app"])
    text = (COMPOSE_DIR / "cachecloak.yaml").read_text()
    env = cachecloak["environment"]
    mounted = volume_map(cachecloak)
    assert mounted[env["CACHECLOAK_CONFIG"]] == "./cachecloak.yaml"
    for path in FILE_FIELDS.findall(uncommented(text)):
        assert path in mounted, f"{path} is not mounted into the cachecloak service"
    assert env["CACHECLOAK_SECRET_PROVIDER"] == "dir:///run/secrets"
    targets = {s["target"]: compose["secrets"][s["source"]]["file"]
               for s in cachecloak["secrets"]}
    for namespace, key in SECRET_REF.findall(uncommented(text)):
        assert f"{namespace}.{key}" in targets  # /run/secrets/<namespace>.<key>
    tls_port = redis_args[redis_args.index("--tls-port") + 1]
    assert f'addresses: ["redis:{tls_port}"]' in text
    assert redis_args[redis_args.index("--port") + 1] == "0"  # TLS only
    args = _parser().parse_args(cachecloak["command"])
    assert args.workers == 2 and args.log_format == "json"
    assert "/tmp" in cachecloak["tmpfs"] and cachecloak["read_only"] is True
    assert duration(cachecloak["stop_grace_period"]) > DRAIN_TIMEOUT
    assert app["network_mode"] == "service:cachecloak"
    assert app["depends_on"]["cachecloak"]["condition"] == "service_healthy"


@pytest.mark.skipif(shutil.which("openssl") is None or shutil.which("redis-server") is None,
                    reason="needs openssl and redis-server")
def test_compose_example_runs_without_docker(tmp_path):
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    made = subprocess.run([str(COMPOSE_DIR / "gen-certs.sh"), str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "ca-key.pem").stat().st_mode & 0o077 == 0

    # Redis with the compose file's arguments, its mounts mapped to the generated files.
    redis_port = free_port()
    tls_port = services["redis"]["command"][services["redis"]["command"].index("--tls-port") + 1]
    redis_mounts = volume_map(services["redis"])
    args = [str(tmp_path / redis_mounts[a]) if a in redis_mounts else a
            for a in services["redis"]["command"]]
    args = [str(redis_port) if a == tls_port else a for a in args]
    workdir = Path(tempfile.mkdtemp(prefix="cachecloak-redis-"))
    redis = subprocess.Popen([shutil.which("redis-server"), *args[1:], "--bind", "127.0.0.1",
                              "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = None
    try:
        wait_for_port(redis_port, proc=redis)
        # cachecloak with the compose configuration and command.
        cachecloak = services["cachecloak"]
        secrets = tmp_path / "run-secrets"
        secrets.mkdir()
        for entry in cachecloak["secrets"]:
            source = compose["secrets"][entry["source"]]["file"]
            shutil.copy(tmp_path / source, secrets / entry["target"])
        port, admin_port = free_port(), free_port()
        text = (COMPOSE_DIR / "cachecloak.yaml").read_text()
        for container, host in volume_map(cachecloak).items():
            text = text.replace(container, str(tmp_path / host))
        text = (text.replace(f"redis:{tls_port}", f"localhost:{redis_port}")
                .replace("127.0.0.1:6379", f"127.0.0.1:{port}")
                .replace("127.0.0.1:9121", f"127.0.0.1:{admin_port}"))
        command = cachecloak["command"]
        assert command[0] == "run"
        proxy = start_proxy_listeners(text, [port, admin_port], *command[1:],
                                      "--secret-provider", f"dir://{secrets}")
        wait_until(lambda: "all 2 workers serving" in proxy.log(), timeout=20,
                   what="the workers")
        with RawClient(port) as c:
            assert c.call("SET", "greeting", "hello") == b"+OK\r\n"
            assert c.call("GET", "greeting") == b"$5\r\nhello\r\n"
            assert c.call("INCR", "visits") == b":1\r\n"
        assert http_get(admin_port, "/readyz") == (200, "ready\n")

        # What Redis holds, seen as the ACL user over mutual TLS: hashed names only.
        import redis as redis_py

        direct = redis_py.Redis(
            host="localhost", port=redis_port, ssl=True, username="cachecloak",
            password=(tmp_path / "secrets" / "redis-password").read_text().strip(),
            ssl_ca_certs=str(tmp_path / "tls" / "ca.pem"),
            ssl_certfile=str(tmp_path / "tls" / "client.pem"),
            ssl_keyfile=str(tmp_path / "tls" / "client-key.pem"))
        names = list(direct.scan_iter(match="cachecloak:*"))
        assert len(names) == 2
        assert all(b"greeting" not in n and b"visits" not in n for n in names)
        assert all(b"hello" not in direct.get(n) for n in names if direct.type(n) == b"string")
        direct.close()

        # The image's HEALTHCHECK command, run here with this interpreter.
        check = [sys.executable, *healthcheck_command()[1:]]
        healthy = subprocess.run(check, capture_output=True, timeout=30, env={
            **os.environ, "CACHECLOAK_HEALTH_URL": f"http://127.0.0.1:{admin_port}/healthz"})
        assert healthy.returncode == 0, healthy.stderr
        unhealthy = subprocess.run(check, capture_output=True, timeout=30, env={
            **os.environ, "CACHECLOAK_HEALTH_URL": f"http://127.0.0.1:{admin_port}/nothing"})
        assert unhealthy.returncode != 0
    finally:
        if proxy is not None:
            assert proxy.stop() == 0, proxy.log()
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
