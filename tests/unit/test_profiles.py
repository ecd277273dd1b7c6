"""Telemetry generators: each kind's values at known times, bounds, determinism per seed and spec validation."""

from __future__ import annotations

import itertools
import math
import statistics
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from devices.profiles import ProfileSpec, build

SPEC = TypeAdapter(ProfileSpec)
EQUATOR_DEGREE_M = 2 * math.pi * 6_371_008.8 / 360  # haversine length of one degree of longitude at the equator

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
seeds = st.integers(min_value=0, max_value=2**32)
times = st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=40).map(sorted)


def run(spec: dict[str, Any], ts: list[float], seed: int = 1) -> list[Any]:
    profile = build(SPEC.validate_python(spec), seed)
    return [profile.sample(t) for t in ts]


def seconds(n: int, dt: float = 1.0) -> list[float]:
    return [i * dt for i in range(n)]


# --- constant, uniform, gaussian, sine ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"profile": "constant", "value": "idle"}, "idle"),
        ({"profile": "constant", "value": 7}, 7),
        ({"profile": "constant", "value": 1.23456, "decimals": 2}, 1.23),
        (
            {"profile": "constant", "value": {"fw": "1.0", "temp": [20.456]}, "decimals": 1},
            {"fw": "1.0", "temp": [20.5]},
        ),
    ],
)
def test_constant_returns_its_value(spec: dict[str, Any], expected: Any) -> None:
    assert run(spec, [0, 5, 10]) == [expected] * 3


def test_constant_returns_a_copy_the_caller_may_change() -> None:
    profile = build(SPEC.validate_python({"profile": "constant", "value": {"tags": ["a"]}}), 1)
    first = profile.sample(0)
    first["tags"].append("b")
    assert profile.sample(1) == {"tags": ["a"]}


@settings(max_examples=50, deadline=None)
@given(a=finite, b=finite, seed=seeds)
def test_uniform_stays_within_low_and_high(a: float, b: float, seed: int) -> None:
    low, high = min(a, b), max(a, b)
    values = run({"profile": "uniform", "low": low, "high": high}, seconds(50), seed)
    assert all(low <= v <= high for v in values)


def test_uniform_spreads_over_the_range() -> None:
    values = run({"profile": "uniform", "low": 10, "high": 20}, seconds(4000))
    assert min(values) < 10.1
    assert max(values) > 19.9
    assert statistics.fmean(values) == pytest.approx(15, abs=0.2)


def test_gaussian_has_its_mean_and_stddev() -> None:
    values = run({"profile": "gaussian", "mean": 50, "stddev": 4}, seconds(5000))
    assert statistics.fmean(values) == pytest.approx(50, abs=0.25)
    assert statistics.stdev(values) == pytest.approx(4, rel=0.05)


@settings(max_examples=50, deadline=None)
@given(mean=finite, stddev=st.floats(0, 1e3), a=finite, b=finite, seed=seeds)
def test_gaussian_is_clamped_to_min_and_max(mean: float, stddev: float, a: float, b: float, seed: int) -> None:
    low, high = min(a, b), max(a, b)
    spec = {"profile": "gaussian", "mean": mean, "stddev": stddev, "min": low, "max": high}
    assert all(low <= v <= high for v in run(spec, seconds(50), seed))


def test_gaussian_clamping_reaches_both_bounds() -> None:
    values = run({"profile": "gaussian", "mean": 0, "stddev": 10, "min": -1, "max": 1}, seconds(200))
    assert min(values) == -1
    assert max(values) == 1


@pytest.mark.parametrize(
    ("t", "phase", "expected"),
    [(0, 0, 20), (15, 0, 25), (30, 0, 20), (45, 0, 15), (60, 0, 20), (75, 0, 25), (0, 15, 25), (0, -15, 15)],
)
def test_sine_at_known_times(t: float, phase: float, expected: float) -> None:
    spec = {"profile": "sine", "mean": 20, "amplitude": 5, "period": 60, "phase": phase}
    assert run(spec, [t]) == [pytest.approx(expected, abs=1e-9)]


def test_sine_noise_is_gaussian_around_the_curve() -> None:
    ts = seconds(4000, 0.7)
    clean = run({"profile": "sine", "mean": 3, "amplitude": 2, "period": 17}, ts)
    noisy = run({"profile": "sine", "mean": 3, "amplitude": 2, "period": 17, "noise": 0.5}, ts)
    errors = [n - c for n, c in zip(noisy, clean, strict=True)]
    assert statistics.fmean(errors) == pytest.approx(0, abs=0.05)
    assert statistics.stdev(errors) == pytest.approx(0.5, rel=0.05)


