"""Lottery draws on time: the draw job, the live entrant count, and catching up at start-up.

The database is the record; jobs are derived from it. At start-up (and every minute, for
lotteries opened by another process) `catch_up` draws every lottery that is due — its time
passed while the bot was down, or it has its N entrants — announces draws whose process died
before announcing them, and schedules one `lottery:<id>` job per upcoming draw time. Every
path to a draw (the job, N entrants, /draw, start-up, another process) goes through
`draw_and_announce`, whose claim in the database lets exactly one of them draw and announce.

The post's entrant count is edited by a `lottery-count:<id>` job at most every
`COUNT_EDIT_INTERVAL` per lottery, across processes (the edit is claimed in the database too).
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.jobstores.base import JobLookupError
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.ext import Application

from bot.chats import ChatInfo
from bot.i18n import t
from bot.lottery import (
    DrawOutcome,
    Lottery,
    LotteryRuntime,
    Pick,
    State,
    agenda,
    begin_announcement,
    claim_count_edit,
    claim_draw,
    conditions_of,
    get_lottery,
    load_outcome,
    mark_announced,
    open_keywords,
    reclaim_announcement,
)
from bot.sending import outcome_unknown, send_text
from bot.services import BotContext, Services, services_of
from bot.text import escape, mention, split_message
from bot.timeparse import format_duration

log = logging.getLogger(__name__)

RUNTIME = "lottery"
DRAW_JOB = "lottery:{}"
COUNT_JOB = "lottery-count:{}"
SWEEP_JOB = "lottery:sweep"
JOIN_CALLBACK = "lottery:join:{}"
COUNT_EDIT_INTERVAL = timedelta(seconds=5)
SWEEP_SECONDS = 60
# A draw claimed this long ago and still not announced was abandoned by a process that died.
ANNOUNCE_LEASE = timedelta(minutes=10)
TIME_FORMAT = "%Y-%m-%d %H:%M"

AnyApp = Application[Any, Any, Any, Any, Any, Any]


def process_lease(services: Services) -> timedelta:
    """How long a process may stay silent before its claims are taken over (bot.cluster)."""
    return timedelta(seconds=services.settings.claim_lease_seconds)


def runtime_of(app: AnyApp) -> LotteryRuntime:
    return services_of(app).extras.setdefault(RUNTIME, LotteryRuntime())


def local_time(moment: datetime, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).strftime(TIME_FORMAT)


async def chat_settings(services: Services, chat_id: int) -> tuple[str, ZoneInfo]:
    """Language and time zone of a chat (English/UTC if it is unknown)."""
    info: ChatInfo | None = await services.chats.get(chat_id)
    return (info.language, info.timezone) if info else ("en", ZoneInfo("UTC"))


# --- rendering ---------------------------------------------------------------------------------


def describe_duration(lang: str, delta: timedelta) -> str:
    """`30 days` / `30 天` for whole days, else the compact form (`36h`, `1d12h`)."""
    if delta.total_seconds() % 86400 == 0:
        return t(lang, "lottery.days", n=delta.days)
    return format_duration(delta)


def draw_when(lottery: Lottery, lang: str, tz: ZoneInfo, *, keys: tuple[str, str, str]) -> str:
    """When a lottery draws, in words; `keys` are the (time, entries, both) templates."""
    values: dict[str, Any] = {"zone": tz.key, "entries": lottery.draw_entries}
    if lottery.draw_at is not None:
        values["time"] = local_time(lottery.draw_at, tz)
    if lottery.draw_at is not None and lottery.draw_entries is not None:
        return t(lang, keys[2], **values)
    return t(lang, keys[0] if lottery.draw_at is not None else keys[1], **values)


POST_WHEN = ("lottery.post_draw_at", "lottery.post_draw_entries", "lottery.post_draw_both")
LIST_WHEN = ("lottery.list_when_time", "lottery.list_when_entries", "lottery.list_when_both")


def render_post(lottery: Lottery, lang: str, tz: ZoneInfo) -> str:
    """The lottery post: prize, winners, when it draws, conditions, entrants, commitment."""
    lines = [
        t(lang, "lottery.post_title", id=lottery.id),
        t(lang, "lottery.post_prize", prize=escape(lottery.prize)),
        t(lang, "lottery.post_winners", winners=lottery.winners),
        draw_when(lottery, lang, tz, keys=POST_WHEN),
    ]
    conditions = conditions_of(lottery, tz)
    if conditions.any:
        lines.append(t(lang, "lottery.post_conditions"))
        if conditions.min_points:
            lines.append(t(lang, "lottery.cond_points", points=conditions.min_points))
        if conditions.checkins:
            needed, days = conditions.checkins
            lines.append(t(lang, "lottery.cond_checkins", needed=needed, days=days))
        if conditions.member_for:
            duration = describe_duration(lang, conditions.member_for)
            lines.append(t(lang, "lottery.cond_member", duration=duration))
        if conditions.joined_after_day:
            date = conditions.joined_after_day.isoformat()
            lines.append(t(lang, "lottery.cond_joined", date=date))
    if lottery.keyword:
        lines.append(t(lang, "lottery.post_keyword", keyword=escape(lottery.keyword)))
    lines.append(t(lang, "lottery.post_count", count=lottery.entry_count))
    state = {
        State.DRAWING: "lottery.post_drawing",
        State.DRAWN: "lottery.post_drawn",
        State.CANCELLED: "lottery.post_cancelled",
    }.get(State(lottery.state))
    if state:
        lines.append(t(lang, state))
    lines.append("")
    lines.append(t(lang, "lottery.post_commitment", commitment=lottery.commitment))
    return "\n".join(lines)


def post_keyboard(lottery: Lottery, lang: str) -> InlineKeyboardMarkup | None:
    if lottery.state != State.OPEN:
        return None
    button = InlineKeyboardButton(
        t(lang, "lottery.join_button"), callback_data=JOIN_CALLBACK.format(lottery.id)
    )
    return InlineKeyboardMarkup([[button]])


def _winner_lines(picks: list[Pick], lang: str, key: str) -> list[str]:
    return [
        t(
            lang,
            key,
            place=place,
            mention=mention(p.user_id, p.name or str(p.user_id)),
            rank=p.rank,
        )
        for place, p in enumerate(picks, start=1)
    ]


def render_announcement(outcome: DrawOutcome, lang: str) -> str:
    """The draw's result: winners (mentioned), skipped ranks, the seed and how to verify."""
    lottery = outcome.lottery
    winners, skipped = outcome.of_round(0)
    lines = [t(lang, "lottery.drawn_title", id=lottery.id, prize=escape(lottery.prize))]
    if winners:
        lines.append(t(lang, "lottery.drawn_winners"))
        lines.extend(_winner_lines(winners, lang, "lottery.winner_line"))
        if len(winners) < lottery.winners:
            lines.append(t(lang, "lottery.drawn_fewer"))
    else:
        lines.append(t(lang, "lottery.drawn_none"))
    if skipped:
        ranks = ", ".join(str(p.rank) for p in skipped)
        lines.append(t(lang, "lottery.drawn_skipped", ranks=ranks))
    lines.append(t(lang, "lottery.drawn_count", count=outcome.entrants))
    lines.append("")
    lines.append(t(lang, "lottery.drawn_proof", seed=lottery.seed, commitment=lottery.commitment))
    lines.append(t(lang, "lottery.drawn_verify", id=lottery.id, winners=lottery.winners))
    return "\n".join(lines)


