"""A message handler gated by one plain predicate, for handlers that see every message.

PTB's `MessageHandler` walks a chain of filter objects; each merged filter costs about a
microsecond per message, per handler, even when it says no. A handler that most messages
must pass by (guards, "@admin" detection, join events) is cheaper as one Python predicate.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from telegram import Message, Update
from telegram.ext import BaseHandler

from bot.chats import GROUP_TYPES


class MessageGate(BaseHandler[Update, Any, None]):
    """Handles group messages (and, with `edits`, edited messages) the predicate accepts."""

    __slots__ = ("edits", "predicate")

    def __init__(
        self,
        predicate: Callable[[Message], bool],
        callback: Callable[[Update, Any], Awaitable[None]],
        *,
        edits: bool = False,
    ) -> None:
        super().__init__(callback)
        self.predicate = predicate
        self.edits = edits

    def check_update(self, update: object) -> bool | None:
        if not isinstance(update, Update):
            return None
        message = update.message
        if message is None and self.edits:
            message = update.edited_message
        if message is None or not self.predicate(message):
            return None
        return message.chat.type in GROUP_TYPES or None
