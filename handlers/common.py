"""Shared plumbing for handlers: who is speaking, in which language, for which group.

`operator_command` is the single gate for operator commands: it resolves the group the
command applies to (the current group, or the group picked with /groups in a private chat),
checks the caller's rights there every time, and refuses politely otherwise.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from telegram import Message, Update
from telegram.constants import ChatType, ParseMode
from telegram.error import TelegramError

from bot.chats import GROUP_TYPES, ChatInfo
from bot.i18n import normalize_language, t
from bot.models import UserProfile
from bot.services import BotContext
from bot.text import split_message

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Target:
    """The group an operator command acts on, and how it was reached."""

    chat: ChatInfo
    user_id: int
    private: bool  # sent from a private chat through a /groups connection

    @property
    def chat_id(self) -> int:
        return self.chat.id

    @property
    def lang(self) -> str:
        return self.chat.language


OperatorCallback = Callable[[Update, BotContext, Target], Awaitable[None]]


def is_group(update: Update) -> bool:
    return update.effective_chat is not None and update.effective_chat.type in GROUP_TYPES


async def group_info(update: Update, context: BotContext) -> ChatInfo:
    """Settings of the group an update comes from (registering it on first sight)."""
    chat = update.effective_chat
    assert chat is not None
    services = context.services
    info = services.chats.cached(chat.id)
    if info is None:
        user = update.effective_user
        info = await services.chats.ensure(
            chat.id,
            type=chat.type,
            title=chat.title or "",
            username=chat.username,
            language_hint=user.language_code if user else None,
        )
    return info


async def user_language(update: Update, context: BotContext) -> str:
    """The language to answer a person in a private chat: chosen, else Telegram's."""
    user = update.effective_user
    if user is None:
        return "en"
    async with context.services.db() as session:
        profile = await session.get(UserProfile, user.id)
    if profile is not None and profile.language:
        return profile.language
    return normalize_language(user.language_code)


async def reply_language(update: Update, context: BotContext) -> str:
    """Group language in groups, the person's language in private chats."""
    if is_group(update):
        return (await group_info(update, context)).language
    return await user_language(update, context)


async def reply(update: Update, text: str, **kwargs: Any) -> Message | None:
    """Reply in HTML, splitting long texts; a failure to answer is logged, not raised."""
    message = update.effective_message
    if message is None:
        return None
    sent = None
    try:
        for part in split_message(text):
            sent = await message.reply_text(
                part, parse_mode=ParseMode.HTML, do_quote=False, **kwargs
            )
    except TelegramError as exc:
        log.warning("could not reply in chat %s: %s", message.chat_id, exc)
    return sent


def sent_as_group_admin(message: Message | None) -> bool:
    """An anonymous administrator posts with sender_chat equal to the group itself."""
    return (
        message is not None
        and message.sender_chat is not None
        and message.sender_chat.id == message.chat_id
    )


async def resolve_target(update: Update, context: BotContext) -> Target | None:
    """The group an operator command applies to, if the caller operates it; else reply why."""
    services = context.services
    chat, user, message = update.effective_chat, update.effective_user, update.effective_message
    if chat is None:
        return None
    if chat.type in GROUP_TYPES:
        info = await group_info(update, context)
        if sent_as_group_admin(message):
            return Target(info, user.id if user else 0, private=False)
        if user is not None and await services.operators.is_operator(
            context.bot, chat.id, user.id
        ):
            return Target(info, user.id, private=False)
        await reply(update, t(info.language, "core.not_operator"))
        return None
    if chat.type == ChatType.PRIVATE and user is not None:
        lang = await user_language(update, context)
        async with services.db() as session:
            profile = await session.get(UserProfile, user.id)
        connected = profile.connected_chat_id if profile else None
        info = await services.chats.get(connected) if connected else None
        if info is None or not info.active:
            await reply(update, t(lang, "core.no_connection"))
            return None
        if not await services.operators.is_operator(context.bot, info.id, user.id):
            await reply(update, t(lang, "core.not_operator_connected", group=_title(info)))
            return None
        return Target(info, user.id, private=True)
    return None


def _title(info: ChatInfo) -> str:
    from bot.text import escape

    return escape(info.title or str(info.id))


def operator_command(func: OperatorCallback) -> Callable[[Update, BotContext], Awaitable[None]]:
    """Wrap an operator command: it runs only for an operator of the target group."""

    @functools.wraps(func)
    async def wrapper(update: Update, context: BotContext) -> None:
        target = await resolve_target(update, context)
        if target is not None:
            await func(update, context, target)

    return wrapper


@dataclass(frozen=True, slots=True)
class MemberRef:
    """Whom a command is about: a person, or a channel speaking in the group (sender_chat)."""

    user_id: int
    name: str
    username: str | None = None
    is_bot: bool = False
    sender_chat_id: int | None = None  # set when the target posted as a channel

    @property
    def label(self) -> str:
        """HTML-safe name for replies."""
        from bot.text import escape

        return escape(self.name)


async def resolve_member(
    update: Update, context: BotContext, chat_id: int, args: list[str]
) -> tuple[MemberRef | None, list[str]]:
    """Find the member a command targets: the replied-to message's sender, a text mention,
    `@username` (from the roster) or a numeric id. Returns the member and the remaining args.
    """
    from sqlalchemy import func, select

    from bot.models import Member

    message = update.effective_message
    reply_to = message.reply_to_message if message else None
    if reply_to is not None and not reply_to.forum_topic_created:
        if reply_to.sender_chat is not None and reply_to.sender_chat.id != chat_id:
            chat = reply_to.sender_chat
            return MemberRef(
                0,
                chat.title or chat.username or str(chat.id),
                chat.username,
                sender_chat_id=chat.id,
            ), args
        if reply_to.from_user is not None:
            user = reply_to.from_user
            return MemberRef(user.id, user.full_name, user.username, user.is_bot), args
    if not args:
        return None, args
    first, rest = args[0], args[1:]
    if message is not None:
        for entity, text in message.parse_entities(["text_mention"]).items():
            if entity.user is not None and text == first:
                user = entity.user
                return MemberRef(user.id, user.full_name, user.username, user.is_bot), rest
    async with context.services.db() as session:
        if first.startswith("@") and len(first) > 1:
            row = await session.scalar(
                select(Member).where(
                    Member.chat_id == chat_id,
                    func.lower(Member.username) == first[1:].lower(),
                )
            )
        elif first.lstrip("-").isdigit():
            row = await session.get(Member, (chat_id, int(first)))
            if row is None and int(first) > 0:
                return MemberRef(int(first), first), rest
        else:
            return None, args
    if row is None:
        return None, args
    return MemberRef(row.user_id, row.display_name, row.username), rest
