"""The guided lottery form (bot/lottery_form.py): a bare `/lottery` asks for the prize (a reply
to the bot's question), then offers buttons for the winners and the draw, then shows what
will be posted with Start and Cancel. Every step re-checks that the presser operates the
group; the buttons carry only the form's random token, and an unknown, expired or someone
else's token is answered harmlessly."""

from __future__ import annotations

import logging
import re

from telegram import (
    CallbackQuery,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
)
from telegram.error import TelegramError
from telegram.ext import Application, CallbackQueryHandler, MessageHandler, filters

from bot import lottery_form as forms
from bot.i18n import normalize_language, t
from bot.lottery import MAX_PRIZE, SpecError, parse_spec
from bot.services import BotContext
from bot.text import escape
from handlers.common import Target, sent_as_group_admin

log = logging.getLogger(__name__)

BUTTON = re.compile(r"^lotform:([A-Za-z0-9_-]{1,16}):(w|d|go|x)(?::([a-z0-9]{1,4}))?$")
FORM_GROUP = 3  # its own handler group: a reply to the bot never hides a message from others
ANONYMOUS = 0  # the form's user when an anonymous administrator opened it


async def open_form(update: Update, context: BotContext, target: Target) -> None:
    """A bare /lottery: ask for the prize, as a reply to this question."""
    message = update.effective_message
    assert message is not None
    services = context.services
    user_id = ANONYMOUS if sent_as_group_admin(message) else target.user_id
    async with services.db.begin() as session:
        form = await forms.start(
            session,
            chat_id=message.chat_id,
            user_id=user_id,
            group_id=target.chat_id,
            now=services.clock(),
        )
        token = form.token
    try:
        question = await message.reply_text(
            t(target.lang, "lottery.form_prize"),
            reply_markup=ForceReply(selective=True),
            do_quote=True,
        )
    except TelegramError as exc:
        log.warning("could not ask for a lottery's prize in %s: %s", message.chat_id, exc)
        return
    async with services.db.begin() as session:
        await forms.answer(session, token, now=services.clock(), prompt_id=question.message_id)


class ReplyToBot(filters.MessageFilter):
    """A new text message answering one of the bot's own messages (cheap: no database)."""

    def filter(self, message: Message) -> bool:
        replied = message.reply_to_message
        return (
            message.text is not None
            and replied is not None
            and replied.from_user is not None
            and replied.from_user.id == message.get_bot().id
        )


async def on_prize(update: Update, context: BotContext) -> None:
    """The answer to the prize question: then the winners' buttons."""
    message = update.effective_message
    assert message is not None and message.reply_to_message is not None
    services = context.services
    anonymous = sent_as_group_admin(message)
    user = message.from_user
    if user is None:
        return
    async with services.db() as session:
        form = await forms.awaiting_prize(
            session,
            chat_id=message.chat_id,
            user_id=ANONYMOUS if anonymous else user.id,
            reply_to=message.reply_to_message.message_id,
            now=services.clock(),
        )
    if form is None:
        return  # a reply to some other message of the bot
    target = await _target(context, form, None if anonymous else user.id)
    if target is None:
        return
    prize = forms.clean_prize(message.text or "")
    if not 0 < len(prize) <= MAX_PRIZE:
        await message.reply_text(t(target.lang, "lottery.form_prize_invalid", max=MAX_PRIZE))
        return
    async with services.db.begin() as session:
        await forms.answer(
            session, form.token, now=services.clock(), prize=prize, winners=None, draw=None
        )
    buttons = [
        InlineKeyboardButton(str(n), callback_data=f"lotform:{form.token}:w:{n}")
        for n in forms.WINNER_CHOICES
    ]
    await message.reply_text(
        t(target.lang, "lottery.form_winners", prize=escape(prize)),
        reply_markup=InlineKeyboardMarkup([buttons, [_cancel(target.lang, form.token)]]),
    )


