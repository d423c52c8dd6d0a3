"""Sending to a chat with the failures Telegram reports handled in one place.

- ChatMigrated: the group became a supergroup; its rows move and the send is retried there.
- Forbidden: the bot was removed or blocked; the chat is marked inactive, nothing raises.
- RetryAfter is honoured by PTB's AIORateLimiter (configured in bot.app) before we see it.
Every automatic send (greetings, schedules, digests) goes through `send_text`.
"""

from __future__ import annotations

import logging
from typing import Any

from telegram import Bot, Message
from telegram.constants import ParseMode
from telegram.error import BadRequest, ChatMigrated, Forbidden

from bot.services import Services
from bot.text import split_message

log = logging.getLogger(__name__)

CHAT_GONE_ERRORS = ("chat not found", "group chat was deactivated", "bot was kicked")


async def send_text(
    bot: Bot, services: Services, chat_id: int, text: str, **kwargs: Any
) -> list[Message]:
    """Send HTML text (split to fit) to a chat; returns the messages sent ([] if it is gone)."""
    info = await services.chats.get(chat_id)
    if info is not None and not info.active:
        return []
    kwargs.setdefault("parse_mode", ParseMode.HTML)
    sent: list[Message] = []
    for part in split_message(text):
        message = await _send_one(bot, services, chat_id, part, kwargs)
        if message is None:
            break
        sent.append(message)
        chat_id = message.chat_id  # follows a migration that happened during the first part
    return sent


async def _send_one(
    bot: Bot, services: Services, chat_id: int, text: str, kwargs: dict[str, Any]
) -> Message | None:
    try:
        return await bot.send_message(chat_id, text, **kwargs)
    except ChatMigrated as exc:
        await services.activity.flush()
        await services.chats.migrate(chat_id, exc.new_chat_id)
        return await bot.send_message(exc.new_chat_id, text, **kwargs)
    except Forbidden as exc:
        log.info("chat %s is closed to the bot (%s); deactivating", chat_id, exc.message)
        await services.chats.deactivate(chat_id, bot_status="kicked")
        return None
    except BadRequest as exc:
        if any(reason in exc.message.lower() for reason in CHAT_GONE_ERRORS):
            await services.chats.deactivate(chat_id, bot_status="left")
            return None
        raise
