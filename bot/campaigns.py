"""Campaigns (活动) and their reviews (活动复盘): a named period of a group, optional goals, and
at its end one review posted in the group.

- A campaign is a time window [starts_at, ends_at) of one group: started now and ended with
  `/campaign end`, or given with dates up front. Its KPI days are the chat-local days the
  window touches; the review compares them with the same number of days right before.
- Calendar posts, polls and lotteries belong to a campaign when their time (a post's due time,
  a poll's or lottery's creation) falls inside the window: computed at review time, no tags.
- One open (running or planned) campaign per group: `open_slot` is 1 while open and NULL
  afterwards, and UNIQUE(chat_id, open_slot) lets the database refuse a second one.
- Exactly once: whoever ends the campaign (the command, the scheduled job, a catch-up after a
  restart, any process) claims it with a conditional UPDATE open → reviewing; only the
  claimant posts the review, then records reviewed / failed. A review due during downtime is
  posted late (a review is not stale like a morning digest); a claim cut off by a crash is
  recorded as failed, never re-posted, and can be shown again with `/campaign show`.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import JSON, BigInteger, Column, UniqueConstraint, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import Field, SQLModel

from bot import calendar as cal
from bot.activity import local_day
from bot.calendar_file import PostSpec
from bot.calendar_kpi import OUTCOMES
from bot.charts import ChartSpec, cjk_font
from bot.dashboard import register_panel
from bot.digest import (
    Report,
    build_report,
    chart_spec,
    day_series,
    format_value,
    highlights,
    kpi_lines,
    metric_label,
)
from bot.i18n import t
from bot.invites import figures, joins_by_source, source_label
from bot.kpi import achievement, change, is_ceiling, known_metrics, parse_target
from bot.lottery import ENTRY, Lottery
from bot.models import chat_fk, utc_column
from bot.polls import (
    Poll,
    Survey,
    active_members,
    counts_of,
    period_days,
    poll_options,
    survey_result,
)
from bot.polls import percent as whole_percent
from bot.text import escape
from bot.timeparse import local_to_utc, parse_clock, parse_date

MAX_NAME = 64
MAX_DAYS = 366  # the longest campaign (the KPI period limit of /kpi)
MAX_GOALS = 10
STALE_CLAIM = timedelta(minutes=30)  # a "reviewing" claim older than this was interrupted
LISTED = 15  # activities of each kind named in a review

OPEN, REVIEWING, REVIEWED, FAILED, CANCELLED = (
    "open",
    "reviewing",
    "reviewed",
    "failed",
    "cancelled",
)
GOAL_WORDS = {"goal", "goals", "目标"}
FROM_WORDS = {"from", "从"}
TO_WORDS = {"to", "until", "到", "至"}


class Campaign(SQLModel, table=True):
    """One campaign of one group: its window, goals, and where its review stands."""

    __tablename__ = "campaign"
    __table_args__ = (UniqueConstraint("chat_id", "open_slot", name="uq_campaign_open"),)

    id: int | None = Field(default=None, primary_key=True)
    chat_id: int = Field(sa_column=chat_fk(index=True))
    name: str = Field(max_length=MAX_NAME)
    starts_at: datetime = Field(sa_column=utc_column(nullable=False))
    ends_at: datetime | None = Field(default=None, sa_column=utc_column())  # None: until /end
    goals: dict[str, float] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    state: str = Field(default=OPEN, max_length=12)  # open|reviewing|reviewed|failed|cancelled
    open_slot: int | None = Field(default=1)  # 1 while open, NULL after: one open per chat
    created_by: int | None = Field(default=None, sa_type=BigInteger)
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
    ended_by: int | None = Field(default=None, sa_type=BigInteger)  # /campaign end (or None)
    claimed_by: str | None = Field(default=None, max_length=64)
    claimed_at: datetime | None = Field(default=None, sa_column=utc_column())
    reviewed_at: datetime | None = Field(default=None, sa_column=utc_column())
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    error: str | None = Field(default=None, max_length=255)

    def running(self, now: datetime) -> bool:
        return self.state == OPEN and self.starts_at <= now


CAMPAIGN = Campaign.__table__  # type: ignore[attr-defined]


# --- arguments ------------------------------------------------------------------------------


class CampaignArgsError(ValueError):
    """Bad /campaign arguments: a translation key (under campaigns.) and its values."""

    def __init__(self, key: str, **values: Any) -> None:
        super().__init__(key)
        self.key = f"campaigns.{key}"
        self.values = values


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    """A campaign to create: `ends_at` None = running until /campaign end."""

    name: str
    starts_at: datetime
    ends_at: datetime | None
    goals: dict[str, float]


def parse_goals(words: Sequence[str]) -> dict[str, float]:
    """`goal dau 200 goal joins 50` (the metric names and values of /settarget)."""
    goals: dict[str, float] = {}
    index = 0
    while index < len(words):
        if words[index].lower() not in GOAL_WORDS:
            raise CampaignArgsError("err_word", word=escape(words[index]))
        if index + 2 >= len(words):
            raise CampaignArgsError("err_goal_incomplete")
        metric, raw = words[index + 1], words[index + 2]
        parsed = parse_target(metric, raw)
        if parsed is None:
            if metric.lower() not in known_metrics():
                raise CampaignArgsError(
                    "err_goal_metric", metric=escape(metric), metrics=", ".join(known_metrics())
                )
            raise CampaignArgsError("err_goal_value", metric=escape(metric), value=escape(raw))
        goals[parsed[0]] = parsed[1]
        index += 3
    if len(goals) > MAX_GOALS:
        raise CampaignArgsError("err_goals_many", max=MAX_GOALS)
    return goals


def _name(words: Sequence[str]) -> str:
    name = " ".join(words).strip()
    if not name:
        raise CampaignArgsError("err_no_name")
    if len(name) > MAX_NAME:
        raise CampaignArgsError("err_name_long", length=len(name), max=MAX_NAME)
    return name


def _split_at(words: Sequence[str], markers: set[str]) -> int:
    return next((i for i, w in enumerate(words) if w.lower() in markers), len(words))


def _moment(words: Sequence[str], tz: ZoneInfo, *, end: bool) -> tuple[datetime, int]:
    """`2026-12-01` (the day's start; as an end, the end of that day) or `2026-12-01 20:00`;
    returns the moment and the words used."""
    day = parse_date(words[0]) if words else None
    if day is None:
        raise CampaignArgsError("err_date", value=escape(words[0] if words else "—"))
    clock = parse_clock(words[1]) if len(words) > 1 else None
    if clock is None:
        return local_to_utc(day + timedelta(days=1) if end else day, time(0, 0), tz), 1
    return local_to_utc(day, clock, tz), 2


def looks_dated(words: Sequence[str]) -> bool:
    """Whether the words give dates up front (`… from 2026-12-01 …`): then every word before
    is the name, even `End of year` or `Show time`."""
    return any(
        w.lower() in FROM_WORDS and i + 1 < len(words) and parse_date(words[i + 1]) is not None
        for i, w in enumerate(words)
    )


def parse_start(words: Sequence[str], *, now: datetime) -> CampaignSpec:
    """`/campaign start NAME [goal METRIC VALUE …]`: running from now until /campaign end."""
    cut = _split_at(words, GOAL_WORDS)
    return CampaignSpec(_name(words[:cut]), now, None, parse_goals(words[cut:]))


def parse_dated(words: Sequence[str], *, now: datetime, tz: ZoneInfo) -> CampaignSpec:
    """`/campaign NAME from 2026-12-01 to 2026-12-14 [goal METRIC VALUE …]` (chat-local dates,
    both days included; a time may follow each date)."""
    # The first `from` followed by a date (a name may contain the word: "Gifts from Santa").
    markers = [i for i, w in enumerate(words) if w.lower() in FROM_WORDS]
    if not markers:
        raise CampaignArgsError("err_form")
    dated = [i for i in markers if i + 1 < len(words) and parse_date(words[i + 1]) is not None]
    start_at = dated[0] if dated else markers[0]
    name = _name(words[:start_at])
    rest = words[start_at + 1 :]
    to_at = _split_at(rest, TO_WORDS)
    if to_at == len(rest):
        raise CampaignArgsError("err_no_end")
    starts, used = _moment(rest[:to_at], tz, end=False)
    if used < to_at:
        raise CampaignArgsError("err_word", word=escape(rest[used]))
    ends, used = _moment(rest[to_at + 1 :], tz, end=True)
    goals = parse_goals(rest[to_at + 1 + used :])
    if ends <= starts:
        raise CampaignArgsError("err_order")
    if ends - starts > timedelta(days=MAX_DAYS):
        raise CampaignArgsError("err_too_long", max=MAX_DAYS)
    return CampaignSpec(name, starts, ends, goals)


# --- storing and claiming -------------------------------------------------------------------


async def open_campaign(session: AsyncSession, chat_id: int) -> Campaign | None:
    """The group's running or planned campaign, if any."""
    return await session.scalar(
        select(Campaign).where(Campaign.chat_id == chat_id, Campaign.open_slot == 1)
    )


async def create(
    db: async_sessionmaker[AsyncSession],
    chat_id: int,
    spec: CampaignSpec,
    *,
    by: int,
    now: datetime,
) -> Campaign | None:
    """Insert the campaign; None when the group already has an open one (the UNIQUE slot
    decides, so two operators starting at once cannot both succeed)."""
    values = {
        "chat_id": chat_id,
        "name": spec.name,
        "starts_at": spec.starts_at,
        "ends_at": spec.ends_at,
        "goals": spec.goals,
        "state": OPEN,
        "open_slot": 1,
        "created_by": by,
        "created_at": now,
    }
    async with db.begin() as session:
        if await open_campaign(session, chat_id) is not None:
            return None
        insert = _insert(session).values(**values).on_conflict_do_nothing()
        result = await session.execute(insert.returning(CAMPAIGN.c.id))
        new_id = result.scalar()
    if new_id is None:
        return None
    async with db() as session:
        return await session.get(Campaign, new_id)


def _insert(session: AsyncSession) -> Any:
    if session.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(CAMPAIGN)


async def cancel(db: async_sessionmaker[AsyncSession], campaign_id: int, *, now: datetime) -> bool:
    """Drop an open campaign without a review."""
    async with db.begin() as session:
        result = await session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.state == OPEN)
            .values(state=CANCELLED, open_slot=None, reviewed_at=now)
        )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def claim_review(
    db: async_sessionmaker[AsyncSession],
    campaign_id: int,
    *,
    now: datetime,
    worker: str,
    ended_by: int | None = None,
) -> Campaign | None:
    """End the campaign and claim its review; the Campaign when this caller must post it.

    `ended_by` set (the /campaign end command): the campaign ends now unless its planned end
    has passed; otherwise (the schedule) only a campaign whose end has come is claimed.
    """
    async with db.begin() as session:
        row = await session.get(Campaign, campaign_id)
        if row is None or row.state != OPEN or row.starts_at > now:
            return None
        if ended_by is None and (row.ends_at is None or row.ends_at > now):
            return None
        ends_at = now if row.ends_at is None or row.ends_at > now else row.ends_at
        result = await session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.state == OPEN)
            .values(
                state=REVIEWING,
                open_slot=None,
                ends_at=ends_at,
                ended_by=ended_by,
                claimed_by=worker[:64],
                claimed_at=now,
            )
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            return None
    async with db() as session:
        return await session.get(Campaign, campaign_id)


