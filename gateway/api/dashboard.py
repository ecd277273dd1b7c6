"""The web dashboard's routes: its page and files at `/` and `/ui/`, JSON under `/edgesim/dash/`, live events (SSE)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway import jsonutil
from gateway.api import dashboard_views as views
from gateway.api.dashboard_jobs import JobsPage
from gateway.api.guard import read_body
from gateway.api.live import HEARTBEAT_S, VIEWS, LiveFeed
from gateway.errors import AwsError, EdgesimError
from gateway.rules.model import DEFAULT_SQL_VERSION
from gateway.rules.tryout import evaluate_sql
from gateway.shadow.topics import is_valid_thing_name

if TYPE_CHECKING:
    from gateway.api.parts import ViewParts

UI_DIR = Path(__file__).with_name("ui")
# The page runs only its own scripts and talks only to this gateway, whatever a device puts in a payload.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
PREFIX = "/edgesim/dash"
MAX_RECORDS = 500


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"message": message, **extra}, status=status)


class Dashboard:
    def __init__(self, gateway: ViewParts, feed: LiveFeed) -> None:
        self.gw = gateway
        self.feed = feed

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self.index)
        r.add_get("/ui/{file}", self.static)
        r.add_get("/favicon.ico", self.no_icon)
        r.add_get(f"{PREFIX}/fleet", self.fleet)
        r.add_get(PREFIX + "/thing/{name}", self.thing)
        r.add_get(PREFIX + "/thing/{name}/check", self.check)
        r.add_get(f"{PREFIX}/rules", self.rules)
        r.add_post(f"{PREFIX}/rules/test", self.test_rule)
        r.add_get(f"{PREFIX}/sinks", self.sinks)
        r.add_get(PREFIX + "/kinesis/{stream}/records", self.records)
        r.add_get(PREFIX + "/s3/{bucket}", self.s3_object)
        r.add_get(f"{PREFIX}/edge", self.edge)
        r.add_get(f"{PREFIX}/events", self.events)
        JobsPage(self.gw.jobs.control, self.gw.jobs.control.repo).routes(app)

    # ---- files
    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(UI_DIR / "index.html", headers={"Cache-Control": "no-cache", **PAGE_HEADERS})

    async def no_icon(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["file"]
        path = UI_DIR / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    # ---- JSON
    async def fleet(self, request: web.Request) -> web.Response:
        return web.json_response({**views.fleet(self.gw), "history": list(self.feed.rates)})

    async def thing(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            body = views.thing(self.gw, name)
        except AwsError as exc:
            return _error(exc.http_status, exc.message)
        history = self.feed.history_for(name)
        for shadow in body["shadows"]:
            shadow["history"] = history.get(shadow["shadowName"], [])
        return web.json_response(body)

    async def check(self, request: web.Request) -> web.Response:
        action = request.query.get("action", "")
        resource = request.query.get("resource", "")
        if not action.startswith("iot:") or not resource:
            return _error(400, "give action=iot:<Action> and resource=topic/…, topicfilter/…, client/… or an ARN")
        name = request.match_info["name"]
        if not self.gw.registry.thing_exists(name):
            return _error(404, f"Thing {name} cannot be found.")
        return web.json_response(views.check_permission(self.gw, name, action, resource))

    async def rules(self, request: web.Request) -> web.Response:
        out = views.rules(self.gw)
        for rule in out:
            rule["history"] = list(self.feed.rule_history.get(rule["ruleName"], []))
        return web.json_response({"rules": out})

    async def test_rule(self, request: web.Request) -> web.Response:
        try:
            body = jsonutil.loads_body(await read_body(request))
        except ValueError:
            return _error(400, "the request body must be JSON: {sql, topic, payload}")
        except AwsError as exc:
            return _error(exc.http_status, exc.message)
        if not isinstance(body, dict) or not isinstance(body.get("sql"), str) or not isinstance(body.get("topic"), str):
            return _error(400, "give sql and topic as strings (payload optional)")
        payload = body.get("payload", "")
        try:
            payload_bytes = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        except RecursionError:
            return _error(400, "the payload nests too deeply")
        try:
            result = evaluate_sql(
                body["sql"],
                body["topic"],
                payload_bytes,
                client_id=body.get("clientId"),
                timestamp_ms=int(time.time() * 1000),
                sql_version=str(body.get("sqlVersion") or DEFAULT_SQL_VERSION),
            )
        except EdgesimError as exc:
            where = {key: getattr(exc, key, None) for key in ("line", "column")}
            return _error(400, str(exc), **{k: v for k, v in where.items() if v is not None})
        return web.json_response(result)

    async def sinks(self, request: web.Request) -> web.Response:
        return web.json_response(views.sinks(self.gw, self.feed.stream_rates))

    async def records(self, request: web.Request) -> web.Response:
        try:
            limit = min(int(request.query.get("limit", "50")), MAX_RECORDS)
            result = views.kinesis_records(
                self.gw,
                request.match_info["stream"],
                request.query.get("shard", ""),
                request.query.get("after") or None,
                max(limit, 1),
            )
        except ValueError:
            return _error(400, "limit and after must be numbers")
        except AwsError as exc:
            return _error(exc.http_status, exc.message)
        return web.json_response(result)

    async def s3_object(self, request: web.Request) -> web.Response:
        try:
            data = self.gw.s3.get(request.match_info["bucket"], request.query.get("key", ""))
        except AwsError as exc:
            return _error(exc.http_status, exc.message)
        nosniff = {"X-Content-Type-Options": "nosniff"}
        try:
            return web.Response(text=data.decode("utf-8"), content_type="text/plain", headers=nosniff)
        except UnicodeDecodeError:
            return web.Response(body=data, content_type="application/octet-stream", headers=nosniff)

    async def edge(self, request: web.Request) -> web.Response:
        return web.json_response(self.feed.edge())

    # ---- live
    async def events(self, request: web.Request) -> web.StreamResponse:
        view = request.query.get("view", "fleet")
        if view not in VIEWS:
            return _error(400, f"view must be one of {', '.join(VIEWS)}")
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        thing = request.query.get("thing") or None
        if thing is not None and not is_valid_thing_name(thing):
            return _error(400, f"invalid thing name: {thing!r}")
        await response.prepare(request)
        watcher = self.feed.add(view, thing, request.query.get("filter") or None)
        try:
            await response.write(b"retry: 2000\n\n")
            while not watcher.closed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watcher.wake.wait(), HEARTBEAT_S)
                data = watcher.take()
                await response.write(data or b": keep-alive\n\n")
        except ConnectionResetError:
            pass  # the browser went away
        finally:
            self.feed.remove(watcher)
        return response
