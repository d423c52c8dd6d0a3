"""Daily and weekly digests on the JobQueue, derived from `digest_schedule` rows.

Per chat and kind one job, `digest:<chat_id>` (daily) and `digest:<chat_id>:weekly`, fires at
the next due moment (the chat-local time plus a stable per-chat offset of up to 5 minutes, so
thousands of groups at 09:00 spread out). The job claims the digest in the database
(bot.digest.claim) and only the claimant sends, so several processes and restarts never send
one twice. At start-up, digests that fell due while the bot was down are sent late if still
within their grace, otherwise recorded as missed and listed in the next digest. Every job
handles its own chat and catches its own errors: one failing group never stops the others.
A `digest:sync` job re-derives the jobs every few minutes, so schedules changed by another
process are picked up.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import select
from telegram import Bot, Message
from telegram.constants import ParseMode
from telegram.error import BadRequest, ChatMigrated, Forbidden, TelegramError
from telegram.ext import Application, ContextTypes

from bot.charts import render_chart_async, render_in_thread
from bot.chats import ChatInfo
from bot.digest import DigestSchedule as Schedule
from bot.digest import (
    Due,
    Kind,
    claim,
    compose,
    finish,
    next_due,
    overdue,
    recover_interrupted,
)
from bot.i18n import t
from bot.kpi import local_today
from bot.models import Chat, UserProfile
from bot.sending import CHAT_GONE_ERRORS, retry_network, send_text
from bot.services import Services, services_of
from bot.text import MAX_CAPTION_UTF16, utf16_len

log = logging.getLogger(__name__)

SYNC_INTERVAL = timedelta(minutes=5)
KINDS: tuple[Kind, ...] = ("daily", "weekly")


def job_name(chat_id: int, kind: Kind) -> str:
    return f"digest:{chat_id}" if kind == "daily" else f"digest:{chat_id}:weekly"


@dataclass(frozen=True, slots=True)
class JobData:
    chat_id: int
    due: Due
    at: str  # the schedule the job was derived from, to notice changes by another process
    weekday: int | None


def _configured(schedule: Schedule, kind: Kind) -> tuple[str, int | None] | None:
    if kind == "daily":
        return (schedule.daily_at, None) if schedule.daily_at else None
    if schedule.weekly_at and schedule.weekly_day is not None:
        return schedule.weekly_at, schedule.weekly_day
    return None


# --- deriving jobs from the database --------------------------------------------------------


async def on_startup(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """Recover interrupted claims, catch up on digests due while down, schedule the next ones."""
    services = services_of(app)
    await take_over(app)
    for schedule, info in await _schedules(services):
        try:
            await catch_up(app, schedule, info)
        except Exception:
            log.exception("digest catch-up failed for chat %s", schedule.chat_id)
        await reschedule(app, info.id)  # read again: the catch-up may have found it gone
    if app.job_queue is not None:
        for job in app.job_queue.get_jobs_by_name("digest:sync"):
            job.schedule_removal()
        every = services.settings.sweep_every(SYNC_INTERVAL)
        app.job_queue.run_repeating(_sync_job, interval=every, first=every, name="digest:sync")


async def take_over(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """Settle the digests whose claimant stopped mid-send, and stale claims (bot.digest)."""
    services = services_of(app)
    taken = await recover_interrupted(
        services.db,
        now=services.clock(),
        me=services.process_id,
        process_lease=timedelta(seconds=services.settings.claim_lease_seconds),
    )
    for chat_id, due in taken:
        log.warning(
            "digest %s of chat %s: its process stopped while sending; recorded as failed",
            due.kind,
            chat_id,
        )


async def _schedules(services: Services) -> list[tuple[Schedule, ChatInfo]]:
    async with services.db() as session:
        rows = (
            await session.execute(
                select(Schedule, Chat)
                .join(Chat, Chat.id == Schedule.chat_id)
                .where(Chat.active.is_(True))
            )
        ).all()
    return [(schedule, ChatInfo.from_row(chat)) for schedule, chat in rows]


async def catch_up(
    app: Application[Any, Any, Any, Any, Any, Any], schedule: Schedule, info: ChatInfo
) -> None:
    """Digests that fell due since the schedule was set and were not handled: each is claimed
    like any other (so it is sent late within its grace, else recorded missed)."""
    services = services_of(app)
    now = services.clock()
    for kind in KINDS:
        if _configured(schedule, kind) is None:
            continue
        for due in overdue(schedule, kind, info.timezone, now, since=schedule.updated_at):
            await run_due(app, info.id, due)


def schedule_jobs(
    app: Application[Any, Any, Any, Any, Any, Any], schedule: Schedule | None, info: ChatInfo
) -> None:
    """(Re)create the chat's jobs from its schedule row (None: remove them)."""
    queue = app.job_queue
    if queue is None:
        return
    now = services_of(app).clock()
    for kind in KINDS:
        for job in queue.get_jobs_by_name(job_name(info.id, kind)):
            job.schedule_removal()
        configured = _configured(schedule, kind) if schedule is not None else None
        if configured is None or schedule is None:
            continue
        due = next_due(schedule, kind, info.timezone, now)
        if due is None:
            continue
        queue.run_once(
            _digest_job,
            when=due.due_at,
            name=job_name(info.id, kind),
            data=JobData(info.id, due, *configured),
            job_kwargs={"misfire_grace_time": None},  # late is handled by the claim
        )