async def finish_review(
    db: async_sessionmaker[AsyncSession],
    campaign_id: int,
    *,
    now: datetime,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    async with db.begin() as session:
        await session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.state == REVIEWING)
            .values(
                state=FAILED if error else REVIEWED,
                reviewed_at=now,
                result=result,
                error=error[:255] if error else None,
            )
        )


async def recover_interrupted(db: async_sessionmaker[AsyncSession], *, now: datetime) -> int:
    """Review claims older than STALE_CLAIM were cut off by a crash: recorded as failed, never
    re-posted (the review may have gone out; /campaign show can still show it)."""
    async with db.begin() as session:
        result = await session.execute(
            update(Campaign)
            .where(Campaign.state == REVIEWING, Campaign.claimed_at < now - STALE_CLAIM)
            .values(state=FAILED, reviewed_at=now, error="interrupted")
        )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def due_for_review(session: AsyncSession, now: datetime) -> list[Campaign]:
    """Open campaigns whose planned end has come (any group)."""
    return list(
        await session.scalars(
            select(Campaign)
            .where(Campaign.open_slot == 1, Campaign.ends_at.is_not(None), Campaign.ends_at <= now)
            .order_by(Campaign.ends_at, Campaign.id)
        )
    )


async def planned_ends(session: AsyncSession) -> list[Campaign]:
    """Open campaigns with a planned end (to schedule their review)."""
    return list(
        await session.scalars(
            select(Campaign).where(Campaign.open_slot == 1, Campaign.ends_at.is_not(None))
        )
    )


