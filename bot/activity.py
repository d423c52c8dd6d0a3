"""Recording what members do: the roster and the per-day activity rollups.

Messages arrive by the thousand, so they go through `ActivityRecorder`: an in-memory
aggregate (one row per chat+user+day, one per chat+user) flushed in one transaction at most
every `interval` seconds or every `max_pending` events, and on shutdown. Joins, leaves and
participation (check-ins, votes, lottery entries) are rarer and must be exact, so they are
written directly, inside the caller's transaction.

Besides the rollups, each roster row keeps a small recent-activity state: the latest day the
member was active (`active_day`, a date ordinal) and a bit mask of the days before it
(`active_mask`, bit k = active on active_day - k), so "active in the last 7/30 days" (WAU,
MAU) is one bit test per member instead of a scan of 30 days of rollups; and each chat has
day totals (`chat_day`). Database triggers on `daily_activity` keep both (see bot.models), so
every writer keeps them exact and the flush pays nothing for them in Python.

Messages are also counted per chat and UTC hour (`chat_hour`, the activity heat map of
bot.heatmap): one dict increment per message here, one more batched upsert per flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, case, delete, func, insert, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import driver_value, excluded, insert_for, prepared, upsert_tuples
from bot.models import Chat, ChatDay, ChatHour, ChatMigration, DailyActivity, Member
from bot.opt_outs import OptOuts

log = logging.getLogger(__name__)

# Telegram accounts that speak for someone else and are never counted as members:
# 777000 forwards from a linked channel, 1087968824 anonymous group admins,
# 136817688 messages sent on behalf of a channel.
SERVICE_ACCOUNTS = frozenset({777000, 1087968824, 136817688})

# Joins/leaves of the same person seen both as a chat_member update and as a service
# message carry (almost) the same timestamp; within this window they are one event.
SAME_EVENT_WINDOW = timedelta(seconds=5)

MEMBER_TABLE = Member.__table__  # type: ignore[attr-defined]
ACTIVITY_TABLE = DailyActivity.__table__  # type: ignore[attr-defined]
CHAT_DAY_TABLE = ChatDay.__table__  # type: ignore[attr-defined]
CHAT_HOUR_TABLE = ChatHour.__table__  # type: ignore[attr-defined]

Participation = Literal["checked_in", "poll_answered", "lottery_entered"]

# Days of history the recent-activity mask of a member holds (bit 0 is `active_day` itself).
MASK_DAYS = 62
FULL_MASK = (1 << MASK_DAYS) - 1


def fold_day(active_day: int | None, mask: int, day: int) -> tuple[int, int]:
    """Add an active day (ordinal) to a member's (active_day, mask) state."""
    if active_day is None:
        return day, 1
    if day >= active_day:
        shift = day - active_day
        return day, (((mask << shift) & FULL_MASK) if shift < MASK_DAYS else 0) | 1
    back = active_day - day
    return active_day, (mask | (1 << back)) if back < MASK_DAYS else mask


def merge_states(
    day_a: int | None, mask_a: int, day_b: int | None, mask_b: int
) -> tuple[int | None, int]:
    """Combine two (active_day, mask) states of one member (e.g. two chats merging)."""
    if day_a is None:
        return day_b, mask_b if day_b is not None else 0
    if day_b is None:
        return day_a, mask_a
    if day_b > day_a:
        day_a, mask_a, day_b, mask_b = day_b, mask_b, day_a, mask_a
    shift = day_a - day_b
    return day_a, mask_a | (((mask_b << shift) & FULL_MASK) if shift < MASK_DAYS else 0)


def local_day(moment: datetime, tz: ZoneInfo) -> date:
    """The chat-local calendar day of a UTC moment."""
    return moment.astimezone(tz).date()


def is_countable_user(user_id: int, is_bot: bool) -> bool:
    return not is_bot and user_id not in SERVICE_ACCOUNTS


@dataclass(slots=True)
class _RosterDelta:
    display_name: str
    username: str | None
    first_seen: datetime
    last_active: datetime
    messages: int


