"""KPI definitions (DESIGN.md §4) on a small history with hand-computed answers, the
activity state they rely on, time-zone day boundaries, and the CSV/JSON export."""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from bot import kpi
from bot.activity import MASK_DAYS, fold_day, merge_states
from bot.kpi_export import export, render
from bot.models import ChatDay, DailyActivity, Member
from tests import factories as f
from tests.conftest import both_databases
from tests.kpi_history import (
    CHAT_ID,
    EXPECTED,
    GROUP,
    RETENTION,
    TOP_0_10,
    TOP_DAY_3,
    add_bot,
    at,
    day,
    feed_history,
)

UTC_ZONE = ZoneInfo("UTC")
DEFAULTS = {
    "messages": 0,
    "dau": 0,
    "joins": 0,
    "leaves": 0,
    "checkins": 0,
    "checkin_rate": 0.0,
    "participation": 0.0,
}


def expected_row(n: int) -> dict:
    values = {**DEFAULTS, **EXPECTED[n]}
    values.setdefault("net", values["joins"] - values["leaves"])
    return values


@both_databases
async def test_every_kpi_matches_the_hand_computed_history(tg):
    await add_bot(tg)
    await feed_history(tg)
    today = day(40)
    async with tg.db() as session:
        rows = await kpi.daily_kpis(session, CHAT_ID, day(0), day(39), today=today, tz=UTC_ZONE)
    by_day = {(r.day - day(0)).days: r for r in rows}
    assert len(rows) == 40 and rows[0].day == day(0) and rows[-1].day == day(39)
    for n in EXPECTED:
        row, want = by_day[n], expected_row(n)
        for metric, value in want.items():
            assert row.value(metric) == pytest.approx(value), (n, metric)
        if "stickiness" not in want:
            assert row.stickiness == pytest.approx(kpi.ratio(row.dau, row.mau))
    for n, row in by_day.items():
        assert (row.retention_d1, row.retention_d7, row.retention_d30) == RETENTION.get(
            n, (None, None, None)
        ), n
        assert not row.partial
    async with tg.db() as session:
        top = await kpi.top_contributors(session, CHAT_ID, day(0), day(10), 10)
        top_day = await kpi.top_contributors(session, CHAT_ID, day(3), day(3), 10)
    assert [(c.user_id, c.messages) for c in top] == TOP_0_10
    assert [(c.user_id, c.messages) for c in top_day] == TOP_DAY_3
    assert top[0].name == "Ann <b>"  # stored raw; escaped where rendered


@both_databases
async def test_retention_is_null_until_measurable(tg):
    await add_bot(tg)
    await feed_history(tg)
    async with tg.db() as session:
        on_day_5 = await kpi.cohorts(session, CHAT_ID, [day(0), day(2), day(7)], day(5))
        on_day_8 = await kpi.cohorts(session, CHAT_ID, [day(0), day(7)], day(8))
        on_day_31 = await kpi.cohorts(session, CHAT_ID, [day(0), day(1)], day(31))
    # Day 5 is "today": D1 of cohort 0 (day 1) and of cohort 2 (day 3) are over, D7s are not.
    assert [on_day_5[day(0)].rate(m) for m in kpi.RETENTION_DAYS] == [0.5, None, None]
    assert [on_day_5[day(2)].rate(m) for m in kpi.RETENTION_DAYS] == [1.0, None, None]
    assert [on_day_5[day(7)].rate(m) for m in kpi.RETENTION_DAYS] == [None, None, None]
    assert on_day_8[day(0)].rate("retention_d7") == 0.5  # day 7 is over on day 8
    assert on_day_8[day(7)].rate("retention_d1") is None  # day 8 is not
    assert on_day_31[day(0)].rate("retention_d30") == 1.0
    assert on_day_31[day(1)].size == 0 and on_day_31[day(1)].rate("retention_d1") is None