async def find(session: AsyncSession, chat_id: int, key: str) -> Campaign | None:
    """A campaign of the group by id (`12`, `#12`) or name (case-insensitive; the latest)."""
    text = key.strip().lstrip("#")
    if text.isdigit():
        found = await session.get(Campaign, int(text))
        if found is not None and found.chat_id == chat_id:
            return found
    return await session.scalar(
        select(Campaign)
        .where(Campaign.chat_id == chat_id, func.lower(Campaign.name) == key.strip().lower())
        .order_by(Campaign.starts_at.desc(), Campaign.id.desc())
        .limit(1)
    )


async def past(session: AsyncSession, chat_id: int, limit: int = 20) -> list[Campaign]:
    """The group's campaigns, newest first (cancelled ones left out)."""
    return list(
        await session.scalars(
            select(Campaign)
            .where(Campaign.chat_id == chat_id, Campaign.state != CANCELLED)
            .order_by(Campaign.starts_at.desc(), Campaign.id.desc())
            .limit(limit)
        )
    )


# --- the review -----------------------------------------------------------------------------


def campaign_days(campaign: Campaign, tz: ZoneInfo, now: datetime) -> tuple[date, date]:
    """The chat-local days the window touches (its end is exclusive)."""
    ends = campaign.ends_at if campaign.ends_at is not None and campaign.ends_at <= now else now
    first = local_day(campaign.starts_at, tz)
    last = local_day(max(ends - timedelta(microseconds=1), campaign.starts_at), tz)
    return first, last


