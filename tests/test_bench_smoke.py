"""The benchmark harness (bench/) works end to end, in its smallest form.

One run of `python -m bench` against one target (cachecloak with encryption on, in front
of a real redis-server), with a few thousand requests, a one-second open loop and 200 idle
connections: it checks that every phase produces figures and the files are written, never
how fast anything is (speed is what the benchmark itself reports).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from bench.openloop import percentile
from bench.redisbench import parse_csv
from tests.servers import REPO_ROOT

pytestmark = pytest.mark.skipif(
    shutil.which("redis-benchmark") is None or shutil.which("redis-server") is None,
    reason="redis-benchmark and redis-server are needed (apt-get install redis-tools)")


def test_redis_benchmark_csv_of_7_0_gives_rate_and_latency_percentiles():
    out = ('"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",'
           '"p95_latency_ms","p99_latency_ms","max_latency_ms"\n'
           '"GET","51948.05","0.545","0.208","0.455","0.703","2.775","11.359"\n')
    figures = parse_csv(out)
    assert figures["rps"] == 51948.05
    assert figures["p50_ms"] == 0.455
    assert figures["p99_ms"] == 2.775


def test_redis_benchmark_output_without_figures_is_an_error():
    with pytest.raises(ValueError, match="no figures"):
        parse_csv("Could not connect to Redis at 127.0.0.1:1: Connection refused\n")


def test_percentile_is_nearest_rank():
    values = list(range(1, 1001))
    assert percentile(values, 50) == 500
    assert percentile(values, 99) == 990
    assert percentile(values, 99.9) == 999
    assert percentile(values, 100) == 1000
    assert percentile([], 99) is None


def test_quickest_run_against_one_target_writes_every_figure(tmp_path):
    args = [sys.executable, "-m", "bench", "--quick", "--only", "cachecloak-encrypted",
            "--workers", "0", "--tests", "get", "--pipelines", "1", "--sizes", "100",
            "--requests", "2000", "--keyspace", "1000", "--rate", "1000",
            "--open-loop-duration", "1", "--open-loop-workers", "1",
            "--open-loop-connections", "2", "--idle-connections", "200",
            "--no-chart", "--out", str(tmp_path)]
    done = subprocess.run(args, cwd=str(REPO_ROOT), capture_output=True, text=True,
                          timeout=90, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    [path] = tmp_path.glob("*-quick.json")
    result = json.loads(path.read_text())
    assert [t["name"] for t in result["targets"]] == ["cachecloak-encrypted"]

    [load] = result["loads"]
    assert load["key"] == "get-p1-100"
    row = load["summary"]["cachecloak-encrypted"]
    assert row["rps"] > 0
    assert row["p99_ms"] is not None
    assert row["cpu_s_per_M"] is not None
    assert row["peak_rss_kib"] > 0
    assert row["vs_twemproxy"] is None  # twemproxy was not run, so no ratio is made up

    open_loop = result["open_loop"]["summary"]["cachecloak-encrypted"]
    assert open_loop["failures"] == 0
    assert open_loop["p50_ms"] <= open_loop["p99_ms"] <= open_loop["p999_ms"]

    idle = result["idle"]["cachecloak-encrypted"]
    assert idle["connections"] == 200
    assert idle["rss_with_kib"] > 0

    goals = {g["figure"]: g for g in result["goals"]}
    memory = goals["encrypted: memory per idle client connection (KiB)"]
    assert memory["measured"] == idle["per_connection_kib"]
    assert (tmp_path / path.name.replace(".json", ".md")).read_text().startswith("Benchmark")
    assert "GET P1 100 B" in done.stdout


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
@pytest.mark.parametrize("command", ["get", "set"])
def test_in_process_harness_checks_its_round_trip_and_reports_figures(encrypted, command):
    from bench.inprocess import measure

    request, reply = measure(encrypted, command, batch=4, rounds=20, repeat=1)
    assert request > 0 and reply > 0


# -- the open-loop generators, against a real redis-server --------------------------------


def _commandstats(server) -> dict[str, int]:
    stats = server.client().info("commandstats")
    return {name: stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("get", "set")}


@pytest.fixture
def redis_4k():
    """A Redis holding 500 keys of 4 KiB: GET replies span reads, so framing is exercised."""
    from bench import keyspace
    from tests.servers import start_redis
    server = start_redis()
    try:
        keyspace.fill(server.port, 500, 4096)
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("generator", ["c", "python"])
def test_open_loop_sends_its_schedule_and_matches_every_reply(redis_4k, generator):
    from bench import openloop
    if generator == "c" and openloop.compiled_generator()[0] is None:
        pytest.skip(openloop.compiled_generator()[1])
    before = _commandstats(redis_4k)
    load = openloop.OpenLoopLoad(rate=3000, duration=1.0, warmup=0.2, workers=2, connections=3,
                                 keyspace=500, size=4096, set_ratio=0.3, generator=generator)
    result = openloop.run(redis_4k.port, load, seed=7)
    after = _commandstats(redis_4k)
    assert result["generator"] == generator
    assert result["sent"] == 3000
    assert (result["errors"], result["lost"]) == (0, 0)
    # Redis saw exactly what was sent, both commands, in about the asked mix.
    gets, sets = after["get"] - before["get"], after["set"] - before["set"]
    assert gets + sets == 3000
    assert 0.2 < sets / 3000 < 0.4
    # Samples only from after the warm-up; every latency is positive and the send-time one
    # is never longer than the scheduled-time one.
    assert 3000 * 0.7 <= result["completed_rps"] * 0.8 <= 3000 * 0.85
    assert 0 < result["service_p50_ms"] <= result["p50_ms"]
    assert result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["generator_cpu_s_per_M"] > 0


def test_c_generator_counts_error_replies_as_errors():
    from bench import openloop
    from tests.servers import start_redis
    if openloop.compiled_generator()[0] is None:
        pytest.skip(openloop.compiled_generator()[1])
    server = start_redis("--requirepass", "bench-secret")  # every command: -NOAUTH
    try:
        load = openloop.OpenLoopLoad(rate=1000, duration=0.5, warmup=0.1, workers=1,
                                     connections=2, keyspace=100, size=10, set_ratio=0.5,
                                     generator="c")
        result = openloop.run(server.port, load)
    finally:
        server.stop()
    assert result["sent"] == 500
    assert (result["errors"], result["lost"]) == (500, 0)
    assert result["p99_ms"] is None  # no successful reply, no latency sample


def test_c_generator_reports_a_closed_target():
    from bench import openloop
    from tests.servers import free_port
    if openloop.compiled_generator()[0] is None:
        pytest.skip(openloop.compiled_generator()[1])
    load = openloop.OpenLoopLoad(rate=100, duration=0.2, warmup=0.0, workers=1, connections=1,
                                 keyspace=10, size=10, set_ratio=0.5, generator="c")
    with pytest.raises(RuntimeError, match=r"connect to 127\.0\.0\.1"):
        openloop.run(free_port(), load)


def test_targets_table_gives_each_rounds_ratio_beside_the_median():
    from bench import report

    def runs(*rps):
        return [{"round": n, "rps": r} for n, r in enumerate(rps, 1)]

    load_runs = {"twemproxy": runs(100.0, 200.0, 100.0),
                 "cachecloak-encrypted": runs(90.0, 100.0, 70.0)}
    result = {"loads": [{"key": "get-p1-100", "runs": load_runs,
                         "summary": report.summarise_runs(load_runs, ["rps"], "rps")}]}
    goal = next(g for g in report.evaluate_goals(result)
                if g["figure"].startswith("encrypted, pipeline 1, GET 100 B"))
    assert goal["rounds"] == [0.9, 0.5, 0.7]
    assert goal["measured"] == 0.7  # the median of the rounds' ratios
    assert goal["met"] is False
    # three rounds: the interval is their range, which holds the median 75% of the time,
    # and it straddles 0.85, so the miss is not a sure one
    assert goal["interval"] == (0.5, 0.9, 0.75)
    assert goal["verdict"] == "**no** (the interval straddles 0.85)"
    table = report.markdown({"meta": {"stamp": "s", "summary": "x"}, "targets": [],
                             "goals": [goal]})
    assert ("| 0.70 | 0.50 to 0.90 (75%) | 0.90, 0.50, 0.70 "
            "| **no** (the interval straddles 0.85) |") in table
    memory = next(g for g in report.evaluate_goals(result) if "memory" in g["figure"])
    assert memory["rounds"] is None and memory["met"] is None


def test_median_interval_is_the_sign_tests_order_statistics():
    from bench.report import median_interval

    # nine values: [x(2), x(8)] holds the median with 1 - 2 (1 + 9) / 512 = 96.1%
    low, high, coverage = median_interval([9, 1, 8, 2, 7, 3, 6, 4, 5])
    assert (low, high) == (2, 8)
    assert coverage == 1 - 2 * 10 / 512
    # five values cannot reach 95%: the range, with the 93.75% it gives
    assert median_interval([0.74, 1.05, 0.85, 0.76, 0.79]) == (0.74, 1.05, 0.9375)
    # twenty values: [x(6), x(15)], 95.9%
    low, high, coverage = median_interval(list(range(20)))
    assert (low, high) == (5, 14) and 0.95 <= coverage < 0.96
    assert median_interval([]) is None


@pytest.mark.parametrize(("rounds", "verdict"), [
    ([0.9, 0.95, 0.88, 0.91, 0.93], "yes"),
    ([0.9, 0.95, 0.80, 0.91, 0.86], "yes (the interval straddles 0.85)"),
    ([0.8, 0.84, 0.70, 0.95, 0.79], "**no** (the interval straddles 0.85)"),
    ([0.8, 0.84, 0.70, 0.83, 0.79], "**no**"),
])
def test_a_goal_is_sure_only_when_its_whole_interval_is_on_one_side(rounds, verdict):
    from bench import report

    twem = [{"round": n, "rps": 100.0} for n in range(1, len(rounds) + 1)]
    ours = [{"round": n, "rps": 100.0 * r} for n, r in enumerate(rounds, 1)]
    load_runs = {"twemproxy": twem, "cachecloak-encrypted": ours}
    result = {"loads": [{"key": "set-p1-100", "runs": load_runs,
                         "summary": report.summarise_runs(load_runs, ["rps"], "rps")}]}
    goal = next(g for g in report.evaluate_goals(result)
                if g["figure"].startswith("encrypted, pipeline 1, SET 100 B"))
    assert goal["verdict"] == verdict


def test_machine_shares_split_the_ticks_between_work_idle_and_steal():
    from bench import procstat

    before = {"busy": 1000, "idle": 500, "steal": 10}
    after = {"busy": 1600, "idle": 800, "steal": 110}
    assert procstat.machine_shares(before, after) == {
        "busy_share": 0.6, "idle_share": 0.3, "steal_share": 0.1}
    assert procstat.machine_shares({}, after) == {}
    assert procstat.machine_shares(after, after) == {}
    now = procstat.machine_ticks()  # this machine's own /proc/stat
    assert set(now) == {"busy", "idle", "steal"} and now["busy"] > 0


def test_rounds_alternate_the_order_of_the_targets():
    from bench.run import Harness, parse_args

    harness = Harness(parse_args(["--quick"]))
    harness.targets = ["redis", "twemproxy", "cachecloak-encrypted"]
    assert harness.in_order(1) == ["redis", "twemproxy", "cachecloak-encrypted"]
    assert harness.in_order(2) == ["cachecloak-encrypted", "twemproxy", "redis"]
    assert harness.in_order(3) == harness.in_order(1)


def test_pooled_runs_keep_each_rounds_pairs_and_take_the_median_over_all():
    from bench import report

    def result(stamp, ours, twem):
        runs = {"twemproxy": [{"round": n, "rps": r} for n, r in enumerate(twem, 1)],
                "cachecloak-encrypted": [{"round": n, "rps": r} for n, r in enumerate(ours, 1)]}
        return {"meta": {"stamp": stamp, "command": "python -m bench", "options": {"rounds": 2},
                         "versions": {"cachecloak": "abc"}},
                "targets": [{"name": "twemproxy", "title": "twemproxy"},
                            {"name": "cachecloak-encrypted", "title": "enc"}],
                "loads": [{"key": "get-p1-100", "label": "GET P1 100 B", "runs": runs}]}

    # run a: ratios 0.9, 0.5; run b: 0.8, 1.0
    pooled = report.pool([result("a", [90.0, 50.0], [100.0, 100.0]),
                          result("b", [80.0, 100.0], [100.0, 100.0])])
    (goal,) = [g for g in pooled["goals"] if "GET 100 B" in g["figure"]]
    assert goal["rounds"] == [0.9, 0.5, 0.8, 1.0]  # each against its own round's twemproxy
    assert goal["measured"] == pytest.approx(0.85)
    assert pooled["meta"]["summary"] == "4 rounds of 2 runs"
    assert "pooled: a (abc: python -m bench); b (abc: python -m bench)" in pooled["meta"]["notes"]
