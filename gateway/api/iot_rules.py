"""The `iot` topic-rule operations, over the rules service."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.rules.service import RulesService

Params = dict[str, Any]
Handler = Callable[["RulesService", Params], Any]

HANDLERS: dict[str, Handler] = {
    "CreateTopicRule": lambda s, p: s.create_topic_rule(p["ruleName"], p["topicRulePayload"]),
    "ReplaceTopicRule": lambda s, p: s.replace_topic_rule(p["ruleName"], p["topicRulePayload"]),
    "GetTopicRule": lambda s, p: s.get_topic_rule(p["ruleName"]),
    "ListTopicRules": lambda s, p: s.list_topic_rules(
        p.get("topic"), p.get("maxResults"), p.get("nextToken"), p.get("ruleDisabled")
    ),
    "DeleteTopicRule": lambda s, p: s.delete_topic_rule(p["ruleName"]),
    "EnableTopicRule": lambda s, p: s.enable_topic_rule(p["ruleName"]),
    "DisableTopicRule": lambda s, p: s.disable_topic_rule(p["ruleName"]),
    # HTTP topic rule destinations
    "CreateTopicRuleDestination": lambda s, p: s.destinations.create_topic_rule_destination(
        p["destinationConfiguration"]
    ),
    "GetTopicRuleDestination": lambda s, p: s.destinations.get_topic_rule_destination(p["arn"]),
    "ListTopicRuleDestinations": lambda s, p: s.destinations.list_topic_rule_destinations(
        p.get("maxResults"), p.get("nextToken")
    ),
    "UpdateTopicRuleDestination": lambda s, p: s.destinations.update_topic_rule_destination(p["arn"], p["status"]),
    "DeleteTopicRuleDestination": lambda s, p: s.destinations.delete_topic_rule_destination(p["arn"]),
    "ConfirmTopicRuleDestination": lambda s, p: s.destinations.confirm_topic_rule_destination(p["confirmationToken"]),
}
