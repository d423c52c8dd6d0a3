"""Daily and weekly digests (日报 / 周报): their schedule, exactly-once record, and content.

Exactly once: every scheduled digest has a `digest_run` row, unique per (chat, kind, period).
Whoever is due to send it (any process, after any restart) first inserts the row if missing,
then claims it with a conditional UPDATE pending → sending in a short transaction; only the
process whose UPDATE changed the row sends. The outcome (sent / failed) is recorded in a second
transaction. A digest found more than GRACE after its due time is marked missed instead, and
missed or failed digests are listed in the chat's next digest.

Content: the KPI table with changes and target achievement, a plain-language highlights line,
and sections from a registry (`register_section`) so features that record polls, lotteries and
content deliveries can add theirs; until they do, those sections say "unavailable".
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, UniqueConstraint, and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import Field, SQLModel

from bot.charts import ChartPoint, ChartSpec, cjk_font
from bot.cluster import claimed_by_stopped_process
from bot.db import upsert
from bot.i18n import t
from bot.kpi import (
    DA,
    DAY_METRICS,
    MESSAGE_BASED,
    Snapshot,
    Unavailable,
    achievement,
    change,
    day_snapshot,
    feature_metric_names,
    feature_metrics,
    is_ceiling,
    is_ratio,
    member_names,
    period_snapshot,
    targets,
    top_contributors,
)
from bot.models import chat_fk, utc_column
from bot.text import escape
from bot.timeparse import local_to_utc

Kind = Literal["daily", "weekly"]
Destination = Literal["here", "private", "log"]
DESTINATIONS: tuple[Destination, ...] = ("here", "private", "log")

GRACE = timedelta(hours=1)  # DESIGN §5: a digest due during downtime is sent late within this
SPREAD_SECONDS = 300  # digests of many groups due at the same minute spread over 5 minutes
STALE_CLAIM = timedelta(minutes=30)  # a "sending" claim older than this was interrupted
CATCH_UP_PERIODS = 14  # at most this many missed periods are recorded after a long outage
WEEKDAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")


class DigestSchedule(SQLModel, table=True):
    """When and where a chat's digests go (one row per chat; no row = no digests)."""

    __tablename__ = "digest_schedule"

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    daily_at: str | None = Field(default=None, max_length=5)  # "HH:MM", chat-local
    weekly_day: int | None = Field(default=None)  # 0 = Monday
    weekly_at: str | None = Field(default=None, max_length=5)
    destination: str = Field(default="here", max_length=8)  # here | private | log
    log_chat_id: int | None = Field(default=None, sa_type=BigInteger)
    updated_at: datetime = Field(sa_column=utc_column(nullable=False))


class DigestRun(SQLModel, table=True):
    """One scheduled digest: pending → sending → sent | failed, or pending → missed."""

    __tablename__ = "digest_run"
    __table_args__ = (UniqueConstraint("chat_id", "kind", "period_start"),)

    id: int | None = Field(default=None, primary_key=True)
    chat_id: int = Field(sa_column=chat_fk(index=True))
    kind: str = Field(max_length=8)  # daily | weekly
    period_start: date  # the day covered (daily) or the Monday of the week covered
    due_at: datetime = Field(sa_column=utc_column(nullable=False))
    state: str = Field(default="pending", max_length=8)
    claimed_by: str | None = Field(default=None, max_length=64)
    claimed_at: datetime | None = Field(default=None, sa_column=utc_column())
    finished_at: datetime | None = Field(default=None, sa_column=utc_column())
    error: str | None = Field(default=None, max_length=255)
    reported: bool = Field(default=False)  # listed as missed/failed in a later digest


# --- when digests are due ------------------------------------------------------------------


def spread_offset(chat_id: int) -> timedelta:
    """A stable per-chat delay (0..SPREAD_SECONDS) so groups due at the same minute spread out."""
    return timedelta(seconds=zlib.crc32(str(chat_id).encode()) % SPREAD_SECONDS)


def parse_hhmm(text: str) -> time | None:
    from bot.timeparse import parse_clock

    return parse_clock(text)


