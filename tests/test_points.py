"""The points ledger (exactly once, never below zero, balances = ledger) and /points."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from bot import points
from bot.cli import main as cli_main
from bot.db import create_engine, make_sessionmaker, upgrade_database
from bot.models import Chat
from bot.points import PointsBalance, PointsLedger, Spend
from tests import factories as f
from tests.conftest import both_databases
from tests.test_checkins import ADMIN, ALICE, BOB, GROUP, assert_ledger_matches_balances, say
from tests.test_checkins import setup_group as setup_checkin_group

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


async def add_chat(db, chat_id: int = GROUP["id"]) -> None:
    async with db.begin() as session:
        session.add(Chat(id=chat_id, type="supergroup", created_at=T0, updated_at=T0))


def entry(key: str, amount: int = 10, user_id: int = 1, **extra):
    return {
        "chat_id": GROUP["id"],
        "user_id": user_id,
        "amount": amount,
        "reason": "test",
        "source": "test",
        "source_key": key,
        "now": T0,
        **extra,
    }


# --- the ledger API ------------------------------------------------------------------------


@both_databases
async def test_award_is_exactly_once_per_source_key(engine):
    db = make_sessionmaker(engine)
    await add_chat(db)
    async with db.begin() as session:
        assert await points.award(session, **entry("a", 10)) is True
        assert await points.award(session, **entry("a", 99)) is False  # same key: nothing
        assert await points.award(session, **entry("b", -3)) is True  # a penalty
        assert await points.award(session, **{**entry("a", 5), "source": "quiz"}) is True
    async with db() as session:
        assert await points.balance(session, chat_id=GROUP["id"], user_id=1) == 12
        rows = await session.scalar(select(func.count()).select_from(PointsLedger))
        assert rows == 3
        assert await points.audit(session) == []
    async with db.begin() as session:
        with pytest.raises(ValueError):
            await points.award(session, **entry("zero", 0))
        with pytest.raises(ValueError):
            await points.spend(session, **entry("negative", -5))


@both_databases
async def test_spend_never_goes_below_zero_and_writes_nothing_when_refused(engine):
    db = make_sessionmaker(engine)
    await add_chat(db)
    async with db.begin() as session:
        assert await points.spend(session, **entry("s0", 1)) is Spend.INSUFFICIENT  # no balance
        await points.award(session, **entry("earn", 50))
        assert await points.spend(session, **entry("s1", 51)) is Spend.INSUFFICIENT
        assert await points.spend(session, **entry("s1", 50)) is Spend.SPENT  # key reusable
        assert await points.spend(session, **entry("s1", 50)) is Spend.DUPLICATE
    async with db() as session:
        assert await points.balance(session, chat_id=GROUP["id"], user_id=1) == 0
        keys = await session.scalars(select(PointsLedger.source_key).order_by(PointsLedger.id))
        assert list(keys) == ["earn", "s1"]
        assert await points.audit(session) == []


@both_databases
async def test_concurrent_spends_cannot_overdraw(engine):
    db = make_sessionmaker(engine)
    await add_chat(db)
    async with db.begin() as session:
        await points.award(session, **entry("earn", 100))

    async def attempt(key: str) -> Spend:
        async with db.begin() as session:
            outcome = await points.spend(session, **entry(key, 60))
            await asyncio.sleep(0.01)  # hold the transaction open while the others try
            return outcome

    outcomes = await asyncio.gather(*(attempt(f"lottery:{n}") for n in range(6)))
    assert sorted(outcomes) == sorted([Spend.SPENT] + [Spend.INSUFFICIENT] * 5)
    async with db() as session:
        assert await points.balance(session, chat_id=GROUP["id"], user_id=1) == 40
        assert await points.audit(session) == []


@both_databases
async def test_leaderboard_rank_and_period_totals(engine):
    db = make_sessionmaker(engine)
    await add_chat(db)
    async with db.begin() as session:
        await points.award(session, **entry("1", 30, user_id=1))
        await points.award(session, **entry("2", 50, user_id=2))
        await points.award(session, **entry("3", 30, user_id=3, now=T0 + timedelta(hours=1)))
        await points.award(session, **entry("4", 5, user_id=1, now=T0 + timedelta(days=2)))
        await points.spend(session, **entry("5", 20, user_id=2, now=T0 + timedelta(days=2)))
    async with db() as session:
        board = await points.leaderboard(session, chat_id=GROUP["id"])
        assert [(s.user_id, s.points) for s in board] == [(1, 35), (3, 30), (2, 30)]
        assert await points.rank(session, chat_id=GROUP["id"], user_id=3) == 2
        assert await points.rank(session, chat_id=GROUP["id"], user_id=2) == 2  # a tie
        assert await points.rank(session, chat_id=GROUP["id"], user_id=9) is None
        recent = await points.leaderboard(
            session, chat_id=GROUP["id"], since=T0 + timedelta(days=1)
        )
        assert [(s.user_id, s.points) for s in recent] == [(1, 5)]  # user 2 is net negative
        since = T0 + timedelta(days=1)
        assert (
            await points.points_since(session, chat_id=GROUP["id"], user_id=2, since=since) == -20
        )
        assert await points.balances(session, chat_id=GROUP["id"], user_ids=[1, 9]) == {
            1: 35,
            9: 0,
        }
        assert [
            e.source_key for e in await points.history(session, chat_id=GROUP["id"], user_id=1)
        ] == ["4", "1"]


@both_databases
async def test_audit_finds_and_rebuild_fixes_balances_that_drifted(engine):
    db = make_sessionmaker(engine)
    await add_chat(db)
    async with db.begin() as session:
        await points.award(session, **entry("1", 30, user_id=1))
        await points.award(session, **entry("2", 20, user_id=2))
        await session.execute(
            update(PointsBalance).where(PointsBalance.user_id == 1).values(points=7)
        )
    async with db.begin() as session:
        problems = await points.audit(session)
        assert [(p.user_id, p.balance, p.ledger) for p in problems] == [(1, 7, 30)]
        await points.rebuild_balances(session, chat_id=GROUP["id"], now=T0)
    async with db() as session:
        assert await points.audit(session) == []
        assert await points.balance(session, chat_id=GROUP["id"], user_id=1) == 30


def test_cli_points_audit(tmp_path, monkeypatch, capsys):
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    upgrade_database(url)
    monkeypatch.setenv("DATABASE_URL", url)

    async def prepare() -> None:
        engine = create_engine(url)
        db = make_sessionmaker(engine)
        await add_chat(db)
        async with db.begin() as session:
            await points.award(session, **entry("1", 30))
            await session.execute(update(PointsBalance).values(points=1))
        await engine.dispose()

    asyncio.run(prepare())
    assert cli_main(["points", "audit"]) == 1
    assert "balance 1, ledger 30" in capsys.readouterr().out
    assert cli_main(["points", "audit", "--fix"]) == 0
    assert cli_main(["points", "audit", "--chat", str(GROUP["id"])]) == 0
    assert "every balance equals its ledger" in capsys.readouterr().out


# --- /points -------------------------------------------------------------------------------


async def points_of(tg, user) -> int:
    async with tg.db() as session:
        return await points.balance(session, chat_id=GROUP["id"], user_id=user["id"])


async def test_operator_grants_and_deducts_and_it_is_logged(tg):
    await setup_checkin_group(tg)
    await say(tg, ALICE, "签到")  # Alice is in the roster now (+15)
    text = await say(tg, ADMIN, "/points +50 @alice hosted the <quiz>")
    assert "Alice: +50 points — hosted the &lt;quiz&gt;. Balance: 65." in text
    request = f.message(GROUP, ADMIN, "/points -20", date=tg.now())
    request["message"]["reply_to_message"] = f.message_dict(GROUP, BOB, "spam", date=tg.now())
    await tg.feed(request)
    assert "Bob &lt;b&gt;: -20 points" not in tg.api.sent_texts()[-1]
    assert "is only 0" in tg.api.sent_texts()[-1]
    assert "Alice: -15 points. Balance: 50." in await say(tg, ADMIN, "/points @alice -15")
    assert "Balance of Alice: 50." in await say(tg, ADMIN, "/points @alice")
    async with tg.db() as session:
        grants = list(
            await session.scalars(
                select(PointsLedger)
                .where(PointsLedger.source == "admin")
                .order_by(PointsLedger.id)
            )
        )
    assert [(g.amount, g.reason, g.actor_id) for g in grants] == [
        (50, "hosted the <quiz>", ADMIN["id"]),
        (-15, "operator adjustment", ADMIN["id"]),
    ]
    await assert_ledger_matches_balances(tg)


async def test_a_replayed_grant_is_recorded_once(tg):
    await setup_checkin_group(tg)
    await say(tg, ALICE, "签到")
    grant = f.message(GROUP, ADMIN, "/points +40 @alice", date=tg.now())
    await tg.feed(grant, copy.deepcopy(grant))
    assert "already recorded" in tg.api.sent_texts()[-1]
    assert await points_of(tg, ALICE) == 55


async def test_points_bad_arguments(tg):
    await setup_checkin_group(tg)
    await say(tg, ALICE, "签到")
    cases = {
        "/points": "/points +50 @user reason",
        "/points +50": "Whom do you mean?",
        "/points +50 @nobody": "Whom do you mean?",
        "/points @alice lots": "<code>lots</code> is not an amount",
        "/points 0 @alice": "from 1 to 1000000",
        "/points +5000000 @alice": "from 1 to 1000000",
    }
    for command, expected in cases.items():
        text = await say(tg, ADMIN, command)
        assert expected in text, (command, text)
    request = f.message(GROUP, ADMIN, "/points +5", date=tg.now())
    helper = f.user(77, "<Helper>", is_bot=True)
    request["message"]["reply_to_message"] = f.message_dict(GROUP, helper, "hi", date=tg.now())
    await tg.feed(request)
    assert "&lt;Helper&gt; is not a member who can hold points" in tg.api.sent_texts()[-1]
    assert "Only the group's operators" in await say(tg, ALICE, "/points +500 @alice")
    assert await points_of(tg, ALICE) == 15


async def test_points_from_a_private_chat_via_groups(tg):
    await setup_checkin_group(tg)
    await say(tg, ALICE, "签到")
    await tg.flush()
    chat = f.private(ADMIN)
    await tg.feed(f.callback(ADMIN, f"groups:{GROUP['id']}", chat=chat, date=tg.now()))
    await tg.feed(f.message(chat, ADMIN, f"/points +5 {ALICE['id']} thanks", date=tg.now()))
    assert "Alice: +5 points — thanks. Balance: 20." in tg.api.sent_texts(ADMIN["id"])[-1]


# --- a group becoming a supergroup ---------------------------------------------------------


@both_databases
async def test_points_and_check_ins_follow_a_migration(tg):
    old = f.group(-4000001, "Small", type="group")
    new = f.group(-1004000001, "Small", type="supergroup")
    await setup_checkin_group(tg, chat=old)
    await say(tg, ALICE, "签到", chat=old)  # 15: first of the day in the old group
    await say(tg, BOB, "签到", chat=old)  # 10
    # Messages to the new supergroup processed before the migration is: Bob is "first" there,
    # and Alice checks in again — the same ledger keys recorded under both ids.
    await say(tg, BOB, "签到", chat=new)  # 15
    await say(tg, ALICE, "签到", chat=new)  # 10
    await tg.feed(
        f.message(old, ADMIN, None, date=tg.now(), migrate_to_chat_id=new["id"]),
        f.message(new, ADMIN, None, date=tg.now(), migrate_from_chat_id=old["id"]),
    )
    assert "already" in await say(tg, ALICE, "签到", chat=new)
    async with tg.db() as session:
        assert await points.balance(session, chat_id=new["id"], user_id=ALICE["id"]) == 25
        assert await points.balance(session, chat_id=new["id"], user_id=BOB["id"]) == 25
        assert await points.audit(session) == []
        rows = list(await session.scalars(select(PointsLedger).order_by(PointsLedger.id)))
    assert {r.chat_id for r in rows} == {new["id"]} and len(rows) == 6
    firsts = sorted((r.user_id, r.source_key) for r in rows if r.source == "checkin_first")
    day = "2026-11-25"  # the local day of the harness's clock in Shanghai
    checkins = sorted(r.source_key for r in rows if r.source == "checkin" and r.user_id == 20)
    assert checkins == [f"20:{day}", f"20:{day}@{old['id']}"]
    assert firsts == [(ALICE["id"], f"{day}@{old['id']}"), (BOB["id"], day)]
