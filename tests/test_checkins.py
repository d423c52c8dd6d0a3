"""Daily check-ins through the real Application: keywords, days, streaks, make-ups, /me, /top."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from bot import points
from bot.checkins import Checkin, CheckinConfig
from bot.models import DailyActivity
from bot.points import PointsLedger
from handlers import checkins as checkin_handlers
from tests import factories as f
from tests.conftest import both_databases

GROUP = f.group(-1001000000001, "Check <b>Group</b>")
ADMIN = f.user(10, "Ada")
ALICE = f.user(20, "Alice", username="alice")
BOB = f.user(30, "Bob <b>", username="bob")
CAROL = f.user(40, "Carol")
SHANGHAI = "Asia/Shanghai"


def local(text: str, zone: str = SHANGHAI, *, fold: int = 0) -> datetime:
    """A chat-local wall time as an aware UTC moment."""
    naive = datetime.strptime(text, "%Y-%m-%d %H:%M")
    return naive.replace(tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC)


async def setup_group(tg, zone: str = SHANGHAI, chat=GROUP) -> None:
    await tg.feed(f.my_chat_member(chat, ADMIN, "left", "administrator", date=tg.now()))
    tg.api.set_admins(chat["id"], ADMIN)
    await tg.feed(f.message(chat, ADMIN, f"/settimezone {zone}", date=tg.now()))
    tg.api.clear()


async def say(tg, who, text: str, moment: datetime | None = None, chat=GROUP) -> str | None:
    """Send `text` at `moment` (the clock moves there too); returns the bot's reply, if any."""
    if moment is not None:
        tg.clock.set(moment)
    before = len(tg.api.sent_texts())
    await tg.feed(f.message(chat, who, text, date=tg.now()))
    texts = tg.api.sent_texts()
    return texts[-1] if len(texts) > before else None


async def checkins(tg, user_id: int) -> list[Checkin]:
    async with tg.db() as session:
        rows = await session.scalars(
            select(Checkin).where(Checkin.user_id == user_id).order_by(Checkin.day)
        )
        return list(rows)


async def balance(tg, user_id: int, chat_id: int = GROUP["id"]) -> int:
    async with tg.db() as session:
        return await points.balance(session, chat_id=chat_id, user_id=user_id)


async def ledger(tg, user_id: int | None = None) -> list[PointsLedger]:
    async with tg.db() as session:
        query = select(PointsLedger).order_by(PointsLedger.id)
        if user_id is not None:
            query = query.where(PointsLedger.user_id == user_id)
        return list(await session.scalars(query))


async def assert_ledger_matches_balances(tg) -> None:
    async with tg.db() as session:
        assert await points.audit(session) == []


async def configure(tg, *settings: str) -> None:
    for setting in settings:
        await say(tg, ADMIN, f"/checkinconfig {setting}")
    assert all("Saved" in text for text in tg.api.sent_texts()[-len(settings) :])


# --- keywords and the reply -------------------------------------------------------------------


async def test_keywords_in_chinese_and_english_check_in(tg):
    await setup_group(tg)
    assert "#1 today" in await say(tg, ALICE, "签到")
    assert "#2 today" in await say(tg, BOB, "  Check   In! ")
    assert "#3 today" in await say(tg, CAROL, "打卡！")
    assert "#4 today" in await say(tg, ADMIN, "/checkin")
    days = {c.user_id: c.day for uid in (20, 30, 40, 10) for c in await checkins(tg, uid)}
    assert days == dict.fromkeys((20, 30, 40, 10), date(2026, 11, 25))


async def test_other_texts_and_places_do_not_check_in(tg):
    await setup_group(tg)
    for text in ("签到了吗", "please check in", "checking in", "签 到 吧", "hello"):
        assert await say(tg, ALICE, text) is None
    private = f.private(ALICE)
    await tg.feed(f.message(private, ALICE, "签到", date=tg.now()))
    await tg.feed(f.message(private, ALICE, "/checkin", date=tg.now()))
    assert await checkins(tg, ALICE["id"]) == []
    assert "in the group" in tg.api.sent_texts(ALICE["id"])[-1]
    # A keyword edited into an old message is not a check-in either.
    await tg.feed(f.edited(GROUP, ALICE, "签到", date=tg.now(), edit_date=tg.now()))
    # Nor are channels, anonymous admins or bots speaking in the group.
    await tg.feed(f.message(GROUP, f.ANONYMOUS_ADMIN, "签到", date=tg.now(), sender_chat=GROUP))
    await tg.feed(f.message(GROUP, f.user(77, "Helper", is_bot=True), "签到", date=tg.now()))
    async with tg.db() as session:
        assert list(await session.scalars(select(Checkin))) == []


