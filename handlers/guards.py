"""Guards on every group message: banned words (text, captions, edits) and flood control.

They run before anything else (handler group GUARDS) and cost almost nothing in groups that
configured neither: the message filter itself asks the guard cache, without I/O, whether the
chat has guards at all. A message that hits a filter is deleted and goes no further (it is
not counted, and a command in it is not run).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from telegram import Message, Update
from telegram.ext import Application, ApplicationHandlerStop

from bot import sanctions
from bot.activity import SERVICE_ACCOUNTS
from bot.commands import CommandSpec
from bot.i18n import t
from bot.moderation import ChatGuard, FilterHit, GuardCache, guard_cache
from bot.sending import send_text
from bot.services import BotContext, services_of
from handlers import GUARDS
from handlers.common import MemberRef, group_info
from handlers.gates import MessageGate
from handlers.moderation import enforce, warn_member, who

log = logging.getLogger(__name__)

COMMANDS: list[CommandSpec] = []


def maybe_guarded(cache: GuardCache) -> Callable[[Message], bool]:
    """A content message in a chat that may have guards (a set lookup for all others)."""

    def predicate(message: Message) -> bool:
        if cache.unguarded(message.chat_id):
            return False
        return message.text is not None or message.effective_attachment is not None

    return predicate


def is_migration(message: Message) -> bool:
    return message.migrate_to_chat_id is not None or message.migrate_from_chat_id is not None


async def on_migration(update: Update, context: BotContext) -> None:
    """The group became a supergroup: look its guards up again under the new id."""
    message = update.effective_message
    assert message is not None
    cache = guard_cache(context.services)
    cache.invalidate(message.chat_id)
    for chat_id in (message.migrate_to_chat_id, message.migrate_from_chat_id):
        if chat_id is not None:
            cache.invalidate(chat_id)


def _exempt(message: Message, bot_id: int) -> bool:
    """Anonymous admins, the linked channel's posts, Telegram itself and this bot."""
    if message.sender_chat is not None:
        return message.sender_chat.id == message.chat_id or bool(message.is_automatic_forward)
    user = message.from_user
    return user is None or user.id == bot_id or user.id in SERVICE_ACCOUNTS


def _sender(message: Message) -> MemberRef:
    if message.sender_chat is not None:
        chat = message.sender_chat
        return MemberRef(
            0, chat.title or chat.username or str(chat.id), chat.username, False, chat.id
        )
    user = message.from_user
    assert user is not None
    return MemberRef(user.id, user.full_name, user.username, user.is_bot)


async def _is_operator(context: BotContext, message: Message, ref: MemberRef) -> bool:
    if ref.sender_chat_id is not None:
        return False
    return await context.services.operators.is_operator(context.bot, message.chat_id, ref.user_id)


async def guard_message(update: Update, context: BotContext) -> None:
    """Apply the chat's filters and flood limit to one message."""
    message = update.effective_message
    if message is None or _exempt(message, context.bot.id):
        return
    guard = await guard_cache(context.services).get(message.chat_id)
    if guard is None:
        return
    text = message.text or message.caption
    if guard.filters and text:
        hit = guard.filters.match(text)
        if hit is not None:
            ref = _sender(message)
            if not await _is_operator(context, message, ref):
                await _filter_hit(update, context, message, ref, hit)
                raise ApplicationHandlerStop
    if guard.flood_limit and update.message is not None:
        await _count_flood(update, context, message, guard)


async def _filter_hit(
    update: Update, context: BotContext, message: Message, ref: MemberRef, hit: FilterHit
) -> None:
    """Delete the message, then warn / mute / ban as the filter says, and log the hit."""
    services = context.services
    info = await group_info(update, context)
    lang = info.language
    chat_id = message.chat_id
    await sanctions.delete_message(context.bot, chat_id, message.message_id)
    bot_actor = (context.bot.id, context.bot.first_name)
    action = hit.action
    if ref.sender_chat_id is not None and action in ("warn", "mute"):
        action = "delete"  # a channel has no warnings and cannot be muted
    reason = t(lang, "moderation.filter_reason", pattern=hit.pattern)
    notice = t(lang, "moderation.filter_hit", name=who(ref))
    if action == "delete":
        await sanctions.record(
            context.bot,
            services,
            chat_id,
            action="filter:delete",
            actor_id=bot_actor[0],
            actor_name=bot_actor[1],
            target_id=ref.sender_chat_id or ref.user_id,
            target_name=ref.name,
            reason=reason,
        )
        return
    if action == "warn":
        text = await warn_member(
            context, chat_id, lang, ref, reason=reason, actor=bot_actor, log_action="filter:warn"
        )
    else:
        text = await enforce(
            context,
            chat_id,
            lang,
            action,
            ref,
            seconds=hit.duration,
            reason=reason,
            actor=bot_actor,
            log_action=f"filter:{action}",
        )
    await _announce(context, chat_id, f"{notice}\n{text}")


async def _count_flood(
    update: Update, context: BotContext, message: Message, guard: ChatGuard
) -> None:
    if message.from_user is None or message.sender_chat is not None:
        return
    cache = guard_cache(context.services)
    assert guard.flood_limit is not None
    flooding = cache.flood.hit(
        message.chat_id,
        message.from_user.id,
        message.date.timestamp(),
        limit=guard.flood_limit,
        window=guard.flood_window,
    )
    if not flooding:
        return
    ref = _sender(message)
    if await _is_operator(context, message, ref):
        return
    info = await group_info(update, context)
    lang = info.language
    bot_actor = (context.bot.id, context.bot.first_name)
    reason = t(
        lang, "moderation.flood_reason", limit=guard.flood_limit, seconds=guard.flood_window
    )
    if guard.flood_action == "warn":
        text = await warn_member(
            context,
            message.chat_id,
            lang,
            ref,
            reason=reason,
            actor=bot_actor,
            log_action="flood:warn",
        )
    else:
        text = await enforce(
            context,
            message.chat_id,
            lang,
            guard.flood_action,
            ref,
            seconds=guard.flood_duration,
            reason=reason,
            actor=bot_actor,
            log_action=f"flood:{guard.flood_action}",
        )
    await _announce(
        context, message.chat_id, f"{t(lang, 'moderation.flood_hit', name=who(ref))}\n{text}"
    )


async def _announce(context: BotContext, chat_id: int, text: str) -> None:
    await send_text(context.bot, context.services, chat_id, text)


def register(app: Application) -> None:
    cache = guard_cache(services_of(app))
    app.add_handlers(
        [
            MessageGate(maybe_guarded(cache), guard_message, edits=True),
            MessageGate(is_migration, on_migration),
        ],
        group=GUARDS,
    )


async def on_startup(app: Application) -> None:
    """Learn which chats have guards before the first message arrives."""
    await guard_cache(services_of(app)).get(0)
