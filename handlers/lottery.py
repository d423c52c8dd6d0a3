"""Lotteries (抽奖): /lottery, the Join button and keyword (口令) entries, /draw, /reroll,
/cancel, /lotteries and /entrants.

Every entry is checked here and in `bot.lottery.enter`, never trusted from the button: the
callback data only names a lottery, which must be open and belong to the chat the button was
pressed in; the presser must be a person, in the group, meeting the conditions (otherwise a
private "why not" via answerCallbackQuery show_alert). The keyword handler sees every group
message, so its filter is one dict lookup (chats with an open keyword lottery) — it runs in
its own handler group so that a keyword which is also, say, the check-in word does both.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from telegram import CallbackQuery, InputFile, Message, ReactionTypeEmoji, Update, User
from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, MessageHandler, filters

from bot.activity import is_countable_user
from bot.chats import GROUP_TYPES, ChatInfo
from bot.commands import Audience, CommandSpec
from bot.i18n import normalize_language, t
from bot.lottery import (
    MAX_KEYWORD,
    MAX_REROLL,
    Entry,
    EntryResult,
    KeywordIndex,
    Lottery,
    LotteryEntry,
    LotterySpec,
    Refusal,
    Reroll,
    SpecError,
    State,
    cancel,
    chat_lotteries,
    create_lottery,
    enter,
    entrants,
    fixed_positions,
    get_lottery,
    load_press,
    parse_spec,
    ranking,
    reroll,
    set_message,
    ticket,
)
from bot.sending import send_text
from bot.services import BotContext
from bot.text import escape
from handlers import COMMANDS as COMMAND_GROUP
from handlers import lottery_form
from handlers.common import (
    Target,
    group_info,
    is_group,
    operator_command,
    reply,
    resolve_target,
    sent_as_group_admin,
)
from handlers.lottery_form import open_form
from schedules.lottery import (
    LIST_WHEN,
    describe_duration,
    draw_and_announce,
    draw_when,
    edit_post,
    post_keyboard,
    render_post,
    render_reroll,
    request_count_refresh,
    runtime_of,
    schedule_draw,
    unschedule_draw,
)

log = logging.getLogger(__name__)

FEATURE = "lottery"
COMMANDS = [
    CommandSpec("lottery", Audience.OPERATOR, FEATURE),
    CommandSpec("lotteries", Audience.MEMBER, FEATURE),
    CommandSpec("draw", Audience.OPERATOR, FEATURE),
    CommandSpec("reroll", Audience.OPERATOR, FEATURE),
    CommandSpec("cancel", Audience.OPERATOR, FEATURE),
    CommandSpec("entrants", Audience.OPERATOR, FEATURE),
]
# Keyword entries run after the commands group, in a group of their own: every handler
# group gets its chance at an update, so a keyword that another feature also reacts to
# (e.g. the check-in word) still enters the lottery.
KEYWORD_GROUP = COMMAND_GROUP + 1
JOIN_PATTERN = re.compile(r"^lottery:join:(\d{1,18})$")
MAX_KEYWORD_MESSAGE = MAX_KEYWORD + 8
RECENT_DAYS = 30
ENTERED_REACTION = "🎉"
MAX_ANSWER = 200  # characters Telegram shows in a callback answer


# --- entering ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    """What became of an attempt to enter: an entry result, or a reason to refuse early."""

    result: EntryResult | None = None
    refusal: Refusal | None = None  # not a member, bot, invalid, try later


def why_not(lang: str, refusal: Refusal) -> str:
    """The private explanation of a refusal."""
    values = dict(refusal.values)
    key = refusal.key
    if key == "why_member":
        values["need"] = describe_duration(lang, values["need"])
        if values.get("since") is None:
            key = "why_member_unknown"
    if key == "why_joined" and values.get("joined") is None:
        key = "why_joined_unknown"
    values = {
        name: value.isoformat() if hasattr(value, "isoformat") else value
        for name, value in values.items()
    }
    return t(lang, f"lottery.{key}", **values)


async def in_group(
    context: BotContext, chat_id: int, user_id: int, status: str | None
) -> bool | None:
    """Whether the person is in the group: the roster status (already read, None: not in
    the roster) if it says so, else Telegram (None: unknown).

    Public groups can be viewed — and their buttons pressed — by people who are not members.
    """
    if status == "member":
        return True
    try:
        member = await context.bot.get_chat_member(chat_id, user_id)
    except TelegramError as exc:
        log.info("cannot check membership of %s in %s: %s", user_id, chat_id, exc)
        return None
    if member.status == "restricted":
        return bool(getattr(member, "is_member", False))
    return member.status in ("creator", "administrator", "member")


async def try_enter(
    context: BotContext, info: ChatInfo, lottery_id: int, user: User, *, when: Any, via: str
) -> Attempt:
    """Enter `user` into lottery `lottery_id` of the group `info`, with every check."""
    services = context.services
    if not is_countable_user(user.id, user.is_bot):
        return Attempt(refusal=Refusal("bots"))
    # One transaction when the roster knows the member (nearly always): the lottery, their
    # status and entry are read once, and the entry written. Otherwise Telegram is asked
    # outside any transaction, and the entry made in a second one.
    result = None
    async with services.hot() as session:
        press = await load_press(session, lottery_id, user.id)
        lottery = press.lottery
        if lottery is None or lottery.chat_id != info.id:
            return Attempt(refusal=Refusal("invalid"))
        if lottery.state != State.OPEN:
            return Attempt(EntryResult(Entry.CLOSED))
        if press.status == "member":
            result = await enter(
                session,
                lottery_id=lottery_id,
                user_id=user.id,
                name=user.full_name,
                username=user.username,
                now=when,
                tz=info.timezone,
                via=via,
                press=press,
            )
    if result is None:
        member = await in_group(context, info.id, user.id, press.status)
        if member is None:
            return Attempt(refusal=Refusal("try_later"))
        if not member:
            return Attempt(refusal=Refusal("not_member"))
        async with services.hot() as session:
            result = await enter(
                session,
                lottery_id=lottery_id,
                user_id=user.id,
                name=user.full_name,
                username=user.username,
                now=when,
                tz=info.timezone,
                via=via,
            )
    if result.status is Entry.ENTERED:
        request_count_refresh(context.application, lottery_id)
    return Attempt(result)


async def after_entry(context: BotContext, lottery_id: int, attempt: Attempt) -> None:
    """The N-th entrant of a "draw at N entries" lottery draws it (after they were answered)."""
    if attempt.result is not None and attempt.result.completes:
        await draw_and_announce(context.application, lottery_id)


async def answer(query: CallbackQuery, text: str, *, alert: bool = False) -> None:
    """Answer a button press (Telegram shows at most 200 characters)."""
    if len(text) > MAX_ANSWER:
        text = text[: MAX_ANSWER - 1] + "…"
    try:
        await query.answer(text, show_alert=alert)
    except TelegramError as exc:  # too late (the query expired) or the like: nothing to do
        log.info("could not answer a lottery button: %s", exc)


async def on_join(update: Update, context: BotContext) -> None:
    """The Join button: answered privately (a toast, or an alert saying why not)."""
    query = update.callback_query
    assert query is not None
    match = JOIN_PATTERN.match(query.data or "")
    message = query.message
    info = await context.services.chats.get(message.chat.id) if message is not None else None
    lang = info.language if info else normalize_language(query.from_user.language_code)
    if match is None or info is None or info.type not in GROUP_TYPES:
        await answer(query, t(lang, "lottery.invalid"), alert=True)
        return
    lottery_id = int(match.group(1))
    if context.services.opt_outs.excluded(info.id, query.from_user.id):
        await answer(query, t(lang, "privacy.opted_out_lottery"), alert=True)
        return
    attempt = await try_enter(
        context, info, lottery_id, query.from_user, when=context.services.clock(), via="button"
    )
    result = attempt.result
    if attempt.refusal is not None:
        await answer(query, t(lang, f"lottery.{attempt.refusal.key}"), alert=True)
    elif result is not None and result.status is Entry.ENTERED:
        await answer(query, t(lang, "lottery.joined", count=result.count))
    elif result is not None and result.status is Entry.ALREADY:
        await answer(query, t(lang, "lottery.already"))
    elif result is not None and result.status is Entry.REFUSED and result.refusal is not None:
        await answer(query, why_not(lang, result.refusal), alert=True)
    else:
        await answer(query, t(lang, "lottery.closed"), alert=True)
    await after_entry(context, lottery_id, attempt)


class LotteryKeyword(filters.UpdateFilter):
    """A new text message in a chat with an open keyword lottery, equal to its keyword.

    For every other chat (nearly all messages) the cost is one dict lookup.
    """

    __slots__ = ("_index",)

    def __init__(self, index: KeywordIndex) -> None:
        super().__init__(name="LotteryKeyword")
        self._index = index

    def filter(self, update: Update) -> bool:
        message = update.message
        if message is None:
            return False
        words = self._index.by_chat.get(message.chat.id)
        if not words:
            return False
        text = message.text
        return (
            text is not None
            and len(text) <= MAX_KEYWORD_MESSAGE
            and bool(self._index.lookup(message.chat.id, text))
        )


async def _tell_privately(context: BotContext, message: Message, user: User, text: str) -> None:
    """Explain a refusal to the member privately; in the group if they never started the bot."""
    try:
        await context.bot.send_message(user.id, text)
        return
    except (Forbidden, BadRequest):
        pass
    await reply_to(message, text)


async def reply_to(message: Message, text: str) -> None:
    try:
        await message.reply_text(text, do_quote=True)
    except TelegramError as exc:
        log.info("could not answer in %s: %s", message.chat_id, exc)


async def on_keyword(update: Update, context: BotContext) -> None:
    """口令: a member sent the keyword of an open lottery of this group."""
    message = update.message
    assert message is not None and message.text is not None
    user = message.from_user
    if (
        user is None
        or message.sender_chat is not None
        or not is_countable_user(user.id, user.is_bot)
        or context.services.opt_outs.excluded(message.chat_id, user.id)
    ):
        return
    info = await group_info(update, context)
    index = runtime_of(context.application).keywords
    for lottery_id in index.lookup(message.chat_id, message.text):
        attempt = await try_enter(
            context, info, lottery_id, user, when=message.date, via="keyword"
        )
        result = attempt.result
        if result is not None and result.status is Entry.ENTERED:
            try:
                await message.set_reaction(ReactionTypeEmoji(ENTERED_REACTION))
            except TelegramError as exc:
                log.debug("no reaction in %s: %s", message.chat_id, exc)
            await after_entry(context, lottery_id, attempt)
            continue
        refusal = attempt.refusal or (result.refusal if result else None)
        if refusal is None or refusal.key in ("invalid", "bots"):
            continue  # already in, closed meanwhile, or not for people: nothing to say
        reason = (
            why_not(info.language, refusal)
            if refusal.key.startswith("why_")
            else t(info.language, f"lottery.{refusal.key}")
        )
        text = t(
            info.language,
            "lottery.keyword_refused",
            name=escape(user.full_name),
            id=lottery_id,
            reason=reason,
        )
        await _tell_privately(context, message, user, text)


# --- operators: creating -----------------------------------------------------------------------


def command_text(message: Message | None) -> str:
    """Everything after the command word, newlines and spacing kept."""
    if message is None or not message.text:
        return ""
    parts = message.text.split(maxsplit=1)
    return parts[1].strip() if len(parts) > 1 else ""


@operator_command
async def lottery_command(update: Update, context: BotContext, target: Target) -> None:
    """/lottery PRIZE | winners N | draw in 2h | …: start a lottery in the group."""
    services, lang = context.services, target.lang
    text = command_text(update.effective_message)
    if not text:  # the guided form (handlers/lottery_form.py)
        await open_form(update, context, target)
        return
    now = services.clock()
    try:
        spec = parse_spec(text, now=now, tz=target.chat.timezone)
    except SpecError as error:
        values = {k: escape(v) if isinstance(v, str) else v for k, v in error.values.items()}
        detail = t(lang, f"lottery.err_{error.key}", **values)
        await reply(update, f"{detail}\n\n{t(lang, 'lottery.examples')}")
        return
    await publish_lottery(update, context, target, spec, now=now)


async def publish_lottery(
    update: Update, context: BotContext, target: Target, spec: LotterySpec, *, now: datetime
) -> None:
    """Create the lottery and post it in the group (the one-line command and the form)."""
    services, lang, app = context.services, target.lang, context.application
    runtime = runtime_of(app)
    async with services.db.begin() as session:
        lottery = await create_lottery(
            session,
            chat_id=target.chat_id,
            spec=spec,
            seed=runtime.seed_source(),
            created_by=target.user_id or None,
            now=now,
        )
    assert lottery.id is not None
    try:
        sent = await send_text(
            context.bot,
            services,
            target.chat_id,
            render_post(lottery, lang, target.chat.timezone),
            reply_markup=post_keyboard(lottery, lang),
        )
    except TelegramError as exc:
        log.warning("could not post lottery %s: %s", lottery.id, exc)
        sent = []
    async with services.db.begin() as session:
        if not sent:
            await cancel(session, lottery.id, now=now)
        else:
            await set_message(session, lottery.id, sent[0].message_id)
    if not sent:
        await reply(update, t(lang, "lottery.post_failed"))
        return
    if lottery.draw_at is not None:
        schedule_draw(app, lottery.id, lottery.draw_at)
    if lottery.keyword:
        runtime.keywords.add(sent[0].chat_id, lottery.keyword, lottery.id)
    if target.private:
        group = escape(target.chat.title or str(target.chat_id))
        await reply(update, t(lang, "lottery.created_private", id=lottery.id, group=group))


# --- operators: acting on one lottery ----------------------------------------------------------


async def lottery_argument(
    update: Update, context: BotContext, target: Target, command: str
) -> tuple[Lottery | None, list[str]]:
    """The lottery named by the first argument (`12` or `#12`), if it is in the target group."""
    args = list(context.args or ())
    raw = args[0].lstrip("#") if args else ""
    if not raw.isdigit() or len(raw) > 18:
        await reply(update, t(target.lang, "lottery.id_usage", command=command))
        return None, args
    async with context.services.db() as session:
        lottery = await get_lottery(session, int(raw))
    if lottery is None or lottery.chat_id != target.chat_id:
        await reply(update, t(target.lang, "lottery.not_found", id=int(raw)))
        return None, args
    return lottery, args[1:]


def _group(target: Target) -> str:
    return escape(target.chat.title or str(target.chat_id))


@operator_command
async def draw_command(update: Update, context: BotContext, target: Target) -> None:
    """/draw ID: draw now (the announcement goes to the group)."""
    lottery, _ = await lottery_argument(update, context, target, "draw")
    if lottery is None:
        return
    assert lottery.id is not None
    lang = target.lang
    if lottery.state == State.OPEN and await draw_and_announce(context.application, lottery.id):
        if target.private:
            await reply(
                update, t(lang, "lottery.drawn_private", id=lottery.id, group=_group(target))
            )
        return
    async with context.services.db() as session:
        current = await get_lottery(session, lottery.id)
    state = current.state if current else lottery.state
    key = {
        State.DRAWING: "lottery.draw_in_progress",
        State.CANCELLED: "lottery.draw_cancelled",
    }.get(State(state), "lottery.draw_already")
    await reply(update, t(lang, key, id=lottery.id))


@operator_command
async def reroll_command(update: Update, context: BotContext, target: Target) -> None:
    """/reroll ID [n]: n replacement winners, the next in the same ranking."""
    lottery, rest = await lottery_argument(update, context, target, "reroll")
    if lottery is None:
        return
    assert lottery.id is not None
    lang, services = target.lang, context.services
    count = rest[0] if rest else "1"
    if len(rest) > 1 or not count.isdigit() or not 1 <= int(count) <= MAX_REROLL:
        await reply(update, t(lang, "lottery.reroll_usage", max=MAX_REROLL))
        return
    async with services.db.begin() as session:
        result = await reroll(session, lottery.id, count=int(count))
    if result.status is Reroll.IN_PROGRESS:
        await reply(update, t(lang, "lottery.draw_in_progress", id=lottery.id))
        return
    if result.status is Reroll.NOT_DRAWN or result.outcome is None:
        await reply(update, t(lang, "lottery.reroll_not_drawn", id=lottery.id))
        return
    text = render_reroll(result.outcome, result.round, lang)
    await send_text(context.bot, services, target.chat_id, text)
    if target.private:
        await reply(update, t(lang, "lottery.reroll_private", id=lottery.id, group=_group(target)))


@operator_command
async def cancel_command(update: Update, context: BotContext, target: Target) -> None:
    """/cancel ID: cancel an open lottery."""
    lottery, _ = await lottery_argument(update, context, target, "cancel")
    if lottery is None:
        return
    assert lottery.id is not None
    services, lang = context.services, target.lang
    async with services.db.begin() as session:
        done = await cancel(session, lottery.id, now=services.clock())
        current = await get_lottery(session, lottery.id)
    assert current is not None
    if not done:
        state = t(lang, f"lottery.state_{current.state}")
        await reply(update, t(lang, "lottery.cancel_not_open", id=lottery.id, state=state))
        return
    unschedule_draw(context.application, lottery.id)
    runtime_of(context.application).keywords.discard(lottery.id)
    await edit_post(context.bot, services, current)
    await reply(update, t(lang, "lottery.cancelled", id=lottery.id))


def _csv_cell(value: object) -> str:
    """Plain text for spreadsheets: a leading = + - @ would be read as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") and not text[1:].isdigit() else text


