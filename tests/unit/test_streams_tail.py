"""The Kinesis-Agent-style file follower: complete lines only, rename and copy-truncate rotation while following,
checkpoints that resume exactly, partition key options."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gateway.streams_tail import LogTail, partition_keys


def test_follows_lines_rotation_and_truncation(tmp_path: Path) -> None:
    log, checkpoint = tmp_path / "app.log", tmp_path / "cp.json"
    log.write_bytes(b"old\n")
    tail = LogTail(log, checkpoint, from_start=False)  # no checkpoint, from the end: "old" is not shipped
    assert tail.read_lines() == []
    with log.open("ab") as handle:
        handle.write(b"a\nb")
    assert tail.read_lines() == [b"a\n"]  # "b" waits for its newline
    with log.open("ab") as handle:
        handle.write(b"\nc\n")
    assert tail.read_lines() == [b"b\n", b"c\n"]
    tail.commit()
    with log.open("ab") as handle:
        handle.write(b"d\n")
    log.rename(tmp_path / "app.log.1")  # rotated by rename: the old file is finished first
    log.write_bytes(b"e\n")
    assert tail.read_lines() == [b"d\n"]
    assert tail.read_lines() == [b"e\n"]
    log.write_bytes(b"f\n")  # copy-truncate: shorter than what was read, so from the top
    assert tail.read_lines() == [b"f\n"]
    tail.commit()
    tail.close()
    with log.open("ab") as handle:
        handle.write(b"g\n")
    again = LogTail(log, checkpoint, from_start=True)  # the checkpoint wins over --from
    assert again.read_lines() == [b"g\n"]
    again.close()


def test_missing_file_is_waited_for(tmp_path: Path) -> None:
    log = tmp_path / "later.log"
    tail = LogTail(log, tmp_path / "cp.json", from_start=False)
    assert tail.read_lines() == []
    log.write_bytes(b"first\n")
    assert tail.read_lines() == [b"first\n"]
    tail.close()


def test_partition_key_options() -> None:
    assert partition_keys("fixed:dev-1")(b"x\n") == "dev-1"
    assert partition_keys("deterministic")(b"x\n") == hashlib.md5(b"x\n").hexdigest()
    assert partition_keys("json:device")(b'{"device": "d7"}\n') == "d7"
    assert partition_keys("json:device")(b"not json\n") == hashlib.md5(b"not json\n").hexdigest()
    random = partition_keys("random")
    assert random(b"x") != random(b"x")
    with pytest.raises(ValueError, match="unknown partition key option"):
        partition_keys("sometimes")
