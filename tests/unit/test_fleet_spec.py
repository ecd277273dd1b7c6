"""Fleet files: validation with file/line/field errors, expansion into devices, shards and seeds."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.profiles import BatterySpec, ChoiceSpec, CounterSpec, SineSpec
from devices.spec import (
    DeviceSpec,
    FaultSpec,
    FleetFileError,
    FleetSpec,
    expand,
    load_fleet,
    parse_fleet,
)
from devices.template import Template, compile_template

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "fleets"

FLEET = """\
fleet: demo
seed: 42
device_types:
  - name: thermostat
    count: 6
    thing_type: Thermostat
    thing_name: "{fleet}-thermo-{i:04d}"
    attributes:
      site: "site-{i % 4}"
      rack: "rack-{i // 2 + 1}"
    interval: 500ms
    payload:
      seq: "{seq}"
      name: "{thing_name}"
      temperature: {profile: sine, mean: 24, amplitude: 8, period: 60}
      nested: {values: [1, "{i}", {level: {profile: counter}}], flag: true, none: null}
    shadow:
      initial: {mode: auto, target: 21, id: "{ordinal}"}
      delta_delay: [0.1, 0.4]
    commands:
      topic: "cmd/{thing_name}/#"
      reply_topic: "cmd/{thing_name}/reply"
  - name: tracker
    count: 4
    client_id: "{thing_name}-client"
    topic: "fleet/{fleet}/{type}/{i}"
    interval: 2m
    jitter: 0.5
    qos: 0
    payload:
      battery: {profile: battery, start: 50}
    faults:
      clock_skew: 30
      offline_windows: [{start: 10, duration: 5, every: 60}]
