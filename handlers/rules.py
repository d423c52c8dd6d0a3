"""Rules and newcomers: /rules /setrules /clearrules /privaterules, the welcome message, and
the join check (newcomers restricted until they press "I have read the rules" or answer the
operators' question)."""

from __future__ import annotations

import logging
import random
import re
from datetime import datetime, timedelta

from telegram import (
    ChatMemberUpdated,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
    User,
)
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    filters,
)

from bot import rules as domain
from bot import sanctions
from bot.activity import SERVICE_ACCOUNTS
from bot.chats import GROUP_TYPES, ChatInfo
from bot.commands import Audience, CommandSpec
from bot.i18n import t
from bot.rules import JoinCheckSettings, VerifyArgsError
from bot.sanctions import RESTRICT, bot_has_right
from bot.sending import send_text
from bot.services import BotContext
from bot.text import MAX_MESSAGE_UTF16, escape, mention, utf16_len
from bot.timeparse import format_duration
from handlers import COMMANDS as COMMAND_GROUP
from handlers import GUARDS
from handlers.common import Target, group_info, is_group, operator_command, reply, user_language
from handlers.core import remember_private_user
from handlers.gates import MessageGate
from handlers.membership import is_in_chat
from handlers.moderation import command_text, dispatcher
from schedules import verification

log = logging.getLogger(__name__)

FEATURE = "rules"
COMMANDS = [
    CommandSpec("rules", Audience.MEMBER, FEATURE),
    CommandSpec("setrules", Audience.OPERATOR, FEATURE),
    CommandSpec("clearrules", Audience.OPERATOR, FEATURE),
    CommandSpec("privaterules", Audience.OPERATOR, FEATURE),
    CommandSpec("setwelcome", Audience.OPERATOR, FEATURE),
    CommandSpec("welcome", Audience.OPERATOR, FEATURE),
    CommandSpec("verify", Audience.OPERATOR, FEATURE),
]

CHECK_PREFIX = "jc:"
DEEP_LINK_PREFIX = "rules_"
_COMMAND_WORD = re.compile(r"^/\S+\s*")
_rng = random.SystemRandom()


def rules_link(bot_username: str, chat_id: int) -> str:
    """A /start deep link that opens the group's rules in a private chat with the bot."""
    return f"https://t.me/{bot_username}?start={DEEP_LINK_PREFIX}{chat_id}"


def rules_button(lang: str, bot_username: str, chat_id: int) -> InlineKeyboardButton:
    return InlineKeyboardButton(
        t(lang, "rules.button_rules"), url=rules_link(bot_username, chat_id)
    )


def html_after_command(message: Message) -> str:
    """The formatted text after the command word (`Message.text_html` keeps formatting)."""
    if not message.text:
        return ""
    return _COMMAND_WORD.sub("", message.text_html, count=1).strip()


def html_of(message: Message | None) -> str:
    """A message's text or caption as Telegram HTML."""
    if message is None:
        return ""
    if message.text:
        return message.text_html
    if message.caption:
        return message.caption_html
    return ""


def _visible_length(html_text: str) -> int:
    import html

    return utf16_len(html.unescape(re.sub(r"<[^>]+>", "", html_text)))


async def send_rules(message: Message, lang: str, title: str, rules_html: str) -> None:
    """Send the rules as one message (their HTML must not be split), titled when it fits."""
    text = f"{t(lang, 'rules.title', group=escape(title))}\n\n{rules_html}"
    if _visible_length(text) > MAX_MESSAGE_UTF16:
        text = rules_html
    try:
        await message.reply_text(text, do_quote=False)
    except TelegramError as exc:
        log.warning("could not send rules in %s: %s", message.chat_id, exc)


# --- /rules and friends -------------------------------------------------------------------


async def rules_command(update: Update, context: BotContext) -> None:
    """/rules — in the group, or a button to read them privately when the group prefers."""
    message = update.effective_message
    if message is None:
        return
    if not is_group(update):
        await reply(update, t(await user_language(update, context), "rules.in_group_hint"))
        return
    info = await group_info(update, context)
    async with context.services.db() as session:
        row = await domain.get_rules(session, info.id)
    if row is None:
        await reply(update, t(info.language, "rules.none"))
        return
    if row.private:
        keyboard = InlineKeyboardMarkup(
            [[rules_button(info.language, context.bot.username, info.id)]]
        )
        await reply(
            update,
            t(info.language, "rules.open_private", group=escape(info.title)),
            reply_markup=keyboard,
        )
        return
    await send_rules(message, info.language, info.title, row.text_html)


