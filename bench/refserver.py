"""A reference server (moto_server, kinesalite) run as a child process on an ephemeral 127.0.0.1 port."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

HOST = "127.0.0.1"


class RefServer:
    """Subclasses say how to launch (`argv`); this starts it, waits for the port, tails its log and stops it."""

    name = "server"
    start_timeout_s = 30.0

    def __init__(self, home: Path) -> None:
        self.home = home
        self.log_path = home / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            self.port = int(sock.getsockname()[1])
        argv = self.argv()
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child; closed below
        try:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log)
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {self.log_tail()}")
            with socket.socket() as sock:
                if sock.connect_ex((HOST, self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not listen in time: {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