"""


def _error(text: str, source: str = "fleet.yaml") -> FleetFileError:
    with pytest.raises(FleetFileError) as caught:
        parse_fleet(textwrap.dedent(text), source)
    return caught.value


# --- expansion ------------------------------------------------------------------------------------


def test_valid_file_expands_in_fleet_order() -> None:
    devices = expand(parse_fleet(FLEET))
    assert [d.ordinal for d in devices] == list(range(10))
    assert [(d.type_name, d.index, d.count) for d in devices[4:7]] == [
        ("thermostat", 4, 6),
        ("thermostat", 5, 6),
        ("tracker", 0, 4),
    ]
    first = devices[0]
    assert first.thing_name == "demo-thermo-0000"
    assert first.client_id == "demo-thermo-0000"
    assert first.thing_type == "Thermostat"
    assert first.topic == "dt/demo/thermostat/demo-thermo-0000/telemetry"
    assert first.interval == 0.5
    assert first.jitter == 0.1
    assert first.qos == 1
    assert first.command_topic == "cmd/demo-thermo-0000/#"
    assert first.reply_topic == "cmd/demo-thermo-0000/reply"
    assert [d.attributes for d in devices[2:4]] == [
        {"site": "site-2", "rack": "rack-2"},
        {"site": "site-3", "rack": "rack-2"},
    ]
    tracker = devices[7]
    assert tracker.thing_name == "demo-tracker-0001"
    assert tracker.client_id == "demo-tracker-0001-client"
    assert tracker.topic == "fleet/demo/tracker/1"
    assert (tracker.interval, tracker.jitter, tracker.qos) == (120.0, 0.5, 0)
    assert tracker.thing_type is None
    assert tracker.shadow is None
    assert tracker.command_topic is None
    assert tracker.attributes == {}


def test_payload_keeps_profiles_and_compiled_templates() -> None:
    device = expand(parse_fleet(FLEET))[3]
    payload = device.payload
    assert isinstance(payload["temperature"], SineSpec)
    assert payload["temperature"].period == 60
    seq = payload["seq"]
    assert isinstance(seq, Template)
    assert seq.render_value({**device.variables(), "seq": 9, "timestamp": 0}) == 9
    nested = payload["nested"]
    assert isinstance(nested, dict)
    values = nested["values"]
    assert isinstance(values, list)
    assert values[0] == 1
    assert isinstance(values[1], Template)
    assert isinstance(values[2], dict)
    assert isinstance(values[2]["level"], CounterSpec)
    assert nested["flag"] is True
    assert nested["none"] is None
    assert device.shadow is not None
    initial = device.shadow.initial
    assert isinstance(initial["id"], Template)
    assert initial["id"].render_value(device.variables()) == 3
    assert initial["target"] == 21
    assert device.shadow.delta_delay == (0.1, 0.4)
    assert device.shadow.apply_delta is True
    assert device.shadow.name is None


def test_defaults() -> None:
    spec = parse_fleet("fleet: tiny\ndevice_types:\n  - {name: probe, count: 2}\n")
    assert spec.render_policy_name() == "edgesim-fleet-tiny"
    assert spec.seed == 0
    assert spec.device_count == 2
    device = expand(spec)[1]
    assert device.thing_name == "tiny-probe-0001"
    assert device.client_id == device.thing_name
    assert device.topic == "dt/tiny/probe/tiny-probe-0001/telemetry"
    assert (device.interval, device.jitter, device.qos) == (5.0, 0.1, 1)
    assert device.faults == FaultSpec()
    assert device.faults.reconnect_after == (1.0, 5.0)
    assert device.clock_skew == 0.0
    assert device.payload == {}
    custom = parse_fleet("fleet: tiny\npolicy_name: 'p-{fleet}'\ndevice_types:\n  - {name: probe, count: 0}\n")
    assert custom.render_policy_name() == "p-tiny"
    assert expand(custom) == []


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("500ms", 0.5), ("5s", 5.0), ("2m", 120.0), ("1h", 3600.0), ("1.5s", 1.5), ("250", 250.0), (3, 3.0), (0.2, 0.2)],
)
def test_interval_strings(value: object, seconds: float) -> None:
    spec = FleetSpec.model_validate({"fleet": "f", "device_types": [{"name": "a", "count": 1, "interval": value}]})
    assert spec.device_types[0].interval == seconds


@pytest.mark.parametrize("value", ["5x", "fast", "-1s", "0s", 0, True, ""])
def test_bad_intervals(value: object) -> None:
    err = _error(f"fleet: f\ndevice_types:\n  - name: a\n    count: 1\n    interval: {value!r}\n")
    assert [(p.line, p.path) for p in err.problems] == [(5, "device_types[0].interval")]


def test_seeds_are_deterministic_and_distinct() -> None:
    seeds = [d.seed for d in expand(parse_fleet(FLEET))]
    assert seeds == [d.seed for d in expand(parse_fleet(FLEET))]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**64 for s in seeds)
    reseeded = [d.seed for d in expand(parse_fleet(FLEET.replace("seed: 42", "seed: 43")))]
    assert not set(seeds) & set(reseeded)


def test_clock_skew_is_fixed_per_device_and_bounded() -> None:
    devices = expand(parse_fleet(FLEET))
    skews = [d.clock_skew for d in devices if d.type_name == "tracker"]
    assert skews == [d.clock_skew for d in expand(parse_fleet(FLEET)) if d.type_name == "tracker"]
    assert all(-30 <= s <= 30 for s in skews)
    assert len(set(skews)) == len(skews)
    assert all(d.clock_skew == 0 for d in devices if d.type_name == "thermostat")


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 12).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))))
def test_shards_partition_the_fleet(shard: tuple[int, int]) -> None:
    spec = parse_fleet(FLEET)
    everything = expand(spec)
    k, n = shard
    mine = expand(spec, shard)
    assert [d.ordinal for d in mine] == [o for o in range(len(everything)) if o % n == k]
    union = sorted((d for j in range(n) for d in expand(spec, (j, n))), key=lambda d: d.ordinal)
    assert union == everything


@pytest.mark.parametrize("shard", [(1, 1), (-1, 2), (0, 0), (3, 2)])
def test_bad_shard(shard: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="0 <= k < n"):
        expand(parse_fleet(FLEET), shard)


def test_expansion_of_a_model_built_in_code() -> None:
    spec = FleetSpec.model_validate({"fleet": "f", "device_types": [{"name": "a", "count": 3}]})
    assert [d.thing_name for d in expand(spec)] == ["f-a-0000", "f-a-0001", "f-a-0002"]
    assert isinstance(expand(spec)[0], DeviceSpec)


@pytest.mark.parametrize("name", ["demo", "smoke", "faults", "mqtt5"])
def test_example_fleets_load_and_expand(name: str) -> None:
    spec = load_fleet(EXAMPLES / f"{name}.yaml")
    devices = expand(spec)
    assert devices
    assert len({d.thing_name for d in devices}) == len(devices)
    assert all(d.topic for d in devices)


def test_demo_fleet_shape() -> None:
    devices = expand(load_fleet(EXAMPLES / "demo.yaml"))
    assert 80 <= len(devices) <= 120
    assert {d.type_name for d in devices} == {"thermostat", "tracker", "door"}
    thermostat = devices[0]
    assert isinstance(thermostat.payload["temperature"], SineSpec)
    assert isinstance(thermostat.payload["battery"], BatterySpec)
    assert thermostat.shadow is not None
    assert thermostat.shadow.apply_delta
    assert thermostat.shadow.initial == {"mode": compile_template("auto"), "target": 21}
    door = next(d for d in devices if d.type_name == "door")
    assert isinstance(door.payload["status"], ChoiceSpec)
    assert all(d.topic == f"dt/demo/{d.type_name}/{d.thing_name}/telemetry" for d in devices)


def test_faults_fleet_enables_every_fault() -> None:
    devices = expand(load_fleet(EXAMPLES / "faults.yaml"))
    for device in devices:
        faults = device.faults
        assert faults.disconnect_per_hour > 0
        assert faults.offline_windows
        assert faults.clock_skew > 0
        assert faults.malformed_fraction > 0
        assert faults.oversized_fraction > 0
        assert device.clock_skew != 0


def test_smoke_fleet_is_small_and_fast() -> None:
    devices = expand(load_fleet(EXAMPLES / "smoke.yaml"))
    assert len(devices) <= 12
    assert all(d.interval <= 0.2 for d in devices)
    assert any(d.shadow is not None and d.shadow.apply_delta for d in devices)


def test_toml_fleet(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(
        'fleet = "t"\n\n[[device_types]]\nname = "a"\ncount = 2\ninterval = "1s"\n\n'
        '[device_types.payload]\nseq = "{seq}"\ntemp = { profile = "uniform", low = 1, high = 2 }\n'
    )
    devices = expand(load_fleet(path))
    assert [d.thing_name for d in devices] == ["t-a-0000", "t-a-0001"]
    path.write_text('fleet = "t"\n\n[[device_types]]\nname = "a"\ncount = -2\n')
    with pytest.raises(FleetFileError) as caught:
        load_fleet(path)
    assert str(caught.value) == f"{path}: device_types[0].count: Input should be greater than or equal to 0"


# --- errors point at file, line and field ---------------------------------------------------------


def test_bad_profile_field_nested_in_payload(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(
        "fleet: demo\n"
        "device_types:\n"
        "  - name: thermostat\n"
        "    count: 2\n"
        "    payload:\n"
        "      device: '{thing_name}'\n"
        "      readings:\n"
        "        temperature:\n"
        "          profile: sine\n"
        "          mean: 20\n"
        "          period: 0\n"
    )
    with pytest.raises(FleetFileError) as caught:
        load_fleet(path)
    assert str(caught.value) == (
        f"{path}:11: device_types[0].payload.readings.temperature.period: Input should be greater than 0"
    )
    problem = caught.value.problems[0]
    assert (problem.file, problem.line, problem.path) == (
        str(path),
        11,
        "device_types[0].payload.readings.temperature.period",
    )


def test_bad_profile_inside_a_list_and_unknown_profile() -> None:
    err = _error(
        """\
        fleet: demo
        device_types:
          - name: a
            count: 1
            shadow:
              initial:
                items:
                  - 1
                  - {profile: choice, values: []}
            payload:
              x: {profile: sinus}
        """
    )
    assert [(p.line, p.path) for p in err.problems] == [
        (9, "device_types[0].shadow.initial.items[1].values"),
        (11, "device_types[0].payload.x.profile"),
    ]
    assert "'sinus'" in err.problems[1].message


def test_missing_required_field_points_at_the_mapping() -> None:
    err = _error(
        """\
        fleet: demo
        device_types:
          - name: ok
            count: 1
          - name: thermostat
            interval: 5
        """
    )
    assert str(err) == "fleet.yaml:5: device_types[1].count: Field required"
    missing_profile_field = _error(
        "fleet: d\ndevice_types:\n  - name: a\n    count: 1\n    payload:\n      door:\n        profile: event\n"
    )
    assert (
        str(missing_profile_field)
        == "fleet.yaml:6: device_types[0].payload.door.probability_per_minute: Field required"
    )
    assert str(_error("seed: 1\ndevice_types: []\n")).splitlines() == [
        "fleet.yaml:1: fleet: Field required",
        "fleet.yaml:2: device_types: List should have at least 1 item after validation, not 0",
    ]


def test_unknown_key_is_a_typo_error() -> None:
    err = _error(
        """\
        fleet: demo
        device_types:
          - name: thermostat
            count: 1
            intervall: 5
            shadow:
              apply_delta: true
              initail:
                mode: auto
        """
    )
    assert [(p.line, p.path) for p in err.problems] == [
        (5, "device_types[0].intervall"),
        (8, "device_types[0].shadow.initail"),
    ]
    assert err.problems[0].message == "unknown field 'intervall' (did you mean 'interval'?)"
    assert str(err).splitlines()[1].startswith("fleet.yaml:8: device_types[0].shadow.initail: unknown field 'initail'")
    top = _error("fleet: demo\nfleet_seed: 3\ndevice_types:\n  - {name: a, count: 1}\n")
    assert str(top).startswith("fleet.yaml:2: fleet_seed: unknown field 'fleet_seed'")


def test_bad_template_variable_names_the_field() -> None:
    err = _error(
        """\
        fleet: demo
        device_types:
          - name: thermostat
            count: 1
            thing_name: "{fleet}-{idx}"
            attributes:
              site: "site-{seq}"
            payload:
              reading:
                label: "{n}-{seq}"
        """
    )
    assert [(p.line, p.path) for p in err.problems] == [
        (5, "device_types[0].thing_name"),
        (7, "device_types[0].attributes.site"),
        (10, "device_types[0].payload.reading.label"),
    ]
    assert "unknown variable 'idx'" in err.problems[0].message
    assert "column 10" in err.problems[0].message
    assert "unknown variable 'seq'" in err.problems[1].message
    assert "unknown variable 'n'" in err.problems[2].message
    bad_syntax = _error("fleet: d\ndevice_types:\n  - name: a\n    count: 1\n    topic: 'dt/{i +}'\n")
    assert bad_syntax.problems[0].path == "device_types[0].topic"
    assert bad_syntax.problems[0].line == 5


def test_yaml_syntax_error_has_the_line() -> None:
    err = _error("fleet: demo\ndevice_types:\n  - name: a\n   count: 1\n")
    assert len(err.problems) == 1
    assert err.problems[0].line == 4
    assert str(err).startswith("fleet.yaml:4: YAML: ")
    unclosed = _error("fleet: demo\ndevice_types:\n  - name: 'a\n    count: 1\n")
    assert unclosed.problems[0].line in (3, 5)
    assert "quoted scalar" in str(unclosed)


def test_duplicate_thing_names_name_the_device_types() -> None:
    err = _error(
        """\
        fleet: demo
        device_types:
          - name: left
            count: 3
            thing_name: "sensor-{i}"
          - name: right
            count: 2
            thing_name: "sensor-{i}"
        """
    )
    assert len(err.problems) == 1
    assert str(err) == (
        "fleet.yaml:8: device_types[1].thing_name: duplicate thing name 'sensor-0': "
        "device types 'left' (i=0) and 'right' (i=0); 2 clashes between them in all"
    )
    same_type = _error("fleet: d\ndevice_types:\n  - name: a\n    count: 2\n    thing_name: fixed\n")
    assert "duplicate thing name 'fixed': device types 'a' (i=0) and 'a' (i=1)" in str(same_type)
    clients = _error(
        "fleet: d\ndevice_types:\n  - {name: a, count: 2}\n  - name: b\n    count: 1\n    client_id: d-a-0001\n"
    )
    assert str(clients) == (
        "fleet.yaml:6: device_types[1].client_id: duplicate client id 'd-a-0001': device types 'a' (i=1) and 'b' (i=0)"
    )


def test_rendered_values_are_checked() -> None:
    err = _error(
        """\
        fleet: d
        device_types:
          - name: a
            count: 2
            thing_name: "bad name {i}"
          - name: b
            count: 1
            topic: "t/+/{i}"
            attributes: {note: "has space"}
          - name: a
            count: 1
            thing_name: "x-{i}"
        """
    )
    assert [(p.line, p.path) for p in err.problems] == [
        (5, "device_types[0].thing_name"),
        (8, "device_types[1].topic"),
        (9, "device_types[1].attributes.note"),
        (10, "device_types[2].name"),
    ]
    assert "renders 'bad name 0' for i=0" in err.problems[0].message
    assert "duplicate device type name" in err.problems[3].message


def test_other_value_errors() -> None:
    err = _error(
        """\
        fleet: "bad fleet"
        device_types:
          - name: a
            count: 1.5
            jitter: 2
            qos: 2
            attributes: {"bad key": x}
            shadow: {name: "no/slash"}
            faults:
              reconnect_after: [5, 1]
              offline_windows: [{start: 1, duration: 10, every: 5}]
              malformed_fraction: 1.5
        """
    )
    assert [(p.line, p.path) for p in err.problems] == [
        (1, "fleet"),
        (4, "device_types[0].count"),
        (5, "device_types[0].jitter"),
        (6, "device_types[0].qos"),
        (7, 'device_types[0].attributes["bad key"]'),
        (8, "device_types[0].shadow.name"),
        (10, "device_types[0].faults.reconnect_after"),
        (11, "device_types[0].faults.offline_windows[0]"),
        (12, "device_types[0].faults.malformed_fraction"),
    ]


def test_yaml_structure_problems() -> None:
    dup = _error("fleet: d\ndevice_types:\n  - name: a\n    count: 1\n    count: 2\n")
    assert str(dup) == "fleet.yaml:5: device_types[0].count: duplicate key (first defined on line 4)"
    assert "recursive alias" in str(_error("fleet: d\ndevice_types: &a [*a]\n"))
    assert "unsupported YAML tag" in str(_error("fleet: d\ndevice_types:\n  - {name: a, count: !!binary aGk=}\n"))
    assert str(_error("")) == "fleet.yaml: the file is empty; it needs 'fleet' and 'device_types'"
    assert str(_error("- a\n")).startswith("fleet.yaml:1: Input should be a valid dictionary")


def test_anchors_merge_keys_and_x_keys() -> None:
    spec = parse_fleet(
        textwrap.dedent(
            """\
            x-common: &common
              count: 2
              interval: 250ms
              payload: {on: {profile: event, probability_per_minute: 1, on: open, off: closed}}
            fleet: d
            device_types:
              - <<: *common
                name: a
              - <<: *common
                name: b
                count: 1
            """
        )
    )
    devices = expand(spec)
    assert [(d.thing_name, d.interval) for d in devices] == [("d-a-0000", 0.25), ("d-a-0001", 0.25), ("d-b-0000", 0.25)]
    event = devices[0].payload["on"]  # YAML 1.1 would read the key `on` as True; keys stay text
    assert getattr(event, "on", None) == "open"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(FleetFileError, match="cannot read the file"):
        load_fleet(tmp_path / "missing.yaml")


_YAML_PIECES = st.sampled_from(
    [
        *("fleet: d\n", "device_types:\n", "  - name: a\n", "    count: 2\n", "    payload:\n", "      t: ", "{", "}"),
        *("[", "]", "profile: sine", "period: -1", ", ", "&a ", "*a", "<<: ", "'", '"', "\t", "- ", ": ", "\n"),
        *("    thing_name: '{i}'\n", "!!binary ", "!x ", "{i +}", "~", "on", "1e3", "  ", "#", "? ", "---\n"),
    ]
)


@settings(max_examples=50, deadline=None)
@given(st.one_of(st.lists(_YAML_PIECES, max_size=16).map("".join), st.text(max_size=60)))
def test_any_text_parses_or_raises_fleet_file_error(text: str) -> None:
    try:
        spec = parse_fleet(text, "fuzz.yaml")
    except FleetFileError as err:
        assert err.problems
        # YAML breaks lines at \r as well as \n (and \x85, \u2028, \u2029); splitlines() counts a superset of those.
        assert all(p.file == "fuzz.yaml" and 0 <= p.line <= len(text.splitlines()) + 2 for p in err.problems)
        return
    assert isinstance(spec, FleetSpec)


# --- MQTT 5 -----------------------------------------------------------------------------------------


def test_mqtt5_device_type_with_user_properties_aliases_and_session_expiry() -> None:
    spec = parse_fleet(
        textwrap.dedent(
            """\
            fleet: v5
            device_types:
              - name: meter
                count: 3
                protocol: mqtt5
                user_properties: {site: "site-{i % 2}", seq: "{seq}", fw: "1.4"}
                content_type: application/json
                topic_aliases: false
                session_expiry: 2h
              - name: legacy
                count: 1
            """
        )
    )
    meter, _, last, legacy = expand(spec)
    assert (meter.protocol, meter.content_type, meter.topic_aliases, meter.session_expiry) == (
        5, "application/json", False, 7200,
    )  # fmt: skip
    assert [(key, t.render({**last.variables(), "seq": 7, "timestamp": 0})) for key, t in last.user_properties] == [
        ("site", "site-0"),
        ("seq", "7"),
        ("fw", "1.4"),
    ]
    assert (legacy.protocol, legacy.user_properties, legacy.session_expiry) == (4, (), 0)


def test_mqtt5_fields_need_protocol_mqtt5_and_are_checked() -> None:
    err = _error(
        """\
        fleet: d
        device_types:
          - name: a
            count: 1
            user_properties: {k: v}
            session_expiry: 60
          - name: b
            count: 1
            protocol: mqtt7
          - name: c
            count: 1
            protocol: mqtt5
            session_expiry: 700000
            user_properties: {bad: "{nope}", "": x}
        """
    )
    problems = [(p.line, p.path) for p in err.problems]
    assert problems[:3] == [
        (5, "device_types[0].user_properties"),
        (6, "device_types[0].session_expiry"),
        (9, "device_types[1].protocol"),
    ]
    assert "needs `protocol: mqtt5`" in err.problems[0].message
    assert (13, "device_types[2].session_expiry") in problems  # above AWS's 7 days
    assert any(path.startswith("device_types[2].user_properties") for _, path in problems)
    assert "nope" in str(err)
    ratio = _error(
        """\
        fleet: d
        device_types:
          - name: e
            count: 2
            protocol: mqtt5
            user_properties: {ratio: "{10 // i}"}
        """
    )
    assert str(ratio).startswith("fleet.yaml:6: device_types[0].user_properties.ratio: cannot render")
