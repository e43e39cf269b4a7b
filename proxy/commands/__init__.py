"""The command table: what cachecloak serves, and how.

`TABLE` maps a command name to a `Command`.  Forwarded commands are data (where the keys
and values are, what the reply holds) and go through one generic transformer; commands
answered by the proxy itself carry a handler; everything else is refused with a reason
(`refusals.REFUSALS`), never forwarded.  Importing this package registers every family.
"""

from proxy.commands import (  # noqa: F401 - they register themselves
    cluster_info,
    connection,
    hashes,
    keycopy,
    keys,
    lists,
    replication,
    scans,
    sets,
    strings,
    transactions,
    zsets,
)
from proxy.commands.table import TABLE, Command, dispatch, simple_table

__all__ = ["TABLE", "Command", "dispatch", "simple_table"]
