"""Daily check-ins (签到): one per member per chat-local day, streaks, and the points they earn.

A check-in day is the chat's local calendar day, shifted by an optional day-start hour
(with 04:00, a check-in at 01:30 still counts for the day before). Exactly once per
(chat, member, day) is the primary key of `checkin`, written with INSERT … ON CONFLICT DO
NOTHING; the day's running count (`checkin_day`) is one upsert returning the new count, so
"#3 today" and the first-of-day bonus are exact even with concurrent writers.

Each check-in row carries its streak and the day that streak started, derived from the
row of the day before — so a late-arriving check-in or a make-up (补签) for yesterday only
has to relink the days that follow it. Points go through `bot.points` (sources
`checkin`, `checkin_first`, `checkin_milestone`, `checkin_makeup`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, Index, and_, bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlmodel import Field, SQLModel

from bot import points
from bot.activity import local_day, mark_participation
from bot.chats import register_migration_merge
from bot.db import insert_for, prepared, upsert
from bot.driver_session import Executor, driver_session
from bot.models import Member, chat_fk, utc_column

log = logging.getLogger(__name__)

# --- configuration ---------------------------------------------------------------------------

DEFAULT_KEYWORDS = ("签到", "打卡", "check in", "checkin")
MAKEUP_KEYWORDS = frozenset({"补签"})  # English speakers use /makeup ("make up" is common)
DEFAULT_MILESTONES = ((7, 20), (30, 100), (100, 500))
MAX_KEYWORDS = 20
MAX_KEYWORD_LENGTH = 32
MAX_MILESTONES = 10
MAX_POINTS = 100_000
CACHE_TTL = 60.0
# Dropped from both ends of a message before comparing it with the keywords: "签到！" counts.
_KEYWORD_TRIM = " !！.。~～,，、"


def normalize_keyword(text: str) -> str:
    """Case-folded, single-spaced, without trailing punctuation: how keywords are compared."""
    return " ".join(text.casefold().split()).strip(_KEYWORD_TRIM)


class CheckinConfig(SQLModel, table=True):
    """A group's check-in rules (no row: the defaults)."""

    __tablename__ = "checkin_config"

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    enabled: bool = Field(default=True)
    day_start_hour: int = Field(default=0)
    base_points: int = Field(default=10)
    streak_bonus: int = Field(default=1)  # extra points per consecutive day after the first
    streak_cap: int = Field(default=10)  # the streak bonus never exceeds this
    first_bonus: int = Field(default=5)  # for the first check-in of the day in the group
    milestones: str = Field(default="7:20,30:100,100:500", max_length=255)  # days:bonus,…
    makeup_cost: int = Field(default=20)
    makeup_limit: int = Field(default=2)  # make-ups per month; 0 turns them off
    keywords: str = Field(default=",".join(DEFAULT_KEYWORDS), max_length=1024)
    updated_at: datetime = Field(sa_column=utc_column(nullable=False))


@dataclass(frozen=True, slots=True)
class Rules:
    """The parsed rules of one group."""

    enabled: bool = True
    day_start_hour: int = 0
    base_points: int = 10
    streak_bonus: int = 1
    streak_cap: int = 10
    first_bonus: int = 5
    milestones: tuple[tuple[int, int], ...] = DEFAULT_MILESTONES
    makeup_cost: int = 20
    makeup_limit: int = 2
    keywords: tuple[str, ...] = DEFAULT_KEYWORDS

    @property
    def keyword_set(self) -> frozenset[str]:
        return frozenset(normalize_keyword(k) for k in self.keywords)

    def streak_points(self, streak: int) -> int:
        return min(self.streak_bonus * max(streak - 1, 0), self.streak_cap)

    def milestone_bonus(self, streak: int) -> int:
        return dict(self.milestones).get(streak, 0)

    @classmethod
    def from_row(cls, row: Any) -> Rules:
        """From a `checkin_config` row (mapped object or Core row), or the defaults."""
        if row is None:
            return cls()
        return cls(
            enabled=row.enabled,
            day_start_hour=row.day_start_hour,
            base_points=row.base_points,
            streak_bonus=row.streak_bonus,
            streak_cap=row.streak_cap,
            first_bonus=row.first_bonus,
            milestones=parse_milestones(row.milestones),
            makeup_cost=row.makeup_cost,
            makeup_limit=row.makeup_limit,
            keywords=tuple(k for k in row.keywords.split(",") if k),
        )

    def to_values(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "day_start_hour": self.day_start_hour,
            "base_points": self.base_points,
            "streak_bonus": self.streak_bonus,
            "streak_cap": self.streak_cap,
            "first_bonus": self.first_bonus,
            "milestones": format_milestones(self.milestones),
            "makeup_cost": self.makeup_cost,
            "makeup_limit": self.makeup_limit,
            "keywords": ",".join(self.keywords),
        }


