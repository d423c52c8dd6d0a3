"""The figures features provide (content sent/failed/missed, polls closed and turnout, lottery
entries and draws): built through the real bot in a group on Shanghai time, and checked by
hand in /kpi, the digest (both languages, daily and weekly), /targets and the export.

Every scenario centres on day X = Thursday 2026-11-26, Shanghai time (UTC+8): X runs from
2026-11-25 16:00 to 2026-11-26 16:00 UTC, so events between 16:00 and 24:00 UTC belong to the
next local day — the boundary each scenario crosses on purpose.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import select

from bot import calendar as cal
from bot.kpi_export import export
from bot.lottery import Lottery
from bot.polls import Poll, Survey
from schedules import digest as digest_jobs
from schedules.lottery import runtime_of
from tests import factories as f
from tests.calendar_support import advance, post_id, write_calendar
from tests.calendar_support import start as start_calendar
from tests.conftest import both_databases
from tests.recording import BOT_USER

GROUP = f.group(-1001000000055, "Ops <Group>")
GID = GROUP["id"]
ADMIN = f.user(10, "Ada")
ALICE = f.user(21, "Alice <3")
BOB = f.user(22, "Bob & Co")
CAROL = f.user(23, "Carol")
DAVE = f.user(24, "Dave")
EVE = f.user(25, "Eve")
GUS = f.user(26, "Gus")
SEED = bytes(range(7, 39))
X = date(2026, 11, 26)


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    """A UTC moment on 2026-11-`day`."""
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def settings(settings, tmp_path):
    return settings.model_copy(update={"content_dir": str(tmp_path / "content")})


async def setup_group(tg: Any) -> None:
    tg.clock.set(utc(25, 12))  # 20:00 on X-1 in Shanghai
    await tg.feed(f.my_chat_member(GROUP, ADMIN, "left", "administrator", date=tg.now()))
    tg.api.set_admins(GID, ADMIN)
    await tg.services.chats.update_settings(GID, timezone="Asia/Shanghai")
    runtime_of(tg.app).seed_source = lambda: SEED
    tg.api.clear()


async def say(tg: Any, sender: dict[str, Any], text: str, at: datetime) -> str:
    """`sender` writes `text` at `at`; returns the bot's last reply (if any)."""
    tg.clock.set(at)
    before = len(tg.api.of("sendMessage"))
    await tg.feed(f.message(GROUP, sender, text, date=at))
    sent = tg.api.of("sendMessage")[before:]
    return sent[-1].params["text"] if sent else ""


async def digest_now(tg: Any, at: datetime) -> str:
    """/digest now (yesterday's report) through the real bot; returns its text."""
    tg.api.clear()
    await say(tg, ADMIN, "/digest now", at)
    (photo,) = tg.api.of("sendPhoto")
    assert photo.params["chat_id"] == GID
    return next(
        text for text in tg.api.sent_texts(GID) if "report</b>" in text or "报</b>" in text
    )


async def exported(database_url: str, tg: Any, days: int, end: date) -> list[dict[str, Any]]:
    await tg.flush()
    return json.loads(
        await export(database_url, GID, days=days, end=end, fmt="json", now=tg.now())
    )


# --- content: sent / failed / missed --------------------------------------------------------

CALENDAR = f"""
timezone: Asia/Shanghai
targets: {{main: {GID}}}
posts:
  - {{id: prev, to: main, at: "2026-11-25 23:59", text: "Prev"}}
  - {{id: morning, to: main, at: "2026-11-26 09:00", text: "Good <b>morning</b>"}}
  - {{id: broken, to: main, at: "2026-11-26 12:00", text: "Broken <i>one</i>"}}
  - {{id: late, to: main, at: "2026-11-26 15:00", text: "Late", grace: 10m}}
  - {{id: eve, to: main, at: "2026-11-26 23:55", text: "Eve"}}
  - {{id: night, to: main, at: "2026-11-27 00:05", text: "Night"}}
"""


