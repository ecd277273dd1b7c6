"""AWS IoT limits and defaults, named once. Every one is overridable through Config."""

from __future__ import annotations

DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT = "123456789012"

# MQTT (reference §1.3, §1.4)
MAX_PAYLOAD_BYTES = 128 * 1024
MAX_TOPIC_BYTES = 256
MAX_TOPIC_SLASHES = 7
MAX_CLIENT_ID_BYTES = 128
PUBLISHES_PER_SECOND_PER_CONNECTION = 100
SUBSCRIPTIONS_PER_CONNECTION = 50
INFLIGHT_QOS1_PER_CLIENT = 100
KEEPALIVE_MIN_S = 30
KEEPALIVE_MAX_S = 1200

# HTTP API listener: deadlines for a request's head and body (nginx's client_header/body_timeout are 60 s; a
# boto3 request arrives in milliseconds)
HTTP_HEADER_TIMEOUT_S = 15.0
HTTP_BODY_TIMEOUT_S = 30.0

# Registry (reference §2.2, §3.1)
MAX_THING_NAME = 128
MAX_ATTRIBUTES_WITH_TYPE = 50
MAX_ATTRIBUTES_WITHOUT_TYPE = 3
MAX_POLICY_VERSIONS = 5
MAX_POLICY_DOCUMENT_CHARS = 2048
MAX_THING_GROUPS_PER_THING = 10
MAX_THING_GROUP_DEPTH = 7

# MQTT 5: AWS clamps a Message Expiry Interval into [1 s, 7 days] (reference §1.4).
MAX_MESSAGE_EXPIRY_S = 604_800
