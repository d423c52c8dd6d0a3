"""Member segments (用户分层): new, core, casual, at risk, dormant — per chat, from the roster.

Computed from each roster row's recent-activity state (`member.active_day` + the 62-day bit
mask `active_mask`, kept by triggers on the rollups, see bot.activity) and its join/leave
times; never from raw history. When a reference day lies so far back that a mask no longer
covers the look-back, the chat's rollup rows (`daily_activity`) of that window are read
instead (same answer, one range scan).

As of a reference day R (chat-local, R included), every member in the group on R is in
exactly one segment, the first that applies (precedence top to bottom):

1. new      joined on R-(new_days-1)..R (a recorded join; default: the last 7 days)
2. core     active on at least `core_days` of the `core_window` days ending R (4 of 7)
3. casual   active on any of the `casual_days` days ending R (14)
4. at_risk  silent for those `casual_days` days, active on any of the `risk_days` (30) days
            before them — i.e. last active 14..43 days ago by default
5. dormant  everyone else: silent for casual_days + risk_days (44) days or more, or never
            active (and not new)

"Active" is DESIGN §4's (a message, check-in, poll answer or lottery entry that day).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from bot.activity import MASK_DAYS, local_day
from bot.dashboard import register_panel
from bot.db import upsert
from bot.digest import DigestContext, register_section
from bot.i18n import t
from bot.kpi import ACTIVE, DA, MEMBER
from bot.models import chat_fk, utc_column
from bot.timeparse import local_to_utc

SEGMENTS = ("new", "core", "casual", "at_risk", "dormant")

# Names operators may type for a segment (English and Chinese).
ALIASES = {
    "new": "new",
    "newcomers": "new",
    "新": "new",
    "新人": "new",
    "新成员": "new",
    "core": "core",
    "核心": "core",
    "casual": "casual",
    "普通": "casual",
    "at_risk": "at_risk",
    "at-risk": "at_risk",
    "atrisk": "at_risk",
    "risk": "at_risk",
    "流失预警": "at_risk",
    "预警": "at_risk",
    "风险": "at_risk",
    "dormant": "dormant",
    "沉睡": "dormant",
    "沉默": "dormant",
}


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The segment boundaries of a chat (defaults: the issue's)."""

    new_days: int = 7
    core_days: int = 4
    core_window: int = 7
    casual_days: int = 14
    risk_days: int = 30

    @property
    def lookback(self) -> int:
        """How many days ending R decide a member's segment."""
        return max(self.casual_days + self.risk_days, self.core_window)


DEFAULTS = Thresholds()
# Allowed values per setting, checked by `with_setting`.
LIMITS = {
    "new_days": (1, 60),
    "core_days": (1, 30),
    "core_window": (1, 30),
    "casual_days": (1, 60),
    "risk_days": (1, 120),
}
SETTING_ALIASES = {
    "new": "new_days",
    "core": "core_days",
    "window": "core_window",
    "casual": "casual_days",
    "risk": "risk_days",
    "at_risk": "risk_days",
}


class SegmentSettings(SQLModel, table=True):
    """A chat's own segment thresholds (no row = the defaults)."""

    __tablename__ = "segment_settings"

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    new_days: int = Field(default=DEFAULTS.new_days)
    core_days: int = Field(default=DEFAULTS.core_days)
    core_window: int = Field(default=DEFAULTS.core_window)
    casual_days: int = Field(default=DEFAULTS.casual_days)
    risk_days: int = Field(default=DEFAULTS.risk_days)
    updated_at: datetime = Field(sa_column=utc_column(nullable=False))


async def thresholds(session: AsyncSession, chat_id: int) -> Thresholds:
    row = await session.get(SegmentSettings, chat_id)
    if row is None:
        return DEFAULTS
    return Thresholds(row.new_days, row.core_days, row.core_window, row.casual_days, row.risk_days)


