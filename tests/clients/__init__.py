"""Client libraries of other languages run against cachecloak (tests/test_clients_*.py).

`node/` and `java/` hold the workloads and their pinned dependencies; `support` installs
those dependencies on first use and checks what Redis holds after a workload.
"""