class ConfigError(ValueError):
    """A setting that cannot be applied; `key` names the translation explaining why."""

    def __init__(self, message_key: str, /, **values: Any) -> None:
        super().__init__(message_key)
        self.key = message_key
        self.values = values


def parse_milestones(text: str) -> tuple[tuple[int, int], ...]:
    """`7:20,30:100` → ((7, 20), (30, 100)); the stored form is always valid."""
    pairs = []
    for part in text.split(","):
        if ":" in part:
            days, bonus = part.split(":", 1)
            pairs.append((int(days), int(bonus)))
    return tuple(sorted(pairs))


def format_milestones(milestones: Iterable[tuple[int, int]]) -> str:
    return ",".join(f"{days}:{bonus}" for days, bonus in milestones)


def _number(value: str, *, low: int, high: int) -> int:
    text = value.strip().lstrip("+")
    if not text.isdigit():
        raise ConfigError("config_not_number", value=value)
    number = int(text)
    if not low <= number <= high:
        raise ConfigError("config_out_of_range", value=value, low=low, high=high)
    return number


def _hour(value: str) -> int:
    text = value.strip().replace("：", ":")
    hour, _, minutes = text.partition(":")
    if not hour.isdigit() or (minutes and minutes != "00") or not 0 <= int(hour) <= 23:
        raise ConfigError("config_bad_hour", value=value)
    return int(hour)


def _switch(value: str) -> bool:
    word = value.strip().lower()
    if word in {"on", "yes", "true", "1", "开", "开启"}:
        return True
    if word in {"off", "no", "false", "0", "关", "关闭"}:
        return False
    raise ConfigError("config_bad_switch", value=value)


def _milestones(value: str) -> tuple[tuple[int, int], ...]:
    text = value.strip().lower()
    if text in {"off", "none", "0", "关", "关闭"}:
        return ()
    pairs: dict[int, int] = {}
    for part in text.replace("，", ",").replace(" ", ",").split(","):
        if not part:
            continue
        days, sep, bonus = part.replace("：", ":").partition(":")
        if not sep or not days.isdigit() or not bonus.isdigit():
            raise ConfigError("config_bad_milestones", value=part)
        if not 2 <= int(days) <= 3650 or not 1 <= int(bonus) <= MAX_POINTS:
            raise ConfigError("config_bad_milestones", value=part)
        pairs[int(days)] = int(bonus)
    if not pairs or len(pairs) > MAX_MILESTONES:
        raise ConfigError("config_bad_milestones", value=value)
    return tuple(sorted(pairs.items()))


def _keywords(value: str) -> tuple[str, ...]:
    if value.strip().lower() in {"default", "默认"}:
        return DEFAULT_KEYWORDS
    words: list[str] = []
    for part in value.replace("，", ",").replace("、", ",").split(","):
        word = normalize_keyword(part)
        if not word:
            continue
        if word.startswith("/") or len(word) > MAX_KEYWORD_LENGTH:
            raise ConfigError("config_bad_keyword", value=part.strip(), max=MAX_KEYWORD_LENGTH)
        if word not in words:
            words.append(word)
    if not words or len(words) > MAX_KEYWORDS:
        raise ConfigError("config_keyword_count", max=MAX_KEYWORDS)
    return tuple(words)


