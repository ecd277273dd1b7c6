"""Every command and subcommand, given the mistakes a new user makes (a missing file, an unreadable one, bad
JSON/YAML, no gateway), answers with one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from gateway.cli import app, main

ROOT = Path(__file__).resolve().parents[2]


def _dead_endpoint() -> str:
    """A loopback port where nothing listens (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _leaf_commands() -> set[str]:
    out: set[str] = set()

    def walk(command: Any, prefix: str) -> None:
        if hasattr(command, "commands"):  # a group
            for name, sub in command.commands.items():
                walk(sub, f"{prefix} {name}".strip())
        else:
            out.add(prefix)

    walk(typer.main.get_command(app), "")
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("cli-errors")
    (tmp / "bad.json").write_text('{"Version": "2012-10-17", "Statement": [\n  {"Effect": }\n]}')
    (tmp / "bad.yaml").write_text("fleet: demo\ndevice_types: [\n  - name: x\n")
    (tmp / "rule.sql").write_text("SELECT * FROM 'a/b'")
    (tmp / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    (tmp / "ok.json").write_text('{"Version": "2012-10-17", "Statement": []}')
    (tmp / "handler.py").write_text("def handler(event, context):\n    return event\n")
    (tmp / "rules-bad").mkdir()
    (tmp / "rules-bad" / "broken.json").write_text("{")
    (tmp / "a-file").write_text("not a folder")
    (tmp / "edge-bad-handler.yaml").write_text(
        "components_dir: .\ncomponents:\n  - name: c1\n    handler: no_such_module.handle\n"
    )
    unreadable = tmp / "unreadable.json"
    unreadable.write_text("{}")
    unreadable.chmod(0)
    return {
        "missing": str(tmp / "missing.json"),
        "missing_yaml": str(tmp / "missing.yaml"),
        "dir": str(tmp / "rules-bad"),  # a directory where a file is expected: unreadable even for root
        "unreadable": str(unreadable),
        "bad_json": str(tmp / "bad.json"),
        "bad_yaml": str(tmp / "bad.yaml"),
        "rule": str(tmp / "rule.sql"),
        "cert": str(tmp / "cert.pem"),
        "ok_json": str(tmp / "ok.json"),
        "handler": str(tmp / "handler.py"),
        "a_file": str(tmp / "a-file"),
        "edge_bad_handler": str(tmp / "edge-bad-handler.yaml"),
        "tmp": str(tmp),
    }


def _cases(f: dict[str, str]) -> dict[str, list[list[str]]]:
    """Per command path: invocations that must fail cleanly. The environment points every command at a dead gateway."""
    unreadable = [] if os.geteuid() == 0 else [f["unreadable"]]  # root reads a mode-0 file; a directory still fails
    bad_files = [f["missing"], f["dir"], *unreadable]
    c: dict[str, list[list[str]]] = {
        "up": [["up", "--rules", f["missing"]], ["up", "--api-port", "70000"]],
        "demo": [["demo", "--fleet", p] for p in [f["missing_yaml"], f["dir"], f["bad_yaml"]]],
        "examples": [["examples", f["tmp"]]],
        "certs init": [["certs", "init", "--certs-dir", f["a_file"]]],
        "certs create": [["certs", "create", "--thing", "t1"], ["certs", "create", "--thing", "t1", "--policy", "p"]],
        "certs register": [*[["certs", "register", p] for p in bad_files], ["certs", "register", f["cert"]]],
        "certs register-ca": [*[["certs", "register-ca", p] for p in bad_files], ["certs", "register-ca", f["cert"]]],
        "policies create": [
            *[["policies", "create", "p1", p] for p in [*bad_files, f["bad_json"]]],
            ["policies", "create", "p1", f["ok_json"]],
        ],
        "policies update": [
            *[["policies", "update", "p1", p] for p in [*bad_files, f["bad_json"]]],
            ["policies", "update", "p1", f["ok_json"]],
        ],
        "shadow update": [
            *[["shadow", "update", "t1", "@" + p] for p in [*bad_files, f["bad_json"]]],
            ["shadow", "update", "t1", "{not json"],
            ["shadow", "update", "t1", '{"state": {}}'],
        ],
        "rules test": [
            *[["rules", "test", p, "--topic", "a/b", "--payload", "{}"] for p in [*bad_files, f["bad_json"]]],
            ["rules", "test", f["rule"], "--topic", "a/b", "--payload", "@" + f["missing"]],
            ["rules", "test", f["rule"], "--topic", "a/b", "--payload", "{}", "--run"],
        ],
        "rules create": [
            *[["rules", "create", p] for p in [*bad_files, f["bad_json"]]],
            ["rules", "create", f["rule"]],
        ],
        "rules check": [["rules", "check", f["missing"]], ["rules", "check", f["a_file"]]],
        "fleet validate": [["fleet", "validate", p] for p in [f["missing_yaml"], f["dir"], f["bad_yaml"]]],
        "fleet run": [
            *[["fleet", "run", p] for p in [f["missing_yaml"], f["bad_yaml"]]],
            ["fleet", "run", str(ROOT / "examples/fleets/smoke.yaml"), "--duration", "1"],
        ],
        "edge run": [
            *[["edge", "run", "e1", "--config", p] for p in [f["missing_yaml"], f["dir"], f["bad_yaml"]]],
            ["edge", "run", "e1", "--config", f["edge_bad_handler"]],
        ],
        "edge validate": [
            ["edge", "validate", p] for p in [f["missing_yaml"], f["dir"], f["bad_yaml"], f["edge_bad_handler"]]
        ],
        "streams tail": [
            *[["streams", "tail", p, "--stream", "s1", "--once"] for p in bad_files],
            ["streams", "tail", f["a_file"], "--stream", "s1", "--once", "--from", "start"],
        ],
        "edge offline": [["edge", "offline", "nobody"]],
        "edge online": [["edge", "online", "nobody"]],
        "edge status": [["edge", "status", "nobody"]],
        "edge device-cert": [["edge", "device-cert", "nobody", "d1"]],
        "functions deploy": [
            ["functions", "deploy", "f1", f["missing"][:-5] + ".py:handler"],
            ["functions", "deploy", "f1", f["handler"] + ":handler"],
        ],
        "functions invoke": [["functions", "invoke", "f1", "--payload", "{bad"], ["functions", "invoke", "f1"]],
        "jobs create": [
            *[["jobs", "create", "j1", "--thing", "t1", "--document", "@" + p] for p in bad_files],
            ["jobs", "create", "j1", "--document", "{}"],
            ["jobs", "create", "j1", "--group", "g", "--document", "{}"],
        ],
        "jobs executions": [["jobs", "executions"], ["jobs", "executions", "j1"]],
        "s3 cat": [["s3", "cat", "no-bucket/no-key"]],
        "s3 ls": [["s3", "ls", "no-bucket"]],
    }
    simple = {  # commands whose only input is the gateway
        "certs activate": ["a" * 64],
        "certs deactivate": ["a" * 64],
        "certs revoke": ["a" * 64],
        "certs list": [],
        "certs describe": ["a" * 64],
        "things create": ["t1"],
        "things describe": ["t1"],
        "things list": [],
        "things update": ["t1", "--attribute", "a=1"],
        "things delete": ["t1"],
        "things create-type": ["ty"],
        "things create-group": ["g"],
        "things add-to-group": ["g", "t1"],
        "policies get": ["p1"],
        "policies list": [],
        "policies attach": ["p1", "g"],
        "policies detach": ["p1", "g"],
        "policies delete": ["p1"],
        "shadow get": ["t1"],
        "shadow delete": ["t1"],
        "shadow list": ["t1"],
        "rules list": [],
        "rules get": ["r"],
        "rules delete": ["r"],
        "rules enable": ["r"],
        "rules disable": ["r"],
        "rules stats": [],
        "streams create": ["s1"],
        "streams list": [],
        "streams read": ["s1"],
        "queues create": ["q1"],
        "queues list": [],
        "functions list": [],
        "functions logs": ["f1"],
        "jobs list": [],
        "jobs describe": ["j1"],
        "jobs cancel": ["j1"],
        "jobs delete": ["j1"],
        "cloudwatch logs": [],
        "cloudwatch metrics": [],
    }
    for command, args in simple.items():
        c[command] = [[*command.split(), *args]]
    return c


@contextlib.contextmanager
def _environment(tmp: Path, endpoint: str) -> Iterator[None]:
    saved = dict(os.environ)
    cwd = Path.cwd()
    os.environ.update(
        {"EDGESIM_ENDPOINT": endpoint, "EDGESIM_HOME": str(tmp / "data"), "EDGESIM_CERTS": str(tmp / "certs")}
    )
    os.chdir(tmp)
    try:
        yield
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(saved)


def _invoke(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code
    return int(code or 0), out.getvalue(), err.getvalue()


def test_every_command_answers_mistakes_in_one_line(files: dict[str, str]) -> None:
    cases = _cases(files)
    assert _leaf_commands() <= set(cases), f"commands without a mistake case: {_leaf_commands() - set(cases)}"
    endpoint = _dead_endpoint()
    failures = []
    with _environment(Path(files["tmp"]), endpoint):
        for _, invocations in sorted(cases.items()):
            for argv in invocations:
                code, out, err = _invoke([*argv, "--endpoint", endpoint] if _takes_endpoint(argv) else argv)
                text = out + err
                lines = [line for line in err.strip().splitlines() if line.strip()]
                ok = code != 0 and "Traceback" not in text and lines
                if code == 1:  # the command's own error: exactly one line
                    ok = ok and len(lines) == 1 and lines[0].startswith("error")
                elif code == 2:  # a usage error from the command line parser: click's own short report
                    ok = ok and "Error" in err and len(lines) <= 8
                if not ok:
                    failures.append(f"{' '.join(argv)} -> exit {code}\n{text}")
    assert not failures, "\n\n".join(failures)


def _takes_endpoint(argv: list[str]) -> bool:
    command: Any = typer.main.get_command(app)
    for word in argv:
        if not hasattr(command, "commands") or word not in command.commands:
            break
        command = command.commands[word]
    return any("--endpoint" in p.opts for p in command.params)


def test_a_port_in_use_is_one_line_naming_its_flag(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for command in (["up"], ["demo", "--duration", "1"]):
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    *command,
                    "--api-port",
                    str(port),
                    "--mqtts-port",
                    "0",
                    "--wss-port",
                    "0",
                    "--https-port",
                    "0",
                ],
                cwd=tmp_path,
                env={
                    **os.environ,
                    "EDGESIM_HOME": str(tmp_path / "data"),
                    "EDGESIM_CERTS": str(tmp_path / "certs"),
                    "PYTHONPATH": str(ROOT),
                },
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 1, done.stderr
            expected = f"error: port {port} (--api-port) is in use; choose another or 0 for any free port"
            assert lines[-1:] == [expected], done.stderr
            assert "Traceback" not in done.stderr


def test_version() -> None:
    from gateway import __version__

    code, out, _ = _invoke(["--version"])
    assert code == 0 and out.strip() == f"edgesim {__version__}"


def test_every_command_has_help_in_click_conventions() -> None:
    for command in sorted(_leaf_commands()):
        code, out, err = _invoke([*command.split(), "--help"])
        assert code == 0, (command, err)
        usage = next(line for line in out.splitlines() if "Usage:" in line)
        assert "{" not in usage, (command, usage)
        assert "<bool>" not in out and "<str>" not in out, (command, out)


def test_edge_validate_accepts_the_example() -> None:
    code, out, err = _invoke(["edge", "validate", str(ROOT / "examples/edge/edge.yaml")])
    assert code == 0, err
    assert "ok (1 component(s)" in out


def test_a_401_names_edgesim_api_token(tmp_path: Path) -> None:
    from conftest import GatewayProcess

    gw = GatewayProcess(tmp_path, extra_args=["--api-token", "sesame"]).start()
    try:
        endpoint = f"http://127.0.0.1:{gw.ports['api']}"
        with _environment(tmp_path, endpoint):
            for argv in (["things", "list"], ["rules", "stats"], ["functions", "logs", "f1"]):
                code, _, err = _invoke(argv)
                assert code == 1 and "set EDGESIM_API_TOKEN" in err and len(err.strip().splitlines()) == 1, err
            os.environ["EDGESIM_API_TOKEN"] = "sesame"
            for argv in (["things", "list", "--json"], ["rules", "stats", "--json"]):
                code, out, err = _invoke(argv)
                assert code == 0, err
                json.loads(out)
    finally:
        gw.stop()


def test_edge_run_port_in_use_names_its_flag(tmp_path: Path) -> None:
    from conftest import GatewayProcess

    (tmp_path / "gw").mkdir()
    gw = GatewayProcess(tmp_path / "gw").start()
    try:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            done = subprocess.run(
                [sys.executable, "-m", "gateway", "edge", "run", "e1",
                 "--config", str(ROOT / "examples/edge/edge.yaml"), "--local-port", str(port), "--endpoint", f"http://127.0.0.1:{gw.ports['api']}",
                 "--target", f"mqtts://127.0.0.1:{gw.ports['mqtts']}", "--ca", str(gw.ca_file),
                 "--certs-dir", str(gw.certs_dir), "--data-dir", str(tmp_path / "edge"), "--duration", "1"],
                cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )  # fmt: skip
        assert done.returncode == 1, done.stderr
        expected = f"error: port {port} (--local-port) is in use; choose another or 0 for any free port"
        assert done.stderr.strip().splitlines()[-1] == expected, done.stderr
        assert "Traceback" not in done.stderr
    finally:
        gw.stop()