# --- random walk --------------------------------------------------------------------------------------------------


def test_random_walk_starts_at_start_and_does_not_move_without_time() -> None:
    assert run({"profile": "random_walk", "start": 42, "step": 3}, [0, 0, 0]) == [42, 42, 42]
    assert run({"profile": "random_walk", "start": 42, "step": 0}, seconds(10)) == [42] * 10


def test_random_walk_start_outside_the_bounds_begins_at_the_nearest_bound() -> None:
    assert run({"profile": "random_walk", "start": -5, "min": 0, "max": 1, "step": 0}, [0]) == [0]


@pytest.mark.parametrize("dt", [0.25, 1.0, 16.0])
def test_random_walk_steps_scale_with_the_square_root_of_elapsed_time(dt: float) -> None:
    values = run({"profile": "random_walk", "step": 2}, seconds(3001, dt))
    steps = [b - a for a, b in itertools.pairwise(values)]
    assert statistics.stdev(steps) == pytest.approx(2 * math.sqrt(dt), rel=0.06)
    assert statistics.fmean(steps) == pytest.approx(0, abs=0.1 * math.sqrt(dt))


@settings(max_examples=50, deadline=None)
@given(a=finite, b=finite, start=finite, step=st.floats(0, 1e4), ts=times, seed=seeds)
def test_random_walk_stays_within_min_and_max(
    a: float, b: float, start: float, step: float, ts: list[float], seed: int
) -> None:
    low, high = min(a, b), max(a, b)
    spec = {"profile": "random_walk", "start": start, "step": step, "min": low, "max": high}
    assert all(low <= v <= high for v in run(spec, ts, seed))


@pytest.mark.parametrize(("bound", "ok"), [({"min": 5.0}, lambda v: v >= 5), ({"max": 5.0}, lambda v: v <= 5)])
def test_random_walk_with_one_bound_is_reflected_on_that_side(bound: dict[str, float], ok: Any) -> None:
    values = run({"profile": "random_walk", "start": 5, "step": 3, **bound}, seconds(2000))
    assert all(ok(v) for v in values)
    assert len({round(v, 6) for v in values}) > 1900  # reflected, not stuck at the bound


def test_random_walk_is_reflected_not_stuck_at_the_bounds() -> None:
    values = run({"profile": "random_walk", "start": 0.5, "step": 5, "min": 0, "max": 1}, seconds(500))
    assert all(0 <= v <= 1 for v in values)
    assert sum(v in (0, 1) for v in values) < 5
    assert statistics.fmean(values) == pytest.approx(0.5, abs=0.1)


# --- gps route ----------------------------------------------------------------------------------------------------

LINE = [(0.0, 0.0), (0.0, 1.0)]
ONE_DEGREE_S = EQUATOR_DEGREE_M / 10  # seconds to cover one degree at the default 10 m/s


@pytest.mark.parametrize(
    ("loop", "t", "lon"),
    [
        (False, 0, 0.0),
        (False, 0.25 * ONE_DEGREE_S, 0.25),
        (False, ONE_DEGREE_S, 1.0),
        (False, 5 * ONE_DEGREE_S, 1.0),  # stops at the last waypoint
        (True, 0.5 * ONE_DEGREE_S, 0.5),
        (True, ONE_DEGREE_S, 1.0),
        (True, 1.5 * ONE_DEGREE_S, 0.5),  # on the way back to the first waypoint
        (True, 2 * ONE_DEGREE_S, 0.0),
        (True, 2.25 * ONE_DEGREE_S, 0.25),  # and round again
    ],
)
def test_gps_route_moves_along_the_waypoints_at_speed(loop: bool, t: float, lon: float) -> None:
    [point] = run({"profile": "gps_route", "waypoints": LINE, "loop": loop}, [t])
    assert point == {"lat": pytest.approx(0.0, abs=1e-9), "lon": pytest.approx(lon, abs=1e-6)}


