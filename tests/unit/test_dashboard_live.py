"""The dashboard's live feed, without a gateway: event encoding, a browser's message budget, shadow events."""

from __future__ import annotations

import asyncio
import json

from gateway.api.live import MAX_PENDING, MESSAGES_PER_S, Watcher, _history_entry, _shadow_event, sse


def test_sse_frames_carry_json_and_split_multiline_data() -> None:
    assert sse("tick", {"a": 1}) == b'event: tick\ndata: {"a":1}\n\n'
    assert sse("presence", b"{\n}") == b"event: presence\ndata: {\ndata: }\n\n"


def test_a_watcher_passes_its_budget_per_second_and_counts_the_rest() -> None:
    async def scenario() -> Watcher:
        watcher = Watcher("tail", None, "a/#")
        for i in range(MESSAGES_PER_S + 30):
            watcher.offer_message(f"a/{i}", b'{"v": 1}', 1, "dev", None, 1000 + i)
        return watcher

    watcher = asyncio.run(scenario())
    assert len(watcher.pending) == MESSAGES_PER_S and watcher.skipped == 30
    assert watcher.wake.is_set()
    first = watcher.take().split(b"\n\n")[0]
    assert first.startswith(b"event: message\ndata: ")
    body = json.loads(first.split(b"data: ", 1)[1])
    assert body == {
        "topic": "a/0",
        "payload": '{"v": 1}',
        "encoding": "utf-8",
        "qos": 1,
        "retain": False,
        "clientId": "dev",
        "timestampMs": 1000,
    }
    assert not watcher.pending and not watcher.wake.is_set()


def test_binary_payloads_travel_as_base64_and_a_slow_browser_is_capped() -> None:
    async def scenario() -> Watcher:
        watcher = Watcher("tail", None, "#")
        watcher.offer_message("b", b"\xff\x00", 0, None, None, 1)
        watcher.pending.extend([b""] * MAX_PENDING)
        watcher.sent_this_second = 0
        watcher.offer_message("b", b"x", 0, None, None, 2)
        return watcher

    watcher = asyncio.run(scenario())
    assert json.loads(watcher.pending[0].split(b"data: ", 1)[1])["encoding"] == "base64"
    assert watcher.skipped == 1


def test_shadow_events_and_history_come_from_documents_messages() -> None:
    documents = json.dumps(
        {
            "previous": None,
            "current": {"state": {"desired": {"mode": "on"}, "reported": {"mode": "off", "t": 2}}, "version": 7},
        }
    ).encode()
    event = _shadow_event("lamp", None, False, 123, documents)
    assert event == {
        "thing": "lamp",
        "shadowName": None,
        "version": 7,
        "timestampMs": 123,
        "state": {"desired": {"mode": "on"}, "reported": {"mode": "off", "t": 2}, "delta": {"mode": "on"}},
    }
    assert _history_entry(5, documents) == {
        "version": 7,
        "timestampMs": 5,
        "state": {"desired": {"mode": "on"}, "reported": {"mode": "off", "t": 2}},
    }
    deleted = _shadow_event("lamp", "cfg", True, 9, b'{"version": 8}')
    assert deleted is not None and deleted["deleted"] is True and deleted["version"] == 8
    assert deleted["state"] == {"desired": None, "reported": None, "delta": None}
    assert _shadow_event("lamp", None, False, 1, b"not json") is None
