"""Membership and activity: the bot's own membership, members joining and leaving, group
migrations, and recording every group message (the data every KPI is computed from)."""

from __future__ import annotations

import logging

from telegram import ChatMember, ChatMemberAdministrator, ChatMemberUpdated, Message, Update
from telegram.constants import ChatMemberStatus
from telegram.ext import Application, ChatMemberHandler, MessageHandler, filters

from bot import invites
from bot.activity import SERVICE_ACCOUNTS, is_countable_user, local_day, record_join, record_leave
from bot.chats import GROUP_TYPES
from bot.commands import CommandSpec
from bot.i18n import normalize_language, t
from bot.sending import send_text
from bot.services import BotContext
from bot.text import escape
from handlers import TRACKING
from handlers.common import group_info
from handlers.gates import MessageGate

log = logging.getLogger(__name__)

COMMANDS: list[CommandSpec] = []

IN_CHAT = frozenset(
    {ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.MEMBER}
)
ADMIN = frozenset({ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR})
RIGHTS = ("can_delete_messages", "can_restrict_members", "can_pin_messages", "can_invite_users")


def has_content(message: Message) -> bool:
    """Text or an attachment: an ordinary message, not a service message.

    The same answer as `~filters.StatusUpdate.ALL` for counting, but that filter tests some
    fifty attributes per message; this tests one for a text message.
    """
    return message.text is not None or message.effective_attachment is not None


def is_in_chat(member: ChatMember) -> bool:
    if member.status == ChatMemberStatus.RESTRICTED:
        return bool(getattr(member, "is_member", False))
    return member.status in IN_CHAT


# --- every group message (the hot path) -----------------------------------------------


async def track_message(update: Update, context: BotContext) -> None:
    """Count a member's message or edit for the day Telegram stamped it."""
    message = update.effective_message
    user = message.from_user if message else None
    if user is None or message.sender_chat is not None:
        return  # sent on behalf of a channel or anonymously by an admin: not a member
    if user.is_bot or user.id in SERVICE_ACCOUNTS:
        return
    services = context.services
    info = services.chats.cached(message.chat_id) or await group_info(update, context)
    edited = update.edited_message is not None
    when = (message.edit_date if edited else None) or message.date
    services.activity.record_message(
        message.chat_id,
        user.id,
        user.full_name,
        user.username,
        when,
        local_day(when, info.timezone),
        edited=edited,
    )


# --- joins and leaves -----------------------------------------------------------------


async def _join(context: BotContext, update: Update, chat_id: int, user, when, via) -> None:  # type: ignore[no-untyped-def]
    """Record a join and, in the same transaction, where it came from (bot.invites)."""
    if context.services.opt_outs.excluded(chat_id, user.id):
        return  # asked to be forgotten (bot.privacy)
    info = await group_info(update, context)
    day = local_day(when, info.timezone)
    async with context.services.hot() as session:
        recorded = await record_join(
            session,
            chat_id=chat_id,
            user_id=user.id,
            name=user.full_name,
            username=user.username,
            when=when,
            day=day,
        )
        await invites.attribute_join(
            session,
            chat_id=chat_id,
            user_id=user.id,
            when=when,
            day=day,
            recorded=recorded,
            via=via,
        )


async def _leave(
    context: BotContext, update: Update, chat_id: int, user, when, kicked: bool
) -> None:  # type: ignore[no-untyped-def]
    if context.services.opt_outs.excluded(chat_id, user.id):
        return  # asked to be forgotten (bot.privacy)
    info = await group_info(update, context)
    async with context.services.hot() as session:
        if await record_leave(
            session,
            chat_id=chat_id,
            user_id=user.id,
            name=user.full_name,
            username=user.username,
            when=when,
            day=local_day(when, info.timezone),
            kicked=kicked,
        ):
            await invites.note_leave(session, chat_id=chat_id, user_id=user.id, when=when)


async def on_new_members(update: Update, context: BotContext) -> None:
    """Service message: someone joined (the way joins are seen when the bot is not admin)."""
    message = update.effective_message
    for user in message.new_chat_members or ():
        if is_countable_user(user.id, user.is_bot):
            # The service message names who added the member, never the link used.
            adder = message.from_user.id if message.from_user else None
            via = invites.JoinVia(added_by=adder)
            await _join(context, update, message.chat_id, user, message.date, via)


async def on_left_member(update: Update, context: BotContext) -> None:
    """Service message: someone left or was removed."""
    message = update.effective_message
    user = message.left_chat_member
    if user is not None and is_countable_user(user.id, user.is_bot):
        removed = message.from_user is not None and message.from_user.id != user.id
        await _leave(context, update, message.chat_id, user, message.date, removed)


