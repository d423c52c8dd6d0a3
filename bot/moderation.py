"""Keeping order, without Telegram: warnings, word filters, flood counting, reports, inactive
members and the moderation log.

The guards (filters, flood) look at every group message, so their configuration is held in
`GuardCache`: one query tells which chats have any filter or flood limit at all (every other
chat costs a set lookup), and a configured chat's compiled filters are loaded once and kept
until they change here or `CACHE_TTL` passes (so several processes converge).
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, Column, Index, Text, delete, func, select, union, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import Field, SQLModel

from bot.db import upsert
from bot.models import Member, chat_fk, utc_column
from bot.timeparse import parse_duration

if TYPE_CHECKING:
    from bot.services import Services

CACHE_TTL = 60.0

# Telegram treats restrictions shorter than 30 s or longer than 366 days as forever; we keep
# clear of both edges (processing delay, clock drift) and refuse durations outside these.
MIN_SANCTION = timedelta(minutes=1)
MAX_SANCTION = timedelta(days=365)

SANCTIONS = ("mute", "kick", "ban")
FILTER_ACTIONS = ("delete", "warn", "mute", "ban")
FLOOD_ACTIONS = ("mute", "kick", "ban", "warn")
# Stronger actions first: when several filters match, the strongest one applies.
SEVERITY = ("ban", "mute", "warn", "delete")

DEFAULT_WARN_LIMIT = 3
WARN_LIMIT_RANGE = (1, 20)
DEFAULT_FILTER_MUTE = timedelta(hours=1)
DEFAULT_FLOOD_WINDOW = 10
DEFAULT_FLOOD_MUTE = 600
FLOOD_LIMIT_RANGE = (2, 100)
FLOOD_WINDOW_RANGE = (1, 300)
MAX_FILTERS = 200
MAX_PATTERN_LENGTH = 64
REPORT_INTERVAL = timedelta(minutes=2)
PURGE_CONFIRM_TIME = timedelta(minutes=10)
MIN_INACTIVE = timedelta(days=1)


class ModerationSettings(SQLModel, table=True):
    """Per-group moderation settings; a group without a row uses the defaults below."""

    __tablename__ = "moderation_settings"

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    warn_limit: int = Field(default=DEFAULT_WARN_LIMIT)
    warn_action: str = Field(default="mute", max_length=8)
    warn_duration: int | None = Field(default=86400)  # seconds; None: forever
    warn_expiry_days: int | None = Field(default=None)  # None: warnings never expire
    flood_limit: int | None = Field(default=None)  # None: no flood control
    flood_window: int = Field(default=DEFAULT_FLOOD_WINDOW)  # seconds
    flood_action: str = Field(default="mute", max_length=8)
    flood_duration: int | None = Field(default=DEFAULT_FLOOD_MUTE)
    log_chat_id: int | None = Field(default=None, sa_type=BigInteger)


class MemberWarning(SQLModel, table=True):
    """A warning given to a member; counts towards the limit until it expires."""

    __tablename__ = "warning"
    __table_args__ = (Index("ix_warning_chat_user", "chat_id", "user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    chat_id: int = Field(sa_column=chat_fk())
    user_id: int = Field(sa_type=BigInteger)
    reason: str = Field(default="", max_length=512)
    created_by: int | None = Field(default=None, sa_type=BigInteger)
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=utc_column())


class WordFilter(SQLModel, table=True):
    """A banned word, phrase or *wildcard* pattern (stored normalized) and what it triggers."""

    __tablename__ = "word_filter"

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    pattern: str = Field(primary_key=True, max_length=MAX_PATTERN_LENGTH)
    action: str = Field(default="delete", max_length=8)
    duration: int | None = Field(default=None)  # seconds, for mute/ban
    created_by: int | None = Field(default=None, sa_type=BigInteger)
    created_at: datetime = Field(sa_column=utc_column(nullable=False))


class ModLogEntry(SQLModel, table=True):
    """Who did what to whom, why and when: sanctions, warnings, filter hits, reports."""

    __tablename__ = "mod_log"
    __table_args__ = (
        Index("ix_mod_log_chat_time", "chat_id", "created_at"),
        Index("ix_mod_log_chat_target", "chat_id", "target_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    chat_id: int = Field(sa_column=chat_fk())
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
    action: str = Field(max_length=16)
    actor_id: int | None = Field(default=None, sa_type=BigInteger)
    actor_name: str = Field(default="", max_length=255)
    target_id: int | None = Field(default=None, sa_type=BigInteger)
    target_name: str = Field(default="", max_length=255)
    reason: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    duration: int | None = Field(default=None)  # seconds


class InactivePurge(SQLModel, table=True):
    """An /inactive … kick waiting for an operator's confirmation (then running, then done)."""

    __tablename__ = "inactive_purge"

    id: int | None = Field(default=None, primary_key=True)
    chat_id: int = Field(sa_column=chat_fk(index=True))
    requested_by: int = Field(sa_type=BigInteger)
    cutoff: datetime = Field(sa_column=utc_column(nullable=False))
    period_days: int = Field(default=30)
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
    prompt_chat_id: int = Field(sa_type=BigInteger)  # where the confirmation button was posted
    state: str = Field(default="pending", max_length=10)  # pending|running|done|cancelled
    removed: int = Field(default=0)