def entrants_csv(lottery: Lottery, rows: list[LotteryEntry]) -> bytes:
    """The entrant list; once the seed is revealed, in ranking order with each one's HMAC."""
    assert lottery.id is not None
    out = io.StringIO()
    writer = csv.writer(out)
    header = ["user_id", "name", "username", "entered_at", "via"]
    if lottery.revealed:
        header += ["rank", "hmac_sha256", "outcome", "round"]
        fixed = fixed_positions(rows)
        order = ranking(lottery.seed_bytes, lottery.id, [e.user_id for e in rows], fixed)
        position = {user_id: index for index, user_id in enumerate(order, start=1)}
        rows = sorted(rows, key=lambda e: position[e.user_id])
    writer.writerow(header)
    for entry in rows:
        line = [
            entry.user_id,
            _csv_cell(entry.name),
            _csv_cell(entry.username),
            entry.entered_at.isoformat(),
            entry.via,
        ]
        if lottery.revealed:
            line += [
                position[entry.user_id],
                ""
                if entry.user_id in fixed
                else ticket(lottery.seed_bytes, lottery.id, entry.user_id).hex(),
                entry.outcome or "",
                "" if entry.round is None else entry.round,
            ]
        writer.writerow(line)
    return out.getvalue().encode("utf-8-sig")


