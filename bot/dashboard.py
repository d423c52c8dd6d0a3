"""What the operators' dashboard shows, as plain data read from the database.

The web layer (bot/web) renders it; everything here is a function over an AsyncSession with
the clock passed in, so it is tested without HTTP. Figures come from the features that own
them (bot.kpi, bot.calendar, bot.lottery, bot.polls, bot.checkins), never recomputed here —
except the weekly retention grid, which the KPI module has no shape for.

Panels other features provide (growth analytics: segments, activity heat map, joins by
source) plug in with `register_panel`; the overview shows whatever is registered and omits
the rest.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from html import unescape
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, literal_column, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import calendar as cal
from bot import kpi
from bot.checkins import checkin_leaderboard, display_names, month_start, week_start
from bot.lottery import Lottery, LotteryEntry, State, chat_lotteries, verify
from bot.models import Chat, ChatAdmin, Member
from bot.moderation import MemberWarning
from bot.points import PointsBalance
from bot.polls import Listing, list_polls
from bot.post_kinds import post_kind

# --- overview -------------------------------------------------------------------------------

# Every §4 day metric but D30 retention (a month-old cohort says little about today).
CARD_METRICS = tuple(metric for metric in kpi.DAY_METRICS if metric != "retention_d30")
TREND_DAYS = (30, 90)
COHORT_WEEKS = 12


@dataclass(frozen=True, slots=True)
class Card:
    """One KPI for today (so far) and yesterday, with the change and the target."""

    metric: str
    today: float | int | None
    yesterday: float | int | None
    change_today: float | None  # today vs yesterday
    change_yesterday: float | None  # yesterday vs the day before
    target: float | None
    achievement_today: float | None
    achievement_yesterday: float | None


@dataclass(frozen=True, slots=True)
class CohortWeek:
    """Members who joined in one week; `rates[k]` = share active in their (k+1)-th week after
    joining (days 7k+1 .. 7k+7 after each one's join day), None while not over."""

    start: date
    size: int
    rates: list[float | None]


@dataclass(slots=True)
class Overview:
    today: date
    cards: list[Card]
    trend: list[kpi.DayKpis]
    cohorts: list[CohortWeek]
    partial_today: bool
    panels: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


# A growth panel: (session, chat_id, today, tz, lang) -> a Plotly figure as a dict (or None to
# omit it for this group). Its title is the figure's own layout title.
PanelProvider = Callable[
    [AsyncSession, int, date, ZoneInfo, str], Awaitable[dict[str, Any] | None]
]
PANELS: dict[str, PanelProvider] = {}
PANEL_ORDER: dict[str, int] = {}


def register_panel(name: str, provider: PanelProvider, *, order: int = 100) -> None:
    """A feature adds a chart to the overview, shown after the built-in ones by `order`
    (then by registration), so the page order does not depend on which module is imported
    first."""
    PANELS[name] = provider
    PANEL_ORDER[name] = order


async def overview(
    session: AsyncSession, chat_id: int, *, now: datetime, tz: ZoneInfo, days: int, lang: str
) -> Overview:
    today = kpi.local_today(now, tz)
    yesterday = today - timedelta(days=1)
    snaps = [
        await kpi.day_snapshot(session, chat_id, day, today=today, tz=tz)
        for day in (today, yesterday, yesterday - timedelta(days=1))
    ]
    goals = await kpi.targets(session, chat_id)
    cards = []
    for metric in CARD_METRICS:
        now_v, prev_v, before_v = (s.get(metric) for s in snaps)
        goal = goals.get(metric)
        cards.append(
            Card(
                metric,
                now_v,
                prev_v,
                kpi.change(now_v, prev_v),
                kpi.change(prev_v, before_v),
                goal,
                kpi.achievement(now_v, goal),
                kpi.achievement(prev_v, goal),
            )
        )
    trend = await kpi.daily_kpis(
        session, chat_id, today - timedelta(days=days - 1), today, today=today, tz=tz
    )
    result = Overview(today, cards, trend, await cohort_weeks(session, chat_id, today), False)
    result.partial_today = snaps[0].partial
    ranked = sorted(PANELS, key=lambda n: PANEL_ORDER.get(n, 100))  # stable: ties keep order
    for name in ranked:
        figure = await PANELS[name](session, chat_id, today, tz, lang)
        if figure is not None:
            result.panels.append((name, figure))
    return result


async def cohort_weeks(
    session: AsyncSession, chat_id: int, today: date, weeks: int = COHORT_WEEKS
) -> list[CohortWeek]:
    """Join week × week since joining, from the rollups (joins and active days)."""
    first = week_start(today) - timedelta(weeks=weeks - 1)
    joined: dict[int, date] = {}
    rows = await session.execute(
        select(kpi.DA.user_id, func.min(kpi.DA.day))
        .where(kpi.DA.chat_id == chat_id, kpi.DA.day >= first, kpi.DA.joins > literal_column("0"))
        .group_by(kpi.DA.user_id)
    )
    for user_id, day in rows:
        joined[int(user_id)] = day
    active: dict[int, set[date]] = {}
    users = sorted(joined)
    for chunk in kpi._chunks(users, 500):
        found = await session.execute(
            select(kpi.DA.user_id, kpi.DA.day).where(
                kpi.DA.chat_id == chat_id,
                kpi.DA.user_id.in_(chunk),
                kpi.DA.day > first,
                kpi.ACTIVE,
            )
        )
        for user_id, day in found:
            active.setdefault(int(user_id), set()).add(day)
    by_week: dict[date, list[int]] = {}
    for user_id, day in joined.items():
        by_week.setdefault(week_start(day), []).append(user_id)
    result = []
    for start in sorted(by_week):
        members = by_week[start]
        last_join = max(joined[u] for u in members)
        rates: list[float | None] = []
        for k in range((today - start).days // 7 + 1):
            if last_join + timedelta(days=7 * k + 7) >= today:
                rates.append(None)
                continue
            kept = 0
            for user_id in members:
                low = joined[user_id] + timedelta(days=7 * k + 1)
                high = joined[user_id] + timedelta(days=7 * k + 7)
                if any(low <= d <= high for d in active.get(user_id, ())):
                    kept += 1
            rates.append(kept / len(members))
        result.append(CohortWeek(start, len(members), rates))
    return result


# --- groups a person operates ---------------------------------------------------------------


async def candidate_groups(session: AsyncSession, user_id: int, *, owner: bool) -> list[Chat]:
    """Active groups the person may operate (owners: all): where the admin cache lists them
    or where they are on the roster. The caller still asks OperatorCheck for each (it
    refreshes a stale cache)."""
    query = select(Chat).where(Chat.active, Chat.type.in_(["group", "supergroup"]))
    if not owner:
        query = query.where(
            or_(
                Chat.id.in_(select(ChatAdmin.chat_id).where(ChatAdmin.user_id == user_id)),
                Chat.id.in_(select(Member.chat_id).where(Member.user_id == user_id)),
            )
        )
    return list(await session.scalars(query.order_by(Chat.title, Chat.id)))


# --- calendar -------------------------------------------------------------------------------

AWAITING = "awaiting_approval"
PLANNED = "planned"  # an occurrence further ahead than the deliveries planned so far (48 h)
MAX_PROJECTED = 500
_STATUS = {
    cal.PENDING: "pending",
    cal.SENDING: "pending",
    cal.SENT: "sent",
    cal.FAILED: "failed",
    cal.UNKNOWN: "failed",
    cal.MISSED: "missed",
    cal.HELD: "missed",
    cal.SKIPPED: "skipped",
    cal.CANCELLED: "cancelled",
}
_TAGS = re.compile(r"<[^>]+>")


@dataclass(frozen=True, slots=True)
class CalendarEntry:
    delivery_id: int | None  # None: projected from the post's schedule, no row yet
    post_id: int
    post_key: str
    due: datetime  # chat-local
    status: str  # pending | sent | failed | missed | awaiting_approval | skipped | cancelled
    kind: str
    summary: str
    preview: str  # plain text (the post's text or caption, tags removed)
    media: str | None
    error: str | None
    approval_id: int | None = None
    approval_digest: str | None = None
    approval_state: str | None = None
    needs_approval: bool = False
    media_local: bool = False  # a file under CONTENT_DIR the dashboard can show

    @property
    def anchor(self) -> str:
        return (
            str(self.delivery_id)
            if self.delivery_id
            else f"p-{self.post_key}-{int(self.due.timestamp())}"
        )


def preview_of(spec: dict[str, Any]) -> tuple[str, str, str | None]:
    """(one-line summary, plain preview text, media name or file id) of a stored post."""
    content = spec.get("content") or {}
    kind = post_kind(spec.get("kind", ""))
    try:
        summary = kind.summary(content) if kind else str(spec.get("kind"))
    except (KeyError, TypeError):
        summary = str(spec.get("kind"))
    raw = content.get("text") or content.get("caption") or content.get("question") or ""
    if not raw and "prize" in content:
        raw = str(content["prize"])
    text = unescape(_TAGS.sub("", str(raw)))
    media = content.get("media")
    return summary, text, str(media) if media else None


async def calendar_entries(
    session: AsyncSession,
    chat_id: int,
    *,
    start: datetime,
    end: datetime,
    now: datetime,
    tz: ZoneInfo,
) -> list[CalendarEntry]:
    """Deliveries planned for the group between start and end (UTC), with their approval."""
    A, D, P = cal.CalendarApproval, cal.CalendarDelivery, cal.CalendarPost
    rows = await session.execute(
        select(D, P, A)
        .join(P, P.id == D.post_id)
        .outerjoin(A, (A.post_id == D.post_id) & (A.due_at == D.due_at))
        .where(D.chat_id == chat_id, D.due_at >= start, D.due_at < end)
        .order_by(D.due_at, D.id)
    )
    entries = []
    for delivery, post, approval in rows.all():
        status = _STATUS.get(delivery.state, delivery.state)
        if (
            delivery.state == cal.PENDING
            and approval is not None
            and approval.state in ("pending", "later")
        ):
            status = AWAITING
        summary, text, media = preview_of(post.spec)
        entries.append(
            CalendarEntry(
                delivery_id=delivery.id,
                post_id=post.id,
                post_key=post.key,
                due=delivery.due_at.astimezone(tz),
                status=status,
                kind=str(post.spec.get("kind", "")),
                summary=summary,
                preview=text,
                media=media,
                error=delivery.error,
                approval_id=approval.id if approval else None,
                approval_digest=approval.digest if approval else None,
                approval_state=approval.state if approval else None,
                media_local=bool(media and post.spec.get("content", {}).get("local")),
            )
        )
    if end > now and not await cal.is_paused(session, chat_id):
        later = await _projected(session, chat_id, entries, start=max(start, now), end=end, tz=tz)
        entries.extend(later)
        entries.sort(key=lambda e: (e.due, e.delivery_id or 0))
    return entries


async def _projected(
    session: AsyncSession,
    chat_id: int,
    known: list[CalendarEntry],
    *,
    start: datetime,
    end: datetime,
    tz: ZoneInfo,
) -> list[CalendarEntry]:
    """Occurrences of the group's posts in [start, end) that have no delivery row yet (rows
    are planned 48 h ahead), read from the stored post specs with the schedule's own rules."""
    from bot.calendar_file import PostSpec

    have = {(e.post_key, e.due) for e in known}
    posts = await session.scalars(
        select(cal.CalendarPost).where(cal.CalendarPost.active, cal.CalendarPost.enabled)
    )
    found: list[CalendarEntry] = []
    for post in posts:
        try:
            spec = PostSpec.from_json(post.spec)
        except (KeyError, TypeError, ValueError):
            continue  # not a schedulable spec (e.g. a one-off whose row is the record)
        if chat_id not in spec.targets or not spec.enabled:
            continue
        summary, text, media = preview_of(post.spec)
        for moment in spec.schedule.occurrences(start, end, limit=MAX_PROJECTED):
            due = moment.astimezone(tz)
            if (post.key, due) in have or len(found) >= MAX_PROJECTED:
                continue
            found.append(
                CalendarEntry(
                    None,
                    post.id,  # type: ignore[arg-type]
                    post.key,
                    due,
                    PLANNED,
                    spec.kind,
                    summary,
                    text,
                    media,
                    None,
                    needs_approval=spec.approval,
                    media_local=bool(media and spec.content.get("local")),
                )
            )
    return found


def decidable(entry: CalendarEntry, now: datetime) -> bool:
    return entry.status == AWAITING and entry.due > now


# --- engagement -----------------------------------------------------------------------------


@dataclass(slots=True)
class LotteryView:
    lottery: Lottery
    winners: list[tuple[int, str]]  # (user id, name) in rank order
    verified: bool | None  # None: not drawn yet (nothing to verify)
    seed: str | None  # revealed after the draw only


@dataclass(slots=True)
class Engagement:
    lotteries: list[LotteryView]
    polls: Listing
    checkins_all: list[tuple[int, str, int]]  # (user id, name, check-ins)
    checkins_month: list[tuple[int, str, int]]


async def engagement(
    session: AsyncSession, chat_id: int, *, now: datetime, tz: ZoneInfo
) -> Engagement:
    views = []
    for lottery in await chat_lotteries(session, chat_id, recent_since=now - timedelta(days=90)):
        winners = list(
            (
                await session.execute(
                    select(LotteryEntry.user_id, LotteryEntry.name)
                    .where(
                        LotteryEntry.lottery_id == lottery.id,
                        LotteryEntry.outcome == "won",
                    )
                    .order_by(LotteryEntry.rank)
                )
            ).all()
        )
        revealed = lottery.revealed
        verified = None
        if lottery.state == State.DRAWN:
            result = await verify(session, lottery.id)  # type: ignore[arg-type]
            verified = bool(result and result.ok)
        seed = lottery.seed if revealed else None
        views.append(LotteryView(lottery, [(int(u), n) for u, n in winners], verified, seed))
    polls = await list_polls(session, chat_id, tz=tz, now=now, open_limit=10, recent_limit=10)
    today = kpi.local_today(now, tz)
    boards = []
    for since in (None, month_start(today)):
        rows = await checkin_leaderboard(session, chat_id=chat_id, since=since, limit=20)
        names = await display_names(session, chat_id=chat_id, user_ids=[r.user_id for r in rows])
        boards.append([(r.user_id, names.get(r.user_id, str(r.user_id)), r.points) for r in rows])
    return Engagement(views, polls, boards[0], boards[1])


# --- members --------------------------------------------------------------------------------

ROSTER_PAGE = 100


@dataclass(frozen=True, slots=True)
class RosterRow:
    user_id: int
    name: str
    username: str | None
    status: str
    joined_at: datetime | None
    last_active: datetime | None
    messages: int
    points: int
    warnings: int


async def roster(
    session: AsyncSession,
    chat_id: int,
    *,
    now: datetime,
    query: str = "",
    limit: int | None = ROSTER_PAGE,
    offset: int = 0,
) -> tuple[list[RosterRow], int]:
    """Members (most recently active first) matching `query` (name, @username or id), and
    how many match in all."""
    warnings = (
        select(MemberWarning.user_id, func.count().label("n"))
        .where(
            MemberWarning.chat_id == chat_id,
            or_(MemberWarning.expires_at.is_(None), MemberWarning.expires_at > now),  # type: ignore[union-attr,operator]
        )
        .group_by(MemberWarning.user_id)
        .subquery()
    )
    conditions: list[Any] = [Member.chat_id == chat_id]
    text = query.strip().lstrip("@")
    if text:
        match = [
            Member.display_name.icontains(text, autoescape=True),  # type: ignore[attr-defined]
            Member.username.icontains(text, autoescape=True),  # type: ignore[union-attr]
        ]
        if text.lstrip("-").isdigit():
            match.append(Member.user_id == int(text))
        conditions.append(or_(*match))
    total = int(
        await session.scalar(select(func.count()).select_from(Member).where(*conditions)) or 0
    )
    stmt = (
        select(
            Member,
            func.coalesce(PointsBalance.points, 0),
            func.coalesce(warnings.c.n, 0),
        )
        .outerjoin(
            PointsBalance,
            (PointsBalance.chat_id == Member.chat_id) & (PointsBalance.user_id == Member.user_id),
        )
        .outerjoin(warnings, warnings.c.user_id == Member.user_id)
        .where(*conditions)
        .order_by(Member.last_active.desc().nulls_last(), Member.user_id)  # type: ignore[union-attr]
        .offset(offset)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = [
        RosterRow(
            m.user_id,
            m.display_name or str(m.user_id),
            m.username,
            m.status,
            m.joined_at,
            m.last_active,
            m.message_count,
            int(points),
            int(warned),
        )
        for m, points, warned in (await session.execute(stmt)).all()
    ]
    return rows, total


CSV_COLUMNS = (
    "user_id",
    "name",
    "username",
    "status",
    "joined_at",
    "last_active",
    "messages",
    "points",
    "warnings",
)


def roster_csv(rows: Sequence[RosterRow]) -> str:
    """The roster as CSV (UTC ISO times). Cells that a spreadsheet would run as a formula
    are prefixed with a quote."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow(
            [
                r.user_id,
                _cell(r.name),
                _cell(r.username or ""),
                r.status,
                r.joined_at.isoformat() if r.joined_at else "",
                r.last_active.isoformat() if r.last_active else "",
                r.messages,
                r.points,
                r.warnings,
            ]
        )
    return out.getvalue()


def _cell(text: str) -> str:
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