# Setting names operators type (case, "_" and "-" ignored) → Rules field and parser.
SETTINGS: dict[str, tuple[str, Any]] = {
    "enabled": ("enabled", _switch),
    "base": ("base_points", lambda v: _number(v, low=0, high=MAX_POINTS)),
    "streak": ("streak_bonus", lambda v: _number(v, low=0, high=MAX_POINTS)),
    "cap": ("streak_cap", lambda v: _number(v, low=0, high=MAX_POINTS)),
    "first": ("first_bonus", lambda v: _number(v, low=0, high=MAX_POINTS)),
    "milestones": ("milestones", _milestones),
    "daystart": ("day_start_hour", _hour),
    "makeupcost": ("makeup_cost", lambda v: _number(v, low=0, high=MAX_POINTS)),
    "makeuplimit": ("makeup_limit", lambda v: _number(v, low=0, high=31)),
    "keywords": ("keywords", _keywords),
}
SETTING_ALIASES = {"on": ("enabled", "on"), "off": ("enabled", "off")}


def setting_name(word: str) -> str:
    return word.lower().replace("_", "").replace("-", "")


def apply_setting(rules: Rules, name: str, value: str) -> Rules:
    """A copy of `rules` with one setting changed; ConfigError says what was wrong."""
    key = setting_name(name)
    if key not in SETTINGS:
        raise ConfigError("config_unknown_key", key=name)
    if not value.strip():
        raise ConfigError("config_missing_value", key=key)
    field, parse = SETTINGS[key]
    return replace(rules, **{field: parse(value)})


def _rules_row(dialect: str) -> Any:
    config = CheckinConfig.__table__  # type: ignore[attr-defined]
    return select(config).where(config.c.chat_id == bindparam("chat"))


async def load_rules(session: Executor, chat_id: int) -> Rules:
    rows = await session.execute(
        prepared(session, "checkins.rules", _rules_row), {"chat": chat_id}
    )
    return Rules.from_row(rows.first())


async def save_rules(session: AsyncSession, chat_id: int, rules: Rules, *, now: datetime) -> None:
    table = CheckinConfig.__table__  # type: ignore[attr-defined]
    values = {"chat_id": chat_id, **rules.to_values(), "updated_at": now}
    await upsert(
        session,
        table,
        [values],
        key=("chat_id",),
        update=lambda new: {name: getattr(new, name) for name in values if name != "chat_id"},
    )


class RulesCache:
    """Each group's rules for the hot path, and the union of every group's keywords.

    The keyword filter sees every group message and cannot wait for the database, so it
    compares against `keywords` (all groups' keywords, a set lookup); the callback then
    checks the group's own rules (cached `CACHE_TTL` seconds). `refresh_keywords` reloads
    the union so keywords set through another process are picked up.
    """

    def __init__(self, db: async_sessionmaker[AsyncSession], engine: AsyncEngine) -> None:
        self._db = db
        self._engine = engine  # the cache misses read on the driver (bot.driver_session)
        self._rules: dict[int, tuple[float, Rules]] = {}
        self.keywords: set[str] = set(Rules().keyword_set) | MAKEUP_KEYWORDS

    async def get(self, chat_id: int) -> Rules:
        entry = self._rules.get(chat_id)
        if entry is not None and time.monotonic() - entry[0] < CACHE_TTL:
            return entry[1]
        async with driver_session(self._engine, write=False) as session:
            rules = await load_rules(session, chat_id)
        self.remember(chat_id, rules)
        return rules

    def remember(self, chat_id: int, rules: Rules) -> None:
        self._rules[chat_id] = (time.monotonic(), rules)
        self.keywords |= rules.keyword_set

    def invalidate(self, chat_id: int) -> None:
        self._rules.pop(chat_id, None)

    async def refresh_keywords(self) -> None:
        table = CheckinConfig.__table__  # type: ignore[attr-defined]
        async with self._db() as session:
            stored = await session.scalars(select(table.c.keywords).distinct())
            union = set(Rules().keyword_set) | MAKEUP_KEYWORDS
            for text in stored:
                union |= {normalize_keyword(k) for k in text.split(",") if k}
        self.keywords = union


# --- days --------------------------------------------------------------------------------------


def checkin_day(moment: datetime, tz: ZoneInfo, day_start_hour: int = 0) -> date:
    """The check-in day of a moment: the local date, where the day begins at the start hour."""
    local = moment.astimezone(tz)
    if local.hour < day_start_hour:
        return local.date() - timedelta(days=1)
    return local.date()


