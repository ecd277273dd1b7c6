"""Seeded telemetry generators: sine, noise, random walk, GPS route, battery, counters, events, choices (pure)."""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Callable
from typing import Annotated, Any, Literal, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

JsonValue = Any

_EARTH_RADIUS_M = 6_371_008.8


class _Spec(BaseModel):
    # inf/NaN in a fleet file is always a mistake, and NaN would not survive JSON anyway.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    decimals: int | None = Field(default=None, ge=0, le=12, description="round numeric output to this many places")

    @model_validator(mode="after")
    def _validate(self) -> Self:
        self._check()
        return self

    def _check(self) -> None:
        """Cross-field rules: a subclass raises ValueError naming the fields at fault."""


def _check_bounds(low: float | None, high: float | None, names: str) -> None:
    if low is not None and high is not None and low > high:
        raise ValueError(f"{names}: the lower bound {low} is greater than the upper bound {high}")


class ConstantSpec(_Spec):
    profile: Literal["constant"]
    value: JsonValue


class UniformSpec(_Spec):
    profile: Literal["uniform"]
    low: float
    high: float

    def _check(self) -> None:
        _check_bounds(self.low, self.high, "low/high")


class GaussianSpec(_Spec):
    profile: Literal["gaussian"]
    mean: float
    stddev: float = Field(ge=0)
    min: float | None = None
    max: float | None = None

    def _check(self) -> None:
        _check_bounds(self.min, self.max, "min/max")


class SineSpec(_Spec):
    profile: Literal["sine"]
    mean: float = 0.0
    amplitude: float = 1.0
    period: float = Field(default=60.0, gt=0, description="seconds")
    phase: float = Field(default=0.0, description="seconds added to t")
    noise: float = Field(default=0.0, ge=0, description="gaussian stddev added to each sample")


class RandomWalkSpec(_Spec):
    profile: Literal["random_walk"]
    start: float = 0.0
    step: float = Field(default=1.0, ge=0, description="stddev of the change per second of simulated time")
    min: float | None = None
    max: float | None = None

    def _check(self) -> None:
        _check_bounds(self.min, self.max, "min/max")


class GpsRouteSpec(_Spec):
    profile: Literal["gps_route"]
    waypoints: list[tuple[float, float]] = Field(min_length=2, description="[lat, lon] pairs")
    speed: float = Field(default=10.0, gt=0, description="metres per second")
    loop: bool = True

    def _check(self) -> None:
        for i, (lat, lon) in enumerate(self.waypoints):
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise ValueError(f"waypoints[{i}]: [{lat}, {lon}] is not a [lat, lon] in [-90, 90] x [-180, 180]")


class BatterySpec(_Spec):
    profile: Literal["battery"]
    start: float = Field(default=100.0, ge=0, le=100)
    drain_per_hour: float = Field(default=5.0, ge=0)
    recharge_at: float = Field(default=10.0, ge=0, le=100)
    recharge_to: float = Field(default=100.0, ge=0, le=100)
    recharge_per_hour: float = Field(default=50.0, gt=0)

    def _check(self) -> None:
        if self.recharge_at >= self.recharge_to:
            raise ValueError(f"recharge_at ({self.recharge_at}) must be below recharge_to ({self.recharge_to})")


class CounterSpec(_Spec):
    profile: Literal["counter"]
    start: int = 0
    step: int = 1
    wrap: int | None = Field(default=None, gt=0, description="counter restarts at start after reaching this value")

    def _check(self) -> None:
        if self.wrap is not None and self.wrap <= self.start:
            raise ValueError(f"wrap ({self.wrap}) must be greater than start ({self.start})")


class EventSpec(_Spec):
    profile: Literal["event"]
    probability_per_minute: float = Field(ge=0)
    on: JsonValue = True
    off: JsonValue = False
    duration: float = Field(default=0.0, ge=0, description="seconds an event stays on (0: one sample)")


class ChoiceSpec(_Spec):
    profile: Literal["choice"]
    values: list[JsonValue] = Field(min_length=1)
    weights: list[float] | None = None
    hold: float = Field(default=0.0, ge=0, description="seconds a chosen value is kept")

    def _check(self) -> None:
        if self.weights is not None:
            if len(self.weights) != len(self.values):
                raise ValueError(f"weights has {len(self.weights)} entries but values has {len(self.values)}")
            if any(w < 0 for w in self.weights):
                raise ValueError("weights must not be negative")
            if sum(self.weights) <= 0:
                raise ValueError("weights must have a positive sum")


