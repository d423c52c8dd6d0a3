"""/stats, /kpi, /settarget, /targets, the `kpi` command line, and the migration backfill."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import date

from sqlalchemy import select

from bot.db import upgrade_database_async
from bot.kpi import KpiTarget
from handlers.kpi import parse_period
from tests import factories as f
from tests.kpi_history import ADMIN, CHAT_ID, GROUP, add_bot, at, day, feed_history
from tests.test_cli import cli

MEMBER = f.user(55, "Max")


async def test_stats_for_anyone_today_so_far(tg):
    await add_bot(tg)
    await feed_history(tg)
    tg.clock.set(at(9, 23))
    tg.api.clear()
    await tg.feed(f.message(GROUP, MEMBER, "/stats", date=tg.now()))  # buffered, then flushed
    (text,) = tg.api.sent_texts(CHAT_ID)
    # Day 9: A wrote 1 and checked in, E checked in, Max's /stats is a message too.
    assert "Today so far" in text and "2026-11-11" in text
    assert "Messages: <b>2</b>" in text
    assert "Active members: <b>3</b>" in text
    assert "Check-ins: <b>2</b>" in text and "New members: <b>0</b>" in text


async def test_stats_in_private_points_to_a_group(tg):
    await tg.feed(f.message(f.private(MEMBER), MEMBER, "/stats", date=tg.now()))
    assert "in a group" in tg.api.sent_texts()[0]


async def test_kpi_compares_with_the_previous_period(tg):
    await add_bot(tg)
    await feed_history(tg)
    tg.clock.set(at(14, 10))  # today is day 14: the last 7 complete days are 7..13
    tg.api.clear()
    await tg.feed(f.message(GROUP, ADMIN, "/kpi", date=tg.now()))
    (text,) = tg.api.sent_texts(CHAT_ID)
    assert "2026-11-09 – 2026-11-15 (7 days), compared with 2026-11-02 – 2026-11-08" in text
    # Messages 5 vs 11; joins 2 vs 3; average DAU 5/7 vs 7/7.
    assert "Messages: <b>5</b> · ▼55% vs prev." in text
    assert "Joined: <b>2</b> · ▼33% vs prev." in text
    assert "Active members (DAU): <b>0.7</b> · ▼29% vs prev." in text
    assert "Content sent: <b>0</b>" in text and "Poll turnout: <b>—</b>" in text
    assert "Top contributors" in text and "1. Eve — 2" in text  # E wrote 2 on day 8
    tg.api.clear()
    await tg.feed(f.message(GROUP, ADMIN, "/kpi 2026-11-02..2026-11-04", date=tg.now()))
    assert "2026-11-02 – 2026-11-04 (3 days)" in tg.api.sent_texts(CHAT_ID)[0]
    await tg.feed(f.message(GROUP, ADMIN, "/kpi yesterday-ish", date=tg.now()))
    assert "/kpi 30d" in tg.api.sent_texts(CHAT_ID)[-1]
    await tg.feed(f.message(GROUP, MEMBER, "/kpi", date=tg.now()))
    assert "Only the group's operators" in tg.api.sent_texts(CHAT_ID)[-1]


def test_period_forms():
    today = date(2026, 11, 20)
    assert parse_period([], today) == (date(2026, 11, 13), date(2026, 11, 19))
    assert parse_period(["30d"], today) == (date(2026, 10, 21), date(2026, 11, 19))
    assert parse_period(["2026-11-01..2026-11-05"], today) == (
        date(2026, 11, 1),
        date(2026, 11, 5),
    )
    assert parse_period(["2026-11-01", "2026-11-05"], today) == (
        date(2026, 11, 1),
        date(2026, 11, 5),
    )
    assert parse_period(["2026-11-05..2026-11-01"], today) is None
    assert parse_period(["2026-11-01..2026-11-25"], today) is None  # the future
    assert parse_period(["0d"], today) is None and parse_period(["week"], today) is None


async def test_settarget_and_targets(tg):
    await add_bot(tg)
    await feed_history(tg)
    tg.clock.set(at(10, 8))  # yesterday = day 9: DAU 2, check-ins 2, D7 retention 1.0
    for command in (
        "/settarget dau 4",
        "/settarget retention_d7 35%",
        "/settarget checkins 80",
        "/settarget checkin_rate 2",
        "/settarget sparkle 3",
        "/settarget dau",
    ):
        await tg.feed(f.message(GROUP, ADMIN, command, date=tg.now()))
    texts = tg.api.sent_texts(CHAT_ID)
    assert "Target for Active members (DAU) set to 4" in texts[-6]
    assert "set to 35.0%" in texts[-5]
    assert "not a valid target" in texts[-3] and "Usage" in texts[-2] and "Usage" in texts[-1]
    async with tg.db() as session:
        stored = dict((await session.execute(select(KpiTarget.metric, KpiTarget.value))).all())
    assert stored == {"dau": 4.0, "retention_d7": 0.35, "checkins": 80.0}
    await tg.feed(f.message(GROUP, ADMIN, "/targets", date=tg.now()))
    text = tg.api.sent_texts(CHAT_ID)[-1]
    assert "Active members (DAU): actual 2 / target 4 — <b>50%</b>" in text
    assert "Check-ins: actual 2 / target 80 — <b>2%</b>" in text
    assert "Retention D7: actual 100.0% / target 35.0% — <b>286%</b>" in text
    await tg.feed(f.message(GROUP, ADMIN, "/settarget checkins off", date=tg.now()))
    assert "removed" in tg.api.sent_texts(CHAT_ID)[-1]
    await tg.feed(f.message(GROUP, MEMBER, "/settarget dau 1", date=tg.now()))
    assert "Only the group's operators" in tg.api.sent_texts(CHAT_ID)[-1]


async def test_targets_when_none(tg):
    await add_bot(tg)
    await tg.feed(f.message(GROUP, ADMIN, "/targets", date=tg.now()))
    assert "/settarget dau 200" in tg.api.sent_texts(CHAT_ID)[-1]


async def test_cli_kpi_prints_json_csv_and_table(tg, database_url, tmp_path):
    await add_bot(tg)
    await feed_history(tg)
    env = {"DATABASE_URL": database_url}
    result = cli(
        "kpi",
        str(CHAT_ID),
        "--days",
        "3",
        "--end",
        "2026-11-11",
        "--format",
        "json",
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert [r["date"] for r in records] == ["2026-11-09", "2026-11-10", "2026-11-11"]
    assert [r["messages"] for r in records] == [0, 3, 1]
    assert records[2]["wau"] == 5 and records[2]["participation"] == 1.0
    assert records[0]["retention_d1"] == 0.5  # cohort of day 7 (E, F): measured long since
    csv_out = cli(
        "kpi",
        str(CHAT_ID),
        "--days",
        "2",
        "--end",
        "2026-11-11",
        "--format",
        "csv",
        cwd=tmp_path,
        env=env,
    )
    assert csv_out.stdout.splitlines()[0].startswith("date,messages,dau,wau,mau,stickiness")
    assert len(csv_out.stdout.splitlines()) == 3
    table = cli("kpi", str(CHAT_ID), "--days", "2", "--end", "2026-11-11", cwd=tmp_path, env=env)
    assert table.returncode == 0 and "stickiness" in table.stdout.splitlines()[0]
    missing = cli("kpi", "-42", cwd=tmp_path, env=env)
    assert missing.returncode == 2 and "no group" in missing.stderr


async def test_upgrade_backfills_state_and_totals_from_existing_rollups(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    from alembic import command

    from bot.db import alembic_config

    await asyncio.to_thread(command.upgrade, alembic_config(url), "0001_core")
    with sqlite3.connect(tmp_path / "old.db") as db:
        db.execute(
            "INSERT INTO chat (id, type, title, timezone, language, active, bot_status,"
            " can_delete, can_restrict, can_pin, can_invite, sees_all_messages, created_at,"
            " updated_at)"
            " VALUES (-5, 'supergroup', 'g', 'UTC', 'en', 1, 'member', 0, 0, 0, 0, 0,"
            " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
        )
        db.execute(
            "INSERT INTO member (chat_id, user_id, display_name, status, first_seen,"
            " message_count) VALUES (-5, 1, 'x', 'member', '2026-01-01 00:00:00', 3)"
        )
        rows = [
            (-5, 1, "2026-11-02", 2, 0, 1, 0, 0, 0, 0),
            (-5, 1, "2026-11-04", 0, 0, 0, 0, 1, 0, 0),
            (-5, 1, "2026-11-05", 0, 0, 0, 1, 0, 0, 0),  # a leave only: not active
        ]
        db.executemany(
            "INSERT INTO daily_activity (chat_id, user_id, day, messages, edits, joins, leaves,"
            " checked_in, poll_answered, lottery_entered) VALUES (?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
    await upgrade_database_async(url)
    with sqlite3.connect(tmp_path / "old.db") as db:
        state = db.execute("SELECT active_day, active_mask FROM member").fetchone()
        totals = db.execute(
            "SELECT day, messages, active, joins, leaves, checkins, participants FROM chat_day"
            " ORDER BY day"
        ).fetchall()
    assert state == (date(2026, 11, 4).toordinal(), 0b101)
    assert totals == [
        ("2026-11-02", 2, 1, 1, 0, 0, 0),
        ("2026-11-04", 0, 1, 0, 0, 1, 1),
        ("2026-11-05", 0, 0, 0, 1, 0, 0),
    ]
    # From now on the triggers keep the totals: one more message on day 2.
    with sqlite3.connect(tmp_path / "old.db") as db:
        db.execute("UPDATE daily_activity SET messages = messages + 1 WHERE day = '2026-11-02'")
        assert db.execute(
            "SELECT messages, active FROM chat_day WHERE day = '2026-11-02'"
        ).fetchone() == (3, 1)
    assert day(0) == date(2026, 11, 2)
