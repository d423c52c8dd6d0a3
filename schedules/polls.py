"""Closing polls and surveys on time: exactly once, also after downtime.

The database is the record. Every poll or survey with a close time gets a job
(`pollclose:<id>` / `surveyclose:<id>`) derived from its row at start-up and when it is
created; a close that fell due while the bot was down runs as soon as the job queue starts.

Whoever closes — the job or /closepoll — first claims the row with a conditional UPDATE
(`bot.polls.claim_close`) in a short transaction; only the winner goes on: stopPoll for each
poll (recorded per poll, so a retry never stops one twice), then one summary, then the row is
marked closed. Telegram is never awaited inside a transaction. A failure leaves the claim in
place and the close is retried when the claim's lease runs out (also by the next start-up);
after MAX_ATTEMPTS it is given up and logged.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from apscheduler.jobstores.base import JobLookupError
from telegram import Bot, ReplyParameters
from telegram.ext import Application, JobQueue

from bot import polls
from bot.polls import Kind
from bot.sending import send_text
from bot.services import BotContext, Services, services_of

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=5)  # a claim older than this was abandoned and is taken again
MAX_ATTEMPTS = 5


def job_name(kind: Kind, row_id: int) -> str:
    return f"{'surveyclose' if kind == 'survey' else 'pollclose'}:{row_id}"


def schedule_close(job_queue: JobQueue[Any], kind: Kind, row_id: int, when: datetime) -> None:
    """(Re)schedule the close of a poll or survey; a time in the past runs at once."""
    cancel_close(job_queue, kind, row_id)
    job_queue.run_once(
        _close_job,
        when=when,
        name=job_name(kind, row_id),
        data=(kind, row_id),
        # Run however late the scheduler gets to it: a close is never skipped as "misfired".
        job_kwargs={"misfire_grace_time": None, "coalesce": True},
    )


def cancel_close(job_queue: JobQueue[Any], kind: Kind, row_id: int) -> None:
    for job in job_queue.get_jobs_by_name(job_name(kind, row_id)):
        try:
            job.schedule_removal()
        except JobLookupError:
            pass


async def _close_job(context: BotContext) -> None:
    """Job callback: close the poll/survey in `context.job.data`."""
    assert context.job is not None
    kind, row_id = context.job.data  # type: ignore[misc]
    await close(context.application, kind, row_id)


async def close(app: Application[Any, Any, Any, Any, Any, Any], kind: Kind, row_id: int) -> bool:
    """Close a poll or survey if this caller wins the claim; True when it did."""
    services = services_of(app)
    async with services.db.begin() as session:
        claimed = await polls.claim_close(
            session,
            kind,
            row_id,
            now=services.clock(),
            lease=LEASE,
            by=services.process_id,
            process_lease=timedelta(seconds=services.settings.claim_lease_seconds),
        )
    if not claimed:
        return False
    try:
        await _close_claimed(app.bot, services, kind, row_id)
    except Exception:
        log.exception("closing %s %s failed; will retry", kind, row_id)
        await _after_failure(app, services, kind, row_id)
        return False
    return True


async def _close_claimed(bot: Bot, services: Services, kind: Kind, row_id: int) -> None:
    async with services.db() as session:
        to_stop = await polls.polls_to_close(session, kind, row_id)
    for poll in to_stop:
        if poll.stopped_at is not None:
            continue
        final = await polls.stop_telegram_poll(bot, services, poll)
        async with services.db.begin() as session:
            if final is not None:
                counts, voters = polls.tally_of(final)
                await polls.record_tally(
                    session, poll_id=poll.id, counts=counts, total_voters=voters, final=True
                )
            await polls.mark_stopped(session, poll.id, now=services.clock())  # type: ignore[arg-type]

    await services.activity.flush()  # the last second's messages count towards turnout
    now = services.clock()
    model = polls.Survey if kind == "survey" else polls.Poll
    async with services.db() as session:
        row = await session.get(model, row_id)
    if row is None:
        return
    chat_id = row.chat_id
    reply_to = row.header_message_id if isinstance(row, polls.Survey) else row.message_id
    info = await services.chats.get(chat_id)  # outside any session: SQLite has one writer
    text = ""
    if info is not None:
        async with services.db() as session:
            if isinstance(row, polls.Survey):
                result = await polls.survey_result(session, row, tz=info.timezone, until=now)
                text = polls.render_survey_summary(info.language, result)
            else:
                outcome = await polls.poll_result(session, row, tz=info.timezone, until=now)
                text = polls.render_poll_summary(info.language, outcome)
    sent = []
    if text:
        reply = (
            ReplyParameters(message_id=reply_to, allow_sending_without_reply=True)
            if reply_to
            else None
        )
        sent = await send_text(bot, services, chat_id, text, reply_parameters=reply)
    async with services.db.begin() as session:
        await polls.mark_closed(
            session,
            kind,
            row_id,
            now=now,
            summary_message_id=sent[0].message_id if sent else None,
        )


async def _after_failure(
    app: Application[Any, Any, Any, Any, Any, Any], services: Services, kind: Kind, row_id: int
) -> None:
    """Retry when the claim's lease has run out, or give up after MAX_ATTEMPTS."""
    table = polls.SURVEY_TABLE if kind == "survey" else polls.POLL_TABLE
    async with services.db.begin() as session:
        attempts = await session.scalar(
            table.select().with_only_columns(table.c.close_attempts).where(table.c.id == row_id)
        )
        if attempts is not None and attempts >= MAX_ATTEMPTS:
            log.error("giving up closing %s %s after %s attempts", kind, row_id, attempts)
            await polls.mark_closed(
                session, kind, row_id, now=services.clock(), summary_message_id=None
            )
            return
    if app.job_queue is not None:
        schedule_close(app.job_queue, kind, row_id, services.clock() + LEASE)


SWEEP_JOB = "pollclose:sweep"
SWEEP_EVERY = timedelta(seconds=60)


async def on_startup(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """Derive the close jobs from the database; overdue closes run as soon as jobs start."""
    services = services_of(app)
    if app.job_queue is None:
        log.warning("no job queue: polls will only close with /closepoll")
        return
    scheduled = await sweep(app, everything=True)
    if scheduled:
        log.info("scheduled %s poll/survey closes", scheduled)
    every = services.settings.sweep_every(SWEEP_EVERY)
    app.job_queue.run_repeating(_sweep_job, interval=every, first=every, name=SWEEP_JOB)


async def sweep(app: Application[Any, Any, Any, Any, Any, Any], *, everything: bool) -> int:
    """Give every close the database owes a job — also polls created by another process,
    and claims whose process stopped (retried when their lease runs out)."""
    services = services_of(app)
    assert app.job_queue is not None
    now = services.clock()
    async with services.db() as session:
        pending = await polls.pending_closes(
            session,
            lease=LEASE,
            now=now,
            process_lease=timedelta(seconds=services.settings.claim_lease_seconds),
        )
    scheduled = 0
    for item in pending:
        jobs = app.job_queue.get_jobs_by_name(job_name(item.kind, item.row_id))
        # (a job at a later time: a claim whose process stopped is due now, not at its lease)
        runs = [getattr(j.job.trigger, "run_date", None) for j in jobs]
        later = all(r is None or r > item.when + timedelta(seconds=1) for r in runs)
        if everything or not jobs or (later and item.when <= now):
            schedule_close(app.job_queue, item.kind, item.row_id, item.when)
            scheduled += 1
    return scheduled


async def _sweep_job(context: BotContext) -> None:
    await sweep(context.application, everything=False)