async def on_chat_member(update: Update, context: BotContext) -> None:
    """chat_member update (bot is admin): joins, leaves, promotions and demotions."""
    change: ChatMemberUpdated = update.chat_member  # type: ignore[assignment]
    if change.chat.type not in GROUP_TYPES:
        return
    old, new, user = change.old_chat_member, change.new_chat_member, change.new_chat_member.user
    if not is_countable_user(user.id, user.is_bot):
        return
    was_admin, is_admin = old.status in ADMIN, new.status in ADMIN
    if was_admin != is_admin or (is_admin and old.status != new.status):
        async with context.services.db.begin() as session:
            await context.services.operators.note_status(
                session, change.chat.id, user.id, new.status
            )
    was_in, now_in = is_in_chat(old), is_in_chat(new)
    if now_in and not was_in:
        link = change.invite_link
        via = invites.JoinVia(
            url=link.invite_link if link else None,
            link_name=link.name if link else None,
            via_request=bool(change.via_join_request),
            added_by=change.from_user.id if change.from_user else None,
        )
        await _join(context, update, change.chat.id, user, change.date, via)
    elif was_in and not now_in:
        kicked = new.status == ChatMemberStatus.BANNED or change.from_user.id != user.id
        await _leave(context, update, change.chat.id, user, change.date, kicked)


# --- the bot's own membership ---------------------------------------------------------


def _rights(member: ChatMember) -> dict[str, bool]:
    if isinstance(member, ChatMemberAdministrator):
        return {right: bool(getattr(member, right)) for right in RIGHTS}
    if member.status == ChatMemberStatus.OWNER:
        return dict.fromkeys(RIGHTS, True)
    return dict.fromkeys(RIGHTS, False)


def rights_report(lang: str, rights: dict[str, bool], sees_all: bool) -> str:
    """The checklist operators get: which rights the bot has, and what it can see."""
    lines = [t(lang, "core.rights_title")]
    for right in RIGHTS:
        mark = "✅" if rights.get(right) else "❌"
        lines.append(f"{mark} {t(lang, 'core.right_' + right)}")
    lines.append(t(lang, "core.sees_all" if sees_all else "core.sees_partial"))
    return "\n".join(lines)


async def on_my_chat_member(update: Update, context: BotContext) -> None:
    """The bot was added, promoted, demoted or removed: keep the chat row and tell operators."""
    change: ChatMemberUpdated = update.my_chat_member  # type: ignore[assignment]
    chat = change.chat
    if chat.type not in GROUP_TYPES:
        return
    services = context.services
    new = change.new_chat_member
    if not is_in_chat(new):
        await services.chats.deactivate(chat.id, bot_status=new.status)
        log.info("removed from chat %s (%s)", chat.id, new.status)
        return
    rights = _rights(new)
    sees_all = new.status in ADMIN or services.bot_sees_all_messages
    info, became_active = await services.chats.register_bot_membership(
        chat_id=chat.id,
        type=chat.type,
        title=chat.title or "",
        username=chat.username,
        language_hint=normalize_language(change.from_user.language_code),
        bot_status=new.status,
        rights=rights,
        sees_all_messages=sees_all,
    )
    report = rights_report(info.language, rights, sees_all)
    if became_active:
        greeting = t(info.language, "core.greeting", group=escape(info.title or ""))
        await send_text(context.bot, services, chat.id, f"{greeting}\n\n{report}")
    elif (change.old_chat_member.status in ADMIN) != (new.status in ADMIN) or _rights(
        change.old_chat_member
    ) != rights:
        await send_text(context.bot, services, chat.id, report)


# --- group → supergroup -----------------------------------------------------------------


async def on_migration(update: Update, context: BotContext) -> None:
    """Either service message of a migration moves every row of the old id to the new one."""
    message = update.effective_message
    if message.migrate_to_chat_id:
        old_id, new_id = message.chat_id, message.migrate_to_chat_id
    else:
        old_id, new_id = message.migrate_from_chat_id, message.chat_id
    services = context.services
    await services.activity.flush()
    await services.chats.migrate(old_id, new_id)


def register(app: Application) -> None:
    groups = filters.ChatType.GROUPS
    app.add_handlers(
        [
            # Ordered by frequency: ordinary messages first, they are nearly every update.
            MessageGate(has_content, track_message, edits=True),
            MessageHandler(groups & filters.StatusUpdate.NEW_CHAT_MEMBERS, on_new_members),
            MessageHandler(groups & filters.StatusUpdate.LEFT_CHAT_MEMBER, on_left_member),
            MessageHandler(groups & filters.StatusUpdate.MIGRATE, on_migration),
            ChatMemberHandler(on_my_chat_member, ChatMemberHandler.MY_CHAT_MEMBER),
            ChatMemberHandler(on_chat_member, ChatMemberHandler.CHAT_MEMBER),
        ],
        group=TRACKING,
    )
