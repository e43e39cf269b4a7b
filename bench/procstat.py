"""The operating system's own accounting of a process tree: CPU seconds and resident memory.

The benchmark charges a target for the CPU and memory of its process *and every descendant*
(`cachecloak run --workers N` forks workers), read from /proc (Linux only).  CPU is
utime + stime of /proc/<pid>/stat in clock ticks (10 ms at the usual 100 Hz), so a load
should run for a few seconds to be charged to within a few percent.

This module only reads /proc, apart from `reset_peak_rss`, which writes "5" to
/proc/<pid>/clear_refs (the kernel's documented way to reset VmHWM).  It never signals or
changes a process.
"""

from __future__ import annotations

import os
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:  # the process ended between the listing and the read
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after it.
    return raw[raw.rfind(")") + 2:].split()


def process_tree(root: int) -> list[int]:
    """`root` and all its living descendants, found by parent pid."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))  # field 4: ppid
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def cpu_seconds(root: int) -> float:
    """utime + stime of `root` and its living descendants, in seconds.

    Workers that ended and were reaped show up in their parent's cutime/cstime, so those
    are added too: a worker restarted mid-load is still charged.
    """
    total = 0
    for pid in process_tree(root):
        fields = _stat_fields(pid)
        if fields is None:
            continue
        # After the ")": state is index 0, so utime (field 14) is index 11, stime 12,
        # cutime 13, cstime 14.
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / _CLOCK_TICKS


def machine_ticks() -> dict[str, int]:
    """The whole machine's CPU time so far, from the first line of /proc/stat, in ticks:
    busy (user, nice, system, irq, softirq), idle (idle, iowait) and steal (time the
    hypervisor ran something else while this machine's CPUs wanted to run).  Empty where
    /proc/stat cannot be read."""
    try:
        with open(_PROC / "stat") as f:
            fields = f.readline().split()
    except OSError:
        return {}
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return {}
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, fields[1:9])
    return {"busy": user + nice + system + irq + softirq, "idle": idle + iowait,
            "steal": steal}


def machine_shares(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """The shares of the machine's CPU time between two machine_ticks() readings that
    went to work (busy), to nothing (idle) and to the hypervisor (steal); {} when either
    reading is missing or no tick passed."""
    if not before or not after:
        return {}
    delta = {k: after[k] - before[k] for k in ("busy", "idle", "steal")}
    total = sum(delta.values())
    if total <= 0:
        return {}
    return {f"{k}_share": v / total for k, v in delta.items()}


def _status_kib(pid: int, name: str) -> int:
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])  # "VmRSS:     1234 kB"
    except OSError:
        pass
    return 0


def rss_kib(root: int) -> int:
    """Current resident set size of the tree, in KiB (shared pages counted per process)."""
    return sum(_status_kib(pid, "VmRSS") for pid in process_tree(root))


def peak_rss_kib(root: int) -> int:
    """Peak resident set size (VmHWM) of the tree since start or the last reset, in KiB."""
    return sum(_status_kib(pid, "VmHWM") for pid in process_tree(root))


def reset_peak_rss(root: int) -> bool:
    """Reset VmHWM of the tree to the current RSS; False where the kernel refuses."""
    ok = True
    for pid in process_tree(root):
        try:
            (_PROC / str(pid) / "clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok
