"""Engagement KPIs (DESIGN.md §4) from the daily rollups, and the operators' targets.

Every figure is computed per chat and chat-local day from `daily_activity` (one row per
member and day) and the roster's recent-activity state (`member.active_day/active_mask`, kept
by bot.activity), never from raw history:

- messages, DAU, joins, leaves, check-ins and participation of day D: one grouped scan of D's
  rollup rows;
- WAU and MAU: one bit test per roster row ("any of the 7/30 bits up to D set?") for days the
  state still covers (the last month), else a distinct count over the rollups;
- retention of the cohort that joined on J: its members' rollup rows on J+1..J+30, found by
  primary key.

Figures that other features provide (content sent, poll turnout, lottery entries) come from a
registry (`register_metrics`); until a feature registers, they are reported as unavailable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    Integer,
    String,
    and_,
    bindparam,
    case,
    cast,
    delete,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from bot.activity import MASK_DAYS, local_day
from bot.db import prepared, upsert
from bot.driver_session import Executor
from bot.models import Chat, ChatDay, DailyActivity, Member, chat_fk, utc_column

# --- definitions ------------------------------------------------------------------------

# The per-day KPIs, in the order of DESIGN.md §4 and of the JSON export.
DAY_METRICS = (
    "messages",
    "dau",
    "wau",
    "mau",
    "stickiness",
    "joins",
    "leaves",
    "net",
    "checkins",
    "checkin_rate",
    "participation",
    "retention_d1",
    "retention_d7",
    "retention_d30",
)
RATIOS = frozenset(
    {
        "stickiness",
        "checkin_rate",
        "participation",
        "retention_d1",
        "retention_d7",
        "retention_d30",
    }
)
# Figures that depend only on messages: partial while the bot could not see every message.
MESSAGE_BASED = frozenset({"messages", "dau", "wau", "mau", "stickiness"})
RETENTION_DAYS = {"retention_d1": 1, "retention_d7": 7, "retention_d30": 30}
# WAU/MAU come from the roster's bit masks for days at most this far back from today (the
# mask holds MASK_DAYS days; MAU needs 30 of them, plus a margin for clock skew).
MASK_HORIZON = MASK_DAYS - 30 - 2

DA = DailyActivity.__table__.c  # type: ignore[attr-defined]
MEMBER = Member.__table__.c  # type: ignore[attr-defined]

ACTIVE = or_(DA.messages > 0, DA.checked_in, DA.poll_answered, DA.lottery_entered)
PARTICIPATED = or_(DA.checked_in, DA.poll_answered, DA.lottery_entered)


def _flag(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return case((condition, 1), else_=0)


def ratio(numerator: float, denominator: float) -> float:
    """A share in 0..1; 0.0 when there is nothing to divide (no active members)."""
    return numerator / denominator if denominator else 0.0


def local_today(now: datetime, tz: ZoneInfo) -> date:
    return local_day(now, tz)


@dataclass(slots=True)
class DayKpis:
    """All KPIs of one chat-local day. Retention is that of the cohort that joined on `day`."""

    day: date
    messages: int = 0
    dau: int = 0
    wau: int = 0
    mau: int = 0
    joins: int = 0
    leaves: int = 0
    checkins: int = 0
    participants: int = 0
    retention_d1: float | None = None
    retention_d7: float | None = None
    retention_d30: float | None = None
    cohort: int = 0
    partial: bool = False
    cohorts: dict[date, Cohort] = field(default_factory=dict, repr=False)

    @property
    def stickiness(self) -> float:
        return ratio(self.dau, self.mau)

    @property
    def net(self) -> int:
        return self.joins - self.leaves

    @property
    def checkin_rate(self) -> float:
        return ratio(self.checkins, self.dau)

    @property
    def participation(self) -> float:
        return ratio(self.participants, self.dau)

    def value(self, metric: str) -> float | int | None:
        return getattr(self, metric)

    def as_dict(self) -> dict[str, Any]:
        """The export shape: exactly DESIGN.md's keys (plus `partial`), JSON-ready."""
        data: dict[str, Any] = {"date": self.day.isoformat()}
        data.update({metric: self.value(metric) for metric in DAY_METRICS})
        data["partial"] = self.partial
        return data