async def rules_deep_link(update: Update, context: BotContext) -> None:
    """/start rules_<chat id> in a private chat: show that group's rules (before core /start)."""
    await remember_private_user(update, context)
    lang = await user_language(update, context)
    payload = (context.args or [""])[0][len(DEEP_LINK_PREFIX) :]
    chat_id = int(payload)
    info = await context.services.chats.get(chat_id)
    async with context.services.db() as session:
        row = await domain.get_rules(session, chat_id)
    if info is None or row is None:
        await reply(update, t(lang, "rules.deep_no_rules"))
    else:
        await send_rules(update.effective_message, info.language, info.title, row.text_html)  # type: ignore[arg-type]
    raise ApplicationHandlerStop


@operator_command
async def setrules_command(update: Update, context: BotContext, target: Target) -> None:
    """/setrules TEXT, or reply /setrules to a message: its formatting is kept."""
    message = update.effective_message
    assert message is not None
    text = html_after_command(message) or html_of(message.reply_to_message).strip()
    if not text:
        await reply(update, t(target.lang, "rules.setrules_usage"))
        return
    services = context.services
    async with services.db.begin() as session:
        await domain.set_rules(
            session, target.chat_id, text, by=target.user_id, now=services.clock()
        )
    await reply(update, t(target.lang, "rules.setrules_done", group=escape(target.chat.title)))


@operator_command
async def clearrules_command(update: Update, context: BotContext, target: Target) -> None:
    """/clearrules."""
    async with context.services.db.begin() as session:
        cleared = await domain.clear_rules(session, target.chat_id)
    key = "rules.clearrules_done" if cleared else "rules.none"
    await reply(update, t(target.lang, key))


@operator_command
async def privaterules_command(update: Update, context: BotContext, target: Target) -> None:
    """/privaterules on|off — /rules answers with a button to read them privately."""
    choice = (context.args or [""])[0].lower()
    if choice not in domain.ON_WORDS | domain.OFF_WORDS:
        await reply(update, t(target.lang, "rules.privaterules_usage"))
        return
    private = choice in domain.ON_WORDS
    async with context.services.db.begin() as session:
        changed = await domain.set_rules_private(session, target.chat_id, private)
    if not changed:
        await reply(update, t(target.lang, "rules.none"))
        return
    key = "rules.privaterules_on" if private else "rules.privaterules_off"
    await reply(update, t(target.lang, key))


# --- welcome ------------------------------------------------------------------------------


async def render_for(
    context: BotContext, info: ChatInfo, user: User, template: str
) -> tuple[str, InlineKeyboardMarkup | None]:
    """The welcome for `user`: placeholders filled with escaped values, {rules} as a button."""
    count = None
    if domain.needs_member_count(template):
        try:
            count = await context.bot.get_chat_member_count(info.id)
        except TelegramError as exc:
            log.info("no member count for %s: %s", info.id, exc)
    rendered = domain.render_welcome(
        template,
        name_html=mention(user.id, user.full_name),
        group_html=escape(info.title),
        count=count,
    )
    markup = None
    if rendered.rules_button:
        async with context.services.db() as session:
            has_rules = await domain.get_rules(session, info.id) is not None
        if has_rules:
            markup = InlineKeyboardMarkup(
                [[rules_button(info.language, context.bot.username, info.id)]]
            )
    return rendered.text or "👋", markup


async def send_welcome(context: BotContext, info: ChatInfo, user: User) -> None:
    """Welcome a newcomer, deleting the previous welcome so joins don't flood the chat."""
    services = context.services
    async with services.db() as session:
        settings = await domain.welcome_settings(session, info.id)
    if not settings.enabled:
        return
    template = settings.text_html or t(info.language, "rules.welcome_default")
    text, markup = await render_for(context, info, user, template)
    if settings.last_message_id:
        await sanctions.delete_message(context.bot, info.id, settings.last_message_id)
    sent = await send_text(context.bot, services, info.id, text, reply_markup=markup)
    if sent:
        async with services.db.begin() as session:
            await domain.save_welcome(session, info.id, last_message_id=sent[-1].message_id)


