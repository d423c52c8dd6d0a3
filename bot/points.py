"""The points ledger: every change of a member's points, and the balances derived from it.

Points are the currency of the engagement features (check-ins earn them, lotteries and
make-up check-ins spend them, operators grant or deduct them). Every change is one row in
`points_ledger`, which is append-only and keyed by its source: `(chat_id, source,
source_key)` is unique, so an award is written with INSERT … ON CONFLICT DO NOTHING and a
replayed update, a double tap or a second process can never award the same thing twice.

`points_balance` holds each member's current total. It is updated in the same transaction
as the ledger row, so after every commit `balance == SUM(ledger.amount)` per (chat, user);
`audit` checks that and `rebuild_balances` recomputes the balances from the ledger.

The API (all inside the caller's transaction; the caller commits):

    await award(session, chat_id=…, user_id=…, amount=50, reason="quiz answer",
                source="quiz", source_key=f"{quiz_id}:{user_id}", now=now)  -> bool (new?)
    await spend(session, chat_id=…, user_id=…, amount=100, reason="lottery entry",
                source="lottery", source_key=f"{lottery_id}:{user_id}", now=now)
        -> Spend.SPENT | Spend.DUPLICATE | Spend.INSUFFICIENT (nothing written)
    await balance(session, chat_id=…, user_id=…)  -> int
    await rank(session, chat_id=…, user_id=…)     -> int | None
    await leaderboard(session, chat_id=…, since=None|datetime, limit=10) -> list[Standing]

`source_key` names the thing within (chat, source). Include the user id when every member
may get it once (`f"{lottery_id}:{user_id}"`); leave it out when only one member may ever
get it (`f"invitee:{user_id_of_invitee}"` for a referral bonus, a day's first check-in).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    UniqueConstraint,
    bindparam,
    delete,
    func,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from bot.chats import register_migration_hook, register_migration_merge
from bot.db import excluded, insert_for, prepared, upsert
from bot.models import chat_fk, utc_column

MAX_REASON = 255
MAX_SOURCE = 32
MAX_SOURCE_KEY = 128


class PointsLedger(SQLModel, table=True):
    """One change of one member's points in one chat; never updated or deleted."""

    __tablename__ = "points_ledger"
    __table_args__ = (
        UniqueConstraint("chat_id", "source", "source_key", name="uq_points_ledger_source"),
        Index("ix_points_ledger_chat_user", "chat_id", "user_id"),
        Index("ix_points_ledger_chat_created", "chat_id", "created_at"),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    chat_id: int = Field(sa_column=chat_fk())
    user_id: int = Field(sa_type=BigInteger)
    amount: int
    reason: str = Field(default="", max_length=MAX_REASON)
    source: str = Field(max_length=MAX_SOURCE)  # checkin, admin, lottery, quiz, referral, …
    source_key: str = Field(max_length=MAX_SOURCE_KEY)
    actor_id: int | None = Field(default=None, sa_type=BigInteger)  # who granted it, if a person
    created_at: datetime = Field(sa_column=utc_column(nullable=False))


class PointsBalance(SQLModel, table=True):
    """A member's current points in a chat: always the sum of their ledger rows."""

    __tablename__ = "points_balance"
    __table_args__ = (Index("ix_points_balance_chat_points", "chat_id", "points"),)

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    user_id: int = Field(sa_type=BigInteger, primary_key=True)
    points: int = Field(default=0)
    updated_at: datetime = Field(sa_column=utc_column(nullable=False))


LEDGER = PointsLedger.__table__  # type: ignore[attr-defined]
BALANCE = PointsBalance.__table__  # type: ignore[attr-defined]


class Spend(StrEnum):
    SPENT = "spent"
    DUPLICATE = "duplicate"  # this source_key was already recorded: nothing changed
    INSUFFICIENT = "insufficient"  # the balance is lower than the amount: nothing written


@dataclass(frozen=True, slots=True)
class Standing:
    user_id: int
    points: int


@dataclass(frozen=True, slots=True)
class Mismatch:
    chat_id: int
    user_id: int
    balance: int
    ledger: int


def _ledger_insert(dialect: str) -> Any:
    return (
        insert_for(dialect, LEDGER)
        .values({name: bindparam(name) for name in _LEDGER_VALUES})
        .on_conflict_do_nothing(index_elements=["chat_id", "source", "source_key"])
        .returning(LEDGER.c.id)
    )


_LEDGER_VALUES = (
    "chat_id",
    "user_id",
    "amount",
    "reason",
    "source",
    "source_key",
    "actor_id",
    "created_at",
)


def _balance_add(dialect: str) -> Any:
    new = excluded(BALANCE)
    return (
        insert_for(dialect, BALANCE)
        .values(
            chat_id=bindparam("chat_id"),
            user_id=bindparam("user_id"),
            points=bindparam("amount"),
            updated_at=bindparam("created_at"),
        )
        .on_conflict_do_update(
            index_elements=["chat_id", "user_id"],
            set_={"points": BALANCE.c.points + new.points, "updated_at": new.updated_at},
        )
        .returning(BALANCE.c.points)
    )


def _balance_take(dialect: str) -> Any:
    return (
        update(BALANCE)
        .where(
            BALANCE.c.chat_id == bindparam("chat"),
            BALANCE.c.user_id == bindparam("user"),
            BALANCE.c.points + bindparam("amount", type_=Integer()) >= bindparam("floor"),
        )
        .values(
            points=BALANCE.c.points + bindparam("amount", type_=Integer()),
            updated_at=bindparam("now"),
        )
        .returning(BALANCE.c.points)
    )


def _ledger_delete(dialect: str) -> Any:
    return delete(LEDGER).where(LEDGER.c.id == bindparam("id"))


async def _post(
    session: AsyncSession,
    *,
    chat_id: int,
    user_id: int,
    amount: int,
    reason: str,
    source: str,
    source_key: str,
    now: datetime,
    actor_id: int | None,
    floor: int | None,
) -> tuple[Spend, int | None]:
    """Write one ledger row and move the balance with it; `floor` refuses going below it.

    Returns the outcome and, when spent, the balance afterwards. The statements are
    prepared once (`bot.db.prepared`): this runs in every check-in, entry and vote.
    """
    if amount == 0:
        raise ValueError("a ledger entry needs a non-zero amount")
    if not 0 < len(source) <= MAX_SOURCE or not 0 < len(source_key) <= MAX_SOURCE_KEY:
        raise ValueError(f"bad ledger source {source!r}/{source_key!r}")
    values = {
        "chat_id": chat_id,
        "user_id": user_id,
        "amount": amount,
        "reason": reason[:MAX_REASON],
        "source": source,
        "source_key": source_key,
        "actor_id": actor_id,
        "created_at": now,
    }
    entry_id = (
        await session.execute(prepared(session, "points.ledger_insert", _ledger_insert), values)
    ).scalar()
    if entry_id is None:
        return Spend.DUPLICATE, None
    if floor is not None and amount < 0:
        moved = (
            await session.execute(
                prepared(session, "points.balance_take", _balance_take),
                {
                    "chat": chat_id,
                    "user": user_id,
                    "amount": amount,
                    "floor": floor,
                    "now": now,
                },
            )
        ).scalar()
        if moved is None:
            # Our own row, not yet committed or seen by anyone: taking it back keeps the
            # ledger append-only as far as any reader can tell.
            await session.execute(
                prepared(session, "points.ledger_delete", _ledger_delete), {"id": entry_id}
            )
            return Spend.INSUFFICIENT, None
        return Spend.SPENT, int(moved)
    total = (
        await session.execute(prepared(session, "points.balance_add", _balance_add), values)
    ).scalar_one()
    return Spend.SPENT, int(total)


async def award(
    session: AsyncSession,
    *,
    chat_id: int,
    user_id: int,
    amount: int,
    reason: str,
    source: str,
    source_key: str,
    now: datetime,
    actor_id: int | None = None,
) -> bool:
    """Add `amount` (non-zero; negative for a penalty that may go below zero) exactly once.

    Returns True when the entry is new, False when `(chat_id, source, source_key)` was
    already recorded (nothing changes then).
    """
    return (
        await award_total(
            session,
            chat_id=chat_id,
            user_id=user_id,
            amount=amount,
            reason=reason,
            source=source,
            source_key=source_key,
            now=now,
            actor_id=actor_id,
        )
    ) is not None


async def award_total(
    session: AsyncSession,
    *,
    chat_id: int,
    user_id: int,
    amount: int,
    reason: str,
    source: str,
    source_key: str,
    now: datetime,
    actor_id: int | None = None,
) -> int | None:
    """`award`, returning the member's balance afterwards when the entry is new (else None),
    which saves the hot paths a `balance` read."""
    outcome, total = await _post(
        session,
        chat_id=chat_id,
        user_id=user_id,
        amount=amount,
        reason=reason,
        source=source,
        source_key=source_key,
        now=now,
        actor_id=actor_id,
        floor=None,
    )
    return total if outcome is Spend.SPENT else None


async def spend(
    session: AsyncSession,
    *,
    chat_id: int,
    user_id: int,
    amount: int,
    reason: str,
    source: str,
    source_key: str,
    now: datetime,
    actor_id: int | None = None,
) -> Spend:
    """Take `amount` (> 0) points exactly once, never below zero.

    The balance check and the deduction are one conditional UPDATE, so two concurrent
    spends cannot both succeed on a balance that covers only one.
    """
    if amount <= 0:
        raise ValueError("spend a positive amount")
    outcome, _ = await _post(
        session,
        chat_id=chat_id,
        user_id=user_id,
        amount=-amount,
        reason=reason,
        source=source,
        source_key=source_key,
        now=now,
        actor_id=actor_id,
        floor=0,
    )
    return outcome


async def balance(session: AsyncSession, *, chat_id: int, user_id: int) -> int:
    """A member's current points (0 for someone who never had any)."""
    points = await session.scalar(
        prepared(session, "points.balance", _balance), {"chat": chat_id, "user": user_id}
    )
    return int(points or 0)


def _balance(dialect: str) -> Any:
    return select(BALANCE.c.points).where(
        BALANCE.c.chat_id == bindparam("chat"), BALANCE.c.user_id == bindparam("user")
    )


async def balances(session: AsyncSession, *, chat_id: int, user_ids: list[int]) -> dict[int, int]:
    """Current points of several members at once (missing members have 0)."""
    if not user_ids:
        return {}
    rows = await session.execute(
        select(BALANCE.c.user_id, BALANCE.c.points).where(
            BALANCE.c.chat_id == chat_id, BALANCE.c.user_id.in_(user_ids)
        )
    )
    found = {int(user_id): int(points) for user_id, points in rows.all()}
    return {user_id: found.get(user_id, 0) for user_id in user_ids}


async def rank(session: AsyncSession, *, chat_id: int, user_id: int) -> int | None:
    """1 + the number of members with more points (ties share a rank); None without points."""
    mine = await balance(session, chat_id=chat_id, user_id=user_id)
    if mine <= 0:
        return None
    above = await session.scalar(
        select(func.count())
        .select_from(BALANCE)
        .where(BALANCE.c.chat_id == chat_id, BALANCE.c.points > mine)
    )
    return int(above or 0) + 1


async def leaderboard(
    session: AsyncSession, *, chat_id: int, since: datetime | None = None, limit: int = 10
) -> list[Standing]:
    """Members by points: current balances, or the net change since `since` (a UTC moment).

    Ties go to whoever got there first. Members at zero or below are left out.
    """
    if since is None:
        rows = await session.execute(
            select(BALANCE.c.user_id, BALANCE.c.points)
            .where(BALANCE.c.chat_id == chat_id, BALANCE.c.points > 0)
            .order_by(BALANCE.c.points.desc(), BALANCE.c.updated_at, BALANCE.c.user_id)
            .limit(limit)
        )
    else:
        total = func.sum(LEDGER.c.amount)
        rows = await session.execute(
            select(LEDGER.c.user_id, total)
            .where(LEDGER.c.chat_id == chat_id, LEDGER.c.created_at >= since)
            .group_by(LEDGER.c.user_id)
            .having(total > 0)
            .order_by(total.desc(), func.max(LEDGER.c.id), LEDGER.c.user_id)
            .limit(limit)
        )
    return [Standing(int(user_id), int(points)) for user_id, points in rows.all()]


async def points_since(
    session: AsyncSession, *, chat_id: int, user_id: int, since: datetime
) -> int:
    """Net points a member gained since `since` (what the week/month boards rank by)."""
    total = await session.scalar(
        select(func.sum(LEDGER.c.amount)).where(
            LEDGER.c.chat_id == chat_id,
            LEDGER.c.user_id == user_id,
            LEDGER.c.created_at >= since,
        )
    )
    return int(total or 0)


async def history(
    session: AsyncSession, *, chat_id: int, user_id: int, limit: int = 10
) -> list[PointsLedger]:
    """A member's latest ledger entries, newest first."""
    rows = await session.scalars(
        select(PointsLedger)
        .where(PointsLedger.chat_id == chat_id, PointsLedger.user_id == user_id)
        .order_by(PointsLedger.id.desc())  # type: ignore[union-attr]
        .limit(limit)
    )
    return list(rows)


# --- keeping balances honest -------------------------------------------------------------


def _totals_query(chat_id: int | None) -> Any:
    query = select(LEDGER.c.chat_id, LEDGER.c.user_id, func.sum(LEDGER.c.amount)).group_by(
        LEDGER.c.chat_id, LEDGER.c.user_id
    )
    return query if chat_id is None else query.where(LEDGER.c.chat_id == chat_id)


async def audit(session: AsyncSession, *, chat_id: int | None = None) -> list[Mismatch]:
    """Members whose balance differs from the sum of their ledger (should be none)."""
    ledger = {
        (int(c), int(u)): int(s) for c, u, s in (await session.execute(_totals_query(chat_id)))
    }
    query = select(BALANCE.c.chat_id, BALANCE.c.user_id, BALANCE.c.points)
    if chat_id is not None:
        query = query.where(BALANCE.c.chat_id == chat_id)
    stored = {(int(c), int(u)): int(p) for c, u, p in (await session.execute(query))}
    problems = []
    for key in sorted(set(ledger) | set(stored)):
        expected, actual = ledger.get(key, 0), stored.get(key, 0)
        if expected != actual:
            problems.append(Mismatch(key[0], key[1], actual, expected))
    return problems


async def rebuild_balances(
    session: AsyncSession, *, chat_id: int | None, now: datetime
) -> list[Mismatch]:
    """Set every balance to the sum of its ledger rows; returns what had to be corrected."""
    problems = await audit(session, chat_id=chat_id)
    for problem in problems:
        await upsert(
            session,
            BALANCE,
            [
                {
                    "chat_id": problem.chat_id,
                    "user_id": problem.user_id,
                    "points": problem.ledger,
                    "updated_at": now,
                }
            ],
            key=("chat_id", "user_id"),
            update=lambda new: {"points": new.points, "updated_at": new.updated_at},
        )
    return problems


# --- group → supergroup: rows of both ids combine -----------------------------------------


async def _keep_colliding_entries(session: AsyncSession, old_id: int, new_id: int) -> None:
    """Before a migration moves the ledger: suffix the old chat's keys that the new chat has.

    Both rows stay (the ledger keeps every change; e.g. a first-of-day bonus recorded under
    each id on the day of the migration) and the balances, added up, still equal the sums.
    """
    taken = select(LEDGER.c.source, LEDGER.c.source_key).where(LEDGER.c.chat_id == new_id)
    suffix = f"@{old_id}"
    await session.execute(
        update(LEDGER)
        .where(
            LEDGER.c.chat_id == old_id,
            tuple_(LEDGER.c.source, LEDGER.c.source_key).in_(taken),
        )
        .values(
            source_key=func.substr(LEDGER.c.source_key, 1, MAX_SOURCE_KEY - len(suffix)) + suffix
        )
    )


def _merge_balance(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    return {
        **new,
        "points": old["points"] + new["points"],
        "updated_at": max(old["updated_at"], new["updated_at"]),
    }


register_migration_hook(_keep_colliding_entries)
register_migration_merge(PointsBalance.__tablename__, _merge_balance)
