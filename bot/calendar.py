"""The content calendar in the database: posts, every planned delivery, approvals, pauses.

The database is the record. `sync_calendar` makes the post rows match the files;
`materialize` turns posts into delivery rows for the next hours (UNIQUE post, chat, due time,
so running it twice, or in two processes, plans nothing twice) and reconciles what is planned
with the schedule: changed times are cancelled and re-planned, removed posts cancelled, and a
row that was sent is never touched again. Jobs (schedules/calendar.py) are derived from rows.

A delivery is claimed before it is sent (`claim`: a conditional UPDATE pending → sending) and
its outcome recorded in a second transaction, so a restart or a second process never sends
it twice. States:
  pending → sending → sent | failed | unknown (timed out: Telegram may have posted it)
  pending → missed (the bot was down past its grace) | skipped (/skip, paused, rejected)
          | cancelled (removed, rescheduled, chat gone) | held (needed approval, had none)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    UniqueConstraint,
    and_,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from bot.calendar_file import Calendar, PostSpec
from bot.chats import register_migration_merge
from bot.cluster import claimed_by_stopped_process
from bot.db import upsert
from bot.models import Chat, ChatMigration, chat_fk, utc_column

HORIZON = timedelta(hours=48)  # deliveries are planned this far ahead
REFILL = timedelta(hours=1)  # re-plan when less than HORIZON - REFILL is planned
LOOKBACK = timedelta(days=7)  # after a longer downtime older occurrences are not recorded
STALE_SENDING = timedelta(minutes=10)  # a claim older than this was interrupted mid-send
MAX_ATTEMPTS = 5
ONE_OFF_PREFIX = "@once-"  # keys of posts made with /schedule (file ids can't contain '@')

PENDING, SENDING, SENT, FAILED = "pending", "sending", "sent", "failed"
MISSED, SKIPPED, CANCELLED, HELD, UNKNOWN = "missed", "skipped", "cancelled", "held", "unknown"
# What /postnow may still send: it counts as that occurrence.
SENDABLE_BY_HAND = (PENDING, HELD, UNKNOWN, FAILED, MISSED)


class CalendarPost(SQLModel, table=True):
    """A post from the calendar files (source 'file') or made with /schedule (source 'chat')."""

    __tablename__ = "calendar_post"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=80, unique=True)
    source: str = Field(default="file", max_length=8)
    spec: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    digest: str = Field(max_length=64)
    active: bool = Field(default=True)  # still in the calendar (False: removed)
    enabled: bool = Field(default=True)
    materialized_until: datetime | None = Field(default=None, sa_column=utc_column())
    created_by: int | None = Field(default=None, sa_type=BigInteger)
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
    updated_at: datetime = Field(sa_column=utc_column(nullable=False))


class CalendarDelivery(SQLModel, table=True):
    """One planned send of one post to one chat at one time, and what became of it."""

    __tablename__ = "calendar_delivery"
    __table_args__ = (
        UniqueConstraint("post_id", "chat_id", "due_at", name="uq_calendar_delivery"),
        Index("ix_calendar_delivery_state_due", "state", "due_at"),
        Index("ix_calendar_delivery_chat_due", "chat_id", "due_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    post_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("calendar_post.id", ondelete="CASCADE"), nullable=False
        )
    )
    chat_id: int = Field(sa_column=chat_fk())
    due_at: datetime = Field(sa_column=utc_column(nullable=False))
    state: str = Field(default=PENDING, max_length=16)
    message_id: int | None = Field(default=None, sa_type=BigInteger)
    error: str | None = Field(default=None, max_length=500)
    attempts: int = Field(default=0)
    next_attempt_at: datetime | None = Field(default=None, sa_column=utc_column())
    claimed_at: datetime | None = Field(default=None, sa_column=utc_column())
    claimed_by: str | None = Field(default=None, max_length=40)
    sent_at: datetime | None = Field(default=None, sa_column=utc_column())
    pinned: bool = Field(default=False)
    delete_at: datetime | None = Field(default=None, sa_column=utc_column())
    deleted_at: datetime | None = Field(default=None, sa_column=utc_column())
    updated_at: datetime = Field(sa_column=utc_column(nullable=False))


class CalendarApproval(SQLModel, table=True):
    """The operators' decision on one occurrence of a post that needs approval (all its chats)."""

    __tablename__ = "calendar_approval"
    __table_args__ = (UniqueConstraint("post_id", "due_at", name="uq_calendar_approval"),)

    id: int | None = Field(default=None, primary_key=True)
    post_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("calendar_post.id", ondelete="CASCADE"), nullable=False
        )
    )
    due_at: datetime = Field(sa_column=utc_column(nullable=False))
    digest: str = Field(max_length=64)  # the version of the post that was (or is to be) approved
    state: str = Field(default="pending", max_length=16)  # pending|approved|rejected|later
    preview_sent_at: datetime | None = Field(default=None, sa_column=utc_column())
    decided_by: int | None = Field(default=None, sa_type=BigInteger)
    decided_at: datetime | None = Field(default=None, sa_column=utc_column())
    reported_at: datetime | None = Field(default=None, sa_column=utc_column())  # held, reported