def with_setting(current: Thresholds, key: str, value: int) -> Thresholds | str:
    """`current` with one setting changed, or the name of the rule the change would break."""
    key = SETTING_ALIASES.get(key, key)
    if key not in LIMITS:
        return "unknown"
    low, high = LIMITS[key]
    if not low <= value <= high:
        return "range"
    values = {name: getattr(current, name) for name in LIMITS}
    values[key] = value
    changed = Thresholds(**values)
    if changed.core_days > changed.core_window:
        return "core_window"
    if changed.casual_days < changed.core_window:
        return "casual_window"
    return changed


async def save_thresholds(
    session: AsyncSession, chat_id: int, values: Thresholds, *, now: datetime
) -> None:
    row = {"chat_id": chat_id, "updated_at": now, **{k: getattr(values, k) for k in LIMITS}}
    await upsert(
        session,
        SegmentSettings.__table__,  # type: ignore[attr-defined]
        [row],
        key=("chat_id",),
        update=lambda new: {k: new[k] for k in row if k != "chat_id"},
    )


# --- classification ---------------------------------------------------------------------


def window_bits(active_day: int | None, mask: int, ref: int) -> int:
    """A member's activity as bits relative to `ref` (bit j = active on ref - j), for the days
    the mask covers; days after `ref` are dropped."""
    if active_day is None:
        return 0
    shift = active_day - ref
    return mask >> shift if shift >= 0 else mask << -shift


def covered(active_day: int | None, ref: int, lookback: int) -> bool:
    """Whether the mask (MASK_DAYS ending active_day) covers ref-lookback+1..ref; given the
    chat's latest active_day, whether every member's does."""
    return active_day is None or active_day - (ref - lookback + 1) < MASK_DAYS


@dataclass(frozen=True, slots=True)
class _Masks:
    """The thresholds as bit masks over the days before R (bit j = R - j), made once."""

    lookback: int
    core: int
    core_days: int
    casual: int
    risk: int

    @classmethod
    def of(cls, limits: Thresholds) -> _Masks:
        return cls(
            lookback=(1 << limits.lookback) - 1,
            core=(1 << limits.core_window) - 1,
            core_days=limits.core_days,
            casual=(1 << limits.casual_days) - 1,
            risk=((1 << limits.risk_days) - 1) << limits.casual_days,
        )


def _segment(bits: int, new: bool, masks: _Masks) -> str:
    if new:
        return "new"
    if (bits & masks.core).bit_count() >= masks.core_days:
        return "core"
    if bits & masks.casual:
        return "casual"
    if bits & masks.risk:
        return "at_risk"
    return "dormant"


def _silence(bits: int, masks: _Masks) -> int | None:
    """Days since the last active day within the look-back (0 = active on R), or None."""
    recent = bits & masks.lookback
    return (recent & -recent).bit_length() - 1 if recent else None


def classify(
    bits: int, joined: date | None, ref: date, limits: Thresholds = DEFAULTS
) -> tuple[str, int | None]:
    """(segment, days since last active — None if not active in the look-back) of one member
    from its activity bits relative to `ref` and its join day."""
    masks = _Masks.of(limits)
    new = joined is not None and 0 <= (ref - joined).days < limits.new_days
    return _segment(bits, new, masks), _silence(bits, masks)


@dataclass(slots=True)
class Placed:
    """One member's segment as of a day, with what an operator needs to reach out."""

    user_id: int
    name: str
    username: str | None
    segment: str
    last_active: date | None  # the latest active day known (also before the look-back)
    joined: date | None


@dataclass(slots=True)
class Segmentation:
    ref: date
    limits: Thresholds
    members: list[Placed] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        result = dict.fromkeys(SEGMENTS, 0)
        for member in self.members:
            result[member.segment] += 1
        return result

    def of(self, segment: str) -> list[Placed]:
        """Members of a segment: most recently active first, never active last, then by id."""
        chosen = [m for m in self.members if m.segment == segment]
        return sorted(
            chosen,
            key=lambda m: (
                -(m.last_active.toordinal() if m.last_active else 0),
                m.user_id,
            ),
        )