def parse_weekday(text: str) -> int | None:
    """MON…SUN, Monday…Sunday, 周一…周日 / 星期一…星期日 → 0..6."""
    word = text.strip().lower()
    for index, name in enumerate(WEEKDAYS):
        full = date(2024, 1, 1 + index).strftime("%A").lower()  # 2024-01-01 was a Monday
        if word in (name.lower(), full, full[:3]):
            return index
    chinese = "一二三四五六日"
    for prefix in ("周", "星期", "礼拜"):
        if word.startswith(prefix) and len(word) == len(prefix) + 1:
            char = word[-1].replace("天", "日")
            if char in chinese:
                return chinese.index(char)
    return None


@dataclass(frozen=True, slots=True)
class Due:
    """One scheduled digest: its kind, the period it covers and when it is due (UTC)."""

    kind: Kind
    period_start: date
    due_at: datetime


def _due_on(kind: Kind, local_date: date, at: time, tz: ZoneInfo, chat_id: int) -> Due:
    moment = local_to_utc(local_date, at, tz) + spread_offset(chat_id)
    if kind == "daily":
        period = local_date - timedelta(days=1)  # the digest of day X covers X-1
    else:  # the last full week (Monday..Sunday) before the week of X
        period = local_date - timedelta(days=local_date.weekday() + 7)
    return Due(kind, period, moment)


def due_dates(
    schedule: DigestSchedule, kind: Kind, tz: ZoneInfo, around: date, days: int
) -> list[Due]:
    """Due moments of one kind for the local dates around-days..around+1, in order."""
    at_text = schedule.daily_at if kind == "daily" else schedule.weekly_at
    at = parse_hhmm(at_text or "")
    if at is None:
        return []
    result = []
    for offset in range(-days, 2):
        local_date = around + timedelta(days=offset)
        if kind == "weekly" and local_date.weekday() != schedule.weekly_day:
            continue
        result.append(_due_on(kind, local_date, at, tz, schedule.chat_id))
    return result


def next_due(schedule: DigestSchedule, kind: Kind, tz: ZoneInfo, now: datetime) -> Due | None:
    """The first digest of `kind` due after `now`."""
    today = now.astimezone(tz).date()
    for due in due_dates(schedule, kind, tz, today + timedelta(days=7), 8):
        if due.due_at > now:
            return due
    return None


def overdue(
    schedule: DigestSchedule, kind: Kind, tz: ZoneInfo, now: datetime, since: datetime
) -> list[Due]:
    """Digests of `kind` that fell due in (since, now], oldest first (at most CATCH_UP_PERIODS)."""
    today = now.astimezone(tz).date()
    span = CATCH_UP_PERIODS * (7 if kind == "weekly" else 1)
    found = [d for d in due_dates(schedule, kind, tz, today, span) if since < d.due_at <= now]
    return found[-CATCH_UP_PERIODS:]


# --- exactly once ---------------------------------------------------------------------------

RUN = DigestRun.__table__  # type: ignore[attr-defined]
Claim = Literal["send", "missed", "taken"]


async def claim(
    db: async_sessionmaker[AsyncSession], chat_id: int, due: Due, *, now: datetime, worker: str
) -> tuple[Claim, int]:
    """Record the digest if needed and try to claim it; returns (outcome, run id).

    "send": this caller owns it and must send it; "missed": it was overdue beyond GRACE and is
    now recorded as missed; "taken": someone else sent, is sending, or already recorded it.
    """
    async with db.begin() as session:
        await upsert(
            session,
            RUN,
            [
                {
                    "chat_id": chat_id,
                    "kind": due.kind,
                    "period_start": due.period_start,
                    "due_at": due.due_at,
                    "state": "pending",
                    "reported": False,
                }
            ],
            key=("chat_id", "kind", "period_start"),
        )
        run_id = await session.scalar(
            select(DigestRun.id).where(
                DigestRun.chat_id == chat_id,
                DigestRun.kind == due.kind,
                DigestRun.period_start == due.period_start,
            )
        )
        pending = and_(DigestRun.id == run_id, DigestRun.state == "pending")
        if now - due.due_at > GRACE:
            result = await session.execute(
                update(DigestRun).where(pending).values(state="missed", finished_at=now)
            )
            return ("missed" if result.rowcount else "taken"), int(run_id or 0)  # type: ignore[attr-defined]
        result = await session.execute(
            update(DigestRun)
            .where(pending)
            .values(state="sending", claimed_by=worker[:64], claimed_at=now)
        )
        return ("send" if result.rowcount else "taken"), int(run_id or 0)  # type: ignore[attr-defined]