# --- durations ------------------------------------------------------------------------------


def sanction_duration_ok(delta: timedelta) -> bool:
    return MIN_SANCTION <= delta <= MAX_SANCTION


def until(now: datetime, seconds: int | None) -> datetime | None:
    """The until_date of a timed sanction; None means forever."""
    return now + timedelta(seconds=seconds) if seconds else None


# --- settings -------------------------------------------------------------------------------


async def get_settings(session: AsyncSession, chat_id: int) -> ModerationSettings:
    return await session.get(ModerationSettings, chat_id) or ModerationSettings(chat_id=chat_id)


async def save_settings(session: AsyncSession, chat_id: int, **values: object) -> None:
    await upsert(
        session,
        ModerationSettings.__table__,  # type: ignore[attr-defined]
        [{"chat_id": chat_id, **values}],
        key=("chat_id",),
        update=lambda new: {name: getattr(new, name) for name in values},
    )


# --- warnings -------------------------------------------------------------------------------


def _active(chat_id: int, user_id: int, now: datetime) -> list[object]:
    return [
        MemberWarning.chat_id == chat_id,
        MemberWarning.user_id == user_id,
        (MemberWarning.expires_at.is_(None)) | (MemberWarning.expires_at > now),  # type: ignore[union-attr,operator]
    ]


async def active_warnings(
    session: AsyncSession, chat_id: int, user_id: int, now: datetime
) -> list[MemberWarning]:
    return list(
        await session.scalars(
            select(MemberWarning)
            .where(*_active(chat_id, user_id, now))
            .order_by(MemberWarning.created_at)
        )
    )


@dataclass(frozen=True, slots=True)
class WarnOutcome:
    count: int  # active warnings after this one
    limit: int
    reached: bool  # the limit was reached: apply the action (warnings were reset)
    action: str
    duration: int | None


async def add_warning(
    session: AsyncSession,
    *,
    chat_id: int,
    user_id: int,
    reason: str,
    by: int | None,
    now: datetime,
) -> WarnOutcome:
    """Add a warning; on reaching the limit the member's warnings are reset (the caller
    applies the configured action)."""
    settings = await get_settings(session, chat_id)
    expires = (
        now + timedelta(days=settings.warn_expiry_days) if settings.warn_expiry_days else None
    )
    session.add(
        MemberWarning(
            chat_id=chat_id,
            user_id=user_id,
            reason=reason[:512],
            created_by=by,
            created_at=now,
            expires_at=expires,
        )
    )
    await session.flush()
    count = await session.scalar(
        select(func.count()).select_from(MemberWarning).where(*_active(chat_id, user_id, now))
    )
    reached = (count or 0) >= settings.warn_limit
    if reached:
        await reset_warnings(session, chat_id, user_id)
    return WarnOutcome(
        count or 0, settings.warn_limit, reached, settings.warn_action, settings.warn_duration
    )


async def remove_last_warning(
    session: AsyncSession, chat_id: int, user_id: int, now: datetime
) -> int | None:
    """Withdraw the newest active warning; returns how many remain (None: there was none)."""
    warnings = await active_warnings(session, chat_id, user_id, now)
    if not warnings:
        return None
    await session.delete(warnings[-1])
    return len(warnings) - 1


async def reset_warnings(session: AsyncSession, chat_id: int, user_id: int) -> int:
    result = await session.execute(
        delete(MemberWarning).where(
            MemberWarning.chat_id == chat_id, MemberWarning.user_id == user_id
        )
    )
    return result.rowcount or 0


# --- word filters ---------------------------------------------------------------------------

