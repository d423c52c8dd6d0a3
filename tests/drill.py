"""The multi-process drill: several real bot processes, one PostgreSQL database, one Bot API.

`run_drill` starts `processes` copies of `community-bot run` in webhook mode against a fresh,
migrated PostgreSQL database and one `BotApiStandIn` (each process has its own base URL, so
every call says which process made it). Once all answer `/healthz`, it writes a schedule into
the database — as another process would — that the processes must find by their sweeps:
one-off calendar posts, timed lottery draws and daily digests, all due within `window`
seconds. The first time process p0 sends one of them, the stand-in holds that call and
everything p0 sends afterwards (Telegram never sees them) and the drill kills p0 with SIGKILL:
its claim must be taken over by another process once its heartbeat lease has run out.
A redelivered webhook update is also posted to two processes.

`check` then compares the stand-in's calls with the database: every action performed exactly
once. Used by tests/test_multiprocess.py (small) and bench/drill.py (longer, with figures).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "123456789:DRILLtokenAAAAAAAAAAAAAAAAAAAAAAAAAAA"
SECRET = "drill-secret"
SPREAD = 300  # bot.digest.SPREAD_SECONDS


@dataclass
class DrillResult:
    processes: int
    posts: int
    lotteries: int
    digests: int
    killed: str | None = None
    kill_at: float | None = None  # seconds after the schedule was written
    held: list[tuple[str, str]] = field(default_factory=list)  # (method, chat) p0 never sent
    sends: Counter[str] = field(default_factory=Counter)  # per action key
    by_process: Counter[str] = field(default_factory=Counter)
    states: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    startup_seconds: float = 0.0
    done_seconds: float = 0.0  # from writing the schedule until every action was performed
    lateness: dict[str, float] = field(default_factory=dict)  # seconds after its due time
    checkins: int = 0
    taken_over: list[str] = field(default_factory=list)  # held from p0, then sent by another
    in_flight: list[str] = field(default_factory=list)  # what p0 was sending when killed
    logs: dict[str, str] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def digest_chat_ids(due_times: list[datetime], start: int) -> list[tuple[int, str]]:
    """For each wanted due time, a chat id and HH:MM whose digest falls due exactly then
    (due = HH:MM + crc32(chat id) mod 300 s, bot.digest.spread_offset)."""
    found: list[tuple[int, str]] = []
    candidate = start
    for due in due_times:
        while True:
            candidate -= 1
            offset = zlib.crc32(str(candidate).encode()) % SPREAD
            if offset % 60 == due.second:
                at = due - timedelta(seconds=offset)
                found.append((candidate, f"{at:%H:%M}"))
                break
    return found


async def _create_schedule(
    url: str, now: datetime, posts: int, lotteries: int, digests: int, window: float
) -> tuple[dict[str, datetime], list[int]]:
    """Groups, one-off posts, lotteries and digest schedules, written straight into the
    database. Returns each action's key (what identifies its message) → due time."""
    from bot import calendar as cal
    from bot.calendar_file import PostSpec, Schedule
    from bot.db import create_engine, make_sessionmaker
    from bot.digest import DigestSchedule
    from bot.lottery import Lottery, commitment_of, new_seed
    from bot.models import Chat

    engine = create_engine(url)
    db = make_sessionmaker(engine)
    due: dict[str, datetime] = {}
    total = posts + lotteries + digests
    times = [now + timedelta(seconds=2 + window * i / max(total, 1)) for i in range(total)]
    times = [t.replace(microsecond=0) + timedelta(seconds=1) for t in times]
    groups = [-1002000000000 - g for g in range(max(posts, lotteries, 1))]
    digest_chats = digest_chat_ids(times[posts + lotteries :], -1003000000000)
    try:
        async with db.begin() as session:
            for chat_id in [*groups, *(c for c, _ in digest_chats)]:
                session.add(
                    Chat(
                        id=chat_id,
                        type="supergroup",
                        title=f"Drill {chat_id}",
                        bot_status="administrator",
                        can_delete=True,
                        created_at=now,
                        updated_at=now,
                    )
                )
        async with db.begin() as session:
            for i in range(posts):
                at, chat_id = times[i], groups[i % len(groups)]
                spec = PostSpec(
                    key="@once",
                    targets=(chat_id,),
                    target_names=(f"Drill {chat_id}",),
                    schedule=Schedule(tz="UTC", at=at.replace(tzinfo=None)),
                    kind="text",
                    content={"text": f"Drill post {i}"},
                )
                await cal.create_one_off(
                    session, chat_id=chat_id, spec=spec, due_at=at, by=1, now=now
                )
                due[f"post {i}"] = at
            for i in range(lotteries):
                at, chat_id = times[posts + i], groups[i % len(groups)]
                seed = new_seed()
                session.add(
                    Lottery(
                        chat_id=chat_id,
                        prize=f"DrillPrize{i}",
                        winners=1,
                        draw_at=at,
                        seed=seed.hex(),
                        commitment=commitment_of(seed),
                        created_by=1,
                        created_at=now,
                    )
                )
                due[f"lottery DrillPrize{i}"] = at
            for (chat_id, hhmm), at in zip(digest_chats, times[posts + lotteries :], strict=True):
                session.add(DigestSchedule(chat_id=chat_id, daily_at=hhmm, updated_at=now))
                due[f"digest {chat_id}"] = at
    finally:
        await engine.dispose()
    return due, groups