@operator_command
async def entrants_command(update: Update, context: BotContext, target: Target) -> None:
    """/entrants ID: the count where asked; the full list as a CSV file, privately."""
    lottery, _ = await lottery_argument(update, context, target, "entrants")
    if lottery is None:
        return
    assert lottery.id is not None
    lang = target.lang
    async with context.services.db() as session:
        rows = await entrants(session, lottery.id)
    count_text = t(lang, "lottery.entrants_count", id=lottery.id, count=len(rows))
    document = InputFile(
        entrants_csv(lottery, rows), filename=f"lottery-{lottery.id}-entrants.csv"
    )
    caption = t(lang, "lottery.entrants_caption", id=lottery.id, count=len(rows))
    message = update.effective_message
    if not sent_as_group_admin(message):
        try:
            await context.bot.send_document(target.user_id, document, caption=caption)
        except (Forbidden, BadRequest):
            pass
        else:
            suffix = "" if target.private else "\n" + t(lang, "lottery.entrants_sent_private")
            await reply(update, count_text + suffix)
            return
    await reply(update, count_text + "\n" + t(lang, "lottery.entrants_here"))
    if message is not None:
        try:
            await message.reply_document(document, caption=caption, do_quote=False)
        except TelegramError as exc:
            log.warning("could not send entrants of lottery %s: %s", lottery.id, exc)