def render_reroll(outcome: DrawOutcome, round: int, lang: str) -> str:
    lottery = outcome.lottery
    winners, skipped = outcome.of_round(round)
    lines = [t(lang, "lottery.reroll_title", id=lottery.id, prize=escape(lottery.prize))]
    if winners:
        lines.extend(_winner_lines(winners, lang, "lottery.reroll_line"))
    else:
        lines.append(t(lang, "lottery.reroll_none"))
    if skipped:
        ranks = ", ".join(str(p.rank) for p in skipped)
        lines.append(t(lang, "lottery.drawn_skipped", ranks=ranks))
    lines.append(t(lang, "lottery.reroll_proof", seed=lottery.seed))
    return "\n".join(lines)


# --- the post ------------------------------------------------------------------------------------


async def edit_post(bot: Bot, services: Services, lottery: Lottery) -> None:
    """Bring the lottery post up to date (count, state, button); failures are only logged."""
    if lottery.message_id is None:
        return
    lang, tz = await chat_settings(services, lottery.chat_id)
    try:
        await bot.edit_message_text(
            render_post(lottery, lang, tz),
            chat_id=lottery.chat_id,
            message_id=lottery.message_id,
            reply_markup=post_keyboard(lottery, lang),
        )
    except BadRequest as exc:
        if "not modified" not in exc.message.lower():
            log.info("could not edit lottery %s post: %s", lottery.id, exc.message)
    except Forbidden as exc:
        log.info("could not edit lottery %s post: %s", lottery.id, exc.message)
    except TelegramError as exc:
        log.warning("could not edit lottery %s post: %s", lottery.id, exc)


