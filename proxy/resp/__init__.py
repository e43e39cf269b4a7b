"""RESP2/RESP3 parsing (client requests) and reply encoding.  Pure functions, no I/O."""