@dataclass(frozen=True, slots=True)
class _Day:
    """One reference day R: its day number and, if the masks fall short, rollup bits."""

    ref: date
    ordinal: int
    fallback: dict[int, int] | None


def _membership(ref: date, *, today: date, tz: ZoneInfo, new_days: int) -> tuple[Any, Any]:
    """SQL flags (in the group at the end of R, joined within the new window) of a roster row.

    For today, membership is the roster's status. For an earlier day, it comes from the first
    sighting and the latest join/leave (someone who left and came back within the span counts
    from the later join: the roster keeps one join and one leave). Worked out in the query, so
    no timestamp is read back per member.
    """
    end = local_to_utc(ref + timedelta(days=1), time(0), tz)
    new_from = local_to_utc(ref - timedelta(days=new_days - 1), time(0), tz)
    member = MEMBER.status == "member"
    if ref < today:
        member = and_(
            MEMBER.first_seen < end,
            or_(MEMBER.joined_at.is_(None), MEMBER.joined_at < end),
            or_(member, MEMBER.left_at >= end),
        )
    new = and_(MEMBER.joined_at >= new_from, MEMBER.joined_at < end)
    return case((member, 1), else_=0), case((new, 1), else_=0)


async def segment_members(
    session: AsyncSession,
    chat_id: int,
    refs: Iterable[date],
    *,
    tz: ZoneInfo,
    today: date,
    limits: Thresholds | None = None,
    counts_only: bool = False,
) -> dict[date, Segmentation]:
    """Everyone in the group on each reference day, placed in a segment (one roster read).

    With `counts_only`, the Segmentation's members carry no names (cheaper for digests)."""
    limits = limits or await thresholds(session, chat_id)
    wanted = sorted(set(refs))
    if not wanted:
        return {}
    flags = []
    for ref in wanted:
        flags.extend(_membership(ref, today=today, tz=tz, new_days=limits.new_days))
    details = () if counts_only else (MEMBER.display_name, MEMBER.username, MEMBER.joined_at)
    rows = (
        await session.execute(
            select(MEMBER.user_id, MEMBER.active_day, MEMBER.active_mask, *flags, *details).where(
                MEMBER.chat_id == chat_id,
                # members now, and those who left after the earliest day asked about
                or_(
                    MEMBER.status == "member",
                    MEMBER.left_at >= local_to_utc(wanted[0], time(0), tz),
                ),
            )
        )
    ).all()
    result = {ref: Segmentation(ref, limits) for ref in wanted}
    masks = _Masks.of(limits)
    days = []
    latest = max((row[1] for row in rows if row[1] is not None), default=None)
    for ref in wanted:
        ordinal = ref.toordinal()
        fallback = None
        if not covered(latest, ordinal, limits.lookback):
            fallback = await _bits_from_rollups(session, chat_id, ref, limits.lookback)
        days.append(_Day(ref, ordinal, fallback))
    for row in rows:
        user_id, active, mask = row[0], row[1], row[2] or 0
        for index, day in enumerate(days):
            if not row[3 + 2 * index]:
                continue
            if day.fallback is not None:
                bits = day.fallback.get(user_id, 0)
            else:
                bits = window_bits(active, mask, day.ordinal)
            segment = _segment(bits, bool(row[4 + 2 * index]), masks)
            if counts_only:
                result[day.ref].members.append(Placed(user_id, "", None, segment, None, None))
                continue
            silence = _silence(bits, masks)
            if silence is not None:
                last = day.ref - timedelta(days=silence)
            elif active is not None and active <= day.ordinal:
                last = date.fromordinal(active)
            else:
                last = None
            name, username, joined_at = row[-3:]
            joined = local_day(joined_at, tz) if joined_at else None
            result[day.ref].members.append(Placed(user_id, name, username, segment, last, joined))
    return result


async def _bits_from_rollups(
    session: AsyncSession, chat_id: int, ref: date, lookback: int
) -> dict[int, int]:
    """Activity bits relative to `ref` from the rollups (for days the masks no longer hold)."""
    rows = await session.execute(
        select(DA.user_id, DA.day).where(
            DA.chat_id == chat_id,
            DA.day > ref - timedelta(days=lookback),
            DA.day <= ref,
            ACTIVE,
        )
    )
    bits: dict[int, int] = {}
    for user_id, day in rows:
        bits[user_id] = bits.get(user_id, 0) | (1 << (ref - day).days)
    return bits


