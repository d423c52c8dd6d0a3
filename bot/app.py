"""Application wiring: `build_app` assembles services and handlers; nothing runs at import."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from types import ModuleType
from typing import Any
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncEngine
from telegram import Update
from telegram.constants import ParseMode
from telegram.ext import Application, ApplicationBuilder, ContextTypes, Defaults
from telegram.request import BaseRequest, HTTPXRequest

import bot.schema  # noqa: F401  (every table, and the calendar post kinds features register)
from bot.activity import ActivityRecorder
from bot.chats import ChatDirectory
from bot.cluster import UpdateLog
from bot.commands import CommandSpec, publish_commands
from bot.db import create_engine, make_sessionmaker
from bot.inbox import InboxQueue, InboxRequest, UpdateInbox
from bot.operators import OperatorCheck
from bot.opt_outs import OptOuts, opt_out_key
from bot.sending import ChatRateLimiter
from bot.services import SERVICES_KEY, BotContext, Services, services_of, system_clock
from bot.settings import Settings
from bot.updates import ChatOrderedUpdateProcessor, route_commands
from handlers import calendar as calendar_handlers
from handlers import (
    campaigns,
    checkins,
    connections,
    core,
    dashboard,
    errors,
    guards,
    invites,
    kpi,
    lottery,
    membership,
    moderation,
    privacy,
    rules,
    segments,
)
from handlers import polls as polls_handlers
from schedules import calendar as calendar_schedule
from schedules import campaigns as campaigns_schedule
from schedules import cluster as cluster_schedule
from schedules import digest, verification
from schedules import invites as invites_schedule
from schedules import lottery as lottery_schedule
from schedules import polls as polls_schedule

log = logging.getLogger(__name__)

# Every update type some feature needs; polling and the webhook both ask for exactly these.
ALLOWED_UPDATES = [
    Update.MESSAGE,
    Update.EDITED_MESSAGE,
    Update.CALLBACK_QUERY,
    Update.CHAT_MEMBER,
    Update.MY_CHAT_MEMBER,
    Update.POLL,
    Update.POLL_ANSWER,
    Update.CHAT_JOIN_REQUEST,
]

# Feature modules in registration order. Each has register(app) and COMMANDS; it may have
# on_startup(app) / on_shutdown(app) to (re)build its jobs from the database.
FEATURES: list[ModuleType] = [
    errors,  # the error handler
    membership,  # tracking: bot membership, joins/leaves, migrations, every message
    core,  # /start /help /language /settimezone
    connections,  # /groups: manage a group from a private chat
    polls_handlers,  # /poll /survey /closepoll /polls /quizpoints, votes and tallies
    calendar_handlers,  # /calendar /schedule /postnow /skip /pause /resume, approval buttons
    checkins,  # /checkin 签到, /me, /top, /points, /checkinconfig
    rules,  # /rules, welcome, join check (newcomers in the guards group)
    moderation,  # warnings, sanctions, filters, flood settings, reports, /inactive, mod log
    guards,  # word filters and flood control on every group message
    lottery,  # /lottery /draw /reroll /cancel /lotteries /entrants, Join button, 口令
    kpi,  # /stats /kpi /settarget /targets /digest
    invites,  # /invite /invites /myinvite /referralpoints, join requests, /top invites
    dashboard,  # /dashboard, and the dashboard's web server (DASHBOARD_PORT)
    privacy,  # /forgetme /forget /rememberme: erasure and the hashed opt-out
    campaigns,  # /campaign /campaigns: campaign periods, goals and reviews (活动复盘)
    segments,  # /segment /heatmap: member segments and the activity heat map
]

# Time-facing modules (schedules/); each has on_startup(app) deriving its jobs from the database.
SCHEDULES: list[ModuleType] = [
    cluster_schedule,  # first: this process's heartbeat (claims name it), /healthz
    polls_schedule,  # closing polls and surveys on time
    calendar_schedule,  # content calendar: deliveries, previews, delete_after, file reloads
    verification,  # join-check deadlines
    lottery_schedule,  # timed draws, draws due after downtime, the live entrant count
    digest,  # daily and weekly digests
    invites_schedule,  # referral credits once the referred member's 7 days are over
    campaigns_schedule,  # campaign reviews at each campaign's planned end, and after downtime
]

PLACEHOLDER_TOKEN = "0:placeholder-token-for-offline-use"


def _file_base_url(base_url: str) -> str:
    """Self-hosted Bot API servers serve files under …/file/bot<token>."""
    return base_url[: -len("bot")] + "file/bot" if base_url.endswith("/bot") else base_url


def webhook_options(settings: Settings) -> dict[str, Any]:
    """Arguments for run_webhook/start_webhook: listen on PORT, path from WEBHOOK_URL.

    PTB's webhook server answers 403 to any request without the right
    X-Telegram-Bot-Api-Secret-Token header when a secret is set.
    """
    assert settings.webhook_url
    return {
        "listen": "0.0.0.0",
        "port": settings.port,
        "url_path": urlparse(settings.webhook_url).path.lstrip("/"),
        "webhook_url": settings.webhook_url,
        "secret_token": (
            settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        ),
    }


def build_app(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    request: BaseRequest | None = None,
    clock: Callable[[], datetime] = system_clock,
    rate_limiter: bool = True,
    concurrent: bool = True,
    dedupe: bool | None = None,
    inbox: bool = True,
) -> Application[Any, Any, Any, Any, Any, Any]:
    """Build the Application with every feature registered and services in bot_data.

    Tests pass a recording `request`, an `engine` on a temporary database and a `clock`;
    the CLI passes nothing but settings. `dedupe` (default: in webhook mode) drops updates
    whose id any process has already received (bot.cluster.UpdateLog); it needs `concurrent`.
    `inbox` (default: on) keeps received updates in the database until they are handled, so
    a killed process loses none (bot.inbox); it needs `concurrent` too.
    """
    engine = engine or create_engine(settings.database_url)
    db = make_sessionmaker(engine)
    salt = settings.privacy_salt.get_secret_value() if settings.privacy_salt else None
    opt_outs = OptOuts(opt_out_key(privacy_salt=salt, token=settings.token))
    services = Services(
        settings=settings,
        engine=engine,
        db=db,
        chats=ChatDirectory(
            db,
            default_timezone=settings.bot_timezone,
            default_language=settings.bot_language,
            clock=clock,
        ),
        activity=ActivityRecorder(db, opt_outs=opt_outs),
        operators=OperatorCheck(db, owners=settings.bot_owners, clock=clock),
        opt_outs=opt_outs,
        clock=clock,
    )

    builder = (
        ApplicationBuilder()
        .token(settings.token or PLACEHOLDER_TOKEN)
        .context_types(ContextTypes(context=BotContext))
        .defaults(Defaults(parse_mode=ParseMode.HTML, tzinfo=ZoneInfo(settings.bot_timezone)))
        .post_init(startup)
        .post_stop(stop)
        .post_shutdown(shutdown)
    )
    if settings.telegram_api_base_url:
        base = settings.telegram_api_base_url
        builder = builder.base_url(base).base_file_url(_file_base_url(base))
    update_inbox = None
    if inbox and concurrent and settings.keep_updates:
        update_inbox = UpdateInbox(engine, clock, services.process_id)
    services.inbox = update_inbox
    if request is not None:
        builder = builder.request(request)
    if update_inbox is not None and settings.webhook_url is None:
        # PTB's own choice for getUpdates (one connection), wrapped to keep what it fetches
        polling = request or HTTPXRequest(connection_pool_size=1)
        builder = builder.get_updates_request(InboxRequest(polling, update_inbox))
    elif request is not None:
        builder = builder.get_updates_request(request)
    if update_inbox is not None and settings.webhook_url is not None:
        builder = builder.update_queue(InboxQueue(update_inbox))  # kept before Telegram's 200
    if rate_limiter:
        builder = builder.rate_limiter(ChatRateLimiter(max_retries=3))
    if dedupe is None:
        dedupe = settings.webhook_url is not None
    if concurrent:
        seen = UpdateLog(db, clock) if dedupe else None
        builder = builder.concurrent_updates(
            ChatOrderedUpdateProcessor(seen=seen, inbox=update_inbox)
        )
    app = builder.build()

    app.bot_data[SERVICES_KEY] = services
    commands: list[CommandSpec] = []
    for feature in FEATURES:
        feature.register(app)
        commands.extend(getattr(feature, "COMMANDS", []))
    app.bot_data["commands"] = commands
    for group in list(app.handlers):
        route_commands(app, group)  # one lookup instead of one check per command handler
    return app


async def startup(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """After initialize(): learn what the bot can see, publish commands, start background work.

    Runs as post_init under run_polling/run_webhook; tests call it explicitly.
    """
    services = services_of(app)
    services.bot_sees_all_messages = bool(app.bot.can_read_all_group_messages)
    await publish_commands(app.bot, app.bot_data["commands"])
    services.activity.start()
    for feature in [*FEATURES, *SCHEDULES]:
        hook = getattr(feature, "on_startup", None)
        if hook is not None:
            await hook(app)
    inbox = services.inbox
    if inbox is not None and services.settings.webhook_url is None:
        # long polling: what the killed process before this one fetched and did not handle
        left = await inbox.leftovers(app.bot)
        for update in left:
            await app.update_queue.put(update)
        if left:
            log.warning("handling %d update(s) left by the previous process", len(left))
        inbox.start()
    elif inbox is not None:  # webhook: the rows of processes that stopped, on every sweep
        settings = services.settings
        inbox.start(
            app.update_queue.put,
            app.bot,
            take_over_every=settings.sweep_seconds,
            lease=timedelta(seconds=settings.claim_lease_seconds),
        )


async def stop(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """After the last update was handled: write buffered activity (SIGINT/SIGTERM included)."""
    services = services_of(app)
    for feature in [*FEATURES, *SCHEDULES]:
        hook = getattr(feature, "on_shutdown", None)
        if hook is not None:
            await hook(app)
    await services.activity.stop()
    if services.inbox is not None:
        await services.inbox.stop()


async def shutdown(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    await services_of(app).engine.dispose()
