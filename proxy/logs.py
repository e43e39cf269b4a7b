"""Logging setup for every cachecloak subcommand: one line per event, text or JSON.

* ``text`` (the default): ``2026-01-31T12:00:00.123Z INFO cachecloak: listening on ...``
* ``json``: one JSON object per line, ``{"ts": "2026-01-31T12:00:00.123Z", "level":
  "INFO", "logger": "cachecloak", "msg": "listening on ...", ...}``, plus the structured
  fields a call passes with ``extra={...}`` (for example ``cache`` and ``key_id`` on the
  nonce-limit warning).  A traceback, when a call asks for one, is the ``exc`` field, so
  an event stays one line.

Timestamps are UTC with milliseconds.  The level comes from ``--log-level`` /
``CACHECLOAK_LOG_LEVEL``, the format from ``--log-format`` / ``CACHECLOAK_LOG_FORMAT``.

This module only formats what callers log.  It must never add anything to a record
(no arguments of commands, no configuration values): keeping keys, values and secrets
out of the log is the callers' rule, and tests/test_logs.py checks the whole process's
output for them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName"}
# The JSON object's own fields win over an `extra` field of the same name.
_JSON_FIELDS = ("ts", "level", "logger", "msg")


def _utc_stamp(created: float) -> str:
    """ISO 8601 in UTC with milliseconds and a Z: 2026-01-31T12:00:00.123Z."""
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{millis:03d}Z"


class TextFormatter(logging.Formatter):
    """``<UTC time> <LEVEL> <logger>: <message>``; structured extras are left out (the
    message itself says everything a reader needs)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc_stamp(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": _utc_stamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD_ATTRIBUTES and name not in _JSON_FIELDS:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        # default=str: an extra that JSON cannot hold is written as its str().
        return json.dumps(entry, ensure_ascii=False, default=str)


def make_formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    return TextFormatter()


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    """Send the root logger to stderr, one line per event, in `fmt` at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _choice(kind: str, choices: tuple[str, ...], env: str):
    """An argparse `type` that also checks a default taken from the environment
    (argparse checks `choices` only for values given on the command line)."""

    def check(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise argparse.ArgumentTypeError(
                f"invalid {kind} (from the command line or {env}); use one of "
                + ", ".join(choices))
        return value

    check.__name__ = kind  # argparse names the type in some messages
    return check


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    """--log-level and --log-format, with their environment defaults."""
    parser.add_argument("--log-level", metavar="LEVEL",
                        default=os.environ.get("CACHECLOAK_LOG_LEVEL", "info"),
                        type=_choice("log level", LEVELS, "CACHECLOAK_LOG_LEVEL"),
                        help="debug, info, warning or error (env CACHECLOAK_LOG_LEVEL; "
                             "default info)")
    parser.add_argument("--log-format", metavar="FORMAT",
                        default=os.environ.get("CACHECLOAK_LOG_FORMAT", "text"),
                        type=_choice("log format", FORMATS, "CACHECLOAK_LOG_FORMAT"),
                        help="text, or json for one JSON object per line "
                             "(env CACHECLOAK_LOG_FORMAT; default text)")


def setup_from_args(args: argparse.Namespace) -> None:
    """setup_logging from the arguments add_logging_arguments defined."""
    setup_logging(getattr(args, "log_level", "info"), getattr(args, "log_format", "text"))