class ActivityRecorder:
    """Buffers message activity and writes it in batches (one transaction per flush)."""

    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        *,
        max_pending: int = 500,
        interval: float = 1.0,
        opt_outs: OptOuts | None = None,
    ) -> None:
        self._db = db
        # People who asked to be forgotten (bot.privacy): their messages are not recorded.
        self._opt_outs = opt_outs if opt_outs is not None else OptOuts(b"")
        bind = db.kw.get("bind")
        # Several PostgreSQL writers lock rows (and the chat_day totals their triggers update)
        # in the order given: sort batches so they all use the same order. SQLite writers
        # take turns (BEGIN IMMEDIATE), so the sort is skipped there.
        self._ordered = bind is not None and bind.dialect.name == "postgresql"
        self.max_pending = max_pending
        self.interval = interval
        self._days: dict[tuple[int, int, date], list[Any]] = {}
        self._roster: dict[tuple[int, int], _RosterDelta] = {}
        # (chat, unix hour = unix time // 3600) -> messages, for the heat map
        self._hours: dict[tuple[int, int], int] = {}
        self._hour_tz: Any = None  # the time zone of the datetimes cached in _hour_of
        self._hour_of: dict[int, int] = {}  # local (day, hour, fold) key -> unix hour
        self._hour_starts: dict[int, Any] = {}  # unix hour -> hour_start as the driver takes it
        self._pending = 0
        self._lock = asyncio.Lock()
        self._loop_task: asyncio.Task[None] | None = None
        self._size_flush: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.flushed_events = 0

    # -- the hot path: no I/O, no awaits ------------------------------------------------

    def record_message(
        self,
        chat_id: int,
        user_id: int,
        display_name: str,
        username: str | None,
        when: datetime,
        day: date,
        *,
        edited: bool = False,
    ) -> None:
        """Count one message (or edit) of a member; cheap enough for every group message."""
        opt_outs = self._opt_outs
        if (user_id not in opt_outs.clear or chat_id in opt_outs.by_chat) and opt_outs.excluded(
            chat_id, user_id
        ):
            return  # opted out: two set lookups for everybody else
        counts = self._days.get((chat_id, user_id, day))
        if counts is None:
            # [messages, edits, first message]: a chat's updates arrive in order, so the
            # first message recorded for a day is its earliest (the flush keeps the minimum).
            self._days[(chat_id, user_id, day)] = [0, 1, None] if edited else [1, 0, when]
        elif edited:
            counts[1] += 1
        else:
            counts[0] += 1
            if counts[2] is None:
                counts[2] = when
        delta = self._roster.get((chat_id, user_id))
        if delta is None:
            self._roster[(chat_id, user_id)] = _RosterDelta(
                display_name, username, when, when, 0 if edited else 1
            )
        else:
            delta.display_name, delta.username = display_name, username
            if when > delta.last_active:
                delta.last_active = when
            if when < delta.first_seen:
                delta.first_seen = when
            if not edited:
                delta.messages += 1
        if not edited:
            # The UTC hour, from a per-local-hour cache: `timestamp()` of a zone-aware
            # datetime costs ~1 µs, the cache lookup a fifth of that.
            local = when.toordinal() * 48 + when.hour * 2 + when.fold
            hour = self._hour_of.get(local) if when.tzinfo is self._hour_tz else None
            if hour is None:
                hour = self._utc_hour(when, local)
            key = (chat_id, hour)
            self._hours[key] = self._hours.get(key, 0) + 1
        self._pending += 1
        if self._pending >= self.max_pending and self._size_flush is None:
            self._size_flush = asyncio.get_running_loop().create_task(self._flush_for_size())

    def _utc_hour(self, when: datetime, local: int) -> int:
        """The unix hour (unix time // 3600) of `when`, remembered for its local hour when the
        zone's offset is whole hours then (so every moment of that local hour has the same
        UTC hour; half-hour zones are computed every time)."""
        seconds = int(when.timestamp())
        if when.tzinfo is not self._hour_tz or len(self._hour_of) > 10_000:
            self._hour_tz, self._hour_of = when.tzinfo, {}
        if (seconds - when.minute * 60 - when.second) % 3600 == 0:
            self._hour_of[local] = seconds // 3600
        return seconds // 3600

    @property
    def pending(self) -> int:
        return self._pending

    # -- flushing ------------------------------------------------------------------------

    async def _flush_for_size(self) -> None:
        try:
            await self.flush()
        finally:
            self._size_flush = None

    async def flush(self) -> int:
        """Write everything buffered so far; returns the number of events written.

        The write is shielded: a flush interrupted by cancellation (shutdown) still finishes,
        so a batch is never half-written, lost, or written twice.
        """
        async with self._lock:
            if not self._pending:
                return 0
            days, roster, hours, pending = self._days, self._roster, self._hours, self._pending
            self._days, self._roster, self._hours, self._pending = {}, {}, {}, 0
            write = asyncio.ensure_future(self._write_batch(days, roster, hours))
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                await asyncio.wait([write])
                self._settle(write, days, roster, hours, pending)
                raise
            except Exception:
                self._restore(days, roster, hours, pending)
                raise
            self.flushed_events += pending
            return pending

    def _settle(
        self,
        write: asyncio.Future[None],
        days: dict[tuple[int, int, date], list[Any]],
        roster: dict[tuple[int, int], _RosterDelta],
        hours: dict[tuple[int, int], int],
        pending: int,
    ) -> None:
        if write.exception() is None:
            self.flushed_events += pending
        else:
            self._restore(days, roster, hours, pending)

    async def _write_batch(
        self,
        days: dict[tuple[int, int, date], list[Any]],
        roster: dict[tuple[int, int], _RosterDelta],
        hours: dict[tuple[int, int], int],
    ) -> None:
        try:
            await self._write(days, roster, hours)
        except IntegrityError:
            # A chat vanished or moved (supergroup migration) since it was buffered.
            days, roster, hours = await self._redirect(days, roster, hours)
            await self._write(days, roster, hours)

    def _restore(
        self,
        days: dict[tuple[int, int, date], list[Any]],
        roster: dict[tuple[int, int], _RosterDelta],
        hours: dict[tuple[int, int], int],
        pending: int,
    ) -> None:
        """Put a batch that failed to write back in front of newer events (nothing lost)."""
        for key, counts in days.items():
            newer = self._days.get(key)
            if newer:
                counts[0] += newer[0]
                counts[1] += newer[1]
                counts[2] = _earlier(counts[2], newer[2])
            self._days[key] = counts
        for key, delta in roster.items():
            newer = self._roster.get(key)
            if newer:
                delta.display_name, delta.username = newer.display_name, newer.username
                delta.last_active = max(delta.last_active, newer.last_active)
                delta.first_seen = min(delta.first_seen, newer.first_seen)
                delta.messages += newer.messages
            self._roster[key] = delta
        for key, count in hours.items():
            self._hours[key] = self._hours.get(key, 0) + count
        self._pending += pending

    async def _write(
        self,
        days: dict[tuple[int, int, date], list[Any]],
        roster: dict[tuple[int, int], _RosterDelta],
        hours: dict[tuple[int, int], int],
    ) -> None:
        member, activity = MEMBER_TABLE.c, ACTIVITY_TABLE.c
        async with self._db.begin() as session:
            dialect = session.get_bind().dialect.name

            def at(moment: datetime) -> Any:
                return driver_value(moment, dialect)

            roster_rows = [
                (
                    chat_id,
                    user_id,
                    d.display_name,
                    d.username,
                    at(d.first_seen),
                    at(d.last_active),
                    d.messages,
                )
                for (chat_id, user_id), d in _in_order(roster.items(), self._ordered)
            ]
            day_rows = [
                (
                    chat_id,
                    user_id,
                    driver_value(day, dialect),
                    c[0],
                    None if c[2] is None else int(c[2].timestamp()),
                    c[1],
                )
                for (chat_id, user_id, day), c in _in_order(days.items(), self._ordered)
            ]
            await upsert_tuples(
                session,
                MEMBER_TABLE,
                (
                    "chat_id",
                    "user_id",
                    "display_name",
                    "username",
                    "first_seen",
                    "last_active",
                    "message_count",
                ),
                roster_rows,
                key=("chat_id", "user_id"),
                name="activity.roster",
                update=lambda new: {
                    "display_name": new.display_name,
                    "username": new.username,
                    "message_count": member.message_count + new.message_count,
                    "last_active": case(
                        (member.last_active.is_(None), new.last_active),
                        (new.last_active > member.last_active, new.last_active),
                        else_=member.last_active,
                    ),
                },
            )
            await upsert_tuples(
                session,
                ACTIVITY_TABLE,
                ("chat_id", "user_id", "day", "messages", "first_message_ts", "edits"),
                day_rows,
                key=("chat_id", "user_id", "day"),
                name="activity.days",
                update=lambda new: {
                    "messages": activity.messages + new.messages,
                    "edits": activity.edits + new.edits,
                    "first_message_ts": case(
                        (activity.first_message_ts.is_(None), new.first_message_ts),
                        (
                            new.first_message_ts < activity.first_message_ts,
                            new.first_message_ts,
                        ),
                        else_=activity.first_message_ts,
                    ),
                },
            )
            starts = self._hour_starts
            if len(starts) > 1000:
                starts.clear()
            hour_rows = []
            for (chat_id, hour), count in _in_order(hours.items(), self._ordered):
                start = starts.get(hour)
                if start is None:
                    start = starts[hour] = at(datetime.fromtimestamp(hour * 3600, UTC))
                hour_rows.append((chat_id, start, count))
            await upsert_tuples(
                session,
                CHAT_HOUR_TABLE,
                ("chat_id", "hour_start", "messages"),
                hour_rows,
                key=("chat_id", "hour_start"),
                name="activity.hours",
                update=lambda new: {"messages": CHAT_HOUR_TABLE.c.messages + new.messages},
            )

    async def _redirect(
        self,
        days: dict[tuple[int, int, date], list[Any]],
        roster: dict[tuple[int, int], _RosterDelta],
        hours: dict[tuple[int, int], int],
    ) -> tuple[
        dict[tuple[int, int, date], list[Any]],
        dict[tuple[int, int], _RosterDelta],
        dict[tuple[int, int], int],
    ]:
        """Re-key rows of migrated chats to their new id; drop rows of unknown chats."""
        chat_ids = {key[0] for key in roster} | {key[0] for key in days} | {k[0] for k in hours}
        async with self._db() as session:
            known = set(await session.scalars(select(Chat.id).where(Chat.id.in_(chat_ids))))
            moved = dict(
                (
                    await session.execute(
                        select(ChatMigration.old_chat_id, ChatMigration.new_chat_id).where(
                            ChatMigration.old_chat_id.in_(chat_ids)
                        )
                    )
                ).all()
            )
        new_days: dict[tuple[int, int, date], list[Any]] = {}
        for (chat_id, user_id, day), counts in days.items():
            target = chat_id if chat_id in known else moved.get(chat_id)
            if target is None:
                log.warning("dropping activity of unknown chat %s", chat_id)
                continue
            existing = new_days.setdefault((target, user_id, day), [0, 0, None])
            existing[0] += counts[0]
            existing[1] += counts[1]
            existing[2] = _earlier(existing[2], counts[2])
        new_roster: dict[tuple[int, int], _RosterDelta] = {}
        for (chat_id, user_id), delta in roster.items():
            target = chat_id if chat_id in known else moved.get(chat_id)
            if target is not None:
                new_roster[(target, user_id)] = delta
        new_hours: dict[tuple[int, int], int] = {}
        for (chat_id, hour), count in hours.items():
            target = chat_id if chat_id in known else moved.get(chat_id)
            if target is not None:
                new_hours[(target, hour)] = new_hours.get((target, hour), 0) + count
        return new_days, new_roster, new_hours

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the periodic flush (at most `interval` seconds of delay)."""
        if self._loop_task is None:
            self._stopping = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)
            try:
                await self.flush()
            except Exception:
                log.exception("activity flush failed; will retry")

    async def stop(self) -> None:
        """Stop the periodic flush and write what is left (clean shutdown)."""
        if self._loop_task is not None:
            self._stopping.set()
            await self._loop_task  # finishes its current flush, then one last one
            self._loop_task = None
        if self._size_flush is not None:
            with contextlib.suppress(Exception):
                await self._size_flush
        await self.flush()


def _in_order(items: Any, ordered: bool) -> Any:
    return sorted(items, key=_by_key) if ordered else items


def _by_key(item: tuple[tuple[Any, ...], Any]) -> tuple[Any, ...]:
    key = item[0]
    return (key[0], key[2], key[1]) if len(key) == 3 else key  # (chat, day, user) for rollups


def _earlier(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    return a if b is None or a <= b else b


# --- exact, transactional events -------------------------------------------------------


async def recompute_chat_days(session: AsyncSession, chat_id: int) -> None:
    """Rebuild a chat's day totals from its rollups (after rows were merged into it)."""
    da = ACTIVITY_TABLE.c
    await session.execute(delete(ChatDay).where(ChatDay.chat_id == chat_id))
    participated = or_(da.checked_in, da.poll_answered, da.lottery_entered)
    await session.execute(
        insert(CHAT_DAY_TABLE).from_select(
            [
                "chat_id",
                "day",
                "messages",
                "active",
                "joins",
                "leaves",
                "checkins",
                "participants",
            ],
            select(
                da.chat_id,
                da.day,
                func.sum(da.messages),
                func.sum(case((or_(da.messages > 0, participated), 1), else_=0)),
                func.sum(da.joins),
                func.sum(da.leaves),
                func.sum(case((da.checked_in, 1), else_=0)),
                func.sum(case((participated, 1), else_=0)),
            )
            .where(da.chat_id == chat_id)
            .group_by(da.chat_id, da.day),
        )
    )