def day_start(day: date, tz: ZoneInfo, day_start_hour: int = 0) -> datetime:
    """The UTC moment a check-in day begins (a start hour skipped by DST moves past the gap)."""
    local = datetime(day.year, day.month, day.day, day_start_hour, tzinfo=tz)
    return local.astimezone(UTC)


def week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


def month_start(day: date) -> date:
    return day.replace(day=1)


# --- tables ------------------------------------------------------------------------------------


class Checkin(SQLModel, table=True):
    """One member's check-in for one day of a group (made up with points, or not)."""

    __tablename__ = "checkin"
    __table_args__ = (Index("ix_checkin_chat_day", "chat_id", "day"),)

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    user_id: int = Field(sa_type=BigInteger, primary_key=True)
    day: date = Field(primary_key=True)
    checked_at: datetime = Field(sa_column=utc_column(nullable=False))
    streak: int = Field(default=1)  # consecutive days ending with this one
    streak_start: date  # first day of that streak (milestones are once per streak)
    position: int | None = Field(default=None)  # n-th check-in of the day; None if made up
    made_up: bool = Field(default=False)


class CheckinDay(SQLModel, table=True):
    """How many members of a group have checked in on a day (positions come from here)."""

    __tablename__ = "checkin_day"

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    day: date = Field(primary_key=True)
    count: int = Field(default=0)


CHECKIN = Checkin.__table__  # type: ignore[attr-defined]
CHECKIN_DAY = CheckinDay.__table__  # type: ignore[attr-defined]

register_migration_merge(
    CheckinDay.__tablename__, lambda old, new: {**new, "count": old["count"] + new["count"]}
)


# --- checking in -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Award:
    """One part of what a check-in earned, for the reply."""

    kind: str  # base | streak | first | milestone
    points: int
    days: int = 0  # for milestones


@dataclass(frozen=True, slots=True)
class CheckinResult:
    new: bool  # False: already checked in that day (nothing changed)
    day: date
    streak: int
    position: int | None
    awards: tuple[Award, ...]
    total: int  # points balance afterwards

    @property
    def earned(self) -> int:
        return sum(award.points for award in self.awards)


async def _row(session: AsyncSession, chat_id: int, user_id: int, day: date) -> Any:
    return (
        await session.execute(
            select(CHECKIN).where(
                CHECKIN.c.chat_id == chat_id, CHECKIN.c.user_id == user_id, CHECKIN.c.day == day
            )
        )
    ).first()


async def _claim_day(
    session: AsyncSession,
    *,
    chat_id: int,
    user_id: int,
    day: date,
    when: datetime,
    made_up: bool,
) -> tuple[int, date] | None:
    """Insert the (chat, user, day) row; None when it exists. Returns (streak, streak_start)."""
    before = await _row(session, chat_id, user_id, day - timedelta(days=1))
    streak, start = (before.streak + 1, before.streak_start) if before else (1, day)
    stmt = (
        insert_for(session.get_bind().dialect.name, CHECKIN)
        .values(
            chat_id=chat_id,
            user_id=user_id,
            day=day,
            checked_at=when,
            streak=streak,
            streak_start=start,
            position=None,
            made_up=made_up,
        )
        .on_conflict_do_nothing(index_elements=["chat_id", "user_id", "day"])
        .returning(CHECKIN.c.day)
    )
    if (await session.execute(stmt)).scalar() is None:
        return None
    return streak, start


async def _milestone(
    session: AsyncSession,
    rules: Rules,
    *,
    chat_id: int,
    user_id: int,
    streak: int,
    start: date,
    now: datetime,
) -> Award | None:
    """The bonus for reaching a milestone streak, once per streak (keyed by its first day)."""
    bonus = rules.milestone_bonus(streak)
    if bonus <= 0:
        return None
    new = await points.award(
        session,
        chat_id=chat_id,
        user_id=user_id,
        amount=bonus,
        reason=f"{streak}-day check-in streak",
        source="checkin_milestone",
        source_key=f"{user_id}:{streak}:{start.isoformat()}",
        now=now,
    )
    return Award("milestone", bonus, streak) if new else None