async def reschedule(app: Application[Any, Any, Any, Any, Any, Any], chat_id: int) -> None:
    """After /digest changed the schedule: derive the chat's jobs again."""
    services = services_of(app)
    info = await services.chats.get(chat_id)
    if info is None:
        return
    async with services.db() as session:
        schedule = await session.get(Schedule, chat_id)
    schedule_jobs(app, schedule if info.active else None, info)


async def _sync_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Pick up schedules created, changed or removed by another process."""
    app = context.application
    queue = app.job_queue
    assert queue is not None
    await take_over(app)
    wanted = set()
    for schedule, info in await _schedules(services_of(app)):
        for kind in KINDS:
            configured = _configured(schedule, kind)
            if configured is None:
                continue
            name = job_name(info.id, kind)
            wanted.add(name)
            jobs = queue.get_jobs_by_name(name)
            if not jobs or (jobs[0].data.at, jobs[0].data.weekday) != configured:
                schedule_jobs(app, schedule, info)
    for job in queue.jobs():
        if job.name and job.name.startswith("digest:-") and job.name not in wanted:
            job.schedule_removal()


async def _digest_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    """A digest is due: send it if this process wins the claim, then plan the next one."""
    app = context.application
    data: JobData = context.job.data  # type: ignore[union-attr,assignment]
    services = services_of(app)
    try:
        async with services.db() as session:
            schedule = await session.get(Schedule, data.chat_id)
        kind = data.due.kind
        if schedule is not None and _configured(schedule, kind) == (data.at, data.weekday):
            await run_due(app, data.chat_id, data.due)
    except Exception:
        log.exception("digest for chat %s failed", data.chat_id)
    finally:
        await reschedule(app, data.chat_id)


# --- sending one ----------------------------------------------------------------------------


async def run_due(app: Application[Any, Any, Any, Any, Any, Any], chat_id: int, due: Due) -> str:
    """Claim a due digest and, if this process owns it, send it and record the outcome."""
    services = services_of(app)
    outcome, run_id = await claim(
        services.db, chat_id, due, now=services.clock(), worker=services.process_id
    )
    if outcome != "send":
        if outcome == "missed":
            log.warning("digest %s of chat %s for %s missed", due.kind, chat_id, due.period_start)
        return outcome
    try:
        reported = await deliver(app.bot, services, chat_id, due.kind, due.period_start)
    except Exception as exc:
        await finish(services.db, run_id, now=services.clock(), error=str(exc) or repr(exc))
        log.warning("digest of chat %s could not be sent: %s", chat_id, exc)
        return "failed"
    await finish(services.db, run_id, now=services.clock(), reported=reported)
    return "sent"


class Undeliverable(Exception):
    """No destination accepted the digest."""


async def deliver(
    bot: Bot,
    services: Services,
    chat_id: int,
    kind: Kind,
    period_start: date,
    *,
    destination: str | None = None,
) -> list[int]:
    """Compose, draw and send a digest; returns the ids of earlier undelivered digests it
    listed. Raises Undeliverable when it reached nobody."""
    info = await services.chats.get(chat_id)
    if info is None or not info.active:
        raise Undeliverable("the bot is no longer in the group")
    await services.activity.flush()  # the last seconds of the day count too
    today = local_today(services.clock(), info.timezone)
    async with services.db() as session:
        schedule = await session.get(Schedule, chat_id)
        composed = await compose(
            session,
            chat_id=chat_id,
            title=info.title,
            lang=info.language,
            tz=info.timezone,
            kind=kind,
            period_start=period_start,
            today=today,
        )
    png = await render_chart_async(composed.chart)
    extras = [(await render_in_thread(p.render, p.spec), p.caption) for p in composed.photos]
    where = destination or (schedule.destination if schedule else "here")
    targets, note = await _destinations(bot, services, info, where, schedule)
    delivered = 0
    for target in targets:
        if await _send_digest(bot, services, target, png, composed.caption, composed.text, extras):
            delivered += 1
    if not delivered and targets != [chat_id]:
        # Nobody privately / the log channel refused: the group gets it, with a word why.
        note = "kpi.digest.fallback_log" if where == "log" else "kpi.digest.fallback_private"
        targets = [chat_id]
        if await _send_digest(
            bot, services, chat_id, png, composed.caption, composed.text, extras
        ):
            delivered = 1
    if note and delivered:
        await send_text(bot, services, chat_id, t(info.language, note))
    if not delivered:
        raise Undeliverable("no destination accepted the digest")
    return composed.reported


async def _destinations(
    bot: Bot, services: Services, info: ChatInfo, where: str, schedule: Schedule | None
) -> tuple[list[int], str | None]:
    if where == "log" and schedule is not None and schedule.log_chat_id:
        return [schedule.log_chat_id], None
    if where == "private":
        admins = await services.operators.admins(bot, info.id)
        async with services.db() as session:
            started = list(
                await session.scalars(
                    select(UserProfile.user_id).where(
                        UserProfile.user_id.in_(admins), UserProfile.started_at.is_not(None)
                    )
                )
            )
        if started:
            return sorted(started), None
        return [info.id], "kpi.digest.fallback_private"
    if where == "log":
        return [info.id], "kpi.digest.fallback_log"
    return [info.id], None


async def _send_digest(
    bot: Bot,
    services: Services,
    chat_id: int,
    png: bytes,
    caption: str,
    text: str,
    extras: Sequence[tuple[bytes, str]] = (),
) -> bool:
    """The chart (with heading and highlights as caption), the full text, then any extra
    pictures (their failure does not make the digest undelivered)."""
    if utf16_len(caption) > MAX_CAPTION_UTF16:
        caption = caption.split("\n", 1)[0]
    try:
        photo = await _send_photo(bot, services, chat_id, png, caption)
    except TelegramError as exc:
        log.warning("digest chart to %s failed: %s", chat_id, exc)
        photo = None
    if photo is not None:
        chat_id = photo.chat_id  # it may have moved to a supergroup meanwhile
    try:
        sent = await send_text(bot, services, chat_id, text)
    except TelegramError as exc:
        log.warning("digest text to %s failed: %s", chat_id, exc)
        return False
    if sent:
        chat_id = sent[-1].chat_id
        for image, image_caption in extras:
            try:
                await _send_photo(bot, services, chat_id, image, image_caption)
            except TelegramError as exc:
                log.warning("digest picture to %s failed: %s", chat_id, exc)
    return bool(sent)


async def _send_photo(
    bot: Bot, services: Services, chat_id: int, png: bytes, caption: str
) -> Message | None:
    """send_photo with the failures handled the way bot.sending.send_text handles them."""

    def send(target: int) -> Any:
        return retry_network(
            lambda: bot.send_photo(target, photo=png, caption=caption, parse_mode=ParseMode.HTML)
        )

    try:
        return await send(chat_id)
    except ChatMigrated as exc:
        await services.activity.flush()
        await services.chats.migrate(chat_id, exc.new_chat_id)
        return await send(exc.new_chat_id)
    except Forbidden:
        await services.chats.deactivate(chat_id, bot_status="kicked")
        return None
    except BadRequest as exc:
        if any(reason in exc.message.lower() for reason in CHAT_GONE_ERRORS):
            await services.chats.deactivate(chat_id, bot_status="left")
            return None
        raise
