"""Two bot processes on one database: every delivery is sent exactly once.

Both plan the same calendar at the same time, both have a job for every delivery, and both
run them concurrently; the claim (a conditional UPDATE) lets exactly one of them send. On
SQLite here, and on PostgreSQL when TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from bot import calendar as cal
from schedules import calendar as publishing
from tests.calendar_support import (
    GROUP,
    NEWS,
    another_bot,
    deliveries,
    join,
    run_due,
    sends,
    write_calendar,
)
from tests.conftest import both_databases


@pytest.fixture
def settings(settings, tmp_path):
    return settings.model_copy(update={"content_dir": str(tmp_path / "content")})


G, N = GROUP["id"], NEWS["id"]


@both_databases
async def test_two_schedulers_send_each_delivery_once(tg, settings, database_url):
    await join(tg, GROUP, NEWS)
    write_calendar(
        tg,
        f"""
        timezone: UTC
        targets: {{main: {G}, news: {N}}}
        posts:
          - {{id: quarter, to: [main, news], cron: "*/15 * * * *", text: Quarter}}
          - {{id: noon, to: [main, news], cron: "0 13 * * *", text: Noon, pin: true}}
          - {{id: brief, to: main, cron: "30 * * * *", text: Brief, delete_after: 20m}}
        """,
    )
    async with another_bot(settings, database_url, tg.clock) as other:
        await asyncio.gather(publishing.on_startup(tg.app), publishing.on_startup(other.app))
        for _ in range(6 * 3):  # three hours in ten-minute steps, both processes awake
            tg.clock.advance(minutes=10)
            await asyncio.gather(publishing.sweep(tg.app), publishing.sweep(other.app))
            await asyncio.gather(run_due(tg), run_due(other))
        both = sends(tg) + sends(other)
    sent = await deliveries(tg, state=cal.SENT)
    assert len(both) == len(sent) > 25
    per_delivery = Counter((p["chat_id"], p["text"], c) for c, (_, p) in enumerate(both))
    assert len(per_delivery) == len(both)
    assert sends(tg) and sends(other), "both processes took part"
    rows = await deliveries(tg)
    keys = [(r.post_id, r.chat_id, r.due_at) for r in rows]
    assert len(keys) == len(set(keys))  # nothing planned twice
    assert {r.claimed_by for r in sent} == {
        publishing.runtime(tg.app).token,
        publishing.runtime(other.app).token,
    }
    deletes = tg.api.of("deleteMessage") + other.api.of("deleteMessage")
    briefs = [r for r in sent if r.deleted_at is not None]
    assert len(deletes) == len(briefs) == 3
    pins = tg.api.of("pinChatMessage") + other.api.of("pinChatMessage")
    assert len(pins) == 2
