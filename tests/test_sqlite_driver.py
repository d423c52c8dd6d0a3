"""The SQLite engine: sqlite3 on the event loop, one connection, waiting for locks without
blocking the loop (bot/sqlite_driver.py)."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from bot import sqlite_driver
from bot.db import create_engine, make_sessionmaker


@pytest.fixture
def url(tmp_path):
    return f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}"


async def _table(engine) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, v INTEGER NOT NULL)")
        )


async def test_statements_rows_counts_and_ids(url):
    engine = create_engine(url)
    await _table(engine)
    async with engine.begin() as connection:
        first = await connection.execute(text("INSERT INTO t (v) VALUES (10)"))
        second = await connection.execute(text("INSERT INTO t (v) VALUES (20)"))
        assert (first.lastrowid, second.lastrowid) == (1, 2)
        await connection.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": 30}, {"v": 40}])
        updated = await connection.execute(text("UPDATE t SET v = v + 1 WHERE v >= 20"))
        assert updated.rowcount == 3
        rows = (await connection.execute(text("SELECT id, v FROM t ORDER BY id"))).all()
        assert rows == [(1, 10), (2, 21), (3, 31), (4, 41)]
        streamed = await connection.stream(text("SELECT v FROM t ORDER BY id"))
        assert [row.v async for row in streamed] == [10, 21, 31, 41]
    await engine.dispose()


async def test_one_connection_many_concurrent_writers(url):
    """300 concurrent transactions on one engine: all committed, none told "locked"."""
    engine = create_engine(url)
    await _table(engine)
    db = make_sessionmaker(engine)

    async def write(value: int) -> None:
        async with db.begin() as session:
            await session.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": value})
            await asyncio.sleep(0)  # hand the loop to the others mid-transaction
            await session.execute(text("UPDATE t SET v = v + 1000 WHERE v = :v"), {"v": value})

    await asyncio.gather(*(write(n) for n in range(300)))
    async with db() as session:
        values = (await session.execute(text("SELECT v FROM t ORDER BY v"))).scalars().all()
    assert values == [1000 + n for n in range(300)]
    assert engine.pool.size() == 1
    await engine.dispose()


async def test_a_second_engine_waits_for_the_lock_without_blocking_the_loop(url):
    """Engine A holds the write lock across an await; B's write waits and then succeeds."""
    first, second = create_engine(url), create_engine(url)
    await _table(first)
    holding, release = asyncio.Event(), asyncio.Event()
    ticks = 0

    async def hold() -> None:
        async with first.begin() as connection:
            await connection.execute(text("INSERT INTO t (v) VALUES (1)"))
            holding.set()
            await release.wait()

    async def wait_then_write() -> None:
        await holding.wait()
        async with second.begin() as connection:
            await connection.execute(text("INSERT INTO t (v) VALUES (2)"))

    async def ticker() -> None:
        nonlocal ticks
        await holding.wait()
        for _ in range(5):  # the loop keeps running while B waits for the lock
            await asyncio.sleep(0.01)
            ticks += 1
        release.set()

    await asyncio.wait_for(asyncio.gather(hold(), wait_then_write(), ticker()), timeout=10)
    assert ticks == 5
    async with second.connect() as connection:
        assert (await connection.execute(text("SELECT v FROM t ORDER BY v"))).scalars().all() == [
            1,
            2,
        ]
    await first.dispose()
    await second.dispose()


async def test_a_lock_held_too_long_still_fails(url, monkeypatch):
    monkeypatch.setattr(sqlite_driver, "BUSY_TIMEOUT", 0.05)
    engine = create_engine(url)
    await _table(engine)
    other = sqlite3.connect(url.split("///", 1)[1], isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        with pytest.raises(OperationalError, match="locked"):
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO t (v) VALUES (1)"))
    finally:
        other.execute("ROLLBACK")
        other.close()
    async with engine.begin() as connection:  # and works once the lock is gone
        await connection.execute(text("INSERT INTO t (v) VALUES (1)"))
    await engine.dispose()


async def test_a_failed_connect_leaves_no_thread_behind(tmp_path):
    import threading

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}")
    before = threading.active_count()
    with pytest.raises(OperationalError, match="unable to open"):
        async with engine.connect():
            pass
    for _ in range(100):  # the worker thread ends right after its stop sentinel
        if threading.active_count() <= before:
            break
        await asyncio.sleep(0.01)
    assert threading.active_count() <= before
    await engine.dispose()
