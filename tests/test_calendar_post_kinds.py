"""Calendar posts that carry a poll or a lottery, through the real Application: posted at their
time by the polls and lotteries features, closed / drawn after close_after / draw_after, once
per delivery whatever retries, restarts or second processes do; previews show their summary."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from telegram.error import TimedOut

from bot import calendar as cal
from bot.calendar_file import load_calendar, preview
from bot.lottery import Lottery, LotteryEntry
from bot.polls import Poll, PollVote
from bot.post_kinds import Outgoing, post_kind
from schedules import calendar as publishing
from schedules.lottery import catch_up, runtime_of
from schedules.polls import close as close_poll
from tests import factories as f
from tests.calendar_support import (
    ADMIN,
    GROUP,
    NEWS,
    advance,
    another_bot,
    content_dir,
    deliveries,
    join,
    run_due,
    start,
    write_calendar,
)
from tests.conftest import both_databases
from tests.recording import BOT_USER

G, N = GROUP["id"], NEWS["id"]
ALICE = f.user(21, "Alice")
BOB = f.user(22, "Bob <B>")
SEED = bytes(range(1, 33))
COMMITMENT = hashlib.sha256(SEED).hexdigest()
FEATURE_JOBS = ("pollclose:", "lottery:", "lottery-count:")

POLLS = f"""
timezone: Asia/Shanghai
targets: {{main: {G}}}
posts:
  - id: lunch
    to: main
    at: 2026-11-25 21:00
    poll:
      question: "午饭吃什么？ · Lunch?"
      options: [面条 · Noodles, 米饭 · Rice]
      close_after: 2h
    pin: true
  - id: sum
    to: main
    at: 2026-11-25 21:00
    poll:
      question: "2 + 2 = ?"
      options: ["3", "4", "5"]
      quiz: 2
      explanation: Four.
      anonymous: true
    silent: true
"""

LOTTERY = f"""
timezone: Asia/Shanghai
targets: {{main: {G}}}
posts:
  - id: gift
    to: main
    at: 2026-11-25 21:00
    lottery:
      prize: "Gift <box>"
      winners: 1
      draw_after: 48h
      keyword: Open Sesame!