async def finish(
    db: async_sessionmaker[AsyncSession],
    run_id: int,
    *,
    now: datetime,
    error: str | None = None,
    reported: Sequence[int] = (),
) -> None:
    """Record a claimed digest's outcome, and that it listed earlier undelivered ones."""
    async with db.begin() as session:
        await session.execute(
            update(DigestRun)
            .where(DigestRun.id == run_id, DigestRun.state == "sending")
            .values(
                state="failed" if error else "sent",
                finished_at=now,
                error=error[:255] if error else None,
            )
        )
        if reported and not error:
            await session.execute(
                update(DigestRun).where(DigestRun.id.in_(reported)).values(reported=True)
            )


async def recover_interrupted(
    db: async_sessionmaker[AsyncSession],
    *,
    now: datetime,
    me: str | None = None,
    process_lease: timedelta | None = None,
) -> list[tuple[int, Due]]:
    """Settle "sending" claims as failed ("interrupted"); returns those of stopped processes.

    A claim held by another process that has stopped beating for `process_lease`
    (bot.cluster) is settled at once; claims older than STALE_CLAIM held by a live process
    (or legacy claims) too. The digest may have gone out (its chart, or all of it: the
    process may have died after Telegram took it), so it is never resent blindly; the next
    digest lists it as not delivered and `/digest now` sends one on request.
    """
    taken: list[tuple[int, Due]] = []
    async with db.begin() as session:
        if me is not None and process_lease is not None:
            stopped = claimed_by_stopped_process(
                DigestRun.claimed_by, me=me, now=now, lease=process_lease
            )
            rows = (
                await session.execute(
                    update(DigestRun)
                    .where(DigestRun.state == "sending", stopped)
                    .values(state="failed", finished_at=now, error="interrupted")
                    .returning(
                        DigestRun.chat_id, DigestRun.kind, DigestRun.period_start, DigestRun.due_at
                    )
                )
            ).all()
            taken = [(int(c), Due(k, p, d)) for c, k, p, d in rows]
        await session.execute(
            update(DigestRun)
            .where(DigestRun.state == "sending", DigestRun.claimed_at < now - STALE_CLAIM)
            .values(state="failed", finished_at=now, error="interrupted")
        )
    return taken


async def undelivered(session: AsyncSession, chat_id: int) -> list[DigestRun]:
    """Missed or failed digests of a chat not yet mentioned in a later digest."""
    rows = await session.scalars(
        select(DigestRun)
        .where(
            DigestRun.chat_id == chat_id,
            DigestRun.state.in_(("missed", "failed")),
            DigestRun.reported.is_(False),
        )
        .order_by(DigestRun.due_at)
    )
    return list(rows)


# --- reports --------------------------------------------------------------------------------


@dataclass(slots=True)
class Report:
    """A period's KPIs with what they are compared against, targets and feature figures."""

    kind: str  # daily | weekly | period
    current: Snapshot
    comparisons: list[tuple[str, Snapshot]]  # (label key, snapshot): dod/wow or prev
    goals: dict[str, float]

    @property
    def start(self) -> date:
        return self.current.start

    @property
    def end(self) -> date:
        return self.current.end


