"""What each part of the HTTP API reads of the running gateway: narrow Protocols, never the Gateway class.

The Gateway (gateway.app) satisfies all of them structurally; a module here names only the parts it uses, so a
test or another host (the edge core's control API) can hand it just those.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.api.greengrass import ClientDevices
    from gateway.auth_setup import AuthServices
    from gateway.broker.core import Broker
    from gateway.clock import Clock
    from gateway.config import Config
    from gateway.jobs.service import JobsService
    from gateway.provisioning.templates import ProvisioningTemplates
    from gateway.registry import Registry
    from gateway.registry.fleet_index import FleetIndex
    from gateway.rules.engine import RulesEngine
    from gateway.rules.service import RulesService
    from gateway.shadow.service import ShadowService
    from gateway.sinks.cloudwatch import CloudWatchSink
    from gateway.sinks.firehose.service import FirehoseService
    from gateway.sinks.kinesis.service import KinesisService
    from gateway.sinks.lambda_.mappings import EventSourceMappings
    from gateway.sinks.lambda_.service import LambdaService
    from gateway.sinks.s3 import ObjectStore
    from gateway.sinks.sqs.service import SqsService
    from gateway.store import Store


class IotDataParts(Protocol):
    """iot-data: Publish, retained messages, connections, shadows."""

    broker: Broker
    shadows: ShadowService


class LambdaApiParts(Protocol):
    lambdas: LambdaService
    event_sources: EventSourceMappings


class GreengrassParts(Protocol):
    """Greengrass V2 client-device operations and discovery."""

    clock: Clock
    registry: Registry
    client_devices: ClientDevices


class FleetApiParts(Protocol):
    """Fleet indexing and dynamic thing groups."""

    store: Store
    registry: Registry
    fleet_index: FleetIndex


class AuthParts(Protocol):
    """The custom-authorizer operations (gateway.api.iot_authorizers)."""

    auth: AuthServices


class ProvisioningParts(Protocol):
    """The provisioning-template operations (gateway.api.iot_provisioning)."""

    registry: Registry
    provisioning_templates: ProvisioningTemplates


class JobsHost(Protocol):
    """What the Jobs service is built from and its operations reach (gateway.api.jobs_api)."""

    config: Config
    ports: dict[str, int]
    store: Store
    registry: Registry
    clock: Clock
    broker: Broker
    s3: ObjectStore
    jobs: JobsService


class HttpsPublishParts(GreengrassParts, Protocol):
    """The HTTPS publish door (port 8443), which also answers Greengrass discovery."""

    config: Config
    broker: Broker
    auth: AuthServices


class ViewParts(Protocol):
    """The dashboard's read-only views (gateway.api.dashboard_views) and the live feed built on them."""

    config: Config
    clock: Clock
    store: Store
    registry: Registry
    broker: Broker
    shadows: ShadowService
    rules_engine: RulesEngine
    kinesis: KinesisService
    sqs: SqsService
    lambdas: LambdaService
    firehose: FirehoseService
    s3: ObjectStore
    cloudwatch: CloudWatchSink
    jobs: JobsService


class FrontParts(GreengrassParts, Protocol):
    """Requests routed before the botocore dispatcher: S3, STS, SQS query, Kinesis fan-out, Greengrass CAs."""

    config: Config
    kinesis: KinesisService
    sqs: SqsService
    s3: ObjectStore
    jobs: JobsService


class RestParts(IotDataParts, LambdaApiParts, GreengrassParts, FleetApiParts, Protocol):
    """The botocore-routed dispatcher: every service table it hands a request to."""

    config: Config
    rules: RulesService
    kinesis: KinesisService
    firehose: FirehoseService
    sqs: SqsService
