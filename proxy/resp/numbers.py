"""Redis's strict integer grammar, shared by the request reader and the commands.

Never logs; takes and returns plain values only.
"""

from __future__ import annotations

LLONG_MAX = 2**63 - 1
LLONG_MIN = -(2**63)


def string2ll(arg: bytes) -> int | None:
    """Redis's string2ll: a canonical signed 64-bit decimal, else None.

    Python's int() is far more permissive (spaces, '+', '_', leading zeros, Unicode
    digits), so the accepted grammar is checked explicitly: "0" or an optional '-'
    followed by a digit 1-9 and more digits, fewer than 21 bytes, within int64.
    """
    size = len(arg)
    if size == 0 or size >= 21:
        return None
    if arg.isdigit():  # bytes.isdigit: ASCII digits only
        if arg[0] == 0x30 and size > 1:  # leading zero
            return None
        value = int(arg)
        return value if value <= LLONG_MAX else None
    if arg[0] == 0x2D and size > 1:  # '-'
        digits = arg[1:]
        if digits.isdigit() and digits[0] != 0x30:
            value = -int(digits)
            return value if value >= LLONG_MIN else None
    return None