class CalendarChat(SQLModel, table=True):
    """Per-group calendar settings: /pause and /resume."""

    __tablename__ = "calendar_chat"

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    paused: bool = Field(default=False)
    paused_by: int | None = Field(default=None, sa_type=BigInteger)
    paused_at: datetime | None = Field(default=None, sa_column=utc_column())


_PROGRESS = {SENT: 5, UNKNOWN: 4, SENDING: 4, FAILED: 3, HELD: 2, MISSED: 2, SKIPPED: 2}


def _merge_delivery(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Both ids planned the same send: keep the one that got further (never lose a 'sent')."""
    return (
        dict(new) if _PROGRESS.get(new["state"], 0) > _PROGRESS.get(old["state"], 0) else dict(old)
    )


register_migration_merge(CalendarDelivery.__tablename__, _merge_delivery)


# --- from files to rows ----------------------------------------------------------------------


@dataclass(slots=True)
class SyncReport:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0


async def sync_calendar(session: AsyncSession, calendar: Calendar, *, now: datetime) -> SyncReport:
    """Make the file posts in the database match `calendar` (a valid one)."""
    report = SyncReport()
    rows = {
        row.key: row
        for row in await session.scalars(
            select(CalendarPost).where(CalendarPost.source == "file").with_for_update()
        )
    }
    new_rows = []
    for spec in calendar.posts:
        row = rows.pop(spec.key, None)
        digest = spec.digest
        if row is None:
            new_rows.append(
                {
                    "key": spec.key,
                    "source": "file",
                    "spec": spec.to_json(),
                    "digest": digest,
                    "active": True,
                    "enabled": spec.enabled,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            report.added.append(spec.key)
            continue
        if row.digest != digest or not row.active or row.enabled != spec.enabled:
            report.changed.append(spec.key)
            if not row.active or not row.enabled:
                row.materialized_until = now  # the time it was out is not "missed"
            row.digest, row.active, row.enabled, row.updated_at = digest, True, spec.enabled, now
        else:
            report.unchanged += 1
        row.spec = spec.to_json()  # file and line may move without a change
    await upsert(session, CalendarPost.__table__, new_rows, key=("key",))  # type: ignore[attr-defined]
    for row in rows.values():
        if row.active:
            row.active, row.updated_at = False, now
            report.removed.append(row.key)
    await session.flush()
    return report


async def cancel_inactive(session: AsyncSession, *, now: datetime) -> int:
    """Pending deliveries of removed or disabled posts are cancelled."""
    gone = select(CalendarPost.id).where(
        or_(CalendarPost.active.is_(False), CalendarPost.enabled.is_(False))
    )
    result = await session.execute(
        update(CalendarDelivery)
        .where(CalendarDelivery.state == PENDING, CalendarDelivery.post_id.in_(gone))
        .values(state=CANCELLED, error="removed or disabled in the calendar", updated_at=now)
    )
    return result.rowcount or 0


@dataclass(slots=True)
class PlanReport:
    planned: int = 0
    cancelled: int = 0
    unknown_chats: set[int] = field(default_factory=set)


async def _chat_table(session: AsyncSession) -> tuple[dict[int, Chat], dict[int, int]]:
    chats = {c.id: c for c in await session.scalars(select(Chat))}
    moves = {m.old_chat_id: m.new_chat_id for m in await session.scalars(select(ChatMigration))}
    return chats, moves


def _resolve(chat_id: int, moves: dict[int, int]) -> int:
    for _ in range(5):  # a migration chain is at most one hop in practice
        if chat_id not in moves:
            break
        chat_id = moves[chat_id]
    return chat_id


async def materialize(
    session: AsyncSession,
    *,
    now: datetime,
    horizon: timedelta = HORIZON,
    only_due: bool = False,
    post_ids: Iterable[int] | None = None,
) -> PlanReport:
    """Plan deliveries up to `now + horizon` and reconcile the future ones with the schedule.

    With `only_due`, posts planned far enough ahead are left alone (the periodic refill).
    """
    report = PlanReport()
    chats, moves = await _chat_table(session)
    query = select(CalendarPost).where(
        CalendarPost.source == "file",  # posts made with /schedule are planned when made
        CalendarPost.active.is_(True),
        CalendarPost.enabled.is_(True),
    )
    if post_ids is not None:
        query = query.where(CalendarPost.id.in_(list(post_ids)))
    if only_due:
        query = query.where(
            or_(
                CalendarPost.materialized_until.is_(None),
                CalendarPost.materialized_until < now + horizon - REFILL,
            )
        )
    for post in list(await session.scalars(query)):
        spec = PostSpec.from_json(post.spec)
        grace = timedelta(seconds=spec.grace)
        end = now + horizon
        if spec.approval:
            end = max(end, now + timedelta(seconds=spec.review_ahead) + REFILL)
        if post.materialized_until is None:
            start = now  # a new post is planned from now on: no late sends of earlier times
        else:
            start = max(min(post.materialized_until, now), now - LOOKBACK)
        start = min(start, now)
        times = spec.schedule.occurrences(start, end)
        targets = []
        for raw in spec.targets:
            chat_id = _resolve(raw, moves)
            chat = chats.get(chat_id)
            if chat is None:
                report.unknown_chats.add(raw)
            elif chat.active and chat_id not in targets:
                targets.append(chat_id)
        wanted: dict[tuple[int, datetime], str] = {}
        for moment in times:
            for chat_id in targets:
                if moment >= now - grace:
                    wanted[(chat_id, moment)] = PENDING
                elif chats[chat_id].created_at <= moment:
                    wanted[(chat_id, moment)] = MISSED  # due while the bot was not running
        existing = {
            (row.chat_id, row.due_at): row
            for row in await session.scalars(
                select(CalendarDelivery).where(
                    CalendarDelivery.post_id == post.id, CalendarDelivery.due_at >= start
                )
            )
        }
        inserts = [
            {
                "post_id": post.id,
                "chat_id": chat_id,
                "due_at": moment,
                "state": state,
                "error": "the bot was not running at the time" if state == MISSED else None,
                "updated_at": now,
            }
            for (chat_id, moment), state in wanted.items()
            if (chat_id, moment) not in existing
        ]
        await upsert(
            session,
            CalendarDelivery.__table__,  # type: ignore[attr-defined]
            inserts,
            key=("post_id", "chat_id", "due_at"),
        )
        report.planned += sum(1 for row in inserts if row["state"] == PENDING)
        for key, row in existing.items():
            if row.due_at <= now:
                continue
            if key not in wanted and row.state == PENDING:
                row.state, row.error, row.updated_at = CANCELLED, "no longer planned", now
                report.cancelled += 1
            elif key in wanted and row.state == CANCELLED:
                row.state, row.error, row.updated_at = PENDING, None, now
                report.planned += 1
        if spec.approval:
            await _plan_approvals(session, post, [t for t in times if t > now], now=now)
        post.materialized_until = end
    await session.flush()
    return report


async def _plan_approvals(
    session: AsyncSession, post: CalendarPost, times: Sequence[datetime], *, now: datetime
) -> None:
    await upsert(
        session,
        CalendarApproval.__table__,  # type: ignore[attr-defined]
        [
            {"post_id": post.id, "due_at": t, "digest": post.digest, "state": "pending"}
            for t in times
        ],
        key=("post_id", "due_at"),
    )
    # A post edited after its preview needs a new look: reset the decision on the new version.
    stale = list(
        await session.scalars(
            select(CalendarApproval).where(
                CalendarApproval.post_id == post.id,
                CalendarApproval.due_at > now,
                CalendarApproval.digest != post.digest,
            )
        )
    )
    for approval in stale:
        if approval.state == "rejected":
            await session.execute(
                update(CalendarDelivery)
                .where(
                    CalendarDelivery.post_id == post.id,
                    CalendarDelivery.due_at == approval.due_at,
                    CalendarDelivery.state == SKIPPED,
                )
                .values(state=PENDING, error=None, updated_at=now)
            )
        approval.digest, approval.state = post.digest, "pending"
        approval.preview_sent_at = approval.decided_at = approval.decided_by = None


# --- claiming and recording --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery this process now owns: send it, then record the outcome."""

    delivery_id: int
    post_id: int
    post_key: str
    chat_id: int
    due_at: datetime
    spec: PostSpec
    attempts: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """A delivery that was settled without sending (missed, held, skipped, cancelled)."""

    delivery_id: int
    state: str
    reason: str
    post_id: int
    chat_id: int
    due_at: datetime


async def _transition(
    session: AsyncSession, delivery_id: int, from_states: Sequence[str], **values: Any
) -> bool:
    result = await session.execute(
        update(CalendarDelivery)
        .where(CalendarDelivery.id == delivery_id, CalendarDelivery.state.in_(list(from_states)))
        .values(**values)
    )
    return bool(result.rowcount)


async def claim(
    session: AsyncSession,
    delivery_id: int,
    *,
    now: datetime,
    token: str,
    manual: bool = False,
) -> Claim | Verdict | None:
    """Decide a due delivery and claim it for sending; None if it isn't ours to act on.

    `manual` (/postnow) sends whatever state short of sent, bypassing time, grace, pause and
    approval: an operator asked for it.
    """
    row = await session.get(CalendarDelivery, delivery_id, populate_existing=True)
    if row is None:
        return None
    post = await session.get(CalendarPost, row.post_id)
    assert post is not None
    spec = PostSpec.from_json(post.spec)
    allowed = SENDABLE_BY_HAND if manual else (PENDING,)
    if row.state not in allowed:
        return None
    if not manual:
        if row.due_at > now + timedelta(seconds=1):
            return None  # early (a rescheduled job will come back)
        if row.next_attempt_at is not None and row.next_attempt_at > now + timedelta(seconds=1):
            return None
        verdict = await _settle(session, row, post, spec, now=now)
        if verdict is not None:
            return verdict
    attempts = row.attempts  # (the UPDATE below also refreshes `row`)
    claimed = await _transition(
        session,
        delivery_id,
        allowed,
        state=SENDING,
        attempts=CalendarDelivery.attempts + 1,
        claimed_at=now,
        claimed_by=token,
        updated_at=now,
    )
    if not claimed:
        return None
    return Claim(
        delivery_id=delivery_id,
        post_id=post.id,  # type: ignore[arg-type]
        post_key=post.key,
        chat_id=row.chat_id,
        due_at=row.due_at,
        spec=spec,
        attempts=attempts + 1,
    )


async def _settle(
    session: AsyncSession,
    row: CalendarDelivery,
    post: CalendarPost,
    spec: PostSpec,
    *,
    now: datetime,
) -> Verdict | None:
    """Why a due delivery must not go out now (and its new state), or None to send it."""
    chat = await session.get(Chat, row.chat_id)
    outcome: tuple[str, str] | None = None
    if not post.active or not post.enabled:
        outcome = CANCELLED, "removed or disabled in the calendar"
    elif chat is None or not chat.active:
        outcome = CANCELLED, "the bot is no longer in this chat"
    elif row.attempts == 0 and now > row.due_at + timedelta(seconds=spec.grace):
        outcome = MISSED, "the bot was not running at the time (past its grace)"
    else:
        settings = await session.get(CalendarChat, row.chat_id)
        if settings is not None and settings.paused:
            outcome = SKIPPED, "posting is paused in this group"
        elif spec.approval:
            approval = await session.scalar(
                select(CalendarApproval).where(
                    CalendarApproval.post_id == row.post_id,
                    CalendarApproval.due_at == row.due_at,
                )
            )
            if approval is None or approval.state != "approved" or approval.digest != post.digest:
                outcome = HELD, "needs approval and was not approved in time"
    if outcome is None:
        return None
    state, reason = outcome
    if not await _transition(
        session, row.id, (PENDING,), state=state, error=reason, updated_at=now
    ):  # type: ignore[arg-type]
        return None
    return Verdict(row.id, state, reason, row.post_id, row.chat_id, row.due_at)  # type: ignore[arg-type]


async def record_sent(
    session: AsyncSession,
    delivery_id: int,
    *,
    message_id: int,
    now: datetime,
    delete_after: int | None,
) -> None:
    # UNKNOWN too: a send held up long enough (rate limits) to be taken for interrupted.
    await _transition(
        session,
        delivery_id,
        (SENDING, UNKNOWN),
        state=SENT,
        message_id=message_id,
        sent_at=now,
        error=None,
        next_attempt_at=None,
        delete_at=now + timedelta(seconds=delete_after) if delete_after else None,
        updated_at=now,
    )


async def record_retry(
    session: AsyncSession, delivery_id: int, *, error: str, at: datetime, now: datetime
) -> None:
    """A transient failure: back to pending, to be tried again at `at`."""
    await _transition(
        session,
        delivery_id,
        (SENDING,),
        state=PENDING,
        error=error[:500],
        next_attempt_at=at,
        updated_at=now,
    )


async def record_outcome(
    session: AsyncSession, delivery_id: int, *, state: str, error: str, now: datetime
) -> None:
    await _transition(
        session, delivery_id, (SENDING,), state=state, error=error[:500], updated_at=now
    )


async def cancel_chat(session: AsyncSession, chat_id: int, *, reason: str, now: datetime) -> int:
    """The bot can no longer post in a chat: its pending deliveries are cancelled."""
    result = await session.execute(
        update(CalendarDelivery)
        .where(CalendarDelivery.chat_id == chat_id, CalendarDelivery.state == PENDING)
        .values(state=CANCELLED, error=reason[:500], updated_at=now)
    )
    return result.rowcount or 0


async def interrupted(
    session: AsyncSession,
    *,
    now: datetime,
    me: str | None = None,
    process_lease: timedelta | None = None,
) -> list[int]:
    """Settle claims left 'sending' as 'unknown'; returns the ids of stopped processes' claims.

    A claim held by another process that has stopped beating for `process_lease`
    (bot.cluster) is settled at once; a claim older than STALE_SENDING held by a process
    still alive (or a legacy claim without a token) too. Either way the post may have gone
    out — the process may have died after Telegram took the message and before the answer
    was recorded, and the bot cannot ask Telegram — so it becomes 'unknown' for an operator
    to check (/postnow or /skip), never resent blindly: a post is never sent twice.
    """
    taken: list[int] = []
    if me is not None and process_lease is not None:
        stopped = claimed_by_stopped_process(
            CalendarDelivery.claimed_by, me=me, now=now, lease=process_lease
        )
        taken = list(
            await session.scalars(
                select(CalendarDelivery.id).where(CalendarDelivery.state == SENDING, stopped)
            )
        )
        for delivery_id in taken:
            await _transition(
                session,
                delivery_id,
                (SENDING,),
                state=UNKNOWN,
                error="its process stopped while sending: check the group, then /postnow or /skip",
                updated_at=now,
            )
    ids = list(
        await session.scalars(
            select(CalendarDelivery.id).where(
                CalendarDelivery.state == SENDING,
                CalendarDelivery.claimed_at < now - STALE_SENDING,
            )
        )
    )
    for delivery_id in ids:
        await _transition(
            session,
            delivery_id,
            (SENDING,),
            state=UNKNOWN,
            error="interrupted while sending: check the group, then /postnow or /skip",
            updated_at=now,
        )
    return taken


async def pinned_before(
    session: AsyncSession, *, post_id: int, chat_id: int, exclude: int
) -> list[CalendarDelivery]:
    return list(
        await session.scalars(
            select(CalendarDelivery).where(
                CalendarDelivery.post_id == post_id,
                CalendarDelivery.chat_id == chat_id,
                CalendarDelivery.pinned.is_(True),
                CalendarDelivery.id != exclude,
            )
        )
    )


async def set_pinned(session: AsyncSession, delivery_id: int, pinned: bool) -> None:
    await session.execute(
        update(CalendarDelivery).where(CalendarDelivery.id == delivery_id).values(pinned=pinned)
    )


async def claim_deletion(
    session: AsyncSession, delivery_id: int, *, now: datetime
) -> tuple[int, int] | None:
    """Claim a sent message for deletion once; (chat id, message id) or None."""
    row = await session.get(CalendarDelivery, delivery_id, populate_existing=True)
    if row is None or row.message_id is None or row.delete_at is None:
        return None
    if row.delete_at > now + timedelta(seconds=1):
        return None  # early: its job comes back at delete_at
    result = await session.execute(
        update(CalendarDelivery)
        .where(CalendarDelivery.id == delivery_id, CalendarDelivery.deleted_at.is_(None))
        .values(deleted_at=now, pinned=False)
    )
    return (row.chat_id, row.message_id) if result.rowcount else None


# --- queries for jobs and commands -------------------------------------------------------------


async def pending_deliveries(session: AsyncSession, *, until: datetime) -> list[CalendarDelivery]:
    return list(
        await session.scalars(
            select(CalendarDelivery)
            .where(CalendarDelivery.state == PENDING, CalendarDelivery.due_at <= until)
            .order_by(CalendarDelivery.due_at)
        )
    )


async def pending_deletions(session: AsyncSession) -> list[CalendarDelivery]:
    return list(
        await session.scalars(
            select(CalendarDelivery).where(
                CalendarDelivery.state == SENT,
                CalendarDelivery.delete_at.is_not(None),
                CalendarDelivery.deleted_at.is_(None),
            )
        )
    )


async def approvals_to_preview(session: AsyncSession, *, now: datetime) -> list[CalendarApproval]:
    return list(
        await session.scalars(
            select(CalendarApproval).where(
                CalendarApproval.state == "pending",
                CalendarApproval.preview_sent_at.is_(None),
                CalendarApproval.due_at > now,
            )
        )
    )


async def upcoming(
    session: AsyncSession, chat_id: int, *, now: datetime, limit: int = 10
) -> list[tuple[CalendarDelivery, CalendarPost]]:
    rows = await session.execute(
        select(CalendarDelivery, CalendarPost)
        .join(CalendarPost, CalendarPost.id == CalendarDelivery.post_id)
        .where(CalendarDelivery.chat_id == chat_id, CalendarDelivery.state == PENDING)
        .order_by(CalendarDelivery.due_at, CalendarDelivery.id)
        .limit(limit)
    )
    return [(d, p) for d, p in rows.all()]


async def needing_attention(
    session: AsyncSession, chat_id: int, *, since: datetime, limit: int = 10
) -> list[tuple[CalendarDelivery, CalendarPost]]:
    """Recent deliveries an operator should know about: failed, unknown, missed, held."""
    rows = await session.execute(
        select(CalendarDelivery, CalendarPost)
        .join(CalendarPost, CalendarPost.id == CalendarDelivery.post_id)
        .where(
            CalendarDelivery.chat_id == chat_id,
            CalendarDelivery.state.in_([FAILED, UNKNOWN, MISSED, HELD]),
            CalendarDelivery.due_at >= since,
        )
        .order_by(CalendarDelivery.due_at.desc())
        .limit(limit)
    )
    return [(d, p) for d, p in rows.all()]


async def find_delivery(
    session: AsyncSession, chat_id: int, ref: str, *, states: Sequence[str]
) -> CalendarDelivery | None:
    """`ref` is a delivery number (as /calendar shows) or a post id (its next occurrence)."""
    ref = ref.strip().lstrip("#")
    if ref.isdigit():
        row = await session.get(CalendarDelivery, int(ref))
        if row is None or row.chat_id != chat_id or row.state not in states:
            return None
        return row
    return await session.scalar(
        select(CalendarDelivery)
        .join(CalendarPost, CalendarPost.id == CalendarDelivery.post_id)
        .where(
            CalendarPost.key == ref,
            CalendarDelivery.chat_id == chat_id,
            CalendarDelivery.state.in_(list(states)),
        )
        .order_by(CalendarDelivery.due_at)
        .limit(1)
    )


async def skip(session: AsyncSession, delivery_id: int, *, by: int, now: datetime) -> bool:
    return await _transition(
        session,
        delivery_id,
        (PENDING, HELD),
        state=SKIPPED,
        error=f"skipped by {by}",
        updated_at=now,
    )


async def set_paused(
    session: AsyncSession, chat_id: int, *, paused: bool, by: int, now: datetime
) -> None:
    await upsert(
        session,
        CalendarChat.__table__,  # type: ignore[attr-defined]
        [{"chat_id": chat_id, "paused": paused, "paused_by": by, "paused_at": now}],
        key=("chat_id",),
        update=lambda new: {
            "paused": new.paused,
            "paused_by": new.paused_by,
            "paused_at": new.paused_at,
        },
    )


async def is_paused(session: AsyncSession, chat_id: int) -> bool:
    row = await session.get(CalendarChat, chat_id)
    return bool(row and row.paused)


async def create_one_off(
    session: AsyncSession,
    *,
    chat_id: int,
    spec: PostSpec,
    due_at: datetime,
    by: int,
    now: datetime,
) -> CalendarDelivery:
    """A post made with /schedule: one row for the post, one delivery."""
    post = CalendarPost(
        key=f"{ONE_OFF_PREFIX}pending-{by}-{now.timestamp()}",
        source="chat",
        spec=spec.to_json(),
        digest=spec.digest,
        created_by=by,
        materialized_until=due_at,
        created_at=now,
        updated_at=now,
    )
    session.add(post)
    await session.flush()
    post.key = f"{ONE_OFF_PREFIX}{post.id}"
    data = spec.to_json()
    data["key"] = post.key
    post.spec = data
    delivery = CalendarDelivery(post_id=post.id, chat_id=chat_id, due_at=due_at, updated_at=now)  # type: ignore[arg-type]
    session.add(delivery)
    await session.flush()
    return delivery


async def decide(
    session: AsyncSession,
    approval_id: int,
    *,
    digest_prefix: str,
    state: str,
    by: int,
    now: datetime,
) -> bool:
    """Record an operator's decision on a preview, if it is still open and for this version."""
    approval = await session.get(CalendarApproval, approval_id, populate_existing=True)
    if approval is None or not approval.digest.startswith(digest_prefix):
        return False
    result = await session.execute(
        update(CalendarApproval)
        .where(
            CalendarApproval.id == approval_id,
            CalendarApproval.state.in_(["pending", "later"]),
            CalendarApproval.digest == approval.digest,
            CalendarApproval.due_at > now,
        )
        .values(state=state, decided_by=by, decided_at=now)
    )
    if not result.rowcount:
        return False
    if state == "rejected":
        await session.execute(
            update(CalendarDelivery)
            .where(
                and_(
                    CalendarDelivery.post_id == approval.post_id,
                    CalendarDelivery.due_at == approval.due_at,
                    CalendarDelivery.state == PENDING,
                )
            )
            .values(state=SKIPPED, error=f"rejected by {by}", updated_at=now)
        )
    return True


async def approval_chats(session: AsyncSession, approval: CalendarApproval) -> list[int]:
    """The chats one approval covers (its planned deliveries)."""
    return sorted(
        set(
            await session.scalars(
                select(CalendarDelivery.chat_id).where(
                    CalendarDelivery.post_id == approval.post_id,
                    CalendarDelivery.due_at == approval.due_at,
                )
            )
        )
    )