"""


@pytest.fixture
def settings(settings, tmp_path):
    return settings.model_copy(update={"content_dir": str(tmp_path / "content")})


# --- helpers ----------------------------------------------------------------------------------


async def run_feature_jobs(tg: Any, app: Any = None) -> int:
    """Run the polls' and lotteries' jobs that are due on the fake clock (as the JobQueue
    would), each once."""
    app = app or tg.app
    due = [
        job
        for job in app.job_queue.jobs()
        if job.name and job.name.startswith(FEATURE_JOBS) and job.trigger.run_date <= tg.clock()
    ]
    for job in due:
        job.schedule_removal()
        await job.run(app)
    return len(due)


async def rows(tg: Any, model: Any) -> list[Any]:
    async with tg.db() as session:
        return list(await session.scalars(select(model).order_by(model.id)))


def polls_sent(tg: Any) -> list[dict[str, Any]]:
    return [call.params for call in tg.api.of("sendPoll")]


def lottery_posts(tg: Any) -> list[dict[str, Any]]:
    """Every attempt at posting a lottery (refused ones too)."""
    return [c.params for c in tg.api.of("sendMessage") if c.params["text"].startswith("🎁")]


def announcements(tg: Any) -> list[str]:
    return [text for text in tg.api.sent_texts(G) if "is drawn" in text]


def press(lottery: Lottery, user: dict[str, Any], when: datetime) -> dict[str, Any]:
    post = f.message_dict(GROUP, BOT_USER, "lottery", date=when, message_id=lottery.message_id)
    return f.callback(user, f"lottery:join:{lottery.id}", message=post)


async def setup(tg: Any, calendar: str) -> None:
    await join(tg, GROUP)
    runtime_of(tg.app).seed_source = lambda: SEED
    write_calendar(tg, calendar)
    await start(tg)


def outgoing(tg: Any, key: str, delivery_id: int, app: Any = None) -> Outgoing:
    """What the scheduler hands a deliverer for delivery `delivery_id` of post `key`."""
    app = app or tg.app
    spec = next(p for p in load_calendar(content_dir(tg)).posts if p.key == key)
    return Outgoing(app, tg.services, G, spec, content_dir(tg), delivery_id)


# --- polls ------------------------------------------------------------------------------------


async def test_a_calendar_poll_goes_out_at_its_time_and_closes_after_close_after(tg):
    await setup(tg, POLLS)  # 12:00 UTC = 20:00 in Shanghai; the polls are due at 21:00
    await advance(tg, minutes=59)
    assert polls_sent(tg) == []
    await advance(tg, minutes=1)
    sent_polls = {params["question"]: params for params in polls_sent(tg)}
    lunch, quiz = sent_polls["午饭吃什么？ · Lunch?"], sent_polls["2 + 2 = ?"]
    assert lunch["chat_id"] == G and len(sent_polls) == 2
    assert [o["text"] for o in lunch["options"]] == ["面条 · Noodles", "米饭 · Rice"]
    assert lunch["is_anonymous"] is False and "type" not in lunch  # as /poll: not anonymous
    assert quiz["type"] == "quiz" and quiz["correct_option_ids"] == [1]  # `quiz: 2` from 1
    assert quiz["explanation"] == "Four." and quiz["is_anonymous"] is True
    assert quiz["disable_notification"] is True
    sent = {d.post_id: d for d in await deliveries(tg, state=cal.SENT)}
    polls = await rows(tg, Poll)
    assert len(polls) == 2 and len(sent) == 2
    by_delivery = {p.calendar_delivery_id: p for p in polls}
    assert {d.id: d.message_id for d in sent.values()} == {
        d: p.message_id for d, p in by_delivery.items()
    }
    poll = next(p for p in polls if p.kind == "regular")
    assert poll.close_at == tg.now() + timedelta(hours=2) and poll.created_by == BOT_USER["id"]
    assert next(p for p in polls if p.kind == "quiz").close_at is None  # open until /closepoll
    pins = [c.params for c in tg.api.of("pinChatMessage")]
    assert pins == [{"chat_id": G, "message_id": poll.message_id, "disable_notification": False}]
    # Members vote; the poll counts them like any /poll.
    for voter, option in ((ALICE, 1), (BOB, 1)):
        state = tg.api.vote(poll.telegram_poll_id, voter["id"], [option])
        await tg.feed(f.poll_answer(poll.telegram_poll_id, voter, [option]))
        await tg.feed(f.poll_state(state))
    async with tg.db() as session:
        assert await session.scalar(select(func.count()).select_from(PollVote)) == 2
    tg.api.clear()
    tg.clock.advance(hours=1, minutes=59)
    await run_feature_jobs(tg)
    assert tg.api.of("stopPoll") == []
    tg.clock.advance(minutes=1)
    assert await run_feature_jobs(tg) == 1
    await publishing.sweep(tg.app)
    await run_feature_jobs(tg)
    (stop,) = tg.api.of("stopPoll")
    assert stop.params == {"chat_id": G, "message_id": poll.message_id}
    (summary,) = [c.params for c in tg.api.of("sendMessage") if "Results" in c.params["text"]]
    assert "100% · 2 — 米饭 · Rice" in summary["text"]
    assert summary["reply_parameters"]["message_id"] == poll.message_id
    assert await close_poll(tg.app, "poll", poll.id) is False  # closed once, not again
    assert len(tg.api.of("stopPoll")) == 1
    states = {p.kind: p.state for p in await rows(tg, Poll)}
    assert states == {"regular": "closed", "quiz": "open"}
    assert len(tg.api.of("sendPoll")) == 0  # nothing posted again


async def test_a_group_that_removed_the_bot_cancels_its_poll_posts(tg):
    await setup(tg, POLLS)
    tg.api.fail("sendPoll", 403, "Forbidden: bot was kicked from the supergroup chat")
    await advance(tg, hours=1)
    states = sorted(d.state for d in await deliveries(tg))
    assert states == [cal.CANCELLED, cal.FAILED]  # the second was cancelled with the chat
    assert await rows(tg, Poll) == []
    assert not (await tg.services.chats.get(G)).active


# --- lotteries --------------------------------------------------------------------------------


async def test_a_calendar_lottery_is_posted_joined_and_drawn_once_at_draw_after(tg):
    await setup(tg, LOTTERY)
    await advance(tg, hours=1)
    (post,) = lottery_posts(tg)
    (lottery,) = await rows(tg, Lottery)
    (delivery,) = await deliveries(tg)
    assert delivery.state == cal.SENT and delivery.message_id == lottery.message_id
    assert lottery.calendar_delivery_id == delivery.id and lottery.state == "open"
    assert lottery.draw_at == tg.now() + timedelta(hours=48)
    assert lottery.commitment == COMMITMENT and lottery.created_by is None
    assert lottery.keyword == "open sesame"
    text = post["text"]
    assert f"Lottery #{lottery.id}" in text and "Gift &lt;box&gt;" in text
    assert COMMITMENT in text and SEED.hex() not in text
    assert "Draws at 2026-11-27 13:00 (UTC)" in text  # in the group's time zone
    button = post["reply_markup"]["inline_keyboard"][0][0]
    assert button["callback_data"] == f"lottery:join:{lottery.id}"
    # Members join: the button (twice, once counted) and the keyword (口令).
    await tg.feed(press(lottery, ALICE, tg.now()), press(lottery, ALICE, tg.now()))
    await tg.feed(f.message(GROUP, BOB, "open sesame", date=tg.now()))
    entries = await rows_of_entries(tg, lottery.id)
    assert sorted((e.user_id, e.via) for e in entries) == [
        (ALICE["id"], "button"),
        (BOB["id"], "keyword"),
    ]
    # The draw: not before draw_after, then exactly once whoever else tries.
    tg.clock.advance(hours=47, minutes=59)
    await run_feature_jobs(tg)
    assert announcements(tg) == []
    tg.clock.advance(minutes=1)
    await run_feature_jobs(tg)
    await run_feature_jobs(tg)
    await catch_up(tg.app, schedule_all=True)
    await tg.feed(f.message(GROUP, ADMIN, f"/draw {lottery.id}", date=tg.now()))
    (announcement,) = announcements(tg)
    assert SEED.hex() in announcement
    (drawn,) = await rows(tg, Lottery)
    assert drawn.state == "drawn" and drawn.drawn_at == tg.now()
    assert len(lottery_posts(tg)) == 1  # the post was only ever edited


CONDITIONS = f"""
timezone: Asia/Shanghai
targets: {{main: {G}}}
posts:
  - id: regulars
    to: main
    at: 2026-11-25 21:00
    lottery:
      prize: Mug
      winners: 2
      draw_after: 1d
      min_points: 50
      checkins: 3/7
      member: 30d
      joined_after: 2026-11-01