async def build_report(
    session: AsyncSession,
    chat_id: int,
    kind: str,
    start: date,
    end: date,
    *,
    today: date,
    tz: ZoneInfo,
) -> Report:
    """daily: one day vs the day before and the same day last week; weekly and period: the
    period vs the previous period of the same length."""
    length = timedelta(days=(end - start).days + 1)
    if kind == "daily":
        current = await day_snapshot(session, chat_id, end, today=today, tz=tz)
        comparisons = [
            (
                "dod",
                await day_snapshot(session, chat_id, end - timedelta(days=1), today=today, tz=tz),
            ),
            (
                "wow",
                await day_snapshot(session, chat_id, end - timedelta(days=7), today=today, tz=tz),
            ),
        ]
    else:
        current = await period_snapshot(session, chat_id, start, end, today=today, tz=tz)
        previous = await period_snapshot(
            session, chat_id, start - length, end - length, today=today, tz=tz
        )
        comparisons = [("wow" if kind == "weekly" else "prev", previous)]
    for snapshot in (current, *(s for _, s in comparisons)):
        snapshot.values.update(
            await feature_metrics(session, chat_id, snapshot.start, snapshot.end, tz)
        )
    return Report(
        kind=kind, current=current, comparisons=comparisons, goals=await targets(session, chat_id)
    )


def format_value(metric: str, value: float | int | None | Unavailable, lang: str) -> str:
    if isinstance(value, Unavailable):
        return t(lang, "kpi.unavailable")
    if value is None:
        return "—"
    if is_ratio(metric):
        return f"{value * 100:.1f}%"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def format_change(metric: str, current: object, previous: object, lang: str) -> str | None:
    """ "▲18%" for counts, "▲2.5 pp" for shares; None when there is nothing to compare."""
    if not isinstance(current, int | float) or not isinstance(previous, int | float):
        return None
    if is_ratio(metric):
        points = (current - previous) * 100
        if abs(points) < 0.05:
            return "±0 pp"
        return f"{'▲' if points > 0 else '▼'}{abs(points):.1f} pp"
    relative = change(current, previous)
    if relative is None:
        return None if current == previous else t(lang, "kpi.from_zero")
    if abs(relative) < 0.005:
        return "±0%"
    return f"{'▲' if relative > 0 else '▼'}{abs(relative) * 100:.0f}%"


def metric_label(metric: str, lang: str) -> str:
    return t(lang, f"kpi.metric.{metric}")


def kpi_lines(report: Report, lang: str) -> list[str]:
    """One line per KPI: value, changes, target achievement; message-based ones marked when
    the bot could not see every message. The features' figures follow under a heading."""
    lines = []
    features = feature_metric_names()
    for metric in [*DAY_METRICS, *features]:
        if features and metric == features[0]:
            lines.append(f"<b>{t(lang, 'kpi.feature_metrics')}</b>")
        value = report.current.get(metric)
        parts = [f"{metric_label(metric, lang)}: <b>{format_value(metric, value, lang)}</b>"]
        if report.current.partial and metric in MESSAGE_BASED:
            parts[0] += "*"
        for label, snapshot in report.comparisons:
            delta = format_change(metric, value, snapshot.get(metric), lang)
            if delta:
                parts.append(f"{delta} {t(lang, 'kpi.vs.' + label)}")
        goal = report.goals.get(metric)
        if goal is not None:
            reached = achievement(value, goal)  # type: ignore[arg-type]
            parts.append(
                t(
                    lang,
                    "kpi.target_progress",
                    percent="—" if reached is None else f"{reached * 100:.0f}%",
                    target=format_value(metric, goal, lang),
                )
            )
        lines.append(" · ".join(parts))
    return lines


