"""Rule management (boto3 iot CreateTopicRule …): validate, compile, persist, install into the engine."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.clock import Clock
from gateway.errors import EdgesimError, ResourceAlreadyExistsException, ResourceNotFoundException
from gateway.registry.base import paginate
from gateway.rules.engine import RulesEngine, build_runtime
from gateway.rules.model import TopicRule, check_rule_name, parse_rule_payload
from gateway.topics import matches

if TYPE_CHECKING:
    from gateway.rules.destinations import TopicRuleDestinations
    from gateway.store import Store

log = logging.getLogger("edgesim.rules")


class RulesService:
    def __init__(
        self,
        engine: RulesEngine,
        store: Store,
        clock: Clock,
        arn: Callable[[str, str], str],
        destinations: TopicRuleDestinations,
    ) -> None:
        self.engine = engine
        self.store = store
        self.clock = clock
        self.arn = arn  # the registry's ARN maker, so rule ARNs match the account and region of everything else
        self.destinations = destinations

    def load(self) -> None:
        """Install every stored rule; one that no longer compiles is reported, not fatal."""
        for row in self.store.query("SELECT name, payload, created_ms FROM topic_rules"):
            try:
                rule = parse_rule_payload(row["name"], json.loads(row["payload"]), row["created_ms"])
                self.engine.install(build_runtime(rule, self.engine.sinks))
            except EdgesimError as exc:
                log.error("stored rule %s could not be loaded: %s", row["name"], exc)

    def _arn(self, name: str) -> str:
        return self.arn("rule", name)

    def _save(self, rule: TopicRule, source: str, *, replace: bool) -> None:
        runtime = build_runtime(rule, self.engine.sinks)  # raises SqlParseException before anything is stored
        with self.store.transaction() as db:
            exists = db.execute("SELECT 1 FROM topic_rules WHERE name=?", (rule.name,)).fetchone() is not None
            if exists and not replace:
                raise ResourceAlreadyExistsException(f"Rule {rule.name} already exists")
            if not exists and replace:
                raise ResourceNotFoundException(f"Rule {rule.name} does not exist")
            db.execute(
                "INSERT OR REPLACE INTO topic_rules(name, payload, source, created_ms) VALUES (?,?,?,?)",
                (rule.name, json.dumps(rule.payload()), source, rule.created_ms),
            )
        old = self.engine.index.get(rule.name)
        if old is not None:
            runtime.metrics = old.metrics
        self.engine.install(runtime)

    def _row(self, name: str) -> Any:
        row = self.store.one("SELECT * FROM topic_rules WHERE name=?", (check_rule_name(name),))
        if row is None:
            raise ResourceNotFoundException(f"Rule {name} does not exist")
        return row

    def _rule(self, name: str) -> TopicRule:
        row = self._row(name)
        return parse_rule_payload(row["name"], json.loads(row["payload"]), row["created_ms"])

    # ---- operations, named after AWS's
    def create_topic_rule(self, rule_name: str, payload: Any, source: str = "api") -> None:
        self._save(parse_rule_payload(rule_name, payload, self.clock.wall_ms()), source, replace=False)

    def replace_topic_rule(self, rule_name: str, payload: Any, source: str = "api") -> None:
        created = self._row(rule_name)["created_ms"]
        self._save(parse_rule_payload(rule_name, payload, created), source, replace=True)

    def put_topic_rule(self, rule_name: str, payload: Any, source: str) -> None:
        """Create or replace (used for rule files)."""
        exists = self.store.one("SELECT 1 FROM topic_rules WHERE name=?", (rule_name,)) is not None
        (self.replace_topic_rule if exists else self.create_topic_rule)(rule_name, payload, source)

    def get_topic_rule(self, rule_name: str) -> dict[str, Any]:
        rule = self._rule(rule_name)
        body = {"ruleName": rule.name, "createdAt": rule.created_ms / 1000, **rule.payload()}
        return {"ruleArn": self._arn(rule.name), "rule": body}

    def list_topic_rules(
        self,
        topic: str | None = None,
        max_results: int | None = None,
        next_token: str | None = None,
        rule_disabled: bool | None = None,
    ) -> dict[str, Any]:
        items = []
        for row in self.store.query("SELECT name, payload, created_ms FROM topic_rules ORDER BY name"):
            rule = parse_rule_payload(row["name"], json.loads(row["payload"]), row["created_ms"])
            runtime = self.engine.index.get(rule.name)
            pattern = runtime.compiled.topic_filter if runtime is not None else None
            if rule_disabled is not None and rule.disabled != rule_disabled:
                continue
            if topic is not None and (pattern is None or not (pattern == topic or matches(pattern, topic))):
                continue
            item = {
                "ruleArn": self._arn(rule.name),
                "ruleName": rule.name,
                "createdAt": rule.created_ms / 1000,
                "ruleDisabled": rule.disabled,
            }
            if pattern is not None:
                item["topicPattern"] = pattern
            items.append(item)
        page, token = paginate(items, max_results, next_token, limit=10000)
        return {"rules": page, **({"nextToken": token} if token else {})}

    def delete_topic_rule(self, rule_name: str) -> None:
        self._row(rule_name)
        with self.store.transaction() as db:
            db.execute("DELETE FROM topic_rules WHERE name=?", (rule_name,))
        self.engine.uninstall(rule_name)

    def _set_disabled(self, rule_name: str, disabled: bool) -> None:
        row = self._row(rule_name)
        payload = json.loads(row["payload"])
        payload["ruleDisabled"] = disabled
        self._save(parse_rule_payload(rule_name, payload, row["created_ms"]), row["source"], replace=True)

    def enable_topic_rule(self, rule_name: str) -> None:
        self._set_disabled(rule_name, False)

    def disable_topic_rule(self, rule_name: str) -> None:
        self._set_disabled(rule_name, True)

    def rules_from_source(self, prefix: str) -> list[str]:
        rows = self.store.query("SELECT name FROM topic_rules WHERE source LIKE ?", (prefix + "%",))
        return [r["name"] for r in rows]

    def metrics(self) -> dict[str, Any]:
        return {runtime.rule.name: runtime.metrics.to_json() for runtime in self.engine.index}

    def outcomes(self) -> dict[str, Any]:
        """Per rule: how many invocations finished, and the latest ones with each action's outcome."""
        return {
            runtime.rule.name: {
                "invocations": runtime.metrics.invocations,
                "recent": [invocation.to_json() for invocation in runtime.metrics.recent_invocations],
            }
            for runtime in self.engine.index
        }