async def content_history(tg: Any) -> dict[str, int]:
    """Deliveries by local day, by hand: X-1 sent 1 (prev, 15:59 UTC on the 25th); X sent 2
    (morning; eve at 15:55 UTC), failed 1 (broken), missed 1 (late: the bot was down from
    15:00 to 15:20, grace 10 min); X+1 sent 1 (night, 16:05 UTC on the 26th — still the 26th
    in UTC). Returns delivery numbers by post id."""
    await setup_group(tg)
    write_calendar(tg, CALENDAR)
    await start_calendar(tg)
    await advance(tg, hours=4)  # 16:00 UTC on the 25th: prev sent
    await advance(tg, hours=9, minutes=30)  # 01:30 UTC on the 26th: morning sent
    tg.api.fail("sendMessage", 400, "Bad Request: message is too long")
    await advance(tg, hours=3)  # 04:30: broken failed at once
    tg.clock.set(utc(26, 7, 20))  # the bot was down from before 07:00 (15:00 local)
    await advance(tg, minutes=0)
    await advance(tg, hours=8, minutes=36)  # 15:56 UTC: eve sent
    await advance(tg, minutes=10)  # 16:06 UTC: night sent
    numbers = {}
    keys = ("prev", "morning", "broken", "late", "eve", "night")
    ids = {key: await post_id(tg, key) for key in keys}
    async with tg.db() as session:
        for key, pid in ids.items():
            row = await session.scalar(
                select(cal.CalendarDelivery).where(cal.CalendarDelivery.post_id == pid)
            )
            numbers[key] = row.id
            expected = {"broken": cal.FAILED, "late": cal.MISSED}.get(key, cal.SENT)
            assert row.state == expected, (key, row.state, row.error)
    return numbers


@both_databases
async def test_content_figures_digest_section_targets_and_export(tg, database_url):
    numbers = await content_history(tg)
    await say(tg, ADMIN, "/settarget content_sent 3", utc(27, 1))
    await say(tg, ADMIN, "/settarget content_failed 1", utc(27, 1))
    text = await digest_now(tg, utc(27, 2))  # 10:00 on X+1: the report of X
    assert "2026-11-26 (Thu)" in text
    assert "<b>Other figures</b>" in text
    assert "Content sent: <b>2</b> · ▲100% d/d · ▲ from 0 w/w · 🎯 67% of 3" in text
    assert "Content failed: <b>1</b> · ▲ from 0 d/d · ▲ from 0 w/w · 🎯 100% of 1" in text
    assert "Content missed: <b>1</b> · ▲ from 0 d/d · ▲ from 0 w/w\n" in text
    # Highlights: a failed-posts target is a limit (1 failed of at most 1 is fine).
    highlights = "💡 2 planned posts not delivered; content sent below target; "
    assert highlights + "content failed within its limit" in text
    assert "🗓 <b>Content sent / failed / missed</b>: sent 2 · failed 1 · missed 1" in text
    assert (
        f"❌ <code>broken</code> #{numbers['broken']} 12:00 — Broken one: failed"
        " (Message is too long)"
    ) in text
    assert (
        f"⏭ <code>late</code> #{numbers['late']} 15:00 — Late: missed"
        " (the bot was not running at the time (past its grace))"
    ) in text
    assert "<code>morning</code>" not in text and "<code>night</code>" not in text

    await say(tg, ADMIN, "/targets", utc(27, 2, 5))
    reply = tg.api.sent_texts(GID)[-1]
    assert "Content sent: actual 2 / target 3 — <b>67%</b>" in reply
    assert "Content failed: actual 1 / target 1 — <b>100%</b>" in reply

    records = await exported(database_url, tg, 3, X.replace(day=27))
    assert [r["date"] for r in records] == ["2026-11-25", "2026-11-26", "2026-11-27"]
    assert [r["content_sent"] for r in records] == [1, 2, 1]
    assert [r["content_failed"] for r in records] == [0, 1, 0]
    assert [r["content_missed"] for r in records] == [0, 1, 0]
    assert list(records[0])[-1] == "partial"  # the features' columns come before it
    csv_text = await export(database_url, GID, days=2, end=X, fmt="csv", now=tg.now())
    header, _, row = csv_text.splitlines()
    assert header.endswith(
        "content_sent,content_failed,content_missed,polls_closed,poll_turnout,"
        "lottery_entries,lotteries_drawn,partial"
    )
    assert ",2,1,1,0,,0,0," in row


async def test_content_in_chinese_and_in_kpi(tg):
    await content_history(tg)
    await say(tg, ADMIN, "/kpi 2026-11-26..2026-11-27", utc(28, 2))
    reply = tg.api.sent_texts(GID)[-1]
    # X and X+1 against: sent 3 vs 1, failed 1 vs 0, missed 1 vs 0.
    assert "Content sent: <b>3</b> · ▲200% vs prev." in reply
    assert "Content failed: <b>1</b> · ▲ from 0 vs prev." in reply
    await say(tg, ADMIN, "/language zh", utc(27, 1))
    text = await digest_now(tg, utc(27, 2))
    assert "内容已发送: <b>2</b>" in text
    assert "🗓 <b>内容发送 / 失败 / 错过</b>: 已发送 2 · 失败 1 · 错过 1" in text
    assert "<code>broken</code>" in text and "：发送失败（Message is too long）" in text
    assert "<code>late</code>" in text and "：已错过（" in text
    assert "2 条计划内容未送达" in text


