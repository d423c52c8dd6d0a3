"""Sanctions through the Bot API, and the moderation log they are written to.

- Muting restricts every permission (`ChatPermissions.no_permissions()`); unmuting gives back
  the group's default permissions (from getChat), not "everything".
- Kicking is a ban followed by an unban, so the member may come back.
- A message sent as a channel is answered with banChatSenderChat — never by banning the
  shared account (136817688) Telegram shows as its sender.
- Telegram's refusals become a `Problem` the caller explains (missing right, target is an
  admin, unknown member) instead of an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from telegram import Bot, ChatMember, ChatPermissions
from telegram.error import BadRequest, Forbidden, TelegramError

from bot.i18n import t
from bot.models import Chat
from bot.moderation import ModerationSettings, ModLogEntry, log_entry
from bot.services import Services
from bot.text import escape
from bot.timeparse import format_duration

log = logging.getLogger(__name__)

RESTRICT = "can_restrict_members"
DELETE = "can_delete_messages"
_RIGHT_COLUMNS = {RESTRICT: "can_restrict", DELETE: "can_delete"}


class Problem(StrEnum):
    NO_RIGHTS = "no_rights"  # the bot lacks the admin right the action needs
    TARGET_ADMIN = "target_admin"  # Telegram does not let anyone restrict an admin
    NOT_FOUND = "not_found"  # no such member (never joined, wrong id)
    SUPERGROUP_ONLY = "supergroup_only"  # restricting needs a supergroup, not a basic group
    FAILED = "failed"  # anything else (logged)


_NO_RIGHTS = ("not enough rights", "admin_required", "need administrator", "not an admin")
_ADMIN = ("administrator", "chat owner", "user_admin_invalid", "can't restrict self")
_NOT_FOUND = ("user not found", "participant_id_invalid", "user_id_invalid", "member not found")


def problem_of(exc: TelegramError) -> Problem:
    message = exc.message.lower()
    if isinstance(exc, Forbidden) or any(part in message for part in _NO_RIGHTS):
        return Problem.NO_RIGHTS
    if any(part in message for part in _ADMIN):
        return Problem.TARGET_ADMIN
    if any(part in message for part in _NOT_FOUND):
        return Problem.NOT_FOUND
    if "supergroup" in message:
        return Problem.SUPERGROUP_ONLY
    log.warning("sanction refused: %s", exc.message)
    return Problem.FAILED


async def bot_has_right(bot: Bot, services: Services, chat_id: int, right: str) -> bool:
    """Whether the bot holds an admin right in the chat.

    The stored rights (kept current by my_chat_member updates) answer yes; a no is checked
    with Telegram once more, because the bot may have been promoted before it kept records.
    """
    async with services.db() as session:
        chat = await session.get(Chat, chat_id)
    if chat is not None and getattr(chat, _RIGHT_COLUMNS[right]):
        return True
    try:
        member = await bot.get_chat_member(chat_id, bot.id)
    except TelegramError as exc:
        log.warning("cannot read my rights in %s: %s", chat_id, exc)
        return False
    if member.status == ChatMember.OWNER:
        return True
    has = member.status == ChatMember.ADMINISTRATOR and bool(getattr(member, right, False))
    if has and chat is not None:
        await services.chats.update_settings(chat_id, **{_RIGHT_COLUMNS[right]: True})
    return has


async def _call(action: Awaitable[object]) -> Problem | None:
    try:
        await action
    except (BadRequest, Forbidden) as exc:
        return problem_of(exc)
    except TelegramError as exc:
        log.warning("sanction failed: %s", exc)
        return Problem.FAILED
    return None


async def mute(bot: Bot, chat_id: int, user_id: int, until: datetime | None) -> Problem | None:
    """Take every permission away until `until` (None: until unmuted)."""
    return await _call(
        bot.restrict_chat_member(
            chat_id,
            user_id,
            ChatPermissions.no_permissions(),
            until_date=until,
            use_independent_chat_permissions=True,
        )
    )


async def group_permissions(bot: Bot, chat_id: int) -> ChatPermissions:
    """The group's default member permissions (all allowed if Telegram does not say)."""
    try:
        chat = await bot.get_chat(chat_id)
    except TelegramError as exc:
        log.warning("cannot read default permissions of %s: %s", chat_id, exc)
        return ChatPermissions.all_permissions()
    return chat.permissions or ChatPermissions.all_permissions()


async def unmute(bot: Bot, chat_id: int, user_id: int) -> Problem | None:
    permissions = await group_permissions(bot, chat_id)
    return await _call(
        bot.restrict_chat_member(
            chat_id, user_id, permissions, use_independent_chat_permissions=True
        )
    )


async def ban(
    bot: Bot,
    chat_id: int,
    *,
    user_id: int | None = None,
    sender_chat_id: int | None = None,
    until: datetime | None = None,
) -> Problem | None:
    if sender_chat_id is not None:
        return await _call(bot.ban_chat_sender_chat(chat_id, sender_chat_id))
    assert user_id is not None
    return await _call(bot.ban_chat_member(chat_id, user_id, until_date=until))


