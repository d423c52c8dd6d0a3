"""Publishing the content calendar on time: jobs derived from the delivery rows.

At start-up (and on /calendar reload, and when a file in CONTENT_DIR changes) the calendar is
read, synced into the database and planned ahead (bot.calendar). Every pending delivery then
gets a job `delivery:<id>` at its time, every approval a job `preview:<id>` at its review time,
every message to delete a job `delete:<id>`. A sweep every minute, in every process, notices
file changes, keeps the horizon planned, settles claims interrupted by a crash, and gives any
row without a job its job — so the jobs are never the record, only a view of it.

Sending: claim (pending → sending), send outside any transaction, record the outcome.
RetryAfter, network errors and Telegram 5xx are retried with backoff; a TimedOut is recorded
as 'unknown' (Telegram may have posted it) and never resent blindly; Forbidden (and "chat not
found") deactivates the chat and cancels its deliveries; ChatMigrated follows the group.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.ext import Application, ContextTypes

from bot import calendar as cal
from bot.calendar_file import PostSpec, Problem, fingerprint, load_calendar
from bot.i18n import normalize_language, t
from bot.models import Chat, UserProfile
from bot.post_kinds import Outgoing, post_kind
from bot.sending import CHAT_GONE_ERRORS, outcome_unknown
from bot.services import Services, services_of
from bot.text import escape

log = logging.getLogger(__name__)

SWEEP_EVERY = timedelta(seconds=60)
JOB_SWEEP = "calendar:sweep"
RUNTIME_KEY = "calendar"
BASE_BACKOFF = timedelta(seconds=30)

AnyApp = Application[Any, Any, Any, Any, Any, Any]


@dataclass
class CalendarRuntime:
    """This process's view of the calendar files; the plan itself lives in the database."""

    content_dir: Path
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    fingerprint: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_problems: list[Problem] = field(default_factory=list)


def runtime(app: AnyApp) -> CalendarRuntime:
    services = services_of(app)
    rt = services.extras.get(RUNTIME_KEY)
    if rt is None:
        rt = CalendarRuntime(Path(services.settings.content_dir), token=services.process_id)
        services.extras[RUNTIME_KEY] = rt
    return rt


@dataclass(slots=True)
class ReloadResult:
    problems: list[Problem] = field(default_factory=list)
    sync: cal.SyncReport | None = None
    plan: cal.PlanReport | None = None
    posts: int = 0
    files: int = 0


# --- start-up, reload, sweep -------------------------------------------------------------------


async def on_startup(app: AnyApp) -> None:
    """Load the calendar, plan it, settle what happened while the bot was down, make jobs."""
    result = await reload_calendar(app)
    if not runtime(app).content_dir.is_dir():
        log.info("no calendar folder %s: nothing is planned from files", runtime(app).content_dir)
    elif result.problems:
        for problem in result.problems:
            log.error("calendar: %s", problem)
        log.error("calendar files have errors: keeping the previously loaded calendar")
    await sweep(app)
    assert app.job_queue is not None
    every = services_of(app).settings.sweep_every(SWEEP_EVERY)
    app.job_queue.run_repeating(
        sweep_job,
        interval=every,
        first=every,
        name=JOB_SWEEP,
        job_kwargs={"id": JOB_SWEEP, "replace_existing": True},
    )


async def reload_calendar(app: AnyApp) -> ReloadResult:
    """Read CONTENT_DIR and reconcile: add new posts, re-plan changed ones, cancel removed ones.

    A calendar with errors changes nothing (what was planned stays planned).
    """
    rt = runtime(app)
    services = services_of(app)
    async with rt.lock:
        stamp = fingerprint(rt.content_dir)
        # A missing folder is reported like an error: it must not cancel what is planned.
        calendar = await asyncio.to_thread(load_calendar, rt.content_dir)
        rt.last_problems = calendar.problems
        result = ReloadResult(
            problems=calendar.problems, posts=len(calendar.posts), files=len(calendar.files)
        )
        if calendar.problems:
            rt.fingerprint = stamp
            return result
        now = services.clock()
        async with services.db.begin() as session:
            result.sync = await cal.sync_calendar(session, calendar, now=now)
            await cal.cancel_inactive(session, now=now)
            result.plan = await cal.materialize(session, now=now)
        rt.fingerprint = stamp
        for chat_id in sorted(result.plan.unknown_chats):
            log.warning("calendar: target %s is not a group the bot is in (yet)", chat_id)
    await schedule_jobs(app)
    return result


