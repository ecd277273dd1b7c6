"""Greengrass client devices on the gateway: a core's connectivity info (boto3 `greengrass`), client device
associations (boto3 `greengrassv2`), the core's CA as the core uploads it, and the discover API
(`GET /greengrass/discover/thing/<thing>` over mutual TLS on the HTTPS port) that the SDK's discovery client calls.

Kept in small tables of their own, created on first use.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway import jsonutil
from gateway.api.guard import read_body
from gateway.api.targets import REST_HANDLERS
from gateway.api.wire import rest_json_error
from gateway.errors import AwsError, ForbiddenException, InvalidRequestException, ResourceNotFoundException
from gateway.identity.authorizer import Authorizer
from gateway.store import Store

if TYPE_CHECKING:
    from gateway.api.parts import GreengrassParts

MAX_ENTRIES = 100
MAX_RESULTS = 100
CA_PATH = "/edgesim/greengrass/coreDevices/{core}/certificateAuthorities"


class BadRequestException(AwsError):
    code = "BadRequestException"
    http_status = 400


class ValidationException(AwsError):
    code = "ValidationException"
    http_status = 400


class ClientDevices:
    def __init__(self, store: Store) -> None:
        self.store = store  # its tables come from gateway.store's migrations

    # ---- connectivity info (greengrass v1 API, which v2 cores and the discovery service still use)
    def update_connectivity(self, thing: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
        clean = []
        for entry in entries:
            if not isinstance(entry, dict) or not entry.get("HostAddress"):
                raise BadRequestException("Each connectivity info entry needs a HostAddress")
            port = entry.get("PortNumber", 8883)
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise BadRequestException(f"PortNumber {port!r} is not a valid port")
            clean.append(
                {
                    "Id": str(entry.get("Id") or entry["HostAddress"]),
                    "HostAddress": str(entry["HostAddress"]),
                    "PortNumber": port,
                    "Metadata": str(entry.get("Metadata") or ""),
                }
            )
        version = str(uuid.uuid4())
        with self.store.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO gg_connectivity(thing, info, version) VALUES (?,?,?)",
                (thing, json.dumps(clean), version),
            )
        return {"message": "Connectivity info updated", "Version": version}

    def connectivity(self, thing: str) -> list[dict[str, Any]]:
        row = self.store.one("SELECT info FROM gg_connectivity WHERE thing=?", (thing,))
        return [] if row is None else list(json.loads(row["info"]))

    # ---- client device associations (greengrassv2)
    def associate(self, core: str, entries: list[dict[str, Any]], now_ms: int) -> dict[str, Any]:
        if len(entries) > MAX_ENTRIES:
            raise ValidationException(f"At most {MAX_ENTRIES} client devices per request")
        errors = []
        with self.store.transaction() as db:
            for entry in entries:
                thing = str((entry or {}).get("thingName") or "")
                if self.store.one("SELECT 1 FROM things WHERE name=?", (thing,)) is None:
                    errors.append(
                        {"thingName": thing, "code": "ResourceNotFoundException", "message": f"{thing} not found"}
                    )
                    continue
                db.execute(
                    "INSERT OR IGNORE INTO gg_client_devices(core, thing, associated_ms) VALUES (?,?,?)",
                    (core, thing, now_ms),
                )
        return {"errorEntries": errors}

    def disassociate(self, core: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
        with self.store.transaction() as db:
            for entry in entries:
                db.execute(
                    "DELETE FROM gg_client_devices WHERE core=? AND thing=?",
                    (core, str((entry or {}).get("thingName"))),
                )
        return {"errorEntries": []}

    def associated(self, core: str, max_results: int | None, next_token: str | None) -> dict[str, Any]:
        size = max_results or MAX_RESULTS
        if not 1 <= size <= MAX_RESULTS:
            raise ValidationException(f"maxResults must be between 1 and {MAX_RESULTS}")
        rows = self.store.query(
            "SELECT thing, associated_ms FROM gg_client_devices WHERE core=? AND thing>? ORDER BY thing",
            (core, next_token or ""),
        )
        page = rows[:size]
        out: dict[str, Any] = {
            "associatedClientDevices": [
                {"thingName": r["thing"], "associationTimestamp": r["associated_ms"] / 1000} for r in page
            ]
        }
        if len(rows) > size:
            out["nextToken"] = page[-1]["thing"]
        return out

    def cores_of(self, thing: str) -> list[str]:
        return [
            r["core"]
            for r in self.store.query("SELECT core FROM gg_client_devices WHERE thing=? ORDER BY core", (thing,))
        ]

    # ---- the core's CA, and discovery
    def put_cas(self, core: str, cas: list[str]) -> None:
        if not cas or not all(isinstance(c, str) and "BEGIN CERTIFICATE" in c for c in cas):
            raise InvalidRequestException("coreDeviceCertificateAuthorities must be a list of PEM certificates")
        with self.store.transaction() as db:
            db.execute("INSERT OR REPLACE INTO gg_core_cas(core, cas) VALUES (?,?)", (core, json.dumps(cas)))

    def discover(self, thing: str, arn: Callable[[str], str]) -> dict[str, Any]:
        groups = []
        for core in self.cores_of(thing):
            row = self.store.one("SELECT cas FROM gg_core_cas WHERE core=?", (core,))
            groups.append(
                {
                    "GGGroupId": f"greengrassV2-coreDevice-{core}",
                    "Cores": [{"thingArn": arn(core), "Connectivity": self.connectivity(core)}],
                    "CAs": json.loads(row["cas"]) if row else [],
                }
            )
        return {"GGGroups": groups}


def client_devices(gw: GreengrassParts) -> ClientDevices:
    return gw.client_devices


def _now(gw: GreengrassParts) -> int:
    return int(gw.clock.wall_ms())


def _thing_arn(gw: GreengrassParts) -> Callable[[str], str]:
    return lambda name: str(gw.registry.arn("thing", name))


_V2_KEYS = {"id": "Id", "hostAddress": "HostAddress", "portNumber": "PortNumber", "metadata": "Metadata"}


def _update_v2(gw: GreengrassParts, p: dict[str, Any]) -> Any:
    """greengrassv2's UpdateConnectivityInfo: the same record, camelCase on the wire."""
    entries = [{_V2_KEYS.get(k, k): v for k, v in e.items()} for e in p.get("connectivityInfo") or []]
    out = client_devices(gw).update_connectivity(p["thingName"], entries)
    return {**out, "version": out["Version"]}