async def test_one_day_snapshot_reports_the_cohorts_that_just_closed(tg):
    await add_bot(tg)
    await feed_history(tg)
    async with tg.db() as session:
        on_3 = await kpi.day_snapshot(session, CHAT_ID, day(3), today=day(40), tz=UTC_ZONE)
        on_9 = await kpi.day_snapshot(session, CHAT_ID, day(9), today=day(40), tz=UTC_ZONE)
        on_30 = await kpi.day_snapshot(session, CHAT_ID, day(30), today=day(31), tz=UTC_ZONE)
    # Day 3 closes D1 of cohort day 2 (D: 1.0); day 9 closes D7 of cohort day 2 (1.0) and
    # D1 of cohort day 8 (nobody joined: None); day 30 closes D30 of cohort day 0 (1.0).
    assert on_3.get("retention_d1") == 1.0 and on_3.get("dau") == 2
    assert on_9.get("retention_d7") == 1.0 and on_9.get("retention_d1") is None
    assert on_30.get("retention_d30") == 1.0
    assert on_9.get("stickiness") == pytest.approx(0.4)


async def test_period_snapshot_combines_days_as_documented(tg):
    await add_bot(tg)
    await feed_history(tg)
    async with tg.db() as session:
        week = await kpi.period_snapshot(
            session, CHAT_ID, day(7), day(13), today=day(40), tz=UTC_ZONE
        )
    # Days 7..13: messages 0+3+1+1 = 5; DAU 0,2,2,1,0,0,0 → average 5/7; WAU/MAU of day 13:
    # WAU days 7..13 = C E A B → 4; MAU days -16..13 = 5. Check-ins 2 over 5 active member-days.
    assert week.get("messages") == 5
    assert week.get("dau") == pytest.approx(5 / 7)
    assert (week.get("wau"), week.get("mau")) == (4, 5)
    assert week.get("stickiness") == pytest.approx((5 / 7) / 5)
    assert week.get("joins") == 2 and week.get("net") == 2
    assert week.get("checkin_rate") == pytest.approx(2 / 5)
    assert week.get("participation") == pytest.approx(3 / 5)
    # Retention pooled over the cohort of day 7 (the only one in the week): E of {E, F}.
    assert week.get("retention_d1") == 0.5


@both_databases
async def test_activity_state_and_rollups_give_the_same_counts(tg):
    """WAU/MAU come from the roster's bit masks for recent days and from the rollups for old
    ones; both must equal the hand-computed values on every day."""
    await add_bot(tg)
    await feed_history(tg)
    async with tg.db() as session:
        from_state = await kpi._series_from_state(session, CHAT_ID, day(0), day(39))
        from_rollups = await kpi._series_from_rollups(session, CHAT_ID, day(0), day(39))
        singles = [await kpi._one_day_from_state(session, CHAT_ID, day(n)) for n in range(40)]
    assert from_state == from_rollups == singles
    for n, want in EXPECTED.items():
        dau, wau, mau = from_state[n]
        assert dau == expected_row(n)["dau"]
        if "wau" in want:
            assert wau == want["wau"], n
        if "mau" in want:
            assert mau == want["mau"], n


@both_databases
async def test_day_totals_match_the_member_rollups(tg):
    await add_bot(tg)
    await feed_history(tg)
    async with tg.db() as session:
        totals = {
            row.day: (
                row.messages,
                row.active,
                row.joins,
                row.leaves,
                row.checkins,
                row.participants,
            )
            for row in await session.scalars(select(ChatDay).where(ChatDay.chat_id == CHAT_ID))
        }
        rollups = (
            await session.execute(
                select(
                    DailyActivity.day,
                    func.sum(DailyActivity.messages),
                    func.sum(kpi._flag(kpi.ACTIVE)),
                    func.sum(DailyActivity.joins),
                    func.sum(DailyActivity.leaves),
                    func.sum(kpi._flag(DailyActivity.checked_in)),
                    func.sum(kpi._flag(kpi.PARTICIPATED)),
                )
                .where(DailyActivity.chat_id == CHAT_ID)
                .group_by(DailyActivity.day)
            )
        ).all()
    assert totals == {r[0]: tuple(int(v) for v in r[1:]) for r in rollups}


