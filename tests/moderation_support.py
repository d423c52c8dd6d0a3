"""Shared set-up for the rules/moderation tests: a group where the bot is an admin."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bot.moderation import ModLogEntry
from tests import factories as f
from tests.recording import BOT_USER

GROUP = f.group(-1001000000001, "Ops <b>&</b> Group")
ADMIN = f.user(10, "Ada", username="ada")
MEMBER = f.user(20, "Max", username="max")
HOSTILE = f.user(30, "<b>x</b>", last_name="a_b*c", username="hostile")
NEWBIE = f.user(40, "Newbie")
CHANNEL = {"id": -1003000000000, "type": "channel", "title": "Spam <Channel>"}

NO_PERMISSIONS = {
    "can_send_messages": False,
    "can_send_audios": False,
    "can_send_documents": False,
    "can_send_photos": False,
    "can_send_videos": False,
    "can_send_video_notes": False,
    "can_send_voice_notes": False,
    "can_send_polls": False,
    "can_send_other_messages": False,
    "can_add_web_page_previews": False,
    "can_change_info": False,
    "can_invite_users": False,
    "can_pin_messages": False,
    "can_manage_topics": False,
    "can_react_to_messages": False,
    "can_edit_tag": False,
}


async def setup_group(tg: Any, *, bot_status: str = "administrator", chat: dict = GROUP) -> None:
    """The bot added (as admin by default), Ada the group's admin, the api log cleared."""
    await tg.feed(f.my_chat_member(chat, ADMIN, "left", bot_status, date=tg.now()))
    tg.api.set_admins(chat["id"], ADMIN)
    tg.api.clear()


async def say(tg: Any, sender: dict, text: str | None, chat: dict = GROUP, **extra: Any) -> dict:
    """Feed one message; returns its message dict (to reply to it later)."""
    update = f.message(chat, sender, text, date=tg.now(), **extra)
    await tg.feed(update)
    return update["message"]


async def command(tg: Any, sender: dict, text: str, *, reply_to: dict | None = None) -> None:
    extra = {"reply_to_message": reply_to} if reply_to else {}
    await say(tg, sender, text, **extra)


def bot_message(chat: dict, message_id: int, date: Any, text: str = "…") -> dict:
    """A message the bot sent (for button presses on it)."""
    return {
        "message_id": message_id,
        "date": f.ts(date),
        "chat": chat,
        "from": BOT_USER,
        "text": text,
    }


async def log_entries(tg: Any, chat_id: int = GROUP["id"]) -> list[ModLogEntry]:
    async with tg.db() as session:
        rows = await session.scalars(
            select(ModLogEntry).where(ModLogEntry.chat_id == chat_id).order_by(ModLogEntry.id)
        )
        return list(rows)


def last_text(tg: Any, chat_id: int = GROUP["id"]) -> str:
    texts = tg.api.sent_texts(chat_id)
    assert texts, "nothing was sent"
    return texts[-1]