def highlights(report: Report, lang: str) -> str:
    """One plain-language line: the biggest moves and the targets missed or reached."""
    notes: list[str] = []
    base_label, base = report.comparisons[-1] if report.comparisons else ("", None)
    period = t(lang, f"kpi.hl.period.{base_label or 'prev'}")
    if base is not None:
        for metric, threshold in (("dau", 0.10), ("messages", 0.20), ("joins", 0.5)):
            now_value, before = report.current.get(metric), base.get(metric)
            relative = change(now_value, before)  # type: ignore[arg-type]
            if relative is not None and abs(relative) >= threshold:
                notes.append(
                    t(
                        lang,
                        "kpi.hl.up" if relative > 0 else "kpi.hl.down",
                        metric=t(lang, f"kpi.short.{metric}"),
                        percent=f"{abs(relative) * 100:.0f}",
                        period=period,
                    )
                )
    net = report.current.get("net")
    if isinstance(net, int | float) and net:
        notes.append(t(lang, "kpi.hl.net", net=f"{int(net):+d}"))
    undelivered_posts = [report.current.get(m) for m in ("content_failed", "content_missed")]
    if any(isinstance(v, int) and v for v in undelivered_posts):
        notes.append(t(lang, "kpi.hl.content", count=sum(undelivered_posts)))
    missed, reached = [], []
    for metric, goal in report.goals.items():
        value = report.current.get(metric)
        ratio_reached = achievement(value, goal)  # type: ignore[arg-type]
        if ratio_reached is None:
            continue
        if is_ceiling(metric):  # a limit: at or under it is good
            good, key = ratio_reached <= 1, "kpi.hl.above_target"
        else:
            good, key = ratio_reached >= 1, "kpi.hl.below_target"
        (reached if good else missed).append((metric, key))
    for metric, key in missed[:2]:
        notes.append(t(lang, key, metric=t(lang, f"kpi.short.{metric}")))
    for metric, _ in reached[:1]:
        key = "kpi.hl.within_target" if is_ceiling(metric) else "kpi.hl.target_reached"
        notes.append(t(lang, key, metric=t(lang, f"kpi.short.{metric}")))
    if not notes:
        return t(lang, "kpi.hl.steady" if report.kind == "daily" else "kpi.hl.steady_period")
    text = t(lang, "kpi.hl.separator").join(notes[:4])
    return text[:1].upper() + text[1:]


# --- digest sections ------------------------------------------------------------------------


@dataclass(slots=True)
class DigestContext:
    """What a section provider gets: the open (read) session and the report being written."""

    session: AsyncSession
    chat_id: int
    lang: str
    tz: ZoneInfo
    kind: str
    today: date
    report: Report

    @property
    def start(self) -> date:
        return self.report.start

    @property
    def end(self) -> date:
        return self.report.end


# A provider returns the section's HTML lines (user-supplied text escaped), or [] to omit it.
SectionProvider = Callable[[DigestContext], Awaitable[list[str]]]
SECTIONS: dict[str, SectionProvider] = {}


def register_section(name: str, provider: SectionProvider) -> None:
    """Add a digest section, or replace one (keeping its place), e.g. a feature replacing the
    "polls" placeholder with its own turnout figures."""
    SECTIONS[name] = provider


def unavailable_section(name: str, icon: str) -> SectionProvider:
    async def provider(ctx: DigestContext) -> list[str]:
        return [f"{icon} {t(ctx.lang, 'kpi.section.' + name)}: {t(ctx.lang, 'kpi.unavailable')}"]

    return provider


def _name_list(names: Sequence[str], lang: str, limit: int = 10) -> str:
    shown = ", ".join(escape(n) for n in names[:limit])
    if len(names) > limit:
        shown += " " + t(lang, "kpi.and_more", count=len(names) - limit)
    return shown


async def contributors_section(ctx: DigestContext) -> list[str]:
    top = await top_contributors(ctx.session, ctx.chat_id, ctx.start, ctx.end, 5)
    if not top:
        return []
    lines = [f"🏆 <b>{t(ctx.lang, 'kpi.section.contributors')}</b>"]
    for rank, person in enumerate(top, 1):
        lines.append(
            t(
                ctx.lang,
                "kpi.contributor",
                rank=rank,
                name=escape(person.name),
                count=person.messages,
            )
        )
    return lines


async def members_section(ctx: DigestContext) -> list[str]:
    joined = await ctx.session.execute(
        select(DA.user_id)
        .where(DA.chat_id == ctx.chat_id, DA.day >= ctx.start, DA.day <= ctx.end, DA.joins > 0)
        .order_by(DA.day, DA.user_id)
    )
    left = await ctx.session.execute(
        select(DA.user_id)
        .where(DA.chat_id == ctx.chat_id, DA.day >= ctx.start, DA.day <= ctx.end, DA.leaves > 0)
        .order_by(DA.day, DA.user_id)
    )
    joined_ids = list(dict.fromkeys(joined.scalars()))
    left_ids = list(dict.fromkeys(left.scalars()))
    names = await member_names(ctx.session, ctx.chat_id, [*joined_ids, *left_ids])
    lines = []
    if joined_ids:
        lines.append(
            f"👋 <b>{t(ctx.lang, 'kpi.section.joined', count=len(joined_ids))}</b>: "
            + _name_list([names.get(u, (str(u), None))[0] for u in joined_ids], ctx.lang)
        )
    if left_ids:
        lines.append(
            f"🚪 <b>{t(ctx.lang, 'kpi.section.left', count=len(left_ids))}</b>: "
            + _name_list([names.get(u, (str(u), None))[0] for u in left_ids], ctx.lang)
        )
    return lines