@both_databases
async def test_participation_flags_count_once(tg):
    await add_bot(tg)
    await feed_history(tg)
    from bot.activity import mark_participation

    async with tg.services.db.begin() as session:
        for kind in ("checked_in", "checked_in", "poll_answered"):
            await mark_participation(
                session,
                chat_id=CHAT_ID,
                user_id=105,
                name="Eve",
                username=None,
                when=at(9, 21),
                day=day(9),
                kind=kind,
            )
    async with tg.db() as session:
        (row,) = await kpi.daily_kpis(session, CHAT_ID, day(9), day(9), today=day(40), tz=UTC_ZONE)
    assert (row.checkins, row.participants, row.dau) == (2, 2, 2)


# --- the activity state -----------------------------------------------------------------


def brute_state(days: list[int]) -> tuple[int | None, int]:
    if not days:
        return None, 0
    last = max(days)
    return last, sum(1 << (last - d) for d in set(days) if last - d < MASK_DAYS)


def test_fold_and_merge_agree_with_a_brute_force_mask():
    rng = random.Random(3)
    for _ in range(500):
        days = [rng.randint(700_000, 700_100) for _ in range(rng.randint(0, 12))]
        state: tuple[int | None, int] = (None, 0)
        for d in days:
            state = fold_day(state[0], state[1], d)
        assert state == brute_state(days)
        split = rng.randint(0, len(days))
        left, right = brute_state(days[:split]), brute_state(days[split:])
        assert merge_states(*left, *right) == brute_state(days)


@both_databases
async def test_flush_keeps_the_state_for_messages_in_any_order(tg):
    """Late messages (queued while down, stamped days ago) and several days in one batch."""
    await add_bot(tg)
    member = f.user(7, "Late")
    stamps = [at(30), at(3), at(29, 23), at(31), at(2), at(30, 1)]
    expected_days = sorted({(s.date() - day(0)).days + day(0).toordinal() for s in stamps})
    for index, stamp in enumerate(stamps):
        await tg.feed(f.message(GROUP, member, "late", date=stamp))
        if index == 2:
            await tg.flush()  # two batches: the SQL merge and the in-batch fold both run
    await tg.flush()
    async with tg.db() as session:
        row = await session.get(Member, (CHAT_ID, 7))
    assert (row.active_day, row.active_mask) == brute_state(expected_days)


@both_databases
async def test_migration_merges_state_and_totals(tg):
    old = f.group(-4001, "Old", type="group")
    new = f.group(-1004001, "Old", type="supergroup")
    await add_bot(tg, old)
    await tg.feed(f.message(old, f.user(7), "a", date=at(1)))
    await tg.flush()
    await tg.services.chats.ensure(new["id"], type="supergroup", title="Old")
    await tg.feed(f.message(new, f.user(7), "b", date=at(3)))
    await tg.feed(f.message(new, f.user(7), "c", date=at(1, 13)))
    await tg.flush()
    await tg.feed(
        f.message(old, None, None, date=at(3), migrate_to_chat_id=new["id"], **{"from": f.user(7)})
    )
    async with tg.db() as session:
        member = await session.get(Member, (new["id"], 7))
        totals = await session.get(ChatDay, (new["id"], day(1)))
    assert (member.active_day, member.active_mask) == brute_state(
        [day(1).toordinal(), day(3).toordinal()]
    )
    assert totals.messages == 2


