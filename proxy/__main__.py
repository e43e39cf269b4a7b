"""`python -m proxy` is the `cachecloak` command."""

from proxy.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
