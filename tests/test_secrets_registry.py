"""The suite-wide log check itself (tests/secrets_registry.py): it finds a secret in a log,
names file and line, and never repeats the secret in its report.

The scans here run on their own secrets and files, so they never add to what the
session-end scan reads.
"""

from __future__ import annotations

import logging
import secrets

from tests import secrets_registry


def test_scan_finds_registered_secrets_and_key_hex_and_redacts_them(tmp_path):
    password = f"pw-{secrets.token_hex(6)}"
    key = secrets.token_hex(32)
    log = tmp_path / "cachecloak.log"
    log.write_text("2026-01-01T00:00:00.000Z INFO cachecloak: listening\n"
                   f"2026-01-01T00:00:00.001Z ERROR cachecloak: AUTH {password} refused\n"
                   f"key material {key.upper()} here\n"
                   "a short hex run 0123456789abcdef is fine\n")
    findings = secrets_registry.scan(secrets={password.encode(): "listener password"},
                                     logs={log: "a proxy"})
    assert [(f.line, f.kinds) for f in findings] == [
        (2, ("listener password",)), (3, ("64+ hex digits",))]
    report = "\n".join(str(f) for f in findings)
    assert password not in report and key not in report.lower()
    assert f"{log}:2 (a proxy)" in report and "<listener password>" in report


def test_clean_logs_and_missing_files_give_no_finding(tmp_path):
    log = tmp_path / "clean.log"
    log.write_text("INFO cachecloak: upstream cache \"app\": primary is 127.0.0.1:6379\n")
    assert secrets_registry.scan(secrets={b"never-logged-secret": "password"},
                                 logs={log: "x", tmp_path / "absent.log": "y"}) == []


def test_configuration_secrets_are_registered():
    enc, password = secrets.token_hex(32), f"listener-{secrets.token_hex(8)}"
    secrets_registry.register_config_text(
        f"listeners:\n  - address: 127.0.0.1:1\n    password: \"{password}\"\n"
        f"caches:\n  - name: a\n    type: local\n    encryption:\n      keys:\n"
        f"        current: {enc}\n        old: [<vault.old>]\n")
    with secrets_registry._lock:
        known = dict(secrets_registry._secrets)
    assert known[password.encode()] == "config password"
    assert enc.encode() in known
    assert b"<vault.old>" not in known  # a reference, not a secret


def test_in_process_records_reach_the_scanned_file():
    capture = secrets_registry.LogCapture()
    marker = f"in-process-marker-{secrets.token_hex(4)}"
    logger = logging.getLogger("cachecloak.registry-test")
    capture.install()
    try:
        logger.debug("debug line %s", marker)
    finally:
        capture.remove()
    # The session's own capture (tests/conftest.py) writes to the same file.
    assert marker in capture.path.read_text()
