"""Fleet figures: histogram percentiles against exact ones, merging and state round-trips, rates and counters."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.metrics import Counters, LatencyHistogram, RateWindow


def exact_percentile(values: list[float], p: float) -> float:
    """Nearest rank, the definition LatencyHistogram.percentile approximates."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p * len(ordered) / 100)) - 1]


def histogram(values: list[float]) -> LatencyHistogram:
    hist = LatencyHistogram()
    for v in values:
        hist.record(v)
    return hist


def json_round_trip(state: dict[str, object]) -> dict[str, object]:
    result: dict[str, object] = json.loads(json.dumps(state))
    return result


# --- LatencyHistogram ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        [float(ms) for ms in range(1, 10_001)],  # uniform 1..10000 ms
        [random.Random(7).lognormvariate(3, 1.2) for _ in range(20_000)],  # long-tailed, like network latency
        [0.05 * 1.5**i for i in range(40)],  # spread over eight decades
    ],
    ids=["uniform", "lognormal", "geometric"],
)
def test_percentiles_are_within_2_percent_of_exact(values: list[float]) -> None:
    hist = histogram(values)
    assert hist.count == len(values)
    for p in (0, 1, 25, 50, 75, 90, 99, 99.9, 100):
        assert hist.percentile(p) == pytest.approx(exact_percentile(values, p), rel=0.02), p
    assert hist.max == max(values)


def test_uniform_distribution_summary() -> None:
    summary = histogram([float(ms) for ms in range(1, 1001)]).to_dict()
    assert set(summary) == {"count", "p50", "p90", "p99", "max"}
    assert summary["count"] == 1000
    assert summary["p50"] == pytest.approx(500, rel=0.02)
    assert summary["p90"] == pytest.approx(900, rel=0.02)
    assert summary["p99"] == pytest.approx(990, rel=0.02)
    assert summary["max"] == 1000.0


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(st.floats(min_value=0.01, max_value=600_000), min_size=1, max_size=200),
    p=st.floats(min_value=0, max_value=100),
)
def test_any_percentile_is_within_2_percent_and_inside_min_max(values: list[float], p: float) -> None:
    got = histogram(values).percentile(p)
    assert got == pytest.approx(exact_percentile(values, p), rel=0.02)
    assert min(values) <= got <= max(values)


def test_a_single_value_is_reported_exactly() -> None:
    hist = histogram([123.456])
    assert hist.to_dict() == {"count": 1, "p50": 123.456, "p90": 123.456, "p99": 123.456, "max": 123.456}


def test_values_outside_the_bucket_range_stay_within_min_and_max() -> None:
    tiny = histogram([0.001, 0.002, 0.003])
    assert 0.001 <= tiny.percentile(50) <= 0.003
    huge = histogram([1_000_000.0, 2_000_000.0])
    assert huge.percentile(100) == 2_000_000.0
    assert 1_000_000.0 <= huge.percentile(50) <= 2_000_000.0


def test_negative_latency_counts_as_zero_and_non_finite_is_rejected() -> None:
    hist = histogram([-3.0])
    assert hist.to_dict() == {"count": 1, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="finite"):
            hist.record(bad)
    assert hist.count == 1


def test_empty_histogram() -> None:
    hist = LatencyHistogram()
    assert hist.count == 0
    assert hist.percentile(50) == 0.0
    assert hist.to_dict() == {"count": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    with pytest.raises(ValueError, match="between 0 and 100"):
        hist.percentile(101)


def test_memory_is_fixed_whatever_the_count() -> None:
    rng = random.Random(3)
    hist = histogram([rng.uniform(0, 600_000) for _ in range(50_000)])
    assert hist.count == 50_000
    assert len(hist.to_state()["buckets"]) < 1000


@settings(max_examples=50, deadline=None)
@given(
    parts=st.lists(st.lists(st.floats(min_value=-1, max_value=1e6), max_size=30), min_size=1, max_size=4),
)
def test_merging_equals_recording_everything_in_one(parts: list[list[float]]) -> None:
    merged = LatencyHistogram()
    for part in parts:
        merged.merge(histogram(part))
    everything = histogram([v for part in parts for v in part])
    assert merged.to_state() == everything.to_state()
    assert merged.to_dict() == everything.to_dict()


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.floats(min_value=0, max_value=1e7), max_size=50))
def test_state_survives_json_round_trip(values: list[float]) -> None:
    hist = histogram(values)
    restored = LatencyHistogram.from_state(json_round_trip(hist.to_state()))
    assert restored.to_state() == hist.to_state()
    assert restored.to_dict() == hist.to_dict()
    restored.record(5.0)
    hist.record(5.0)
    assert restored.to_state() == hist.to_state()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"layout": [0.1, 1000.0, 1.1]}, "layout"),
        ({"buckets": [[99_999, 1]]}, "bucket"),
        ({"buckets": [[3, -1]]}, "bucket"),
        ({"buckets": [[3]]}, "bucket"),
        ({"count": 5}, "count"),
    ],
)
def test_malformed_state_is_rejected(change: dict[str, object], message: str) -> None:
    state = histogram([1.0, 2.0]).to_state() | change
    with pytest.raises(ValueError, match=message):
        LatencyHistogram.from_state(state)