async def test_reply_shows_points_streak_total_and_rank_today(tg):
    await setup_group(tg)
    first = await say(tg, ALICE, "签到")
    assert "<b>Alice</b> checked in — #1 today!" in first
    assert "+15 points (base 10, first today +5)" in first
    assert "1-day streak" in first and "Points: 15" in first
    second = await say(tg, BOB, "签到")
    assert "<b>Bob &lt;b&gt;</b> checked in — #2 today!" in second  # names escaped
    assert "+10 points (base 10)" in second
    tg.clock.advance(days=1)
    await say(tg, BOB, "签到")
    assert "+16 points (base 10, streak +1, first today +5)" in tg.api.sent_texts()[-1]
    assert "2-day streak" in tg.api.sent_texts()[-1]
    assert await balance(tg, BOB["id"]) == 26


async def test_chinese_group_gets_chinese_replies(tg):
    await setup_group(tg)
    await say(tg, ADMIN, "/language zh")
    text = await say(tg, ALICE, "签到")
    assert "签到成功，今日第 1 位" in text and "获得 15 积分（基础 10，今日首签 +5）" in text
    assert "你今天已经签到过了" in await say(tg, ALICE, "打卡")


# --- exactly once ---------------------------------------------------------------------------


async def test_second_check_in_the_same_day_says_already_and_awards_nothing(tg):
    await setup_group(tg)
    await say(tg, ALICE, "签到")
    again = await say(tg, ALICE, "check in", tg.now() + timedelta(hours=3))
    assert "already checked in today" in again and "1-day streak" in again
    assert "Points: 15" in again
    assert len(await ledger(tg, ALICE["id"])) == 2  # check-in + first of the day
    assert await balance(tg, ALICE["id"]) == 15


async def test_a_replayed_update_is_handled_once(tg):
    await setup_group(tg)
    update = f.message(GROUP, ALICE, "签到", date=tg.now())
    await tg.feed(update, copy.deepcopy(update))
    assert len(await checkins(tg, ALICE["id"])) == 1
    assert await balance(tg, ALICE["id"]) == 15
    assert "already" in tg.api.sent_texts()[-1]


@both_databases
async def test_many_concurrent_check_ins_award_exactly_once(tg):
    await setup_group(tg)
    members = [f.user(1000 + n, f"M{n}") for n in range(25)]
    updates = []
    for member in members:
        tap = f.message(GROUP, member, "签到", date=tg.now())
        updates += [tap, copy.deepcopy(tap), f.message(GROUP, member, "/checkin", date=tg.now())]
    await tg.feed_concurrently(*updates)

    async with tg.db() as session:
        rows = list(await session.scalars(select(Checkin)))
        firsts = await session.scalars(
            select(PointsLedger).where(PointsLedger.source == "checkin_first")
        )
        flagged = await session.scalars(
            select(DailyActivity.user_id).where(DailyActivity.checked_in.is_(True))
        )
        assert len(list(firsts)) == 1
        assert sorted(flagged) == [m["id"] for m in members]
        assert await points.audit(session, chat_id=GROUP["id"]) == []
    assert len(rows) == len(members)
    assert sorted(r.position for r in rows) == list(range(1, len(members) + 1))
    first = next(r for r in rows if r.position == 1)
    for member in members:
        expected = 15 if member["id"] == first.user_id else 10
        assert await balance(tg, member["id"]) == expected
    texts = tg.api.sent_texts(GROUP["id"])
    assert sum("checked in —" in t for t in texts) == len(members)
    assert sum("already checked in" in t for t in texts) == 2 * len(members)


async def test_check_in_counts_as_participation_for_the_local_day(tg):
    await setup_group(tg)
    await say(tg, ALICE, "签到", local("2026-11-26 00:30"))  # UTC: 2026-11-25 16:30
    async with tg.db() as session:
        row = await session.get(DailyActivity, (GROUP["id"], ALICE["id"], date(2026, 11, 26)))
    assert row is not None and row.checked_in and row.messages == 0


# --- days, time zones, daylight saving ---------------------------------------------------------


