"""The edge page's last health report per core, kept in the gateway's database so a restarted gateway still knows
its cores (their next report, every 10 s by default, refreshes them; offline ones stay listed as last seen)."""

from __future__ import annotations

import json
from typing import Any, Protocol


class _Store(Protocol):
    def transaction(self) -> Any: ...

    def query(self, sql: str, params: Any = ()) -> list[Any]: ...


class EdgeReports:
    def __init__(self, store: _Store, keep: int) -> None:
        self.store = store
        self.keep = keep  # the table comes from gateway.store's migrations

    def load(self) -> dict[str, dict[str, Any]]:
        """Oldest first (the page's dict is in arrival order), at most `keep` cores."""
        rows = self.store.query(
            "SELECT core, entry FROM dashboard_edge_reports ORDER BY received_ms DESC LIMIT ?", (self.keep,)
        )
        return {row["core"]: json.loads(row["entry"]) for row in reversed(rows)}

    def save(self, core: str, entry: dict[str, Any], dropped: str | None) -> None:
        with self.store.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO dashboard_edge_reports(core, entry, received_ms) VALUES (?,?,?)",
                (core, json.dumps(entry), int(entry.get("lastReportMs") or 0)),
            )
            if dropped is not None:
                db.execute("DELETE FROM dashboard_edge_reports WHERE core=?", (dropped,))