async def _relink(
    session: AsyncSession,
    rules: Rules,
    *,
    chat_id: int,
    user_id: int,
    day: date,
    streak: int,
    start: date,
    now: datetime,
) -> tuple[int, list[Award]]:
    """After `day` got a row (late, or made up), carry its streak into the days after it.

    Returns the streak of the last linked day and any milestone bonuses that became due.
    """
    awards = []
    following = day + timedelta(days=1)
    while True:
        row = await _row(session, chat_id, user_id, following)
        if row is None:
            return streak, awards
        streak += 1
        if row.streak == streak and row.streak_start == start:
            return row.streak, awards
        await session.execute(
            update(CHECKIN)
            .where(
                CHECKIN.c.chat_id == chat_id,
                CHECKIN.c.user_id == user_id,
                CHECKIN.c.day == following,
            )
            .values(streak=streak, streak_start=start)
        )
        award = await _milestone(
            session, rules, chat_id=chat_id, user_id=user_id, streak=streak, start=start, now=now
        )
        if award:
            awards.append(award)
        following += timedelta(days=1)


def _around(dialect: str) -> Any:
    return select(
        CHECKIN.c.day, CHECKIN.c.streak, CHECKIN.c.streak_start, CHECKIN.c.position
    ).where(
        CHECKIN.c.chat_id == bindparam("chat"),
        CHECKIN.c.user_id == bindparam("user"),
        CHECKIN.c.day.between(bindparam("first"), bindparam("last")),
    )


def _count_day(dialect: str) -> Any:
    return (
        insert_for(dialect, CHECKIN_DAY)
        .values(chat_id=bindparam("chat"), day=bindparam("day"), count=1)
        .on_conflict_do_update(
            index_elements=["chat_id", "day"], set_={"count": CHECKIN_DAY.c.count + 1}
        )
        .returning(CHECKIN_DAY.c.count)
    )


def _uncount_day(dialect: str) -> Any:
    return (
        update(CHECKIN_DAY)
        .where(CHECKIN_DAY.c.chat_id == bindparam("chat"), CHECKIN_DAY.c.day == bindparam("d"))
        .values(count=CHECKIN_DAY.c.count - 1)
    )


def _insert_checkin(dialect: str) -> Any:
    columns = ("chat_id", "user_id", "day", "checked_at", "streak", "streak_start", "position")
    return (
        insert_for(dialect, CHECKIN)
        .values({name: bindparam(name) for name in columns} | {"made_up": False})
        .on_conflict_do_nothing(index_elements=["chat_id", "user_id", "day"])
        .returning(CHECKIN.c.day)
    )