async def checkin_leaders_section(ctx: DigestContext) -> list[str]:
    """Most check-in days in the last 7 days (daily) or the week (weekly), from the rollups."""
    since = ctx.end - timedelta(days=6)
    days = func.count().label("days")
    rows = (
        await ctx.session.execute(
            select(DA.user_id, days)
            .where(DA.chat_id == ctx.chat_id, DA.day >= since, DA.day <= ctx.end, DA.checked_in)
            .group_by(DA.user_id)
            .order_by(days.desc(), DA.user_id)
            .limit(3)
        )
    ).all()
    if not rows:
        return []
    names = await member_names(ctx.session, ctx.chat_id, [r[0] for r in rows])
    leaders = ", ".join(
        t(ctx.lang, "kpi.checkin_leader", name=escape(names.get(u, (str(u), None))[0]), days=n)
        for u, n in rows
    )
    return [f"✅ <b>{t(ctx.lang, 'kpi.section.checkin_leaders')}</b>: {leaders}"]


@dataclass(frozen=True, slots=True)
class Photo:
    """An extra picture of a digest (e.g. the weekly heat map): `render(spec)` → PNG, drawn in
    a worker thread and sent after the digest's text with its caption (HTML)."""

    render: Callable[[Any], bytes]
    spec: Any
    caption: str


# A provider returns the picture for this digest, or None to add nothing.
PhotoProvider = Callable[[DigestContext], Awaitable[Photo | None]]
PHOTOS: dict[str, PhotoProvider] = {}


def register_photo(name: str, provider: PhotoProvider) -> None:
    """Add an extra picture to digests (the provider decides for which kinds)."""
    PHOTOS[name] = provider


register_section("contributors", contributors_section)
register_section("members", members_section)
register_section("checkins", checkin_leaders_section)
register_section("polls", unavailable_section("polls", "🗳"))
register_section("lotteries", unavailable_section("lotteries", "🎁"))
register_section("content", unavailable_section("content", "🗓"))


# --- composing a digest ---------------------------------------------------------------------


@dataclass(slots=True)
class Composed:
    """A digest ready to send: the caption of the chart, the text, and the chart to draw."""

    caption: str
    text: str
    chart: ChartSpec
    reported: list[int]  # undelivered earlier digests it lists
    photos: list[Photo] = field(default_factory=list)  # extra pictures, sent after the text


def period_of(kind: str, period_start: date) -> tuple[date, date]:
    if kind == "weekly":
        return period_start, period_start + timedelta(days=6)
    return period_start, period_start


