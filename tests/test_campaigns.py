"""Campaigns and their reviews (活动复盘): the review's numbers against the synthetic history of
tests/kpi_history.py worked out by hand, activities by time window, exactly-once end (command
and schedule racing, restarts, downtime), one open campaign per group, argument checks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select

from bot import campaigns as domain
from bot.app import build_app
from bot.campaigns import Campaign
from bot.charts import ChartPoint, ChartSpec, png_size, render_chart
from bot.lottery import Lottery
from bot.polls import Poll
from bot.text import utf16_len
from schedules import calendar as publishing
from schedules import campaigns as jobs
from tests import factories as f
from tests.conftest import both_databases
from tests.kpi_history import ADMIN, CHAT_ID, GROUP, A, B, add_bot, at, day, feed_history
from tests.recording import BOT_USER, RecordingRequest
from tests.telegram_html import visible_text

# Campaign: days 7..10 (2026-11-09..12); the period before it: days 3..6 (2026-11-05..08).
DATED = (
    "/campaign Autumn <b>push</b> from 2026-11-09 to 2026-11-12 "
    "goal dau 1 goal joins 4 goal messages 5"
)


async def say(tg, text: str, chat=GROUP, sender=ADMIN) -> str:
    await tg.feed(f.message(chat, sender, text, date=tg.now()))
    texts = tg.api.sent_texts(chat["id"])
    return texts[-1] if texts else ""


def photos(api: RecordingRequest, chat_id: int = CHAT_ID) -> list:
    return [c for c in api.of("sendPhoto") if c.params["chat_id"] == chat_id]


async def rows(tg) -> list[tuple[int, str, str]]:
    async with tg.db() as session:
        found = await session.scalars(select(Campaign).order_by(Campaign.id))
        return [(c.id, c.name, c.state) for c in found]


def other_app(settings, engine, clock) -> tuple:
    api = RecordingRequest(now=lambda: clock().timestamp())
    app = build_app(
        settings, engine=engine, request=api, clock=clock, rate_limiter=False, concurrent=False
    )
    return app, api


async def test_review_numbers_goals_sources_and_chart(tg):
    await add_bot(tg)
    await feed_history(tg)
    tg.clock.set(at(12, 9))  # the period is over: its review follows right away
    tg.api.clear()
    answer = await say(tg, DATED)
    confirmation, text = tg.api.sent_texts(CHAT_ID)
    assert "already over" in confirmation
    assert "Autumn &lt;b&gt;push&lt;/b&gt;</b> (#1) · 2026-11-09 00:00 → 2026-11-13 00:00" in (
        confirmation
    )
    assert answer == text
    (photo,) = photos(tg.api)
    assert png_size(photo.files["photo"][1]) == (1200, 600)
    assert "Campaign review: Autumn &lt;b&gt;push&lt;/b&gt;" in photo.params["caption"]
    # By hand (tests/kpi_history.py), campaign days 7..10 vs days 3..6:
    #   messages 0+3+1+1 = 5 vs 2+0+3+0 = 5; DAU (0+2+2+1)/4 = 1.25 vs (2+0+1+0)/4 = 0.75 → +67%
    #   WAU(10) = A C E B = 4 vs WAU(6) = A B D = 3; MAU(10) = A..E = 5 vs MAU(6) = A B D = 3
    #   stickiness 1.25/5 = 25% vs 0.75/3 = 25%; joins 2 (E, F) vs 0; leaves 0 vs 1 (D)
    #   check-ins 2 (day 9) → rate 2/5 = 40%; participants 2 (day 9) + 1 (day 10) → 3/5 = 60%
    #   D1 of day 7's cohort {E, F}: E came back on day 8 → 50%; D7 not measurable on day 12
    assert "2026-11-09 – 2026-11-12 (4-day campaign) · compared with 2026-11-05 – 2026-11-08" in (
        text
    )
    assert "Messages: <b>5</b> · ±0% vs prev. · 🎯 100% of 5" in text
    assert "Active members (DAU): <b>1.2</b> · ▲67% vs prev. · 🎯 125% of 1" in text
    assert "Weekly active (WAU): <b>4</b> · ▲33% vs prev." in text
    assert "Monthly active (MAU): <b>5</b> · ▲67% vs prev." in text
    assert "Stickiness (DAU/MAU): <b>25.0%</b> · ±0 pp vs prev." in text
    assert "Joined: <b>2</b> · ▲ from 0 vs prev. · 🎯 50% of 4" in text
    assert "Left: <b>0</b> · ▼100% vs prev." in text
    assert "Net growth: <b>2</b> · ▲300% vs prev." in text  # -1 → 2: up, against |-1|
    assert "Check-in rate: <b>40.0%</b> · ▲40.0 pp vs prev." in text
    assert "Participation: <b>60.0%</b> · ▲60.0 pp vs prev." in text
    assert "Retention D1: <b>50.0%</b>\nRetention D7: <b>—</b>" in text
    # 目标达成率: DAU 1.25/1, joins 2/4, messages 5/5.
    assert "🎯 <b>Goals</b>: 2 of 3 reached" in text
    assert "✅ Active members (DAU): 1.2 of goal 1 → 125%" in text
    assert "❌ Joined: 2 of goal 4 → 50%" in text
    assert "✅ Messages: 5 of goal 5 → 100%" in text
    assert "💡 DAU up 67% on the previous period; net +2 members; joins below target" in text
    assert "No planned posts, polls or lotteries in the campaign period." in text
    # E and F joined without a link: direct; D7 not over yet; E active in days 4..10, F never.
    assert "• direct/unknown: 2 joins · D7 — · still active 50%" in text
    assert await rows(tg) == [(1, "Autumn <b>push</b>", "reviewed")]

    # /campaigns: one line with the result; /campaign show posts the same review again.
    listing = await say(tg, "/campaigns")
    assert (
        "#1 <b>Autumn &lt;b&gt;push&lt;/b&gt;</b> · 2026-11-09 00:00 → 2026-11-13 00:00 · "
        "DAU 1.2 (+67%) · joins 2 (net +2) · goals 2/3"
    ) in listing
    tg.api.clear()
    again = await say(tg, "/campaign show autumn <b>push</b>")
    assert again == text and len(photos(tg.api)) == 1
    assert await say(tg, "/campaign show 1") == text
    assert "no campaign <b>7</b>" in (await say(tg, "/campaign show 7")).lower()

    # The dashboard panel: average DAU before (0.75) and during (1.25), a valid Plotly figure.
    import plotly.graph_objects as go

    async with tg.db() as session:
        figure = await domain.campaigns_panel(session, CHAT_ID, day(12), ZoneInfo("UTC"), "en")
        assert await domain.campaigns_panel(session, -1, day(12), ZoneInfo("UTC"), "en") is None
    go.Figure(figure)
    before, during = figure["data"]
    assert before["x"] == ["#1 Autumn &lt;b&gt;push&lt;/b&gt;"]
    assert (before["y"], during["y"]) == ([0.75], [1.25])


async def test_activities_inside_the_window_belong_to_the_campaign(tg):
    await add_bot(tg)
    await publishing.on_startup(tg.app)
    tg.clock.set(at(0, 9))
    await say(tg, "/lottery Early bird | draw in 2d")  # before the campaign: not part of it
    tg.clock.set(at(0, 10))
    assert "Campaign started" in await say(tg, "/campaign start Launch goal joins 1")
    tg.clock.set(at(0, 10, 1))
    await say(tg, "/schedule in 1h Hello <b>all</b>")
    tg.clock.set(at(0, 11, 1))
    await publishing.sweep(tg.app)
    for job in [j for j in tg.app.job_queue.jobs() if (j.name or "").startswith("delivery:")]:
        await job.run(tg.app)
    tg.clock.set(at(0, 12))
    await say(tg, "/poll Best <i>time</i>? | morning | evening")
    async with tg.db() as session:
        poll = await session.scalar(select(Poll))
    await tg.feed(f.poll_answer(poll.telegram_poll_id, A, [0]))
    await say(tg, "/lottery Hat | draw in 2d")
    async with tg.db() as session:
        hat = await session.scalar(select(Lottery).where(Lottery.prize == "Hat"))
    post = f.message_dict(GROUP, BOT_USER, "lottery", date=tg.now(), message_id=hat.message_id)
    await tg.feed(f.callback(B, f"lottery:join:{hat.id}", message=post))
    tg.clock.set(at(0, 15))
    tg.api.clear()
    text = await say(tg, "/campaign end")
    (photo,) = photos(tg.api)
    assert png_size(photo.files["photo"][1]) == (1200, 600)
    # Ended the day it started: one day (2026-11-02) against the day before.
    assert "2026-11-02 – 2026-11-02 (1-day campaign) · compared with 2026-11-01 – 2026-11-01" in (
        text
    )
    assert "🗓 Planned posts: 1 sent, 0 failed, 0 missed" in text
    assert "• 11-02 11:01 " in text and " — sent" in text
    # Active on day 0: Ada (commands), Ann (voted), Ben (entered): the poll's turnout 1 of 3.
    assert "🗳 Polls: 1, turnout 33%" in text
    assert "• Best &lt;i&gt;time&lt;/i&gt;? — 1 of 3 active members (33%), still open" in text
    assert "🎁 Lotteries: 1, 1 entries" in text
    assert f"• #{hat.id} Hat — 1 entrants (open)" in text and "Early bird" not in text
    assert "🎯 <b>Goals</b>: 0 of 1 reached" in text and "❌ Joined: 0 of goal 1 → 0%" in text
    assert await rows(tg) == [(1, "Launch", "reviewed")]


async def test_a_long_review_is_split_within_telegram_limits(tg):
    await add_bot(tg)
    tg.clock.set(at(0, 9))
    await say(tg, "/campaign start Many polls")
    question = "Which <one> " + "x" * 270 + "?"
    for number in range(16):
        await say(tg, f"/poll {question}{number} | yes | no")
    tg.api.clear()
    tg.clock.set(at(0, 12))
    await say(tg, "/campaign end")
    texts = tg.api.sent_texts(CHAT_ID)
    # Telegram's limit is on the text after its HTML is parsed (entities don't count).
    assert len(texts) >= 2 and all(utf16_len(visible_text(text)) <= 4096 for text in texts)
    joined = "\n".join(texts)
    assert "🗳 Polls: 16, turnout 0%" in joined and "and 1 more" in joined
    assert joined.count("Which &lt;one&gt; ") == 15 and "<one>" not in joined


async def plan_sprint(tg) -> int:
    """A campaign on days 1..2 (2026-11-03..04), planned on day 0: its review is due at
    2026-11-05 00:00 UTC."""
    await add_bot(tg)
    tg.clock.set(at(0, 9))
    answer = await say(tg, "/campaign Sprint from 2026-11-03 to 2026-11-04 goal dau 3")
    assert "Campaign planned" in answer
    (job,) = tg.app.job_queue.get_jobs_by_name(jobs.job_name(1))
    assert job.trigger.run_date == datetime(2026, 11, 5, tzinfo=UTC)
    return 1


@both_databases
async def test_command_and_schedule_racing_post_one_review(tg, engine, settings, clock):
    campaign_id = await plan_sprint(tg)
    (job,) = tg.app.job_queue.get_jobs_by_name(jobs.job_name(campaign_id))
    other, other_api = other_app(settings, engine, clock)
    tg.clock.set(at(3, 0))
    tg.api.clear()
    async with other:
        outcomes = await asyncio.gather(
            jobs.run_review(tg.app, campaign_id),
            jobs.run_review(other, campaign_id, ended_by=ADMIN["id"]),
        )
        await job.run(tg.app)  # the job firing too: nothing more
        await asyncio.gather(jobs.on_startup(tg.app), jobs.on_startup(other))  # restarts
    assert sorted(outcomes) == ["sent", "taken"]
    assert len(photos(tg.api)) + len(photos(other_api)) == 1
    texts = tg.api.sent_texts(CHAT_ID) + other_api.sent_texts(CHAT_ID)
    assert len(texts) == 1 and "2026-11-03 – 2026-11-04 (2-day campaign)" in texts[0]
    assert await rows(tg) == [(1, "Sprint", "reviewed")]
    assert "No campaign is running" in await say(tg, "/campaign end")


async def test_command_end_after_the_planned_end_keeps_the_planned_period(tg):
    campaign_id = await plan_sprint(tg)
    for job in tg.app.job_queue.get_jobs_by_name(jobs.job_name(campaign_id)):
        job.schedule_removal()  # the job never ran (e.g. the process was busy)
    tg.clock.set(at(3, 8))
    tg.api.clear()
    text = await say(tg, "/campaign end")
    assert "2026-11-03 – 2026-11-04 (2-day campaign)" in text and len(photos(tg.api)) == 1
    async with tg.db() as session:
        row = await session.get(Campaign, campaign_id)
    assert row.ends_at == datetime(2026, 11, 5, tzinfo=UTC) and row.ended_by == ADMIN["id"]


async def test_review_due_during_downtime_is_posted_late_once(tg):
    campaign_id = await plan_sprint(tg)
    for job in tg.app.job_queue.jobs():  # the process stops before the end
        job.schedule_removal()
    tg.clock.set(at(5, 10))  # back two days late
    tg.api.clear()
    await jobs.on_startup(tg.app)
    await jobs.on_startup(tg.app)  # and once more
    assert len(photos(tg.api)) == 1
    (text,) = tg.api.sent_texts(CHAT_ID)
    assert "Campaign review: Sprint" in text and "2026-11-03 – 2026-11-04 (2-day campaign)" in text
    assert await rows(tg) == [(campaign_id, "Sprint", "reviewed")]
    assert not tg.app.job_queue.get_jobs_by_name(jobs.job_name(campaign_id))


async def test_interrupted_review_is_not_reposted_but_can_be_shown(tg):
    await add_bot(tg)
    tg.clock.set(at(0, 9))
    await say(tg, "/campaign start Crash test")
    tg.clock.set(at(1, 9))
    # A process claims the review and dies before posting it.
    claimed = await domain.claim_review(tg.services.db, 1, now=tg.now(), worker="gone", ended_by=1)
    assert claimed is not None and claimed.state == "reviewing"
    tg.clock.advance(minutes=31)
    tg.api.clear()
    await jobs.on_startup(tg.app)
    assert not photos(tg.api) and not tg.api.sent_texts(CHAT_ID)
    assert await rows(tg) == [(1, "Crash test", "failed")]
    assert "review not delivered" in await say(tg, "/campaigns")
    tg.api.clear()
    text = await say(tg, "/campaign show crash test")
    assert "Campaign review: Crash test" in text and len(photos(tg.api)) == 1


async def test_one_open_campaign_per_group(tg):
    await add_bot(tg)
    tg.clock.set(at(0, 9))
    assert "Campaign started" in await say(tg, "/campaign start First")
    refused = await say(tg, "/campaign start Second")
    assert "already has a running or planned campaign" in refused and "<b>First</b>" in refused
    refused = await say(tg, "/campaign Third from 2026-12-01 to 2026-12-02")
    assert "already has" in refused
    status = await say(tg, "/campaign")
    assert "Running campaign:\n<b>First</b> (#1) · 2026-11-02 09:00 → …" in status
    await say(tg, "/campaign end")
    assert "Campaign started" in await say(tg, "/campaign start Second")
    assert "already has" in await say(tg, "/campaign End of year from 2026-12-20 to 2026-12-31")
    assert await rows(tg) == [(1, "First", "reviewed"), (2, "Second", "open")]  # not ended
    await say(tg, "/campaign cancel")
    planned = await say(tg, "/campaign End of year from 2026-12-20 to 2026-12-31")
    assert "Campaign planned" in planned and "<b>End of year</b> (#3)" in planned


@both_databases
async def test_two_operators_starting_at_once_make_one_campaign(tg):
    await add_bot(tg)
    spec = domain.CampaignSpec("X", tg.now(), None, {})
    made = await asyncio.gather(
        *(domain.create(tg.services.db, CHAT_ID, spec, by=1, now=tg.now()) for _ in range(5))
    )
    assert sum(1 for m in made if m is not None) == 1
    assert len(await rows(tg)) == 1


async def test_planned_campaign_can_be_cancelled_not_ended(tg):
    await plan_sprint(tg)
    assert "has not started yet" in await say(tg, "/campaign end")
    assert "dropped, without a review" in await say(tg, "/campaign cancel")
    assert not tg.app.job_queue.get_jobs_by_name(jobs.job_name(1))
    assert await rows(tg) == [(1, "Sprint", "cancelled")]
    assert "No campaigns yet" in await say(tg, "/campaigns")
    tg.clock.set(at(3, 1))
    tg.api.clear()
    await jobs.on_startup(tg.app)
    assert not photos(tg.api)


async def test_bad_arguments_say_what_is_wrong_with_an_example(tg):
    await add_bot(tg)
    tg.clock.set(at(0, 9))
    cases = {
        "/campaign start": "needs a name",
        "/campaign start X goal dau": "needs a metric and a value",
        "/campaign start X goal fun 3": "no metric <code>fun</code>",
        "/campaign start X goal retention_d7 150%": "not a valid goal for retention_d7",
        "/campaign start X goal dau -5": "not a valid goal for dau",
        "/campaign X from 2026-11-10 to 2026-11-11 dau 5": "I don't understand <code>dau</code>",
        "/campaign X from 2026-11-10 soon to 2026-11-11": "I don't understand <code>soon</code>",
        "/campaign X to 2026-11-10": "<code>start</code> to start now",
        "/campaign X from 2026-11-10": "last day with <code>to</code>",
        "/campaign X from 2026-11-10 to soon": "the date <code>soon</code>",
        "/campaign X from 2026-13-01 to 2026-12-01": "the date <code>2026-13-01</code>",
        "/campaign X from 2026-11-10 to 2026-11-09": "must end after it starts",
        "/campaign X from 2026-01-01 to 2027-06-01": "at most 366 days",
        "/campaign " + "n" * 65 + " from 2026-11-10 to 2026-11-11": "65 characters",
    }
    for command, problem in cases.items():
        answer = await say(tg, command)
        assert problem in answer, (command, answer)
        assert "<code>/campaign start Double 11 goal dau 200" in answer, command
    assert "Say which campaign" in await say(tg, "/campaign show")
    assert "No campaign is running" in await say(tg, "/campaign end")
    assert "operators" in await say(tg, "/campaign start Mine", sender=A)
    assert await rows(tg) == []


def test_dates_are_read_in_the_group_time_zone():
    shanghai = ZoneInfo("Asia/Shanghai")
    now = datetime(2026, 11, 20, tzinfo=UTC)
    words = "双十二 冲刺 from 2026-12-01 to 2026-12-14 goal dau 200 goal retention_d7 35%"
    spec = domain.parse_dated(words.split(), now=now, tz=shanghai)
    assert spec.name == "双十二 冲刺"
    assert spec.starts_at == datetime(2026, 11, 30, 16, tzinfo=UTC)  # 12-01 00:00 local
    assert spec.ends_at == datetime(2026, 12, 14, 16, tzinfo=UTC)  # end of 12-14 local
    assert spec.goals == {"dau": 200.0, "retention_d7": 0.35}
    timed = domain.parse_dated(
        "Live from 2026-12-01 20:00 to 2026-12-01 22:30".split(), now=now, tz=shanghai
    )
    assert (timed.starts_at, timed.ends_at) == (
        datetime(2026, 12, 1, 12, tzinfo=UTC),
        datetime(2026, 12, 1, 14, 30, tzinfo=UTC),
    )
    gifts = domain.parse_dated(
        "Gifts from Santa from 2026-12-24 to 2026-12-25".split(), now=now, tz=shanghai
    )
    assert gifts.name == "Gifts from Santa"
    started = domain.parse_start("Double 11 goal joins 50".split(), now=now)
    assert (started.name, started.starts_at, started.ends_at) == ("Double 11", now, None)


def test_campaign_days_follow_the_local_calendar():
    tz = ZoneInfo("Asia/Shanghai")
    row = Campaign(
        chat_id=1,
        name="x",
        starts_at=datetime(2026, 11, 30, 16, tzinfo=UTC),
        ends_at=datetime(2026, 12, 14, 16, tzinfo=UTC),
        created_at=datetime(2026, 11, 1, tzinfo=UTC),
    )
    later = datetime(2026, 12, 20, tzinfo=UTC)
    assert domain.campaign_days(row, tz, later) == (day(29), day(42))  # 12-01 .. 12-14
    # Ended early (or still running): up to the local day of "now".
    assert domain.campaign_days(row, tz, datetime(2026, 12, 3, 17, tzinfo=UTC)) == (
        day(29),
        day(32),
    )


async def test_review_in_chinese(tg):
    await add_bot(tg)
    await feed_history(tg)
    tg.clock.set(at(12, 9))
    await say(tg, "/language zh")
    tg.api.clear()
    text = await say(tg, DATED.replace("Autumn <b>push</b>", "秋季 拉新"))
    assert "📣 <b>活动复盘：秋季 拉新</b>" in text
    assert "🎯 <b>目标达成率</b>：达成 2/3" in text
    assert "对比 2026-11-05 – 2026-11-08" in text
    assert "活动期间没有计划内容、投票或抽奖。" in text
    assert len(photos(tg.api)) == 1
    assert "日活 1.2（+67%）· 入群 2（净增 +2） · 目标 2/3" in await say(tg, "/campaigns")


def test_campaign_span_is_shaded_on_a_png_of_the_usual_size():
    points = [ChartPoint(day(i), i % 3, i * 2, i % 2, 0) for i in range(8)]
    shaded = render_chart(ChartSpec("$x$ campaign", points, shade=(day(4), day(7))))
    plain = render_chart(ChartSpec("$x$ campaign", points))
    assert png_size(shaded) == png_size(plain) == (1200, 600)
    assert shaded != plain
    outside = render_chart(ChartSpec("t", points, shade=(day(20), day(21))))
    assert png_size(outside) == (1200, 600)


def test_list_line_of_an_open_campaign():
    tz = ZoneInfo("UTC")
    row = Campaign(
        id=3,
        chat_id=1,
        name="<Go>",
        starts_at=at(5),
        ends_at=None,
        created_at=at(5),
    )
    assert domain.list_line(row, "en", tz, at(6)) == (
        "#3 <b>&lt;Go&gt;</b> · 2026-11-07 12:00 → … · running"
    )
    assert domain.list_line(row, "en", tz, at(4)).endswith("· planned")


async def test_from_a_private_chat_the_review_goes_to_the_group(tg):
    await add_bot(tg)
    tg.clock.set(at(0, 9))
    chat = f.private(ADMIN)
    await tg.feed(f.callback(ADMIN, f"groups:{CHAT_ID}", chat=chat, date=tg.now()))
    started = await say(tg, "/campaign start Quiet launch", chat=chat)
    assert "Campaign started" in started and "<b>Quiet launch</b> (#1)" in started
    tg.clock.set(at(1, 9))
    tg.api.clear()
    assert "review is posted in the group" in await say(tg, "/campaign end", chat=chat)
    assert len(photos(tg.api)) == 1 and len(tg.api.sent_texts(CHAT_ID)) == 1
    tg.api.clear()
    shown = await say(tg, "/campaign show quiet launch", chat=chat)
    assert "Campaign review: Quiet launch" in shown
    assert len(photos(tg.api, ADMIN["id"])) == 1 and not tg.api.sent_texts(CHAT_ID)


async def test_the_job_posts_the_review_at_the_planned_end(tg):
    campaign_id = await plan_sprint(tg)
    (job,) = tg.app.job_queue.get_jobs_by_name(jobs.job_name(campaign_id))
    tg.clock.set(at(3, 0))
    tg.api.clear()
    await job.run(tg.app)
    assert len(photos(tg.api)) == 1 and len(tg.api.sent_texts(CHAT_ID)) == 1
    assert "Campaign review: Sprint" in tg.api.sent_texts(CHAT_ID)[0]
    assert await rows(tg) == [(campaign_id, "Sprint", "reviewed")]
    # Ada was active on day 0 (planning it): DAU 0.5 before, 0 during.
    assert (
        "Sprint</b> · 2026-11-03 00:00 → 2026-11-05 00:00 · DAU 0 (-100%) · joins 0"
        in await say(tg, "/campaigns")
    )


async def test_sync_picks_up_campaigns_planned_by_another_process(tg):
    await add_bot(tg)
    await jobs.on_startup(tg.app)
    spec = domain.CampaignSpec("Elsewhere", at(1), at(3), {})
    made = await domain.create(tg.services.db, CHAT_ID, spec, by=ADMIN["id"], now=at(0))
    (sync,) = tg.app.job_queue.get_jobs_by_name("campaign:sync")
    tg.clock.set(at(2))
    await sync.run(tg.app)
    (job,) = tg.app.job_queue.get_jobs_by_name(jobs.job_name(made.id))
    assert job.trigger.run_date == at(3)
    for old in tg.app.job_queue.get_jobs_by_name(jobs.job_name(made.id)):
        old.schedule_removal()  # this process misses the moment
    tg.clock.set(at(3, 13))
    tg.api.clear()
    await sync.run(tg.app)
    assert len(photos(tg.api)) == 1 and await rows(tg) == [(made.id, "Elsewhere", "reviewed")]
