"""The activity buffer: batched writes, nothing lost on failure, ordered concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from telegram import Update

from bot.models import ChatHour, DailyActivity
from bot.updates import ChatOrderedUpdateProcessor
from tests import factories as f

GROUP = f.group()


async def total_messages(tg) -> int:
    async with tg.db() as session:
        return await session.scalar(select(func.coalesce(func.sum(DailyActivity.messages), 0)))


async def test_buffer_flushes_by_size_in_the_background(tg):
    tg.services.activity.max_pending = 10
    await tg.feed(
        *(f.message(GROUP, f.user(i % 3 + 1), f"m{i}", date=tg.now()) for i in range(25))
    )
    for _ in range(20):
        await asyncio.sleep(0.01)
        if tg.services.activity.flushed_events >= 20:
            break
    assert tg.services.activity.flushed_events >= 20
    await tg.flush()
    assert await total_messages(tg) == 25


async def test_failed_flush_keeps_everything_for_the_next_one(tg, monkeypatch):
    recorder = tg.services.activity
    await tg.feed(*(f.message(GROUP, f.user(1), f"m{i}", date=tg.now()) for i in range(5)))
    original = recorder._write
    calls = 0

    async def failing(*batch):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk full")
        await original(*batch)

    monkeypatch.setattr(recorder, "_write", failing)
    with pytest.raises(OSError):
        await recorder.flush()
    await tg.feed(*(f.message(GROUP, f.user(1), f"n{i}", date=tg.now()) for i in range(3)))
    assert recorder.pending == 8
    await recorder.flush()
    assert await total_messages(tg) == 8
    async with tg.db() as session:  # the hourly counts of the failed batch were kept too
        assert await session.scalar(select(func.sum(ChatHour.messages))) == 8


async def test_stop_writes_what_is_left(tg):
    tg.services.activity.start()
    await tg.feed(f.message(GROUP, f.user(1), "last words", date=tg.now()))
    await tg.services.activity.stop()
    assert await total_messages(tg) == 1


async def test_updates_of_one_chat_run_in_order_others_concurrently():
    processor = ChatOrderedUpdateProcessor(max_concurrent_updates=16)
    log: list[str] = []

    def update(chat_id: int) -> Update:
        return Update.de_json(
            f.message(f.group(chat_id), f.user(1), "x", date=datetime.now(UTC)), None
        )

    async def work(name: str, delay: float) -> None:
        log.append(f"start {name}")
        await asyncio.sleep(delay)
        log.append(f"end {name}")

    await asyncio.gather(
        processor.process_update(update(-1), work("a1", 0.05)),
        processor.process_update(update(-1), work("a2", 0.0)),
        processor.process_update(update(-2), work("b1", 0.0)),
    )
    assert log.index("end a1") < log.index("start a2")  # same chat: in order
    assert log.index("end b1") < log.index("end a1")  # other chat: not held up
    assert processor._locks == {}


async def test_cancelled_flush_still_writes_its_batch_once(tg, monkeypatch):
    recorder = tg.services.activity
    await tg.feed(*(f.message(GROUP, f.user(1), f"m{i}", date=tg.now()) for i in range(4)))
    original = recorder._write
    started = asyncio.Event()

    async def slow(*batch):
        started.set()
        await asyncio.sleep(0.05)
        await original(*batch)

    monkeypatch.setattr(recorder, "_write", slow)
    task = asyncio.create_task(recorder.flush())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    monkeypatch.setattr(recorder, "_write", original)
    await recorder.flush()  # nothing left: the batch was written exactly once
    assert recorder.pending == 0
    assert await total_messages(tg) == 4


def test_content_filter_excludes_service_messages():
    from handlers.membership import has_content

    now = datetime.now(UTC)
    text = Update.de_json(f.message(GROUP, f.user(1), "hi", date=now), None)
    photo = Update.de_json(
        f.message(
            GROUP,
            f.user(1),
            None,
            date=now,
            caption="c",
            photo=[{"file_id": "a", "file_unique_id": "b", "width": 1, "height": 1}],
        ),
        None,
    )
    pinned = Update.de_json(
        f.message(
            GROUP,
            f.user(1),
            None,
            date=now,
            pinned_message=f.message_dict(GROUP, f.user(1), "x", date=now),
        ),
        None,
    )
    joined = Update.de_json(f.new_members(GROUP, [f.user(2)], date=now), None)
    assert [has_content(u.message) for u in (text, photo, pinned, joined)] == [
        True,
        True,
        False,
        False,
    ]