# Letters that form words with spaces between them: a filter for "ass" must not fire inside
# "class". Chinese and Japanese have no spaces, so CJK patterns match anywhere.
_WORD_CHARS = "0-9a-z\u00c0-\u024f\u0370-\u03ff\u0400-\u04ff"
_WORD_CHAR = re.compile(f"[{_WORD_CHARS}]")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Fold case and width (ＳＰＡＭ → spam), so look-alike variants match the same filter."""
    return unicodedata.normalize("NFKC", text).casefold()


def normalize_pattern(raw: str) -> str | None:
    """The stored form of a filter: folded, single spaces; None when nothing is left."""
    pattern = _SPACES.sub(" ", normalize_text(raw)).strip()
    if not pattern.strip("* ") or len(pattern) > MAX_PATTERN_LENGTH:
        return None
    return pattern


def pattern_regex(pattern: str) -> str:
    """Regex source for one normalized pattern.

    `word` and `a phrase` match whole words (spaces match any whitespace); a `*` matches
    any run of characters, so `*spam*` matches inside words and `free*money` across them.
    """
    core = pattern.strip("*")
    body = r".*?".join(re.escape(chunk) for chunk in core.split("*"))
    body = body.replace(r"\ ", r"\s+")
    if not pattern.startswith("*") and _WORD_CHAR.match(core[0]):
        body = f"(?<![{_WORD_CHARS}])" + body
    if not pattern.endswith("*") and _WORD_CHAR.match(core[-1]):
        body += f"(?![{_WORD_CHARS}])"
    return body


@dataclass(frozen=True, slots=True)
class FilterHit:
    pattern: str
    action: str
    duration: int | None


class FilterSet:
    """A chat's filters compiled into one regex per action, strongest action tried first."""

    def __init__(self, filters: Iterable[WordFilter]) -> None:
        by_action: dict[str, list[WordFilter]] = {}
        for item in filters:
            by_action.setdefault(item.action, []).append(item)
        self._compiled: list[tuple[re.Pattern[str], dict[str, WordFilter]]] = []
        for action in SEVERITY:
            items = by_action.get(action)
            if not items:
                continue
            groups = {f"f{i}": item for i, item in enumerate(items)}
            source = "|".join(
                f"(?P<{name}>{pattern_regex(item.pattern)})" for name, item in groups.items()
            )
            self._compiled.append((re.compile(source), groups))

    def __bool__(self) -> bool:
        return bool(self._compiled)

    def match(self, text: str) -> FilterHit | None:
        folded = normalize_text(text)
        for regex, groups in self._compiled:
            found = regex.search(folded)
            if found is not None:
                item = groups[found.lastgroup or ""]
                return FilterHit(item.pattern, item.action, item.duration)
        return None


async def list_filters(session: AsyncSession, chat_id: int) -> list[WordFilter]:
    return list(
        await session.scalars(
            select(WordFilter).where(WordFilter.chat_id == chat_id).order_by(WordFilter.pattern)
        )
    )


async def add_filter(
    session: AsyncSession,
    *,
    chat_id: int,
    pattern: str,
    action: str,
    duration: int | None,
    by: int | None,
    now: datetime,
) -> bool:
    """Add or change a filter; False when the chat already has MAX_FILTERS others."""
    count = await session.scalar(
        select(func.count())
        .select_from(WordFilter)
        .where(WordFilter.chat_id == chat_id, WordFilter.pattern != pattern)
    )
    if (count or 0) >= MAX_FILTERS:
        return False
    await upsert(
        session,
        WordFilter.__table__,  # type: ignore[attr-defined]
        [
            {
                "chat_id": chat_id,
                "pattern": pattern,
                "action": action,
                "duration": duration,
                "created_by": by,
                "created_at": now,
            }
        ],
        key=("chat_id", "pattern"),
        update=lambda new: {"action": new.action, "duration": new.duration},
    )
    return True


async def remove_filter(session: AsyncSession, chat_id: int, pattern: str) -> bool:
    result = await session.execute(
        delete(WordFilter).where(WordFilter.chat_id == chat_id, WordFilter.pattern == pattern)
    )
    return bool(result.rowcount)


class ArgumentError(ValueError):
    """Unusable command arguments; `value` is the word that was wrong, if one was."""

    def __init__(self, value: str | None = None) -> None:
        super().__init__(value)
        self.value = value