@operator_command
async def setwelcome_command(update: Update, context: BotContext, target: Target) -> None:
    """/setwelcome TEXT (or reply) with {name} {group} {rules} {count}; turns welcomes on."""
    message = update.effective_message
    assert message is not None
    text = html_after_command(message) or html_of(message.reply_to_message).strip()
    if not text:
        await reply(update, t(target.lang, "rules.setwelcome_usage"))
        return
    async with context.services.db.begin() as session:
        await domain.save_welcome(session, target.chat_id, enabled=True, text_html=text)
    user = update.effective_user
    preview, markup = await render_for(context, target.chat, user, text)  # type: ignore[arg-type]
    await reply(update, t(target.lang, "rules.setwelcome_done"))
    await reply(update, preview, reply_markup=markup)


@operator_command
async def welcome_command(update: Update, context: BotContext, target: Target) -> None:
    """/welcome on|off, or /welcome to see the current welcome."""
    choice = (context.args or [""])[0].lower()
    lang = target.lang
    if choice in domain.ON_WORDS | domain.OFF_WORDS:
        async with context.services.db.begin() as session:
            await domain.save_welcome(session, target.chat_id, enabled=choice in domain.ON_WORDS)
        key = "rules.welcome_on" if choice in domain.ON_WORDS else "rules.welcome_off"
        await reply(update, t(lang, key))
        return
    if choice:
        await reply(update, t(lang, "rules.welcome_usage"))
        return
    async with context.services.db() as session:
        settings = await domain.welcome_settings(session, target.chat_id)
    status = t(lang, "rules.welcome_status_on" if settings.enabled else "rules.welcome_status_off")
    template = settings.text_html or t(lang, "rules.welcome_default")
    await reply(update, f"{status}\n\n{template}\n\n{t(lang, 'rules.welcome_usage')}")


# --- the join check: configuration ---------------------------------------------------------


def check_summary(lang: str, settings: JoinCheckSettings) -> str:
    lines = [t(lang, "rules.verify_on" if settings.enabled else "rules.verify_off")]
    answers = settings.answer_list
    if settings.question and answers and settings.correct is not None:
        lines.append(
            t(
                lang,
                "rules.verify_question_line",
                question=escape(settings.question),
                answers=escape(" | ".join(answers)),
                correct=settings.correct + 1,
            )
        )
    else:
        lines.append(t(lang, "rules.verify_button_line"))
    lines.append(
        t(
            lang,
            "rules.verify_time_line",
            time=format_duration(timedelta(seconds=settings.timeout_seconds)),
            action=t(lang, f"rules.verify_action_{settings.action}"),
        )
    )
    return "\n".join(lines)


@operator_command
async def verify_command(update: Update, context: BotContext, target: Target) -> None:
    """/verify on|off · question "…" answers "a|b|c" correct N · time 5m · action kick."""
    lang = target.lang
    raw = command_text(update.effective_message)
    services = context.services
    if not raw.strip():
        async with services.db() as session:
            settings = await domain.check_settings(session, target.chat_id)
        await reply(update, f"{check_summary(lang, settings)}\n\n{t(lang, 'rules.verify_usage')}")
        return
    try:
        change = domain.parse_verify_args(raw)
    except VerifyArgsError as exc:
        await reply(
            update, t(lang, exc.key, **exc.values) + "\n\n" + t(lang, "rules.verify_usage")
        )
        return
    async with services.db.begin() as session:
        values = change.values()
        if values:
            await domain.save_check_settings(session, target.chat_id, **values)
        settings = await domain.check_settings(session, target.chat_id)
    text = check_summary(lang, settings)
    if settings.enabled and not await bot_has_right(
        context.bot, services, target.chat_id, RESTRICT
    ):
        text += "\n" + t(lang, "moderation.needs_right", right=t(lang, f"core.right_{RESTRICT}"))
    await reply(update, text)


# --- the join check: newcomers -------------------------------------------------------------


async def on_new_members(update: Update, context: BotContext) -> None:
    """Service message: members joined (or were added)."""
    message = update.effective_message
    assert message is not None
    for user in message.new_chat_members or ():
        await handle_join(update, context, user, message.from_user, message.date)


async def on_left_member(update: Update, context: BotContext) -> None:
    message = update.effective_message
    assert message is not None
    if message.left_chat_member is not None:
        await handle_leave(context, message.chat_id, message.left_chat_member.id)


