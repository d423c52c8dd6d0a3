"""Fault drills through the real Application: Telegram's errors as Telegram sends them
(tests/recording.py `fault`), hostile names, long texts, and many concurrent updates.

The last drill runs the bot as a real process (`community-bot run` against
tests/standin.py) and kills it with SIGKILL mid-run, three times.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

import bot.sending
from bot import calendar as cal
from bot.app import build_app, startup
from bot.checkins import Checkin as CheckIn
from bot.db import create_engine, upgrade_database_async
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
from tests.conftest import TEST_TOKEN, FakeClock, Harness, both_databases
from tests.recording import RecordingRequest, flood
from tests.standin import BotApiStandIn
from tests.telegram_html import check_html, visible_text

ROOT = Path(__file__).resolve().parent.parent
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


@both_databases
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


@both_databases
async def test_a_draw_announcement_that_keeps_failing_is_announced_by_a_later_sweep(tg, delays):
    await join(tg, A)
    lottery = await setup_lottery(tg, A, [f.user(41, "Winner")])
    tg.clock.advance(hours=1)
    tg.api.fault("sendMessage", "500", chat_id=A["id"], times=4)  # Telegram is down a while
    assert await draw_and_announce(tg.app, lottery.id)
    row = await lottery_row(tg, lottery.id)
    assert (row.state, row.announcing_at) == (State.DRAWING, None)  # surely not sent
    tg.clock.advance(minutes=9)
    await runtime_catch_up(tg)
    assert len([t for t in texts_to(tg.api, A) if "is drawn" in t]) == 4  # within the lease
    tg.clock.advance(minutes=2)
    await runtime_catch_up(tg)
    assert len([t for t in texts_to(tg.api, A) if "is drawn" in t]) == 5
    assert (await lottery_row(tg, lottery.id)).state == State.DRAWN
    assert delays == [1.0, 3.0, 10.0]


async def runtime_catch_up(tg: Harness) -> None:
    from schedules.lottery import catch_up

    await catch_up(tg.app, schedule_all=False)


# --- Forbidden: that chat is deactivated, the others carry on ---------------------------------


@both_databases
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


@both_databases
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
    people.append(f.user(299, "<i>", last_name="&lt;/i&gt;"))  # full_name: "<i> &lt;/i&gt;"
    names = [" ".join(filter(None, (p["first_name"], p.get("last_name")))) for p in people]
    for command in ("/setwelcome Welcome {name}!", "/welcome on", "/filter spam warn"):
        await tg.feed(f.message(A, ADMIN, command, date=tg.now()))
    tg.api.clear()
    for person in people:
        await tg.feed(f.new_members(A, [person], date=tg.now()))
        await tg.feed(f.message(A, person, "hello", date=tg.now()))
        await tg.feed(f.message(A, person, "/checkin", date=tg.now()))
        await tg.feed(f.message(A, person, "/me", date=tg.now()))
    assert visible("Welcome", tg.api, A) == [f"Welcome {name}!" for name in names]
    assert all(any(f"{name} checked in" in t for t in visible("", tg.api, A)) for name in names)
    tg.api.clear()
    for person in people:
        await tg.feed(f.message(A, person, "buy spam now", date=tg.now()))  # a filter hit
        warn = f.message(A, ADMIN, "/warn rude", date=tg.now())
        warn["message"]["reply_to_message"] = f.message_dict(A, person, "x", date=tg.now())
        await tg.feed(warn)
        points = f.message(A, ADMIN, "/points +5 thanks", date=tg.now())
        points["message"]["reply_to_message"] = f.message_dict(A, person, "x", date=tg.now())
        await tg.feed(points)
    texts = visible("", tg.api, A)
    assert len(texts) == 3 * len(people)
    for i, name in enumerate(names):  # the filter hit, the warning, the points change
        assert all(name in text for text in texts[3 * i : 3 * i + 3]), texts[3 * i : 3 * i + 3]
    tg.api.clear()
    await tg.feed(f.message(A, ADMIN, "/top 100", date=tg.now()))
    await tg.feed(f.message(A, ADMIN, "/modlog", date=tg.now()))
    board, log = visible("", tg.api, A)
    assert all(name in board and name in log for name in names)

    lottery = await setup_lottery(tg, A, people)
    tg.clock.advance(hours=1)
    await draw_and_announce(tg.app, lottery.id)
    (announcement,) = visible("is drawn", tg.api, A)
    assert sum(name in announcement for name in names) == 1  # the one winner

    tg.clock.advance(days=1)
    await tg.flush()
    tg.api.clear()
    await tg.feed(f.message(A, ADMIN, "/digest now", date=tg.now()))
    report = "\n".join(visible("", tg.api, A))
    assert all(name in report for name in names)  # top contributors, new members
    tg.clock.advance(days=1)
    tg.api.clear()
    await tg.feed(f.message(A, ADMIN, "/inactive 1d", date=tg.now()))
    (silent,) = visible("", tg.api, A)
    assert all(name in silent for name in names)
    await tg.feed(f.message(A, ADMIN, "/verify on", date=tg.now()))
    newcomer = f.user(300, '</a><a href="tg://user?id=1">x')
    await tg.feed(f.new_members(A, [newcomer], date=tg.now()))
    assert visible(newcomer["first_name"], tg.api, A)  # the join check names the newcomer


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

    async def flushes() -> None:  # the activity buffer is written meanwhile, as in production
        for _ in range(30):
            await asyncio.sleep(0)
            await tg.flush()

    await asyncio.gather(tg.feed_concurrently(*updates), flushes())
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


# --- kill -9 mid-run, then restart ---------------------------------------------------------

MEMBERS = [f.user(600 + i, f"Member {i} <x>") for i in range(6)]


@asynccontextmanager
async def in_process(settings, url: str, clock) -> AsyncIterator[Harness]:
    """The bot in this process on the drill's database, started as `community-bot run` starts
    it (every on_startup hook); its JobQueue does not run by itself."""
    engine = create_engine(url)
    api = RecordingRequest(now=lambda: clock().timestamp())
    app = build_app(
        settings, engine=engine, request=api, clock=clock, rate_limiter=False, concurrent=False
    )
    harness = Harness(app, api, clock)
    try:
        async with app:
            await startup(app)
            yield harness
            await harness.services.activity.stop()
    finally:
        await engine.dispose()
    assert not api.violations, api.violations


class BotProcess:
    """`community-bot run` against the stand-in, killed with SIGKILL at a chosen moment."""

    def __init__(self, api: BotApiStandIn, folder: Path, url: str, name: str) -> None:
        self.log = folder / f"{name}.log"
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"WEBHOOK_URL", "BOT_OWNERS", "BOT_LANGUAGE"}
        }
        env.update(
            BOT_TOKEN=TEST_TOKEN,
            TELEGRAM_API_BASE_URL=api.base_url,
            DATABASE_URL=url,
            CONTENT_DIR=str(folder / "content"),
            BOT_TIMEZONE="UTC",
            PYTHONPATH=str(ROOT),
        )
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bot.cli", "run"],
                cwd=folder,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 30.0, why: Callable[[], Any] = str
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"timed out: {why()}\n{self.log.read_text()}"
            time.sleep(0.05)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


def query(path: Path, sql: str, *args: Any) -> list[tuple]:
    with closing(sqlite3.connect(path, timeout=10)) as connection:
        return connection.execute(sql, args).fetchall()


def is_text(method: str, params: dict[str, Any], chat_id: int, words: str) -> bool:
    return (
        method == "sendMessage"
        and int(params["chat_id"]) == chat_id
        and words in str(params.get("text"))
    )


async def test_kill_9_mid_draw_digest_calendar_and_activity_then_restart(settings, tmp_path):
    """Three SIGKILLs of a real bot process — while announcing a draw, while sending a digest,
    while sending a calendar post and recording activity — each followed by a restart; then a
    start an hour later, when every lease has expired. Nothing is sent twice, nothing due is
    forgotten (what may have been sent is recorded as such), and the ledger adds up."""
    path = tmp_path / "bot.db"
    url = f"sqlite+aiosqlite:///{path}"
    await upgrade_database_async(url)
    real = datetime.now(UTC).replace(microsecond=0)
    settings = settings.model_copy(
        update={"content_dir": str(tmp_path / "content"), "database_url": url}
    )
    news_at = (real - timedelta(minutes=30)).strftime("%Y-%m-%d %H:%M")
    digest_at = (real - timedelta(minutes=40)).strftime("%H:%M")
    if (real - timedelta(minutes=40)).date() != real.date():
        pytest.skip("the drill's digest time would fall on yesterday (just after midnight UTC)")
    clock = FakeClock(real - timedelta(minutes=90))
    async with in_process(settings, url, clock) as tg:  # the state before the drill
        await join(tg, A, B, C)
        (tmp_path / "content").mkdir()
        (tmp_path / "content" / "calendar.yaml").write_text(
            f"timezone: UTC\ngrace: 2h\ntargets: {{a: {A['id']}, b: {B['id']}, c: {C['id']}}}\n"
            f'posts:\n  - {{id: news, to: [a, b, c], at: "{news_at}", text: "News"}}\n',
            encoding="utf-8",
        )
        await publishing.reload_calendar(tg.app)
        entrants = MEMBERS[:3]
        await tg.feed(f.message(A, ADMIN, "/lottery Hat | winners 1 | draw in 30m", date=tg.now()))
        async with tg.db() as session:
            lottery = await session.scalar(select(Lottery).order_by(Lottery.id.desc()).limit(1))
        for person in entrants:
            post = f.message_dict(A, f.BOT_USER, "lottery", date=tg.now())
            post["message_id"] = lottery.message_id
            await tg.feed(f.callback(person, f"lottery:join:{lottery.id}", message=post))
        await tg.feed(f.message(C, ADMIN, f"/digest {digest_at}", date=tg.now()))
    assert query(path, "select count(*) from calendar_delivery where state = 'pending'") == [(3,)]

    with BotApiStandIn(TEST_TOKEN) as api:
        for chat in (A, B, C):
            api.answers.set_admins(chat["id"], ADMIN)
        # 1: killed while Telegram has the draw's announcement
        announcing = api.hold(lambda m, p: is_text(m, p, A["id"], "is drawn"))
        bot = BotProcess(api, tmp_path, url, "p1")
        bot.wait_for(announcing.is_set)
        bot.kill()
        api.release()
        assert query(path, "select state from lottery where id = ?", lottery.id) == [("drawing",)]

        # 2: restarted; killed while Telegram has the digest's text (its chart went out)
        digesting = api.hold(lambda m, p: is_text(m, p, C["id"], "Daily report"))
        bot = BotProcess(api, tmp_path, url, "p2")
        bot.wait_for(digesting.is_set)
        bot.kill()
        api.release()
        assert query(path, "select state from digest_run") == [("sending",)]

        # 3: restarted; check-ins and chatter arrive while the calendar sends to A, B and C;
        # killed while Telegram has B's post, with the last messages still in the buffer
        posting = api.hold(lambda m, p: is_text(m, p, B["id"], "News"))
        ((before,),) = query(
            path, "select sum(messages) from daily_activity where chat_id = ?", A["id"]
        )
        first = [f.message(A, m, f"hi {i}", date=real) for m in MEMBERS for i in range(3)]
        checkins = [f.message(A, m, "签到", date=real) for m in MEMBERS]
        api.updates.extend(first + checkins)
        bot = BotProcess(api, tmp_path, url, "p3")

        def settled() -> tuple[Any, ...]:
            replies = [p for p in api.of("sendMessage", A["id"]) if "checked in" in p["text"]]
            return (
                posting.is_set(),
                len(replies),
                query(path, "select count(*) from calendar_delivery where state = 'sent'"),
                query(path, "select sum(messages) from daily_activity where chat_id = ?", A["id"]),
            )

        expected = (True, len(MEMBERS), [(2,)], [(before + len(first) + len(checkins),)])
        bot.wait_for(lambda: settled() == expected, why=settled)  # messages flushed: ≤ 1 s
        last = [f.message(A, m, "bye", date=real) for m in MEMBERS]
        api.updates.extend(last)
        bot.wait_for(lambda: api.acknowledged >= last[-1]["update_id"])
        bot.kill()
        api.release()
        assert not api.violations, api.violations

        # every send the three processes made, counted where Telegram would count them
        announcements = [p for p in api.of("sendMessage", A["id"]) if "is drawn" in p["text"]]
        digests = [p for p in api.of("sendMessage", C["id"]) if "Daily report" in p["text"]]
        posts = {
            chat["id"]: len([p for p in api.of("sendMessage", chat["id"]) if p["text"] == "News"])
            for chat in (A, B, C)
        }
        assert len(announcements) == 1 and len(digests) == 1
        assert len(api.of("sendPhoto", C["id"])) == 1
        assert posts == {A["id"]: 1, B["id"]: 1, C["id"]: 1}

    # an hour later every lease has expired: what may have been sent is not sent again
    later = FakeClock(datetime.now(UTC) + timedelta(hours=1))
    async with in_process(settings, url, later) as tg:
        await run_due(tg)
        sent = [c for c in tg.api.calls if c.method in ("sendMessage", "sendPhoto")]
        assert sent == []
        (edit,) = tg.api.of("editMessageText")  # the draw's result went into the lottery post
        assert (
            edit.params["message_id"] == lottery.message_id and "is drawn" in edit.params["text"]
        )
    states = dict(query(path, "select chat_id, state from calendar_delivery"))
    assert states == {A["id"]: "sent", B["id"]: "unknown", C["id"]: "sent"}
    assert query(path, "select state, announcement_id from lottery where id = ?", lottery.id) == [
        ("drawn", None)
    ]
    assert query(path, "select state, error from digest_run") == [("failed", "interrupted")]
    assert query(path, "select count(*) from checkin") == [(len(MEMBERS),)]
    ledger = query(path, "select user_id, sum(amount) from points_ledger group by user_id")
    balances = query(path, "select user_id, points from points_balance")
    # one check-in each: 10 points, the day's first +5 (hand-computed from the default rules)
    assert sorted(ledger) == sorted(balances) == [(600, 15)] + [(m["id"], 10) for m in MEMBERS[1:]]
    (messages,) = query(
        path, "select sum(messages) from daily_activity where chat_id = ?", A["id"]
    )
    # the last second of message counts may be lost to a kill -9 (docs/faults.md), never doubled
    flushed = before + len(first) + len(checkins)
    assert flushed <= messages[0] <= flushed + len(last)


async def test_a_long_formatted_welcome_is_sent_whole_and_well_formed(tg):
    """Telegram counts the limit after parsing the HTML: a one-line welcome of 3,800 visible
    characters with 60 links is over 6,000 characters as markup; it fits in one message, and
    must never be cut inside a tag."""
    await join(tg, A)
    await tg.feed(f.message(A, ADMIN, "/welcome on", date=tg.now()))
    url = "https://example.com/some/long/path"
    head = "Welcome {name}! " + "x" * 3500 + " "
    plain = head + "docs " * 60
    command = f.message(A, ADMIN, "/setwelcome " + plain, date=tg.now())
    shift = len("/setwelcome ") + len(head)  # the operator's links, as Telegram sends them
    command["message"]["entities"] += [
        {"type": "text_link", "offset": shift + 5 * i, "length": 4, "url": url} for i in range(60)
    ]
    await tg.feed(command)
    tg.api.clear()
    await tg.feed(f.new_members(A, [f.user(77, "Newcomer")], date=tg.now()))
    (welcome,) = texts_to(tg.api, A)
    assert welcome.count(f'<a href="{url}">docs</a>') == 60
    assert utf16_len(visible_text(welcome)) <= 4096 < utf16_len(welcome)


def test_an_overlong_formatted_line_is_cut_outside_tags():
    line = "x" * 4000 + '<a href="https://example.com/path">link</a> <b>bold</b> ' * 40
    parts = split_message(line)
    assert len(parts) == 2 and "".join(visible_text(p) for p in parts) == visible_text(line)
    assert all(check_html(part) is None for part in parts)
    assert all(utf16_len(visible_text(part)) <= 4096 for part in parts)
