"""Several processes on one database: update de-duplication, takeover of claims left by a
stopped process, the health endpoint, and refusing to compete for long polling."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select
from telegram import Update

from bot import calendar as cal
from bot import cluster
from bot.app import build_app
from bot.checkins import Checkin
from bot.db import create_engine, make_sessionmaker
from bot.digest import DigestRun
from bot.digest import claim as claim_digest
from bot.lottery import Lottery
from bot.models import DailyActivity
from schedules import calendar as publishing
from schedules import cluster as cluster_schedule
from schedules import digest as digest_schedule
from schedules import lottery as lottery_schedule
from tests import factories as f
from tests.calendar_support import ADMIN, GROUP, another_bot, join
from tests.conftest import TEST_TOKEN, Harness, both_databases
from tests.recording import RecordingRequest
from tests.standin import BotApiStandIn
from tests.test_cli import ROOT

G = GROUP["id"]


def webhook_process(settings: Any, database_url: str, clock: Any) -> Any:
    """A bot process as in webhook mode: concurrent updates, de-duplicated by update id."""
    return another_bot(settings, database_url, clock, concurrent=True, dedupe=True)


async def deliver(process: Harness, *updates: dict[str, Any]) -> None:
    """As PTB does with each update it takes from its queue: through the update processor."""
    app = process.app
    await asyncio.gather(
        *(
            app.update_processor.process_update(u, app.process_update(u))
            for u in (Update.de_json(data, app.bot) for data in updates)
        )
    )


# --- update_id de-duplication -----------------------------------------------------------------


@both_databases
async def test_an_update_delivered_to_two_processes_is_handled_once(
    tg, settings, database_url, clock
):
    await join(tg, GROUP)
    checkin = f.message(GROUP, f.user(30, "Cid"), "/checkin", date=tg.now())
    async with (
        webhook_process(settings, database_url, clock) as a,
        webhook_process(settings, database_url, clock) as b,
    ):
        await deliver(a, checkin)
        await deliver(b, checkin)  # Telegram's redelivery reached the other process
        await deliver(a, checkin)  # …and the first one again
        replies = a.api.sent_texts(G) + b.api.sent_texts(G)
        duplicates = (
            a.app.update_processor.seen.duplicates + b.app.update_processor.seen.duplicates
        )
    async with tg.db() as session:
        checkins = await session.scalar(select(func.count()).select_from(Checkin))
    assert (checkins, len(replies), duplicates) == (1, 1, 2)


@both_databases
async def test_update_ids_are_asked_in_batches_and_each_message_counts_once(
    tg, settings, database_url, clock
):
    await join(tg, GROUP)
    messages = [
        f.message(GROUP, f.user(100 + i % 9, "M"), "hi", date=tg.now()) for i in range(120)
    ]
    async with webhook_process(settings, database_url, clock) as a:
        await deliver(a, *messages, *messages[:30])
        await a.flush()
        seen = a.app.update_processor.seen
        assert seen.duplicates == 30
        assert seen.statements <= 10, "one statement per batch, not per update"
    async with tg.db() as session:
        counted = await session.scalar(select(func.sum(DailyActivity.messages)))
    assert counted == 120


def test_only_the_webhook_mode_deduplicates(settings):
    polling = build_app(settings, request=RecordingRequest())
    webhook = build_app(
        settings.model_copy(update={"webhook_url": "https://bot.example/hook"}),
        request=RecordingRequest(),
    )
    assert polling.update_processor.seen is None
    assert isinstance(webhook.update_processor.seen, cluster.UpdateLog)


async def test_old_update_ids_are_pruned(tg):
    log = cluster.UpdateLog(tg.services.db, tg.clock)
    assert [await log.first_time(i) for i in (1, 2, 1)] == [True, True, False]
    tg.clock.advance(minutes=30)
    assert await log.first_time(3)
    tg.clock.advance(minutes=31)
    async with tg.services.db.begin() as session:
        assert await cluster.prune_seen(session, now=tg.now()) == 2
    assert await log.first_time(1) and not await log.first_time(3)


# --- claims of a stopped process ----------------------------------------------------------------


async def register(tg: Harness, token: str, *, silent_for: timedelta) -> None:
    async with tg.services.db.begin() as session:
        await cluster.beat(session, token, now=tg.now() - silent_for, started=True)


LEASE = timedelta(seconds=60)  # Settings.claim_lease_seconds default


async def schedule_post(tg: Harness, text: str) -> int:
    await tg.feed(f.message(GROUP, ADMIN, f"/schedule in 5m {text}", date=tg.now()))
    async with tg.db() as session:
        return int(await session.scalar(select(func.max(cal.CalendarDelivery.id))))


async def claim_as(tg: Harness, delivery_id: int, token: str) -> None:
    async with tg.services.db.begin() as session:
        claimed = await cal.claim(session, delivery_id, now=tg.now(), token=token)
    assert isinstance(claimed, cal.Claim)


@both_databases
async def test_a_post_claimed_by_a_stopped_process_is_settled_unknown_not_resent(tg, settings):
    """Never twice: the stopped process may have posted it (docs/faults.md, docs/deploy.md);
    it is settled within the process lease (not after STALE_SENDING) for an operator."""
    await join(tg, GROUP)
    await cluster_schedule.on_startup(tg.app)
    dead = await schedule_post(tg, "Taken over")
    alive = await schedule_post(tg, "Still being sent")
    tg.clock.advance(minutes=5)
    await register(tg, "dead", silent_for=LEASE + timedelta(seconds=1))
    await register(tg, "busy", silent_for=timedelta(seconds=5))
    await claim_as(tg, dead, "dead")  # …and the process died while sending it
    await claim_as(tg, alive, "busy")  # a live process, slow (rate limits): not touched
    tg.api.clear()
    await publishing.sweep(tg.app)
    for job in list(tg.app.job_queue.jobs()):
        if job.name in (f"delivery:{dead}", f"delivery:{alive}"):
            await job.run(tg.app)
    await publishing.sweep(tg.app)  # a second sweep takes nothing more
    for job in list(tg.app.job_queue.jobs()):
        if job.name in (f"delivery:{dead}", f"delivery:{alive}"):
            await job.run(tg.app)
    assert tg.api.sent_texts(G) == []
    async with tg.db() as session:
        states = {
            row.id: row.state
            for row in await session.scalars(
                select(cal.CalendarDelivery).where(cal.CalendarDelivery.id.in_([dead, alive]))
            )
        }
    assert states == {dead: cal.UNKNOWN, alive: cal.SENDING}


@both_databases
async def test_a_draw_whose_process_stopped_is_announced_by_another(tg):
    await join(tg, GROUP)
    await cluster_schedule.on_startup(tg.app)
    await tg.feed(f.message(GROUP, ADMIN, "/lottery Mug | winners 1 | draw in 1h", date=tg.now()))
    async with tg.db() as session:
        lottery_id = int(await session.scalar(select(func.max(Lottery.id))))
    tg.clock.advance(hours=1)
    await register(tg, "dead", silent_for=LEASE + timedelta(seconds=1))
    from bot.lottery import claim_draw

    async with tg.services.db.begin() as session:
        assert await claim_draw(session, lottery_id, now=tg.now(), by="dead")
    tg.api.clear()
    await lottery_schedule.catch_up(tg.app, schedule_all=False)
    await lottery_schedule.catch_up(tg.app, schedule_all=False)
    announcements = [t for t in tg.api.sent_texts(G) if "Mug" in t]
    assert len(announcements) == 1
    async with tg.db() as session:
        row = await session.get(Lottery, lottery_id)
    assert (row.state, row.claimed_by) == ("drawn", tg.services.process_id)


@both_databases
async def test_a_digest_whose_process_stopped_is_recorded_failed_not_resent(tg):
    """Never twice: the stopped process may have sent it; the next digest lists it."""
    from tests.test_digest import CHAT_ID, add_bot, digest_job, feed_history, runs, schedule_daily

    await add_bot(tg)
    await feed_history(tg)
    await schedule_daily(tg)
    await cluster_schedule.on_startup(tg.app)
    due = digest_job(tg).data.due
    tg.clock.set(due.due_at + timedelta(minutes=2))
    await register(tg, "dead", silent_for=LEASE + timedelta(seconds=1))
    outcome, _ = await claim_digest(tg.services.db, CHAT_ID, due, now=tg.now(), worker="dead")
    assert outcome == "send"
    tg.api.clear()
    await digest_schedule.take_over(tg.app)
    await digest_schedule.take_over(tg.app)
    assert tg.api.of("sendPhoto") == [] and tg.api.of("sendMessage") == []
    assert await runs(tg) == [("daily", due.period_start.isoformat(), "failed")]
    async with tg.db() as session:
        error = await session.scalar(select(DigestRun.error))
    assert error == "interrupted"


@both_databases
async def test_a_failed_join_check_whose_process_stopped_is_acted_on_once(tg):
    from bot.rules import Newcomer, check_token, conclude_check
    from schedules import verification
    from tests.moderation_support import ADMIN as MOD
    from tests.moderation_support import GROUP as MOD_GROUP
    from tests.moderation_support import NEWBIE, command, setup_group
    from tests.test_rules import join as join_group

    await setup_group(tg)
    await command(tg, MOD, "/verify on time 2m action ban")
    await join_group(tg)
    await cluster_schedule.on_startup(tg.app)
    key = {"chat_id": MOD_GROUP["id"], "user_id": NEWBIE["id"]}
    async with tg.db() as session:
        row = await session.get(Newcomer, (key["chat_id"], key["user_id"]))
    tg.clock.advance(minutes=3)
    await register(tg, "dead", silent_for=LEASE + timedelta(seconds=1))
    async with tg.services.db.begin() as session:  # decided, and the process died
        assert await conclude_check(
            session, **key, token=check_token(row.joined_at), state="failed", by="dead"
        )
    tg.api.clear()
    await verification.sweep(tg.app, everything=False)
    await verification.sweep(tg.app, everything=False)
    assert [c.method for c in tg.api.calls].count("banChatMember") == 1
    async with tg.db() as session:
        row = await session.get(Newcomer, (key["chat_id"], key["user_id"]))
    assert (row.state, row.claimed_by, row.acted_at) == (
        "failed",
        tg.services.process_id,
        tg.now(),
    )


@both_databases
async def test_a_poll_close_whose_process_stopped_is_finished_without_waiting_for_the_lease(tg):
    from bot import polls
    from schedules import polls as poll_schedule
    from tests.test_polls import close_job, command, last_poll, setup_group, summaries

    await setup_group(tg)
    await command(tg, "/poll close=1h Q? | a | b")
    poll = await last_poll(tg)
    await cluster_schedule.on_startup(tg.app)
    tg.clock.advance(hours=1)
    await register(tg, "dead", silent_for=LEASE + timedelta(seconds=1))
    async with tg.services.db.begin() as session:  # claimed, stopped, and the process died
        assert await polls.claim_close(
            session, "poll", poll.id, now=tg.now(), lease=poll_schedule.LEASE, by="dead"
        )
        await polls.mark_stopped(session, poll.id, now=tg.now())
    await poll_schedule.sweep(tg.app, everything=False)
    job = close_job(tg.app, "poll", poll.id)
    assert job.job.trigger.run_date <= tg.now()  # not claimed_at + 5 minutes
    await job.run(tg.app)
    await poll_schedule.sweep(tg.app, everything=False)
    assert not tg.api.of("stopPoll") and len(summaries(tg)) == 1
    async with tg.db() as session:
        row = await session.get(polls.Poll, poll.id)
    assert (row.state, row.claimed_by) == ("closed", tg.services.process_id)


async def test_a_stopped_process_is_not_this_process(tg):
    await cluster_schedule.on_startup(tg.app)
    me = tg.services.process_id
    tg.clock.advance(hours=1)  # no heartbeat ran on the fake clock: still never "stopped"
    stmt = select(cluster.BotProcess.token).where(
        cluster.claimed_by_stopped_process(
            cluster.BotProcess.token, me=me, now=tg.now(), lease=LEASE
        )
    )
    async with tg.db() as session:
        assert list(await session.scalars(stmt)) == []
    await cluster_schedule.heartbeat_job(type("C", (), {"application": tg.app})())
    async with tg.db() as session:
        row = await session.get(cluster.BotProcess, me)
    assert row.seen_at == tg.now()
    await cluster_schedule.on_shutdown(tg.app)
    async with tg.db() as session:
        assert await session.get(cluster.BotProcess, me) is None


# --- /healthz ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_healthz_reports_database_and_telegram(tg, tmp_path):
    port = free_port()
    server = cluster_schedule.start_health_server(tg.app, port, "127.0.0.1")
    try:
        async with httpx.AsyncClient() as client:
            good = await client.get(f"http://127.0.0.1:{port}/healthz")
            broken = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'x.db'}")
            tg.services.db, working = make_sessionmaker(broken), tg.services.db
            try:
                bad = await client.get(f"http://127.0.0.1:{port}/healthz")
            finally:
                tg.services.db = working
                await broken.dispose()
    finally:
        server.stop()
    assert good.status_code == 200 and good.headers["content-type"] == "application/json"
    body = good.json()
    assert body["status"] == "ok" and body["database"]["ok"] and body["telegram"]["ok"]
    assert body["process"] == tg.services.process_id
    assert bad.status_code == 503
    assert bad.json()["status"] == "unavailable" and not bad.json()["database"]["ok"]
    assert bad.json()["telegram"]["ok"] and "error" in bad.json()["database"]


async def test_health_check_says_when_telegram_is_unreachable(tg):
    class Unreachable:
        async def get_me(self, **_: Any) -> None:
            raise OSError("connection refused")

    health = await cluster.check_health(tg.services.db, Unreachable())
    assert not health.ok and health.checks["database"]["ok"]
    assert health.checks["telegram"] == {"ok": False, "error": "OSError: connection refused"}


def test_health_port_defaults(settings):
    app = build_app(settings, request=RecordingRequest())
    assert cluster_schedule.health_port(app) is None
    hooked = build_app(
        settings.model_copy(update={"webhook_url": "https://x.example/h", "port": 8443}),
        request=RecordingRequest(),
    )
    assert cluster_schedule.health_port(hooked) == 8444
    chosen = build_app(
        settings.model_copy(update={"health_port": 9000}), request=RecordingRequest()
    )
    assert cluster_schedule.health_port(chosen) == 9000


# --- long polling: never compete ---------------------------------------------------------------


def run_polling_process(api: BotApiStandIn, tmp_path: Any) -> subprocess.CompletedProcess:
    env = {
        "BOT_TOKEN": TEST_TOKEN,
        "TELEGRAM_API_BASE_URL": api.base_url,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}",
        "PYTHONPATH": str(ROOT),
    }
    clean = {k: v for k, v in os.environ.items() if k not in {"WEBHOOK_URL", "BOT_OWNERS"}}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "run"],
        cwd=tmp_path,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_long_polling_never_deletes_the_webhook_of_other_processes(tmp_path):
    with BotApiStandIn(TEST_TOKEN) as api:
        api.answers.webhook_url = "https://bot.example/hook"
        result = run_polling_process(api, tmp_path)
        methods = api.methods()
    assert result.returncode == 3, result.stderr
    assert "a webhook is set for this bot (https://bot.example/hook)" in result.stderr
    assert "deleteWebhook" not in methods and "getUpdates" not in methods
    assert api.answers.webhook_url == "https://bot.example/hook"


def test_a_second_long_polling_process_says_so_and_exits(tmp_path):
    """Telegram answers getUpdates with 409 Conflict when another process polls: the bot
    stops with a clear message and a non-zero status instead of competing."""
    with BotApiStandIn(TEST_TOKEN) as api:
        api.refuse(
            "getUpdates",
            409,
            "Conflict: terminated by other getUpdates request; make sure that only one bot "
            "instance is running",
        )
        result = run_polling_process(api, tmp_path)
        polls = [m for m in api.methods() if m == "getUpdates"]
    assert result.returncode == 3, result.stderr
    assert "Only one process may use long polling" in result.stderr
    assert "409 Conflict" in result.stderr and "Traceback" not in result.stderr
    assert len(polls) <= 2, "it stopped at the first conflict (one retry may be in flight)"
    assert TEST_TOKEN not in result.stderr