def request_count_refresh(app: AnyApp, lottery_id: int) -> None:
    """Queue one edit of the post's count (a no-op when one is already queued)."""
    runtime = runtime_of(app)
    if lottery_id in runtime.count_pending or app.job_queue is None:
        return
    runtime.count_pending.add(lottery_id)
    app.job_queue.run_once(
        count_job,
        COUNT_EDIT_INTERVAL,
        data=lottery_id,
        name=COUNT_JOB.format(lottery_id),
        job_kwargs={"misfire_grace_time": None},
    )


async def count_job(context: BotContext) -> None:
    """Show the current entrant count, if it changed and nobody edited in the last interval."""
    assert context.job is not None
    lottery_id = int(context.job.data)  # type: ignore[arg-type]
    app, services = context.application, context.services
    runtime_of(app).count_pending.discard(lottery_id)
    async with services.db.begin() as session:
        lottery = await claim_count_edit(
            session, lottery_id, now=services.clock(), interval=COUNT_EDIT_INTERVAL
        )
    if lottery is not None:
        await edit_post(context.bot, services, lottery)
        return
    async with services.db() as session:
        current = await get_lottery(session, lottery_id)
    if (
        current is not None
        and current.state == State.OPEN
        and current.message_id is not None
        and current.shown_count != current.entry_count
    ):
        request_count_refresh(app, lottery_id)  # edited elsewhere just now: try again later


# --- drawing -----------------------------------------------------------------------------------


def schedule_draw(app: AnyApp, lottery_id: int, when: datetime) -> None:
    """(Re)place the job that draws a lottery at its time; a time already past runs at once."""
    if app.job_queue is None:
        return
    unschedule_draw(app, lottery_id)
    app.job_queue.run_once(
        draw_job,
        when,
        data=lottery_id,
        name=DRAW_JOB.format(lottery_id),
        job_kwargs={"misfire_grace_time": None},
    )


def unschedule_draw(app: AnyApp, lottery_id: int) -> None:
    if app.job_queue is None:
        return
    for job in app.job_queue.get_jobs_by_name(DRAW_JOB.format(lottery_id)):
        with contextlib.suppress(JobLookupError):
            job.schedule_removal()


async def draw_job(context: BotContext) -> None:
    """The draw time came."""
    assert context.job is not None
    await draw_and_announce(context.application, int(context.job.data))  # type: ignore[arg-type]


async def draw_and_announce(app: AnyApp, lottery_id: int) -> bool:
    """Draw an open lottery and announce it — unless someone else already did (then False)."""
    services = services_of(app)
    async with services.db.begin() as session:
        claimed = await claim_draw(
            session, lottery_id, now=services.clock(), by=services.process_id
        )
    if not claimed:
        return False
    log.info("lottery %s drawn", lottery_id)
    unschedule_draw(app, lottery_id)
    runtime_of(app).keywords.discard(lottery_id)
    await announce(app, lottery_id)
    return True


async def announce(app: AnyApp, lottery_id: int) -> None:
    """Post the result of a claimed draw, then record it as announced and update the post.

    The attempt is recorded first (`announcing_at`). If sending fails for sure (5xx or no
    connection, after `send_text`'s retries) the mark is cleared and the lottery stays
    `drawing`: the sweep of some process announces it once `ANNOUNCE_LEASE` has passed. If
    the outcome is unknown (TimedOut, or the process died while sending) the announcement
    may be in the group, so it is not sent again: the result goes into the lottery post.
    """
    services = services_of(app)
    async with services.db() as session:
        outcome = await load_outcome(session, lottery_id)
    if outcome is None:
        return
    lang, _ = await chat_settings(services, outcome.lottery.chat_id)
    async with services.db.begin() as session:
        await begin_announcement(session, lottery_id, now=services.clock())
    try:
        sent = await send_text(
            app.bot, services, outcome.lottery.chat_id, render_announcement(outcome, lang)
        )
    except TelegramError as exc:
        if outcome_unknown(exc):
            log.warning("announcing lottery %s: no answer (%s); not resending", lottery_id, exc)
            await publish_in_post(app, lottery_id)
            return
        log.warning("announcing lottery %s failed (%s); will retry later", lottery_id, exc)
        async with services.db.begin() as session:
            await begin_announcement(session, lottery_id, now=None)
        return
    async with services.db.begin() as session:
        await mark_announced(
            session, lottery_id, announcement_id=sent[0].message_id if sent else None
        )
        lottery = await get_lottery(session, lottery_id)
    if lottery is not None:
        await edit_post(app.bot, services, lottery)