def parse_flood_args(words: list[str]) -> dict[str, object]:
    """`/setflood N [seconds] [mute|kick|ban|warn] [duration]` → the settings to store.

    Defaults: a 10-second window, mute for 10 minutes.
    """
    low, high = FLOOD_LIMIT_RANGE
    words = [word.lower() for word in words]
    if not words or not words[0].isdigit() or not low <= int(words[0]) <= high:
        raise ArgumentError()
    values: dict[str, object] = {
        "flood_limit": int(words[0]),
        "flood_window": DEFAULT_FLOOD_WINDOW,
        "flood_action": "mute",
        "flood_duration": DEFAULT_FLOOD_MUTE,
    }
    rest = words[1:]
    if rest:
        delta = parse_duration(rest[0])
        window = int(rest[0]) if rest[0].isdigit() else delta and int(delta.total_seconds())
        if window is not None:
            if not FLOOD_WINDOW_RANGE[0] <= window <= FLOOD_WINDOW_RANGE[1]:
                raise ArgumentError()
            values["flood_window"], rest = window, rest[1:]
    if rest:
        action = rest.pop(0)
        if action not in FLOOD_ACTIONS:
            raise ArgumentError()
        values["flood_action"] = action
        values["flood_duration"] = DEFAULT_FLOOD_MUTE if action == "mute" else None
    if rest:
        if len(rest) > 1 or values["flood_action"] not in ("mute", "ban"):
            raise ArgumentError()
        delta = parse_duration(rest[0])
        if delta is None or not sanction_duration_ok(delta):
            raise ArgumentError(rest[0])
        values["flood_duration"] = int(delta.total_seconds())
    return values


# --- flood ----------------------------------------------------------------------------------


class FloodCounter:
    """Recent message times per (chat, member), in memory: flood control is about seconds,
    and a restart forgetting the last few seconds is harmless."""

    MAX_TRACKED = 50_000

    def __init__(self) -> None:
        self._recent: dict[tuple[int, int], deque[float]] = {}

    def hit(self, chat_id: int, user_id: int, when: float, *, limit: int, window: int) -> bool:
        """Count a message sent at `when` (Unix time); True when it is the one that makes
        more than `limit` messages within the last `window` seconds (then the count restarts).

        A message exactly `window` seconds older than this one is outside the window.
        """
        key = (chat_id, user_id)
        times = self._recent.get(key)
        if times is None or times.maxlen != limit + 1:
            if len(self._recent) >= self.MAX_TRACKED:
                self._prune(when)
            times = self._recent[key] = deque(times or (), maxlen=limit + 1)
        times.append(when)
        if len(times) > limit and when - times[0] < window:
            times.clear()
            return True
        return False

    def forget(self, chat_id: int) -> None:
        for key in [key for key in self._recent if key[0] == chat_id]:
            del self._recent[key]

    def _prune(self, now: float) -> None:
        stale = [k for k, t in self._recent.items() if not t or now - t[-1] > 300]
        for key in stale:
            del self._recent[key]
        if len(self._recent) >= self.MAX_TRACKED:
            self._recent.clear()


# --- the guards' configuration cache ------------------------------------------------------


@dataclass(slots=True)
class ChatGuard:
    """What the guards need about one configured chat."""

    filters: FilterSet
    flood_limit: int | None
    flood_window: int
    flood_action: str
    flood_duration: int | None


@dataclass(slots=True)
class GuardCache:
    """Which chats have guards configured, and their compiled configuration."""

    db: async_sessionmaker[AsyncSession]
    ttl: float = CACHE_TTL
    flood: FloodCounter = field(default_factory=FloodCounter)
    _configured: frozenset[int] = frozenset()
    _configured_at: float = float("-inf")
    _chats: dict[int, tuple[float, ChatGuard]] = field(default_factory=dict)

    def unguarded(self, chat_id: int) -> bool:
        """True when the chat certainly has no guards (no I/O: safe for every message)."""
        return (
            time.monotonic() - self._configured_at < self.ttl and chat_id not in self._configured
        )

    async def get(self, chat_id: int) -> ChatGuard | None:
        """The chat's guard configuration, or None when it has none."""
        now = time.monotonic()
        if now - self._configured_at >= self.ttl:
            await self._load_configured()
        if chat_id not in self._configured:
            return None
        entry = self._chats.get(chat_id)
        if entry is not None and now - entry[0] < self.ttl:
            return entry[1]
        guard = await self._load_chat(chat_id)
        self._chats[chat_id] = (time.monotonic(), guard)
        return guard

    def invalidate(self, chat_id: int) -> None:
        """After a change made here: reload the chat and the set of configured chats."""
        self._chats.pop(chat_id, None)
        self._configured_at = float("-inf")
        self.flood.forget(chat_id)

    async def _load_configured(self) -> None:
        query = union(
            select(WordFilter.chat_id),
            select(ModerationSettings.chat_id).where(
                ModerationSettings.flood_limit.is_not(None)  # type: ignore[union-attr]
            ),
        )
        async with self.db() as session:
            self._configured = frozenset(await session.scalars(query))
        self._configured_at = time.monotonic()

    async def _load_chat(self, chat_id: int) -> ChatGuard:
        async with self.db() as session:
            filters = await list_filters(session, chat_id)
            settings = await get_settings(session, chat_id)
        return ChatGuard(
            FilterSet(filters),
            settings.flood_limit,
            settings.flood_window,
            settings.flood_action,
            settings.flood_duration,
        )