def test_gps_route_visits_every_corner_of_a_closed_polygon() -> None:
    square = [(0.0, 0.0), (0.0, 0.01), (0.01, 0.01), (0.01, 0.0)]
    spec = {"profile": "gps_route", "waypoints": square, "speed": 1.0}
    points = run(spec, seconds(20_000, 0.5))
    for lat, lon in square:
        assert min(math.hypot(p["lat"] - lat, p["lon"] - lon) for p in points) < 1e-5


def test_gps_route_rounds_lat_and_lon() -> None:
    [point] = run({"profile": "gps_route", "waypoints": [(51.5, -0.12), (51.6, -0.2)], "decimals": 3}, [777])
    assert point == {"lat": round(point["lat"], 3), "lon": round(point["lon"], 3)}
    assert point["lat"] != 51.5


waypoint = st.tuples(st.floats(-89, 89), st.floats(-179, 179))


@settings(max_examples=50, deadline=None)
@given(points=st.lists(waypoint, min_size=2, max_size=6), loop=st.booleans(), speed=st.floats(0.1, 500), ts=times)
def test_gps_route_stays_inside_the_waypoints_bounding_box(
    points: list[tuple[float, float]], loop: bool, speed: float, ts: list[float]
) -> None:
    spec = {"profile": "gps_route", "waypoints": points, "loop": loop, "speed": speed}
    lats, lons = [p[0] for p in points], [p[1] for p in points]
    for p in run(spec, ts):
        assert min(lats) <= p["lat"] <= max(lats)
        assert min(lons) <= p["lon"] <= max(lons)


# --- battery ------------------------------------------------------------------------------------------------------

CYCLE = {"profile": "battery", "start": 20, "drain_per_hour": 10, "recharge_at": 10, "recharge_to": 90}
CYCLE |= {"recharge_per_hour": 40}


@pytest.mark.parametrize(
    ("hours", "level"),
    [(0, 20), (0.5, 15), (1, 10), (1.5, 30), (3, 90), (4, 80), (11, 10), (12, 50), (13, 90), (14, 80)],
)
def test_battery_drains_then_recharges_then_drains(hours: float, level: float) -> None:
    assert run(CYCLE, [0, hours * 3600])[-1] == pytest.approx(level)


def test_battery_level_does_not_depend_on_how_often_it_is_sampled() -> None:
    fine = run(CYCLE, seconds(14 * 60 + 1, 60.0))
    coarse = run(CYCLE, [0, 5_000, 5_001, 20_000, 50_400])
    assert fine[-1] == pytest.approx(coarse[-1]) == pytest.approx(80)


def test_battery_integrates_a_very_long_gap_in_one_call() -> None:
    # One cycle of CYCLE is 10 h: 2 h charging 10 -> 90, 8 h draining back to 10.
    hours = 1 + 10 * 10**7 + 3
    assert run(CYCLE, [0, hours * 3600])[-1] == pytest.approx(80, rel=1e-6)


def test_battery_defaults_drain_five_percent_an_hour() -> None:
    assert run({"profile": "battery", "decimals": 2}, [0, 1800, 3600]) == [100, 97.5, 95]


def test_battery_starting_low_charges_first() -> None:
    assert run({**CYCLE, "start": 5}, [0, 1800]) == [5, pytest.approx(25)]


@settings(max_examples=50, deadline=None)
@given(
    start=st.floats(0, 100),
    drain=st.floats(0, 1e4),
    at=st.floats(0, 99),
    gap=st.floats(0.5, 100),
    charge=st.floats(0.1, 1e4),
    ts=times,
)
def test_battery_stays_within_0_and_100(
    start: float, drain: float, at: float, gap: float, charge: float, ts: list[float]
) -> None:
    to = min(100.0, at + gap)
    spec = {"profile": "battery", "start": start, "drain_per_hour": drain, "recharge_at": at, "recharge_to": to}
    spec["recharge_per_hour"] = charge
    assert all(0 <= v <= 100 for v in run(spec, ts))


def test_fast_drain_eventually_recharges() -> None:
    spec = {"profile": "battery", "drain_per_hour": 360, "recharge_per_hour": 360, "recharge_at": 20}
    values = run(spec, seconds(2000))
    rises = [i for i in range(1, len(values)) if values[i] > values[i - 1]]
    assert rises
    assert min(values) == pytest.approx(20)
    assert max(values[rises[0] :]) == pytest.approx(100)


