"""Daily and weekly digests: content, chart, schedule, and exactly-once sending across
restarts, downtime and two processes on one database."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select

from bot.app import build_app
from bot.charts import ChartPoint, ChartSpec, png_size, render_chart
from bot.digest import (
    GRACE,
    SPREAD_SECONDS,
    DigestRun,
    DigestSchedule,
    Due,
    parse_weekday,
    spread_offset,
)
from schedules import digest as jobs
from tests import factories as f
from tests.conftest import both_databases
from tests.kpi_history import ADMIN, CHAT_ID, GROUP, add_bot, at, day, feed_history
from tests.recording import RecordingRequest


async def schedule_daily(tg, when: str = "09:00", clock_day: int = 10) -> None:
    tg.clock.set(at(clock_day, 8))
    await tg.feed(f.message(GROUP, ADMIN, f"/digest {when}", date=tg.now()))


def digest_job(tg, chat_id: int = CHAT_ID, weekly: bool = False):
    (job,) = tg.app.job_queue.get_jobs_by_name(
        jobs.job_name(chat_id, "weekly" if weekly else "daily")
    )
    return job


async def runs(tg, chat_id: int = CHAT_ID) -> list[tuple[str, str, str]]:
    async with tg.db() as session:
        rows = await session.scalars(
            select(DigestRun).where(DigestRun.chat_id == chat_id).order_by(DigestRun.period_start)
        )
        return [(r.kind, r.period_start.isoformat(), r.state) for r in rows]


def photos(api: RecordingRequest, chat_id: int = CHAT_ID) -> list:
    return [c for c in api.of("sendPhoto") if c.params["chat_id"] == chat_id]


async def test_daily_digest_content_chart_and_next_job(tg):
    await add_bot(tg)
    await feed_history(tg)
    await schedule_daily(tg)  # on day 10: the operator's commands don't touch day 9's figures
    await tg.feed(f.message(GROUP, ADMIN, "/settarget dau 3", date=tg.now()))
    await tg.feed(f.message(GROUP, ADMIN, "/settarget retention_d7 60%", date=tg.now()))
    assert "09:00" in tg.api.sent_texts(CHAT_ID)[-3]
    job = digest_job(tg)
    due = job.data.due
    assert due.period_start == day(9)
    assert due.due_at == at(10, 9) + spread_offset(CHAT_ID)
    tg.api.clear()

    tg.clock.set(due.due_at)
    await job.run(tg.app)

    (photo,) = photos(tg.api)
    assert png_size(photo.files["photo"][1]) == (1200, 600)
    assert "Daily report" in photo.params["caption"] and "2026-11-11" in photo.params["caption"]
    (text,) = tg.api.sent_texts(CHAT_ID)
    # Day 9 by hand: messages 1 (day 8: 3, day 2: 1), DAU 2 (day 8: 2, day 2: 1), WAU = MAU = 5,
    # check-ins 2 of 2 active, D7 retention of day 2's cohort 1.0.
    assert "Messages: <b>1</b> · ▼67% d/d · ±0% w/w" in text
    assert "Active members (DAU): <b>2</b> · ±0% d/d · ▲100% w/w · 🎯 67% of 3" in text
    assert "Monthly active (MAU): <b>5</b>" in text
    assert "Stickiness (DAU/MAU): <b>40.0%</b>" in text
    assert "Check-ins: <b>2</b> · ▲ from 0 d/d" in text
    assert "Check-in rate: <b>100.0%</b> · ▲100.0 pp d/d" in text
    assert "Retention D7: <b>100.0%</b>" in text and "🎯 167% of 60.0%" in text
    assert "Retention D1: <b>—</b>" in text  # nobody joined on day 8
    assert (
        "💡 DAU up 100% week on week; joins down 100% week on week; DAU below target; "
        "D7 retention target reached"
    ) in text
    assert "1. Ann &lt;b&gt; — 1" in text  # names escaped
    assert "Check-in leaders (7 days)</b>: Ann &lt;b&gt; (1d), Eve (1d)" in text
    # The features' figures: recorded, and none of them happened on day 9.
    assert "<b>Other figures</b>\nContent sent: <b>0</b>\nContent failed: <b>0</b>" in text
    assert "Polls closed: <b>0</b>\nPoll turnout: <b>—</b>\nLottery entries: <b>0</b>" in text
    assert "unavailable" not in text and "Polls closed (" not in text  # no empty sections
    assert await runs(tg) == [("daily", "2026-11-11", "sent")]
    # The next one is planned for tomorrow, covering today.
    assert digest_job(tg).data.due.period_start == day(10)


async def test_digest_in_chinese_with_members_section(tg):
    await add_bot(tg)
    await feed_history(tg)
    await tg.feed(f.message(GROUP, ADMIN, "/language zh", date=tg.now()))
    await schedule_daily(tg, clock_day=8)
    job = digest_job(tg)  # covers day 7: E and F joined
    tg.clock.set(job.data.due.due_at)
    tg.api.clear()
    await job.run(tg.app)
    (text,) = tg.api.sent_texts(CHAT_ID)
    assert "📊 <b>日报</b>" in text and "新成员（2）</b>: Eve, Fay" in text
    assert "消息数：" not in text and "消息数: <b>0</b>" in text
    assert "暂无数据" not in text and "内容已发送: <b>0</b>" in text


@both_databases
async def test_two_applications_on_one_database_send_once(tg, engine, settings, clock):
    await add_bot(tg)
    await feed_history(tg)
    await schedule_daily(tg)
    due = digest_job(tg).data.due
    other_api = RecordingRequest(now=lambda: clock().timestamp())
    other = build_app(
        settings,
        engine=engine,
        request=other_api,
        clock=clock,
        rate_limiter=False,
        concurrent=False,
    )
    tg.clock.set(due.due_at + timedelta(seconds=2))
    tg.api.clear()
    async with other:
        outcomes = await asyncio.gather(
            jobs.run_due(tg.app, CHAT_ID, due), jobs.run_due(other, CHAT_ID, due)
        )
        again = await jobs.run_due(other, CHAT_ID, due)
    assert sorted(outcomes) == ["sent", "taken"] and again == "taken"
    assert len(photos(tg.api)) + len(photos(other_api)) == 1
    assert len(tg.api.sent_texts(CHAT_ID)) + len(other_api.sent_texts(CHAT_ID)) == 1
    assert await runs(tg) == [("daily", "2026-11-11", "sent")]


async def test_restart_after_sending_sends_nothing_more(tg):
    await add_bot(tg)
    await feed_history(tg)
    await schedule_daily(tg)
    job = digest_job(tg)
    tg.clock.set(job.data.due.due_at)
    await job.run(tg.app)
    tg.api.clear()
    tg.clock.advance(minutes=10)
    await jobs.on_startup(tg.app)  # a restart: jobs derived again from the database
    assert not tg.api.of("sendPhoto") and not tg.api.sent_texts()
    assert digest_job(tg).data.due.period_start == day(10)


async def test_downtime_within_grace_sends_late_once(tg):
    await add_bot(tg)
    await feed_history(tg)
    await schedule_daily(tg)
    due = digest_job(tg).data.due
    tg.api.clear()
    tg.clock.set(due.due_at + GRACE - timedelta(minutes=5))  # down at 09:00, back 55 min later
    await jobs.on_startup(tg.app)
    await jobs.on_startup(tg.app)  # and once more: still only one
    assert len(photos(tg.api)) == 1 and len(tg.api.sent_texts(CHAT_ID)) == 1
    assert await runs(tg) == [("daily", "2026-11-11", "sent")]


async def test_downtime_beyond_grace_is_missed_and_reported_next_time(tg):
    await add_bot(tg)
    await feed_history(tg)
    await schedule_daily(tg)
    tg.api.clear()
    tg.clock.set(at(11, 12))  # down from before day 10's 09:00 until day 11 noon
    await jobs.on_startup(tg.app)
    assert not tg.api.of("sendPhoto") and not tg.api.sent_texts()
    assert await runs(tg) == [
        ("daily", "2026-11-11", "missed"),
        ("daily", "2026-11-12", "missed"),
    ]
    job = digest_job(tg)  # day 12, covering day 11
    tg.clock.set(job.data.due.due_at)
    await job.run(tg.app)
    (text,) = tg.api.sent_texts(CHAT_ID)
    assert "Reports not delivered" in text
    assert "Daily report for 2026-11-11: missed" in text
    assert "Daily report for 2026-11-12: missed" in text
    tg.api.clear()
    job = digest_job(tg)
    tg.clock.set(job.data.due.due_at)
    await job.run(tg.app)
    assert "not delivered" not in tg.api.sent_texts(CHAT_ID)[0]  # reported once only


async def test_interrupted_claim_is_not_resent_but_reported(tg):
    await add_bot(tg)
    await feed_history(tg)
    await schedule_daily(tg)
    due = digest_job(tg).data.due
    tg.clock.set(due.due_at)
    outcome, _ = await jobs.claim(tg.services.db, CHAT_ID, due, now=tg.now(), worker="crashed")
    assert outcome == "send"  # …and the process died before recording the outcome
    tg.api.clear()
    tg.clock.advance(hours=2)
    await jobs.on_startup(tg.app)
    assert not tg.api.sent_texts()
    assert await runs(tg) == [("daily", "2026-11-11", "failed")]
    job = digest_job(tg)
    tg.clock.set(job.data.due.due_at)
    await job.run(tg.app)
    assert "Daily report for 2026-11-11: sending failed" in tg.api.sent_texts(CHAT_ID)[0]


async def test_one_failing_group_does_not_stop_the_others(tg):
    second = f.group(-1001000000077, "Second")
    await add_bot(tg)
    await add_bot(tg, second)
    await feed_history(tg)
    tg.clock.set(at(10, 8))
    for chat in (GROUP, second):
        await tg.feed(f.message(chat, ADMIN, "/digest 09:00", date=tg.now()))
    tg.api.clear()
    tg.clock.set(at(10, 9, 10))
    tg.api.fail("sendPhoto", 403, "Forbidden: bot was kicked from the supergroup chat")
    await digest_job(tg, CHAT_ID).run(tg.app)  # the bot was removed from the first group
    await digest_job(tg, second["id"]).run(tg.app)
    assert await runs(tg, CHAT_ID) == [("daily", "2026-11-11", "failed")]
    assert await runs(tg, second["id"]) == [("daily", "2026-11-11", "sent")]
    assert len(photos(tg.api, second["id"])) == 1 and tg.api.sent_texts(second["id"])


async def test_digest_says_when_figures_are_partial(tg):
    tg.clock.set(at(-1, 8))
    await tg.feed(f.my_chat_member(GROUP, ADMIN, "left", "member", date=tg.now()))  # privacy on
    tg.api.set_admins(CHAT_ID, ADMIN)
    await feed_history(tg)
    tg.clock.set(at(10, 8))
    tg.api.clear()
    await tg.feed(f.message(GROUP, ADMIN, "/digest now", date=tg.now()))
    text = tg.api.sent_texts(CHAT_ID)[0]
    assert "Messages: <b>1</b>*" in text and "Joined: <b>0</b>*" not in text
    assert "* Partial: I can't see every message" in text


def test_spread_offsets_are_stable_and_within_the_window():
    offsets = {spread_offset(-1001000000000 - n) for n in range(200)}
    assert all(timedelta(0) <= o < timedelta(seconds=SPREAD_SECONDS) for o in offsets)
    assert len(offsets) > 100  # spread, not bunched
    assert spread_offset(-1001) == spread_offset(-1001)


async def test_due_times_follow_the_chat_time_zone(tg):
    await add_bot(tg)
    await tg.services.chats.update_settings(CHAT_ID, timezone="Asia/Shanghai")
    tg.clock.set(at(10, 0, 30))  # 08:30 in Shanghai
    await tg.feed(f.message(GROUP, ADMIN, "/digest 09:00", date=tg.now()))
    due = digest_job(tg).data.due
    assert due.due_at == at(10, 1) + spread_offset(CHAT_ID)  # 09:00 +08:00 = 01:00 UTC
    assert due.period_start == day(9)


async def test_weekly_report(tg):
    await add_bot(tg)
    await feed_history(tg)
    tg.clock.set(at(14, 8))  # Monday 2026-11-16
    await tg.feed(f.message(GROUP, ADMIN, "/digest weekly MON 09:00", date=tg.now()))
    assert "every Mon at 09:00" in tg.api.sent_texts(CHAT_ID)[-1]
    job = digest_job(tg, weekly=True)
    assert job.data.due.period_start == day(7)
    tg.api.clear()
    tg.clock.set(job.data.due.due_at)
    await job.run(tg.app)
    photo, heat = photos(tg.api)
    assert png_size(photo.files["photo"][1]) == (1200, 600)
    # After the text, the heat map of the 4 weeks ending with the week reported (days
    # -14..13): 16 messages, 12 of them at 12:00; Tuesday 12:00 has day 1's 3 and day 8's 1.
    assert png_size(heat.files["photo"][1]) == (1200, 600)
    assert "2026-10-19 – 2026-11-15 (UTC): 16 messages" in heat.params["caption"]
    assert "Busiest: Tue 12:00–13:00 (4 messages)" in heat.params["caption"]
    assert "Busiest hours: 12:00–13:00, 11:00–12:00, 08:00–09:00" in heat.params["caption"]
    (text,) = tg.api.sent_texts(CHAT_ID)
    # Week of day 7..13: 5 messages; the week before (days 0..6): 2+3+1+2+0+3 = 11.
    assert "Weekly report</b> · KPI &lt;i&gt;Group&lt;/i&gt; · 2026-11-09 – 2026-11-15" in text
    assert "Messages: <b>5</b> · ▼55% w/w" in text
    assert await runs(tg) == [("weekly", "2026-11-09", "sent")]
    assert digest_job(tg, weekly=True).data.due.period_start == day(14)


async def test_digest_now_private_and_log_destinations(tg):
    await add_bot(tg)
    await feed_history(tg)
    tg.clock.set(at(10, 8))
    tg.api.clear()
    await tg.feed(f.message(GROUP, ADMIN, "/digest now", date=tg.now()))
    assert len(photos(tg.api)) == 1 and "Daily report" in tg.api.sent_texts(CHAT_ID)[0]

    # Private, but no operator has started the bot: it falls back to the group and says why.
    await tg.feed(f.message(GROUP, ADMIN, "/digest private", date=tg.now()))
    tg.api.clear()
    await tg.feed(f.message(GROUP, ADMIN, "/digest now", date=tg.now()))
    assert len(photos(tg.api)) == 1 and "started me" in tg.api.sent_texts(CHAT_ID)[-1]

    await tg.feed(f.message(f.private(ADMIN), ADMIN, "/start", date=tg.now()))
    tg.api.clear()
    await tg.feed(f.message(GROUP, ADMIN, "/digest now", date=tg.now()))
    assert len(photos(tg.api, ADMIN["id"])) == 1 and not photos(tg.api)
    assert "Daily report" in tg.api.sent_texts(ADMIN["id"])[0]
    assert "Report sent to the operators" in tg.api.sent_texts(CHAT_ID)[-1]

    await tg.feed(f.message(GROUP, ADMIN, "/digest log", date=tg.now()))
    assert "Which log channel" in tg.api.sent_texts(CHAT_ID)[-1]
    await tg.feed(f.message(GROUP, ADMIN, "/digest log -1009999", date=tg.now()))
    tg.api.clear()
    await tg.feed(f.message(GROUP, ADMIN, "/digest now", date=tg.now()))
    assert len(photos(tg.api, -1009999)) == 1 and tg.api.sent_texts(-1009999)


async def test_digest_settings_status_off_and_errors(tg):
    await add_bot(tg)
    await schedule_daily(tg)
    await tg.feed(f.message(GROUP, ADMIN, "/digest weekly FRI 18:30", date=tg.now()))
    await tg.feed(f.message(GROUP, ADMIN, "/digest", date=tg.now()))
    status = tg.api.sent_texts(CHAT_ID)[-1]
    assert "Daily: 09:00" in status and "Weekly: Fri 18:30" in status and "this group" in status
    await tg.feed(f.message(GROUP, ADMIN, "/digest 25:00", date=tg.now()))
    assert (
        "25:00" in tg.api.sent_texts(CHAT_ID)[-1]
        and "/digest 09:00" in tg.api.sent_texts(CHAT_ID)[-1]
    )
    await tg.feed(f.message(GROUP, ADMIN, "/digest weekly someday 9", date=tg.now()))
    assert "/digest weekly MON 09:00" in tg.api.sent_texts(CHAT_ID)[-1]
    await tg.feed(f.message(GROUP, f.user(55, "Max"), "/digest 10:00", date=tg.now()))
    assert "Only the group's operators" in tg.api.sent_texts(CHAT_ID)[-1]
    await tg.feed(f.message(GROUP, ADMIN, "/digest off", date=tg.now()))
    assert not tg.app.job_queue.get_jobs_by_name(jobs.job_name(CHAT_ID, "daily"))
    assert not tg.app.job_queue.get_jobs_by_name(jobs.job_name(CHAT_ID, "weekly"))
    async with tg.db() as session:
        row = await session.get(DigestSchedule, CHAT_ID)
    assert (row.daily_at, row.weekly_at) == (None, None)


async def test_sync_job_picks_up_schedules_changed_elsewhere(tg):
    await add_bot(tg)
    tg.clock.set(at(10, 8))
    await jobs.on_startup(tg.app)
    await jobs.on_startup(tg.app)
    (sync,) = tg.app.job_queue.get_jobs_by_name("digest:sync")
    async with tg.services.db.begin() as session:  # another process set a schedule
        session.add(DigestSchedule(chat_id=CHAT_ID, daily_at="07:30", updated_at=tg.now()))
    await sync.run(tg.app)
    assert digest_job(tg).data.due.due_at == at(11, 7, 30) + spread_offset(CHAT_ID)
    async with tg.services.db.begin() as session:
        await session.delete(await session.get(DigestSchedule, CHAT_ID))
    await sync.run(tg.app)
    assert not tg.app.job_queue.get_jobs_by_name(jobs.job_name(CHAT_ID, "daily"))


async def test_a_job_from_an_outdated_schedule_does_nothing(tg):
    """Another process changed the time: this process's old job must not send."""
    await add_bot(tg)
    await schedule_daily(tg)
    stale = digest_job(tg)
    async with tg.services.db.begin() as session:
        row = await session.get(DigestSchedule, CHAT_ID)
        row.daily_at = "18:00"
    tg.clock.set(stale.data.due.due_at)
    tg.api.clear()
    await stale.run(tg.app)
    assert not tg.api.of("sendPhoto") and await runs(tg) == []
    assert digest_job(tg).data.at == "18:00"