# The counters and flags of a `daily_activity` row (privacy's member merge uses them too).
COUNTS = ("messages", "edits", "joins", "leaves")
FLAGS = ("checked_in", "poll_answered", "lottery_entered")


def _new_roster_row(dialect: str, **extra: Any) -> Any:
    """INSERT of a roster row first seen at :when (name from :display_name, :username)."""
    return insert_for(dialect, MEMBER_TABLE).values(
        chat_id=bindparam("chat_id"),
        user_id=bindparam("user_id"),
        display_name=bindparam("display_name"),
        username=bindparam("username"),
        status="member",
        first_seen=bindparam("when"),
        message_count=0,
        **extra,
    )


def _new_day_row(dialect: str, *, count: str | None = None, flag: str | None = None) -> Any:
    """INSERT of a member's day row (:chat_id, :user_id, :day) with one counter at 1 or one
    flag set."""
    return insert_for(dialect, ACTIVITY_TABLE).values(
        chat_id=bindparam("chat_id"),
        user_id=bindparam("user_id"),
        day=bindparam("day"),
        **{name: int(name == count) for name in COUNTS},
        **{name: name == flag for name in FLAGS},
    )


def _roster_touch(dialect: str) -> Any:
    """The roster row (made if missing, name refreshed), returned and — on PostgreSQL, by
    the upsert itself — locked until commit, so a concurrent join or leave waits."""
    c, new = MEMBER_TABLE.c, excluded(MEMBER_TABLE)
    return (
        _new_roster_row(dialect)
        .on_conflict_do_update(
            index_elements=["chat_id", "user_id"],
            set_={"display_name": new.display_name, "username": new.username},
        )
        .returning(c.status, c.first_seen, c.joined_at, c.left_at, c.status_changed_at)
    )


