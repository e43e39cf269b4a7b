"""cachecloak's benchmark harness: `python -m bench` (see bench/run.py and the README).

Not part of the installed package and never imported by proxy/: it only starts loopback
processes, drives them and reports what they cost.
"""
