"""The chat registry: registering groups, their settings cache, deactivation and migration.

`ChatDirectory` keeps a small in-memory cache of each chat's time zone and language, because
every group message needs them (for the local day); changes made here invalidate it, and
entries expire after `CACHE_TTL` seconds so several processes converge.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from sqlalchemy import Table, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import SQLModel

from bot.models import Chat, ChatAdmin, ChatHour, ChatMigration, DailyActivity, Member

log = logging.getLogger(__name__)

CACHE_TTL = 60.0
GROUP_TYPES = frozenset({"group", "supergroup"})


@dataclass(slots=True, frozen=True)
class ChatInfo:
    """The settings a handler needs about a chat, without a database round trip."""

    id: int
    type: str
    title: str
    timezone: ZoneInfo
    language: str
    active: bool
    sees_all_messages: bool

    @classmethod
    def from_row(cls, row: Chat) -> ChatInfo:
        return cls(
            id=row.id,
            type=row.type,
            title=row.title,
            timezone=ZoneInfo(row.timezone),
            language=row.language,
            active=row.active,
            sees_all_messages=row.sees_all_messages,
        )


def parse_timezone(name: str) -> ZoneInfo | None:
    """A ZoneInfo for an IANA name (case-insensitive), or None when there is no such zone."""
    name = name.strip()
    if not name or name.startswith("/") or ".." in name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        pass
    lowered = name.lower()
    for candidate in available_timezones():
        if candidate.lower() == lowered:
            return ZoneInfo(candidate)
    return None


class ChatDirectory:
    """Reads and writes chat rows; caches what the hot path needs."""

    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        *,
        default_timezone: str,
        default_language: str | None,
        clock: Callable[[], datetime],
    ) -> None:
        self._db = db
        self._default_timezone = default_timezone
        self._default_language = default_language
        self._clock = clock
        self._cache: dict[int, tuple[float, ChatInfo | None]] = {}
        self._redirects: dict[int, int] = {}

    def cached(self, chat_id: int) -> ChatInfo | None:
        """The cached settings of a chat, if fresh (no I/O: safe on the hot path)."""
        entry = self._cache.get(chat_id)
        if entry is not None and time.monotonic() - entry[0] < CACHE_TTL:
            return entry[1]
        return None

    def invalidate(self, chat_id: int) -> None:
        self._cache.pop(chat_id, None)

    def _remember(self, info: ChatInfo | None, chat_id: int) -> ChatInfo | None:
        self._cache[chat_id] = (time.monotonic(), info)
        return info

    async def get(self, chat_id: int) -> ChatInfo | None:
        """Settings of a known chat (None if the bot never registered it)."""
        info = self.cached(chat_id)
        if info is not None:
            return info
        async with self._db() as session:
            row = await session.get(Chat, chat_id)
        return self._remember(ChatInfo.from_row(row) if row else None, chat_id)

    async def ensure(
        self,
        chat_id: int,
        *,
        type: str,
        title: str,
        username: str | None = None,
        language_hint: str | None = None,
    ) -> ChatInfo:
        """The chat's settings, registering it first if the bot has not seen it yet.

        Groups the bot was in before its database existed are registered on their first
        update, so nothing they do is lost.
        """
        info = self.cached(chat_id)
        if info is not None:
            return info
        async with self._db.begin() as session:
            row = await session.get(Chat, chat_id)
            if row is None:
                row = self._new_row(chat_id, type, title, username, language_hint)
                session.add(row)
        return self._remember(ChatInfo.from_row(row), chat_id)  # type: ignore[return-value]

    def _new_row(
        self, chat_id: int, type: str, title: str, username: str | None, language_hint: str | None
    ) -> Chat:
        from bot.i18n import normalize_language

        now = self._clock()
        language = self._default_language or normalize_language(language_hint)
        return Chat(
            id=chat_id,
            type=type,
            title=title or "",
            username=username,
            timezone=self._default_timezone,
            language=language,
            created_at=now,
            updated_at=now,
        )

    async def register_bot_membership(
        self,
        *,
        chat_id: int,
        type: str,
        title: str,
        username: str | None,
        language_hint: str | None,
        bot_status: str,
        rights: dict[str, bool],
        sees_all_messages: bool,
    ) -> tuple[ChatInfo, bool]:
        """Record the bot's (new) membership in a chat.

        Returns the chat's settings and whether the chat just became active (the bot was added
        or re-added), which is when the greeting goes out — exactly once per addition.
        """
        now = self._clock()
        async with self._db.begin() as session:
            row = await session.get(Chat, chat_id)
            became_active = row is None or not row.active
            if row is None:
                row = self._new_row(chat_id, type, title, username, language_hint)
                session.add(row)
            row.type, row.title, row.username = type, title or row.title, username
            row.active = True
            row.bot_status = bot_status
            row.can_delete = rights.get("can_delete_messages", False)
            row.can_restrict = rights.get("can_restrict_members", False)
            row.can_pin = rights.get("can_pin_messages", False)
            row.can_invite = rights.get("can_invite_users", False)
            if sees_all_messages and not row.sees_all_messages:
                row.sees_all_since = now
            if not sees_all_messages:
                row.sees_all_since = None
            row.sees_all_messages = sees_all_messages
            row.updated_at = now
        self.invalidate(chat_id)
        return self._remember(ChatInfo.from_row(row), chat_id), became_active  # type: ignore[return-value]

    async def deactivate(self, chat_id: int, *, bot_status: str = "left") -> bool:
        """Mark a chat inactive (bot removed, kicked, Forbidden); True if it was active."""
        async with self._db.begin() as session:
            result = await session.execute(
                update(Chat)
                .where(Chat.id == chat_id, Chat.active.is_(True))
                .values(active=False, bot_status=bot_status, updated_at=self._clock())
            )
        self.invalidate(chat_id)
        return bool(result.rowcount)

    async def update_settings(self, chat_id: int, **values: Any) -> None:
        async with self._db.begin() as session:
            await session.execute(
                update(Chat).where(Chat.id == chat_id).values(updated_at=self._clock(), **values)
            )
        self.invalidate(chat_id)

    async def resolve(self, chat_id: int) -> int:
        """Follow a recorded migration: the id the chat lives under now."""
        if chat_id in self._redirects:
            return self._redirects[chat_id]
        async with self._db() as session:
            new_id = await session.scalar(
                select(ChatMigration.new_chat_id).where(ChatMigration.old_chat_id == chat_id)
            )
        if new_id is not None:
            self._redirects[chat_id] = new_id
            return new_id
        return chat_id

    async def migrate(self, old_id: int, new_id: int) -> bool:
        """Move every row of `old_id` to `new_id` in one transaction; idempotent.

        Returns True when rows were moved by this call.
        """
        async with self._db.begin() as session:
            moved = await migrate_chat(session, old_id, new_id, now=self._clock())
        self.invalidate(old_id)
        self.invalidate(new_id)
        self._redirects[old_id] = new_id
        return moved


# --- group → supergroup migration ------------------------------------------------------

RowMerge = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]
_MERGES: dict[str, RowMerge] = {}
MigrationHook = Callable[[AsyncSession, int, int], Awaitable[None]]
_BEFORE_MOVE: list[MigrationHook] = []
_AFTER_MIGRATION: list[MigrationHook] = []

# Chat columns that describe the new supergroup itself rather than operators' settings.
_CHAT_OWN_COLUMNS = frozenset(
    {
        "id",
        "type",
        "title",
        "username",
        "active",
        "bot_status",
        "can_delete",
        "can_restrict",
        "can_pin",
        "can_invite",
        "sees_all_messages",
        "sees_all_since",
        "admins_refreshed_at",
        "created_at",
        "updated_at",
    }
)


def register_migration_merge(table_name: str, merge: RowMerge) -> None:
    """Declare how two rows of `table_name` (old chat's, new chat's) combine when both exist.

    Without one, the old chat's row wins (it holds what operators configured). Tables whose
    rows are counters register a merge that adds them up.
    """
    _MERGES[table_name] = merge


def register_migration_hook(hook: MigrationHook, *, after: bool = False) -> None:
    """Run `hook(session, old_id, new_id)` in the migration transaction, before the rows move
    (default) or, with `after=True`, once they have (e.g. to rebuild derived totals).

    For tables whose colliding rows must both survive (an append-only ledger), where a
    row merge cannot express it: the hook can re-key the old chat's rows first.
    """
    (_AFTER_MIGRATION if after else _BEFORE_MOVE).append(hook)


def _merge_daily_activity(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    merged = dict(new)
    for column in ("messages", "edits", "joins", "leaves"):
        merged[column] = old[column] + new[column]
    for column in ("checked_in", "poll_answered", "lottery_entered"):
        merged[column] = old[column] or new[column]
    if "first_message_ts" in old:
        firsts = [v for v in (old["first_message_ts"], new["first_message_ts"]) if v is not None]
        merged["first_message_ts"] = min(firsts, default=None)
    return merged


def _merge_member(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    merged = dict(new)
    merged["first_seen"] = min(old["first_seen"], new["first_seen"])
    merged["message_count"] = old["message_count"] + new["message_count"]
    merged["last_active"] = max(
        (v for v in (old["last_active"], new["last_active"]) if v is not None), default=None
    )
    merged["joined_at"] = old["joined_at"] or new["joined_at"]
    if "active_mask" in old:
        from bot.activity import merge_states

        merged["active_day"], merged["active_mask"] = merge_states(
            old["active_day"], old["active_mask"], new["active_day"], new["active_mask"]
        )
    return merged


async def _rebuild_day_totals(session: AsyncSession, old_id: int, new_id: int) -> None:
    from bot.activity import recompute_chat_days

    await recompute_chat_days(session, new_id)


register_migration_merge(DailyActivity.__tablename__, _merge_daily_activity)
register_migration_hook(_rebuild_day_totals, after=True)
register_migration_merge(Member.__tablename__, _merge_member)
register_migration_merge(ChatAdmin.__tablename__, lambda old, new: new)
register_migration_merge(
    ChatHour.__tablename__, lambda old, new: {**new, "messages": old["messages"] + new["messages"]}
)


def _chat_references() -> list[tuple[Table, str]]:
    """Every (table, column) holding a chat id, found from the foreign keys to chat.id."""
    refs = []
    for table in SQLModel.metadata.sorted_tables:
        for column in table.columns:
            if any(fk.column.table.name == "chat" for fk in column.foreign_keys):
                refs.append((table, column.name))
    return refs


def _unique_keys(table: Table, column: str) -> list[list[str]]:
    keys = []
    pk = [c.name for c in table.primary_key.columns]
    if column in pk:
        keys.append(pk)
    for constraint in table.constraints:
        names = [c.name for c in getattr(constraint, "columns", [])]
        if getattr(constraint, "__visit_name__", "") == "unique_constraint" and column in names:
            keys.append(names)
    for index in table.indexes:
        names = [c.name for c in index.columns]
        if index.unique and column in names:
            keys.append(names)
    return keys


async def migrate_chat(session: AsyncSession, old_id: int, new_id: int, *, now: datetime) -> bool:
    """Move all of a chat's rows from `old_id` to `new_id` inside the caller's transaction."""
    if old_id == new_id:
        return False
    old_chat = await session.get(Chat, old_id)
    existing = await session.get(ChatMigration, old_id)
    if existing is None:
        session.add(ChatMigration(old_chat_id=old_id, new_chat_id=new_id, migrated_at=now))
    if old_chat is None:
        return False  # already moved (or never known): nothing to do

    new_chat = await session.get(Chat, new_id)
    if new_chat is None:
        values = {c: getattr(old_chat, c) for c in Chat.model_fields}
        values.update(id=new_id, type="supergroup", updated_at=now)
        session.add(Chat(**values))
    else:
        for column in Chat.model_fields:
            if column not in _CHAT_OWN_COLUMNS:
                setattr(new_chat, column, getattr(old_chat, column))
        new_chat.updated_at = now
    await session.flush()

    for hook in _BEFORE_MOVE:
        await hook(session, old_id, new_id)
    for table, column in _chat_references():
        await _move_rows(session, table, column, old_id, new_id)
    for hook in _AFTER_MIGRATION:
        await hook(session, old_id, new_id)
    await session.execute(delete(Chat).where(Chat.id == old_id))
    log.info("migrated chat %s to %s", old_id, new_id)
    return True


async def _move_rows(
    session: AsyncSession, table: Table, column: str, old_id: int, new_id: int
) -> None:
    col = table.c[column]
    for key in _unique_keys(table, column):
        others = [name for name in key if name != column]
        new_rows = (await session.execute(select(table).where(col == new_id))).mappings().all()
        if not new_rows:
            break
        merge = _MERGES.get(table.name, lambda old, new: {**new, **old})
        for new_row in new_rows:
            match = [col == old_id] + [table.c[name] == new_row[name] for name in others]
            old_row = (await session.execute(select(table).where(*match))).mappings().first()
            if old_row is None:
                continue
            merged = merge(dict(old_row), dict(new_row))
            merged[column] = new_id
            await session.execute(delete(table).where(*match))
            where_new = [col == new_id] + [table.c[name] == new_row[name] for name in others]
            await session.execute(update(table).where(*where_new).values(**merged))
    await session.execute(update(table).where(col == old_id).values({column: new_id}))
