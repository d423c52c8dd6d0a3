"""SQLite for the async engine without a thread hop per call: sqlite3 runs on the event loop.

aiosqlite runs every sqlite3 call on the connection's own thread and waits for the answer
on the event loop; SQLAlchemy's adapter makes four such calls per statement (create a cursor,
execute, fetch, close). Each round trip is a thread wake-up and a GIL hand-over: tens of µs
on a quiet machine, milliseconds on a busy one — while SQLite itself needs 20–60 µs for the
bot's statements. With several pooled connections, writers also met in SQLite's busy
handler, which sleeps (1, 2, 5 … 100 ms) instead of queueing. Under load (bench/load.py,
docs/load.md) these two were most of the bot's time.

So the sqlite3 calls run directly on the event loop (a statement blocks it for its few tens of
µs), and `bot.db.create_engine` gives a SQLite file engine ONE connection: sessions queue for
it in the pool, in order, instead of spinning on the database lock. SQLite's own busy
timeout is 0 — waiting inside sqlite3 would now block the event loop, and with it whoever
holds the lock (another engine in this process) — so a statement that finds the database
locked (by another process, e.g. the CLI, or another engine) is retried after an
`asyncio.sleep`, for up to `BUSY_TIMEOUT` seconds, and then fails as before.

This is aiosqlite's Connection with its `_execute` run inline and a cursor that executes and
fetches in one step; SQLAlchemy's aiosqlite dialect is used unchanged.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import types
from collections.abc import Iterable
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_dbapi

BUSY_TIMEOUT = 30.0  # seconds a statement waits for another writer's lock
BUSY_POLL = (0.001, 0.05)  # first and longest pause between attempts


def _is_busy(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(error) or "busy" in str(error)


class InlineCursor:
    """The part of aiosqlite's Cursor SQLAlchemy uses; rows are fetched when executing."""

    arraysize = 1

    def __init__(self, connection: InlineConnection) -> None:
        self._connection = connection
        self._rows: list[Any] = []
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __await__(self) -> Any:
        return self.__aenter__().__await__()

    def _run(self, method: str, sql: str, parameters: Any) -> InlineCursor:
        cursor = self._connection._conn.cursor()
        try:
            getattr(cursor, method)(sql, parameters)
            self._rows = cursor.fetchall() if cursor.description else []
            self.description = cursor.description
            self.rowcount = cursor.rowcount
            self.lastrowid = cursor.lastrowid
        finally:
            cursor.close()
        return self

    async def _run_waiting(self, method: str, sql: str, parameters: Any) -> InlineCursor:
        """Run; while another connection holds the lock, wait without blocking the loop.

        A statement that fails with SQLITE_BUSY has not changed anything, so running it
        again is safe.
        """
        deadline: float | None = None
        pause = BUSY_POLL[0]
        while True:
            try:
                return self._run(method, sql, parameters)
            except sqlite3.OperationalError as error:
                if not _is_busy(error):
                    raise
                now = time.monotonic()
                deadline = deadline or now + BUSY_TIMEOUT
                if now >= deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, BUSY_POLL[1])

    async def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> InlineCursor:
        return await self._run_waiting("execute", sql, [] if parameters is None else parameters)

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> InlineCursor:
        return await self._run_waiting("executemany", sql, parameters)

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        size = self.arraysize if size is None else size
        rows, self._rows = self._rows[:size], self._rows[size:]
        return rows

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def close(self) -> None:
        self._rows = []


class InlineConnection(aiosqlite.Connection):
    """aiosqlite's Connection running sqlite3 calls inline.

    Its thread still starts, for the two things SQLAlchemy hands it directly (setting the
    isolation level, stopping); the sqlite3 connection allows that (check_same_thread off).
    """

    def cursor(self) -> InlineCursor:  # type: ignore[override]
        return InlineCursor(self)

    async def _execute(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)

    async def _connect(self) -> InlineConnection:
        if self._connection is None:
            try:
                self._connection = self._connector()
            except BaseException:
                self.stop()  # let the idle thread end, as aiosqlite does
                raise
        return self


def dbapi() -> AsyncAdapt_aiosqlite_dbapi:
    """The DBAPI module for `create_async_engine("sqlite+aiosqlite://…", module=dbapi())`."""

    def connect(database: Any, *, iter_chunk_size: int = 64, **kwargs: Any) -> InlineConnection:
        kwargs["check_same_thread"] = False

        def connector() -> sqlite3.Connection:
            location = database.decode() if isinstance(database, bytes) else str(database)
            return sqlite3.connect(location, **kwargs)

        return InlineConnection(connector, iter_chunk_size)

    module = types.ModuleType("aiosqlite_inline")
    module.__dict__.update(vars(aiosqlite))
    module.connect = connect  # type: ignore[attr-defined]
    module.Connection = InlineConnection  # type: ignore[attr-defined]
    return AsyncAdapt_aiosqlite_dbapi(module, sqlite3)