GUARD_CACHE_KEY = "moderation.guards"


def guard_cache(services: Services) -> GuardCache:
    """The process's guard cache (one per Application, in services.extras)."""
    cache = services.extras.get(GUARD_CACHE_KEY)
    if cache is None:
        cache = services.extras[GUARD_CACHE_KEY] = GuardCache(services.db)
    return cache


# --- moderation log -------------------------------------------------------------------------


async def log_entry(
    session: AsyncSession,
    *,
    chat_id: int,
    now: datetime,
    action: str,
    actor_id: int | None,
    actor_name: str,
    target_id: int | None,
    target_name: str,
    reason: str = "",
    duration: int | None = None,
) -> ModLogEntry:
    entry = ModLogEntry(
        chat_id=chat_id,
        created_at=now,
        action=action,
        actor_id=actor_id,
        actor_name=actor_name[:255],
        target_id=target_id,
        target_name=target_name[:255],
        reason=reason,
        duration=duration,
    )
    session.add(entry)
    return entry


async def recent_entries(
    session: AsyncSession, chat_id: int, *, target_id: int | None = None, limit: int = 20
) -> list[ModLogEntry]:
    query = select(ModLogEntry).where(ModLogEntry.chat_id == chat_id)
    if target_id is not None:
        query = query.where(ModLogEntry.target_id == target_id)
    rows = await session.scalars(
        query.order_by(ModLogEntry.created_at.desc(), ModLogEntry.id.desc()).limit(limit)  # type: ignore[union-attr,attr-defined]
    )
    return list(rows)


async def last_report(session: AsyncSession, chat_id: int, user_id: int) -> datetime | None:
    """When this member last reported something here (reports are rate-limited per member)."""
    return await session.scalar(
        select(func.max(ModLogEntry.created_at)).where(
            ModLogEntry.chat_id == chat_id,
            ModLogEntry.action == "report",
            ModLogEntry.actor_id == user_id,
        )
    )


# --- inactive members -----------------------------------------------------------------------


def _last_seen():  # type: ignore[no-untyped-def]
    return func.coalesce(Member.last_active, Member.joined_at, Member.first_seen)


async def inactive_members(
    session: AsyncSession, chat_id: int, cutoff: datetime, *, exclude: set[int]
) -> list[Member]:
    """Members still in the group whose last sign of life is before `cutoff`, oldest first."""
    rows = await session.scalars(
        select(Member)
        .where(
            Member.chat_id == chat_id,
            Member.status == "member",
            Member.user_id > 0,  # erased members' pseudonyms (bot.privacy) are nobody to kick
            _last_seen() < cutoff,
        )
        .order_by(_last_seen(), Member.user_id)
    )
    return [row for row in rows if row.user_id not in exclude]


async def claim_purge(session: AsyncSession, purge_id: int, now: datetime) -> InactivePurge | None:
    """Pending → running, exactly once, and only while the confirmation is fresh."""
    result = await session.execute(
        update(InactivePurge)
        .where(
            InactivePurge.id == purge_id,
            InactivePurge.state == "pending",
            InactivePurge.created_at > now - PURGE_CONFIRM_TIME,  # type: ignore[operator]
        )
        .values(state="running")
    )
    if not result.rowcount:
        return None
    return await session.get(InactivePurge, purge_id, populate_existing=True)


async def cancel_purge(session: AsyncSession, purge_id: int) -> bool:
    result = await session.execute(
        update(InactivePurge)
        .where(InactivePurge.id == purge_id, InactivePurge.state == "pending")
        .values(state="cancelled")
    )
    return bool(result.rowcount)


async def finish_purge(session: AsyncSession, purge_id: int, removed: int) -> None:
    await session.execute(
        update(InactivePurge)
        .where(InactivePurge.id == purge_id)
        .values(state="done", removed=removed)
    )