# --- the queries ------------------------------------------------------------------------

CD = ChatDay.__table__.c  # type: ignore[attr-defined]


async def day_totals(
    session: AsyncSession, chat_id: int, start: date, end: date
) -> dict[date, tuple[int, int, int, int, int, int]]:
    """(messages, DAU, joins, leaves, checkins, participants) per day, from the chat's day
    totals (kept by triggers on the rollups)."""
    rows = await session.execute(
        select(
            CD.day, CD.messages, CD.active, CD.joins, CD.leaves, CD.checkins, CD.participants
        ).where(CD.chat_id == chat_id, CD.day >= start, CD.day <= end)
    )
    return {row[0]: tuple(row[1:]) for row in rows}  # type: ignore[misc]


def _in_window(day: Any, width: int) -> ColumnElement[int]:
    """1 when the member was active on any of the `width` days ending with `day` (ordinal)."""
    bits = (1 << width) - 1
    return case(
        (MEMBER.active_day.between(day - width + 1, day), 1),
        (
            and_(
                MEMBER.active_day > day,
                MEMBER.active_day - day < MASK_DAYS,
                MEMBER.active_mask.bitwise_rshift(MEMBER.active_day - day).bitwise_and(bits) != 0,
            ),
            1,
        ),
        else_=0,
    )


def _one_day_counts(windows: tuple[int, ...]) -> Callable[[str], Any]:
    def build(dialect: str) -> Any:
        day = bindparam("day", type_=Integer())
        return select(*(func.sum(_in_window(day, w)) for w in windows)).where(
            MEMBER.chat_id == bindparam("chat"), MEMBER.active_day >= day - 29
        )

    return build


async def _one_day_from_state(
    session: Executor, chat_id: int, day: date, *, with_dau: bool = True
) -> tuple[int, int, int]:
    """(DAU, WAU, MAU) of one day: bit tests per recent roster row, counted in SQL.

    Reports take DAU from the day totals (`with_dau=False` saves a test per row). Prepared
    once (`bot.db.prepared`): /stats asks for it."""
    windows = (1, 7, 30) if with_dau else (7, 30)
    row = (
        await session.execute(
            prepared(session, f"kpi.one_day{windows}", _one_day_counts(windows)),
            {"day": day.toordinal(), "chat": chat_id},
        )
    ).one()
    counts = [int(v or 0) for v in row]
    return (counts[0], counts[1], counts[2]) if with_dau else (-1, counts[0], counts[1])


def _windows_from_days(
    members: Any, days: Any, first: int, count: int
) -> list[tuple[int, int, int]]:
    """(DAU, WAU, MAU) for days first..first+count-1 from active (member, day) pairs.

    `members` are dense member indexes, `days` ordinals (numpy arrays). A members × days
    matrix with cumulative sums gives every window in a few vectorised operations.
    """
    import numpy as np

    span = count + 29
    origin = first - 29
    keep = (days >= origin) & (days < origin + span)
    grid = np.zeros((int(members.max(initial=-1)) + 1, span), dtype=np.int32)
    grid[members[keep], days[keep] - origin] = 1
    running = np.concatenate([np.zeros((grid.shape[0], 1), np.int32), grid.cumsum(1)], 1)
    ends = np.arange(30, span + 1)
    dau = grid[:, 29:].sum(0)
    wau = ((running[:, ends] - running[:, ends - 7]) > 0).sum(0)
    mau = ((running[:, ends] - running[:, ends - 30]) > 0).sum(0)
    return [(int(a), int(b), int(c)) for a, b, c in zip(dau, wau, mau, strict=True)]


