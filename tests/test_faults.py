"""Fault drills through the real Application: Telegram's errors as Telegram sends them
(tests/recording.py `fault`), hostile names, long texts, and many concurrent updates.

The drills with a real process killed mid-run are in tests/test_fault_kill.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

import bot.sending
from bot import calendar as cal
from bot.app import build_app
from bot.checkins import Checkin as CheckIn
from bot.digest import DigestRun
from bot.lottery import Lottery, State
from bot.models import Chat, Member
from bot.points import LEDGER, PointsBalance
from bot.polls import PollVote
from bot.sending import ChatRateLimiter, send_text
from bot.text import split_message, utf16_len
from schedules import calendar as publishing
from schedules import digest as digest_jobs
from schedules.lottery import draw_and_announce, runtime_of
from tests import factories as f
from tests.calendar_support import deliveries, run_due, write_calendar
from tests.conftest import Harness
from tests.recording import RecordingRequest, flood
from tests.telegram_html import visible_text

ADMIN = f.user(10, "Ada")
A = f.group(-1001000000101, "Alpha")
B = f.group(-1001000000102, "Beta")
C = f.group(-1001000000103, "Gamma")
SEED = bytes(range(32))

HOSTILE = [
    "<b>",
    "&amp;",
    "a_b*c",
    '</a><a href="x">',
    "\u202eevil\u202c",
    "名" * 64,
    "😀" * 32 + "x" * 32,
]


@pytest.fixture
def settings(settings, tmp_path):
    return settings.model_copy(update={"content_dir": str(tmp_path / "content")})


@pytest.fixture
def delays(monkeypatch) -> list[float]:
    """The backoff waits `bot.sending.retry_network` asked for (none is really slept)."""
    asked: list[float] = []

    async def no_sleep(seconds: float) -> None:
        asked.append(seconds)

    monkeypatch.setattr(bot.sending, "sleep", no_sleep)
    return asked


@asynccontextmanager
async def limited_bot(settings, engine, clock) -> AsyncIterator[Harness]:
    """The Application as it runs in production: rate limiter and concurrent updates on."""
    api = RecordingRequest(now=lambda: clock().timestamp())
    app = build_app(settings, engine=engine, request=api, clock=clock)
    harness = Harness(app, api, clock)

    async def collect(update: object, context: Any) -> None:
        harness.errors.append(context.error)

    app.add_error_handler(collect)
    async with app:
        yield harness
        await harness.services.activity.stop()
    assert not harness.errors, harness.errors
    assert not api.violations, api.violations


async def join(tg: Harness, *chats: dict[str, Any]) -> None:
    for chat in chats:
        await tg.feed(f.my_chat_member(chat, ADMIN, "left", "administrator", date=tg.now()))
        tg.api.set_admins(chat["id"], ADMIN)
    tg.api.clear()


def texts_to(api: RecordingRequest, chat: dict[str, Any]) -> list[str]:
    return api.sent_texts(chat["id"])


# --- 429: only the chat that got it waits ----------------------------------------------------


async def test_flood_control_holds_that_chat_only_and_loses_nothing(settings, engine, clock):
    async with limited_bot(settings, engine, clock) as tg:
        await join(tg, A, B)
        limiter = tg.app.bot.rate_limiter
        assert isinstance(limiter, ChatRateLimiter)
        waits: list[float] = []
        waiting, release = asyncio.Event(), asyncio.Event()

        async def wait(seconds: float) -> None:  # the retry_after wait, held by the test
            waits.append(seconds)
            waiting.set()
            await release.wait()

        limiter.sleep = wait
        tg.api.fault("sendMessage", flood(5), chat_id=A["id"])
        alice, bob = f.user(31, "Alice"), f.user(32, "Bob")
        first = asyncio.create_task(tg.feed(f.message(A, alice, "/checkin", date=tg.now())))
        await waiting.wait()
        second = asyncio.create_task(send_text(tg.app.bot, tg.services, A["id"], "second"))
        await tg.feed(f.message(B, bob, "/checkin", date=tg.now()))  # B is not held
        for _ in range(20):
            await asyncio.sleep(0)
        assert waits == [5.1]
        assert len(texts_to(tg.api, B)) == 1 and "checked in" in texts_to(tg.api, B)[0].lower()
        assert len(texts_to(tg.api, A)) == 1  # only the refused attempt; "second" waits
        release.set()
        await asyncio.gather(first, second)
        sent_a = texts_to(tg.api, A)
        assert len(sent_a) == 3 and sent_a[0] == sent_a[1] and sent_a[2] == "second"
        async with tg.db() as session:
            assert await session.scalar(select(func.count()).select_from(CheckIn)) == 2


# --- 5xx and connection errors: retried with backoff; a timeout is not resent ---------------


async def test_digest_retries_server_and_connection_errors_with_backoff(tg, delays):
    await join(tg, A)
    tg.clock.set(datetime(2026, 11, 25, 8, tzinfo=UTC))
    await tg.feed(f.message(A, ADMIN, "/digest 09:00", date=tg.now()))
    tg.api.clear()
    tg.api.fault("sendPhoto", "500", chat_id=A["id"], times=2)
    tg.api.fault("sendMessage", "network", chat_id=A["id"])
    (job,) = tg.app.job_queue.get_jobs_by_name(digest_jobs.job_name(A["id"], "daily"))
    tg.clock.set(job.data.due.due_at)
    await job.run(tg.app)
    assert delays == [1.0, 3.0, 1.0]  # photo: two 500s; text: one refused connection
    assert len(tg.api.of("sendPhoto")) == 3 and len(texts_to(tg.api, A)) == 2
    async with tg.db() as session:
        states = list(await session.scalars(select(DigestRun.state)))
    assert states == ["sent"]


async def setup_lottery(tg: Harness, chat: dict[str, Any], entrants: list[dict]) -> Lottery:
    runtime_of(tg.app).seed_source = lambda: SEED
    await tg.feed(f.message(chat, ADMIN, "/lottery Mug | winners 1 | draw in 1h", date=tg.now()))
    async with tg.db() as session:
        lottery = await session.scalar(select(Lottery).order_by(Lottery.id.desc()).limit(1))
    for person in entrants:
        post = f.message_dict(chat, f.BOT_USER, "lottery", date=tg.now())
        post["message_id"] = lottery.message_id
        await tg.feed(f.callback(person, f"lottery:join:{lottery.id}", message=post))
    tg.api.clear()
    return lottery


async def lottery_row(tg: Harness, lottery_id: int) -> Lottery:
    async with tg.db() as session:
        return await session.get(Lottery, lottery_id, populate_existing=True)


async def test_draw_announcement_is_retried_on_5xx_and_not_resent_after_a_timeout(tg, delays):
    await join(tg, A, B)
    winner = f.user(41, "Winner <i>")
    first = await setup_lottery(tg, A, [winner])
    second = await setup_lottery(tg, B, [winner])
    tg.clock.advance(hours=1)

    tg.api.fault("sendMessage", "502", chat_id=A["id"], times=2)
    assert await draw_and_announce(tg.app, first.id)
    assert delays == [1.0, 3.0]
    announcements = [t for t in texts_to(tg.api, A) if "is drawn" in t]
    assert len(announcements) == 3 and len(set(announcements)) == 1  # 2 refused, 1 posted
    assert (await lottery_row(tg, first.id)).state == State.DRAWN

    tg.api.fault("sendMessage", "timeout", chat_id=B["id"])
    assert await draw_and_announce(tg.app, second.id)
    row = await lottery_row(tg, second.id)
    assert row.state == State.DRAWN and row.announcement_id is None
    # the result is put into the lottery post (an edit: harmless if the message did go out)
    (edit,) = [c.params for c in tg.api.of("editMessageText") if c.params["chat_id"] == B["id"]]
    assert edit["message_id"] == second.message_id and "Winner &lt;i&gt;" in edit["text"]
    tg.clock.advance(hours=1)
    await runtime_catch_up(tg)
    assert len([t for t in texts_to(tg.api, B) if "is drawn" in t]) == 1


async def runtime_catch_up(tg: Harness) -> None:
    from schedules.lottery import catch_up

    await catch_up(tg.app, schedule_all=False)


# --- Forbidden: that chat is deactivated, the others carry on ---------------------------------


async def test_digest_run_over_three_chats_with_the_middle_one_kicked(tg):
    await join(tg, A, B, C)
    tg.clock.set(datetime(2026, 11, 25, 8, tzinfo=UTC))
    for chat in (A, B, C):
        await tg.feed(f.message(chat, ADMIN, "/digest 09:00", date=tg.now()))
    tg.api.clear()
    tg.api.fault("sendPhoto", "kicked", chat_id=B["id"])
    tg.clock.set(datetime(2026, 11, 25, 9, 10, tzinfo=UTC))
    await digest_jobs.on_startup(tg.app)  # one run over every group (catching up)
    async with tg.db() as session:
        runs = dict((await session.execute(select(DigestRun.chat_id, DigestRun.state))).all())
        active = dict((await session.execute(select(Chat.id, Chat.active))).all())
    assert runs == {A["id"]: "sent", B["id"]: "failed", C["id"]: "sent"}
    assert active == {A["id"]: True, B["id"]: False, C["id"]: True}
    assert [len(texts_to(tg.api, chat)) for chat in (A, B, C)] == [1, 0, 1]
    assert not tg.app.job_queue.get_jobs_by_name(digest_jobs.job_name(B["id"], "daily"))


async def test_calendar_run_over_three_chats_kicked_server_error_and_timeout(tg):
    await join(tg, A, B, C)
    write_calendar(
        tg,
        f"""
        timezone: UTC
        targets: {{a: {A["id"]}, b: {B["id"]}, c: {C["id"]}}}
        posts:
          - {{id: news, to: [a, b, c], at: "2026-11-25 12:10", text: "News"}}
          - {{id: more, to: [a, b, c], at: "2026-11-25 18:00", text: "More"}}
        """,
    )
    await publishing.on_startup(tg.app)
    tg.api.fault("sendMessage", "502", chat_id=A["id"])
    tg.api.fault("sendMessage", "kicked", chat_id=B["id"])
    tg.api.fault("sendMessage", "timeout", chat_id=C["id"])
    tg.clock.advance(minutes=10)
    await run_due(tg)
    by_chat = {(r.chat_id, r.due_at.hour): r.state for r in await deliveries(tg)}
    assert by_chat == {
        (A["id"], 12): cal.PENDING,  # retried after a backoff
        (B["id"], 12): cal.FAILED,
        (C["id"], 12): cal.UNKNOWN,  # may have been posted: not resent
        (A["id"], 18): cal.PENDING,
        (B["id"], 18): cal.CANCELLED,  # the bot is out of that group
        (C["id"], 18): cal.PENDING,
    }
    for _ in range(3):
        tg.clock.advance(minutes=5)
        await publishing.sweep(tg.app)
        await run_due(tg)
    tg.clock.advance(hours=6)
    await publishing.sweep(tg.app)
    await run_due(tg)
    assert texts_to(tg.api, A) == ["News", "News", "More"]
    assert texts_to(tg.api, B) == ["News"]
    assert texts_to(tg.api, C) == ["News", "More"]


# --- long texts and hostile names ---------------------------------------------------------------


def test_split_counts_utf16_units_and_keeps_lines_whole():
    line = "😀" * 100  # 100 characters, 200 UTF-16 units
    text = "\n".join([line] * 60)  # 12,059 units
    parts = split_message(text)
    assert all(utf16_len(part) <= 4096 for part in parts)
    assert all(set(part.split("\n")) == {line} for part in parts)
    assert sum(part.count("\n") + 1 for part in parts) == 60
    assert len(parts) == 3  # 20 lines of 200 + 19 newlines = 4019 per part
    long_line = "名😀" * 3000  # one line over the limit: cut between characters
    pieces = split_message(long_line)
    assert "".join(pieces) == long_line and all(utf16_len(p) <= 4096 for p in pieces)


def test_the_recording_api_refuses_what_telegram_refuses():
    from tests.recording import contract_problems

    assert contract_problems("sendMessage", {"chat_id": 1, "text": "😀" * 2049})
    assert not contract_problems("sendMessage", {"chat_id": 1, "text": "😀" * 2048})
    assert contract_problems("sendPhoto", {"chat_id": 1, "photo": "x", "caption": "é" * 1025})
    html = {"chat_id": 1, "text": "<b>" + "&amp;" * 4096 + "</b>", "parse_mode": "HTML"}
    assert not contract_problems("sendMessage", html)  # 4096 visible characters
    assert contract_problems("sendMessage", {**html, "text": "<b>"})


async def test_hostile_names_through_every_feature_that_prints_names(tg):
    """Every text goes through the recording API, which refuses what Telegram would refuse
    ("can't parse entities", too long); the names must also come out as written."""
    await join(tg, A)
    people = [f.user(200 + i, name) for i, name in enumerate(HOSTILE)]
    await tg.feed(f.message(A, ADMIN, "/setwelcome Welcome {name}!", date=tg.now()))
    await tg.feed(f.message(A, ADMIN, "/welcome on", date=tg.now()))
    tg.api.clear()
    for person in people:
        await tg.feed(f.new_members(A, [person], date=tg.now()))
        await tg.feed(f.message(A, person, "hello", date=tg.now()))
        await tg.feed(f.message(A, person, "/checkin", date=tg.now()))
        await tg.feed(f.message(A, person, "/me", date=tg.now()))
    welcomes = visible("Welcome", tg.api, A)
    assert welcomes == [f"Welcome {p['first_name']}!" for p in people]
    for person in people:
        warn = f.message(A, ADMIN, "/warn spam", date=tg.now())
        warn["message"]["reply_to_message"] = f.message_dict(A, person, "x", date=tg.now())
        await tg.feed(warn)
    warned = visible("", tg.api, A)[-len(people) :]
    assert all(p["first_name"] in text for p, text in zip(people, warned, strict=True))
    tg.api.clear()
    await tg.feed(f.message(A, ADMIN, "/top 100", date=tg.now()))
    (board,) = visible("", tg.api, A)
    assert all(p["first_name"] in board for p in people)
    await tg.feed(f.message(A, ADMIN, "/inactive 1d", date=tg.now()))
    await tg.feed(f.message(A, ADMIN, "/warns", date=tg.now()))
    await tg.feed(f.message(A, ADMIN, "/modlog", date=tg.now()))
    tg.api.clear()

    lottery = await setup_lottery(tg, A, people)
    tg.clock.advance(hours=1)
    await draw_and_announce(tg.app, lottery.id)
    (announcement,) = visible("is drawn", tg.api, A)
    winner = next(p for p in people if p["first_name"] in announcement)
    assert winner

    tg.clock.advance(days=1)
    await tg.flush()
    tg.api.clear()
    await tg.feed(f.message(A, ADMIN, "/digest now", date=tg.now()))
    report = "\n".join(visible("", tg.api, A))
    assert sum(p["first_name"] in report for p in people) >= 5  # the top 5 contributors


def visible(prefix: str, api: RecordingRequest, chat: dict[str, Any]) -> list[str]:
    return [visible_text(t) for t in api.sent_texts(chat["id"]) if prefix in visible_text(t)]


async def test_a_long_leaderboard_of_long_names_is_split_within_the_limit(tg):
    await join(tg, A)
    for i in range(100):
        person = f.user(1000 + i, "名😀" * 21 + f"{i:02d}")  # 64 characters, 86 UTF-16 units
        await tg.feed(f.message(A, person, "/checkin", date=tg.now()))
    tg.api.clear()
    await tg.feed(f.message(A, ADMIN, "/top 100", date=tg.now()))
    parts = texts_to(tg.api, A)
    assert len(parts) >= 3 and all(utf16_len(visible_text(p)) <= 4096 for p in parts)
    lines = "\n".join(parts).split("\n")
    assert sum("名😀" in line for line in lines) == 100


# --- SQLite under many concurrent updates -------------------------------------------------------


async def test_sqlite_under_hundreds_of_concurrent_updates(tg):
    chats = [f.group(-1001000000500 - i, f"G{i}") for i in range(4)]
    await join(tg, *chats)
    tg.api.set_admins(chats[0]["id"], ADMIN)
    await tg.feed(f.message(chats[0], ADMIN, "/poll Lunch? | Pizza | Soup", date=tg.now()))
    (poll_call,) = tg.api.of("sendPoll")
    poll_id = next(iter(tg.api.polls))
    tg.api.clear()
    people = [f.user(3000 + i, f"P{i}") for i in range(80)]
    updates: list[dict[str, Any]] = []
    for i, person in enumerate(people):
        chat = chats[i % 4]
        updates.append(f.new_members(chat, [person], date=tg.now()))
        updates.append(f.message(chat, person, "签到", date=tg.now()))
        updates.append(f.message(chat, person, "/checkin", date=tg.now()))  # a second try
        updates.append(f.poll_answer(poll_id, person, [i % 2]))
    await tg.feed_concurrently(*updates)
    await tg.flush()
    async with tg.db() as session:
        checkins = await session.scalar(select(func.count()).select_from(CheckIn))
        ledger = await session.scalar(select(func.sum(LEDGER.c.amount)))
        balances = await session.scalar(select(func.sum(PointsBalance.points)))
        members = await session.scalar(
            select(func.count())
            .select_from(Member)
            .where(Member.user_id >= 3000, Member.joined_at.is_not(None))
        )
        votes = await session.scalar(select(func.count()).select_from(PollVote))
    assert checkins == 80 and members == 80 and votes == 80
    assert ledger == balances and ledger > 0
    replies = [t for t in tg.api.sent_texts() if "already" in t.lower()]
    assert len(replies) == 80  # each member's second try was answered "already checked in"