async def test_23_59_and_00_01_local_are_two_days(tg):
    await setup_group(tg)
    await say(tg, ALICE, "签到", local("2026-11-25 23:59"))
    text = await say(tg, ALICE, "签到", local("2026-11-26 00:01"))
    assert "checked in" in text and "2-day streak" in text
    assert [c.day for c in await checkins(tg, ALICE["id"])] == [
        date(2026, 11, 25),
        date(2026, 11, 26),
    ]


async def test_00_30_local_counts_for_the_local_date_while_utc_is_the_day_before(tg):
    await setup_group(tg)
    moment = local("2026-11-26 00:30")
    assert moment.date() == date(2026, 11, 25)  # still the 25th in UTC
    await say(tg, ALICE, "签到", moment)
    assert [c.day for c in await checkins(tg, ALICE["id"])] == [date(2026, 11, 26)]
    # …and the UTC day's other half, 23:30 UTC, is the 27th in Shanghai: a new day.
    text = await say(tg, ALICE, "签到", datetime(2026, 11, 26, 16, 30, tzinfo=UTC))
    assert "2-day streak" in text


async def test_a_missed_local_day_resets_the_streak(tg):
    await setup_group(tg)
    for day in ("2026-11-20", "2026-11-21", "2026-11-22"):
        await say(tg, ALICE, "签到", local(f"{day} 21:00"))
    assert "3-day streak" in tg.api.sent_texts()[-1]
    text = await say(tg, ALICE, "签到", local("2026-11-24 08:00"))  # the 23rd was missed
    assert "1-day streak" in text and "streak +" not in text
    await say(tg, ALICE, "/me")
    assert "Days in a row: 1 (best 3)" in tg.api.sent_texts()[-1]
    tg.clock.set(local("2026-11-26 09:00"))  # and missed the 25th: no streak left
    await say(tg, ALICE, "/me")
    assert "Days in a row: 0 (best 3)" in tg.api.sent_texts()[-1]


async def test_a_check_in_arriving_late_joins_the_days_after_it(tg):
    await setup_group(tg)
    await configure(tg, "milestones 3:30", "first 0")
    await say(tg, ALICE, "签到", local("2026-11-20 09:00"))
    await say(tg, ALICE, "签到", local("2026-11-22 09:00"))
    # The 21st's message, delivered late (queued while the bot was down, or another process).
    tg.clock.set(local("2026-11-22 09:05"))
    await tg.feed(f.message(GROUP, ALICE, "签到", date=local("2026-11-21 23:50")))
    rows = await checkins(tg, ALICE["id"])
    assert [(r.day.day, r.streak) for r in rows] == [(20, 1), (21, 2), (22, 3)]
    assert "3-day streak +30" in tg.api.sent_texts()[-1]
    await assert_ledger_matches_balances(tg)


async def test_streak_continues_across_daylight_saving_changes(tg):
    await setup_group(tg, "America/New_York")
    # Spring forward on 2026-03-08 (23-hour day), fall back on 2026-11-01 (25-hour day).
    for day in ("2026-03-07 23:30", "2026-03-08 00:30", "2026-03-09 00:10"):
        await say(tg, ALICE, "check in", local(day, "America/New_York"))
    assert "3-day streak" in tg.api.sent_texts()[-1]
    assert [c.day.day for c in await checkins(tg, ALICE["id"])] == [7, 8, 9]

    await say(tg, BOB, "check in", local("2026-10-31 23:59", "America/New_York"))
    # 01:30 happens twice on Nov 1; both are the same local day: a duplicate.
    await say(tg, BOB, "check in", local("2026-11-01 01:30", "America/New_York", fold=0))
    again = await say(tg, BOB, "check in", local("2026-11-01 01:30", "America/New_York", fold=1))
    assert "already" in again and "2-day streak" in again
    text = await say(tg, BOB, "check in", local("2026-11-02 00:01", "America/New_York"))
    assert "3-day streak" in text
    assert [c.day.day for c in await checkins(tg, BOB["id"])] == [31, 1, 2]


async def test_day_start_hour_moves_the_boundary(tg):
    await setup_group(tg, "Europe/Berlin")
    await configure(tg, "daystart 04:00")
    await say(tg, ALICE, "签到", local("2026-03-28 22:00", "Europe/Berlin"))
    # 03:30 after midnight is still the 28th's check-in day (and DST starts this night).
    assert "already" in await say(tg, ALICE, "签到", local("2026-03-29 03:30", "Europe/Berlin"))
    text = await say(tg, ALICE, "签到", local("2026-03-29 04:00", "Europe/Berlin"))
    assert "checked in" in text and "2-day streak" in text
    assert [c.day for c in await checkins(tg, ALICE["id"])] == [
        date(2026, 3, 28),
        date(2026, 3, 29),
    ]


