"""`python -m bench`: the side-by-side benchmark (bench/run.py says what it does)."""

from bench.run import main

raise SystemExit(main())
