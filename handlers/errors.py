"""The error handler: log each failure with its update; act on chat-level Telegram errors."""

from __future__ import annotations

import json
import logging

from telegram import Update
from telegram.error import ChatMigrated, Conflict, Forbidden
from telegram.ext import Application

from bot.services import BotContext

log = logging.getLogger(__name__)

POLLING_CONFLICT = "polling_conflict"  # services.extras key: why this process stopped
CONFLICT_MESSAGE = (
    "another process is receiving this bot's updates (Telegram answered getUpdates with "
    "409 Conflict: {error}). Only one process may use long polling; run several processes "
    "with WEBHOOK_URL behind a load balancer instead (docs/deploy.md). Stopping."
)


async def on_error(update: object, context: BotContext) -> None:
    """Log the exception with the update that caused it; the bot carries on."""
    error = context.error
    if isinstance(error, Conflict) and update is None:  # from getUpdates: never compete
        context.services.extras[POLLING_CONFLICT] = str(error)
        log.critical(CONFLICT_MESSAGE.format(error=error))
        context.application.stop_running()
        return
    chat_id = (
        update.effective_chat.id if isinstance(update, Update) and update.effective_chat else None
    )
    if isinstance(error, ChatMigrated) and chat_id is not None:
        await context.services.activity.flush()
        await context.services.chats.migrate(chat_id, error.new_chat_id)
        log.info("chat %s migrated to %s (learned from an error)", chat_id, error.new_chat_id)
        return
    if isinstance(error, Forbidden) and chat_id is not None and chat_id < 0:
        await context.services.chats.deactivate(chat_id, bot_status="kicked")
        log.info("chat %s is closed to the bot: %s", chat_id, error)
        return
    payload = (
        json.dumps(update.to_dict(), ensure_ascii=False)
        if isinstance(update, Update)
        else str(update)
    )
    log.error("update failed: %s", payload, exc_info=error)


def register(app: Application) -> None:
    app.add_error_handler(on_error)