async def test_weekly_report_lists_the_weeks_failed_and_missed_posts_with_dates(tg):
    numbers = await content_history(tg)
    await say(tg, ADMIN, "/digest weekly MON 09:00", utc(30, 0, 5))  # Monday, 08:05 local
    (job,) = tg.app.job_queue.get_jobs_by_name(digest_jobs.job_name(GID, "weekly"))
    tg.clock.set(job.data.due.due_at)
    tg.api.clear()
    await job.run(tg.app)
    (text,) = tg.api.sent_texts(GID)
    # The week 2026-11-23..29: sent prev, morning, eve, night; failed broken; missed late.
    assert "Content sent: <b>4</b> · ▲ from 0 w/w\n" in text
    assert "🗓 <b>Content sent / failed / missed</b>: sent 4 · failed 1 · missed 1" in text
    assert f"❌ <code>broken</code> #{numbers['broken']} 11-26 12:00 — Broken one" in text
    assert f"⏭ <code>late</code> #{numbers['late']} 11-26 15:00 — Late: missed" in text


# --- polls: closed and turnout --------------------------------------------------------------


async def vote(tg: Any, poll: Poll, voter: dict[str, Any], options: list[int], at: datetime):
    """What Telegram sends when a member votes (a vote counts on the day it arrives)."""
    tg.clock.set(at)
    state = tg.api.vote(poll.telegram_poll_id, voter["id"], options)
    if not poll.anonymous:
        await tg.feed(f.poll_answer(poll.telegram_poll_id, voter, options))
    await tg.feed(f.poll_state(state))


async def newest(tg: Any, model: Any) -> Any:
    async with tg.db() as session:
        return await session.scalar(select(model).order_by(model.id.desc()).limit(1))


async def poll_history(tg: Any) -> None:
    """Polls around day X, by hand (active = wrote, checked in, voted or entered a lottery):

    P1 "Lunch <today>?" posted 22:00 on X-1, closed 00:30 on X (16:30 UTC on the 25th);
       votes: Alice 23:00 on X-1, Bob 00:10 on X. Period X-1..X; active: Ada (commands),
       Alice, Bob, Carol (writes on X) → 2 of 4.
    S1 survey "Team & offsite" (2 questions) posted and closed on X (20:00): Bob answers
       question 1, Carol both → 2 respondents; active on X: Ada, Bob, Carol → 2 of 3.
    P2 anonymous "Anon?" posted 10:30 on X, closed 23:30 on X: Telegram counts 4 voters
       (Alice, Dave, Eve, Gus — anonymous, so not seen as active); active on X: 3, but never
       fewer than the voters → 4 of 4.
    P3 "Late?" posted 23:40 on X, closed 00:10 on X+1: Carol votes → 1 of 3 (Ada, Bob, Carol
       on X; Ada on X+1).
    Frank-like noise: Eve writes on X+2 (outside every period).

    X: 3 closed, pooled turnout (2 + 2 + 4) / (4 + 3 + 4) = 8/11. X+1: 1 closed, 1/3.
    """
    await setup_group(tg)
    await say(tg, ADMIN, "/poll Lunch <today>? | Noodles | Rice", utc(25, 14))
    p1 = await newest(tg, Poll)
    await vote(tg, p1, ALICE, [0], utc(25, 15))
    await vote(tg, p1, BOB, [1], utc(25, 16, 10))
    assert "Results" in await say(tg, ADMIN, f"/closepoll {p1.id}", utc(25, 16, 30))
    await say(tg, CAROL, "morning all", utc(26, 2))
    await say(tg, ADMIN, "/poll anonymous Anon? | Yes | No", utc(26, 2, 30))
    p2 = await newest(tg, Poll)
    await say(
        tg, ADMIN, "/survey Team & offsite\nWhere? | Beach | City\nWhen? | May | June", utc(26, 3)
    )
    survey = await newest(tg, Survey)
    async with tg.db() as session:
        q1, q2 = await session.scalars(
            select(Poll).where(Poll.survey_id == survey.id).order_by(Poll.position)
        )
    await vote(tg, q1, BOB, [0], utc(26, 4))
    await vote(tg, q1, CAROL, [1], utc(26, 5))
    await vote(tg, q2, CAROL, [1], utc(26, 5))
    for n, voter in enumerate((ALICE, DAVE, EVE, GUS)):
        await vote(tg, p2, voter, [n % 2], utc(26, 6, n))
    assert "Survey results" in await say(tg, ADMIN, f"/closepoll S{survey.id}", utc(26, 12))
    assert "Results" in await say(tg, ADMIN, f"/closepoll {p2.id}", utc(26, 15, 30))
    await say(tg, ADMIN, "/poll Late? | Yes | No", utc(26, 15, 40))
    p3 = await newest(tg, Poll)
    await vote(tg, p3, CAROL, [0], utc(26, 15, 45))
    assert "Results" in await say(tg, ADMIN, f"/closepoll {p3.id}", utc(26, 16, 10))
    await say(tg, EVE, "hello", utc(27, 17))


