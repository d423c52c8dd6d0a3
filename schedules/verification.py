"""Join-check deadlines: a newcomer who has not answered in time fails the check.

Every process arms every pending check (a sweep every minute picks up checks started through
another process), the failure is decided once in the database, and its action (kick/ban,
log) is marked done; a failure whose process stopped before acting is acted on by another.

The deadline is stored with the newcomer (`bot.rules.Newcomer`); the job `verify:<chat>:<user>`
is derived from it — armed at the join and re-armed for every pending check at start-up, so a
restart neither forgets a check nor fails it twice (the failure is claimed in the database).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from telegram import Bot
from telegram.ext import Application, JobQueue

from bot import sanctions
from bot.i18n import t
from bot.rules import (
    Newcomer,
    check_token,
    conclude_check,
    mark_acted,
    pending_check,
    pending_checks,
    reclaim_failures,
)
from bot.services import BotContext, Services, services_of

log = logging.getLogger(__name__)


def job_name(chat_id: int, user_id: int) -> str:
    return f"verify:{chat_id}:{user_id}"


def arm(
    job_queue: JobQueue[Any],
    *,
    chat_id: int,
    user_id: int,
    token: int,
    deadline: datetime,
    now: datetime,
) -> None:
    """(Re)schedule the timeout of one check; an overdue check is handled at once."""
    cancel(job_queue, chat_id, user_id)
    delay = max(0.0, (deadline - now).total_seconds())
    job_queue.run_once(
        check_expired,
        delay,
        data=(chat_id, user_id, token),
        name=job_name(chat_id, user_id),
    )


def cancel(job_queue: JobQueue[Any] | None, chat_id: int, user_id: int) -> None:
    if job_queue is None:
        return
    for job in job_queue.get_jobs_by_name(job_name(chat_id, user_id)):
        job.schedule_removal()


async def fail_check(
    bot: Bot,
    services: Services,
    *,
    chat_id: int,
    user_id: int,
    token: int,
    reason_key: str,
    now: datetime | None = None,
) -> bool:
    """Conclude a pending check as failed (exactly once) and take the action fixed at join:
    mute leaves the newcomer restricted, kick removes them (they may retry), ban bans."""
    async with services.db.begin() as session:
        row = await conclude_check(
            session,
            chat_id=chat_id,
            user_id=user_id,
            token=token,
            state="failed",
            now=now,
            by=services.process_id,
        )
    if row is None:
        return False
    await act_on_failure(bot, services, row, reason_key=reason_key)
    return True


async def act_on_failure(bot: Bot, services: Services, row: Newcomer, *, reason_key: str) -> None:
    """Delete the check's message, take the action fixed at the join, log it; then record
    that it was done (a process that dies before that has it done by another)."""
    chat_id, user_id = row.chat_id, row.user_id
    if row.message_id:
        await sanctions.delete_message(bot, chat_id, row.message_id)
    action = row.action or "mute"
    if action in ("kick", "ban"):
        problem = await sanctions.apply(bot, chat_id, action, user_id=user_id)
        if problem is not None:
            log.warning(
                "join check of %s in %s: %s failed (%s)", user_id, chat_id, action, problem
            )
    info = await services.chats.get(chat_id)
    lang = info.language if info else "en"
    await sanctions.record(
        bot,
        services,
        chat_id,
        action=f"verify:{action}",
        actor_id=bot.id,
        actor_name=bot.first_name,
        target_id=user_id,
        target_name=row.name,
        reason=t(lang, reason_key),
    )
    async with services.db.begin() as session:
        await mark_acted(session, row, now=services.clock())


async def check_expired(context: BotContext) -> None:
    """The job: fail the check if it is still pending and its deadline has passed."""
    assert context.job is not None
    chat_id, user_id, token = context.job.data  # type: ignore[misc]
    services = context.services
    chat_id = await services.chats.resolve(chat_id)  # the group may have become a supergroup
    now = services.clock()
    async with services.db() as session:
        row = await pending_check(session, chat_id, user_id, token)
    if row is None:
        return
    if row.deadline is not None and row.deadline > now:
        arm(
            context.job_queue,  # type: ignore[arg-type]
            chat_id=chat_id,
            user_id=user_id,
            token=token,
            deadline=row.deadline,
            now=now,
        )
        return
    await fail_check(
        context.bot,
        services,
        chat_id=chat_id,
        user_id=user_id,
        token=token,
        reason_key="rules.check_timed_out",
        now=now,
    )


SWEEP_JOB = "verify:sweep"
SWEEP_EVERY = timedelta(seconds=60)


async def on_startup(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """Re-arm the timeout of every pending check from the database, and keep doing so."""
    services = services_of(app)
    if app.job_queue is None:
        log.warning("no job queue: join-check deadlines cannot be enforced")
        return
    armed = await sweep(app, everything=True)
    if armed:
        log.info("re-armed %d pending join checks", armed)
    every = services.settings.sweep_every(SWEEP_EVERY)
    app.job_queue.run_repeating(_sweep_job, interval=every, first=every, name=SWEEP_JOB)


async def sweep(app: Application[Any, Any, Any, Any, Any, Any], *, everything: bool) -> int:
    """Act on failures whose deciding process stopped before acting (bot.rules
    reclaim_failures), then arm a timeout for every pending check without one here — also
    checks started through another process (which may have stopped since); the failure
    itself is claimed in the database, so several processes firing for one check fail it
    once."""
    services = services_of(app)
    assert app.job_queue is not None
    async with services.db.begin() as session:
        orphans = await reclaim_failures(
            session,
            me=services.process_id,
            now=services.clock(),
            lease=timedelta(seconds=services.settings.claim_lease_seconds),
        )
    for row in orphans:
        log.warning(
            "join check of %s in %s: acting for a stopped process", row.user_id, row.chat_id
        )
        await act_on_failure(app.bot, services, row, reason_key="rules.check_timed_out")
    async with services.db() as session:
        rows = await pending_checks(session)
    now = services.clock()
    armed = 0
    for row in rows:
        assert row.deadline is not None
        if not everything and app.job_queue.get_jobs_by_name(job_name(row.chat_id, row.user_id)):
            continue
        arm(
            app.job_queue,
            chat_id=row.chat_id,
            user_id=row.user_id,
            token=check_token(row.joined_at),
            deadline=row.deadline,
            now=now,
        )
        armed += 1
    return armed


async def _sweep_job(context: BotContext) -> None:
    await sweep(context.application, everything=False)