async def compose(
    session: AsyncSession,
    *,
    chat_id: int,
    title: str,
    lang: str,
    tz: ZoneInfo,
    kind: Kind,
    period_start: date,
    today: date,
) -> Composed:
    """Everything a digest says, computed in one read session (no Telegram, no writes)."""
    start, end = period_of(kind, period_start)
    report = await build_report(session, chat_id, kind, start, end, today=today, tz=tz)
    ctx = DigestContext(session, chat_id, lang, tz, kind, today, report)
    heading = t(
        lang,
        f"kpi.digest.title_{kind}",
        group=escape(title or str(chat_id)),
        start=start.isoformat(),
        end=end.isoformat(),
        weekday=t(lang, f"kpi.weekday.{end.weekday()}"),
    )
    summary = f"💡 {escape(highlights(report, lang))}"
    lines = [heading, summary, "", f"<b>{t(lang, 'kpi.digest.figures')}</b>"]
    lines.extend(kpi_lines(report, lang))
    for provider in SECTIONS.values():
        section = await provider(ctx)
        if section:
            lines.append("")
            lines.extend(section)
    photos = [photo for provider in PHOTOS.values() if (photo := await provider(ctx))]
    problems = await undelivered(session, chat_id)
    if problems:
        lines.append("")
        lines.append(f"⚠️ <b>{t(lang, 'kpi.digest.undelivered')}</b>")
        for run in problems:
            lines.append(
                t(
                    lang,
                    f"kpi.digest.undelivered_{'missed' if run.state == 'missed' else 'failed'}",
                    kind=t(lang, f"kpi.digest.kind_{run.kind}"),
                    period=run.period_start.isoformat(),
                )
            )
    if report.current.partial:
        lines.append("")
        lines.append(t(lang, "kpi.partial_note"))
    goals = report.goals
    if kind == "weekly":
        series = await weekly_series(session, chat_id, end, today=today)
    else:
        series = await day_series(session, chat_id, end - timedelta(days=29), end, today=today)
    chart_lang = lang if lang != "zh" or cjk_font() is not None else "en"
    chart = chart_spec(
        t(chart_lang, f"kpi.chart.title_{kind}", group=title or str(chat_id)),
        series,
        {k: v for k, v in goals.items() if kind == "daily"},
        lang,
        weekly=kind == "weekly",
    )
    return Composed(
        caption=f"{heading}\n{summary}",
        text="\n".join(lines),
        chart=chart,
        reported=[run.id for run in problems if run.id is not None],
        photos=photos,
    )


# --- the chart ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    day: date
    dau: float
    messages: int
    joins: int
    leaves: int


async def day_series(
    session: AsyncSession, chat_id: int, start: date, end: date, *, today: date
) -> list[SeriesPoint]:
    """Daily DAU, messages, joins and leaves for the chart."""
    from bot.kpi import day_totals

    totals = await day_totals(session, chat_id, start, end)
    points = []
    for offset in range((end - start).days + 1):
        day = start + timedelta(days=offset)
        messages, dau, joins, leaves, _, _ = totals.get(day, (0, 0, 0, 0, 0, 0))
        points.append(SeriesPoint(day, dau, messages, joins, leaves))
    return points


async def weekly_series(
    session: AsyncSession, chat_id: int, end: date, *, today: date, weeks: int = 12
) -> list[SeriesPoint]:
    """12 weeks ending with `end`: average DAU, and messages/joins/leaves summed per week."""
    start = end - timedelta(days=7 * weeks - 1)
    days = await day_series(session, chat_id, start, end, today=today)
    points = []
    for week in range(weeks):
        chunk = days[week * 7 : week * 7 + 7]
        points.append(
            SeriesPoint(
                chunk[0].day,
                sum(p.dau for p in chunk) / len(chunk),
                sum(p.messages for p in chunk),
                sum(p.joins for p in chunk),
                sum(p.leaves for p in chunk),
            )
        )
    return points


def chart_spec(
    title: str,
    rows: Sequence[object],
    goals: dict[str, float],
    lang: str,
    *,
    weekly: bool = False,
) -> ChartSpec:
    """The chart of a digest from daily (or weekly) rows with day, dau, messages, joins, leaves."""
    points = [
        ChartPoint(
            r.day,  # type: ignore[attr-defined]
            r.dau,  # type: ignore[attr-defined]
            r.messages,  # type: ignore[attr-defined]
            r.joins,  # type: ignore[attr-defined]
            r.leaves,  # type: ignore[attr-defined]
        )
        for r in rows
    ]
    labels = {key: t(lang, f"kpi.chart.{key}") for key in ("dau", "messages", "joins", "leaves")}
    labels["target"] = t(lang, "kpi.chart.target")
    if lang == "zh" and cjk_font() is None:  # no font to draw Chinese with: English labels
        labels = {key: t("en", f"kpi.chart.{key}") for key in labels}
    return ChartSpec(
        title=title,
        points=points,
        labels=labels,
        dau_target=goals.get("dau"),
        messages_target=goals.get("messages"),
        weekly=weekly,
    )