async def check_in(
    session: AsyncSession,
    *,
    chat_id: int,
    user_id: int,
    name: str,
    username: str | None,
    when: datetime,
    tz: ZoneInfo,
    rules: Rules,
) -> CheckinResult:
    """Check a member in for the day of `when` (when they sent it), exactly once.

    Writes the check-in, its points and the day's participation flag in the caller's
    transaction. A second attempt for the same day returns `new=False` and changes nothing.

    The hot path of the bot's writes, so few statements, each prepared once: one read of
    the day before, the day and the day after; the day's position counted before the row
    is inserted with it (and uncounted when a concurrent transaction inserted it first);
    the balance taken from the award's upsert.
    """
    day = checkin_day(when, tz, rules.day_start_hour)
    one_day = timedelta(days=1)
    around = {
        row.day: row
        for row in await session.execute(
            prepared(session, "checkins.around", _around),
            {"chat": chat_id, "user": user_id, "first": day - one_day, "last": day + one_day},
        )
    }
    if day in around:  # already checked in: its streak is the one still alive on `day`
        row = around[day]
        total = await points.balance(session, chat_id=chat_id, user_id=user_id)
        return CheckinResult(False, day, row.streak, row.position, (), total)
    before = around.get(day - one_day)
    streak, start = (before.streak + 1, before.streak_start) if before else (1, day)
    position = (
        await session.execute(
            prepared(session, "checkins.count_day", _count_day), {"chat": chat_id, "day": day}
        )
    ).scalar_one()
    inserted = (
        await session.execute(
            prepared(session, "checkins.insert", _insert_checkin),
            {
                "chat_id": chat_id,
                "user_id": user_id,
                "day": day,
                "checked_at": when,
                "streak": streak,
                "streak_start": start,
                "position": position,
            },
        )
    ).scalar()
    if inserted is None:  # a concurrent transaction checked them in first
        await session.execute(
            prepared(session, "checkins.uncount_day", _uncount_day), {"chat": chat_id, "d": day}
        )
        return await _already(session, chat_id, user_id, day)

    awards: list[Award] = []
    total: int | None = None
    base, bonus = rules.base_points, rules.streak_points(streak)
    if base + bonus > 0:
        total = await points.award_total(
            session,
            chat_id=chat_id,
            user_id=user_id,
            amount=base + bonus,
            reason=f"check-in {day.isoformat()} (streak {streak})",
            source="checkin",
            source_key=f"{user_id}:{day.isoformat()}",
            now=when,
        )
        if total is not None:
            awards.append(Award("base", base))
            if bonus:
                awards.append(Award("streak", bonus))
    if position == 1 and rules.first_bonus > 0:
        first = await points.award_total(
            session,
            chat_id=chat_id,
            user_id=user_id,
            amount=rules.first_bonus,
            reason=f"first check-in of {day.isoformat()}",
            source="checkin_first",
            source_key=day.isoformat(),
            now=when,
        )
        if first is not None:
            awards.append(Award("first", rules.first_bonus))
            total = first
    milestone = await _milestone(
        session, rules, chat_id=chat_id, user_id=user_id, streak=streak, start=start, now=when
    )
    if milestone:
        awards.append(milestone)
        total = None
    if day + one_day in around:
        # Normally nothing follows today; a check-in that arrives late may join later days.
        _, later = await _relink(
            session,
            rules,
            chat_id=chat_id,
            user_id=user_id,
            day=day,
            streak=streak,
            start=start,
            now=when,
        )
        if later:
            awards.extend(later)
            total = None
    await mark_participation(
        session,
        chat_id=chat_id,
        user_id=user_id,
        name=name,
        username=username,
        when=when,
        day=local_day(when, tz),
        kind="checked_in",
    )
    if total is None:
        total = await points.balance(session, chat_id=chat_id, user_id=user_id)
    return CheckinResult(True, day, streak, position, tuple(awards), total)


async def _already(session: AsyncSession, chat_id: int, user_id: int, day: date) -> CheckinResult:
    """The answer to a second check-in on `day`: nothing changes."""
    row = await _row(session, chat_id, user_id, day)
    streak = await current_streak(session, chat_id=chat_id, user_id=user_id, today=day)
    total = await points.balance(session, chat_id=chat_id, user_id=user_id)
    return CheckinResult(False, day, streak, row.position if row else None, (), total)


# --- make-up check-ins (补签) -------------------------------------------------------------------


class Makeup(StrEnum):
    DONE = "done"
    OFF = "off"  # make-ups are turned off in this group (or check-ins are)
    ALREADY = "already"  # yesterday already has a check-in
    NO_STREAK = "no_streak"  # nothing to save: no check-in the day before yesterday
    LIMIT = "limit"  # this month's make-ups are used up
    INSUFFICIENT = "insufficient"  # not enough points


@dataclass(frozen=True, slots=True)
class MakeupResult:
    status: Makeup
    day: date  # the day made up (yesterday)
    streak: int = 0  # the member's streak afterwards
    cost: int = 0
    total: int = 0  # points afterwards
    used: int = 0  # make-ups used this month, this one included
    limit: int = 0
    awards: tuple[Award, ...] = ()


async def makeups_used(
    session: AsyncSession, *, chat_id: int, user_id: int, since: datetime
) -> int:
    used = await session.scalar(
        select(func.count())
        .select_from(CHECKIN)
        .where(
            CHECKIN.c.chat_id == chat_id,
            CHECKIN.c.user_id == user_id,
            CHECKIN.c.made_up.is_(True),
            CHECKIN.c.checked_at >= since,
        )
    )
    return int(used or 0)