def _action_of(method: str, params: dict[str, Any]) -> str | None:
    """Which drill action a Bot API call performs (None: something else)."""
    text = str(params.get("text") or params.get("caption") or "")
    chat = str(params.get("chat_id"))
    if method == "sendMessage" and text.startswith("Drill post "):
        return "post " + text.split()[2]
    if method == "sendMessage" and "is drawn!" in text:
        found = re.search(r"DrillPrize\d+", text)
        return f"lottery {found.group(0)}" if found else None
    if chat.startswith("-1003") and method == "sendPhoto":
        return f"digest {chat}"
    if chat.startswith("-1003") and method == "sendMessage":
        return f"digest-text {chat}"
    return None


async def run_drill(
    pg_url: str,
    *,
    processes: int = 3,
    posts: int = 6,
    lotteries: int = 3,
    digests: int = 3,
    window: float = 10.0,
    lease: float = 4.0,
    sweep: float = 1.0,
    kill: bool = True,
    deadline: float = 25.0,
) -> DrillResult:
    """Run the drill against the PostgreSQL server of `pg_url` (a fresh database is made)."""
    from bot.db import upgrade_database_async
    from tests.conftest import _drop_postgres_database, _fresh_postgres_database
    from tests.factories import group, message, user
    from tests.standin import BotApiStandIn

    os.environ.setdefault("TEST_DATABASE_URL", pg_url)
    url, name = await _fresh_postgres_database()
    result = DrillResult(processes, posts, lotteries, digests)
    workdir = Path(tempfile.mkdtemp(prefix="drill-"))
    (workdir / "content").mkdir()
    running: dict[str, subprocess.Popen[bytes]] = {}
    ports: dict[str, tuple[int, int]] = {}
    try:
        await upgrade_database_async(url)
        with BotApiStandIn(TOKEN) as api:
            began = time.monotonic()
            for i in range(processes):
                tag = f"p{i}"
                port, health = _free_port(), _free_port()
                ports[tag] = (port, health)
                env = {
                    **{k: v for k, v in os.environ.items() if k not in {"BOT_OWNERS"}},
                    "PYTHONPATH": str(ROOT),
                    "BOT_TOKEN": TOKEN,
                    "DATABASE_URL": url,
                    "TELEGRAM_API_BASE_URL": api.url_for(tag),
                    "WEBHOOK_URL": f"http://127.0.0.1:{port}/hook",
                    "WEBHOOK_SECRET": SECRET,
                    "PORT": str(port),
                    "HEALTH_PORT": str(health),
                    "CLAIM_LEASE_SECONDS": str(lease),
                    "SWEEP_SECONDS": str(sweep),
                    "CONTENT_DIR": str(workdir / "content"),
                }
                log = (workdir / f"{tag}.log").open("wb")
                running[tag] = subprocess.Popen(  # noqa: ASYNC220  (started once, not awaited)
                    [sys.executable, "-m", "bot.cli", "run"],
                    cwd=workdir,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            async with httpx.AsyncClient(timeout=5) as client:
                await _wait_healthy(client, ports, running, limit=60)
                result.startup_seconds = time.monotonic() - began

                now, at_now = datetime.now(UTC), time.monotonic()
                due, groups = await _create_schedule(url, now, posts, lotteries, digests, window)
                written = time.monotonic()
                due_in = {k: (at - now).total_seconds() for k, at in due.items()}
                expected = set(due) | {
                    k.replace("digest ", "digest-text ") for k in due if k.startswith("digest ")
                }

                # A webhook update Telegram delivers twice, to two processes: handled once.
                checkin = message(group(groups[0], "Drill"), user(77, "Dee"), "/checkin", date=now)
                for tag in ("p1", "p2")[: max(1, processes - 1)]:
                    await client.post(
                        f"http://127.0.0.1:{ports[tag][0]}/hook",
                        json=checkin,
                        headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
                    )

                holding = {"on": False}

                def hold(tag: str, method: str, params: dict[str, Any]) -> bool:
                    if not kill or tag != "p0":
                        return False
                    if holding["on"] or _action_of(method, params) is not None:
                        holding["on"] = True
                        return True
                    return False

                api.hold_if = hold
                kill_by = written + 2 + window * 0.6
                while time.monotonic() - written < deadline:
                    if kill and result.killed is None and (api.held or time.monotonic() > kill_by):
                        running["p0"].send_signal(signal.SIGKILL)
                        running["p0"].wait()
                        result.killed = "p0"
                        result.kill_at = time.monotonic() - written
                    performed = {_action_of(m, p) for m, p in list(api.calls)} - {None}
                    # What p0 was sending when killed may have reached Telegram (the bot
                    # cannot tell): it is settled as unknown/failed, never sent again.
                    in_flight = {_action_of(m, p) for _, m, p in list(api.held)} - {None}
                    if performed >= expected - in_flight and (result.killed or not kill):
                        result.done_seconds = time.monotonic() - written
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(2 * sweep + 1)  # would anything come twice?
            api.hold_if = None
            api.release()
            for process in running.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in running.values():
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
            result.held = [(m, str(p.get("chat_id"))) for _, m, p in api.held]
            held_actions = {_action_of(m, p) for _, m, p in api.held} - {None}
            with api._lock:
                calls = list(zip(api.calls, api.sources, api.times, strict=True))
            for (method, params), tag, moment in calls:
                action = _action_of(method, params)
                if action is not None:
                    late = moment - at_now - due_in.get(action.replace("-text", ""), 0.0)
                    result.lateness[action] = round(late, 2)
                    result.sends[action] += 1
                    result.by_process[tag] += 1
            result.in_flight = sorted(held_actions)  # type: ignore[arg-type]
            result.taken_over = sorted(a for a in held_actions if result.sends[a] == 1)  # type: ignore[misc]
            result.problems.extend(api.violations)
            for key in sorted(expected):
                allowed = (0, 1) if key in held_actions else (1,)
                if result.sends[key] not in allowed:
                    result.problems.append(f"{key}: sent {result.sends[key]} times")
            await _read_database(url, result)
    finally:
        for process in running.values():
            if process.poll() is None:
                process.kill()
        for log_path in workdir.glob("*.log"):  # noqa: ASYNC240
            result.logs[log_path.stem] = log_path.read_text(errors="replace")
        await _drop_postgres_database(name)
    return result


async def _wait_healthy(
    client: httpx.AsyncClient,
    ports: dict[str, tuple[int, int]],
    running: dict[str, subprocess.Popen[bytes]],
    *,
    limit: float,
) -> None:
    waiting = set(ports)
    until = time.monotonic() + limit
    while waiting and time.monotonic() < until:
        for tag in sorted(waiting):
            if running[tag].poll() is not None:
                raise RuntimeError(f"{tag} exited with {running[tag].returncode}")
            try:
                answer = await client.get(f"http://127.0.0.1:{ports[tag][1]}/healthz")
            except httpx.HTTPError:
                continue
            if answer.status_code == 200 and answer.json()["database"]["ok"]:
                waiting.discard(tag)
        await asyncio.sleep(0.2)
    if waiting:
        raise RuntimeError(f"not healthy in {limit} s: {sorted(waiting)}")


async def _read_database(url: str, result: DrillResult) -> None:
    from bot import calendar as cal
    from bot.checkins import Checkin
    from bot.db import create_engine, make_sessionmaker
    from bot.digest import DigestRun
    from bot.lottery import Lottery

    engine = create_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            for row in await session.scalars(select(cal.CalendarDelivery)):
                result.states[f"delivery {row.id}"] = row.state
            for row in await session.scalars(select(Lottery)):
                result.states[f"lottery {row.prize}"] = row.state
            for row in await session.scalars(select(DigestRun)):
                result.states[f"digest {row.chat_id}"] = row.state
            result.checkins = int(
                await session.scalar(select(func.count()).select_from(Checkin)) or 0
            )
    finally:
        await engine.dispose()
    expected = {"sent", "drawn"}
    settled = [key for key, state in result.states.items() if state not in expected]
    for key in settled:  # only what p0 was sending may be left unknown (posts) or failed
        state = result.states[key]
        if state not in ("unknown", "failed") or len(settled) > len(result.held):
            result.problems.append(f"{key} is {state}")
