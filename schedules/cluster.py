"""This process among several: its heartbeat, pruning the update log, and `/healthz`.

At start-up the process writes its `bot_process` row (bot.cluster) before any schedule module
claims work, then beats every `lease / 5` seconds (at least every second) so the others know
it is alive. Every 5 minutes any process prunes old update ids and forgets processes silent
for a day. A clean stop removes the row.

`/healthz` (HTTP GET, JSON) answers 200 when the database answers `SELECT 1` and Telegram
answers `getMe`, else 503, with each check's result and latency. It is served on HEALTH_PORT,
or in webhook mode on PORT + 1 when HEALTH_PORT is not set.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from telegram.ext import Application, ContextTypes

from bot import cluster
from bot.services import services_of

log = logging.getLogger(__name__)

HEARTBEAT_JOB = "cluster:heartbeat"
PRUNE_JOB = "cluster:prune"
PRUNE_EVERY = timedelta(minutes=5)
FORGET_PROCESSES_AFTER = timedelta(days=1)
SERVER_KEY = "health_server"

AnyApp = Application[Any, Any, Any, Any, Any, Any]


def lease(app: AnyApp) -> timedelta:
    return timedelta(seconds=services_of(app).settings.claim_lease_seconds)


def health_port(app: AnyApp) -> int | None:
    settings = services_of(app).settings
    if settings.health_port is not None:
        return settings.health_port or None  # HEALTH_PORT=0 turns it off
    return settings.port + 1 if settings.webhook_url else None


async def on_startup(app: AnyApp) -> None:
    services = services_of(app)
    mode = "webhook" if services.settings.webhook_url else "polling"
    async with services.db.begin() as session:
        await cluster.beat(
            session, services.process_id, now=services.clock(), mode=mode, started=True
        )
    if app.job_queue is not None:
        every = max(1.0, lease(app).total_seconds() / 5)
        app.job_queue.run_repeating(heartbeat_job, interval=every, first=every, name=HEARTBEAT_JOB)
        app.job_queue.run_repeating(
            prune_job, interval=PRUNE_EVERY, first=PRUNE_EVERY, name=PRUNE_JOB
        )
    port = health_port(app)
    if port is not None:
        services.extras[SERVER_KEY] = start_health_server(app, port)
        log.info("health endpoint on http://0.0.0.0:%s/healthz", port)


async def on_shutdown(app: AnyApp) -> None:
    services = services_of(app)
    server = services.extras.pop(SERVER_KEY, None)
    if server is not None:
        server.stop()
    try:
        async with services.db.begin() as session:
            await cluster.leave(session, services.process_id)
    except Exception as exc:  # the database may be what is going away
        log.warning("could not sign this process off: %s", exc)


async def heartbeat_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    services = services_of(context.application)
    async with services.db.begin() as session:
        await cluster.beat(session, services.process_id, now=services.clock())


async def prune_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    services = services_of(context.application)
    now = services.clock()
    async with services.db.begin() as session:
        await cluster.prune_seen(session, now=now)
        await cluster.forget_dead(session, now=now, older_than=FORGET_PROCESSES_AFTER)


# --- /healthz -----------------------------------------------------------------------------------


def start_health_server(app: AnyApp, port: int, address: str = "0.0.0.0") -> Any:
    """A tornado HTTP server (PTB's webhook server is tornado too) answering GET /healthz."""
    import tornado.web
    from tornado.httpserver import HTTPServer

    services = services_of(app)

    class HealthHandler(tornado.web.RequestHandler):
        async def get(self) -> None:
            health = await cluster.check_health(services.db, app.bot)
            body = {**health.as_json(), "process": services.process_id}
            self.set_status(200 if health.ok else 503)
            self.set_header("Content-Type", "application/json")
            self.set_header("Cache-Control", "no-store")
            self.finish(json.dumps(body))

    server = HTTPServer(tornado.web.Application([(r"/healthz/?", HealthHandler)]))
    server.listen(port, address)
    return server