# --- members: the list -------------------------------------------------------------------------


async def lotteries_command(update: Update, context: BotContext) -> None:
    """/lotteries: open and recent lotteries of the group."""
    if is_group(update):
        info = await group_info(update, context)
    else:
        target = await resolve_target(update, context)
        if target is None:
            return
        info = target.chat
    services, lang = context.services, info.language
    since = services.clock() - timedelta(days=RECENT_DAYS)
    async with services.db() as session:
        found = await chat_lotteries(session, info.id, recent_since=since)
    if not found:
        await reply(update, t(lang, "lottery.list_none"))
        return
    lines = [t(lang, "lottery.list_title")]
    for lottery in found:
        prize = escape(lottery.prize)
        if lottery.state == State.OPEN:
            when = draw_when(lottery, lang, info.timezone, keys=LIST_WHEN)
            lines.append(
                t(
                    lang,
                    "lottery.list_open",
                    id=lottery.id,
                    prize=prize,
                    count=lottery.entry_count,
                    when=when,
                )
            )
        else:
            state = t(lang, f"lottery.state_{lottery.state}")
            lines.append(t(lang, "lottery.list_done", id=lottery.id, prize=prize, state=state))
    await reply(update, "\n".join(lines))


# --- wiring ------------------------------------------------------------------------------------