@dataclass(slots=True)
class PostLine:
    key: str
    due_at: datetime
    summary: str
    state: str


@dataclass(slots=True)
class PollLine:
    title: str
    survey: bool
    closed: bool
    voters: int
    active: int


@dataclass(slots=True)
class LotteryLine:
    id: int
    prize: str
    state: str
    entrants: int


@dataclass(slots=True)
class Activities:
    """What happened inside the window: planned posts, polls and lotteries."""

    posts: list[PostLine]
    polls: list[PollLine]
    lotteries: list[LotteryLine]

    def post_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("content_sent", "content_failed", "content_missed"), 0)
        for post in self.posts:
            counts[OUTCOMES[post.state]] += 1
        return counts


async def activities(
    session: AsyncSession, chat_id: int, low: datetime, high: datetime, tz: ZoneInfo
) -> Activities:
    """Posts due, polls and lotteries created in [low, high)."""
    posts = [
        PostLine(
            post.key, delivery.due_at, PostSpec.from_json(post.spec).summary(), delivery.state
        )
        for delivery, post in (
            await session.execute(
                select(cal.CalendarDelivery, cal.CalendarPost)
                .join(cal.CalendarPost, cal.CalendarPost.id == cal.CalendarDelivery.post_id)
                .where(
                    cal.CalendarDelivery.chat_id == chat_id,
                    cal.CalendarDelivery.due_at >= low,
                    cal.CalendarDelivery.due_at < high,
                    cal.CalendarDelivery.state.in_(list(OUTCOMES)),
                )
                .order_by(cal.CalendarDelivery.due_at, cal.CalendarDelivery.id)
            )
        ).all()
    ]
    polls: list[tuple[datetime, PollLine]] = []
    for poll in await session.scalars(
        select(Poll).where(
            Poll.chat_id == chat_id,
            Poll.survey_id.is_(None),
            Poll.created_at >= low,
            Poll.created_at < high,
        )
    ):
        voters = poll.total_voters
        if voters is None:
            _, voters = await counts_of(session, poll, await poll_options(session, poll.id))  # type: ignore[arg-type]
        first, last = period_days(poll.created_at, poll.closed_at or high, tz)
        active = max(await active_members(session, chat_id, first, last), voters)
        line = PollLine(poll.question, False, poll.state == "closed", voters, active)
        polls.append((poll.created_at, line))
    for survey in await session.scalars(
        select(Survey).where(
            Survey.chat_id == chat_id, Survey.created_at >= low, Survey.created_at < high
        )
    ):
        result = await survey_result(session, survey, tz=tz, until=survey.closed_at or high)
        line = PollLine(
            survey.title, True, survey.state == "closed", result.respondents, result.active
        )
        polls.append((survey.created_at, line))
    polls.sort(key=lambda item: item[0])
    entrants = func.count(ENTRY.c.user_id)
    lotteries = [
        LotteryLine(int(lottery_id), prize, state, int(count))
        for lottery_id, prize, state, count in (
            await session.execute(
                select(Lottery.id, Lottery.prize, Lottery.state, entrants)
                .select_from(Lottery)
                .outerjoin(ENTRY, ENTRY.c.lottery_id == Lottery.id)
                .where(
                    Lottery.chat_id == chat_id,
                    Lottery.created_at >= low,
                    Lottery.created_at < high,
                )
                .group_by(Lottery.id, Lottery.prize, Lottery.state, Lottery.created_at)
                .order_by(Lottery.created_at, Lottery.id)
            )
        ).all()
    ]
    return Activities(posts, [line for _, line in polls], lotteries)


