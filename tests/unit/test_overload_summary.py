"""The overload and sweep benchmarks' bookkeeping (pure logic, no server): answers counted by gRPC status in
the load generator, and the rates, latencies and knee ``cartwise bench search --overload`` and ``--sweep``
report from them."""

from __future__ import annotations

import pytest

from cartwise.app.bench.loadgen import Outcomes
from cartwise.app.bench.search import overload_summary, sweep_step, sweep_summary


def _load(outcomes: Outcomes, requests: int) -> dict:
    return {"requests": requests, "qps": 50.0, "offered_qps": 200.0, "start_late_p99_ms": 1.0,
            "loadgen_cpu_ms_per_request": 0.5, "server_cpu_ms_per_request": 3.0, "server_cpu_ms_per_answer": 4.0,
            **outcomes.summary()}


def _step(target_qps: float, ok: int, refused: int = 0, ok_micros: int = 5_000) -> dict:
    outcomes = Outcomes()
    for _ in range(ok):
        outcomes.record("OK", 0.0, ok_micros)
    for _ in range(refused):
        outcomes.record("RESOURCE_EXHAUSTED", 0.0, 500)
    return sweep_step(target_qps, _load(outcomes, ok + refused))


def test_outcomes_keep_latencies_per_status():
    outcomes = Outcomes(keep_records=True)
    for micros in (10_000, 20_000):
        outcomes.record("OK", 0.0, micros, None)
    outcomes.record("RESOURCE_EXHAUSTED", 0.0, 1_000)
    outcomes.record("DEADLINE_EXCEEDED", 0.0, 250_000)
    summary = outcomes.summary()
    assert summary["status"] == {"OK": 2, "RESOURCE_EXHAUSTED": 1, "DEADLINE_EXCEEDED": 1}
    assert summary["errors"] == 2
    assert summary["p99_ms"] == pytest.approx(20.0, rel=0.01)  # OK answers only: the 250 ms timeout is not in it
    assert summary["rejected_p99_ms"] == pytest.approx(1.0, rel=0.01)
    assert len(outcomes.records) == 4


def test_overload_summary_rates_are_shares_of_requests_sent():
    outcomes = Outcomes()
    for status, n in (("OK", 5), ("RESOURCE_EXHAUSTED", 3), ("DEADLINE_EXCEEDED", 1), ("UNAVAILABLE", 1)):
        for _ in range(n):
            outcomes.record(status, 0.0, 5_000)
    capacity = {"qps": 100.0, "p50_ms": 10.0, "p99_ms": 30.0, "status": {"OK": 2000}, "server_cpu_ms_per_request": 6.0}
    summary = overload_summary(capacity, _load(outcomes, 10), target_qps=200.0)
    assert summary["capacity_qps"] == 100.0 and summary["target_qps"] == 200.0
    assert summary["rejected_rate"] == pytest.approx(0.3)
    assert summary["deadline_exceeded_rate"] == pytest.approx(0.1)
    assert summary["other_errors"] == 1
    assert summary["served_p99_ms"] == pytest.approx(5.0, rel=0.01)


def test_overload_summary_has_no_latency_for_an_answer_that_never_came():
    outcomes = Outcomes()
    outcomes.record("DEADLINE_EXCEEDED", 0.0, 250_000)
    capacity = {"qps": 1.0, "p50_ms": 1.0, "p99_ms": 1.0, "status": {"OK": 1}, "server_cpu_ms_per_request": 1.0}
    summary = overload_summary(capacity, _load(outcomes, 1), target_qps=2.0)
    assert summary["served_p99_ms"] is None and summary["rejected_p99_ms"] is None
    assert summary["rejected_rate"] == 0.0


def test_overload_summary_without_a_capacity_run_has_no_capacity_figures():
    outcomes = Outcomes()
    outcomes.record("OK", 0.0, 5_000)
    summary = overload_summary(None, _load(outcomes, 1), target_qps=400.0)
    assert summary["capacity_qps"] is None and summary["capacity_p99_ms"] is None
    assert summary["target_qps"] == 400.0 and summary["served_qps"] == 50.0


def test_a_sweep_step_fails_on_its_p99_or_on_more_than_one_percent_not_ok():
    assert _step(100.0, ok=500)["passed"]
    slow = _step(100.0, ok=500, ok_micros=60_000)
    assert not slow["passed"] and slow["p99_ms"] == pytest.approx(60.0, rel=0.01)
    assert _step(100.0, ok=990, refused=10)["passed"]  # exactly 1%: still within
    refused = _step(100.0, ok=989, refused=11)
    assert not refused["passed"] and refused["refused_rate"] == pytest.approx(0.011)
    none = _step(100.0, ok=0, refused=5)
    assert not none["passed"] and none["p99_ms"] is None


def test_the_knee_is_the_step_before_the_first_failing_one():
    steps = [_step(50.0, ok=100), _step(100.0, ok=100), _step(150.0, ok=100, ok_micros=80_000),
             _step(200.0, ok=100)]  # a later step that passes does not move the knee
    summary = sweep_summary(steps, floor_cpu_ms_per_request=2.0)
    assert summary["knee_qps"] == 100.0
    assert summary["cpu_ratio"] == pytest.approx(4.0 / 2.0)  # the knee step's server CPU per answer / floor
    assert sweep_summary(steps[2:], 2.0) == {"knee_qps": 0.0, "floor_cpu_ms_per_request": 2.0, "cpu_ratio": None}
    assert sweep_summary(steps[:2], 2.0)["knee_qps"] == 100.0  # none fails: the last step