async def on_button(update: Update, context: BotContext) -> None:
    """Winners, draw, Start or Cancel."""
    query = update.callback_query
    assert query is not None
    services = context.services
    match = BUTTON.match(query.data or "")
    async with services.db() as session:
        form = (
            await forms.by_token(session, match.group(1), now=services.clock()) if match else None
        )
    if form is None or match is None:
        await _answer(query, t(_lang(query), "lottery.form_expired"), alert=True)
        return
    if form.user_id not in (ANONYMOUS, query.from_user.id):
        await _answer(query, t(_lang(query), "lottery.form_not_yours"), alert=True)
        return
    target = await _target(context, form, query.from_user.id)
    if target is None:
        await _answer(query, t(_lang(query), "core.not_operator"), alert=True)
        return
    lang = target.lang
    step, value = match.group(2), match.group(3)
    if step == "x":
        async with services.db.begin() as session:
            await forms.finish(session, form.token)
        await _answer(query, t(lang, "lottery.form_cancelled"))
        await _edit(query, t(lang, "lottery.form_cancelled"), None)
        return
    if form.prize is None:
        await _answer(query, t(lang, "lottery.form_expired"), alert=True)
        return
    prize = escape(form.prize)
    winners = int(value) if value is not None and value.isdigit() else None
    if step == "w" and winners in forms.WINNER_CHOICES:
        async with services.db.begin() as session:
            await forms.answer(session, form.token, now=services.clock(), winners=winners)
        buttons = [
            InlineKeyboardButton(
                t(lang, f"lottery.form_draw_{key}"), callback_data=f"lotform:{form.token}:d:{key}"
            )
            for key in forms.DRAW_CHOICES
        ]
        rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
        await _answer(query)
        await _edit(
            query,
            t(lang, "lottery.form_draw", prize=prize, winners=winners),
            InlineKeyboardMarkup([*rows, [_cancel(lang, form.token)]]),
        )
        return
    if step == "d" and value in forms.DRAW_CHOICES and form.winners is not None:
        async with services.db.begin() as session:
            await forms.answer(session, form.token, now=services.clock(), draw=value)
        group = escape(target.chat.title or str(target.chat_id))
        start = InlineKeyboardButton(
            t(lang, "lottery.form_start"), callback_data=f"lotform:{form.token}:go"
        )
        await _answer(query)
        await _edit(
            query,
            t(
                lang,
                "lottery.form_preview",
                prize=prize,
                winners=form.winners,
                draw=t(lang, f"lottery.form_draw_{value}"),
                group=group,
            ),
            InlineKeyboardMarkup([[start, _cancel(lang, form.token)]]),
        )
        return
    if step == "go" and form.winners is not None and form.draw in forms.DRAW_CHOICES:
        async with services.db.begin() as session:  # one press starts it, however many come
            if not await forms.finish(session, form.token):
                await _answer(query, t(lang, "lottery.form_expired"), alert=True)
                return
        now = services.clock()
        try:
            spec = parse_spec(forms.spec_text(form), now=now, tz=target.chat.timezone)
        except SpecError as error:  # the choices are valid; kept for safety
            await _answer(query, t(lang, f"lottery.err_{error.key}", **error.values), alert=True)
            return
        await _answer(query)
        await _edit(query, t(lang, "lottery.form_started", prize=prize), None)
        from handlers.lottery import publish_lottery

        await publish_lottery(update, context, target, spec, now=now)
        return
    await _answer(query, t(lang, "lottery.form_expired"), alert=True)


async def _target(
    context: BotContext, form: forms.LotteryForm, user_id: int | None
) -> Target | None:
    """The form's group, when `user_id` (None: an anonymous administrator) still operates it."""
    services = context.services
    info = await services.chats.get(form.group_id)
    if info is None or not info.active:
        return None
    if user_id is not None and not await services.operators.is_operator(
        context.bot, form.group_id, user_id
    ):
        return None
    return Target(info, user_id or 0, private=form.chat_id != form.group_id)


def _cancel(lang: str, token: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(t(lang, "lottery.form_cancel"), callback_data=f"lotform:{token}:x")


def _lang(query: CallbackQuery) -> str:
    return normalize_language(query.from_user.language_code)


async def _answer(query: CallbackQuery, text: str | None = None, *, alert: bool = False) -> None:
    try:
        await query.answer(text, show_alert=alert)
    except TelegramError as exc:
        log.info("could not answer a lottery form button: %s", exc)


async def _edit(query: CallbackQuery, text: str, markup: InlineKeyboardMarkup | None) -> None:
    try:
        await query.edit_message_text(text, reply_markup=markup)
    except TelegramError as exc:  # deleted, or pressed twice: the form itself is right
        log.info("could not edit a lottery form: %s", exc)


def register(app: Application) -> None:  # type: ignore[type-arg]
    app.add_handler(CallbackQueryHandler(on_button, pattern=r"^lotform:"), FORM_GROUP)
    app.add_handler(
        MessageHandler(filters.UpdateType.MESSAGE & ReplyToBot(), on_prize), FORM_GROUP
    )