@dataclass(slots=True)
class Review:
    """A campaign review ready to send: caption for the chart, text, chart, summary figures."""

    caption: str
    text: str
    chart: ChartSpec
    result: dict[str, Any]


def goal_reached(metric: str, actual: object, goal: float) -> bool | None:
    reached = achievement(actual, goal)  # type: ignore[arg-type]
    if reached is None:
        return None
    return reached <= 1 if is_ceiling(metric) else reached >= 1


def summary(report: Report, goals: dict[str, float], days: int) -> dict[str, Any]:
    """The figures `/campaigns` shows in one line, kept with the campaign."""
    current, before = report.current, report.comparisons[0][1]
    met = [goal_reached(m, current.get(m), g) for m, g in goals.items()]
    return {
        "days": days,
        "dau": current.get("dau"),
        "dau_before": before.get("dau"),
        "dau_change": change(current.get("dau"), before.get("dau")),
        "messages": current.get("messages"),
        "joins": current.get("joins"),
        "net": current.get("net"),
        "goals": len(goals),
        "goals_met": sum(1 for m in met if m),
    }


def _chart_text(text: str) -> str:
    """Matplotlib reads $…$ as math: show user text literally."""
    return text.replace("$", r"\$")


async def build_review(
    session: AsyncSession,
    campaign: Campaign,
    *,
    title: str,
    lang: str,
    tz: ZoneInfo,
    now: datetime,
) -> Review:
    """Everything the review says, in one read session (no Telegram, no writes)."""
    today = local_day(now, tz)
    first, last = campaign_days(campaign, tz, now)
    length = (last - first).days + 1
    before_first, before_last = first - timedelta(days=length), first - timedelta(days=1)
    report = await build_report(
        session, campaign.chat_id, "period", first, last, today=today, tz=tz
    )
    report.goals = dict(campaign.goals)
    current = report.current
    high = min(campaign.ends_at or now, now)
    heading = t(
        lang,
        "campaigns.review_title",
        name=escape(campaign.name),
        id=campaign.id,
        group=escape(title or str(campaign.chat_id)),
    )
    period = t(
        lang,
        "campaigns.review_period",
        start=first.isoformat(),
        end=last.isoformat(),
        days=length,
        before_start=before_first.isoformat(),
        before_end=before_last.isoformat(),
    )
    hl = f"💡 {escape(highlights(report, lang))}"
    lines = [heading, period, hl]
    if report.goals:
        met = 0
        goal_lines = []
        for metric, goal in report.goals.items():
            actual = current.get(metric)
            reached = achievement(actual, goal)
            good = goal_reached(metric, actual, goal)
            met += bool(good)
            goal_lines.append(
                t(
                    lang,
                    "campaigns.goal_line",
                    mark="✅" if good else ("—" if good is None else "❌"),
                    metric=metric_label(metric, lang),
                    actual=format_value(metric, actual, lang),
                    goal=format_value(metric, goal, lang),
                    percent="—" if reached is None else f"{reached * 100:.0f}%",
                )
            )
        lines += ["", t(lang, "campaigns.goals_title", met=met, total=len(report.goals))]
        lines += goal_lines
    lines += ["", t(lang, "campaigns.figures_title")]
    lines += kpi_lines(report, lang)
    found = await activities(session, campaign.chat_id, campaign.starts_at, high, tz)
    lines += ["", t(lang, "campaigns.activities_title")]
    lines += _activity_lines(found, lang, tz)
    sources = await joins_by_source(session, campaign.chat_id, first, last, today=today)
    if sources:
        lines += ["", t(lang, "campaigns.sources_title")]
        lines += [f"• {source_label(lang, row)}: {figures(lang, row)}" for row in sources]
    if current.partial:
        lines += ["", t(lang, "kpi.partial_note")]
    series = await day_series(session, campaign.chat_id, before_first, last, today=today)
    chart_lang = lang if lang != "zh" or cjk_font() is not None else "en"
    goals_for_chart = {"dau": campaign.goals["dau"]} if "dau" in campaign.goals else {}
    chart = chart_spec(
        t(chart_lang, "campaigns.chart_title", name=_chart_text(campaign.name)),
        series,
        goals_for_chart,
        lang,
    )
    chart = dataclasses.replace(
        chart,
        shade=(first, last),
        labels={**chart.labels, "shade": t(chart_lang, "campaigns.chart_span")},
    )
    return Review(
        caption=f"{heading}\n{period}\n{hl}",
        text="\n".join(lines),
        chart=chart,
        result=summary(report, report.goals, length),
    )