"""


async def test_a_calendar_lottery_has_the_conditions_of_the_file(tg):
    await setup(tg, CONDITIONS)
    await advance(tg, hours=1)
    (lottery,) = await rows(tg, Lottery)
    assert (lottery.winners, lottery.min_points) == (2, 50)
    assert (lottery.checkins_needed, lottery.checkins_days) == (3, 7)
    assert lottery.member_seconds == 30 * 86400
    # 2026-11-01 00:00 in the file's zone (Asia/Shanghai)
    assert lottery.joined_after == datetime(2026, 10, 31, 16, 0, tzinfo=UTC)
    (post,) = lottery_posts(tg)
    for line in ("at least 50 points", "checked in on 3 of the last 7 days", "at least 30 days"):
        assert line in post["text"]
    await tg.feed(press(lottery, ALICE, tg.now()))
    (answer,) = [c.params for c in tg.api.of("answerCallbackQuery")]
    assert answer["show_alert"] is True and "at least 50 points" in answer["text"]
    assert await rows_of_entries(tg, lottery.id) == []


async def rows_of_entries(tg: Any, lottery_id: int) -> list[LotteryEntry]:
    async with tg.db() as session:
        return list(
            await session.scalars(
                select(LotteryEntry).where(LotteryEntry.lottery_id == lottery_id)
            )
        )


# --- exactly once per delivery ----------------------------------------------------------------


async def test_a_delivery_whose_outcome_was_lost_is_not_posted_again(tg, monkeypatch):
    """The process dies after posting, before recording the delivery: the claim goes stale
    ('unknown'), and /postnow finds the poll and the lottery instead of posting new ones."""
    calendar = POLLS + LOTTERY.split("posts:\n", 1)[1]
    await setup(tg, calendar)

    async def died(*args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr(publishing, "_record_sent", died)
    await advance(tg, hours=1)
    assert len(polls_sent(tg)) == 2 and len(lottery_posts(tg)) == 1
    monkeypatch.undo()
    await advance(tg, minutes=11)  # the sweep finds the stale claims
    unknown = await deliveries(tg, state=cal.UNKNOWN)
    assert len(unknown) == 3
    for row in unknown:
        await tg.feed(f.message(GROUP, ADMIN, f"/postnow {row.id}", date=tg.now()))
    assert len(polls_sent(tg)) == 2 and len(lottery_posts(tg)) == 1  # none posted again
    polls, lotteries = await rows(tg, Poll), await rows(tg, Lottery)
    assert len(polls) == 2 and len(lotteries) == 1
    sent = {d.id: d.message_id for d in await deliveries(tg, state=cal.SENT)}
    recorded = {p.calendar_delivery_id: p.message_id for p in polls}
    recorded[lotteries[0].calendar_delivery_id] = lotteries[0].message_id
    assert sent == recorded


async def test_retries_after_telegram_failures_make_one_lottery(tg):
    await setup(tg, LOTTERY)
    # Flood control: the reserved lottery nobody saw is withdrawn; the retry opens it afresh.
    tg.api.fail("sendMessage", 429, "Too Many Requests: retry after 5", retry_after=5)
    await advance(tg, hours=1)
    (row,) = await deliveries(tg)
    assert row.state == cal.PENDING and row.attempts == 1
    assert await rows(tg, Lottery) == []
    await advance(tg, seconds=6)
    (lottery,) = await rows(tg, Lottery)
    assert lottery.message_id is not None and (await deliveries(tg))[0].state == cal.SENT
    assert lottery.draw_at == tg.now() + timedelta(hours=48)  # from when it went out
    refused, posted = lottery_posts(tg)
    assert f"lottery:join:{lottery.id}" in str(posted["reply_markup"])


async def test_a_timed_out_lottery_post_keeps_its_lottery_and_postnow_posts_that_one(tg):
    await setup(tg, LOTTERY)
    tg.api.raise_on("sendMessage", TimedOut("no answer"))
    await advance(tg, hours=1)
    (row,) = await deliveries(tg)
    assert row.state == cal.UNKNOWN
    # Telegram may have posted it: the lottery stays open, with its draw scheduled.
    (lottery,) = await rows(tg, Lottery)
    assert lottery.state == "open" and lottery.message_id is None
    assert tg.app.job_queue.get_jobs_by_name(f"lottery:{lottery.id}")
    await tg.feed(f.message(GROUP, ADMIN, f"/postnow {row.id}", date=tg.now()))
    (again,) = await rows(tg, Lottery)
    assert again.id == lottery.id and again.message_id is not None
    assert again.draw_at == lottery.draw_at
    assert (await deliveries(tg))[0].message_id == again.message_id


async def test_a_deliverer_run_twice_for_one_delivery_posts_once(tg):
    """Even past the scheduler's claim (a bug, an operator, a race): one poll, one lottery."""
    await setup(tg, POLLS + LOTTERY.split("posts:\n", 1)[1])
    poll_out, lottery_out = outgoing(tg, "lunch", 9001), outgoing(tg, "gift", 9002)
    first = await post_kind("poll").deliver(poll_out)
    assert await post_kind("poll").deliver(poll_out) == first
    posted = await post_kind("lottery").deliver(lottery_out)
    assert await post_kind("lottery").deliver(lottery_out) == posted
    assert len(polls_sent(tg)) == 1 and len(lottery_posts(tg)) == 1
    assert len(await rows(tg, Poll)) == 1 and len(await rows(tg, Lottery)) == 1


