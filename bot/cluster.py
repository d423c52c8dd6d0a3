"""Several bot processes on one database: who is alive, which updates were seen, health.

- `bot_process`: every running process has a row (its token, host, pid) whose `seen_at` it
  moves forward every few seconds (the heartbeat). A claim (a calendar delivery being sent, a
  digest, a lottery announcement) records the claimant's token; once that process has not
  beaten for `lease`, it is taken for dead and its claims may be taken over. A process never
  takes itself for dead, and a live process keeps its claims however long a send takes. A
  process that stops cleanly removes its row (its work is settled by then).
- `update_seen`: the ids of recently received updates, so an update Telegram delivers twice
  (a webhook answer that never reached Telegram, possibly to another process) is handled
  once. `UpdateLog` asks the database about many updates in one statement (group commit).
- `check_health`: database and Telegram reachability for `/healthz`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Column, ColumnElement, and_, bindparam, delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import Field, SQLModel

from bot.db import UTCDateTime, upsert
from bot.models import utc_column

log = logging.getLogger(__name__)

SEEN_RETENTION = timedelta(hours=1)  # Telegram redelivers within minutes, not hours


class SeenUpdate(SQLModel, table=True):
    """An update id this bot has received (any process), kept for SEEN_RETENTION."""

    __tablename__ = "update_seen"

    update_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    seen_at: datetime = Field(sa_column=utc_column(nullable=False, index=True))


class BotProcess(SQLModel, table=True):
    """A running bot process and its last heartbeat."""

    __tablename__ = "bot_process"

    token: str = Field(primary_key=True, max_length=64)
    host: str = Field(default="", max_length=255)
    pid: int = Field(default=0)
    mode: str = Field(default="", max_length=16)  # polling | webhook
    started_at: datetime = Field(sa_column=utc_column(nullable=False))
    seen_at: datetime = Field(sa_column=utc_column(nullable=False, index=True))


PROCESS = BotProcess.__table__  # type: ignore[attr-defined]
SEEN = SeenUpdate.__table__  # type: ignore[attr-defined]


def describe_process() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


# --- heartbeats and takeover ------------------------------------------------------------------


async def beat(
    session: AsyncSession, token: str, *, now: datetime, mode: str = "", started: bool = False
) -> None:
    """Say this process is alive (insert its row the first time)."""
    host, pid = describe_process()
    row = {"token": token, "host": host[:255], "pid": pid, "mode": mode, "started_at": now}
    await upsert(
        session,
        PROCESS,
        [{**row, "seen_at": now}],
        key=("token",),
        update=lambda new: (
            {"seen_at": new.seen_at, "started_at": new.started_at, "mode": new.mode}
            if started
            else {"seen_at": new.seen_at}
        ),
    )


async def leave(session: AsyncSession, token: str) -> None:
    """A clean stop: the process's row goes (its claims are settled already)."""
    await session.execute(delete(BotProcess).where(BotProcess.token == token))


async def forget_dead(session: AsyncSession, *, now: datetime, older_than: timedelta) -> int:
    result = await session.execute(delete(BotProcess).where(BotProcess.seen_at < now - older_than))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def claimed_by_stopped_process(
    claimed_by: Any, *, me: str, now: datetime, lease: timedelta
) -> ColumnElement[bool]:
    """SQL: the row is claimed by another known process that has not beaten within `lease`.

    Claims by tokens without a `bot_process` row (from before this table, or a process that
    signed off cleanly) are not covered: each feature's own time-based rule settles those.
    """
    stopped = select(PROCESS.c.token).where(PROCESS.c.seen_at < now - lease)
    return and_(claimed_by.is_not(None), claimed_by != me, claimed_by.in_(stopped))


async def processes(session: AsyncSession) -> list[BotProcess]:
    return list(await session.scalars(select(BotProcess).order_by(BotProcess.started_at)))


# --- update de-duplication --------------------------------------------------------------------


class UpdateLog:
    """Is this the first time any process sees this update id? Batched: while one INSERT …
    ON CONFLICT DO NOTHING RETURNING is in flight, the ids arriving meanwhile wait for the next
    one, so under load one statement answers for many updates.

    If the database cannot answer, the update is handled (a double count is better than a
    lost update) and the error is logged.
    """

    def __init__(
        self, db: async_sessionmaker[AsyncSession], clock: Callable[[], datetime]
    ) -> None:
        self.db = db
        self.clock = clock
        self._waiting: dict[int, list[asyncio.Future[bool]]] = {}
        self._flushing: asyncio.Task[None] | None = None
        self.statements = 0  # how many round trips so far (for benchmarks)
        self.duplicates = 0

    def ask(self, update_id: int) -> asyncio.Future[bool]:
        """Queue the question now (in arrival order); await the answer later."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(update_id, []).append(future)
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._run())
        return future

    async def first_time(self, update_id: int) -> bool:
        return await self.ask(update_id)

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                try:
                    new = await self._insert(list(batch))
                except Exception:
                    log.exception("could not record update ids: handling them anyway")
                    new = set(batch)
                for update_id, futures in batch.items():
                    for position, future in enumerate(futures):
                        first = update_id in new and position == 0
                        if not first:
                            self.duplicates += 1
                        if not future.done():
                            future.set_result(first)
        finally:
            self._flushing = None

    async def _insert(self, ids: list[int]) -> set[int]:
        """One INSERT … VALUES (id, :t), … ON CONFLICT DO NOTHING RETURNING update_id.

        The ids are integers written into the statement (no per-row parameter processing,
        which would cost SQLAlchemy ~15 µs a row); the time is the one bound parameter.
        """
        now = self.clock()
        self.statements += 1
        values = ", ".join(f"({int(i)}, :seen_at)" for i in ids)
        stmt = text(
            f"INSERT INTO update_seen (update_id, seen_at) VALUES {values} "
            "ON CONFLICT (update_id) DO NOTHING RETURNING update_id"
        ).bindparams(bindparam("seen_at", type_=UTCDateTime()))
        async with self.db.begin() as session:
            result = await session.execute(stmt, {"seen_at": now})
            return {int(row[0]) for row in result.all()}


async def prune_seen(session: AsyncSession, *, now: datetime) -> int:
    result = await session.execute(
        delete(SeenUpdate).where(SeenUpdate.seen_at < now - SEEN_RETENTION)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# --- health -----------------------------------------------------------------------------------


@dataclass
class Health:
    ok: bool
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "unavailable", **self.checks}


async def _timed(check: Any, limit: float) -> dict[str, Any]:
    began = time.perf_counter()
    try:
        await asyncio.wait_for(check(), limit)
    except Exception as exc:  # any failure is "unreachable", with the reason
        reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        return {"ok": False, "error": reason[:300]}
    return {"ok": True, "ms": round((time.perf_counter() - began) * 1000, 1)}


async def check_health(
    db: async_sessionmaker[AsyncSession], bot: Any, *, limit: float = 5.0
) -> Health:
    """Can this process reach its database (SELECT 1) and Telegram (getMe)?"""

    async def database() -> None:
        async with db() as session:
            await session.execute(text("SELECT 1"))

    async def telegram() -> None:
        await bot.get_me(read_timeout=limit, connect_timeout=limit)

    results = await asyncio.gather(_timed(database, limit), _timed(telegram, limit))
    checks = {"database": results[0], "telegram": results[1]}
    return Health(ok=all(c["ok"] for c in checks.values()), checks=checks)