async def unban(
    bot: Bot, chat_id: int, *, user_id: int | None = None, sender_chat_id: int | None = None
) -> Problem | None:
    if sender_chat_id is not None:
        return await _call(bot.unban_chat_sender_chat(chat_id, sender_chat_id))
    assert user_id is not None
    return await _call(bot.unban_chat_member(chat_id, user_id, only_if_banned=True))


async def kick(
    bot: Bot, chat_id: int, *, user_id: int | None = None, sender_chat_id: int | None = None
) -> Problem | None:
    """Remove without banning: ban, then unban at once so they may come back."""
    problem = await ban(bot, chat_id, user_id=user_id, sender_chat_id=sender_chat_id)
    if problem is not None:
        return problem
    return await unban(bot, chat_id, user_id=user_id, sender_chat_id=sender_chat_id)


async def apply(
    bot: Bot,
    chat_id: int,
    action: str,
    *,
    user_id: int | None = None,
    sender_chat_id: int | None = None,
    until: datetime | None = None,
) -> Problem | None:
    """mute | kick | ban | unmute | unban."""
    if action == "mute":
        assert user_id is not None
        return await mute(bot, chat_id, user_id, until)
    if action == "unmute":
        assert user_id is not None
        return await unmute(bot, chat_id, user_id)
    if action == "ban":
        return await ban(bot, chat_id, user_id=user_id, sender_chat_id=sender_chat_id, until=until)
    if action == "kick":
        return await kick(bot, chat_id, user_id=user_id, sender_chat_id=sender_chat_id)
    if action == "unban":
        return await unban(bot, chat_id, user_id=user_id, sender_chat_id=sender_chat_id)
    raise ValueError(f"unknown sanction {action!r}")


async def delete_message(bot: Bot, chat_id: int, message_id: int) -> bool:
    """Delete a message; a message that is already gone or too old is not an error."""
    try:
        return await bot.delete_message(chat_id, message_id)
    except TelegramError as exc:
        log.info("could not delete message %s in %s: %s", message_id, chat_id, exc)
        return False


# --- the moderation log -----------------------------------------------------------------------


def action_label(lang: str, action: str) -> str:
    """`mute` → "mute"; `filter:ban` → "filter → ban" (translated)."""
    return " → ".join(t(lang, f"moderation.action.{part}") for part in action.split(":"))


def describe_entry(lang: str, entry: ModLogEntry, tz: ZoneInfo) -> str:
    """One line of /modlog (HTML)."""
    when = entry.created_at.astimezone(tz).strftime("%m-%d %H:%M")
    text = t(
        lang,
        "moderation.log_line",
        when=when,
        action=action_label(lang, entry.action),
        actor=escape(entry.actor_name or "?"),
        target=escape(entry.target_name or "?"),
    )
    if entry.duration:
        text += " " + t(lang, "moderation.log_for", duration=format_duration_s(entry.duration))
    if entry.reason:
        text += ": " + escape(entry.reason)
    return text


def format_duration_s(seconds: int) -> str:
    return format_duration(timedelta(seconds=seconds))


def log_channel_text(lang: str, entry: ModLogEntry, group_title: str) -> str:
    """The message the log channel receives for one entry (HTML)."""
    lines = [
        f"#{entry.action.split(':')[0]} · <b>{escape(group_title)}</b>",
        t(
            lang,
            "moderation.log_channel_line",
            action=action_label(lang, entry.action),
            actor=escape(entry.actor_name or "?"),
            actor_id=entry.actor_id or 0,
            target=escape(entry.target_name or "?"),
            target_id=entry.target_id or 0,
        ),
    ]
    if entry.duration:
        lines.append(
            t(lang, "moderation.log_channel_for", duration=format_duration_s(entry.duration))
        )
    if entry.reason:
        lines.append(t(lang, "moderation.log_channel_reason", reason=escape(entry.reason)))
    return "\n".join(lines)


async def record(
    bot: Bot,
    services: Services,
    chat_id: int,
    *,
    action: str,
    actor_id: int | None,
    actor_name: str,
    target_id: int | None,
    target_name: str,
    reason: str = "",
    duration: int | None = None,
) -> ModLogEntry:
    """Write a log entry (its own transaction), then copy it to the log channel, if any."""
    async with services.db.begin() as session:
        entry = await log_entry(
            session,
            chat_id=chat_id,
            now=services.clock(),
            action=action,
            actor_id=actor_id,
            actor_name=actor_name,
            target_id=target_id,
            target_name=target_name,
            reason=reason,
            duration=duration,
        )
        settings = await session.get(ModerationSettings, chat_id)
    if settings is not None and settings.log_chat_id is not None:
        await copy_to_log_channel(bot, services, settings.log_chat_id, entry)
    return entry


async def copy_to_log_channel(
    bot: Bot, services: Services, log_chat_id: int, entry: ModLogEntry
) -> None:
    """Post an entry to the group's log channel; a refusal is logged, never raised."""
    info = await services.chats.get(entry.chat_id)
    lang = info.language if info else "en"
    title = info.title if info else str(entry.chat_id)
    try:
        await bot.send_message(log_chat_id, log_channel_text(lang, entry, title))
    except TelegramError as exc:
        log.warning("log channel %s of %s refused: %s", log_chat_id, entry.chat_id, exc)
