"""Who may run operator commands: chat administrators, anonymous admins, and BOT_OWNERS.

The administrator list of each chat is cached in the database (`chat_admin`), refreshed
from Telegram after `ttl`, and kept current by `chat_member` updates that promote or demote
someone — so a command costs one small query, not a Bot API call, and every process sees
a demotion as soon as one of them does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from telegram import Bot, ChatMember
from telegram.error import TelegramError

from bot.db import upsert
from bot.models import Chat, ChatAdmin

log = logging.getLogger(__name__)

ADMIN_STATUSES = frozenset({ChatMember.OWNER, ChatMember.ADMINISTRATOR})
ANONYMOUS_ADMIN_ID = 1087968824


class OperatorCheck:
    """The one authorization check every operator command goes through."""

    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        *,
        owners: Iterable[int],
        clock: Callable[[], datetime],
        ttl: timedelta = timedelta(minutes=10),
    ) -> None:
        self._db = db
        self.owners = frozenset(owners)
        self._clock = clock
        self.ttl = ttl

    async def is_operator(self, bot: Bot, chat_id: int, user_id: int) -> bool:
        """True for owners and for administrators of `chat_id` (cached list)."""
        if user_id in self.owners:
            return True
        if user_id == ANONYMOUS_ADMIN_ID:
            return False  # anonymous admins are recognised by sender_chat, not by this id
        admins = await self.admins(bot, chat_id)
        return user_id in admins

    async def admins(self, bot: Bot, chat_id: int) -> set[int]:
        """Administrator ids of a chat, refreshed from Telegram when the cache is stale."""
        async with self._db() as session:
            refreshed = await session.scalar(
                select(Chat.admins_refreshed_at).where(Chat.id == chat_id)
            )
            if refreshed is not None and self._clock() - refreshed < self.ttl:
                return set(
                    await session.scalars(
                        select(ChatAdmin.user_id).where(ChatAdmin.chat_id == chat_id)
                    )
                )
        return await self.refresh(bot, chat_id)

    async def refresh(self, bot: Bot, chat_id: int) -> set[int]:
        """Fetch the administrator list (outside any transaction) and store it."""
        try:
            members = await bot.get_chat_administrators(chat_id)
        except TelegramError as exc:
            log.warning("cannot fetch administrators of %s: %s", chat_id, exc)
            return set()
        admins = {m.user.id: m.status for m in members if not m.user.is_bot}
        async with self._db.begin() as session:
            if await session.get(Chat, chat_id) is None:
                return set(admins)  # chat not registered (yet): answer without caching
            await session.execute(delete(ChatAdmin).where(ChatAdmin.chat_id == chat_id))
            await upsert(
                session,
                ChatAdmin.__table__,  # type: ignore[attr-defined]
                [
                    {"chat_id": chat_id, "user_id": uid, "status": status}
                    for uid, status in admins.items()
                ],
                key=("chat_id", "user_id"),
            )
            await session.execute(
                update(Chat).where(Chat.id == chat_id).values(admins_refreshed_at=self._clock())
            )
        return set(admins)

    async def note_status(
        self, session: AsyncSession, chat_id: int, user_id: int, status: str
    ) -> None:
        """Keep the cache current when a chat_member update shows a (de)promotion."""
        if status in ADMIN_STATUSES:
            await upsert(
                session,
                ChatAdmin.__table__,  # type: ignore[attr-defined]
                [{"chat_id": chat_id, "user_id": user_id, "status": status}],
                key=("chat_id", "user_id"),
                update=lambda new: {"status": new.status},
            )
        else:
            await session.execute(
                delete(ChatAdmin).where(ChatAdmin.chat_id == chat_id, ChatAdmin.user_id == user_id)
            )

    async def chats_operated_by(
        self, bot: Bot, user_id: int, candidates: Iterable[int]
    ) -> list[int]:
        """Which of `candidates` the user operates (each checked, cache permitting)."""
        return [chat_id for chat_id in candidates if await self.is_operator(bot, chat_id, user_id)]