def test_weekday_names():
    assert [parse_weekday(w) for w in ("MON", "sunday", "Fri", "周三", "星期日", "xx")] == [
        0,
        6,
        4,
        2,
        6,
        None,
    ]


def test_chart_is_a_png_of_the_expected_size():
    points = [ChartPoint(day(n), n % 5, n * 3, n % 2, n % 3) for n in range(30)]
    data = render_chart(ChartSpec("t", points, dau_target=4, messages_target=50))
    assert png_size(data) == (1200, 600)
    empty = render_chart(ChartSpec("t", [ChartPoint(day(0), 0, 0, 0, 0)]))
    assert png_size(empty) == (1200, 600)


def test_due_is_hashable_record():
    due = Due("daily", day(1), at(2, 9))
    assert due == Due("daily", day(1), at(2, 9))


@both_databases
async def test_two_processes_starting_after_downtime_send_once_and_report_the_missed_once(
    tg, engine, settings, clock
):
    """Both processes come back at 09:30 on day 11 after being down since before 09:00 on day
    10: the report due on day 10 (beyond its grace) is recorded missed once; the one due on day
    11 (within its grace) is sent once, by one of them, and lists the missed one; the report
    due on day 12 does not list it again."""
    await add_bot(tg)
    await feed_history(tg)
    await schedule_daily(tg)
    other_api = RecordingRequest(now=lambda: clock().timestamp())
    other = build_app(
        settings,
        engine=engine,
        request=other_api,
        clock=clock,
        rate_limiter=False,
        concurrent=False,
    )
    tg.api.clear()
    tg.clock.set(at(11, 9, 30))
    async with other:
        await asyncio.gather(jobs.on_startup(tg.app), jobs.on_startup(other))
        await asyncio.gather(jobs.on_startup(tg.app), jobs.on_startup(other))  # and again
        assert await runs(tg) == [
            ("daily", "2026-11-11", "missed"),
            ("daily", "2026-11-12", "sent"),
        ]
        texts = tg.api.sent_texts(CHAT_ID) + other_api.sent_texts(CHAT_ID)
        assert len(photos(tg.api)) + len(photos(other_api)) == 1 and len(texts) == 1
        assert "Daily report for 2026-11-11: missed" in texts[0]
        assert "2026-11-12 (Thu)" in texts[0]  # the late one covers day 11
        # Day 12's report, whichever process gets it: the missed one is not listed again.
        tg.api.clear()
        other_api.clear()
        due = digest_job(tg).data.due
        tg.clock.set(due.due_at)
        outcomes = await asyncio.gather(
            jobs.run_due(tg.app, CHAT_ID, due), jobs.run_due(other, CHAT_ID, due)
        )
        assert sorted(outcomes) == ["sent", "taken"]
        texts = tg.api.sent_texts(CHAT_ID) + other_api.sent_texts(CHAT_ID)
        assert len(texts) == 1 and "not delivered" not in texts[0]