def _roster_status(dialect: str) -> Any:
    c = MEMBER_TABLE.c
    return (
        update(MEMBER_TABLE)
        .where(c.chat_id == bindparam("chat"), c.user_id == bindparam("user"))
        .values(
            status=bindparam("status"),
            first_seen=bindparam("first_seen"),
            joined_at=bindparam("joined_at"),
            left_at=bindparam("left_at"),
            status_changed_at=bindparam("when"),
        )
    )


def _count_day(column: str) -> Any:
    def build(dialect: str) -> Any:
        return _new_day_row(dialect, count=column).on_conflict_do_update(
            index_elements=["chat_id", "user_id", "day"],
            set_={column: ACTIVITY_TABLE.c[column] + 1},
        )

    return build


async def _touch(
    session: AsyncSession,
    chat_id: int,
    user_id: int,
    name: str,
    username: str | None,
    when: datetime,
) -> Any:
    return (
        await session.execute(
            prepared(session, "activity.roster_touch", _roster_touch),
            {
                "chat_id": chat_id,
                "user_id": user_id,
                "display_name": name,
                "username": username,
                "when": when,
            },
        )
    ).one()


async def _stamp(
    session: AsyncSession,
    *,
    chat_id: int,
    user_id: int,
    day: date,
    when: datetime,
    status: str,
    first_seen: datetime,
    joined_at: datetime | None,
    left_at: datetime | None,
    counter: str,
) -> None:
    """The roster's new status and the day's join or leave count."""
    await session.execute(
        prepared(session, "activity.roster_status", _roster_status),
        {
            "chat": chat_id,
            "user": user_id,
            "status": status,
            "first_seen": first_seen,
            "joined_at": joined_at,
            "left_at": left_at,
            "when": when,
        },
    )
    await session.execute(
        prepared(session, f"activity.count_{counter}", _count_day(counter)),
        {"chat_id": chat_id, "user_id": user_id, "day": day},
    )