# --- points rules ---------------------------------------------------------------------------


async def test_streak_bonus_is_capped_and_milestones_pay_once_per_streak(tg):
    await setup_group(tg)
    await configure(tg, "base 10", "streak 2", "cap 4", "first 0", "milestones 3:50")
    earned = []
    start = local("2026-11-01 09:00")
    for offset in (0, 1, 2, 3, 4, 6, 7, 8):  # the 6th is missed: a new streak
        before = await balance(tg, ALICE["id"])
        await say(tg, ALICE, "签到", start + timedelta(days=offset))
        earned.append(await balance(tg, ALICE["id"]) - before)
    assert earned == [10, 12, 14 + 50, 14, 14, 10, 12, 14 + 50]
    assert "3-day streak +50" in tg.api.sent_texts()[-1]
    milestones = [e for e in await ledger(tg, ALICE["id"]) if e.source == "checkin_milestone"]
    assert len(milestones) == 2 and {e.amount for e in milestones} == {50}
    await assert_ledger_matches_balances(tg)


# --- make-up check-ins (补签) -------------------------------------------------------------------


async def test_make_up_fills_yesterday_and_keeps_the_streak(tg):
    await setup_group(tg)
    await configure(tg, "makeupcost 12", "first 0")
    await say(tg, ALICE, "签到", local("2026-11-20 09:00"))
    await say(tg, ALICE, "签到", local("2026-11-21 09:00"))  # 25 points, streak 2
    # The 22nd is missed; on the 23rd Alice checks in (streak restarts), then makes up.
    assert "1-day streak" in await say(tg, ALICE, "签到", local("2026-11-23 09:00"))
    text = await say(tg, ALICE, "补签", local("2026-11-23 09:05"))
    assert "made up 2026-11-22 for 12 points (1/2 this month)" in text
    assert "4-day streak" in text
    rows = await checkins(tg, ALICE["id"])
    assert [(r.day.day, r.streak, r.made_up) for r in rows] == [
        (20, 1, False),
        (21, 2, False),
        (22, 3, True),
        (23, 4, False),
    ]
    assert await balance(tg, ALICE["id"]) == 10 + 11 + 10 - 12
    spent = [e for e in await ledger(tg, ALICE["id"]) if e.source == "checkin_makeup"]
    assert [(e.amount, e.source_key) for e in spent] == [(-12, "20:2026-11-22")]
    # The next day continues the restored streak.
    assert "5-day streak" in await say(tg, ALICE, "签到", local("2026-11-24 09:00"))
    # A made-up day is not participation on that day.
    async with tg.db() as session:
        assert (
            await session.get(DailyActivity, (GROUP["id"], ALICE["id"], date(2026, 11, 22)))
            is None
        )


async def test_make_up_before_checking_in_today(tg):
    await setup_group(tg)
    await configure(tg, "makeupcost 5")
    await say(tg, ALICE, "签到", local("2026-11-20 09:00"))
    assert "2-day streak" in await say(tg, ALICE, "/makeup", local("2026-11-22 08:00"))
    assert "3-day streak" in await say(tg, ALICE, "签到", local("2026-11-22 08:01"))
    await assert_ledger_matches_balances(tg)


async def test_make_up_rules(tg):
    await setup_group(tg)
    await configure(tg, "makeupcost 100", "makeuplimit 1")
    await say(tg, ALICE, "签到", local("2026-11-01 09:00"))
    # Not enough points.
    text = await say(tg, ALICE, "补签", local("2026-11-03 09:00"))
    assert "costs 100 points and you have 15" in text
    assert await balance(tg, ALICE["id"]) == 15 and len(await checkins(tg, ALICE["id"])) == 1
    async with tg.services.db.begin() as session:
        await points.award(
            session,
            chat_id=GROUP["id"],
            user_id=ALICE["id"],
            amount=500,
            reason="test",
            source="test",
            source_key="1",
            now=tg.now(),
        )
    assert "made up 2026-11-02" in await say(tg, ALICE, "补签")
    # Yesterday already has a check-in now.
    assert "nothing to make up" in await say(tg, ALICE, "/makeup")
    # Two days missed: only yesterday may be filled, and there is no streak to save.
    text = await say(tg, ALICE, "/makeup", local("2026-11-06 09:00"))
    assert "only yesterday's gap (2026-11-05)" in text
    # The monthly limit (1) is used up, even with a streak to save.
    await say(tg, ALICE, "签到", local("2026-11-06 09:01"))
    assert "this month's make-ups (1/1)" in await say(tg, ALICE, "补签", local("2026-11-08 09:00"))
    # A new month, a new allowance.
    await say(tg, ALICE, "签到", local("2026-11-30 09:00"))
    assert "made up 2026-12-01" in await say(tg, ALICE, "补签", local("2026-12-02 09:00"))
    # Turned off.
    await configure(tg, "makeuplimit 0")
    assert "turned off" in await say(tg, ALICE, "补签", local("2026-12-04 09:00"))
    await assert_ledger_matches_balances(tg)