async def publish_in_post(app: AnyApp, lottery_id: int) -> None:
    """An announcement that may or may not have been posted: record the draw as announced
    and put the result into the lottery post (an edit is harmless if it was posted)."""
    services = services_of(app)
    async with services.db.begin() as session:
        await mark_announced(session, lottery_id, announcement_id=None)
        outcome = await load_outcome(session, lottery_id)
    if outcome is None or outcome.lottery.message_id is None:
        return
    lottery = outcome.lottery
    lang, _ = await chat_settings(services, lottery.chat_id)
    parts = split_message(render_announcement(outcome, lang))
    if len(parts) > 1:  # too long for one message: the post says "drawn" at least
        await edit_post(app.bot, services, lottery)
        return
    try:
        await app.bot.edit_message_text(
            parts[0], chat_id=lottery.chat_id, message_id=lottery.message_id
        )
    except TelegramError as exc:
        log.warning("could not put lottery %s's result into its post: %s", lottery_id, exc)


# --- start-up and the sweep --------------------------------------------------------------------


async def refresh_keywords(app: AnyApp) -> None:
    services = services_of(app)
    async with services.db() as session:
        rows = await open_keywords(session)
    runtime_of(app).keywords.replace(rows)


async def catch_up(app: AnyApp, *, schedule_all: bool) -> None:
    """Do what the database says is due; schedule what is ahead.

    `schedule_all` (start-up) schedules every upcoming draw; the sweep only adds jobs this
    process lacks (lotteries opened by another process).
    """
    services = services_of(app)
    async with services.db() as session:
        plan = await agenda(
            session,
            now=services.clock(),
            lease=ANNOUNCE_LEASE,
            me=services.process_id,
            process_lease=process_lease(services),
        )
    for lottery_id in plan.due:
        try:
            await draw_and_announce(app, lottery_id)
        except Exception:
            log.exception("drawing lottery %s failed", lottery_id)
    for lottery_id in plan.abandoned:
        async with services.db.begin() as session:
            mine = await reclaim_announcement(
                session,
                lottery_id,
                now=services.clock(),
                lease=ANNOUNCE_LEASE,
                me=services.process_id,
                process_lease=process_lease(services),
            )
        if not mine:
            continue
        async with services.db() as session:
            lottery = await get_lottery(session, lottery_id)
        if lottery is not None and lottery.announcing_at is not None:
            log.warning(
                "lottery %s: its process stopped while announcing; publishing in the post",
                lottery_id,
            )
            await publish_in_post(app, lottery_id)
        else:
            log.warning("announcing lottery %s, drawn by a process that stopped", lottery_id)
            await announce(app, lottery_id)
    for lottery_id, when in plan.upcoming:
        if schedule_all or (
            app.job_queue is not None
            and not app.job_queue.get_jobs_by_name(DRAW_JOB.format(lottery_id))
        ):
            schedule_draw(app, lottery_id, when)
    for lottery_id in plan.stale_counts:
        request_count_refresh(app, lottery_id)
    await refresh_keywords(app)


async def sweep_job(context: BotContext) -> None:
    await catch_up(context.application, schedule_all=False)


async def on_startup(app: AnyApp) -> None:
    """Draw what fell due while the bot was down, then schedule the rest (and keep sweeping)."""
    runtime_of(app).count_pending.clear()
    await catch_up(app, schedule_all=True)
    if app.job_queue is not None:
        sweep = services_of(app).settings.sweep_every(timedelta(seconds=SWEEP_SECONDS))
        app.job_queue.run_repeating(sweep_job, interval=sweep, first=sweep, name=SWEEP_JOB)
