"""Long polling without losing the updates in flight when the process dies.

PTB confirms a batch of updates to Telegram with the offset of its next `getUpdates`, which
it sends as soon as the batch is queued — before the updates are handled. A `kill -9` (or a
crash, an OOM kill, a power cut) then loses what was fetched but not yet handled, check-ins
and Join presses among them, and Telegram does not send them again.

`UpdateInbox` closes that gap in polling mode (the default; one process): the getUpdates
request (`InboxRequest`, wrapping the one PTB uses) writes every fetched update that is not
yet handled to `update_inbox` *before* the next getUpdates confirms it; an update is deleted
(in batches, within a second) once its handlers have run; at start-up whatever is left is
handled first. So an update is handled at least once: one that was handled just before the
kill (and not yet deleted) is handled again. The handlers that matter are idempotent (a
check-in, entry, vote, join or leave is recorded once — the second answer to a check-in says
"already checked in"); a replayed text message may count twice in that second's activity.
If the process died before Telegram got the getUpdates that confirms a batch, Telegram sends
it again: copies of the updates being replayed are dropped (`redelivered`).

Webhook mode does not use it: there Telegram redelivers until it gets an answer, and
`bot.cluster.UpdateLog` drops what another process already received (docs/deploy.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Text, bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, SQLModel
from telegram import Update
from telegram.error import NetworkError
from telegram.request import BaseRequest, RequestData

from bot.db import insert_for, prepared
from bot.driver_session import driver_session
from bot.models import utc_column

log = logging.getLogger(__name__)

DELETE_EVERY = 0.5  # seconds between deletions of handled updates (the replay window)


class InboxUpdate(SQLModel, table=True):
    """An update fetched by long polling and not yet handled (seconds, normally)."""

    __tablename__ = "update_inbox"

    update_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    payload: str = Field(sa_column=Column(Text, nullable=False))  # the update's JSON
    received_at: datetime = Field(sa_column=utc_column(nullable=False))


INBOX = InboxUpdate.__table__  # type: ignore[attr-defined]


def _insert(dialect: str) -> Any:
    return (
        insert_for(dialect, INBOX)
        .values(
            update_id=bindparam("update_id"),
            payload=bindparam("payload"),
            received_at=bindparam("received_at"),
        )
        .on_conflict_do_nothing(index_elements=["update_id"])
    )


def _delete(dialect: str) -> Any:
    return delete(INBOX).where(INBOX.c.update_id.in_(bindparam("ids", expanding=True)))


def _leftovers(dialect: str) -> Any:
    return select(INBOX.c.update_id, INBOX.c.payload).order_by(INBOX.c.update_id)


class UpdateInbox:
    """Fetched updates, written before Telegram is told they arrived; see the module."""

    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock
        self._fetched: dict[int, str] = {}  # update_id → JSON, not written yet
        self._stored: set[int] = set()  # written, not handled yet
        self._handled: list[int] = []  # written and handled: to delete
        self._replayed: set[int] = set()  # left by the previous process, handled by this one
        self._redelivered: set[int] = set()  # replayed ones Telegram sent again: skip them
        self._writing = asyncio.Lock()
        self._deleter: asyncio.Task[None] | None = None

    def fetched(self, body: bytes) -> None:
        """A getUpdates answer arrived (called before PTB parses and queues it)."""
        try:
            answer = json.loads(body)
        except ValueError:
            return  # PTB reports a malformed answer itself
        for update in answer.get("result") or ():
            if isinstance(update, dict) and isinstance(update.get("update_id"), int):
                update_id = update["update_id"]
                if update_id in self._replayed:  # the process died before confirming it
                    self._redelivered.add(update_id)
                else:
                    self._fetched[update_id] = json.dumps(update, ensure_ascii=False)

    def redelivered(self, update_id: int) -> bool:
        """Whether this is a second copy of a replayed update (then it is not handled)."""
        if update_id in self._redelivered:
            self._redelivered.discard(update_id)
            return True
        return False

    def handled(self, update_id: int) -> None:
        """Its handlers ran (or failed): it must not be handled again after a restart."""
        if self._fetched.pop(update_id, None) is not None:
            return  # handled before it was written: nothing to write or delete
        if update_id in self._stored:
            self._stored.discard(update_id)
            self._handled.append(update_id)

    async def store(self) -> None:
        """Write what was fetched and is not handled yet (before the next getUpdates)."""
        async with self._writing:
            rows = [
                {"update_id": update_id, "payload": payload, "received_at": self._clock()}
                for update_id, payload in self._fetched.items()
            ]
            handled, self._handled = self._handled, []
            if not rows and not handled:
                return
            try:
                async with driver_session(self._engine) as session:
                    if rows:
                        await session.execute(prepared(session, "inbox.insert", _insert), rows)
                    if handled:
                        await session.execute(
                            prepared(session, "inbox.delete", _delete), {"ids": handled}
                        )
            except BaseException:
                self._handled = handled + self._handled
                raise
            for row in rows:
                if self._fetched.pop(row["update_id"], None) is not None:
                    self._stored.add(row["update_id"])
                else:  # handled while the rows were written: delete it next time
                    self._handled.append(row["update_id"])

    async def forget_handled(self) -> None:
        """Delete the handled updates (a replay after a kill would handle them again)."""
        async with self._writing:
            handled, self._handled = self._handled, []
            if not handled:
                return
            try:
                async with driver_session(self._engine) as session:
                    await session.execute(
                        prepared(session, "inbox.delete", _delete), {"ids": handled}
                    )
            except BaseException:
                self._handled = handled + self._handled
                raise

    async def leftovers(self, bot: Any) -> list[Update]:
        """What a previous process fetched and did not finish, oldest first."""
        async with driver_session(self._engine, write=False) as session:
            rows = (await session.execute(prepared(session, "inbox.left", _leftovers))).all()
        updates = []
        for update_id, payload in rows:
            self._stored.add(update_id)
            self._replayed.add(update_id)
            updates.append(Update.de_json(json.loads(payload), bot))
        return updates

    def start(self) -> None:
        if self._deleter is None:
            self._deleter = asyncio.create_task(self._delete_regularly(), name="update-inbox")

    async def stop(self) -> None:
        """After the last update was handled: the inbox ends empty."""
        if self._deleter is not None:
            self._deleter.cancel()
            await asyncio.gather(self._deleter, return_exceptions=True)
            self._deleter = None
        await self.forget_handled()

    async def _delete_regularly(self) -> None:
        while True:
            await asyncio.sleep(DELETE_EVERY)
            try:
                await self.forget_handled()
            except Exception:  # the database is away: keep them, try again
                log.exception("could not delete handled updates from the inbox")


class InboxRequest(BaseRequest):
    """The getUpdates request, writing the inbox before each call confirms the last batch."""

    def __init__(self, inner: BaseRequest, inbox: UpdateInbox) -> None:
        self._inner = inner
        self._inbox = inbox

    @property
    def read_timeout(self) -> float | None:
        return self._inner.read_timeout

    async def initialize(self) -> None:
        await self._inner.initialize()

    async def shutdown(self) -> None:
        await self._inner.shutdown()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        getting_updates = url.endswith("/getUpdates")
        if getting_updates:
            try:
                await self._inbox.store()  # its offset confirms what came before: keep it first
            except Exception as error:  # not confirmed then: PTB retries with the same offset
                log.warning("could not store the fetched updates: %s", error)
                raise NetworkError(f"could not store the fetched updates: {error}") from error
        status, body = await self._inner.do_request(
            url,
            method,
            request_data,
            read_timeout=read_timeout,
            write_timeout=write_timeout,
            connect_timeout=connect_timeout,
            pool_timeout=pool_timeout,
        )
        if getting_updates and status == 200:
            self._inbox.fetched(body)
        return status, body