async def sweep_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    await sweep(context.application)


async def sweep(app: AnyApp) -> None:
    """The safety net, every minute in every process (all of it idempotent)."""
    rt = runtime(app)
    services = services_of(app)
    if rt.fingerprint is not None and fingerprint(rt.content_dir) != rt.fingerprint:
        log.info("calendar files changed: reloading")
        result = await reload_calendar(app)
        for problem in result.problems:
            log.error("calendar: %s", problem)
    now = services.clock()
    async with services.db.begin() as session:
        taken = await cal.interrupted(
            session,
            now=now,
            me=services.process_id,
            process_lease=timedelta(seconds=services.settings.claim_lease_seconds),
        )
        await cal.materialize(session, now=now, only_due=True)
    for delivery_id in taken:
        log.warning("delivery %s: its process stopped while sending; now 'unknown'", delivery_id)
    await schedule_jobs(app)


def _ensure_job(
    app: AnyApp, known: dict[str, Any], name: str, when: datetime, callback: Any, data: Any
) -> None:
    """One job per name at `when` (past times run at once, however late)."""
    if name in known:
        if known[name] == when:
            return
        drop_job(app, name)  # (a scheduler not started yet would keep both)
    assert app.job_queue is not None
    app.job_queue.run_once(
        callback,
        when=when,
        data=data,
        name=name,
        job_kwargs={"id": name, "replace_existing": True, "misfire_grace_time": None},
    )
    known[name] = when


async def schedule_jobs(app: AnyApp) -> None:
    """Give every pending delivery, preview and deletion its job."""
    services = services_of(app)
    assert app.job_queue is not None
    known = {
        job.name: getattr(job.trigger, "run_date", None)
        for job in app.job_queue.jobs()
        if job.name and ":" in job.name
    }
    now = services.clock()
    async with services.db() as session:
        deliveries = await cal.pending_deliveries(session, until=now + cal.HORIZON * 30)
        approvals = await cal.approvals_to_preview(session, now=now)
        posts = {
            p.id: p
            for p in await session.scalars(
                select(cal.CalendarPost).where(
                    cal.CalendarPost.id.in_({a.post_id for a in approvals})
                )
            )
        }
        deletions = await cal.pending_deletions(session)
    for delivery in deliveries:
        when = max(delivery.due_at, delivery.next_attempt_at or delivery.due_at)
        _ensure_job(app, known, f"delivery:{delivery.id}", when, delivery_job, delivery.id)
    for approval in approvals:
        spec = PostSpec.from_json(posts[approval.post_id].spec)
        when = approval.due_at - timedelta(seconds=spec.review_ahead)
        _ensure_job(app, known, f"preview:{approval.id}", when, preview_job, approval.id)
    for row in deletions:
        assert row.delete_at is not None
        _ensure_job(app, known, f"delete:{row.id}", row.delete_at, delete_job, row.id)


def drop_job(app: AnyApp, name: str) -> None:
    assert app.job_queue is not None
    for job in app.job_queue.get_jobs_by_name(name):
        job.schedule_removal()


# --- delivering ----------------------------------------------------------------------------------


async def delivery_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    assert context.job is not None
    await run_delivery(context.application, context.job.data)


async def run_delivery(app: AnyApp, delivery_id: int, *, manual: bool = False) -> str | None:
    """Settle or send one delivery; returns its new state (None: not ours, or not yet)."""
    services = services_of(app)
    async with services.db.begin() as session:
        outcome = await cal.claim(
            session, delivery_id, now=services.clock(), token=runtime(app).token, manual=manual
        )
    if outcome is None:
        return None
    if isinstance(outcome, cal.Verdict):
        log.info("delivery %s: %s (%s)", delivery_id, outcome.state, outcome.reason)
        if outcome.state == cal.HELD:
            await report_held(app, outcome)
        return outcome.state
    return await send_claimed(app, outcome)


