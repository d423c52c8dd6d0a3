"""/dashboard: open the operators' dashboard (a Telegram Mini App, or a browser sign-in link).

Telegram allows `web_app` buttons in inline keyboards of private chats only. So in a group
the command answers with a URL button to the deep link `t.me/<bot>?start=dashboard_<chat id>`,
which opens the private chat where `/start dashboard_<chat id>` answers with the Mini App
button and a one-time browser sign-in link (rights checked again there). In a private chat
(with a group picked through /groups) it answers with both at once. The web server itself
starts and stops with the application (on_startup / on_shutdown).
"""

from __future__ import annotations

from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update, WebAppInfo
from telegram.ext import Application, ApplicationHandlerStop, CommandHandler, filters

from bot import dashboard_auth as auth
from bot.commands import Audience, CommandSpec
from bot.i18n import t
from bot.services import BotContext, services_of
from bot.text import escape
from bot.web import server
from handlers import COMMANDS as COMMAND_GROUP
from handlers import GUARDS
from handlers.common import Target, operator_command, reply, user_language
from handlers.core import remember_private_user

FEATURE = "dashboard"
COMMANDS = [CommandSpec("dashboard", Audience.OPERATOR, FEATURE)]
DEEP_LINK_PREFIX = "dashboard_"


def deep_link(bot_username: str, chat_id: int) -> str:
    return f"https://t.me/{bot_username}?start={DEEP_LINK_PREFIX}{chat_id}"


async def private_answer(
    update: Update, context: BotContext, *, chat_id: int, title: str, lang: str
) -> None:
    """The Mini App button (https only: Telegram's rule) and a fresh one-time sign-in link."""
    services = context.services
    base = services.settings.dashboard_url
    assert base is not None and update.effective_user is not None
    async with services.db.begin() as session:
        token = await auth.create_login(
            session, user_id=update.effective_user.id, chat_id=chat_id, now=services.clock()
        )
    rows = []
    if base.startswith("https://"):
        app_url = f"{base}/tma?chat={chat_id}"
        rows.append(
            [InlineKeyboardButton(t(lang, "dashboard.button_open"), web_app=WebAppInfo(app_url))]
        )
    link = f"{base}/login?token={token}&lang={lang}"
    rows.append([InlineKeyboardButton(t(lang, "dashboard.button_browser"), url=link)])
    await reply(
        update,
        t(lang, "dashboard.command_private", group=escape(title or str(chat_id))),
        reply_markup=InlineKeyboardMarkup(rows),
    )


@operator_command
async def dashboard_command(update: Update, context: BotContext, target: Target) -> None:
    """/dashboard — the group's dashboard: the Mini App privately, a deep link in the group."""
    if not context.services.settings.dashboard_url:
        await reply(update, t(target.lang, "dashboard.command_off"))
        return
    if target.private:
        lang = await user_language(update, context)
        await private_answer(
            update, context, chat_id=target.chat_id, title=target.chat.title, lang=lang
        )
        return
    button = InlineKeyboardButton(
        t(target.lang, "dashboard.button_private"),
        url=deep_link(context.bot.username, target.chat_id),
    )
    await reply(
        update,
        t(target.lang, "dashboard.command_group"),
        reply_markup=InlineKeyboardMarkup([[button]]),
    )


async def dashboard_deep_link(update: Update, context: BotContext) -> None:
    """/start dashboard_<chat id> in a private chat (from the group's button)."""
    await remember_private_user(update, context)
    lang = await user_language(update, context)
    services = context.services
    user = update.effective_user
    chat_id = int((context.args or [""])[0][len(DEEP_LINK_PREFIX) :])
    info = await services.chats.get(chat_id)
    if not services.settings.dashboard_url:
        await reply(update, t(lang, "dashboard.command_off"))
    elif (
        user is None
        or info is None
        or not await services.operators.is_operator(context.bot, chat_id, user.id)
    ):
        await reply(update, t(lang, "dashboard.command_not_operator"))
    else:
        await private_answer(update, context, chat_id=chat_id, title=info.title, lang=lang)
    raise ApplicationHandlerStop


def register(app: Application) -> None:
    # The deep link before core's /start (guards group, like the rules deep link).
    app.add_handler(
        CommandHandler(
            "start",
            dashboard_deep_link,
            filters=filters.ChatType.PRIVATE
            & filters.Regex(rf"^/start(@\w+)?\s+{DEEP_LINK_PREFIX}-?\d+$"),
        ),
        group=GUARDS,
    )
    app.add_handler(CommandHandler("dashboard", dashboard_command), group=COMMAND_GROUP)


async def on_startup(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """Serve the dashboard when DASHBOARD_PORT is set."""
    if services_of(app).settings.dashboard_port is not None:
        await server.start(app)


async def on_shutdown(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    await server.stop(app)