ProfileSpec = Annotated[
    ConstantSpec
    | UniformSpec
    | GaussianSpec
    | SineSpec
    | RandomWalkSpec
    | GpsRouteSpec
    | BatterySpec
    | CounterSpec
    | EventSpec
    | ChoiceSpec,
    Field(discriminator="profile"),
]


class Profile(Protocol):
    """One field's generator for one device: `sample(t)` for non-decreasing simulated seconds since start."""

    def sample(self, t: float) -> JsonValue: ...


def _clamp(x: float, low: float | None, high: float | None) -> float:
    if low is not None and x < low:
        return low
    if high is not None and x > high:
        return high
    return x


def _out(value: JsonValue, decimals: int | None) -> JsonValue:
    """Rounds floats when `decimals` is set; copies dicts/lists so callers may mutate what they get."""
    if type(value) is float:  # the per-message case first: most profiles produce floats
        return value if decimals is None else round(value, decimals)
    if isinstance(value, dict):
        return {k: _out(v, decimals) for k, v in value.items()}
    if isinstance(value, list):
        return [_out(v, decimals) for v in value]
    return round(value, decimals) if isinstance(value, float) and decimals is not None else value


class _Fn:
    """A stateless generator: one draw from its own Random per call, e.g. uniform, gaussian, sine."""

    def __init__(self, spec: _Spec, seed: int, fn: Callable[[float, random.Random], JsonValue]) -> None:
        self._fn, self._rng, self._decimals = fn, random.Random(seed), spec.decimals

    def sample(self, t: float) -> JsonValue:
        return _out(self._fn(t, self._rng), self._decimals)


class _Clocked:
    """Tracks the elapsed simulated time between calls: dt is 0 on the first call and never negative."""

    def __init__(self, seed: int) -> None:
        self._last: float | None = None
        self._rng = random.Random(seed)

    def _dt(self, t: float) -> float:
        last = self._last
        if last is None:
            self._last = t
            return 0.0
        if t <= last:
            return 0.0
        self._last = t
        return t - last


def _reflect(x: float, low: float | None, high: float | None) -> float:
    """Folds x back into [low, high] as a mirror would, so a walk bounces off a bound instead of sticking to it."""
    if low is not None and high is not None:
        span = high - low
        if span == 0:
            return low
        m = (x - low) % (2 * span)
        x = low + (m if m <= span else 2 * span - m)
    elif low is not None and x < low:
        x = 2 * low - x
    elif high is not None and x > high:
        x = 2 * high - x
    return _clamp(x, low, high)  # floating-point rounding in the fold must not leave the bounds


class _RandomWalk(_Clocked):
    """Brownian motion: the change over dt seconds is N(0, step² dt), whatever the spacing of the calls."""

    def __init__(self, spec: RandomWalkSpec, seed: int) -> None:
        super().__init__(seed)
        self._spec = spec
        self._value = _clamp(spec.start, spec.min, spec.max)  # a start outside the bounds begins at the nearest one

    def sample(self, t: float) -> JsonValue:
        s, dt = self._spec, self._dt(t)
        if dt > 0 and s.step > 0:
            self._value = _reflect(self._value + self._rng.gauss(0.0, s.step * math.sqrt(dt)), s.min, s.max)
        return _out(self._value, s.decimals)


def _haversine_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * _EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


class _GpsRoute:
    """Position after speed*t metres along the route, so it needs no state; lat/lon are interpolated linearly
    between waypoints (no antimeridian handling), which keeps every point inside the waypoints' bounding box."""

    def __init__(self, spec: GpsRouteSpec) -> None:
        self._spec = spec
        self._points = list(spec.waypoints) + ([spec.waypoints[0]] if spec.loop else [])
        self._cum = [0.0]
        for a, b in itertools.pairwise(self._points):
            self._cum.append(self._cum[-1] + _haversine_m(a, b))

    def sample(self, t: float) -> JsonValue:
        total, s = self._cum[-1], self._spec
        d = s.speed * max(0.0, t)
        if total <= 0:
            d = 0.0
        elif s.loop:
            d %= total
        else:
            d = min(d, total)
        i = min(max(bisect.bisect_right(self._cum, d) - 1, 0), len(self._points) - 2)
        seg = self._cum[i + 1] - self._cum[i]
        f = 0.0 if seg <= 0 else min(1.0, (d - self._cum[i]) / seg)
        (lat1, lon1), (lat2, lon2) = self._points[i], self._points[i + 1]
        # Clamped to the segment: a + (b - a) * f can land an ulp outside [a, b].
        lat = _clamp(lat1 + (lat2 - lat1) * f, min(lat1, lat2), max(lat1, lat2))
        lon = _clamp(lon1 + (lon2 - lon1) * f, min(lon1, lon2), max(lon1, lon2))
        return {"lat": _out(lat, s.decimals), "lon": _out(lon, s.decimals)}