def _seconds(value: Any) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


async def send_claimed(app: AnyApp, claim: cal.Claim) -> str:
    """Send a claimed delivery and record what happened (the claim is ours alone)."""
    services = services_of(app)
    rt = runtime(app)
    kind = post_kind(claim.spec.kind)
    chat_id = claim.chat_id
    retry_in: timedelta | None = None
    try:
        if kind is None or kind.deliver is None:
            raise LookupError(f"{claim.spec.kind} posts are not available in this bot")
        try:
            message_id = await kind.deliver(
                Outgoing(app, services, chat_id, claim.spec, rt.content_dir, claim.delivery_id)
            )
        except ChatMigrated as exc:
            await services.activity.flush()
            await services.chats.migrate(chat_id, exc.new_chat_id)
            chat_id = exc.new_chat_id
            message_id = await kind.deliver(
                Outgoing(app, services, chat_id, claim.spec, rt.content_dir, claim.delivery_id)
            )
    except TimedOut as exc:
        if outcome_unknown(exc):
            state = cal.UNKNOWN
            error = f"timed out ({exc.message}): Telegram may have posted it; check the group"
        else:  # the request never left (no connection): safe to send again
            state, error = cal.PENDING, f"network: {exc.message}"
            retry_in = BASE_BACKOFF * 2 ** (claim.attempts - 1)
    except RetryAfter as exc:
        state, error = cal.PENDING, f"flood control: retry after {exc.retry_after}"
        retry_in = timedelta(seconds=_seconds(exc.retry_after) + 1)
    except Forbidden as exc:
        await _chat_gone(services, chat_id, exc.message, bot_status="kicked")
        state, error = cal.FAILED, exc.message
    except BadRequest as exc:
        if any(reason in exc.message.lower() for reason in CHAT_GONE_ERRORS):
            await _chat_gone(services, chat_id, exc.message, bot_status="left")
        state, error = cal.FAILED, exc.message
    except NetworkError as exc:  # connection problems and Telegram's 5xx
        state, error = cal.PENDING, f"network: {exc.message}"
        retry_in = BASE_BACKOFF * 2 ** (claim.attempts - 1)
    except TelegramError as exc:
        state, error = cal.FAILED, exc.message
    except (OSError, LookupError) as exc:  # a media file that vanished, a kind not installed
        state, error = cal.FAILED, str(exc)
    except Exception as exc:  # a bug in a deliverer: record it rather than leave it 'sending'
        log.exception("delivery %s of %s failed", claim.delivery_id, claim.post_key)
        state, error = cal.FAILED, f"internal error: {exc!r}"
    else:
        await _record_sent(app, claim, chat_id, message_id)
        return cal.SENT
    now = services.clock()
    async with services.db.begin() as session:
        if retry_in is not None and claim.attempts < cal.MAX_ATTEMPTS:
            await cal.record_retry(
                session, claim.delivery_id, error=error, at=now + retry_in, now=now
            )
        else:
            state = cal.FAILED if state == cal.PENDING else state
            await cal.record_outcome(session, claim.delivery_id, state=state, error=error, now=now)
    log.warning(
        "delivery %s of %s to %s: %s (%s)",
        claim.delivery_id,
        claim.post_key,
        chat_id,
        state,
        error,
    )
    if state == cal.PENDING:
        await schedule_jobs(app)
    return state


async def _chat_gone(services: Services, chat_id: int, reason: str, *, bot_status: str) -> None:
    await services.chats.deactivate(chat_id, bot_status=bot_status)
    async with services.db.begin() as session:
        await cal.cancel_chat(
            session, chat_id, reason=f"the bot can't post here: {reason}", now=services.clock()
        )


async def _record_sent(app: AnyApp, claim: cal.Claim, chat_id: int, message_id: int) -> None:
    services = services_of(app)
    async with services.db.begin() as session:
        await cal.record_sent(
            session,
            claim.delivery_id,
            message_id=message_id,
            now=services.clock(),
            delete_after=claim.spec.delete_after,
        )
    log.info("delivery %s of %s sent to %s", claim.delivery_id, claim.post_key, chat_id)
    if claim.spec.pin:
        await _pin(app, claim, chat_id, message_id)
    if claim.spec.delete_after:
        await schedule_jobs(app)