async def on_chat_member(update: Update, context: BotContext) -> None:
    """chat_member update (bot is admin): the same joins and leaves, seen the other way."""
    change: ChatMemberUpdated = update.chat_member  # type: ignore[assignment]
    if change.chat.type not in GROUP_TYPES:
        return
    was_in, now_in = is_in_chat(change.old_chat_member), is_in_chat(change.new_chat_member)
    user = change.new_chat_member.user
    if now_in and not was_in:
        await handle_join(update, context, user, change.from_user, change.date)
    elif was_in and not now_in:
        await handle_leave(context, change.chat.id, user.id)


async def handle_join(
    update: Update, context: BotContext, user: User, adder: User | None, when: datetime
) -> None:
    """Start the join check (restrict + question) or welcome the newcomer — once per join."""
    if user.is_bot or user.id in SERVICE_ACCOUNTS:
        return
    info = await group_info(update, context)
    services = context.services
    async with services.hot(write=False) as session:  # most groups have neither feature on
        if not await domain.join_features_on(session, info.id):
            return
    async with services.db() as session:
        check = await domain.check_settings(session, info.id)
        welcome = await domain.welcome_settings(session, info.id)
    if not check.enabled and not welcome.enabled:
        return
    async with services.db.begin() as session:
        claimed = await domain.claim_join(
            session, chat_id=info.id, user_id=user.id, name=user.full_name, when=when
        )
    if not claimed:
        return  # the same join, reported twice
    verify = check.enabled
    if verify and adder is not None and adder.id != user.id:
        # Added by an operator: vouched for, no check.
        verify = not await services.operators.is_operator(context.bot, info.id, adder.id)
    if verify and not await bot_has_right(context.bot, services, info.id, RESTRICT):
        log.warning("join check in %s skipped: cannot restrict members", info.id)
        verify = False
    if verify and await start_check(context, info, user, check):
        return
    await send_welcome(context, info, user)


async def start_check(
    context: BotContext, info: ChatInfo, user: User, settings: JoinCheckSettings
) -> bool:
    """Restrict the newcomer, post their check and arm its deadline; False if impossible."""
    services = context.services
    now = services.clock()
    async with services.db.begin() as session:
        pending = await domain.start_check(
            session, chat_id=info.id, user_id=user.id, settings=settings, now=now, rng=_rng
        )
    problem = await sanctions.mute(context.bot, info.id, user.id, None)
    if problem is not None:
        log.warning("join check in %s: cannot restrict %s (%s)", info.id, user.id, problem)
        async with services.db.begin() as session:
            await domain.conclude_check(
                session, chat_id=info.id, user_id=user.id, token=pending.token, state="none"
            )
        return False
    lang = info.language
    minutes = format_duration(timedelta(seconds=settings.timeout_seconds))
    base = f"{CHECK_PREFIX}{user.id}:{pending.token}:"
    rows: list[list[InlineKeyboardButton]] = []
    if pending.question is not None:
        text = t(
            lang,
            "rules.check_question",
            name=mention(user.id, user.full_name),
            time=minutes,
            question=escape(pending.question),
        )
        buttons = [
            InlineKeyboardButton(answer, callback_data=f"{base}{index}")
            for index, answer in pending.choices
        ]
        rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    else:
        text = t(lang, "rules.check_prompt", name=mention(user.id, user.full_name), time=minutes)
        rows = [
            [
                InlineKeyboardButton(
                    t(lang, "rules.check_button"), callback_data=f"{base}{domain.READ_RULES}"
                )
            ]
        ]
    async with services.db() as session:
        has_rules = await domain.get_rules(session, info.id) is not None
    if has_rules:
        rows.insert(0, [rules_button(lang, context.bot.username, info.id)])
    sent = await send_text(
        context.bot, services, info.id, text, reply_markup=InlineKeyboardMarkup(rows)
    )
    if sent:
        async with services.db.begin() as session:
            await domain.note_check_message(
                session, info.id, user.id, pending.token, sent[0].message_id
            )
    if context.job_queue is not None:
        verification.arm(
            context.job_queue,
            chat_id=info.id,
            user_id=user.id,
            token=pending.token,
            deadline=pending.deadline,
            now=now,
        )
    return True