def _activity_lines(found: Activities, lang: str, tz: ZoneInfo) -> list[str]:
    if not (found.posts or found.polls or found.lotteries):
        return [t(lang, "campaigns.no_activities")]
    lines: list[str] = []
    if found.posts:
        counts = found.post_counts()
        lines.append(
            t(
                lang,
                "campaigns.posts",
                sent=counts["content_sent"],
                failed=counts["content_failed"],
                missed=counts["content_missed"],
            )
        )
        for post in found.posts[:LISTED]:
            lines.append(
                t(
                    lang,
                    "campaigns.post_line",
                    time=post.due_at.astimezone(tz).strftime("%m-%d %H:%M"),
                    key=escape(post.key),
                    summary=escape(post.summary[:80]),
                    state=t(lang, f"campaigns.post_state.{post.state}"),
                )
            )
        if len(found.posts) > LISTED:
            lines.append(t(lang, "kpi.and_more_items", count=len(found.posts) - LISTED))
    if found.polls:
        voters = sum(p.voters for p in found.polls)
        active = sum(p.active for p in found.polls)
        lines.append(
            t(
                lang,
                "campaigns.polls",
                count=len(found.polls),
                percent=whole_percent(voters, active),
            )
        )
        for poll in found.polls[:LISTED]:
            lines.append(
                t(
                    lang,
                    "campaigns.poll_line",
                    title=escape(poll.title),
                    voters=poll.voters,
                    active=poll.active,
                    percent=whole_percent(poll.voters, poll.active),
                    open="" if poll.closed else t(lang, "campaigns.still_open"),
                )
            )
        if len(found.polls) > LISTED:
            lines.append(t(lang, "kpi.and_more_items", count=len(found.polls) - LISTED))
    if found.lotteries:
        lines.append(
            t(
                lang,
                "campaigns.lotteries",
                count=len(found.lotteries),
                entrants=sum(x.entrants for x in found.lotteries),
            )
        )
        for lottery in found.lotteries[:LISTED]:
            lines.append(
                t(
                    lang,
                    "campaigns.lottery_line",
                    id=lottery.id,
                    prize=escape(lottery.prize),
                    entrants=lottery.entrants,
                    state=t(lang, f"campaigns.lottery_state.{lottery.state}"),
                )
            )
        if len(found.lotteries) > LISTED:
            lines.append(t(lang, "kpi.and_more_items", count=len(found.lotteries) - LISTED))
    return lines