async def record_join(
    session: AsyncSession,
    *,
    chat_id: int,
    user_id: int,
    name: str,
    username: str | None,
    when: datetime,
    day: date,
) -> bool:
    """Record that a member joined at `when`; returns False when it was already recorded.

    The same join is reported twice when the bot is admin (chat_member update and service
    message); the roster's status and timestamps make the second report a no-op. Three
    prepared statements (joins are 1.5% of updates): the roster row is made or refreshed and
    read back in one upsert (a new row has no join, leave or change stamped, so none of the
    checks below applies to it), then the status and the day's count are written.
    """
    member = await _touch(session, chat_id, user_id, name, username, when)
    if (
        member.status == "member"
        and member.joined_at is not None
        and abs(when - member.joined_at) <= SAME_EVENT_WINDOW
    ):
        return False  # the same join, reported the other way
    if member.status_changed_at and when < member.status_changed_at - SAME_EVENT_WINDOW:
        return False  # a stale report older than the latest change
    if (
        member.left_at
        and abs(when - member.left_at) <= SAME_EVENT_WINDOW
        and (member.joined_at and abs(when - member.joined_at) <= SAME_EVENT_WINDOW)
    ):
        return False  # the late twin of a join that was followed by a quick leave
    await _stamp(
        session,
        chat_id=chat_id,
        user_id=user_id,
        day=day,
        when=when,
        status="member",
        first_seen=min(member.first_seen, when),
        joined_at=when,
        left_at=member.left_at,
        counter="joins",
    )
    return True