async def handle_leave(context: BotContext, chat_id: int, user_id: int) -> None:
    """A newcomer left before answering: drop their check and its message."""
    services = context.services
    async with services.hot(write=False) as session:  # nearly every leave: not a newcomer
        row = await domain.newcomer_state(session, chat_id, user_id)
    if row is None or row.state != "pending":
        return
    async with services.db.begin() as session:
        row = await domain.newcomer_state(session, chat_id, user_id)  # again, to write
        if row is None or row.state != "pending":
            return
        done = await domain.conclude_check(
            session,
            chat_id=chat_id,
            user_id=user_id,
            token=domain.check_token(row.joined_at),
            state="left",
        )
    if done is None:
        return
    verification.cancel(context.job_queue, chat_id, user_id)
    if done.message_id:
        await sanctions.delete_message(context.bot, chat_id, done.message_id)


async def check_pressed(update: Update, context: BotContext) -> None:
    """A join-check button: only the newcomer, only while their check is pending here."""
    query = update.callback_query
    assert query is not None
    services = context.services
    parts = (query.data or "")[len(CHECK_PREFIX) :].split(":")
    message = query.message
    chat_id = message.chat.id if message is not None else 0
    info = await services.chats.get(chat_id) if chat_id else None
    lang = info.language if info else "en"
    if info is None or len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        await query.answer(t(lang, "rules.check_stale"), show_alert=True)
        return
    user_id, token, choice = int(parts[0]), int(parts[1]), parts[2]
    if query.from_user.id != user_id:
        await query.answer(t(lang, "rules.check_not_yours"), show_alert=True)
        return
    async with services.db() as session:
        row = await domain.pending_check(session, chat_id, user_id, token)
    if row is None:
        await query.answer(t(lang, "rules.check_stale"), show_alert=True)
        return
    if not domain.answer_is_correct(row, choice):
        failed = await verification.fail_check(
            context.bot,
            services,
            chat_id=chat_id,
            user_id=user_id,
            token=token,
            reason_key="rules.check_wrong_reason",
        )
        verification.cancel(context.job_queue, chat_id, user_id)
        key = "rules.check_wrong" if failed else "rules.check_stale"
        await query.answer(t(lang, key), show_alert=True)
        return
    async with services.db.begin() as session:
        passed = await domain.conclude_check(
            session, chat_id=chat_id, user_id=user_id, token=token, state="passed"
        )
    if passed is None:
        await query.answer(t(lang, "rules.check_stale"), show_alert=True)
        return
    verification.cancel(context.job_queue, chat_id, user_id)
    problem = await sanctions.unmute(context.bot, chat_id, user_id)
    if problem is not None:
        log.warning(
            "join check in %s: cannot lift %s's restriction (%s)", chat_id, user_id, problem
        )
    await query.answer(t(lang, "rules.check_passed"))
    if passed.message_id:
        await sanctions.delete_message(context.bot, chat_id, passed.message_id)
    await send_welcome(context, info, query.from_user)


def is_newcomer_event(message: Message) -> bool:
    """A join or leave service message (two attribute reads for ordinary messages)."""
    return bool(message.new_chat_members) or message.left_chat_member is not None


async def on_newcomer_event(update: Update, context: BotContext) -> None:
    message = update.effective_message
    assert message is not None
    if message.new_chat_members:
        await on_new_members(update, context)
    else:
        await on_left_member(update, context)


HANDLERS = {
    "rules": rules_command,
    "setrules": setrules_command,
    "clearrules": clearrules_command,
    "privaterules": privaterules_command,
    "setwelcome": setwelcome_command,
    "welcome": welcome_command,
    "verify": verify_command,
}


def register(app: Application) -> None:
    # Newcomers before tracking (guards group), and the rules deep link before core's /start.
    app.add_handlers(
        [
            MessageGate(is_newcomer_event, on_newcomer_event),
            ChatMemberHandler(on_chat_member, ChatMemberHandler.CHAT_MEMBER),
            CommandHandler(
                "start",
                rules_deep_link,
                filters=filters.ChatType.PRIVATE
                & filters.Regex(rf"^/start(@\w+)?\s+{DEEP_LINK_PREFIX}-?\d+$"),
            ),
        ],
        group=GUARDS,
    )
    app.add_handlers(
        [
            CommandHandler(list(HANDLERS), dispatcher(HANDLERS)),
            CallbackQueryHandler(check_pressed, pattern=f"^{CHECK_PREFIX}"),
        ],
        group=COMMAND_GROUP,
    )
