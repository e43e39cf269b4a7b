"""Suite-wide check that no log of any test holds a key, a value, a password or key material.

Test helpers register two things here while the session runs:

* secrets (`register_secret`): the key hex of every configuration a helper writes, the
  passwords of listeners and of Redis, and distinctive plaintext the workloads write;
* logs: every proxy process's log file (`register_proxy`, called by
  `tests.servers.ProxyProcess` for every proxy whichever helper started it), the output of
  CLI runs (`register_output`, written to a file here so a finding names a file and a
  line), and the log records of in-process code (`LogCapture`, installed for the whole
  session by tests/conftest.py).

At the end of the session `scan()` reads every registered log and reports each line that
holds a registered secret or any run of 64 or more hex digits (the form of a configured
key).  A finding shows the file, the line number and the line with every secret and hex
run replaced by a placeholder.

Must never: print, log or put into a failure message any secret it holds; the report is
redacted before it leaves this module.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import yaml

# Shorter strings would match ordinary log text ("app", "default") by accident.
MIN_SECRET_LENGTH = 8
# The configuration fields whose values are secrets (key hex, passwords).
_SECRET_FIELDS = frozenset({"password", "current", "old"})
# Secret-file entries whose name says they are not secret (user names are logged).
_NOT_SECRET_NAME = re.compile(r"user|name", re.IGNORECASE)
_HEX_RUN = re.compile(rb"[0-9a-fA-F]{64,}")
_REFERENCE = re.compile(r"^<[^<>]+>$|\{\{")  # <ns.key> and {{ env.X }}: not the secret itself

_lock = threading.Lock()
_secrets: dict[bytes, str] = {}  # secret -> kind (for the placeholder)
_logs: dict[Path, str] = {}  # log file -> what wrote it
_session_dir: Path | None = None
_outputs = 0


def session_dir() -> Path:
    """A directory for this session's collected output (kept when the scan fails)."""
    global _session_dir
    with _lock:
        if _session_dir is None:
            _session_dir = Path(tempfile.mkdtemp(prefix="cachecloak-test-logs-"))
        return _session_dir


def register_secret(value: bytes | str | None, kind: str = "secret") -> None:
    """A string that must never appear in any log (too short ones are ignored)."""
    if value is None:
        return
    data = value.encode() if isinstance(value, str) else bytes(value)
    if len(data) < MIN_SECRET_LENGTH:
        return
    with _lock:
        _secrets.setdefault(data, kind)


def register_log(path: Path | str, origin: str) -> None:
    with _lock:
        _logs.setdefault(Path(path), origin)


def register_output(label: str, text: str | bytes | None) -> None:
    """Captured output of a process (a CLI run): kept in a file and scanned like a log."""
    global _outputs
    if not text:
        return
    data = text.encode(errors="replace") if isinstance(text, str) else text
    directory = session_dir()
    with _lock:
        _outputs += 1
        number = _outputs
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", label)[:40]
    path = directory / f"output-{number:05d}-{safe}.log"
    path.write_bytes(data)
    register_log(path, label)


# -- what a helper's configuration holds ---------------------------------------------------

def _walk_config(node, name: str = "") -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _walk_config(value, str(key))
    elif isinstance(node, list):
        for item in node:
            _walk_config(item, name)
    elif isinstance(node, str) and name in _SECRET_FIELDS and not _REFERENCE.search(node):
        register_secret(node, f"config {name}")


def register_config_text(text: str) -> None:
    """The secrets of a cachecloak YAML configuration (key hex, passwords)."""
    try:
        _walk_config(yaml.safe_load(text))
    except yaml.YAMLError:
        # Some tests write broken configurations on purpose: fall back to the lines.
        for match in re.finditer(r"^\s*(password|current):\s*\"?([^\"\s#]+)", text, re.M):
            if not _REFERENCE.search(match.group(2)):
                register_secret(match.group(2), f"config {match.group(1)}")
    for match in _HEX_RUN.finditer(text.encode(errors="replace")):
        register_secret(match.group(0), "key hex")


def _register_secret_file(path: Path) -> None:
    try:
        data = yaml.load(path.read_text(), Loader=yaml.BaseLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return

    def walk(node, name: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, str(key))
        elif isinstance(node, str) and not _NOT_SECRET_NAME.search(name):
            register_secret(node, "provided secret")

    walk(data, "")


def _register_secret_dir(root: Path) -> None:
    try:
        files = [p for p in root.rglob("*") if p.is_file()][:200]
    except OSError:
        return
    for path in files:
        if _NOT_SECRET_NAME.search(path.name):
            continue
        try:
            register_secret(path.read_text().rstrip("\r\n"), "provided secret")
        except (OSError, UnicodeDecodeError):
            continue


def register_provider(uri: str | None) -> None:
    """The secrets behind a --secret-provider URI (secretfile:// or dir://)."""
    if not uri:
        return
    scheme, _, rest = uri.partition("://")
    path = Path(rest)
    if scheme == "secretfile":
        _register_secret_file(path)
    elif scheme == "dir":
        _register_secret_dir(path)


def _option(args: list[str], name: str) -> str | None:
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1:]
    return None