async def segment_counts(
    session: AsyncSession, chat_id: int, ref: date, *, tz: ZoneInfo, today: date
) -> tuple[dict[str, int], dict[str, int]]:
    """Segment counts as of `ref` and as of 7 days before (week-on-week movement)."""
    week_ago = ref - timedelta(days=7)
    placed = await segment_members(
        session, chat_id, (ref, week_ago), tz=tz, today=today, counts_only=True
    )
    return placed[ref].counts(), placed[week_ago].counts()


def parse_segment(word: str) -> str | None:
    return ALIASES.get(word.strip().lower())


# --- presentation -------------------------------------------------------------------------


def movement(now: int, before: int) -> str:
    """ "▲2", "▼1" or "±0": the change in members since the earlier count."""
    if now == before:
        return "±0"
    return f"{'▲' if now > before else '▼'}{abs(now - before)}"


def rules_text(lang: str, limits: Thresholds) -> str:
    return t(
        lang,
        "segments.rules",
        new=limits.new_days,
        core=limits.core_days,
        window=limits.core_window,
        casual=limits.casual_days,
        risk=limits.risk_days,
        dormant=limits.casual_days + limits.risk_days,
    )


async def segments_section(ctx: DigestContext) -> list[str]:
    """Digest section: segment counts at the report's last day, and their change in 7 days."""
    now, before = await segment_counts(
        ctx.session, ctx.chat_id, ctx.end, tz=ctx.tz, today=ctx.today
    )
    if not any(now.values()) and not any(before.values()):
        return []
    parts = [
        t(
            ctx.lang,
            "segments.section_line",
            name=t(ctx.lang, f"segments.name.{name}"),
            count=now[name],
            change=f"({movement(now[name], before[name])})",
        )
        for name in SEGMENTS
    ]
    return [f"{t(ctx.lang, 'segments.section')}: " + " · ".join(parts)]


register_section("segments", segments_section)


# --- the dashboard panel ------------------------------------------------------------------


async def segments_panel(
    session: AsyncSession, chat_id: int, today: date, tz: ZoneInfo, lang: str
) -> dict[str, Any] | None:
    """Dashboard: members per segment today and 7 days before (grouped bars, the counts of
    /segment); None while the group has nobody to place."""
    now, before = await segment_counts(session, chat_id, today, tz=tz, today=today)
    if not any(now.values()) and not any(before.values()):
        return None
    names = [t(lang, f"segments.name.{name}") for name in SEGMENTS]
    hover = t(lang, "segments.panel_hover")

    def bars(label: str, counts: dict[str, int], change: list[str]) -> dict[str, Any]:
        return {
            "type": "bar",
            "name": label,
            "x": names,
            "y": [counts[name] for name in SEGMENTS],
            "customdata": change,
            "hovertemplate": hover,
        }

    week_ago = today - timedelta(days=7)
    peak = max(*now.values(), *before.values())
    return {
        "data": [
            bars(
                t(lang, "segments.panel_before", date=week_ago.isoformat()),
                before,
                [""] * len(SEGMENTS),
            ),
            bars(
                t(lang, "segments.panel_now", date=today.isoformat()),
                now,
                [f"({movement(now[name], before[name])})" for name in SEGMENTS],
            ),
        ],
        "layout": {
            "title": {"text": t(lang, "segments.panel_title")},
            "barmode": "group",
            "height": 320,
            "margin": {"l": 50, "r": 20, "t": 50, "b": 60},
            "legend": {"orientation": "h", "y": -0.2},
            # whole members: no 0.5 ticks on a small group's axis
            "yaxis": {"rangemode": "tozero", **({"dtick": 1} if peak <= 10 else {})},
        },
    }


register_panel("segments", segments_panel, order=20)