async def test_an_attempt_that_loses_the_race_withdraws_its_poll(tg, monkeypatch):
    """Another attempt recorded the delivery's poll after this one looked: the loser's insert
    fails on the UNIQUE delivery id, so it deletes its message and answers with the winner's."""
    import bot.polls_calendar as poll_posts

    await setup(tg, POLLS)
    out = outgoing(tg, "lunch", 9001)
    winner = await post_kind("poll").deliver(out)
    looked = poll_posts._poll_of
    calls = 0

    async def looked_too_early(out: Outgoing) -> Any:
        nonlocal calls
        calls += 1
        return None if calls == 1 else await looked(out)

    monkeypatch.setattr(poll_posts, "_poll_of", looked_too_early)
    assert await post_kind("poll").deliver(out) == winner
    first, second = polls_sent(tg)
    (deleted,) = tg.api.of("deleteMessage")
    (poll,) = await rows(tg, Poll)
    assert poll.message_id == winner and deleted.params["message_id"] != winner
    assert tg.app.job_queue.get_jobs_by_name(f"pollclose:{poll.id}")


@both_databases
async def test_two_processes_post_each_poll_and_lottery_once(tg, settings, database_url):
    await setup(tg, POLLS + LOTTERY.split("posts:\n", 1)[1])
    async with another_bot(settings, database_url, tg.clock) as other:
        runtime_of(other.app).seed_source = lambda: SEED
        other.api._poll_ids = itertools.count(8_000_000_000_000_000_001)  # Telegram's ids differ
        await publishing.on_startup(other.app)
        tg.clock.advance(hours=1)
        await asyncio.gather(run_due(tg), run_due(other))
        calls = [*tg.api.calls, *other.api.calls]
    assert sum(c.method == "sendPoll" for c in calls) == 2
    assert sum(c.method == "sendMessage" and "Lottery #" in c.params["text"] for c in calls) == 1
    assert len(await rows(tg, Poll)) == 2 and len(await rows(tg, Lottery)) == 1
    assert sorted(d.state for d in await deliveries(tg)) == [cal.SENT] * 3