async def _series_from_state(
    session: AsyncSession, chat_id: int, start: date, end: date
) -> list[tuple[int, int, int]]:
    """(DAU, WAU, MAU) per day from the roster's activity masks (one read of the roster)."""
    import numpy as np

    first = start.toordinal()
    # One string instead of a row object per member: "day:mask,day:mask,…" (much cheaper to
    # fetch for tens of thousands of members).
    pair = cast(MEMBER.active_day, String) + ":" + cast(MEMBER.active_mask, String)
    packed = await session.scalar(
        select(func.aggregate_strings(pair, ",")).where(
            MEMBER.chat_id == chat_id, MEMBER.active_day >= first - 29
        )
    )
    values = np.array((packed or "").replace(":", ",").split(",") if packed else [], np.int64)
    last_day, masks = values[0::2], values[1::2]
    # Unpack each mask into (member, day) pairs: bit k = active on last_day - k.
    bits = (masks[:, None] >> np.arange(MASK_DAYS, dtype=np.int64)[None, :]) & 1
    member_index, offset = np.nonzero(bits)
    return _windows_from_days(
        member_index, last_day[member_index] - offset, first, (end - start).days + 1
    )


async def _series_from_rollups(
    session: AsyncSession, chat_id: int, start: date, end: date
) -> list[tuple[int, int, int]]:
    """(DAU, WAU, MAU) per day from the rollups: for days older than the state reaches."""
    import numpy as np

    rows = (
        await session.execute(
            select(DA.user_id, DA.day).where(
                DA.chat_id == chat_id,
                DA.day >= start - timedelta(days=29),
                DA.day <= end,
                ACTIVE,
            )
        )
    ).all()
    index: dict[int, int] = {}
    members = np.fromiter(
        (index.setdefault(r[0], len(index)) for r in rows), dtype=np.int64, count=len(rows)
    )
    days = np.fromiter((r[1].toordinal() for r in rows), dtype=np.int64, count=len(rows))
    return _windows_from_days(members, days, start.toordinal(), (end - start).days + 1)


async def activity_counts(
    session: AsyncSession, chat_id: int, start: date, end: date, today: date
) -> dict[date, tuple[int, int, int]]:
    """(DAU, WAU, MAU) for each day of start..end (DAU -1 when not computed: callers take it
    from the day totals).

    From the members' activity state while it reaches back far enough (the last month),
    otherwise from the rollups; both count the same thing (see tests).
    """
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    if today - start <= timedelta(days=MASK_HORIZON):
        if start == end:
            return {start: await _one_day_from_state(session, chat_id, start, with_dau=False)}
        values = await _series_from_state(session, chat_id, start, end)
    else:
        values = await _series_from_rollups(session, chat_id, start, end)
    return dict(zip(days, values, strict=True))


@dataclass(slots=True)
class Cohort:
    """Members who joined on one day, and how many of them came back (None: not measurable)."""

    day: date
    size: int
    retained: dict[str, int | None] = field(default_factory=dict)

    def rate(self, metric: str) -> float | None:
        kept = self.retained.get(metric)
        return None if kept is None or not self.size else kept / self.size


async def cohorts(
    session: AsyncSession, chat_id: int, days: Iterable[date], today: date
) -> dict[date, Cohort]:
    """Join cohorts of `days` and their D1/D7/D30 retention, as far as measurable today.

    D_n of cohort J is measurable once day J+n is over (J+n < today).
    """
    wanted = sorted(set(days))
    if not wanted:
        return {}
    members: dict[date, set[int]] = {day: set() for day in wanted}
    rows = await session.execute(
        select(DA.day, DA.user_id).where(
            DA.chat_id == chat_id, DA.day.in_(wanted), DA.joins > literal_column("0")
        )
    )
    for day, user_id in rows:
        if day in members:
            members[day].add(user_id)
    users = sorted(set().union(*members.values()))
    if today - wanted[0] <= timedelta(days=MASK_DAYS - 2):
        # Every window lies within the members' state: test their bit masks.
        states = await _states(session, chat_id, users)

        def came_back(user: int, joined: int, span: int) -> bool:
            last, mask = states.get(user, (0, 0))
            low, high = max(last - joined - span, 0), last - joined - 1  # bit k = day last-k
            return high >= low and (mask >> low) & ((1 << (high - low + 1)) - 1) != 0
    else:
        last = min(wanted[-1] + timedelta(days=30), today - timedelta(days=1))
        days_of = await _active_days_from_rollups(session, chat_id, users, wanted[0], last)

        def came_back(user: int, joined: int, span: int) -> bool:
            return any(joined < d <= joined + span for d in days_of.get(user, ()))

    result = {}
    for day, cohort in members.items():
        entry = Cohort(day, len(cohort))
        joined = day.toordinal()
        for metric, span in RETENTION_DAYS.items():
            if day + timedelta(days=span) >= today:
                entry.retained[metric] = None
                continue
            entry.retained[metric] = sum(1 for user in cohort if came_back(user, joined, span))
        result[day] = entry
    return result


