"""How updates reach the handlers: per-chat ordering, and command routing.

Concurrent update processing keeps each chat's updates in order.

Updates from different chats run concurrently (a slow command in one group never holds up
the others), while updates of one chat are handled one after another in the order Telegram
sent them — joins before leaves, a check-in before the next one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from telegram import Update
from telegram.ext import BaseHandler, BaseUpdateProcessor, CommandHandler

from bot.cluster import UpdateLog
from bot.inbox import UpdateInbox

log = logging.getLogger(__name__)


def ordering_key(update: object) -> int | None:
    if not isinstance(update, Update):
        return None
    if update.effective_chat is not None:
        return update.effective_chat.id
    if update.effective_user is not None:
        return update.effective_user.id  # poll answers and the like: per person
    return None


class ChatOrderedUpdateProcessor(BaseUpdateProcessor):
    """Per-chat order; with an `UpdateLog` (webhook mode), each update id is handled once.

    The update log is asked when the update arrives (so its answer is being fetched while
    the update waits for its chat's turn) and awaited once it is the update's turn: a
    redelivered update is dropped without running any handler.
    """

    def __init__(
        self,
        max_concurrent_updates: int = 256,
        *,
        seen: UpdateLog | None = None,
        inbox: UpdateInbox | None = None,
    ) -> None:
        super().__init__(max_concurrent_updates)
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}
        self.seen = seen
        self.inbox = inbox

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        if self.inbox is None or not isinstance(update, Update):
            await self._in_order(update, coroutine)
            return
        if self.inbox.redelivered(update.update_id):  # replayed from the inbox already
            coroutine.close()  # type: ignore[attr-defined]
            return
        try:
            await self._in_order(update, coroutine)
        finally:
            self.inbox.handled(update.update_id)  # (bot.inbox: not handled again at restart)

    async def _in_order(self, update: object, coroutine: Awaitable[Any]) -> None:
        if self.seen is not None and isinstance(update, Update):
            first = self.seen.ask(update.update_id)
            if self.inbox is None or not self.inbox.is_replayed(update.update_id):
                coroutine = _unless_seen(update.update_id, first, coroutine)
            # (a replay taken over from a stopped process: its id was recorded on arrival)
        key = ordering_key(update)
        if key is None:
            await coroutine
            return
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                await coroutine
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


async def _unless_seen(update_id: int, first: Awaitable[bool], coroutine: Awaitable[Any]) -> None:
    if await first:
        await coroutine
    else:
        log.info("update %s was delivered again: already handled, dropped", update_id)
        coroutine.close()  # type: ignore[attr-defined]


class CommandRouter(BaseHandler[Update, Any, Any]):
    """All CommandHandlers of one handler group behind a single dictionary lookup.

    PTB asks every handler of a group in turn whether it wants an update, so with thirty
    commands registered every group message paid for thirty `CommandHandler.check_update`
    calls. The router answers "no" with one string test for messages that are not commands,
    and for a command asks only the handlers registered for that name, in their original
    order, with their own filters. Behaviour is otherwise the same, blocking or not.
    """

    def __init__(self, handlers: list[CommandHandler[Any, Any]]) -> None:
        super().__init__(self._unused, block=True)
        self.by_command: dict[str, list[CommandHandler[Any, Any]]] = {}
        for handler in handlers:
            for command in handler.commands:
                self.by_command.setdefault(command, []).append(handler)

    @staticmethod
    async def _unused(update: object, context: object) -> None:  # pragma: no cover
        return None

    def check_update(self, update: object) -> tuple[CommandHandler[Any, Any], Any] | None:
        if not isinstance(update, Update):
            return None
        message = update.effective_message
        text = message.text if message is not None else None
        if not text or text[0] != "/":
            return None
        command = text[1:].split(maxsplit=1)[0].split("@", 1)[0].lower() if len(text) > 1 else ""
        for handler in self.by_command.get(command, ()):
            result = handler.check_update(update)
            if result is not None and result is not False:
                return handler, result
        return None

    async def handle_update(
        self, update: Update, application: Any, check_result: Any, context: Any
    ) -> Any:
        handler, result = check_result
        coroutine = handler.handle_update(update, application, result, context)
        if handler.block is False:
            application.create_task(coroutine, update=update)
            return None
        return await coroutine


def route_commands(application: Any, group: int) -> None:
    """Replace the CommandHandlers of `group` by one CommandRouter at the first one's place."""
    handlers = application.handlers.get(group, [])
    commands = [h for h in handlers if isinstance(h, CommandHandler)]
    if len(commands) < 2:
        return
    position = handlers.index(commands[0])
    rest = [h for h in handlers if not isinstance(h, CommandHandler)]
    rest.insert(position, CommandRouter(commands))
    application.handlers[group] = rest