# --- preview and approval ---------------------------------------------------------------------


async def test_preview_and_calendar_list_show_poll_and_lottery_summaries(tg):
    await setup(tg, POLLS + LOTTERY.split("posts:\n", 1)[1])
    planned = preview(load_calendar(content_dir(tg)), tg.now(), tg.now() + timedelta(days=1))
    assert [(s.key, s.summary()) for _, s, _ in planned] == [
        ("gift", "lottery: Gift <box> (1 winner, draws 2d after posting; keyword open sesame)"),
        (
            "lunch",
            "poll: 午饭吃什么？ · Lunch? [面条 · Noodles / 米饭 · Rice] (closes 2h after posting)",
        ),
        ("sum", "quiz: 2 + 2 = ? [3 / 4 ✓ / 5] (anonymous, open until /closepoll)"),
    ]
    await tg.feed(f.message(GROUP, ADMIN, "/calendar", date=tg.now()))
    listing = tg.api.sent_texts(G)[-1]
    assert "lottery: Gift &lt;box&gt; (1 winner" in listing
    assert "quiz: 2 + 2 = ? [3 / 4 ✓ / 5]" in listing
    await advance(tg, hours=1)
    sent = [s.key for _, s, _ in planned]
    assert len(polls_sent(tg)) + len(lottery_posts(tg)) == len(sent)


async def test_approval_previews_show_the_summary_and_post_nothing_real(tg):
    await join(tg, GROUP, NEWS)
    runtime_of(tg.app).seed_source = lambda: SEED
    calendar = POLLS + LOTTERY.split("posts:\n", 1)[1]
    calendar = calendar.replace("targets:", f"approval: required\nreview: {{chat: {N}}}\ntargets:")
    calendar = calendar.replace("2026-11-25 21:00", "2026-11-26 21:00")
    write_calendar(tg, calendar)
    await start(tg)
    await advance(tg, hours=13)  # 12 h before 21:00 Shanghai the next day
    previews = tg.api.sent_texts(N)
    assert len(previews) == 3
    assert any(
        "lottery: Gift &lt;box&gt; (1 winner, draws 2d after posting" in p for p in previews
    )
    assert any("poll: 午饭吃什么？ · Lunch?" in p for p in previews)
    assert any("quiz: 2 + 2 = ?" in p for p in previews)
    assert polls_sent(tg) == [] and lottery_posts(tg) == []  # no real poll or lottery
    assert await rows(tg, Lottery) == [] and await rows(tg, Poll) == []
    # Approve all three; at their time they go out.
    for call in tg.api.of("sendMessage"):
        if call.params["chat_id"] == N:
            data = call.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
            await tg.feed(f.callback(ADMIN, data, chat=NEWS, date=tg.now()))
    await advance(tg, hours=12)
    assert len(polls_sent(tg)) == 2 and len(lottery_posts(tg)) == 1
    assert [p["chat_id"] for p in polls_sent(tg)] == [G, G]
