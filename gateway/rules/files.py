"""Rules from a folder: `*.json` (a `topicRulePayload`) and `*.sql` (+ optional `NAME.actions.json`), reloaded."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import EdgesimError, InvalidRequestException

if TYPE_CHECKING:
    from gateway.rules.service import RulesService

log = logging.getLogger("edgesim.rules")


def read_rule_file(path: Path) -> tuple[str, dict[str, Any]]:
    """(rule name, topicRulePayload) from a rule file; the name is the file's stem."""
    name = path.stem
    if path.suffix == ".json":
        try:
            document = json.loads(path.read_text())
        except ValueError as exc:
            raise InvalidRequestException(f"{path}: not valid JSON: {exc}") from exc
        # Accept both the bare payload and the `create-topic-rule --cli-input-json` shape.
        if isinstance(document, dict) and "topicRulePayload" in document:
            name = document.get("ruleName", name)
            document = document["topicRulePayload"]
        if not isinstance(document, dict):
            raise InvalidRequestException(f"{path}: a rule file must hold a JSON object")
        return name, document
    if path.suffix == ".sql":
        payload: dict[str, Any] = {"sql": path.read_text(), "actions": [], "awsIotSqlVersion": "2016-03-23"}
        sidecar = path.with_name(f"{name}.actions.json")
        if sidecar.exists():
            try:
                extra = json.loads(sidecar.read_text())
            except ValueError as exc:
                raise InvalidRequestException(f"{sidecar}: not valid JSON: {exc}") from exc
            if isinstance(extra, list):
                extra = {"actions": extra}
            if not isinstance(extra, dict):
                raise InvalidRequestException(f"{sidecar}: must be a list of actions or an object")
            payload.update(extra)
        return name, payload
    raise InvalidRequestException(f"{path}: rule files end in .json or .sql")


def rule_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix == ".sql" or (p.suffix == ".json" and not p.name.endswith(".actions.json"))
    )


class RulesFolder:
    """Keeps the rules of one folder installed, re-reading files whose contents changed."""

    def __init__(self, service: RulesService, folder: Path) -> None:
        self.service = service
        self.folder = folder
        self.source = f"file:{folder.resolve()}"
        self._seen: dict[Path, tuple[float, float]] = {}

    def sync(self) -> None:
        present: dict[str, Path] = {}
        for path in rule_files(self.folder):
            sidecar = path.with_name(f"{path.stem}.actions.json")
            stamp = (path.stat().st_mtime, sidecar.stat().st_mtime if sidecar.exists() else 0.0)
            try:
                name, payload = read_rule_file(path)
                present[name] = path
                if self._seen.get(path) != stamp:
                    self.service.put_topic_rule(name, payload, self.source)
                    log.info("rule %s loaded from %s", name, path)
            except EdgesimError as exc:
                log.error("rule file %s rejected:\n%s", path, exc)
            self._seen[path] = stamp
        for name in self.service.rules_from_source(self.source):
            if name not in present:
                self.service.delete_topic_rule(name)
                log.info("rule %s removed (its file is gone)", name)

    async def watch(self, interval_s: float = 1.0) -> None:
        while True:
            try:
                self.sync()
            except OSError as exc:
                log.error("cannot read rules folder %s: %s", self.folder, exc)
            await asyncio.sleep(interval_s)