@both_databases
async def test_poll_figures_digest_section_and_export(tg, database_url):
    await poll_history(tg)
    await say(tg, ADMIN, "/settarget poll_turnout 80%", utc(28, 1))
    text = await digest_now(tg, utc(27, 2))  # the report of X
    assert "Polls closed: <b>3</b> · ▲ from 0 d/d · ▲ from 0 w/w\n" in text
    assert "Poll turnout: <b>72.7%</b> · 🎯 91% of 80.0%\n" in text  # 8/11; nothing before
    assert "🗳 <b>Polls closed (3)</b>" in text
    section = text.split("🗳 <b>Polls closed (3)</b>\n", 1)[1].split("\n\n", 1)[0]
    assert section.splitlines() == [
        "• Lunch &lt;today&gt;? — 2 voters of 4 active members: turnout 50%",
        "• 📋 Team &amp; offsite (survey) — 2 answered, of 3 active members: turnout 67%",
        "• Anon? — 4 voters of 4 active members: turnout 100%",
    ]
    assert "Late?" not in section
    records = await exported(database_url, tg, 3, X.replace(day=27))
    assert [r["polls_closed"] for r in records] == [0, 3, 1]
    assert records[0]["poll_turnout"] is None
    assert records[1]["poll_turnout"] == pytest.approx(8 / 11)
    assert records[2]["poll_turnout"] == pytest.approx(1 / 3)
    # The next day against X: turnout in percentage points.
    text = await digest_now(tg, utc(28, 2))
    assert "Poll turnout: <b>33.3%</b> · ▼39.4 pp d/d · 🎯 42% of 80.0%" in text
    assert "• Late? — 1 voters of 3 active members: turnout 33%" in text


async def test_poll_section_in_chinese(tg):
    await poll_history(tg)
    await say(tg, ADMIN, "/language zh", utc(27, 1))
    text = await digest_now(tg, utc(27, 2))
    assert "🗳 <b>结束的投票（3）</b>" in text
    assert "• Lunch &lt;today&gt;? — 2 人投票，期间活跃 4 人：参与率 50%" in text
    assert "• 📋 Team &amp; offsite（问卷）— 2 人作答，期间活跃 3 人：参与率 67%" in text


# --- lotteries: entries and draws -----------------------------------------------------------


def press(lottery: Lottery, user: dict[str, Any]) -> dict[str, Any]:
    post = f.message_dict(
        GROUP, BOT_USER, "lottery", date=utc(25, 14), message_id=lottery.message_id or 1
    )
    return f.callback(user, f"lottery:join:{lottery.id}", message=post)


async def enter(tg: Any, lottery: Lottery, user: dict[str, Any], at: datetime) -> None:
    tg.clock.set(at)
    await tg.feed(press(lottery, user))


async def draw_due(tg: Any, lottery: Lottery, at: datetime) -> None:
    tg.clock.set(at)
    (job,) = tg.app.job_queue.get_jobs_by_name(f"lottery:{lottery.id}")
    job.schedule_removal()
    await job.run(tg.app)