async def _states(
    session: AsyncSession, chat_id: int, users: Sequence[int]
) -> dict[int, tuple[int, int]]:
    """(active_day, active_mask) of some members."""
    states: dict[int, tuple[int, int]] = {}
    for chunk in _chunks(users, 500):
        rows = await session.execute(
            # By primary key only (a condition on active_day could steer the planner away).
            select(MEMBER.user_id, MEMBER.active_day, MEMBER.active_mask).where(
                MEMBER.chat_id == chat_id, MEMBER.user_id.in_(chunk)
            )
        )
        states.update((user_id, (last, mask)) for user_id, last, mask in rows if last is not None)
    return states


async def _active_days_from_rollups(
    session: AsyncSession, chat_id: int, users: Sequence[int], after: date, last: date
) -> dict[int, list[int]]:
    """Active days (ordinals) of some members in (after, last], from the rollups."""
    active: dict[int, list[int]] = {}
    for chunk in _chunks(users, 500):
        rows = await session.execute(
            select(DA.user_id, DA.day).where(
                DA.chat_id == chat_id,
                DA.user_id.in_(chunk),
                DA.day > after,
                DA.day <= last,
                ACTIVE,
            )
        )
        for user_id, day in rows:
            active.setdefault(user_id, []).append(day.toordinal())
    return active