def register_command_line(args) -> None:
    """The configuration and secret provider named on a `cachecloak` command line."""
    args = [str(a) for a in (args if isinstance(args, (list, tuple)) else [args])]
    config = _option(args, "--config")
    if config is not None:
        try:
            register_config_text(Path(config).read_text(errors="replace"))
        except OSError:
            pass
    register_provider(_option(args, "--secret-provider"))


def register_proxy(args, workdir: Path) -> None:
    """One `cachecloak run` process: its log, and the secrets its configuration holds."""
    register_log(Path(workdir) / "cachecloak.log", "cachecloak run")
    register_command_line(args)
    default_config = Path(workdir) / "cachecloak.yaml"
    if default_config.exists():
        register_config_text(default_config.read_text(errors="replace"))


def register_cli_run(args, result) -> None:
    """A finished `cachecloak ARGS` run: the secrets of its configuration, and its output.

    `keygen` prints a fresh key on stdout, which is its purpose: only its stderr is a log.
    """
    args = [str(a) for a in args]
    register_command_line(args)
    name = args[0] if args else "cli"
    register_output(f"cachecloak-{name}-stderr", result.stderr)
    if name != "keygen":
        register_output(f"cachecloak-{name}-stdout", result.stdout)


def register_redis_args(args) -> None:
    """Passwords on a redis-server command line (--requirepass, --masterauth, >pw)."""
    args = [str(a) for a in args]
    for name in ("--requirepass", "--masterauth"):
        register_secret(_option(args, name), f"redis {name[2:]}")
    for arg in args:
        for word in arg.split():
            if word.startswith(">"):
                register_secret(word[1:], "redis ACL password")


# -- in-process log records ----------------------------------------------------------------

class LogCapture:
    """Writes every record of the `cachecloak` loggers (in-process servers, caches,
    backends driven by tests) to a file of the session directory, at DEBUG."""

    def __init__(self) -> None:
        from proxy.logs import TextFormatter

        self.path = session_dir() / "in-process.log"
        self.handler = logging.FileHandler(self.path, encoding="utf-8")
        self.handler.setLevel(logging.DEBUG)
        self.handler.setFormatter(TextFormatter())
        self.logger = logging.getLogger("cachecloak")
        self._level = self.logger.level
        register_log(self.path, "in-process cachecloak loggers")

    def install(self) -> LogCapture:
        self.logger.addHandler(self.handler)
        if self.logger.level == logging.NOTSET or self.logger.level > logging.DEBUG:
            # Records below the effective level are never made: lower it so debug lines
            # are checked too.
            self.logger.setLevel(logging.DEBUG)
        return self

    def remove(self) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self._level)
        self.handler.close()


# -- the scan ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    path: Path
    origin: str
    line: int
    kinds: tuple[str, ...]
    redacted: str

    def __str__(self) -> str:
        return (f"{self.path}:{self.line} ({self.origin}): {', '.join(self.kinds)} in: "
                f"{self.redacted}")


def scan(max_findings: int = 50, *, secrets: dict[bytes, str] | None = None,
         logs: dict[Path, str] | None = None) -> list[Finding]:
    """Every line of every registered log that holds a secret, redacted.  `secrets` and
    `logs` replace what was registered (for the registry's own test)."""
    with _lock:
        known = dict(_secrets) if secrets is None else dict(secrets)
        logs = dict(_logs) if logs is None else dict(logs)
    parts = [re.escape(s) for s in sorted(known, key=len, reverse=True)]
    parts.append(_HEX_RUN.pattern)
    pattern = re.compile(b"|".join(parts))
    findings: list[Finding] = []
    for path, origin in sorted(logs.items()):
        try:
            data = path.read_bytes()
        except OSError:
            continue  # never written (the process did not start) or removed with its dir
        if not pattern.search(data):
            continue
        for number, line in enumerate(data.splitlines(), 1):
            kinds = [known.get(m.group(0), "64+ hex digits") for m in pattern.finditer(line)]
            if kinds:
                redacted = pattern.sub(
                    lambda m: b"<%b>" % known.get(m.group(0), "64+ hex digits").encode(), line)
                text = redacted.decode(errors="replace")
                findings.append(Finding(path, origin, number, tuple(dict.fromkeys(kinds)),
                                        text if len(text) <= 300 else text[:297] + "..."))
                if len(findings) >= max_findings:
                    return findings
    return findings


def registered_counts() -> tuple[int, int]:
    """(secrets, logs) registered so far; for the report and the registry's own test."""
    with _lock:
        return len(_secrets), len(_logs)


def discard_session_dir() -> None:
    """Remove the collected output once the scan passed (kept for a failure's report)."""
    global _session_dir
    with _lock:
        directory, _session_dir = _session_dir, None
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