# --- counter ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, [0, 1, 2, 3, 4, 5, 6]),
        ({"start": 10, "step": 5}, [10, 15, 20, 25, 30, 35, 40]),
        ({"wrap": 3}, [0, 1, 2, 3, 0, 1, 2]),
        ({"step": 3, "wrap": 10}, [0, 3, 6, 9, 0, 3, 6]),
        ({"start": 5, "step": 5, "wrap": 15}, [5, 10, 15, 5, 10, 15, 5]),
        ({"step": -2}, [0, -2, -4, -6, -8, -10, -12]),
    ],
)
def test_counter_steps_once_per_sample(spec: dict[str, Any], expected: list[int]) -> None:
    # Irregular times on purpose: the counter counts samples, not seconds.
    assert run({"profile": "counter", **spec}, [0, 0, 0.1, 50, 50, 3600, 3601]) == expected


@settings(max_examples=50, deadline=None)
@given(start=st.integers(0, 100), step=st.integers(1, 50), span=st.integers(1, 200))
def test_counter_wraps_within_start_and_wrap(start: int, step: int, span: int) -> None:
    spec = {"profile": "counter", "start": start, "step": step, "wrap": start + span}
    values = run(spec, seconds(300))
    assert all(start <= v <= start + span for v in values)
    assert values.count(start) >= 300 // (span // step + 1)


# --- event --------------------------------------------------------------------------------------------------------


def test_event_rate_matches_probability_per_minute() -> None:
    values = run({"profile": "event", "probability_per_minute": 6}, seconds(20_000))
    expected = 20_000 * (1 - math.exp(-6 / 60))
    assert values[0] is False  # dt = 0 on the first sample
    assert sum(values) == pytest.approx(expected, rel=0.08)


def test_event_rate_accounts_for_irregular_spacing() -> None:
    # Samples every 30 s at 1/min: each is on with probability 1 - e^-0.5, about 39%.
    values = run({"profile": "event", "probability_per_minute": 1}, seconds(5000, 30.0))
    assert sum(values) / 5000 == pytest.approx(1 - math.exp(-0.5), abs=0.025)


def test_event_never_fires_at_rate_zero_and_uses_on_off_values() -> None:
    assert set(run({"profile": "event", "probability_per_minute": 0}, seconds(1000))) == {False}
    values = run({"profile": "event", "probability_per_minute": 30, "on": "ALARM", "off": "ok"}, seconds(200))
    assert set(values) == {"ALARM", "ok"}


def test_event_stays_on_for_its_duration() -> None:
    values = run({"profile": "event", "probability_per_minute": 3, "duration": 10}, seconds(5000))
    runs, current = [], 0
    for v in values:
        if v:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    assert len(runs) > 50
    assert all(r >= 10 for r in runs)  # an event started at s is on for s .. s+9 at 1 s spacing


def test_event_with_no_duration_is_on_for_one_sample() -> None:
    values = run({"profile": "event", "probability_per_minute": 60 * math.log(2)}, seconds(400, 0.5))
    assert values.count(True) == pytest.approx(400 * (1 - 2**-0.5), rel=0.25)
    assert True in values


# --- choice -------------------------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(st.one_of(st.integers(), st.text(max_size=5), st.booleans()), min_size=1, max_size=6), seed=seeds
)
def test_choice_is_always_one_of_the_values(values: list[Any], seed: int) -> None:
    assert all(v in values for v in run({"profile": "choice", "values": values}, seconds(30), seed))


def test_choice_follows_the_weights() -> None:
    values = run({"profile": "choice", "values": ["a", "b", "c"], "weights": [1, 3, 0]}, seconds(4000))
    assert "c" not in values
    assert values.count("b") / 4000 == pytest.approx(0.75, abs=0.03)


def test_choice_holds_a_value_for_hold_seconds() -> None:
    values = run({"profile": "choice", "values": list(range(1000)), "hold": 10}, seconds(100, 2.5))
    # A new value may be drawn only at t = 0, 10, 20 ... (every 4th sample at 2.5 s spacing).
    for i in range(len(values)):
        if i % 4:
            assert values[i] == values[i - 1]
    assert len(set(values)) >= 20


def test_choice_returns_copies_and_rounds() -> None:
    profile = build(SPEC.validate_python({"profile": "choice", "values": [{"v": 1.26}], "decimals": 1}), 1)
    first = profile.sample(0)
    assert first == {"v": 1.3}
    first["v"] = 0
    assert profile.sample(1) == {"v": 1.3}


# --- every kind: determinism and rounding -------------------------------------------------------------------------