# --- RateWindow ---------------------------------------------------------------------------------------------------


def steady(window: RateWindow, per_second: int, start: float, end: float) -> None:
    t = start
    while t < end:
        window.add(t)
        t += 1 / per_second


def test_empty_window_has_no_rate() -> None:
    assert RateWindow(10).rate(100.0) == 0.0


def test_steady_rate_over_a_full_window() -> None:
    window, start = RateWindow(10), 0.0
    for now in (30.0, 45.5, 59.99):
        steady(window, 20, start, now)
        start = now
        assert window.rate(now) == pytest.approx(20, rel=0.02)


def test_rate_uses_elapsed_time_before_the_window_is_full() -> None:
    window = RateWindow(60)
    window.add(100.0, 10)
    window.add(104.0, 30)
    assert window.rate(105.0) == pytest.approx(40 / 5)
    assert window.rate(100.2) == pytest.approx(10)  # at least one second: the first batch is not an infinite rate


def test_rate_falls_to_zero_after_the_window_passes() -> None:
    window = RateWindow(10)
    steady(window, 5, 0.0, 20.0)
    assert window.rate(25.0) == pytest.approx(5 * 5 / 10, rel=0.05)  # half the window still has events
    assert window.rate(31.0) == 0.0


def test_n_counts_as_n_events() -> None:
    window = RateWindow(5)
    for second in range(20):
        window.add(second + 0.5, 7)
    assert window.rate(19.9) == pytest.approx(7, rel=0.05)


def test_window_memory_is_bounded() -> None:
    window = RateWindow(10)
    steady(window, 3, 0.0, 1000.0)
    assert len(window.to_state()["buckets"]) <= 12


def test_merged_windows_add_their_rates() -> None:
    a, b = RateWindow(10), RateWindow(10)
    steady(a, 5, 0.0, 30.0)
    steady(b, 15, 3.0, 30.0)
    a.merge(b)
    assert a.rate(29.9) == pytest.approx(20, rel=0.03)
    with pytest.raises(ValueError, match="merge"):
        a.merge(RateWindow(60))


def test_window_state_round_trip() -> None:
    window = RateWindow(10)
    steady(window, 4, 2.0, 14.0)
    restored = RateWindow.from_state(json_round_trip(window.to_state()))
    assert restored.window == 10
    assert restored.to_state() == window.to_state()
    for now in (5.0, 12.0, 14.0, 20.0):
        assert restored.rate(now) == window.rate(now)


def test_window_must_be_at_least_a_second() -> None:
    with pytest.raises(ValueError, match="at least 1 second"):
        RateWindow(0)


# --- Counters -----------------------------------------------------------------------------------------------------


def test_counters_count() -> None:
    counters = Counters()
    counters.inc("sent")
    counters.inc("sent", 4)
    counters.inc("errors", 2)
    assert counters.get("sent") == 5
    assert counters.get("acked") == 0
    assert counters.as_dict() == {"errors": 2, "sent": 5}


def test_as_dict_is_a_copy() -> None:
    counters = Counters()
    counters.inc("sent")
    counters.as_dict()["sent"] = 100
    assert counters.get("sent") == 1


def test_counters_merge_adds_by_name() -> None:
    a, b = Counters(), Counters()
    a.inc("sent", 3)
    a.inc("errors", 1)
    b.inc("sent", 4)
    b.inc("acked", 2)
    a.merge(b)
    assert a.as_dict() == {"acked": 2, "errors": 1, "sent": 7}
    assert b.as_dict() == {"acked": 2, "sent": 4}


def test_counters_round_trip_and_reject_bad_input() -> None:
    counters = Counters()
    counters.inc("sent", 9)
    counters.inc("dropped", 1)
    assert Counters.from_dict(json.loads(json.dumps(counters.as_dict()))).as_dict() == counters.as_dict()
    with pytest.raises(ValueError, match="whole number"):
        Counters.from_dict({"sent": 1.5})  # type: ignore[dict-item]
