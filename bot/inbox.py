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

In webhook mode (several processes) the update queue writes each update before PTB answers
Telegram's request (`InboxQueue`: updates arriving together share one statement), every row
names the process that received it, and each process takes over — on its sweep — the rows of
processes whose heartbeat has stopped (`CLAIM_LEASE_SECONDS`), and handles them. A replay
passes `bot.cluster.UpdateLog`'s check (its id was recorded when it first arrived); a copy
Telegram sends again to another process (no answer reached Telegram) takes the row over.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Column, Text, bindparam, delete, or_, select, true
from sqlalchemy import update as update_rows
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, SQLModel
from telegram import Update
from telegram.error import NetworkError
from telegram.request import BaseRequest, RequestData

from bot.cluster import PROCESS
from bot.db import excluded, insert_for, prepared
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
    owner: str | None = Field(default=None, max_length=64)  # the process handling it


INBOX = InboxUpdate.__table__  # type: ignore[attr-defined]


def _insert(dialect: str) -> Any:
    # a copy Telegram sent again (the first receiver died before answering) takes the row over
    return (
        insert_for(dialect, INBOX)
        .values(
            update_id=bindparam("update_id"),
            payload=bindparam("payload"),
            received_at=bindparam("received_at"),
            owner=bindparam("owner"),
        )
        .on_conflict_do_update(index_elements=["update_id"], set_={"owner": excluded(INBOX).owner})
    )


def _delete(dialect: str) -> Any:
    return delete(INBOX).where(INBOX.c.update_id.in_(bindparam("ids", expanding=True)))


def _take_over(everyone: bool) -> Callable[[str], Any]:
    def build(dialect: str) -> Any:
        alive = select(PROCESS.c.token).where(PROCESS.c.seen_at >= bindparam("alive_since"))
        mine = INBOX.c.owner == bindparam("me")
        orphan = true() if everyone else or_(INBOX.c.owner.is_(None), INBOX.c.owner.not_in(alive))
        return (
            update_rows(INBOX)
            .where(orphan, or_(INBOX.c.owner.is_(None), ~mine))
            .values(owner=bindparam("me"))
            .returning(INBOX.c.update_id, INBOX.c.payload)
        )

    return build


class UpdateInbox:
    """Fetched updates, written before Telegram is told they arrived; see the module."""

    def __init__(
        self, engine: AsyncEngine, clock: Callable[[], datetime], owner: str = ""
    ) -> None:
        self._engine = engine
        self._clock = clock
        self.owner = owner  # this process (bot.cluster's token)
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
            now = self._clock()
            rows = [
                {"update_id": key, "payload": payload, "received_at": now, "owner": self.owner}
                for key, payload in self._fetched.items()
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
        """Delete the handled updates (a replay after a kill would handle them again); what
        was fetched meanwhile is written with them (early is as safe as at the getUpdates)."""
        await self.store()

    async def keep(self, update: Update) -> None:
        """Webhook mode: write it before Telegram gets its answer (bot.inbox.InboxQueue)."""
        if update.update_id in self._replayed:
            return  # taken over from the inbox: already there
        self._fetched[update.update_id] = update.to_json()
        await asyncio.sleep(0)  # the requests that arrived with it join the same statement
        await self.store()  # whoever holds the lock writes everything that came meanwhile

    def is_replayed(self, update_id: int) -> bool:
        return update_id in self._replayed

    async def take_over(
        self, bot: Any, *, everyone: bool = False, lease: timedelta = timedelta(0)
    ) -> list[Update]:
        """Rows nobody alive is handling, oldest first, now this process's to handle.

        `everyone` (long polling: the only process) takes every row; otherwise those of
        processes without a heartbeat within `lease` (or of none).
        """
        async with driver_session(self._engine) as session:
            rows = (
                await session.execute(
                    prepared(session, f"inbox.take_over.{everyone}", _take_over(everyone)),
                    {"me": self.owner, "alive_since": self._clock() - lease},
                )
            ).all()
        updates = []
        for update_id, payload in sorted(rows):
            self._stored.add(update_id)
            self._replayed.add(update_id)
            updates.append(Update.de_json(json.loads(payload), bot))
        return updates

    async def leftovers(self, bot: Any) -> list[Update]:
        """What a previous polling process fetched and did not finish, oldest first."""
        return await self.take_over(bot, everyone=True)

    def start(
        self,
        enqueue: Callable[[Update], Awaitable[None]] | None = None,
        bot: Any = None,
        *,
        take_over_every: float = 0.0,
        lease: timedelta = timedelta(0),
    ) -> None:
        """Delete handled updates regularly; with `enqueue`, also take over (every
        `take_over_every` seconds) and hand on the updates of processes that stopped."""
        if self._deleter is None:
            self._deleter = asyncio.create_task(
                self._background(enqueue, bot, take_over_every, lease), name="update-inbox"
            )

    async def stop(self) -> None:
        """After the last update was handled: this process's rows are gone."""
        if self._deleter is not None:
            self._deleter.cancel()
            await asyncio.gather(self._deleter, return_exceptions=True)
            self._deleter = None
        await self.forget_handled()

    async def _background(
        self,
        enqueue: Callable[[Update], Awaitable[None]] | None,
        bot: Any,
        take_over_every: float,
        lease: timedelta,
    ) -> None:
        since_take_over = 0.0
        while True:
            await asyncio.sleep(DELETE_EVERY)
            since_take_over += DELETE_EVERY
            try:
                await self.forget_handled()
                if enqueue is not None and since_take_over >= take_over_every:
                    since_take_over = 0.0
                    taken = await self.take_over(bot, lease=lease)
                    if taken:
                        log.warning("handling %d update(s) of a stopped process", len(taken))
                    for update in taken:
                        await enqueue(update)
            except Exception:  # the database is away: keep them, try again
                log.exception("update inbox: could not delete or take over updates")


class InboxQueue(asyncio.Queue):  # type: ignore[type-arg]
    """Webhook mode's update queue: an update is in the inbox before PTB answers Telegram."""

    def __init__(self, inbox: UpdateInbox) -> None:
        super().__init__()
        self._inbox = inbox

    async def put(self, item: Any) -> None:
        if isinstance(item, Update):
            await self._inbox.keep(item)  # an error here makes PTB answer 500: Telegram retries
        await super().put(item)


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