def _get_connectivity(gw: GreengrassParts, thing: str) -> Any:
    """Both services' shapes (GET requests of the two share a path; each client reads its own members)."""
    entries = client_devices(gw).connectivity(thing)
    v2 = [{k: e[v] for k, v in _V2_KEYS.items()} for e in entries]
    return {"ConnectivityInfo": entries, "connectivityInfo": v2}


HANDLERS: dict[tuple[str, str], Callable[[GreengrassParts, dict[str, Any]], Any]] = {
    ("greengrass", "UpdateConnectivityInfo"): lambda gw, p: client_devices(gw).update_connectivity(
        p["ThingName"], list(p.get("ConnectivityInfo") or [])
    ),
    ("greengrass", "GetConnectivityInfo"): lambda gw, p: _get_connectivity(gw, p["ThingName"]),
    ("greengrassv2", "UpdateConnectivityInfo"): _update_v2,
    ("greengrassv2", "GetConnectivityInfo"): lambda gw, p: _get_connectivity(gw, p["thingName"]),
    ("greengrassv2", "BatchAssociateClientDeviceWithCoreDevice"): lambda gw, p: client_devices(gw).associate(
        p["coreDeviceThingName"], list(p.get("entries") or []), _now(gw)
    ),
    ("greengrassv2", "BatchDisassociateClientDeviceFromCoreDevice"): lambda gw, p: client_devices(gw).disassociate(
        p["coreDeviceThingName"], list(p.get("entries") or [])
    ),
    ("greengrassv2", "ListClientDevicesAssociatedWithCoreDevice"): lambda gw, p: client_devices(gw).associated(
        p["coreDeviceThingName"], p.get("maxResults"), p.get("nextToken")
    ),
}
REST_HANDLERS.update(HANDLERS)


async def put_core_cas(request: web.Request, gw: GreengrassParts, core: str) -> web.StreamResponse:
    """The core's local CA, so discovery can hand it to client devices (Greengrass's core uploads it the same way)."""
    try:
        try:
            body = jsonutil.loads_body(await read_body(request))
        except ValueError as exc:
            raise InvalidRequestException("The request body is not valid JSON") from exc
        if not isinstance(body, dict):
            raise InvalidRequestException("The request body must be a JSON object")
        if not gw.registry.thing_exists(core):
            raise ResourceNotFoundException(f"Core device {core} not found")
        client_devices(gw).put_cas(core, body.get("coreDeviceCertificateAuthorities") or [])
        return web.json_response({})
    except AwsError as error:
        return rest_json_error(error)


async def discover(request: web.Request, gw: GreengrassParts) -> web.StreamResponse:
    """`GET /greengrass/discover/thing/<thing>`: the certificate must be the thing's and allow greengrass:Discover."""
    thing = request.match_info["thing"]
    try:
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if not der:
            raise ForbiddenException("A client certificate is required")
        peer = transport.get_extra_info("peername") if transport else None
        grant = gw.registry.connection_grant(der, thing, peer[0] if peer else None)
        if grant.refusal is not None or grant.context is None:
            raise ForbiddenException(grant.refusal or "certificate refused")
        if grant.context.thing_name != thing:
            raise ForbiddenException(f"The certificate is not attached to thing {thing}")
        # Only the certificate's own policies count: thing group policies do not reach Greengrass operations.
        cert_arn = gw.registry.arn("cert", grant.context.cert_id or "")
        attached = gw.registry.list_attached_policies(cert_arn)["policies"]
        documents = tuple(gw.registry.policy_document(p["policyName"]) for p in attached)
        authorizer = Authorizer.compile(documents, grant.context)
        if not authorizer.is_allowed("greengrass:Discover", f"thing/{thing}"):
            raise ForbiddenException(f"Not authorized to perform greengrass:Discover on thing/{thing}")
        return web.json_response(client_devices(gw).discover(thing, _thing_arn(gw)))
    except AwsError as error:
        return rest_json_error(error)