async def make_up(
    session: AsyncSession,
    *,
    chat_id: int,
    user_id: int,
    when: datetime,
    tz: ZoneInfo,
    rules: Rules,
) -> MakeupResult:
    """Fill yesterday's gap for points, to keep a streak alive; limited per month.

    Only yesterday, only when the member checked in the day before it (there is a streak to
    save), at most `makeup_limit` times per month (counted by when the make-up was done).
    The made-up day earns no points itself; milestones it completes are awarded.
    """
    today = checkin_day(when, tz, rules.day_start_hour)
    yesterday = today - timedelta(days=1)
    limit = rules.makeup_limit
    total = await points.balance(session, chat_id=chat_id, user_id=user_id)
    if not rules.enabled or limit <= 0:
        return MakeupResult(Makeup.OFF, yesterday, total=total, limit=limit)
    if await _row(session, chat_id, user_id, yesterday) is not None:
        streak = await current_streak(session, chat_id=chat_id, user_id=user_id, today=today)
        return MakeupResult(Makeup.ALREADY, yesterday, streak, total=total, limit=limit)
    if await _row(session, chat_id, user_id, yesterday - timedelta(days=1)) is None:
        return MakeupResult(Makeup.NO_STREAK, yesterday, total=total, limit=limit)
    since = day_start(month_start(today), tz, rules.day_start_hour)
    used = await makeups_used(session, chat_id=chat_id, user_id=user_id, since=since)
    if used >= limit:
        return MakeupResult(Makeup.LIMIT, yesterday, total=total, used=used, limit=limit)
    if total < rules.makeup_cost:
        return MakeupResult(
            Makeup.INSUFFICIENT, yesterday, cost=rules.makeup_cost, total=total, limit=limit
        )

    claimed = await _claim_day(
        session, chat_id=chat_id, user_id=user_id, day=yesterday, when=when, made_up=True
    )
    if claimed is None:  # a concurrent make-up or a late check-in got there first
        return MakeupResult(Makeup.ALREADY, yesterday, total=total, limit=limit)
    streak, start = claimed
    if rules.makeup_cost > 0:
        paid = await points.spend(
            session,
            chat_id=chat_id,
            user_id=user_id,
            amount=rules.makeup_cost,
            reason=f"make-up check-in for {yesterday.isoformat()}",
            source="checkin_makeup",
            source_key=f"{user_id}:{yesterday.isoformat()}",
            now=when,
        )
        if paid is points.Spend.INSUFFICIENT:  # spent elsewhere meanwhile: undo our claim
            await session.execute(
                delete(CHECKIN).where(
                    CHECKIN.c.chat_id == chat_id,
                    CHECKIN.c.user_id == user_id,
                    CHECKIN.c.day == yesterday,
                )
            )
            total = await points.balance(session, chat_id=chat_id, user_id=user_id)
            return MakeupResult(
                Makeup.INSUFFICIENT, yesterday, cost=rules.makeup_cost, total=total, limit=limit
            )
    awards = []
    milestone = await _milestone(
        session, rules, chat_id=chat_id, user_id=user_id, streak=streak, start=start, now=when
    )
    if milestone:
        awards.append(milestone)
    streak, later = await _relink(
        session,
        rules,
        chat_id=chat_id,
        user_id=user_id,
        day=yesterday,
        streak=streak,
        start=start,
        now=when,
    )
    awards.extend(later)
    total = await points.balance(session, chat_id=chat_id, user_id=user_id)
    return MakeupResult(
        Makeup.DONE,
        yesterday,
        streak,
        cost=rules.makeup_cost,
        total=total,
        used=used + 1,
        limit=limit,
        awards=tuple(awards),
    )


# --- reading -----------------------------------------------------------------------------------


async def current_streak(session: AsyncSession, *, chat_id: int, user_id: int, today: date) -> int:
    """The streak still alive on `today`: ending today or yesterday; 0 once a day was missed."""
    row = (
        await session.execute(
            select(CHECKIN.c.day, CHECKIN.c.streak)
            .where(
                CHECKIN.c.chat_id == chat_id,
                CHECKIN.c.user_id == user_id,
                CHECKIN.c.day <= today,
            )
            .order_by(CHECKIN.c.day.desc())
            .limit(1)
        )
    ).first()
    if row is None or row.day < today - timedelta(days=1):
        return 0
    return int(row.streak)


