"""The `cachecloak` command: run (the default), check, keygen, rekey, reload.

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

from proxy import __version__
from proxy.logs import add_logging_arguments, setup_logging

EXIT_CONFIG = 2
EXIT_STARTUP = 1


def _setup_logging(level: str, fmt: str = "text") -> None:
    # Kept for the subcommands' callers; the setup itself lives in proxy.logs.
    setup_logging(level, fmt)


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
    rekey = sub.add_parser("rekey", help="re-encrypt the values still under an old "
                           "encryption key with the current key (after a rotation)")
    _run_arguments(rekey, serving=False)
    from proxy.rekey import add_arguments as rekey_arguments

    rekey_arguments(rekey)
    reload = sub.add_parser("reload", help="make a running cachecloak (found by its pid "
                            "file) re-read its configuration and secrets, and print the "
                            "outcome")
    _pid_file_argument(reload)
    reload.add_argument("--timeout", type=float, default=15.0, metavar="SECONDS",
                        help="how long to wait for the outcome (default 15)")
    reload.add_argument("--no-wait", action="store_true",
                        help="only send SIGHUP; the outcome is in the process's log")
    return parser


def _pid_file_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pid-file", metavar="PATH",
                        default=os.environ.get("CACHECLOAK_PID_FILE"),
                        help="the process id file of cachecloak run, for cachecloak reload "
                             "(env CACHECLOAK_PID_FILE)")


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
    add_logging_arguments(parser)  # --log-level, --log-format (proxy.logs)
    _pid_file_argument(parser)
    parser.add_argument("--workers", metavar="N|auto", type=_workers,
                        default=os.environ.get("CACHECLOAK_WORKERS", "1"),
                        help="processes serving the same listeners (env CACHECLOAK_WORKERS; "
                             "default 1; auto: one per CPU)")


def _workers(text: str) -> int:
    from proxy.server.workers import parse_workers

    return parse_workers(text)


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

    _setup_logging(args.log_level, args.log_format)
    log = logging.getLogger("cachecloak")
    try:
        config = load_config(args.config, secret_provider=args.secret_provider,
                             listen=args.listen)
    except ConfigError as exc:
        source = args.config or "the built-in default"
        if args.log_format == "json":  # a log collector expects every line to be JSON
            for line in str(exc).splitlines():
                log.error("configuration error in %s: %s", source, line)
            return EXIT_CONFIG
        print(f"cachecloak: configuration error in {source}:", file=sys.stderr)
        for line in str(exc).splitlines():
            print(f"  {line}", file=sys.stderr)
        return EXIT_CONFIG
    _install_uvloop()
    # SIGHUP re-reads the configuration the way it was read now (proxy.server.reload).
    from proxy.server import reload as reloading

    reloading.set_source(reloading.ConfigSource(args.config, args.secret_provider,
                                                args.listen, args.pid_file))
    reloading.catch_early_hup()  # before the pid file says where to send it
    if args.pid_file:
        try:
            reloading.write_pid_file(args.pid_file)
        except reloading.PidFileError as exc:
            log.error("%s", exc)
            return EXIT_STARTUP

    def serve(config, prepare=None) -> int:
        """Serve until stopped: the single process, or one --workers process."""

        async def main() -> None:
            server = Server(config)
            if prepare is not None:
                prepare(server)  # a --workers process: shared sockets (proxy.server.workers)
            await server.run()

        _tune_gc()
        try:
            asyncio.run(main())
        except StartupError as exc:
            log.error("%s", exc)
            return EXIT_STARTUP
        except KeyboardInterrupt:
            pass
        return 0

    try:
        if getattr(args, "workers", 1) > 1:
            from proxy.server.workers import supervise

            return supervise(config, args, serve)  # workers never return here
        return serve(config)
    finally:
        if args.pid_file:
            reloading.remove_pid_file(args.pid_file)


def _tune_gc() -> None:
    """Keep the cyclic garbage collector off the hot path.

    Every command allocates a few short-lived containers (its argument list, its reply
    slot), which reference counting frees; the collector still scanned the young ones
    every 700 allocations, and the whole heap (modules, configuration: some 40,000
    objects) now and then, a few percent of the proxy's CPU under load.  What exists at
    startup lives as long as the process, so it is frozen out of the scans, and the young
    generation is scanned after 10,000 net allocations: only garbage in reference cycles
    waits longer for its collection."""
    import gc

    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


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
    if args.command == "rekey":
        from proxy.rekey import cmd_rekey

        return cmd_rekey(args)
    if args.command == "reload":
        from proxy.server.reload import cmd_reload

        return cmd_reload(args)
    return cmd_run(args)


if __name__ == "__main__":
    raise SystemExit(main())
