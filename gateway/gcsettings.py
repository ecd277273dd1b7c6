"""The garbage collector's (and the GIL's) settings for a long-running gateway process.

Under load the default thresholds (700, 10, 10) run a young collection every few messages and, every few seconds,
a full one over every tracked object: ~100k after start-up (modules, the compiled SQL, registry and shadow caches),
which paused the event loop 50-140 ms and set the PUBACK p99. Frozen once the gateway is up, those objects are never
scanned again; what is left is the traffic's own, short-lived objects.
"""

from __future__ import annotations

import gc
import sys

# A young collection per 20,000 net allocations rather than 700; a full collection only after 100 middle ones
# (CPython still waits until the long-lived objects have grown by a quarter).
THRESHOLDS = (20_000, 10, 100)


# The store's commit thread needs the GIL a few times per group commit (binding rows, after each SQLite step, after
# the fsync), and the busy loop thread holds it: each time it waited up to the default 5 ms switch interval, and
# commits of a few hundred rows took 30-50 ms at 10,000 msg/s into Kinesis. 0.5 ms halved the PUBACK p99
# (bench/sinks.py --only sweep).
SWITCH_INTERVAL_S = 0.0005


def settle_after_startup() -> None:
    """Collect once, then move every object that survived start-up out of the collector's view; a shorter GIL
    switch interval."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
