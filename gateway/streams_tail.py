"""Following a growing log file as the Kinesis Agent does: complete lines only, rotation (rename or copy-truncate)
and a checkpoint (the file's inode and the offset shipped so far), so a restart carries on where it stopped.

The shell ships each batch and then calls `commit()`; only committed offsets are checkpointed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

MAX_LINE_BYTES = 1024 * 1024 - 256  # a Kinesis record holds at most 1 MiB, partition key included
HEAD_BYTES = 64  # the file's first bytes: when they change, it was truncated and rewritten (copy-truncate)


@dataclass
class Position:
    inode: int
    offset: int


class LogTail:
    def __init__(self, path: Path, checkpoint: Path, from_start: bool) -> None:
        self.path = Path(path)
        self.checkpoint = Path(checkpoint)
        self._handle: IO[bytes] | None = None
        self._inode = 0
        self._pending = b""  # an incomplete last line, kept until its newline arrives
        self._read_to = 0  # offset in the current file up to which lines were handed out
        self._head = b""  # the first bytes already read, to notice a rewrite that is not shorter
        self._committed: Position | None = None
        self._open(from_start)

    # ---- opening, checkpoints, rotation
    def _load(self) -> Position | None:
        try:
            raw = json.loads(self.checkpoint.read_text())
            return Position(int(raw["inode"]), int(raw["offset"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _open(self, from_start: bool) -> None:
        saved = self._load()
        if saved is not None and self.path.exists() and os.stat(self.path).st_ino != saved.inode:
            rotated = self._find_inode(saved.inode)
            if rotated is not None:  # rotated while we were away: finish the old file first
                self._attach(rotated, saved.offset)
                return
            saved = Position(os.stat(self.path).st_ino, 0)
        if not self.path.exists():
            return
        if saved is None:
            size = os.stat(self.path).st_size
            saved = Position(os.stat(self.path).st_ino, 0 if from_start else size)
        self._attach(self.path, saved.offset)

    def _find_inode(self, inode: int) -> Path | None:
        for sibling in self.path.parent.glob(self.path.name + "*"):
            with contextlib.suppress(OSError):
                if sibling.is_file() and os.stat(sibling).st_ino == inode:
                    return sibling
        return None

    def _attach(self, path: Path, offset: int) -> None:
        if self._handle is not None:
            self._handle.close()
        handle = open(path, "rb")  # noqa: SIM115 - kept open across polls, closed in close()
        self._inode = os.fstat(handle.fileno()).st_ino
        size = os.fstat(handle.fileno()).st_size
        offset = offset if offset <= size else 0  # truncated since the checkpoint
        handle.seek(offset)
        self._handle, self._read_to, self._pending = handle, offset, b""
        self._head = os.pread(handle.fileno(), min(HEAD_BYTES, offset), 0)
        self._committed = Position(self._inode, offset)

    # ---- reading
    def read_lines(self, limit: int = 500) -> list[bytes]:
        """Up to `limit` new complete lines (newline kept), following rotation and truncation."""
        if self._handle is None:
            if not self.path.exists():
                return []
            self._attach(self.path, 0)
        assert self._handle is not None
        lines = self._read_from_handle(limit)
        if lines:
            return lines
        with contextlib.suppress(FileNotFoundError):
            current = os.stat(self.path)
            if current.st_ino != self._inode:  # renamed away and recreated: the old file is drained, move on
                self._attach(self.path, 0)
                return self._read_from_handle(limit)
            if current.st_size < self._read_to or self._rewritten():  # copy-truncate: start over at the top
                self._attach(self.path, 0)
                return self._read_from_handle(limit)
        return []

    def _rewritten(self) -> bool:
        if not self._head:
            return False
        with open(self.path, "rb") as handle:
            return handle.read(len(self._head)) != self._head

    def _read_from_handle(self, limit: int) -> list[bytes]:
        assert self._handle is not None
        lines: list[bytes] = []
        while len(lines) < limit:
            chunk = self._handle.readline(MAX_LINE_BYTES)
            if not chunk:
                break
            self._pending += chunk
            if not self._pending.endswith(b"\n") and len(self._pending) < MAX_LINE_BYTES:
                break  # no newline yet: wait for the writer
            self._read_to += len(self._pending)
            lines.append(self._pending)
            self._pending = b""
        if self._pending:
            # Hand back the partial line: the next read starts at its beginning again.
            self._handle.seek(self._read_to)
            self._pending = b""
        if len(self._head) < HEAD_BYTES and self._read_to > len(self._head):
            self._head = os.pread(self._handle.fileno(), min(HEAD_BYTES, self._read_to), 0)
        return lines

    def commit(self) -> None:
        """Everything handed out so far is shipped: checkpoint it (atomically)."""
        self._committed = Position(self._inode, self._read_to)
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint.with_name(self.checkpoint.name + ".tmp")
        tmp.write_text(json.dumps({"path": str(self.path), "inode": self._inode, "offset": self._read_to}))
        os.replace(tmp, self.checkpoint)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def partition_keys(option: str) -> Callable[[bytes], str]:
    """`random` (the agent's default), `deterministic` (a hash of the line), `fixed:VALUE`, `json:FIELD`."""
    if option == "random":
        return lambda _line: uuid.uuid4().hex
    if option == "deterministic":
        return lambda line: hashlib.md5(line).hexdigest()
    if option.startswith("fixed:") and len(option) > len("fixed:"):
        value = option[len("fixed:") :][:256]
        return lambda _line: value
    if option.startswith("json:") and len(option) > len("json:"):
        field = option[len("json:") :]

        def from_json(line: bytes) -> str:
            try:
                value = json.loads(line).get(field)
            except (ValueError, AttributeError):
                value = None
            return str(value)[:256] if value not in (None, "") else hashlib.md5(line).hexdigest()

        return from_json
    raise ValueError(f"unknown partition key option {option!r}: random, deterministic, fixed:VALUE or json:FIELD")
