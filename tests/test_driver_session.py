"""DriverSession (bot/driver_session.py): the hot paths' transactions on the driver connection
write and read exactly what an AsyncSession would, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from bot import points
from bot.checkins import CHECKIN, Checkin, CheckinDay, Rules, check_in
from bot.db import insert_for, make_sessionmaker, prepared
from bot.driver_session import driver_session
from bot.models import Chat
from bot.points import LEDGER, PointsBalance, PointsLedger
from tests.conftest import both_databases

GROUP = -100777
T0 = datetime(2026, 3, 1, 8, 30, 15, 123456, tzinfo=UTC)
TZ = ZoneInfo("Asia/Shanghai")


async def add_chat(db) -> None:
    async with db.begin() as session:
        session.add(Chat(id=GROUP, type="supergroup", created_at=T0, updated_at=T0))


def _rows(rows, *, drop: tuple[str, ...]) -> list[dict]:
    return [{k: v for k, v in row.model_dump().items() if k not in drop} for row in rows]


@both_databases
async def test_check_in_writes_what_a_session_writes(engine):
    """The same check-ins, one member through each kind of session: identical rows."""
    db = make_sessionmaker(engine)
    await add_chat(db)
    rules = Rules(first_bonus=3, base_points=5)
    for offset in range(3):  # a streak of three days, then a repeat on the last day
        when = T0 + timedelta(days=offset)
        async with db.begin() as session:
            by_session = await check_in(
                session, chat_id=GROUP, user_id=1, name="A", username="a", when=when, tz=TZ,
                rules=rules,
            )  # fmt: skip
        async with driver_session(engine) as session:
            by_driver = await check_in(
                session, chat_id=GROUP, user_id=2, name="B", username="b", when=when, tz=TZ,
                rules=rules,
            )  # fmt: skip
        assert by_driver.new and by_session.new
        assert (by_driver.day, by_driver.streak) == (by_session.day, by_session.streak)
        assert (by_session.position, by_driver.position) == (1, 2)
        assert by_driver.total == by_session.total - 3 * (offset + 1)  # no first bonus
    async with driver_session(engine) as session:
        again = await check_in(
            session, chat_id=GROUP, user_id=2, name="B", username="b", when=when, tz=TZ,
            rules=rules,
        )  # fmt: skip
    assert not again.new and again.streak == 3

    async with db() as session:
        checkins = (await session.scalars(select(Checkin).order_by(Checkin.day))).all()
        ledger = (await session.scalars(select(PointsLedger).order_by(PointsLedger.id))).all()
        balances = (await session.scalars(select(PointsBalance))).all()
        days = (await session.scalars(select(CheckinDay))).all()
    mine = {uid: [c for c in checkins if c.user_id == uid] for uid in (1, 2)}
    assert _rows(mine[1], drop=("user_id", "position")) == _rows(
        mine[2], drop=("user_id", "position")
    )
    assert [c.checked_at for c in mine[2]] == [T0 + timedelta(days=d) for d in range(3)]
    assert all(c.checked_at.tzinfo is not None for c in checkins)
    assert [c.streak for c in mine[2]] == [1, 2, 3]
    assert {c.made_up for c in checkins} == {False}
    assert [c.position for c in mine[1]] == [1, 1, 1] and [c.position for c in mine[2]] == [2] * 3
    assert [d.count for d in days] == [2, 2, 2]
    by_user = {uid: [e for e in ledger if e.user_id == uid] for uid in (1, 2)}
    # base 5 plus the streak bonus; user 1 was first each day (+3)
    assert [e.amount for e in by_user[1]] == [5, 3, 6, 3, 7, 3]
    assert [e.amount for e in by_user[2]] == [5, 6, 7]
    assert {e.created_at for e in by_user[2]} == {T0 + timedelta(days=d) for d in range(3)}
    assert {b.user_id: b.points for b in balances} == {1: 27, 2: 18}


@both_databases
async def test_defaults_results_and_counts(engine):
    """Python-side column defaults are applied; RETURNING, rowcount and empty results."""
    db = make_sessionmaker(engine)
    await add_chat(db)
    ledger = insert_for(engine.dialect.name, LEDGER).returning(LEDGER.c.id, LEDGER.c.created_at)
    async with driver_session(engine) as session:
        row = (
            await session.execute(
                ledger,
                {
                    "chat_id": GROUP,
                    "user_id": 5,
                    "amount": 2,
                    "source": "test",
                    "source_key": "k",
                    "created_at": T0,
                },
            )
        ).one()
        assert row.created_at == T0 and isinstance(row.id, int)
        changed = await session.execute(
            LEDGER.update().where(LEDGER.c.user_id == bindparam("u")).values(amount=7),
            {"u": 5},
        )
        assert changed.rowcount == 1
        nothing = await session.execute(select(LEDGER.c.id).where(LEDGER.c.user_id == 99))
        assert nothing.first() is None and nothing.scalar() is None
    async with db() as session:
        entry = await session.get(PointsLedger, row.id)
    assert (entry.amount, entry.reason, entry.actor_id) == (7, "", None)  # reason's default


@both_databases
async def test_failure_rolls_back_and_errors_are_sqlalchemys(engine):
    db = make_sessionmaker(engine)
    await add_chat(db)
    values = {
        "chat_id": GROUP,
        "user_id": 5,
        "day": date(2026, 3, 1),
        "checked_at": T0,
        "streak_start": date(2026, 3, 1),
    }
    plain = insert_for(engine.dialect.name, CHECKIN)
    with pytest.raises(IntegrityError):
        async with driver_session(engine) as session:
            await session.execute(plain, values)
            await session.execute(plain, values)  # the same key again
    with pytest.raises(RuntimeError):
        async with driver_session(engine) as session:
            await session.execute(plain, values)
            raise RuntimeError("handler failed after writing")
    async with db() as session:
        assert (await session.scalars(select(Checkin))).all() == []
    async with driver_session(engine) as session:  # the connection is usable afterwards
        await session.execute(plain, [values, {**values, "user_id": 6}])
    async with db() as session:
        assert len((await session.scalars(select(Checkin))).all()) == 2


@both_databases
async def test_prepared_statements_are_compiled_once_and_orm_calls_fail(engine):
    db = make_sessionmaker(engine)
    await add_chat(db)
    async with driver_session(engine) as session:
        first = prepared(session, "test.driver", lambda d: select(LEDGER.c.id).limit(1))
        assert prepared(session, "test.driver", lambda d: select(LEDGER.c.id)) is first
        assert (await session.execute(first)).all() == []
        with pytest.raises(NotImplementedError, match="ORM"):
            await session.get(PointsLedger, 1)
    async with driver_session(engine) as session:
        assert await points.balance(session, chat_id=GROUP, user_id=1) == 0


@both_databases
async def test_statements_built_per_call_use_their_own_values(engine):
    """Same shape, other literal values (one compiled form, SQLAlchemy's cache key); IN lists
    of any length; an ORM entity select is refused."""
    db = make_sessionmaker(engine)
    await add_chat(db)
    rows = [
        {"chat_id": GROUP, "user_id": u, "amount": u * 10, "source": "t", "source_key": str(u)}
        | {"created_at": T0}
        for u in (1, 2, 3)
    ]
    async with driver_session(engine) as session:
        await session.execute(insert_for(engine.dialect.name, LEDGER), rows)
    async with driver_session(engine, write=False) as session:
        for user in (1, 2, 3, 4):
            amount = await session.scalar(select(LEDGER.c.amount).where(LEDGER.c.user_id == user))
            assert amount == (user * 10 if user < 4 else None)
        for users in ((1,), (1, 3), (1, 2, 3), (9, 8)):
            found = await session.scalars(
                select(LEDGER.c.user_id).where(LEDGER.c.user_id.in_(users)).order_by("user_id")
            )
            assert found.all() == sorted(u for u in users if u <= 3)
        with pytest.raises(NotImplementedError, match="ORM"):
            await session.execute(select(PointsLedger))
        prepared_in = prepared(
            session,
            "test.driver_in",
            lambda d: (
                select(LEDGER.c.amount)
                .where(LEDGER.c.user_id.in_(bindparam("users", expanding=True)))
                .order_by(LEDGER.c.amount)
            ),
        )
        for users in ([2], [3, 1], [1, 2, 3, 4]):
            found = await session.scalars(prepared_in, {"users": users})
            assert found.all() == sorted(u * 10 for u in users if u <= 3)
