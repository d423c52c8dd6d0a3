"""/start, /help, and the group settings every feature relies on: /language, /settimezone."""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ChatType
from telegram.ext import Application, CommandHandler

from bot.chats import parse_timezone
from bot.commands import Audience, CommandSpec, help_text
from bot.db import upsert
from bot.i18n import normalize_language, t
from bot.models import UserProfile
from bot.services import BotContext
from bot.settings import LANGUAGES
from bot.text import escape
from handlers import COMMANDS as COMMAND_GROUP
from handlers.common import (
    Target,
    group_info,
    is_group,
    operator_command,
    reply,
    resolve_target,
    sent_as_group_admin,
    user_language,
)

FEATURE = "core"
COMMANDS = [
    CommandSpec("start", Audience.PRIVATE, FEATURE),
    CommandSpec("help", Audience.MEMBER, FEATURE),
    CommandSpec("language", Audience.OPERATOR, FEATURE),
    CommandSpec("settimezone", Audience.OPERATOR, FEATURE),
]


def all_commands(context: BotContext) -> list[CommandSpec]:
    return context.application.bot_data["commands"]


async def remember_private_user(update: Update, context: BotContext) -> None:
    """Note that this person started the bot (so it may write to them privately)."""
    user = update.effective_user
    assert user is not None
    now = context.services.clock()
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
                    "started_at": now,
                }
            ],
            key=("user_id",),
            update=lambda new: {
                "first_name": new.first_name,
                "username": new.username,
                "language_code": new.language_code,
                "started_at": new.started_at,
            },
        )


async def start(update: Update, context: BotContext) -> None:
    """/start: explain the bot; in private, offer to add it to a group."""
    if is_group(update):
        info = await group_info(update, context)
        await reply(update, t(info.language, "core.start_group"))
        return
    user = update.effective_user
    # Someone who asked to be forgotten is not stored again by /start (bot.privacy);
    # /rememberme is how they opt back in.
    opted_out = user is not None and context.services.opt_outs.excluded(None, user.id)
    if not opted_out:
        await remember_private_user(update, context)
    lang = await user_language(update, context)
    add_url = f"https://t.me/{context.bot.username}?startgroup=true"
    keyboard = InlineKeyboardMarkup(
        [[InlineKeyboardButton(t(lang, "core.add_to_group"), url=add_url)]]
    )
    text = t(lang, "core.start_private")
    if opted_out:
        text += "\n\n" + t(lang, "privacy.opted_out_start")
    await reply(update, text, reply_markup=keyboard)


async def help_command(update: Update, context: BotContext) -> None:
    """/help: the commands this caller may use here."""
    services = context.services
    if is_group(update):
        info = await group_info(update, context)
        user = update.effective_user
        operator = sent_as_group_admin(update.effective_message) or (
            user is not None
            and await services.operators.is_operator(context.bot, info.id, user.id)
        )
        await reply(
            update,
            help_text(info.language, all_commands(context), operator=operator, private=False),
        )
        return
    lang = await user_language(update, context)
    await reply(update, help_text(lang, all_commands(context), operator=False, private=True))


async def language(update: Update, context: BotContext) -> None:
    """/language en|zh — a group's language (or, privately without a group picked, yours)."""
    choice = context.args[0].lower() if context.args else ""
    chat = update.effective_chat
    if chat is not None and chat.type == ChatType.PRIVATE:
        async with context.services.db() as session:
            profile = await session.get(UserProfile, update.effective_user.id)
        if profile is None or profile.connected_chat_id is None:
            await _set_personal_language(update, context, choice)
            return
    target = await resolve_target(update, context)
    if target is not None:
        await _set_group_language(update, context, target, choice)


async def _set_personal_language(update: Update, context: BotContext, choice: str) -> None:
    if choice not in LANGUAGES:
        await reply(update, t(await user_language(update, context), "core.language_usage"))
        return
    user = update.effective_user
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
                    "language": choice,
                }
            ],
            key=("user_id",),
            update=lambda new: {"language": new.language},
        )
    await reply(update, t(choice, "core.language_set_personal"))


async def _set_group_language(
    update: Update, context: BotContext, target: Target, choice: str
) -> None:
    if choice not in LANGUAGES:
        await reply(update, t(target.lang, "core.language_usage"))
        return
    await context.services.chats.update_settings(target.chat_id, language=choice)
    await reply(update, t(choice, "core.language_set", group=escape(target.chat.title)))


@operator_command
async def settimezone(update: Update, context: BotContext, target: Target) -> None:
    """/settimezone Area/City — the zone days, digests and schedules are read in."""
    name = " ".join(context.args or ()).strip()
    zone = parse_timezone(name) if name else None
    if zone is None:
        key = "core.timezone_unknown" if name else "core.timezone_usage"
        await reply(update, t(target.lang, key, zone=escape(name)))
        return
    await context.services.chats.update_settings(target.chat_id, timezone=zone.key)
    now = context.services.clock().astimezone(zone)
    await reply(
        update,
        t(
            target.lang,
            "core.timezone_set",
            zone=zone.key,
            group=escape(target.chat.title),
            now=now.strftime("%Y-%m-%d %H:%M"),
        ),
    )


def register(app: Application) -> None:
    app.add_handlers(
        [
            CommandHandler("start", start),
            CommandHandler("help", help_command),
            CommandHandler("language", language),
            CommandHandler("settimezone", settimezone),
        ],
        group=COMMAND_GROUP,
    )


__all__ = ["register", "COMMANDS", "normalize_language"]