async def test_make_up_that_completes_a_milestone_pays_it(tg):
    await setup_group(tg)
    await configure(tg, "milestones 3:40", "makeupcost 0", "first 0")
    await say(tg, ALICE, "签到", local("2026-11-01 09:00"))
    await say(tg, ALICE, "签到", local("2026-11-03 09:00"))
    text = await say(tg, ALICE, "补签", local("2026-11-03 10:00"))  # 1st–3rd: streak 3
    assert "3-day streak" in text and "3-day streak +40" in text
    assert [
        e.amount for e in await ledger(tg, ALICE["id"]) if e.source == "checkin_milestone"
    ] == [40]


# --- /me and /top ------------------------------------------------------------------------------


async def test_me_shows_points_rank_streaks_and_month(tg):
    await setup_group(tg)
    await say(tg, BOB, "签到", local("2026-11-24 08:00"))  # 15
    await say(tg, ALICE, "签到", local("2026-11-24 09:00"))  # 10
    await say(tg, BOB, "签到", local("2026-11-25 08:30"))  # 16
    await say(tg, ALICE, "签到", local("2026-11-25 09:00"))  # 11
    text = await say(tg, BOB, "/me")
    assert "<b>Bob &lt;b&gt;</b>" in text
    assert "Points: 31 (#1 in the group)" in text
    assert "Days in a row: 2 (best 2)" in text
    assert "Check-ins this month: 2 (all time 2)" in text and "Checked in today" in text
    assert "Points: 21 (#2 in the group)" in await say(tg, ALICE, "/me")
    text = await say(tg, CAROL, "/me")
    assert "Points: 0\n" in text and "Not checked in today yet" in text


async def test_top_by_period_and_metric(tg):
    await setup_group(tg)
    await configure(tg, "first 0")
    # Monday 2026-11-23 starts the week; Alice checked in on three days of last week too.
    for day in ("2026-11-19", "2026-11-20", "2026-11-21"):
        await say(tg, ALICE, "签到", local(f"{day} 12:00"))
    for day in ("2026-11-23", "2026-11-24", "2026-11-25"):
        await say(tg, BOB, "签到", local(f"{day} 12:00"))
    await say(tg, CAROL, "签到", local("2026-11-25 13:00"))

    text = await say(tg, CAROL, "/top")
    assert text.startswith("🏆 <b>Points — all time</b>")
    lines = text.split("\n")[1:]
    assert lines == [
        "🥇 Alice — 33 points",
        "🥈 Bob &lt;b&gt; — 33 points",
        "🥉 Carol — 10 points",
    ]
    text = await say(tg, CAROL, "/top week")
    assert text.split("\n")[1:] == ["🥇 Bob &lt;b&gt; — 33 points", "🥈 Carol — 10 points"]
    assert "You: 33 points" in await say(tg, BOB, "/top all 1")  # Bob is second
    text = await say(tg, CAROL, "/top month checkins")
    assert text.split("\n")[1:] == [
        "🥇 Alice — 3 check-ins",
        "🥈 Bob &lt;b&gt; — 3 check-ins",
        "🥉 Carol — 1 check-in",
    ]
    await say(tg, ADMIN, "/language zh")
    assert (await say(tg, CAROL, "/top 周 签到")).startswith("🏆 <b>本周签到榜</b>")