class _Battery(_Clocked):
    """Drains to recharge_at, charges to recharge_to, repeats; integrated exactly over any dt."""

    def __init__(self, spec: BatterySpec) -> None:
        super().__init__(0)
        self._spec, self._level = spec, spec.start
        self._charging = spec.start <= spec.recharge_at
        band = spec.recharge_to - spec.recharge_at
        self._cycle = band / spec.recharge_per_hour + (band / spec.drain_per_hour if spec.drain_per_hour else math.inf)

    def sample(self, t: float) -> JsonValue:
        s, hours = self._spec, self._dt(t) / 3600
        while hours > 0 and (self._charging or s.drain_per_hour > 0):
            rate = s.recharge_per_hour if self._charging else -s.drain_per_hour
            target = s.recharge_to if self._charging else s.recharge_at
            need = max(0.0, (target - self._level) / rate)
            if need > hours:
                self._level += hours * rate
                break
            self._level, self._charging, hours = target, not self._charging, hours - need
            if self._charging:  # at recharge_at: skip whole drain/charge cycles instead of looping through them
                hours %= self._cycle
        return _out(_clamp(self._level, 0.0, 100.0), s.decimals)


class _Counter:
    """start, start+step, ... one step per sample; with wrap, never above wrap and back to start once it is reached."""

    def __init__(self, spec: CounterSpec) -> None:
        self._spec, self._next = spec, spec.start

    def sample(self, t: float) -> JsonValue:
        s, value = self._spec, self._next
        self._next = value + s.step
        if s.wrap is not None and self._next > s.wrap:  # wrap itself is sent, anything past it is not
            self._next = s.start
        return value


class _Event(_Clocked):
    """An event starts with probability 1-exp(-rate*dt) per call (a Poisson process sampled at the calls' times).

    dt is the time since the previous call, so the first call (dt=0) never starts one. No new event starts while
    one is on; it stays on for samples with t < start + duration, or for just its first sample when duration is 0.
    """

    def __init__(self, spec: EventSpec, seed: int) -> None:
        super().__init__(seed)
        self._spec = spec
        self._until = -math.inf

    def sample(self, t: float) -> JsonValue:
        s, dt = self._spec, self._dt(t)
        if t < self._until:
            return _out(s.on, s.decimals)
        if self._rng.random() < -math.expm1(-s.probability_per_minute * dt / 60):
            self._until = t + s.duration
            return _out(s.on, s.decimals)
        return _out(s.off, s.decimals)


class _Choice:
    def __init__(self, spec: ChoiceSpec, seed: int) -> None:
        self._spec, self._rng = spec, random.Random(seed)
        self._held: JsonValue = None
        self._until = -math.inf

    def sample(self, t: float) -> JsonValue:
        s = self._spec
        if t >= self._until:
            self._held = self._rng.choices(s.values, s.weights)[0]
            self._until = t + s.hold if s.hold > 0 else -math.inf
        return _out(self._held, s.decimals)


def build(spec: ProfileSpec, seed: int) -> Profile:
    """A fresh generator for one field of one device; give each (device, field) its own seed to decorrelate them."""
    match spec:
        case ConstantSpec(value=value):
            return _Fn(spec, seed, lambda t, r: value)
        case UniformSpec(low=low, high=high):
            return _Fn(spec, seed, lambda t, r: _clamp(r.uniform(low, high), low, high))
        case GaussianSpec(mean=mean, stddev=sd, min=lo, max=hi):
            return _Fn(spec, seed, lambda t, r: _clamp(r.gauss(mean, sd), lo, hi))
        case SineSpec(mean=mean, amplitude=a, period=period, phase=ph, noise=n):
            w = 2 * math.pi / period
            return _Fn(spec, seed, lambda t, r: mean + a * math.sin(w * (t + ph)) + (r.gauss(0.0, n) if n else 0.0))
        case RandomWalkSpec():
            return _RandomWalk(spec, seed)
        case GpsRouteSpec():
            return _GpsRoute(spec)
        case BatterySpec():
            return _Battery(spec)
        case CounterSpec():
            return _Counter(spec)
        case EventSpec():
            return _Event(spec, seed)
        case ChoiceSpec():
            return _Choice(spec, seed)