# --- time zones ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "stamps", "days"),
    [
        # 15:59 UTC is 23:59 in Shanghai; 16:00 UTC is already the next day there.
        (
            "Asia/Shanghai",
            ["2026-11-02T15:59:00", "2026-11-02T16:00:00"],
            ["2026-11-02", "2026-11-03"],
        ),
        # New York leaves DST on 2026-11-01: 03:30 UTC is 23:30 EDT (Oct 31), 05:30 UTC is
        # 00:30 EST (Nov 1); 04:59 UTC on Nov 2 is 23:59 EST on Nov 1.
        (
            "America/New_York",
            ["2026-11-01T03:30:00", "2026-11-01T05:30:00", "2026-11-02T04:59:00"],
            ["2026-10-31", "2026-11-01", "2026-11-01"],
        ),
    ],
)
async def test_days_are_chat_local(tg, zone, stamps, days):
    await add_bot(tg)
    await tg.services.chats.update_settings(CHAT_ID, timezone=zone)
    for index, stamp in enumerate(stamps):
        moment = datetime.fromisoformat(stamp).replace(tzinfo=UTC)
        await tg.feed(f.message(GROUP, f.user(200 + index), "hi", date=moment))
    await tg.flush()
    first, last = date.fromisoformat(min(days)), date.fromisoformat(max(days))
    async with tg.db() as session:
        rows = await kpi.daily_kpis(
            session, CHAT_ID, first, last, today=last + timedelta(days=1), tz=ZoneInfo(zone)
        )
    counts = {r.day.isoformat(): r.messages for r in rows}
    assert counts == {d: days.count(d) for d in counts}
    assert {r.day.isoformat(): r.dau for r in rows} == counts


async def test_partial_days_before_the_bot_saw_everything(tg):
    tg.clock.set(at(5, 10))
    await tg.feed(f.my_chat_member(GROUP, ADMIN_USER, "left", "member", date=tg.now()))
    async with tg.db() as session:
        rows = await kpi.daily_kpis(session, CHAT_ID, day(4), day(8), today=day(9), tz=UTC_ZONE)
    assert all(r.partial for r in rows)  # privacy mode, not an admin: never complete
    tg.clock.set(at(6, 10))
    await tg.feed(f.my_chat_member(GROUP, ADMIN_USER, "member", "administrator", date=tg.now()))
    async with tg.db() as session:
        rows = await kpi.daily_kpis(session, CHAT_ID, day(4), day(8), today=day(9), tz=UTC_ZONE)
    # Admin since day 6, 10:00: day 6 itself is partial, day 7 on are complete.
    assert [r.partial for r in rows] == [True, True, True, False, False]


ADMIN_USER = f.user(10, "Ada")


# --- export ---------------------------------------------------------------------------------

KEYS = [
    "date",
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
]


async def test_json_and_csv_export(tg, database_url):
    await add_bot(tg)
    await feed_history(tg)
    now = at(12, 10)
    output = await export(database_url, CHAT_ID, days=11, end=day(10), fmt="json", now=now)
    records = json.loads(output)
    assert [r["date"] for r in records] == [day(n).isoformat() for n in range(11)]
    assert all(list(r)[: len(KEYS)] == KEYS for r in records)
    assert records[9]["dau"] == 2 and records[9]["checkin_rate"] == 1.0
    assert records[8]["stickiness"] == pytest.approx(0.4)
    # Today is day 12: D1 of day 10's cohort closed on day 11, D7 of day 0 on day 7; cohort
    # day 7's D7 window (until day 14) is still open → null.
    assert records[0]["retention_d7"] == 0.5 and records[0]["retention_d30"] is None
    assert records[7]["retention_d1"] == 0.5 and records[7]["retention_d7"] is None
    assert records[1]["retention_d1"] is None  # nobody joined on day 1
    assert all(isinstance(r["stickiness"], float) for r in records)

    text = await export(database_url, CHAT_ID, days=11, end=day(10), fmt="csv", now=now)
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == 11 and list(table[0])[: len(KEYS)] == KEYS
    assert table[9]["messages"] == "1" and table[1]["retention_d1"] == ""
    assert float(table[0]["retention_d1"]) == 0.5

    plain = await export(database_url, CHAT_ID, days=3, end=day(10), fmt="table", now=now)
    lines = plain.strip().splitlines()
    assert len(lines) == 4 and lines[0].split()[:3] == ["date", "messages", "dau"]


async def test_export_of_an_unknown_chat(database_url, engine):
    with pytest.raises(LookupError):
        await export(database_url, -1, days=3, end=None, fmt="json", now=at(0))


def test_render_of_no_rows_is_an_empty_array():
    assert json.loads(render([], "json")) == []