async def _pin(app: AnyApp, claim: cal.Claim, chat_id: int, message_id: int) -> None:
    """Pin the new message, then unpin the previous pin of the same post in that chat."""
    services = services_of(app)
    try:
        await app.bot.pin_chat_message(chat_id, message_id, disable_notification=claim.spec.silent)
    except TelegramError as exc:
        log.warning("could not pin delivery %s in %s: %s", claim.delivery_id, chat_id, exc)
        async with services.db.begin() as session:
            await session.execute(
                update(cal.CalendarDelivery)
                .where(cal.CalendarDelivery.id == claim.delivery_id)
                .values(error=f"sent, but could not pin: {exc}"[:500])
            )
        return
    async with services.db.begin() as session:
        await cal.set_pinned(session, claim.delivery_id, True)
        previous = await cal.pinned_before(
            session, post_id=claim.post_id, chat_id=chat_id, exclude=claim.delivery_id
        )
    for row in previous:
        try:
            await app.bot.unpin_chat_message(chat_id, message_id=row.message_id)
        except TelegramError as exc:  # already unpinned or deleted by someone: fine
            log.info("could not unpin %s in %s: %s", row.message_id, chat_id, exc)
        async with services.db.begin() as session:
            await cal.set_pinned(session, row.id, False)  # type: ignore[arg-type]


async def delete_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    assert context.job is not None
    await run_deletion(context.application, context.job.data)


async def run_deletion(app: AnyApp, delivery_id: int) -> bool:
    """delete_after: remove a sent post once (claimed like a send)."""
    services = services_of(app)
    async with services.db.begin() as session:
        target = await cal.claim_deletion(session, delivery_id, now=services.clock())
    if target is None:
        return False
    chat_id, message_id = target
    try:
        await app.bot.delete_message(chat_id, message_id)
    except TelegramError as exc:  # gone already, or older than Telegram lets bots delete
        log.info("could not delete message %s in %s: %s", message_id, chat_id, exc)
        return False
    return True


# --- approval ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reviewer:
    chat_id: int
    lang: str


async def reviewers(app: AnyApp, spec: PostSpec, chats: list[int]) -> list[Reviewer]:
    """Where previews go: the file's review chat, else the private chats of the operators of
    the post's groups who have started the bot (Telegram lets bots write only to those)."""
    services = services_of(app)
    if spec.review_chat is not None:
        chat_id = await services.chats.resolve(spec.review_chat)
        info = await services.chats.get(chat_id)
        return [Reviewer(chat_id, info.language if info else "en")]
    people: set[int] = set(services.operators.owners)
    for chat_id in chats:
        people |= await services.operators.admins(app.bot, chat_id)
    if not people:
        return []
    async with services.db() as session:
        profiles = list(
            await session.scalars(
                select(UserProfile).where(
                    UserProfile.user_id.in_(people), UserProfile.started_at.is_not(None)
                )
            )
        )
    return [
        Reviewer(p.user_id, p.language or normalize_language(p.language_code))
        for p in sorted(profiles, key=lambda p: p.user_id)
    ]


def _in_file_order(spec: PostSpec, chats: list[int]) -> list[int]:
    order = {chat_id: i for i, chat_id in enumerate(spec.targets)}
    return sorted(chats, key=lambda c: (order.get(c, len(order)), c))


async def _chat_titles(services: Services, chats: list[int]) -> str:
    async with services.db() as session:
        rows = {c.id: c for c in await session.scalars(select(Chat).where(Chat.id.in_(chats)))}
    return ", ".join(escape(rows[c].title or str(c)) if c in rows else str(c) for c in chats)


def approval_buttons(lang: str, approval_id: int, digest: str) -> InlineKeyboardMarkup:
    tag = f"{approval_id}:{digest[:10]}"
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(t(lang, "calendar.approve"), callback_data=f"cal:ok:{tag}"),
                InlineKeyboardButton(t(lang, "calendar.reject"), callback_data=f"cal:no:{tag}"),
            ],
            [InlineKeyboardButton(t(lang, "calendar.later"), callback_data=f"cal:later:{tag}")],
        ]
    )


