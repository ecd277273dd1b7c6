"""kill -9 under load: nothing the gateway acknowledged is lost."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from conftest import GatewayProcess
from test_api_iot import client
from test_kinesis import read_all


def test_kill_9_during_put_records_loses_nothing_acknowledged(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path).start()
    try:
        kinesis = client(gw, "kinesis")
        kinesis.create_stream(StreamName="durable", ShardCount=4)
        acknowledged: list[bytes] = []
        lock = threading.Lock()
        stop = threading.Event()

        def writer(n: int) -> None:
            own = client(gw, "kinesis")
            i = 0
            while not stop.is_set():
                batch = [f"{n}-{i + j}".encode() for j in range(20)]
                try:
                    result = own.put_records(
                        StreamName="durable", Records=[{"Data": data, "PartitionKey": data.decode()} for data in batch]
                    )
                except Exception:
                    return  # the gateway died mid-request: nothing of this batch was acknowledged
                with lock:
                    acknowledged.extend(
                        d for d, r in zip(batch, result["Records"], strict=True) if "SequenceNumber" in r
                    )
                i += 20

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        gw.stop(signal.SIGKILL)
        stop.set()
        for thread in threads:
            thread.join(10)
        assert len(acknowledged) > 100
        gw.start()
        stored = {r["Data"] for r in read_all(client(gw, "kinesis"), "durable")}
        missing = [d for d in acknowledged if d not in stored]
        assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:3]}"
    finally:
        gw.stop()