async def test_top_with_a_long_list_is_split_and_escaped(tg):
    await setup_group(tg)
    members = [f.user(5000 + n, f"<i>{'名' * 60}</i> & {n}") for n in range(100)]
    for member in members:
        await say(tg, member, "签到")
    tg.api.clear()
    await say(tg, ALICE, "/top all 100")
    parts = tg.api.sent_texts(GROUP["id"])
    assert len(parts) >= 2  # 100 long lines do not fit in one message
    body = "\n".join(parts)
    assert body.count("&lt;i&gt;") == 100 and "<i>" not in body
    assert "100." in body


async def test_top_and_me_bad_arguments(tg):
    await setup_group(tg)
    text = await say(tg, ALICE, "/top yesterday")
    assert "<code>yesterday</code>" in text and "/top week" in text
    assert "Use" in await say(tg, ALICE, "/top 500")
    assert "Nobody is on the board yet" in await say(tg, ALICE, "/top week")


# --- configuration -----------------------------------------------------------------------------


async def test_config_shows_and_sets_with_clear_errors(tg):
    await setup_group(tg)
    shown = await say(tg, ADMIN, "/checkinconfig")
    assert "Check-in rules of Check &lt;b&gt;Group&lt;/b&gt;" in shown
    assert "A day starts at 00:00 (Asia/Shanghai)" in shown
    assert "Keywords: 签到, 打卡, check in, checkin" in shown

    errors = {
        "base lots": "<code>lots</code> is not a whole number",
        "base 1000001": "out of range: use 0 to 100000",
        "daystart 25": "is not an hour",
        "daystart 04:30": "is not an hour",
        "milestones 7-20": "is not a milestone list",
        "milestones 1:20": "is not a milestone list",
        "keywords /checkin": "can't be a keyword",
        "colour blue": "no setting called <code>colour</code>",
        "base": "Which value for <code>base</code>",
        "enabled maybe": "use on or off",
        "makeuplimit 40": "out of range: use 0 to 31",
    }
    for setting, expected in errors.items():
        text = await say(tg, ADMIN, f"/checkinconfig {setting}")
        assert expected in text, (setting, text)
        assert "Examples:" in text and "/checkinconfig base 10" in text
    async with tg.db() as session:
        assert await session.get(CheckinConfig, GROUP["id"]) is None  # nothing was saved

    await configure(tg, "base 7", "milestones 10:100, 5:30", "daystart 4", "MAKEUP_COST 3")
    shown = tg.api.sent_texts()[-1]
    assert "base 7" in shown and "A day starts at 04:00" in shown
    assert "Milestones: 5-day streak +30, 10-day streak +100" in shown
    assert "Make-up (补签): 3 points each, 2 per month" in shown
    async with tg.db() as session:
        row = await session.get(CheckinConfig, GROUP["id"])
    assert (row.base_points, row.milestones, row.day_start_hour) == (7, "5:30,10:100", 4)
    await configure(tg, "reset")
    assert "base 10" in tg.api.sent_texts()[-1]


async def test_config_is_for_operators_only(tg):
    await setup_group(tg)
    text = await say(tg, ALICE, "/checkinconfig base 1000")
    assert "Only the group's operators" in text
    assert "+15 points" in await say(tg, ALICE, "签到")


async def test_custom_keywords_replace_the_defaults(tg):
    await setup_group(tg)
    await configure(tg, "keywords 冒泡, Good Morning，早")
    assert "Keywords: 冒泡, good morning, 早" in tg.api.sent_texts()[-1]
    assert await say(tg, ALICE, "签到") is None
    assert "#1 today" in await say(tg, ALICE, "good morning!")
    assert "already" in await say(tg, ALICE, "冒泡")
    await configure(tg, "keywords default")
    assert "already" in await say(tg, ALICE, "签到")


async def test_turning_check_ins_off(tg):
    await setup_group(tg)
    await configure(tg, "off")
    assert await say(tg, ALICE, "签到") is None
    assert "turned off" in await say(tg, ALICE, "/checkin")
    await configure(tg, "on")
    assert "#1 today" in await say(tg, ALICE, "签到")


async def test_keywords_set_by_another_process_are_learned_at_startup(tg):
    await setup_group(tg)
    async with tg.services.db.begin() as session:  # as if another bot process had saved them
        session.add(CheckinConfig(chat_id=GROUP["id"], keywords="冒泡", updated_at=tg.now()))
    assert await say(tg, ALICE, "冒泡") is None  # this process doesn't know the word yet
    await checkin_handlers.on_startup(tg.app)
    assert tg.app.job_queue.get_jobs_by_name("checkins:keywords")
    assert "#1 today" in await say(tg, ALICE, "冒泡")
