"""Long polling keeps what it fetched until it is handled (bot/inbox.py): a process killed
with updates in flight loses none of them — the next one handles them first."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text
from telegram import Update

from bot import cluster
from bot.db import create_engine, make_sessionmaker, upgrade_database_async
from bot.inbox import InboxUpdate, UpdateInbox
from tests import factories as f
from tests.conftest import (
    PG_URL,
    TEST_TOKEN,
    FakeClock,
    _drop_postgres_database,
    _fresh_postgres_database,
    both_databases,
)
from tests.drill import ROOT, _free_port, _wait_healthy
from tests.standin import BotApiStandIn
from tests.test_faults import ADMIN, MEMBERS, A, BotProcess, in_process, is_text, join, query

DONE = "checked in — #"  # the first answer to a check-in (bot/locales/en/checkins.yaml)
ALREADY = "already checked in"
SECRET = "inbox-secret"


@pytest.fixture
def settings(settings, tmp_path):
    return settings.model_copy(update={"content_dir": str(tmp_path / "content")})


async def bot_in_group_a(settings, tmp_path) -> tuple[Path, str, datetime]:
    """A migrated SQLite file where the bot administers group A; (path, url, now)."""
    path = tmp_path / "bot.db"
    url = f"sqlite+aiosqlite:///{path}"
    await upgrade_database_async(url)
    (tmp_path / "content").mkdir()
    real = datetime.now(UTC).replace(microsecond=0)
    async with in_process(
        settings.model_copy(update={"database_url": url}), url, lambda: real
    ) as tg:
        await join(tg, A)
    return path, url, real


def replies(api: BotApiStandIn, words: str) -> list[str]:
    return [p["text"] for p in api.of("sendMessage", A["id"]) if words in str(p["text"])]


async def test_updates_fetched_but_not_handled_survive_a_kill_9(settings, tmp_path):
    """Six check-ins arrive in one getUpdates batch. The first one's answer hangs in Telegram,
    so the other five wait behind it (one chat is handled in order) — and Telegram has been
    told they arrived. SIGKILL. The next process handles the five, and the first one again
    (it had not finished): every member is checked in once, with one point award each."""
    path, url, real = await bot_in_group_a(settings, tmp_path)
    checkins = [f.message(A, member, "签到", date=real) for member in MEMBERS]

    with BotApiStandIn(TEST_TOKEN) as api:
        api.answers.set_admins(A["id"], ADMIN)
        answering = api.hold(lambda m, p: is_text(m, p, A["id"], DONE))
        api.updates.extend(checkins)
        first = BotProcess(api, tmp_path, url, "p1")
        first.wait_for(
            lambda: answering.is_set() and api.acknowledged >= checkins[-1]["update_id"]
        )
        waiting = query(path, "select update_id from update_inbox order by update_id")
        first.kill()
        api.release()
        # Telegram was told about all six; the five not handled are in the inbox (and the first,
        # whose handler had not finished)
        handled = query(path, "select count(*) from checkin")
        assert handled == [(1,)]
        assert [u for (u,) in waiting] == [c["update_id"] for c in checkins]

        second = BotProcess(api, tmp_path, url, "p2")

        def settled() -> tuple[object, ...]:
            return (
                query(path, "select count(*) from checkin"),
                query(path, "select count(*) from update_inbox"),
                len(replies(api, DONE)),
            )

        second.wait_for(lambda: settled() == ([(6,)], [(0,)], 6), why=settled)
        second.kill()
        assert not api.violations, api.violations

    assert len(replies(api, DONE)) == 6  # one "checked in" per member, never two
    assert len(replies(api, ALREADY)) == 1  # the first one, handled again: "already"
    ledger = query(path, "select user_id, sum(amount) from points_ledger group by user_id")
    balances = query(path, "select user_id, points from points_balance")
    assert sorted(ledger) == sorted(balances)
    assert len(ledger) == 6
    assert query(path, "select count(*) from checkin group by user_id having count(*) > 1") == []


async def test_a_process_that_handled_everything_leaves_nothing_to_replay(settings, tmp_path):
    """Handled updates leave the inbox within a second, so a later start replays nothing and
    nothing is counted twice."""
    path, url, real = await bot_in_group_a(settings, tmp_path)
    chatter = [f.message(A, m, f"hi {i}", date=real) for m in MEMBERS for i in range(5)]

    def counted() -> tuple[object, ...]:
        return (
            query(path, "select sum(messages) from daily_activity"),
            query(path, "select count(*) from update_inbox"),
        )

    with BotApiStandIn(TEST_TOKEN) as api:
        api.answers.set_admins(A["id"], ADMIN)
        api.updates.extend(chatter)
        first = BotProcess(api, tmp_path, url, "p1")
        first.wait_for(lambda: counted() == ([(len(chatter),)], [(0,)]), why=counted)
        first.kill()
        polls = len(api.of("getUpdates"))
        second = BotProcess(api, tmp_path, url, "p2")  # Telegram has nothing new for it
        second.wait_for(lambda: len(api.of("getUpdates")) >= polls + 3)  # started, polling
        assert counted() == ([(len(chatter),)], [(0,)])  # nothing was handled again
        more = [f.message(A, m, "bye", date=real) for m in MEMBERS]
        api.updates.extend(more)
        second.wait_for(lambda: api.acknowledged >= more[-1]["update_id"])
        second.process.send_signal(signal.SIGTERM)  # a graceful stop handles what it has
        assert second.process.wait(timeout=30) == 0, second.log.read_text()
    assert counted() == ([(len(chatter) + len(more),)], [(0,)])


@both_databases
async def test_inbox_bookkeeping(engine):
    """What is written, deleted and handed back, on both databases (no process needed)."""
    clock = FakeClock()
    updates = [f.message(A, MEMBERS[0], f"m{i}", date=clock()) for i in range(4)]
    inbox = UpdateInbox(engine, clock, "p1")
    inbox.fetched(json.dumps({"ok": True, "result": updates[:3]}).encode())
    inbox.handled(updates[0]["update_id"])  # handled before it was written: never written
    await inbox.store()
    inbox.fetched(json.dumps({"ok": True, "result": updates[3:]}).encode())
    inbox.handled(updates[1]["update_id"])
    await inbox.store()  # the next getUpdates: writes the 4th, deletes the 2nd

    async with make_sessionmaker(engine)() as session:
        stored = (await session.scalars(select(InboxUpdate.update_id))).all()
    assert sorted(stored) == [updates[2]["update_id"], updates[3]["update_id"]]

    after_restart = UpdateInbox(engine, clock, "p2")
    left = await after_restart.leftovers(None)
    assert [u.update_id for u in left] == sorted(stored)
    assert [u.message.text for u in left] == ["m2", "m3"]
    # the previous process died before confirming them: Telegram sends them again, once
    after_restart.fetched(json.dumps({"ok": True, "result": updates[2:]}).encode())
    assert [after_restart.redelivered(u["update_id"]) for u in updates[2:]] == [True, True]
    assert after_restart.redelivered(updates[2]["update_id"]) is False
    await after_restart.store()  # nothing new to write
    for update in left:
        after_restart.handled(update.update_id)
    await after_restart.stop()  # the handled ones go
    async with make_sessionmaker(engine)() as session:
        assert (await session.scalars(select(InboxUpdate.update_id))).all() == []


@both_databases
async def test_webhook_processes_take_over_the_updates_of_a_stopped_one(engine):
    """Webhook mode: each update is kept before Telegram's answer; a live process's rows are
    left alone, a stopped one's (no heartbeat within the lease) taken over once; a copy
    Telegram sends again to another process takes its row."""
    clock = FakeClock()
    lease = timedelta(seconds=60)
    db = make_sessionmaker(engine)
    async with db.begin() as session:
        for live in ("alive", "other"):
            await cluster.beat(session, live, now=clock(), mode="webhook", started=True)
        await cluster.beat(session, "dead", now=clock() - 2 * lease, mode="webhook", started=True)
    alive, dead, other = (UpdateInbox(engine, clock, name) for name in ("alive", "dead", "other"))
    updates = [
        Update.de_json(f.message(A, MEMBERS[0], f"m{i}", date=clock()), None) for i in range(4)
    ]
    await asyncio.gather(*(dead.keep(u) for u in updates[:2]), alive.keep(updates[2]))
    await other.keep(updates[1])  # Telegram sent it again (no answer reached it): other's now
    await dead.keep(updates[3])

    taken = await alive.take_over(None, lease=lease)
    assert [u.update_id for u in taken] == [updates[0].update_id, updates[3].update_id]
    assert [u.message.text for u in taken] == ["m0", "m3"]
    assert alive.is_replayed(updates[0].update_id) and not alive.is_replayed(updates[2].update_id)
    assert await other.take_over(None, lease=lease) == []  # nothing left to take
    async with db() as session:
        owners = dict(
            (await session.execute(select(InboxUpdate.update_id, InboxUpdate.owner))).all()
        )
    assert owners == {
        updates[0].update_id: "alive",
        updates[1].update_id: "other",
        updates[2].update_id: "alive",
        updates[3].update_id: "alive",
    }


def webhook_process(
    api: BotApiStandIn, folder: Path, url: str, tag: str, ports: tuple[int, int]
) -> subprocess.Popen[bytes]:
    """`community-bot run` in webhook mode, quick to declare another process stopped."""
    env = {k: v for k, v in os.environ.items() if k not in {"BOT_OWNERS", "BOT_LANGUAGE"}}
    env.update(
        BOT_TOKEN=TEST_TOKEN,
        DATABASE_URL=url,
        TELEGRAM_API_BASE_URL=api.url_for(tag),
        WEBHOOK_URL=f"http://127.0.0.1:{ports[0]}/hook",
        WEBHOOK_SECRET=SECRET,
        PORT=str(ports[0]),
        HEALTH_PORT=str(ports[1]),
        CLAIM_LEASE_SECONDS="2",
        SWEEP_SECONDS="1",
        CONTENT_DIR=str(folder / "content"),
        BOT_TIMEZONE="UTC",
        PYTHONPATH=str(ROOT),
    )
    with (folder / f"{tag}.log").open("wb") as log:  # the child keeps its own handle
        return subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "run"],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.skipif(not PG_URL, reason="webhook processes share PostgreSQL: set TEST_DATABASE_URL")
async def test_a_webhook_process_killed_with_updates_queued_loses_none(settings, tmp_path):
    """Six check-ins reach p0 by webhook and are answered 200; the first one's reply hangs in
    Telegram, so the rest wait behind it. SIGKILL. Once p0's heartbeat is stale, p1 takes its
    kept updates over and handles them: every member checked in once, one award each."""
    url, name = await _fresh_postgres_database()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        await upgrade_database_async(url)
        (tmp_path / "content").mkdir()
        real = datetime.now(UTC).replace(microsecond=0)
        async with in_process(settings, url, lambda: real) as tg:
            await join(tg, A)
        checkins = [f.message(A, member, "签到", date=real) for member in MEMBERS]
        engine = create_engine(url)
        db = make_sessionmaker(engine)

        async def count(table: str) -> int:
            async with db() as session:
                return int(await session.scalar(text(f"select count(*) from {table}")))

        with BotApiStandIn(TEST_TOKEN) as api:
            api.answers.set_admins(A["id"], ADMIN)
            answering = api.hold(lambda m, p: is_text(m, p, A["id"], DONE))
            ports = {tag: (_free_port(), _free_port()) for tag in ("p0", "p1")}
            for tag in ports:
                processes[tag] = webhook_process(api, tmp_path, url, tag, ports[tag])
            async with httpx.AsyncClient(timeout=10) as client:
                await _wait_healthy(client, ports, processes, limit=60)
                for update in checkins:
                    answer = await client.post(
                        f"http://127.0.0.1:{ports['p0'][0]}/hook",
                        json=update,
                        headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
                    )
                    assert answer.status_code == 200  # Telegram will not send it again
            for _ in range(200):
                if answering.is_set():
                    break
                await asyncio.sleep(0.05)
            assert answering.is_set()
            processes["p0"].send_signal(signal.SIGKILL)
            processes["p0"].wait(timeout=10)
            api.release()
            assert await count("checkin") == 1  # the other five were only kept

            for _ in range(400):  # p1: lease 2 s, sweep every 1 s
                done = (await count("checkin"), await count("update_inbox"))
                if done == (6, 0) and len(replies(api, DONE)) == 6:
                    break
                await asyncio.sleep(0.05)
            assert done == (6, 0), (done, (tmp_path / "p1.log").read_text()[-3000:])
            assert not api.violations, api.violations
        assert len(replies(api, DONE)) == 6
        assert len(replies(api, ALREADY)) == 1  # the first, handled again by p1
        async with db() as session:
            ledger = (
                await session.execute(
                    text("select user_id, sum(amount) from points_ledger group by user_id")
                )
            ).all()
            balances = (
                await session.execute(text("select user_id, points from points_balance"))
            ).all()
        assert sorted(map(tuple, ledger)) == sorted(map(tuple, balances)) and len(ledger) == 6
        await engine.dispose()
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        await _drop_postgres_database(name)
