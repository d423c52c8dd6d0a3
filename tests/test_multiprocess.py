"""The multi-process drill (tests/drill.py): three `community-bot run` processes in webhook
mode on one PostgreSQL database and one Bot API stand-in; posts, draws and digests due within
seconds, written into the database as another process would; one process killed with SIGKILL
while it sends. Every action is performed exactly once, by the calls Telegram saw and by the
database. PostgreSQL only (several processes on one SQLite file are not a supported setup)."""

from __future__ import annotations

import pytest

from tests.conftest import PG_URL
from tests.drill import run_drill

pytestmark = pytest.mark.skipif(
    not PG_URL,
    reason="the multi-process drill needs PostgreSQL: set TEST_DATABASE_URL "
    "(e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test)",
)


async def test_three_processes_one_killed_every_action_exactly_once():
    assert PG_URL
    result = await run_drill(PG_URL, processes=3, posts=5, lotteries=3, digests=2, window=5.0)
    logs = "\n".join(f"--- {tag}\n{text[-3000:]}" for tag, text in result.logs.items())
    assert not result.problems, (result.problems, logs)
    assert result.killed == "p0"
    expected = {f"post {i}" for i in range(5)} | {f"lottery DrillPrize{i}" for i in range(3)}
    # Never twice. What p0 was sending when killed may have reached Telegram (the bot cannot
    # tell), so it is settled — a post 'unknown', a digest 'failed', a draw's result edited
    # into its post — not sent again; everything else exactly once.
    in_flight = {k.replace("digest-text ", "digest ") for k in result.in_flight}
    assert expected - in_flight <= {k for k, n in result.sends.items() if n == 1}
    assert all(count <= 1 for count in result.sends.values()), result.sends
    assert len([s for s in result.states.values() if s in ("unknown", "failed")]) <= len(in_flight)
    assert set(result.states.values()) <= {"drawn", "sent", "unknown", "failed"}
    assert result.checkins == 1, "the redelivered /checkin was handled once"
    if result.held:  # p0 died while sending: Telegram never saw that call
        assert result.by_process["p0"] == 0
    assert {"p1", "p2"} <= set(result.by_process), result.by_process