# --- one line per campaign -------------------------------------------------------------------


def window_text(campaign: Campaign, tz: ZoneInfo) -> str:
    """`2026-12-01 00:00 → 2026-12-15 00:00` (chat-local), `… → …` while open-ended."""
    start = campaign.starts_at.astimezone(tz).strftime("%Y-%m-%d %H:%M")
    end = campaign.ends_at.astimezone(tz).strftime("%Y-%m-%d %H:%M") if campaign.ends_at else "…"
    return f"{start} → {end}"


def goals_text(goals: dict[str, float], lang: str) -> str:
    if not goals:
        return t(lang, "campaigns.no_goals")
    return ", ".join(
        f"{metric_label(m, lang)} {format_value(m, v, lang)}" for m, v in goals.items()
    )


def list_line(campaign: Campaign, lang: str, tz: ZoneInfo, now: datetime) -> str:
    """`/campaigns`: one line with the campaign's result (or where it stands)."""
    head = t(
        lang,
        "campaigns.list_head",
        id=campaign.id,
        name=escape(campaign.name),
        window=window_text(campaign, tz),
    )
    result = campaign.result
    if campaign.state == REVIEWED and result:
        dau_change = result.get("dau_change")
        parts = [
            t(
                lang,
                "campaigns.list_result",
                dau=format_value("dau", result.get("dau"), lang),
                change="—" if dau_change is None else f"{dau_change * 100:+.0f}%",
                joins=result.get("joins", 0),
                net=f"{int(result.get('net') or 0):+d}",
            )
        ]
        if result.get("goals"):
            parts.append(
                t(lang, "campaigns.list_goals", met=result["goals_met"], total=result["goals"])
            )
        return f"{head} · " + " · ".join(parts)
    if campaign.state == OPEN:
        state = "running" if campaign.starts_at <= now else "planned"
    else:
        state = campaign.state
    return f"{head} · {t(lang, 'campaigns.state.' + state)}"


# --- the dashboard panel ----------------------------------------------------------------------

PANEL_CAMPAIGNS = 10


async def campaigns_panel(
    session: AsyncSession, chat_id: int, today: date, tz: ZoneInfo, lang: str
) -> dict[str, Any] | None:
    """Dashboard: average DAU before and during each of the last reviewed campaigns (a Plotly
    figure); None while the group has none."""
    reviewed = [
        c
        for c in await past(session, chat_id, PANEL_CAMPAIGNS * 2)
        if c.state == REVIEWED and c.result
    ][:PANEL_CAMPAIGNS]
    if not reviewed:
        return None
    reviewed.reverse()  # oldest first, left to right
    names = [f"#{c.id} {html.escape(c.name)}" for c in reviewed]
    results = [c.result or {} for c in reviewed]

    def bars(key: str, label: str) -> dict[str, Any]:
        return {"type": "bar", "name": label, "x": names, "y": [r.get(key) for r in results]}

    return {
        "data": [
            bars("dau_before", t(lang, "campaigns.panel_before")),
            bars("dau", t(lang, "campaigns.panel_during")),
        ],
        "layout": {
            "title": {"text": t(lang, "campaigns.panel_title")},
            "barmode": "group",
            "height": 320,
            "margin": {"l": 50, "r": 20, "t": 50, "b": 80},
            "legend": {"orientation": "h", "y": -0.3},
            "yaxis": {"rangemode": "tozero"},
        },
    }


register_panel("campaigns", campaigns_panel)


__all__ = [
    "Campaign",
    "CampaignArgsError",
    "CampaignSpec",
    "Review",
    "activities",
    "build_review",
    "campaign_days",
    "claim_review",
    "create",
    "finish_review",
    "parse_dated",
    "parse_start",
]