def _chunks(items: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for index in range(0, len(items), size):
        yield items[index : index + size]


async def visibility(session: AsyncSession, chat_id: int) -> tuple[bool, datetime | None]:
    row = (
        await session.execute(
            select(Chat.sees_all_messages, Chat.sees_all_since).where(Chat.id == chat_id)
        )
    ).first()
    return (bool(row[0]), row[1]) if row else (False, None)


def is_partial(day: date, sees_all: bool, since: datetime | None, tz: ZoneInfo) -> bool:
    """A day is partial unless the bot saw every message from its start on."""
    return not sees_all or since is None or local_day(since, tz) >= day


async def daily_kpis(
    session: AsyncSession,
    chat_id: int,
    start: date,
    end: date,
    *,
    today: date,
    tz: ZoneInfo,
    visibility_info: tuple[bool, datetime | None] | None = None,
    extra_cohorts: Iterable[date] = (),
) -> list[DayKpis]:
    """One row of KPIs per day from `start` to `end` (inclusive), oldest first.

    `extra_cohorts`: more join cohorts to measure in the same queries (found in the first
    row's `cohorts`).
    """
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    if not days:
        return []
    sees_all, since = visibility_info or await visibility(session, chat_id)
    totals = await day_totals(session, chat_id, start, end)
    counts = await activity_counts(session, chat_id, start, end, today)
    joined = [day for day, total in totals.items() if total[2]]
    groups = await cohorts(session, chat_id, [*joined, *extra_cohorts], today)
    rows = []
    for day in days:
        messages, dau, joins, leaves, checkins, participants = totals.get(day, (0, 0, 0, 0, 0, 0))
        wau, mau = counts[day][1:]
        row = DayKpis(
            day=day,
            messages=messages,
            dau=dau,
            wau=wau,
            mau=mau,
            joins=joins,
            leaves=leaves,
            checkins=checkins,
            participants=participants,
            partial=is_partial(day, sees_all, since, tz),
        )
        cohort = groups.get(day)
        if cohort is not None and cohort.size:
            row.cohort = cohort.size
            row.retention_d1 = cohort.rate("retention_d1")
            row.retention_d7 = cohort.rate("retention_d7")
            row.retention_d30 = cohort.rate("retention_d30")
        rows.append(row)
    rows[0].cohorts = groups
    return rows


@dataclass(slots=True)
class Contributor:
    user_id: int
    name: str
    username: str | None
    messages: int


async def top_contributors(
    session: AsyncSession, chat_id: int, start: date, end: date, limit: int = 10
) -> list[Contributor]:
    """Members ranked by messages over start..end; ties go to the earlier first message."""
    if start == end:  # one day: one row per member, no grouping needed
        total, first = DA.messages, DA.first_message_ts
        query = select(DA.user_id, total, first).where(DA.day == start)
    else:
        total = func.sum(DA.messages).label("total")
        first = func.min(DA.first_message_ts).label("first")
        query = (
            select(DA.user_id, total, first)
            .where(DA.day >= start, DA.day <= end)
            .group_by(DA.user_id)
        )
    ranked = (
        await session.execute(
            query.where(DA.chat_id == chat_id, DA.messages > 0)
            .order_by(total.desc(), first.asc().nulls_last(), DA.user_id)
            .limit(limit)
        )
    ).all()
    names = await member_names(session, chat_id, [row[0] for row in ranked])
    return [
        Contributor(user_id, *names.get(user_id, (str(user_id), None)), int(messages))
        for user_id, messages, _ in ranked
    ]


async def member_names(
    session: AsyncSession, chat_id: int, user_ids: Sequence[int]
) -> dict[int, tuple[str, str | None]]:
    if not user_ids:
        return {}
    rows = await session.execute(
        select(Member.user_id, Member.display_name, Member.username).where(
            Member.chat_id == chat_id, Member.user_id.in_(user_ids)
        )
    )
    # An erased member (bot.privacy) keeps a negative pseudonym and no name: shown as 👤.
    return {
        uid: (name or ("👤" if uid < 0 else str(uid)), username) for uid, name, username in rows
    }


# --- a day's report and a period's report ------------------------------------------------


@dataclass(slots=True)
class Snapshot:
    """The figures reports show for a day or a period, by metric name (None: not measurable).

    For a period: counts are sums, `dau` is the daily average, `wau`/`mau` are those of the
    last day, `stickiness` is average DAU / MAU of the last day, check-in rate and
    participation are period sums over summed DAU, and retention pools the cohorts of the
    period whose window is over (retained / joined).
    """

    start: date
    end: date
    values: dict[str, Any]  # float | int | None, or UNAVAILABLE for a feature's figures
    partial: bool = False

    def get(self, metric: str) -> Any:
        return self.values.get(metric)


async def day_snapshot(
    session: AsyncSession, chat_id: int, day: date, *, today: date, tz: ZoneInfo
) -> Snapshot:
    """The full KPI table of one day, with the retention that became measurable that day."""
    wanted = {metric: day - timedelta(days=span) for metric, span in RETENTION_DAYS.items()}
    (row,) = await daily_kpis(
        session, chat_id, day, day, today=today, tz=tz, extra_cohorts=wanted.values()
    )
    values: dict[str, float | int | None] = {m: row.value(m) for m in DAY_METRICS}
    measured_on = max(today, day + timedelta(days=1))
    groups = (
        row.cohorts
        if measured_on == today
        else await cohorts(session, chat_id, wanted.values(), measured_on)
    )
    values.update({metric: groups[c].rate(metric) for metric, c in wanted.items()})
    return Snapshot(day, day, values, row.partial)


async def period_snapshot(
    session: AsyncSession, chat_id: int, start: date, end: date, *, today: date, tz: ZoneInfo
) -> Snapshot:
    """The KPIs of the period start..end (see `Snapshot` for how days combine)."""
    if start == end:
        return await day_snapshot(session, chat_id, start, today=today, tz=tz)
    rows = await daily_kpis(session, chat_id, start, end, today=today, tz=tz)
    n = len(rows)
    dau_sum = sum(r.dau for r in rows)
    last = rows[-1]
    values: dict[str, float | int | None] = {
        "messages": sum(r.messages for r in rows),
        "dau": dau_sum / n,
        "wau": last.wau,
        "mau": last.mau,
        "stickiness": ratio(dau_sum / n, last.mau),
        "joins": sum(r.joins for r in rows),
        "leaves": sum(r.leaves for r in rows),
        "checkins": sum(r.checkins for r in rows),
        "checkin_rate": ratio(sum(r.checkins for r in rows), dau_sum),
        "participation": ratio(sum(r.participants for r in rows), dau_sum),
    }
    values["net"] = values["joins"] - values["leaves"]  # type: ignore[operator]
    for metric in RETENTION_DAYS:
        measured = [(r.cohort, getattr(r, metric)) for r in rows if getattr(r, metric) is not None]
        size = sum(s for s, _ in measured)
        values[metric] = sum(s * rate for s, rate in measured) / size if size else None
    return Snapshot(start, end, values, any(r.partial for r in rows))


def change(current: float | int | None, previous: float | int | None) -> float | None:
    """Relative change (0.18 = +18%); None when either side is missing or previous is 0.

    Measured against |previous|, so a rise from a negative figure (net growth −1 → +2) is a
    rise (+300%), not a fall."""
    if current is None or previous is None or previous == 0:
        return None
    return (current - previous) / abs(previous)


# --- figures other features provide ---------------------------------------------------------

FeatureValue = float | int | None  # None: nothing to measure (e.g. no poll closed)
MetricProvider = Callable[
    [AsyncSession, int, date, date, ZoneInfo], Awaitable[dict[str, FeatureValue]]
]


@dataclass
class FeatureMetrics:
    """Metrics a feature contributes to reports; `provider` None = feature not installed.

    The provider gets (session, chat id, first day, last day, chat time zone) and returns the
    figures of that period of chat-local days (counts summed, ratios pooled)."""

    feature: str
    metrics: tuple[str, ...]
    provider: MetricProvider | None = None
    ratios: frozenset[str] = frozenset()
    ceilings: frozenset[str] = frozenset()


FEATURE_METRICS: dict[str, FeatureMetrics] = {
    "content": FeatureMetrics(
        "content",
        ("content_sent", "content_failed", "content_missed"),
        ceilings=frozenset({"content_failed", "content_missed"}),
    ),
    "polls": FeatureMetrics(
        "polls", ("polls_closed", "poll_turnout"), None, frozenset({"poll_turnout"})
    ),
    "lotteries": FeatureMetrics("lotteries", ("lottery_entries", "lotteries_drawn")),
}


def register_metrics(
    feature: str,
    metrics: Sequence[str],
    provider: MetricProvider,
    *,
    ratios: Iterable[str] = (),
    ceilings: Iterable[str] = (),
) -> None:
    """A feature plugs its figures into /kpi, the digest and the export (and makes them
    targetable); `ratios` are shares in 0..1 (shown as percentages, targets at most 1);
    `ceilings` are figures whose target is a limit not to exceed (e.g. failed posts)."""
    FEATURE_METRICS[feature] = FeatureMetrics(
        feature, tuple(metrics), provider, frozenset(ratios), frozenset(ceilings)
    )


def is_ratio(metric: str) -> bool:
    return metric in RATIOS or any(metric in e.ratios for e in FEATURE_METRICS.values())


# Figures where less is better: their target is a ceiling (reports say "above target").
CEILINGS = frozenset({"leaves"})


def is_ceiling(metric: str) -> bool:
    return metric in CEILINGS or any(metric in e.ceilings for e in FEATURE_METRICS.values())


class Unavailable:
    """Marks a figure whose feature is not installed: shown as "unavailable", never 0."""

    def __repr__(self) -> str:
        return "UNAVAILABLE"


UNAVAILABLE = Unavailable()


def utc_bounds(start: date, end: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """[first moment of `start`, first moment after `end`) in UTC, for chat-local days."""
    from bot.timeparse import local_to_utc

    midnight = datetime.min.time()
    return local_to_utc(start, midnight, tz), local_to_utc(end + timedelta(days=1), midnight, tz)


async def feature_metrics(
    session: AsyncSession, chat_id: int, start: date, end: date, tz: ZoneInfo
) -> dict[str, FeatureValue | Unavailable]:
    """Every feature's figures for the period start..end (chat-local days)."""
    values: dict[str, FeatureValue | Unavailable] = {}
    for entry in FEATURE_METRICS.values():
        if entry.provider is None:
            values.update(dict.fromkeys(entry.metrics, UNAVAILABLE))
        else:
            provided = await entry.provider(session, chat_id, start, end, tz)
            values.update({m: provided.get(m) for m in entry.metrics})
    return values


async def feature_metrics_by_day(
    session: AsyncSession, chat_id: int, start: date, end: date, tz: ZoneInfo
) -> dict[date, dict[str, FeatureValue | Unavailable]]:
    """The features' figures of each day start..end (for the export: one row per day)."""
    return {
        start + timedelta(days=i): await feature_metrics(
            session, chat_id, start + timedelta(days=i), start + timedelta(days=i), tz
        )
        for i in range((end - start).days + 1)
    }


def feature_metric_names() -> list[str]:
    return [m for entry in FEATURE_METRICS.values() for m in entry.metrics]


def known_metrics() -> list[str]:
    return [*DAY_METRICS, *feature_metric_names()]


# --- targets ------------------------------------------------------------------------------


class KpiTarget(SQLModel, table=True):
    """A goal (目标) an operator set for one KPI of a chat; reports show actual / target."""

    __tablename__ = "kpi_target"

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    metric: str = Field(primary_key=True, max_length=32)
    value: float = Field(sa_type=Float)
    set_by: int | None = Field(default=None, sa_type=BigInteger)
    set_at: datetime = Field(sa_column=utc_column(nullable=False))


def parse_target(metric: str, raw: str) -> tuple[str, float] | None:
    """`dau 200`, `retention_d7 0.35` or `35%`; None when the metric or value is invalid."""
    metric = metric.lower().strip()
    if metric not in known_metrics():
        return None
    text = raw.strip().replace(",", "")
    percent = text.endswith("%")
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        return None
    if percent:
        value /= 100
    if value <= 0 or value != value or value == float("inf"):
        return None
    if is_ratio(metric) and value > 1:
        return None
    return metric, value


async def set_target(
    session: AsyncSession, chat_id: int, metric: str, value: float, *, by: int, now: datetime
) -> None:
    await upsert(
        session,
        KpiTarget.__table__,  # type: ignore[attr-defined]
        [{"chat_id": chat_id, "metric": metric, "value": value, "set_by": by, "set_at": now}],
        key=("chat_id", "metric"),
        update=lambda new: {"value": new.value, "set_by": new.set_by, "set_at": new.set_at},
    )


async def clear_target(session: AsyncSession, chat_id: int, metric: str) -> bool:
    result = await session.execute(
        delete(KpiTarget).where(KpiTarget.chat_id == chat_id, KpiTarget.metric == metric)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def targets(session: AsyncSession, chat_id: int) -> dict[str, float]:
    rows = await session.execute(
        select(KpiTarget.metric, KpiTarget.value).where(KpiTarget.chat_id == chat_id)
    )
    order = {m: i for i, m in enumerate(known_metrics())}
    return dict(sorted(rows.all(), key=lambda item: order.get(item[0], len(order))))


def achievement(actual: float | int | None, target: float | None) -> float | None:
    """Actual / target (1.0 = reached)."""
    if actual is None or not target or isinstance(actual, Unavailable):
        return None
    return actual / target


__all__ = [
    "DAY_METRICS",
    "UNAVAILABLE",
    "DayKpis",
    "KpiTarget",
    "Snapshot",
    "achievement",
    "change",
    "cohorts",
    "daily_kpis",
    "day_snapshot",
    "feature_metrics",
    "feature_metrics_by_day",
    "is_ceiling",
    "is_ratio",
    "local_today",
    "period_snapshot",
    "register_metrics",
    "top_contributors",
    "activity_counts",
    "utc_bounds",
]