@both_databases
async def test_a_new_process_after_a_restart_neither_resends_nor_skips(
    tg, engine, settings, clock
):
    """The first process sent day 10's report and stopped; a new process (a fresh Application
    and job queue on the same database) starts 10 minutes later: nothing is sent again, and
    its own job sends the next report, once."""
    await add_bot(tg)
    await feed_history(tg)
    await schedule_daily(tg)
    job = digest_job(tg)
    tg.clock.set(job.data.due.due_at)
    await job.run(tg.app)
    for old in tg.app.job_queue.jobs():  # the first process is gone
        old.schedule_removal()
    new_api = RecordingRequest(now=lambda: clock().timestamp())
    new = build_app(
        settings, engine=engine, request=new_api, clock=clock, rate_limiter=False, concurrent=False
    )
    tg.clock.advance(minutes=10)
    async with new:
        await jobs.on_startup(new)
        assert not new_api.of("sendPhoto") and not new_api.sent_texts()
        (next_job,) = new.job_queue.get_jobs_by_name(jobs.job_name(CHAT_ID, "daily"))
        assert next_job.data.due.period_start == day(10)
        tg.clock.set(next_job.data.due.due_at)
        await next_job.run(new)
        await jobs.on_startup(new)  # and a restart right after: still once
    assert len(new_api.of("sendPhoto")) == 1 and len(new_api.sent_texts(CHAT_ID)) == 1
    assert await runs(tg) == [("daily", "2026-11-11", "sent"), ("daily", "2026-11-12", "sent")]
