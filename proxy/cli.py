"""The `cachecloak` command: run (the default), check, keygen.

Configuration errors print one line per problem and exit 2, without a traceback;
startup errors (address in use) exit 1.  Nothing here prints a secret.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
import time

from proxy import __version__

EXIT_CONFIG = 2
EXIT_STARTUP = 1


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record, datefmt=None):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_UTCFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cachecloak",
        description="Redis-protocol sidecar that hashes keys and encrypts values.")
    parser.add_argument("--version", action="version", version=f"cachecloak {__version__}")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="serve (the default when no command is given)")
    _run_arguments(run)
    check = sub.add_parser("check", help="connect to every configured Redis, authenticate "
                           "and write, read and delete a probe key; one line per address")
    _run_arguments(check, serving=False)
    sub.add_parser("keygen", help="print a new random 32-byte key as 64 hex characters")
    return parser


def _run_arguments(parser: argparse.ArgumentParser, serving: bool = True) -> None:
    parser.add_argument("--config", default=os.environ.get("CACHECLOAK_CONFIG"),
                        help="YAML configuration file (env CACHECLOAK_CONFIG); "
                             "default: the built-in local_default cache")
    if serving:
        parser.add_argument("--listen", metavar="HOST:PORT|unix:/PATH",
                            help="replace the address of the (single) listener")
    parser.add_argument("--secret-provider", metavar="URL",
                        default=os.environ.get("CACHECLOAK_SECRET_PROVIDER"),
                        help="secretfile:///path.yaml or dir:///path "
                             "(env CACHECLOAK_SECRET_PROVIDER)")
    if not serving:
        return
    parser.add_argument("--log-level", default=os.environ.get("CACHECLOAK_LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"])


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def cmd_keygen() -> int:
    print(secrets.token_hex(32))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from proxy.config import ConfigError, load_config
    from proxy.server.app import Server, StartupError

    _setup_logging(args.log_level)
    log = logging.getLogger("cachecloak")
    try:
        config = load_config(args.config, secret_provider=args.secret_provider,
                             listen=args.listen)
    except ConfigError as exc:
        print(f"cachecloak: configuration error in {args.config or 'the built-in default'}:",
              file=sys.stderr)
        for line in str(exc).splitlines():
            print(f"  {line}", file=sys.stderr)
        return EXIT_CONFIG
    _install_uvloop()

    async def main() -> None:
        server = Server(config)
        await server.run()

    try:
        asyncio.run(main())
    except StartupError as exc:
        log.error("%s", exc)
        return EXIT_STARTUP
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["run", *argv]
    args = parser.parse_args(argv)
    if args.command == "keygen":
        return cmd_keygen()
    if args.command == "check":
        from proxy.check import cmd_check

        return cmd_check(args)
    return cmd_run(args)


if __name__ == "__main__":
    raise SystemExit(main())