async def record_leave(
    session: AsyncSession,
    *,
    chat_id: int,
    user_id: int,
    name: str,
    username: str | None,
    when: datetime,
    day: date,
    kicked: bool = False,
) -> bool:
    """Record that a member left (or was removed) at `when`; False when already recorded."""
    member = await _touch(session, chat_id, user_id, name, username, when)
    if member.status in ("left", "kicked"):
        return False
    if member.status_changed_at and when < member.status_changed_at:
        return False  # stale: they (re)joined after this leave was stamped
    await _stamp(
        session,
        chat_id=chat_id,
        user_id=user_id,
        day=day,
        when=when,
        status="kicked" if kicked else "left",
        first_seen=member.first_seen,
        joined_at=member.joined_at,
        left_at=when,
        counter="leaves",
    )
    return True


def _mark_roster(dialect: str) -> Any:
    roster, new = MEMBER_TABLE.c, excluded(MEMBER_TABLE)
    return _new_roster_row(dialect, last_active=bindparam("when")).on_conflict_do_update(
        index_elements=["chat_id", "user_id"],
        set_={
            "display_name": new.display_name,
            "username": new.username,
            "last_active": case(
                (
                    or_(roster.last_active.is_(None), new.last_active > roster.last_active),
                    new.last_active,
                ),
                else_=roster.last_active,
            ),
        },
    )


def _mark_day(kind: Participation) -> Any:
    def build(dialect: str) -> Any:
        return _new_day_row(dialect, flag=kind).on_conflict_do_update(
            index_elements=["chat_id", "user_id", "day"], set_={kind: true()}
        )

    return build


async def mark_participation(
    session: AsyncSession,
    *,
    chat_id: int,
    user_id: int,
    name: str,
    username: str | None,
    when: datetime,
    day: date,
    kind: Participation,
) -> None:
    """Flag a check-in, poll answer or lottery entry in the day's rollup (idempotent).

    Two upserts (the roster row with its last-active time, the day's row with the flag),
    each prepared once (`bot.db.prepared`) rather than read back through the ORM: this runs
    in every check-in, vote and entry, and each statement saved is a few hundred µs of CPU.
    """
    values = {
        "chat_id": chat_id,
        "user_id": user_id,
        "display_name": name,
        "username": username,
        "when": when,
        "day": day,
    }
    await session.execute(prepared(session, "activity.mark_roster", _mark_roster), values)
    await session.execute(prepared(session, f"activity.mark_{kind}", _mark_day(kind)), values)
