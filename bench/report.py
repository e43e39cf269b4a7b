"""Turning the harness's raw runs into figures: medians, ratios, the issue's goals, output.

Ratios are taken round by round (each target's figure divided by the reference's figure
from the same round, measured minutes apart) and then the median over rounds is kept, so
that drift of a shared machine cancels out.  Output: Markdown tables (the terminal and a
.md file, ready to paste into the README), the JSON document and an optional PNG chart
(matplotlib, the `bench` extra).  Nothing here starts a process or opens a socket.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

# The targets: (figure, load keys or "open-loop"/"idle", target, op, bound).
GOALS = [
    ("encrypted, pipeline 16, GET 100 B: throughput vs twemproxy",
     "get-p16-100", "cachecloak-encrypted", "vs_twemproxy", ">=", 0.6),
    ("encrypted, pipeline 16, SET 100 B: throughput vs twemproxy",
     "set-p16-100", "cachecloak-encrypted", "vs_twemproxy", ">=", 0.6),
    *[(f"encrypted, pipeline 1, {test.upper()} {size_label}: throughput vs twemproxy",
       f"{test}-p1-{size}", "cachecloak-encrypted", "vs_twemproxy", ">=", 0.85)
      for size, size_label in ((100, "100 B"), (4096, "4 KiB")) for test in ("get", "set")],
    *[(f"pure proxying, pipeline 16, {test.upper()} {size_label}: throughput vs twemproxy",
       f"{test}-p16-{size}", "cachecloak-plain", "vs_twemproxy", ">=", 1.0)
      for size, size_label in ((100, "100 B"), (4096, "4 KiB")) for test in ("get", "set")],
    ("encrypted, open loop at half of twemproxy's saturation: p99 vs twemproxy's p99",
     "open-loop", "cachecloak-encrypted", "p99_vs_twemproxy", "<=", 1.5),
    ("encrypted: memory per idle client connection (KiB)",
     "idle", "cachecloak-encrypted", "per_connection_kib", "<=", 16.0),
    ("pure proxying: memory per idle client connection (KiB)",
     "idle", "cachecloak-plain", "per_connection_kib", "<=", 16.0),
]


# The figures a closed-loop load's summary gives per target (medians over rounds).
CLOSED_LOOP_FIELDS = ["rps", "p50_ms", "p99_ms", "cpu_s_per_M", "redis_cpu_s_per_M",
                      "peak_rss_kib", "steal_share"]

# Send lag p99 above this share of a target's p99: the generator, not only the target, was
# slow, and the open-loop p99 of that target is not to be trusted.
LATE_GENERATOR_SHARE = 0.5


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def median_interval(values: list[float], confidence: float = 0.95
                    ) -> tuple[float, float, float] | None:
    """A distribution-free confidence interval for the median of what `values` sample:
    (low, high, coverage), from the order statistics (the sign test's interval).

    Of n values sorted, [x(k), x(n+1-k)] holds the true median with probability
    1 - 2 P(Binomial(n, 1/2) < k), whatever the distribution.  k is the largest that
    still gives `confidence`; with too few values for that (fewer than 6 at 95%), the
    widest interval, [min, max], and the coverage it does give.  None for no values.
    """
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return None

    def coverage(k: int) -> float:  # 1 - 2 P(X <= k - 1), X ~ Binomial(n, 1/2)
        return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2 ** n

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= confidence:
        k += 1
    return ordered[k - 1], ordered[n - k], coverage(k)


def _round_ratios(runs: list[dict], ref_runs: list[dict] | None, field: str) -> list[float]:
    """runs[r][field] / ref_runs[r][field] for each round both measured, in round order."""
    ref_by_round = {r["round"]: r.get(field) for r in ref_runs or []}
    ratios = []
    for run in sorted(runs, key=lambda r: r["round"]):
        ref = ref_by_round.get(run["round"])
        value = run.get(field)
        if value is not None and ref:
            ratios.append(value / ref)
    return ratios


def _ratio_median(runs: list[dict], ref_runs: list[dict] | None, field: str) -> float | None:
    """Median over rounds of runs[r][field] / ref_runs[r][field], same round only."""
    return _median(_round_ratios(runs, ref_runs, field))


def summarise_runs(runs_by_target: dict[str, list[dict]], fields: list[str],
                   ratio_field: str, ratio_prefix: str = "") -> dict[str, dict]:
    """Median of each field per target, plus the ratios to Redis and twemproxy."""
    summary = {}
    for name, runs in runs_by_target.items():
        ok = [r for r in runs if "error" not in r]
        row: dict = {f: _median([r.get(f) for r in ok]) for f in fields}
        row["rounds"] = len(ok)
        for ref in ("redis", "twemproxy"):
            ref_runs = [r for r in runs_by_target.get(ref, []) if "error" not in r]
            row[f"{ratio_prefix}vs_{ref}"] = _ratio_median(ok, ref_runs, ratio_field)
        summary[name] = row
    return summary


def evaluate_goals(result: dict) -> list[dict]:
    """Each target of the performance issue against the run's median, with the ratio of
    each round beside it (how far the figure moved within the run)."""
    loads = {load["key"]: load for load in result.get("loads", [])}
    goals = []
    for figure, where, target, field, op, bound in GOALS:
        rounds = None
        if where == "open-loop":
            section, base = result.get("open_loop", {}), "p99_ms"
        elif where == "idle":
            section, base = {"summary": result.get("idle", {})}, None
        else:
            section, base = loads.get(where, {}), "rps"
        row = section.get("summary", {}).get(target)
        value = row.get(field) if row else None
        if base is not None and field.endswith("vs_twemproxy"):
            runs = section.get("runs", {})
            ok = [[r for r in runs.get(name, []) if "error" not in r]
                  for name in (target, "twemproxy")]
            rounds = _round_ratios(ok[0], ok[1], base) or None
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        interval = median_interval(rounds) if rounds else None
        goals.append({"figure": figure, "target": f"{op} {bound:g}", "measured": value,
                      "rounds": rounds, "interval": interval, "met": met,
                      "verdict": _verdict(met, interval, op, bound)})
    return goals


def _verdict(met: bool | None, interval: tuple[float, float, float] | None, op: str,
             bound: float) -> str:
    """met / missed by the median, and whether the interval of the median says the same
    or straddles the target (the rounds moved by more than the distance to it)."""
    if met is None:
        return "not measured"
    word = "yes" if met else "**no**"
    if interval is None:
        return word
    low, high, _ = interval
    sure = (low >= bound if op == ">=" else high <= bound) if met else \
        (high < bound if op == ">=" else low > bound)
    return word if sure else f"{word} (the interval straddles {bound:g})"


# --------------------------------------------------------------------------- output


def _fmt(value: float | None, pattern: str = "{:,.0f}") -> str:
    return "n/a" if value is None else pattern.format(value)


def markdown(result: dict) -> str:
    titles = {t["name"]: t["title"] for t in result["targets"]}
    lines = [f"Benchmark {result['meta']['stamp']}: {result['meta']['summary']}", ""]
    if result.get("loads"):
        lines += ["### redis-benchmark (closed loop)", "",
                  "| load | target | req/s | vs Redis | vs twemproxy | p50 ms | p99 ms "
                  "| CPU s per M req | peak RSS MiB |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for load in result["loads"]:
            for name, row in load["summary"].items():
                lines.append(
                    f"| {load['label']} | {titles[name]} | {_fmt(row['rps'])} "
                    f"| {_fmt(row['vs_redis'], '{:.2f}')} | {_fmt(row['vs_twemproxy'], '{:.2f}')} "
                    f"| {_fmt(row['p50_ms'], '{:.3f}')} | {_fmt(row['p99_ms'], '{:.3f}')} "
                    f"| {_fmt(row['cpu_s_per_M'], '{:.1f}')} "
                    f"| {_fmt(_mib(row['peak_rss_kib']), '{:.1f}')} |")
        lines.append("")
    ol = result.get("open_loop")
    if ol and ol.get("summary"):
        lines += [f"### Open loop, {ol['load']['rate']:,.0f} req/s ({ol['rate_basis']}), "
                  f"{ol['load']['set_ratio']:.0%} SET, {ol['load']['size']} B values", "",
                  "| target | completed req/s | p50 ms | p99 ms | p99.9 ms | p99 vs Redis "
                  "| p99 vs twemproxy | send lag p99 ms | errors+lost | CPU s per M req |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name, row in ol["summary"].items():
            lines.append(
                f"| {titles[name]} | {_fmt(row['completed_rps'])} "
                f"| {_fmt(row['p50_ms'], '{:.3f}')} | {_fmt(row['p99_ms'], '{:.3f}')} "
                f"| {_fmt(row['p999_ms'], '{:.3f}')} | {_fmt(row['p99_vs_redis'], '{:.2f}')} "
                f"| {_fmt(row['p99_vs_twemproxy'], '{:.2f}')} "
                f"| {_fmt(row['send_lag_p99_ms'], '{:.3f}')} "
                f"| {_fmt(row['failures'], '{:.0f}')} | {_fmt(row['cpu_s_per_M'], '{:.1f}')} |")
        late = [titles[name] for name, row in ol["summary"].items()
                if row.get("send_lag_p99_ms") and row.get("p99_ms")
                and row["send_lag_p99_ms"] > LATE_GENERATOR_SHARE * row["p99_ms"]]
        if late:
            lines += ["", "**The generator was late** (send lag p99 above "
                      f"{LATE_GENERATOR_SHARE:.0%} of the p99) for: {', '.join(late)}. "
                      "There the machine did not give the generator its CPU in time, and the "
                      "p99 measures that as much as the target: rerun on a quieter machine, or "
                      "lower --rate."]
        generator = report_generator_cost(ol["summary"])
        if generator:
            kind = next((row["generator"] for rows in ol.get("runs", {}).values()
                         for row in rows if row.get("generator")), "python")
            load = ol["load"]
            lines += ["", f"Load generator: {kind} ({load['workers']} process(es) of "
                      f"{load['connections']} connections), {generator:.0f} CPU s per million "
                      f"requests (so at most ~{1e6 / generator:,.0f} req/s per generator "
                      "process on a core of its own); latency from the scheduled send time; "
                      "send lag is how late the generator sent."]
        lines.append("")
    if result.get("idle"):
        lines += ["### Idle client connections", "",
                  "| target | connections | RSS before MiB | RSS with them MiB "
                  "| KiB per connection |",
                  "|---|---|---|---|---|"]
        for name, row in result["idle"].items():
            if "error" in row:
                lines.append(f"| {titles.get(name, name)} | error: {row['error']} | | | |")
                continue
            lines.append(f"| {titles.get(name, name)} | {row['connections']:,} "
                         f"| {_mib(row['rss_before_kib']):.1f} | {_mib(row['rss_with_kib']):.1f} "
                         f"| {_fmt(row['per_connection_kib'], '{:.1f}')} |")
        lines.append("")
    if result.get("goals"):
        lines += ["### The issue's targets", "",
                  "Measured: the median over rounds; each round's own ratio beside it, and "
                  "the interval that holds the median with the coverage given (from the "
                  "rounds' order statistics; more rounds, narrower).", "",
                  "| figure | target | measured | interval | per round | met |",
                  "|---|---|---|---|---|---|"]
        for goal in result["goals"]:
            met = goal.get("verdict") or {True: "yes", False: "**no**",
                                          None: "not measured"}[goal["met"]]
            rounds = ", ".join(f"{r:.2f}" for r in goal.get("rounds") or []) or "—"
            interval = goal.get("interval")
            within = (f"{interval[0]:.2f} to {interval[1]:.2f} ({interval[2]:.0%})"
                      if interval else "—")
            lines.append(f"| {goal['figure']} | {goal['target']} "
                         f"| {_fmt(goal['measured'], '{:.2f}')} | {within} | {rounds} | {met} |")
        lines.append("")
    steal = steal_figures(result)
    if steal:
        lines += [f"The hypervisor took {steal[0]:.0%} of this machine's CPU time in the "
                  f"median run (steal, /proc/stat), {steal[1]:.0%} in the worst. "
                  "Steal slows whichever target runs at that moment: where it is more than "
                  "a few percent, single rounds move a lot, and only the intervals above say "
                  "how far the medians can be trusted.", ""]
    if result["meta"].get("notes"):
        lines += ["Notes:", *[f"- {note}" for note in result["meta"]["notes"]], ""]
    return "\n".join(lines)


def steal_figures(result: dict) -> tuple[float, float] | None:
    """(median, highest) steal share over every measured run of the result; None when
    no run recorded one."""
    shares = [row["steal_share"]
              for section in (*result.get("loads", []), result.get("open_loop") or {})
              for rows in section.get("runs", {}).values() for row in rows
              if row.get("steal_share") is not None]
    return (statistics.median(shares), max(shares)) if shares else None


def report_generator_cost(summary: dict[str, dict]) -> float | None:
    return _median([row.get("generator_cpu_s_per_M") for row in summary.values()])


def _mib(kib: float | None) -> float | None:
    return None if kib is None else kib / 1024


def write_json(result: dict, path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(path)


def chart(result: dict, path: Path) -> str | None:
    """Write the PNG; return why not when matplotlib is missing or there is nothing to draw."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "no chart: matplotlib is not installed (pip install -e '.[bench]')"
    loads = result.get("loads", [])
    ol = result.get("open_loop", {}).get("summary", {})
    if not loads and not ol:
        return "no chart: no load was run"
    names = [t["name"] for t in result["targets"]]
    titles = {t["name"]: t["title"] for t in result["targets"]}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(13, 9))
    width = 0.8 / max(1, len(names))

    def bars(ax, labels: list[str], value_of) -> None:
        for i, name in enumerate(names):
            xs = [x + (i - (len(names) - 1) / 2) * width for x in range(len(labels))]
            ax.bar(xs, [value_of(j, name) or 0 for j in range(len(labels))], width,
                   label=titles[name])
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.grid(axis="y", alpha=0.3)

    labels = [load["label"] for load in loads]
    bars(top, labels, lambda j, n: (loads[j]["summary"].get(n) or {}).get("rps"))
    top.yaxis.set_major_formatter(
        matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:,.0f}k"))
    top.set_ylabel("requests per second")
    top.set_title("Throughput, redis-benchmark 50 clients (higher is better)")
    top.legend(fontsize=8)
    p99_labels = [*labels, *(["open loop"] if ol else [])]

    def p99(j: int, name: str) -> float | None:
        if j < len(loads):
            return (loads[j]["summary"].get(name) or {}).get("p99_ms")
        return (ol.get(name) or {}).get("p99_ms")

    bars(bottom, p99_labels, p99)
    bottom.set_ylabel("p99 latency, ms")
    bottom.set_yscale("log")
    bottom.set_title("p99 latency (lower is better; open loop: from the scheduled send time)")
    fig.suptitle(f"cachecloak benchmark {result['meta']['stamp']} "
                 f"({result['meta']['summary']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None


def pool(results: list[dict]) -> dict:
    """Several runs' results as one run of all their rounds, for the goals table.

    Each run's rounds stay paired as they were measured (a target's ratio is still taken
    against twemproxy's figure of the same round of the same run); they are numbered on,
    run after run, and the medians, ratios and intervals are taken over all of them.
    Loads and targets that not every run has are dropped.  Pool only runs of the same
    proxy code and loads: the note lists each run's commit and command.
    """
    if not results:
        raise ValueError("no result to pool")
    keys = set.intersection(*({load["key"] for load in r.get("loads", [])} for r in results))
    names = set.intersection(*({t["name"] for t in r["targets"]} for r in results))
    loads, offset = {}, 0
    for r in results:
        for load in r.get("loads", []):
            if load["key"] not in keys:
                continue
            merged = loads.setdefault(load["key"], {**load, "runs": {n: [] for n in names}})
            for name in names:
                merged["runs"][name] += [{**row, "round": row["round"] + offset}
                                         for row in load["runs"].get(name, [])]
        offset += r["meta"]["options"]["rounds"]
    first = results[0]
    pooled_loads = []
    for load in first.get("loads", []):  # in the first run's order
        if load["key"] in loads:
            merged = loads[load["key"]]
            merged["summary"] = summarise_runs(merged["runs"], CLOSED_LOOP_FIELDS, "rps")
            pooled_loads.append(merged)
    runs = [f"{r['meta']['stamp']} ({r['meta']['versions']['cachecloak']}: "
            f"{r['meta']['command']})" for r in results]
    result = {
        "meta": {"stamp": "pooled", "summary": f"{offset} rounds of {len(results)} runs",
                 "notes": ["pooled: " + "; ".join(runs)]},
        "targets": [t for t in first["targets"] if t["name"] in names],
        "loads": pooled_loads,
    }
    result["goals"] = [g for g in evaluate_goals(result) if g["measured"] is not None]
    return result


def main() -> int:
    """`python -m bench.report RESULT.json`: write its .md and .png again (after a change
    to the tables or the chart), and print the tables.  `--pool A.json B.json ...`: print
    the closed-loop goals over all the rounds of several runs of the same code."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("result", type=Path, nargs="+")
    parser.add_argument("--pool", action="store_true",
                        help="pool the rounds of the runs given; print, write nothing")
    args = parser.parse_args()
    if args.pool:
        print(markdown(pool([json.loads(p.read_text()) for p in args.result])))
        return 0
    if len(args.result) > 1:
        parser.error("one result at a time, or --pool")
    args.result = args.result[0]
    result = json.loads(args.result.read_text())
    result["goals"] = evaluate_goals(result)  # with this version's columns
    text = markdown(result)
    print(text)
    args.result.with_suffix(".md").write_text(text)
    why_not = chart(result, args.result.with_suffix(".png"))
    if why_not:
        print(why_not)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