@dataclass(frozen=True, slots=True)
class MemberStats:
    points: int
    rank: int | None
    streak: int
    best_streak: int
    month_checkins: int
    total_checkins: int
    checked_in_today: bool


def _member_stats(dialect: str) -> Any:
    chat, user, today = bindparam("chat"), bindparam("user"), bindparam("today")
    mine = and_(CHECKIN.c.chat_id == chat, CHECKIN.c.user_id == user)
    # The streak still alive today: that of the latest check-in if it is today's or
    # yesterday's (as `current_streak`).
    alive = (
        select(CHECKIN.c.streak)
        .where(mine, CHECKIN.c.day <= today, CHECKIN.c.day >= bindparam("yesterday"))
        .order_by(CHECKIN.c.day.desc())
        .limit(1)
        .scalar_subquery()
    )
    points_now = (
        select(points.BALANCE.c.points)
        .where(points.BALANCE.c.chat_id == chat, points.BALANCE.c.user_id == user)
        .scalar_subquery()
    )
    above = (
        select(func.count())
        .select_from(points.BALANCE)
        .where(points.BALANCE.c.chat_id == chat, points.BALANCE.c.points > points_now)
        .scalar_subquery()
    )
    return select(
        func.max(CHECKIN.c.streak).label("best"),
        func.count().label("total"),
        func.count().filter(CHECKIN.c.day >= bindparam("month")).label("month"),
        func.count().filter(CHECKIN.c.day == today).label("today"),
        alive.label("streak"),
        points_now.label("points"),
        above.label("above"),
    ).where(mine)


async def member_stats(
    session: AsyncSession, *, chat_id: int, user_id: int, today: date
) -> MemberStats:
    """What /me shows: one prepared statement (it is among the commands members use most)."""
    row = (
        await session.execute(
            prepared(session, "checkins.member_stats", _member_stats),
            {
                "chat": chat_id,
                "user": user_id,
                "today": today,
                "yesterday": today - timedelta(days=1),
                "month": month_start(today),
            },
        )
    ).one()
    balance = int(row.points or 0)
    return MemberStats(
        points=balance,
        # 1 + the number of members with more points (as `points.rank`); None without points.
        rank=int(row.above or 0) + 1 if balance > 0 else None,
        streak=int(row.streak or 0),
        best_streak=int(row.best or 0),
        month_checkins=int(row.month or 0),
        total_checkins=int(row.total or 0),
        checked_in_today=bool(row.today),
    )


async def checkin_leaderboard(
    session: AsyncSession, *, chat_id: int, since: date | None = None, limit: int = 10
) -> list[points.Standing]:
    """Members by number of check-ins (since a day, or ever); ties to the earlier finisher."""
    count = func.count()
    query = select(CHECKIN.c.user_id, count).where(CHECKIN.c.chat_id == chat_id)
    if since is not None:
        query = query.where(CHECKIN.c.day >= since)
    rows = await session.execute(
        query.group_by(CHECKIN.c.user_id)
        .order_by(count.desc(), func.max(CHECKIN.c.checked_at), CHECKIN.c.user_id)
        .limit(limit)
    )
    return [points.Standing(int(user_id), int(n)) for user_id, n in rows.all()]


async def checkins_since(
    session: AsyncSession, *, chat_id: int, user_id: int, since: date | None
) -> int:
    """A member's number of check-ins since a day (or ever)."""
    query = (
        select(func.count())
        .select_from(CHECKIN)
        .where(CHECKIN.c.chat_id == chat_id, CHECKIN.c.user_id == user_id)
    )
    if since is not None:
        query = query.where(CHECKIN.c.day >= since)
    return int(await session.scalar(query) or 0)


async def display_names(
    session: AsyncSession, *, chat_id: int, user_ids: list[int]
) -> dict[int, str]:
    """Roster names of members (unescaped); members never seen are left out."""
    if not user_ids:
        return {}
    rows = await session.execute(
        select(Member.user_id, Member.display_name).where(
            Member.chat_id == chat_id,
            Member.user_id.in_(user_ids),  # type: ignore[attr-defined]
        )
    )
    return {int(user_id): name for user_id, name in rows.all() if name}