def ranking(lottery_id: int, users: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The documented ranking (HMAC-SHA256 of "lottery:user" keyed by the seed), by hand."""
    return sorted(
        users,
        key=lambda u: hmac.new(SEED, f"{lottery_id}:{u['id']}".encode(), hashlib.sha256).digest(),
    )


async def lottery_history(tg: Any) -> tuple[Lottery, Lottery, Lottery]:
    """L1 "Hat <b> & co" (2 winners) opened 22:00 on X-1, drawn 20:00 on X (12:00 UTC):
    entries Dave 23:30 on X-1, Alice 00:30 on X (16:30 UTC on the 25th), Bob 11:00 on X.
    L2 "Mug" opened on X, Carol enters on X; drawn on X+1. L3 "Pen" opened and drawn (15:00)
    on X, nobody entered.
    Entries: X-1 1, X 3, X+1 0. Draws: X 2 (L3 then L1), X+1 1."""
    await setup_group(tg)
    await say(tg, ADMIN, "/lottery Hat <b> & co | winners 2 | draw in 22h", utc(25, 14))
    l1 = await newest(tg, Lottery)
    await enter(tg, l1, DAVE, utc(25, 15, 30))
    await enter(tg, l1, ALICE, utc(25, 16, 30))
    await enter(tg, l1, BOB, utc(26, 3))
    await say(tg, ADMIN, "/lottery Mug | draw in 30h", utc(26, 4))
    l2 = await newest(tg, Lottery)
    await enter(tg, l2, CAROL, utc(26, 5))
    await say(tg, ADMIN, "/lottery Pen | draw in 1h", utc(26, 6))
    l3 = await newest(tg, Lottery)
    await draw_due(tg, l3, utc(26, 7))
    await draw_due(tg, l1, utc(26, 12))
    await draw_due(tg, l2, utc(27, 10))
    return l1, l2, l3


@both_databases
async def test_lottery_figures_digest_section_and_export(tg, database_url):
    l1, _, l3 = await lottery_history(tg)
    winners = ranking(l1.id, [DAVE, ALICE, BOB])[:2]
    names = ", ".join(u["first_name"].replace("&", "&amp;").replace("<", "&lt;") for u in winners)
    text = await digest_now(tg, utc(27, 2))  # the report of X
    assert "Lottery entries: <b>3</b> · ▲200% d/d · ▲ from 0 w/w\n" in text
    assert "Lotteries drawn: <b>2</b> · ▲ from 0 d/d · ▲ from 0 w/w\n" in text
    section = text.split("🎁 <b>Lotteries drawn (2)</b>\n", 1)[1].split("\n\n", 1)[0]
    assert section.splitlines() == [
        f"• #{l3.id} Pen — 0 entrants; winners: nobody (no eligible entrants)",
        f"• #{l1.id} Hat &lt;b&gt; &amp; co — 3 entrants; winners: {names}",
    ]
    records = await exported(database_url, tg, 3, X.replace(day=27))
    assert [r["lottery_entries"] for r in records] == [1, 3, 0]
    assert [r["lotteries_drawn"] for r in records] == [0, 2, 1]


async def test_weekly_report_has_the_same_sections_over_the_week(tg):
    l1, l2, l3 = await lottery_history(tg)
    await say(tg, ADMIN, "/language zh", utc(30, 0))
    await say(tg, ADMIN, "/digest weekly MON 09:00", utc(30, 0, 5))  # Monday, 08:05 local
    (job,) = tg.app.job_queue.get_jobs_by_name(digest_jobs.job_name(GID, "weekly"))
    assert job.data.due.period_start == date(2026, 11, 23)
    tg.clock.set(job.data.due.due_at)
    tg.api.clear()
    await job.run(tg.app)
    (text,) = tg.api.sent_texts(GID)
    # The week of 2026-11-23..29 against the week before: 4 entries, 3 draws, vs none.
    assert "📊 <b>周报</b>" in text
    assert "抽奖参与: <b>4</b> · ▲ 从 0 起 周同比\n已开奖: <b>3</b> · ▲ 从 0 起 周同比" in text
    assert "已结束投票: <b>0</b>\n投票参与率: <b>—</b>" in text
    assert "这段时间平稳" in text  # highlights: nothing moved enough to mention
    assert "🎁 <b>已开奖（3）</b>" in text
    section = text.split("🎁 <b>已开奖（3）</b>\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split(" ")[1] for line in section] == [f"#{l3.id}", f"#{l1.id}", f"#{l2.id}"]
    assert section[2] == f"• #{l2.id} Mug — 1 人参与；中奖：Carol"


async def test_a_feature_that_is_not_installed_reads_unavailable_not_zero(
    tg, database_url, monkeypatch
):
    from bot import digest, kpi

    monkeypatch.setitem(
        kpi.FEATURE_METRICS, "polls", kpi.FeatureMetrics("polls", ("polls_closed", "poll_turnout"))
    )
    monkeypatch.setitem(digest.SECTIONS, "polls", digest.unavailable_section("polls", "🗳"))
    await poll_history(tg)
    await say(tg, ADMIN, "/kpi 2026-11-26..2026-11-26", utc(27, 2))
    reply = tg.api.sent_texts(GID)[-1]
    assert "Polls closed: <b>unavailable (not recorded yet)</b>\n" in reply
    assert "Content sent: <b>0</b>" in reply  # the other features still report
    text = await digest_now(tg, utc(27, 2))
    assert "🗳 Polls closed and turnout: unavailable (not recorded yet)" in text
    records = await exported(database_url, tg, 1, X)
    assert records[0]["polls_closed"] is None and records[0]["content_sent"] == 0