def local_time(moment: datetime, tz: str) -> str:
    from zoneinfo import ZoneInfo

    return moment.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


async def preview_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    assert context.job is not None
    await send_preview(context.application, context.job.data)


async def send_preview(app: AnyApp, approval_id: int) -> int:
    """Send the preview of one occurrence to its reviewers (once); returns how many got it."""
    services = services_of(app)
    now = services.clock()
    async with services.db.begin() as session:
        approval = await session.get(cal.CalendarApproval, approval_id, populate_existing=True)
        if approval is None or approval.state != "pending" or approval.preview_sent_at:
            return 0
        post = await session.get(cal.CalendarPost, approval.post_id)
        assert post is not None
        spec = PostSpec.from_json(post.spec)
        if now < approval.due_at - timedelta(seconds=spec.review_ahead) - timedelta(seconds=1):
            return 0
        claimed = await session.execute(
            update(cal.CalendarApproval)
            .where(
                cal.CalendarApproval.id == approval_id,
                cal.CalendarApproval.preview_sent_at.is_(None),
            )
            .values(preview_sent_at=now)
        )
        if not claimed.rowcount:
            return 0
        chats = await cal.approval_chats(session, approval)
        digest, due_at = approval.digest, approval.due_at
    people = await reviewers(app, spec, chats)
    if not people:
        log.warning("no one to approve %s at %s: it will be held", spec.key, due_at)
        return 0
    titles = await _chat_titles(services, _in_file_order(spec, chats))
    kind = post_kind(spec.kind)
    sent = 0
    for person in people:
        try:
            if kind is not None and kind.deliver is not None and kind.preview_as_post:
                await kind.deliver(
                    Outgoing(
                        app,
                        services,
                        person.chat_id,
                        spec,
                        runtime(app).content_dir,
                        None,
                        preview=True,
                    )
                )
            await app.bot.send_message(
                person.chat_id,
                t(
                    person.lang,
                    "calendar.preview",
                    post=escape(spec.key),
                    summary=escape(spec.summary()),
                    groups=titles,
                    when=local_time(due_at, spec.schedule.tz),
                    tz=spec.schedule.tz,
                ),
                reply_markup=approval_buttons(person.lang, approval_id, digest),
            )
            sent += 1
        except TelegramError as exc:
            log.warning(
                "could not send the preview of %s to %s: %s", spec.key, person.chat_id, exc
            )
    return sent


async def report_held(app: AnyApp, verdict: cal.Verdict) -> None:
    """Tell the reviewers, once per occurrence, that a post was held for want of approval."""
    services = services_of(app)
    now = services.clock()
    async with services.db.begin() as session:
        result = await session.execute(
            update(cal.CalendarApproval)
            .where(
                cal.CalendarApproval.post_id == verdict.post_id,
                cal.CalendarApproval.due_at == verdict.due_at,
                cal.CalendarApproval.reported_at.is_(None),
            )
            .values(reported_at=now)
        )
        post = await session.get(cal.CalendarPost, verdict.post_id)
        held = list(
            await session.scalars(
                select(cal.CalendarDelivery).where(
                    cal.CalendarDelivery.post_id == verdict.post_id,
                    cal.CalendarDelivery.due_at == verdict.due_at,
                )
            )
        )
    if not result.rowcount or post is None:
        return
    spec = PostSpec.from_json(post.spec)
    chats = _in_file_order(spec, list({row.chat_id for row in held}))
    titles = await _chat_titles(services, chats)
    ids = ", ".join(str(row.id) for row in held)
    for person in await reviewers(app, spec, chats):
        try:
            await app.bot.send_message(
                person.chat_id,
                t(
                    person.lang,
                    "calendar.held",
                    post=escape(spec.key),
                    groups=titles,
                    when=local_time(verdict.due_at, spec.schedule.tz),
                    ids=ids,
                ),
            )
        except TelegramError as exc:
            log.warning("could not report held %s to %s: %s", spec.key, person.chat_id, exc)


__all__ = [
    "on_startup",
    "reload_calendar",
    "run_delivery",
    "run_deletion",
    "send_preview",
    "sweep",
]