RANDOM_KINDS: list[dict[str, Any]] = [
    {"profile": "uniform", "low": -5, "high": 5},
    {"profile": "gaussian", "mean": 1, "stddev": 2},
    {"profile": "sine", "noise": 0.1},
    {"profile": "random_walk"},
    {"profile": "event", "probability_per_minute": 40},
    {"profile": "choice", "values": ["a", "b", "c", "d"]},
]
ALL_KINDS: list[dict[str, Any]] = [
    *RANDOM_KINDS,
    {"profile": "constant", "value": 3},
    {"profile": "gps_route", "waypoints": [(1, 2), (1.01, 2.02), (1.0, 2.03)]},
    {"profile": "battery", "drain_per_hour": 3000},
    {"profile": "counter", "wrap": 5},
    {"profile": "event", "probability_per_minute": 10, "duration": 20},
    {"profile": "choice", "values": [1, 2, 3], "weights": [1, 1, 2], "hold": 7},
]


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(ALL_KINDS), seed=seeds, ts=times)
def test_same_seed_and_times_give_the_same_outputs(kind: dict[str, Any], seed: int, ts: list[float]) -> None:
    assert run(kind, ts, seed) == run(kind, ts, seed)


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(RANDOM_KINDS), seeds=st.lists(seeds, min_size=2, max_size=2, unique=True))
def test_different_seeds_give_different_outputs(kind: dict[str, Any], seeds: list[int]) -> None:
    ts = seconds(60)
    assert run(kind, ts, seeds[0]) != run(kind, ts, seeds[1])


FLOAT_KINDS: list[dict[str, Any]] = [
    *(k for k in ALL_KINDS if k["profile"] in ("uniform", "gaussian", "sine", "random_walk", "gps_route", "battery")),
    {"profile": "constant", "value": 3.14159},
    {"profile": "event", "probability_per_minute": 30, "on": 1.23456, "off": -0.5555},
    {"profile": "choice", "values": [1.2345, 2.3456, "text"]},
]


def rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: round(v, 2) for k, v in value.items()}
    return round(value, 2) if isinstance(value, float) else value


@pytest.mark.parametrize("kind", FLOAT_KINDS, ids=lambda k: str(k["profile"]))
def test_decimals_rounds_numeric_outputs(kind: dict[str, Any]) -> None:
    ts = seconds(50, 13.0)
    exact, two_places = run(kind, ts), run({**kind, "decimals": 2}, ts)
    assert exact != two_places  # so rounding did something
    assert two_places == [rounded(v) for v in exact]


# --- validation ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"profile": "uniform", "low": 2, "high": 1}, "greater than the upper bound"),
        ({"profile": "gaussian", "mean": 0, "stddev": 1, "min": 3, "max": 2}, "min/max"),
        ({"profile": "gaussian", "mean": 0, "stddev": -1}, "greater than or equal to 0"),
        ({"profile": "random_walk", "min": 1, "max": 0}, "min/max"),
        ({"profile": "choice", "values": [1, 2], "weights": [1]}, "weights has 1 entries but values has 2"),
        ({"profile": "choice", "values": [1, 2], "weights": [1, -1]}, "must not be negative"),
        ({"profile": "choice", "values": [1, 2], "weights": [0, 0]}, "positive sum"),
        ({"profile": "choice", "values": []}, "at least 1 item"),
        ({"profile": "battery", "recharge_at": 50, "recharge_to": 50}, "must be below recharge_to"),
        ({"profile": "battery", "start": 101}, "less than or equal to 100"),
        ({"profile": "counter", "start": 10, "wrap": 10}, "must be greater than start"),
        ({"profile": "gps_route", "waypoints": [(0, 0)]}, "at least 2 items"),
        ({"profile": "gps_route", "waypoints": [(0, 0), (91, 0)]}, "waypoints[1]"),
        ({"profile": "sine", "period": 0}, "greater than 0"),
        ({"profile": "sine", "mean": float("nan")}, "finite number"),
        ({"profile": "uniform", "low": 0, "high": 1, "decimals": 13}, "less than or equal to 12"),
        ({"profile": "uniform", "low": 0, "high": 1, "colour": "red"}, "Extra inputs are not permitted"),
        ({"profile": "brownian"}, "does not match any of the expected tags"),
    ],
)
def test_bad_specs_are_rejected_with_a_clear_message(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        SPEC.validate_python(spec)
