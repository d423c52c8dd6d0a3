"""/groups: manage a group from a private chat (Rose's "connections").

The chosen group is stored per person; every operator command sent privately then applies
to it, and the operator's rights there are checked again on every command.
"""

from __future__ import annotations

from sqlalchemy import or_, select
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, filters

from bot.commands import Audience, CommandSpec
from bot.db import upsert
from bot.i18n import t
from bot.models import Chat, ChatAdmin, Member, UserProfile
from bot.services import BotContext
from bot.text import escape
from handlers import COMMANDS as COMMAND_GROUP
from handlers.common import reply, user_language

FEATURE = "core"
COMMANDS = [CommandSpec("groups", Audience.PRIVATE, FEATURE)]
CALLBACK_PREFIX = "groups:"
MAX_LISTED = 40


async def operated_groups(context: BotContext, user_id: int) -> list[Chat]:
    """Active groups where the person is an operator (rights checked, cache permitting)."""
    services = context.services
    async with services.db() as session:
        query = select(Chat).where(Chat.active.is_(True))
        if user_id not in services.operators.owners:
            known = (
                select(ChatAdmin.chat_id)
                .where(ChatAdmin.user_id == user_id)
                .union(
                    select(Member.chat_id).where(
                        Member.user_id == user_id, Member.status == "member"
                    )
                )
            )
            query = query.where(or_(Chat.id.in_(known)))
        chats = list(await session.scalars(query.order_by(Chat.title).limit(MAX_LISTED)))
    return [c for c in chats if await services.operators.is_operator(context.bot, c.id, user_id)]


async def groups(update: Update, context: BotContext) -> None:
    """/groups: list the groups I operate, with a button to manage each from here."""
    lang = await user_language(update, context)
    user = update.effective_user
    chats = await operated_groups(context, user.id)
    if not chats:
        await reply(update, t(lang, "core.groups_none"))
        return
    async with context.services.db() as session:
        profile = await session.get(UserProfile, user.id)
    current = profile.connected_chat_id if profile else None
    buttons = [
        [
            InlineKeyboardButton(
                ("✅ " if c.id == current else "") + (c.title or str(c.id)),
                callback_data=f"{CALLBACK_PREFIX}{c.id}",
            )
        ]
        for c in chats
    ]
    if current is not None:
        buttons.append(
            [
                InlineKeyboardButton(
                    t(lang, "core.groups_disconnect"), callback_data=f"{CALLBACK_PREFIX}none"
                )
            ]
        )
    await reply(update, t(lang, "core.groups_pick"), reply_markup=InlineKeyboardMarkup(buttons))


async def pick_group(update: Update, context: BotContext) -> None:
    """Button: connect to a group — after checking again that the presser operates it."""
    query = update.callback_query
    user = query.from_user
    lang = await user_language(update, context)
    raw = (query.data or "")[len(CALLBACK_PREFIX) :]
    chat_id: int | None = None
    if raw != "none":
        try:
            chat_id = int(raw)
        except ValueError:
            await query.answer(t(lang, "core.groups_invalid"), show_alert=True)
            return
        info = await context.services.chats.get(chat_id)
        if (
            info is None
            or not info.active
            or not await context.services.operators.is_operator(context.bot, chat_id, user.id)
        ):
            await query.answer(t(lang, "core.groups_invalid"), show_alert=True)
            return
    async with context.services.db.begin() as session:
        await upsert(
            session,
            UserProfile.__table__,  # type: ignore[attr-defined]
            [
                {
                    "user_id": user.id,
                    "first_name": user.first_name,
                    "username": user.username,
                    "language_code": user.language_code,
                    "connected_chat_id": chat_id,
                }
            ],
            key=("user_id",),
            update=lambda new: {"connected_chat_id": new.connected_chat_id},
        )
    if chat_id is None:
        text = t(lang, "core.groups_disconnected")
    else:
        text = t(lang, "core.groups_connected", group=escape(info.title or str(chat_id)))
    await query.answer()
    await query.edit_message_text(text, parse_mode="HTML")


def register(app: Application) -> None:
    app.add_handlers(
        [
            CommandHandler("groups", groups, filters=filters.ChatType.PRIVATE),
            CallbackQueryHandler(pick_group, pattern=f"^{CALLBACK_PREFIX}"),
        ],
        group=COMMAND_GROUP,
    )
