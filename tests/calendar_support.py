"""Helpers for the content-calendar tests: groups, calendar files, running due jobs."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bot import calendar as cal
from schedules import calendar as publishing
from tests import factories as f

GROUP = f.group(-1001000000001, "Main Group")
NEWS = f.group(-1001000000002, "Newcomers")
ADMIN = f.user(10, "Ada")
MEMBER = f.user(20, "Max")
OWNER = f.user(424242, "Owner")  # in BOT_OWNERS (tests/conftest.py)
JOB_KINDS = ("delivery", "preview", "delete")


def content_dir(tg: Any) -> Path:
    return Path(tg.services.settings.content_dir)


def write_calendar(tg: Any, text: str, name: str = "calendar.yaml") -> Path:
    folder = content_dir(tg)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


async def join(tg: Any, *chats: dict[str, Any]) -> None:
    """The bot is added to each group as an admin; Ada administers them."""
    for chat in chats:
        await tg.feed(f.my_chat_member(chat, ADMIN, "left", "administrator", date=tg.now()))
        tg.api.set_admins(chat["id"], ADMIN)
    tg.api.clear()


async def start(tg: Any) -> None:
    await publishing.on_startup(tg.app)


def jobs(tg: Any, kind: str = "delivery") -> dict[str, Any]:
    return {
        job.name: job.trigger.run_date
        for job in tg.app.job_queue.jobs()
        if job.name and job.name.startswith(f"{kind}:")
    }


async def run_due(tg: Any, limit: int = 500) -> int:
    """Run every calendar job whose time has come on the fake clock, earliest first —
    what the JobQueue would do — until none is due."""
    ran = 0
    while ran < limit:
        due = sorted(
            (
                job
                for job in tg.app.job_queue.jobs()
                if job.name
                and job.name.split(":")[0] in JOB_KINDS
                and job.trigger.run_date <= tg.clock()
            ),
            key=lambda job: job.trigger.run_date,
        )
        if not due:
            return ran
        job = due[0]
        job.schedule_removal()
        await job.run(tg.app)
        ran += 1
    raise AssertionError("jobs keep coming due: a loop?")


async def advance(tg: Any, **delta: float) -> int:
    """Move the clock and run what fell due (the per-minute sweep included)."""
    tg.clock.advance(**delta)
    await publishing.sweep(tg.app)
    return await run_due(tg)


async def deliveries(tg: Any, **where: Any) -> list[cal.CalendarDelivery]:
    async with tg.db() as session:
        query = select(cal.CalendarDelivery).order_by(
            cal.CalendarDelivery.due_at, cal.CalendarDelivery.chat_id
        )
        for column, value in where.items():
            query = query.where(getattr(cal.CalendarDelivery, column) == value)
        return list(await session.scalars(query))


async def post_id(tg: Any, key: str) -> int:
    async with tg.db() as session:
        return await session.scalar(select(cal.CalendarPost.id).where(cal.CalendarPost.key == key))


def sends(tg: Any, chat_id: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Every content send (text, media, copy) in order, as (method, params)."""
    methods = ("sendMessage", "sendPhoto", "sendDocument", "sendVideo", "copyMessage")
    return [
        (call.method, call.params)
        for call in tg.api.calls
        if call.method in methods and (chat_id is None or call.params["chat_id"] == chat_id)
    ]


@asynccontextmanager
async def another_bot(
    settings: Any, database_url: str, clock: Any, **options: Any
) -> AsyncIterator[Any]:
    """A second bot process on the same database (its own engine, Bot API and job queue);
    `options` go to build_app (default: updates one at a time, no rate limiter)."""
    from bot.app import build_app
    from bot.db import create_engine
    from tests.conftest import Harness
    from tests.recording import RecordingRequest

    engine = create_engine(database_url)
    api = RecordingRequest(now=lambda: clock().timestamp())
    options = {"rate_limiter": False, "concurrent": False, **options}
    app = build_app(settings, engine=engine, request=api, clock=clock, **options)
    harness = Harness(app, api, clock)

    async def collect(update: object, context: Any) -> None:
        harness.errors.append(context.error)

    app.add_error_handler(collect)
    try:
        async with app:
            yield harness
            await harness.services.activity.stop()
    finally:
        await engine.dispose()
    assert not harness.errors, harness.errors
    assert not api.violations, api.violations