COMMAND_CALLBACKS: dict[str, Callable[[Update, BotContext], Awaitable[None]]] = {
    "lottery": lottery_command,
    "lotteries": lotteries_command,
    "draw": draw_command,
    "reroll": reroll_command,
    "cancel": cancel_command,
    "entrants": entrants_command,
}


async def route_command(update: Update, context: BotContext) -> None:
    """One CommandHandler for the six commands: PTB checks every handler against every
    message, so one check instead of six keeps the hot path cheap."""
    message = update.effective_message
    word = (message.text or "").split(maxsplit=1)[0] if message else ""
    name = word[1:].split("@", 1)[0].lower()
    callback = COMMAND_CALLBACKS.get(name)
    if callback is not None:
        await callback(update, context)


def register(app: Application) -> None:
    runtime = runtime_of(app)
    new_only = filters.UpdateType.MESSAGE  # an edited command is not a second command
    app.add_handlers(
        [
            CommandHandler(list(COMMAND_CALLBACKS), route_command, filters=new_only),
            CallbackQueryHandler(on_join, pattern=r"^lottery:"),
        ],
        group=COMMAND_GROUP,
    )
    app.add_handler(MessageHandler(LotteryKeyword(runtime.keywords), on_keyword), KEYWORD_GROUP)
    lottery_form.register(app)
