"""Warnings and sanctions, filters, flood settings, reports, inactive members, the mod log.

Every sanction checks, in this order: whom (reply, @username, id), the arguments, that the
target is not an operator / the bot / a Telegram service account, that the bot holds the
right it needs — and explains whichever fails. Channels speaking in the group are banned with
banChatSenderChat.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import timedelta

from sqlalchemy import select
from telegram import (
    ChatMember,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    MessageOriginChannel,
    Update,
    User,
)
from telegram.error import TelegramError
from telegram.ext import Application, CallbackQueryHandler, CommandHandler

from bot import moderation as mod
from bot import sanctions
from bot.activity import SERVICE_ACCOUNTS
from bot.commands import Audience, CommandSpec
from bot.i18n import t
from bot.models import Chat, Member, UserProfile
from bot.moderation import guard_cache
from bot.rules import VerifyArgsError, split_quoted
from bot.sanctions import DELETE, RESTRICT, Problem, bot_has_right
from bot.services import BotContext
from bot.text import escape, mention
from bot.timeparse import format_duration, parse_duration
from handlers import COMMANDS as COMMAND_GROUP
from handlers.common import (
    MemberRef,
    Target,
    group_info,
    is_group,
    operator_command,
    reply,
    resolve_member,
    resolve_target,
    sent_as_group_admin,
)
from handlers.gates import MessageGate

FEATURE = "moderation"
COMMANDS = [
    CommandSpec("warn", Audience.OPERATOR, FEATURE),
    CommandSpec("warns", Audience.MEMBER, FEATURE),
    CommandSpec("unwarn", Audience.OPERATOR, FEATURE),
    CommandSpec("resetwarns", Audience.OPERATOR, FEATURE),
    CommandSpec("setwarnlimit", Audience.OPERATOR, FEATURE),
    CommandSpec("setwarnexpiry", Audience.OPERATOR, FEATURE),
    CommandSpec("mute", Audience.OPERATOR, FEATURE),
    CommandSpec("unmute", Audience.OPERATOR, FEATURE),
    CommandSpec("ban", Audience.OPERATOR, FEATURE),
    CommandSpec("unban", Audience.OPERATOR, FEATURE),
    CommandSpec("kick", Audience.OPERATOR, FEATURE),
    CommandSpec("filter", Audience.OPERATOR, FEATURE),
    CommandSpec("unfilter", Audience.OPERATOR, FEATURE),
    CommandSpec("filters", Audience.MEMBER, FEATURE),
    CommandSpec("setflood", Audience.OPERATOR, FEATURE),
    CommandSpec("report", Audience.MEMBER, FEATURE),
    CommandSpec("inactive", Audience.OPERATOR, FEATURE),
    CommandSpec("modlog", Audience.OPERATOR, FEATURE),
    CommandSpec("setlog", Audience.OPERATOR, FEATURE),
]

PURGE_PREFIX = "inact:"
MAX_REASON = 300
MAX_LISTED = 50
_DURATION_LIKE = re.compile(r"^\d+\S*$")
_ADMIN_CALL = re.compile(r"(?<!\w)@admins?\b", re.IGNORECASE)

# --- small shared pieces ------------------------------------------------------------------


def command_text(message: Message | None) -> str:
    """Everything after the command word, as typed (quotes and spaces kept)."""
    text = (message.text or "") if message else ""
    parts = text.split(maxsplit=1)
    return parts[1] if len(parts) > 1 else ""


def example(command: str) -> str:
    return f"<code>{escape(command)}</code>"


def right_name(lang: str, right: str) -> str:
    return t(lang, f"core.right_{right}")


def who(ref: MemberRef) -> str:
    """HTML for a target in replies: a mention for people, the name for channels."""
    if ref.sender_chat_id is not None or ref.user_id <= 0:
        return escape(ref.name)
    return mention(ref.user_id, ref.name)


def actor_of(update: Update, lang: str) -> tuple[int | None, str]:
    """Who is acting, for the log: the operator, or "anonymous admin"."""
    message = update.effective_message
    if sent_as_group_admin(message):
        return None, t(lang, "moderation.anonymous_admin")
    user = update.effective_user
    return (user.id, user.full_name) if user else (None, "?")


def describe_action(lang: str, action: str, seconds: int | None) -> str:
    """ "mute for 1d", "ban", "kick" … (what a limit or a filter does)."""
    if action in ("mute", "ban") and seconds:
        return t(
            lang,
            f"moderation.summary_{action}",
            duration=format_duration(timedelta(seconds=seconds)),
        )
    return t(lang, f"moderation.summary_{action}_plain")


def done_text(lang: str, action: str, ref: MemberRef, seconds: int | None) -> str:
    """The announcement after a sanction took effect."""
    if action in ("mute", "ban") and seconds:
        return t(
            lang,
            f"moderation.done_{action}",
            name=who(ref),
            duration=format_duration(timedelta(seconds=seconds)),
        )
    suffix = "_forever" if action in ("mute", "ban") else ""
    return t(lang, f"moderation.done_{action}{suffix}", name=who(ref))


def problem_text(lang: str, problem: Problem, ref: MemberRef) -> str:
    if problem is Problem.NO_RIGHTS:
        return t(lang, "moderation.no_rights", right=right_name(lang, RESTRICT))
    return t(lang, f"moderation.problem_{problem.value}", name=who(ref))


def take_duration(words: list[str]) -> tuple[timedelta | None, list[str], str | None]:
    """An optional leading duration: (duration, remaining words, the bad word if unreadable)."""
    if not words:
        return None, words, None
    delta = parse_duration(words[0])
    if delta is not None:
        if not mod.sanction_duration_ok(delta):
            return None, words, words[0]
        return delta, words[1:], None
    if _DURATION_LIKE.match(words[0]):
        return None, words, words[0]
    return None, words, None


async def target_member(
    update: Update, context: BotContext, target: Target, usage: str
) -> tuple[MemberRef | None, list[str]]:
    """Whom the command is about, or a reply explaining how to say it."""
    args = list(context.args or [])
    ref, rest = await resolve_member(update, context, target.chat_id, args)
    if ref is None:
        if args:
            await reply(
                update,
                t(
                    target.lang,
                    "moderation.unknown_user",
                    user=escape(args[0]),
                    example=example(usage),
                ),
            )
        else:
            await reply(update, t(target.lang, "moderation.need_target", example=example(usage)))
    return ref, rest


async def refusal(context: BotContext, target: Target, ref: MemberRef, action: str) -> str | None:
    """Why this member may not get this action (None: go ahead)."""
    lang = target.lang
    if ref.sender_chat_id is not None:
        if action in ("mute", "unmute", "warn"):
            return t(lang, "moderation.channel_not_mutable", name=who(ref))
        return None
    if ref.user_id == context.bot.id:
        return t(lang, "moderation.not_myself")
    if ref.user_id in SERVICE_ACCOUNTS or ref.user_id <= 0:
        return t(lang, "moderation.service_account", name=who(ref))
    if action in ("mute", "ban", "kick", "warn") and await context.services.operators.is_operator(
        context.bot, target.chat_id, ref.user_id
    ):
        return t(lang, "moderation.target_operator", name=who(ref))
    return None


async def enforce(
    context: BotContext,
    chat_id: int,
    lang: str,
    action: str,
    ref: MemberRef,
    *,
    seconds: int | None,
    reason: str,
    actor: tuple[int | None, str],
    log_action: str | None = None,
) -> str:
    """Apply a sanction, log it, and return the announcement (or the explanation)."""
    services = context.services
    if not await bot_has_right(context.bot, services, chat_id, RESTRICT):
        return t(lang, "moderation.no_rights", right=right_name(lang, RESTRICT))
    problem = await sanctions.apply(
        context.bot,
        chat_id,
        action,
        user_id=None if ref.sender_chat_id is not None else ref.user_id,
        sender_chat_id=ref.sender_chat_id,
        until=mod.until(services.clock(), seconds),
    )
    if problem is not None:
        return problem_text(lang, problem, ref)
    await sanctions.record(
        context.bot,
        services,
        chat_id,
        action=log_action or action,
        actor_id=actor[0],
        actor_name=actor[1],
        target_id=ref.sender_chat_id or ref.user_id,
        target_name=ref.name,
        reason=reason,
        duration=seconds if action in ("mute", "ban") else None,
    )
    return done_text(lang, action, ref, seconds)


def with_reason(lang: str, text: str, reason: str) -> str:
    return (
        f"{text}\n{t(lang, 'moderation.reason_line', reason=escape(reason))}" if reason else text
    )


async def warn_member(
    context: BotContext,
    chat_id: int,
    lang: str,
    ref: MemberRef,
    *,
    reason: str,
    actor: tuple[int | None, str],
    log_action: str = "warn",
) -> str:
    """Add a warning (logged); at the limit apply the configured action. Returns the text."""
    services = context.services
    async with services.db.begin() as session:
        outcome = await mod.add_warning(
            session,
            chat_id=chat_id,
            user_id=ref.user_id,
            reason=reason,
            by=actor[0],
            now=services.clock(),
        )
    await sanctions.record(
        context.bot,
        services,
        chat_id,
        action=log_action,
        actor_id=actor[0],
        actor_name=actor[1],
        target_id=ref.user_id,
        target_name=ref.name,
        reason=reason,
    )
    text = with_reason(
        lang,
        t(lang, "moderation.warned", name=who(ref), count=outcome.count, limit=outcome.limit),
        reason,
    )
    if not outcome.reached:
        return text
    seconds = outcome.duration if outcome.action in ("mute", "ban") else None
    result = await enforce(
        context,
        chat_id,
        lang,
        outcome.action,
        ref,
        seconds=seconds,
        reason=t(lang, "moderation.limit_reason", limit=outcome.limit),
        actor=(context.bot.id, context.bot.first_name),
    )
    return (
        f"{text}\n{t(lang, 'moderation.warn_limit', name=who(ref), limit=outcome.limit)}\n{result}"
    )


# --- sanctions ------------------------------------------------------------------------------


async def _sanction(update: Update, context: BotContext, target: Target, action: str) -> None:
    usage = t(target.lang, f"moderation.example_{action}")
    ref, rest = await target_member(update, context, target, usage)
    if ref is None:
        return
    delta = None
    if action in ("mute", "ban"):
        delta, rest, bad = take_duration(rest)
        if bad is not None:
            await reply(
                update,
                t(
                    target.lang,
                    "moderation.bad_duration",
                    value=escape(bad),
                    example=example(usage),
                ),
            )
            return
    reason = " ".join(rest)[:MAX_REASON]
    why_not = await refusal(context, target, ref, action)
    if why_not is not None:
        await reply(update, why_not)
        return
    text = await enforce(
        context,
        target.chat_id,
        target.lang,
        action,
        ref,
        seconds=int(delta.total_seconds()) if delta else None,
        reason=reason,
        actor=actor_of(update, target.lang),
    )
    await reply(update, with_reason(target.lang, text, reason))


@operator_command
async def mute_command(update: Update, context: BotContext, target: Target) -> None:
    """/mute [user] [30m] [reason] — take every permission away (for a while)."""
    await _sanction(update, context, target, "mute")


@operator_command
async def unmute_command(update: Update, context: BotContext, target: Target) -> None:
    """/unmute [user] — give back the group's default permissions."""
    await _sanction(update, context, target, "unmute")


@operator_command
async def ban_command(update: Update, context: BotContext, target: Target) -> None:
    """/ban [user] [7d] [reason]."""
    await _sanction(update, context, target, "ban")


@operator_command
async def unban_command(update: Update, context: BotContext, target: Target) -> None:
    """/unban [user]."""
    await _sanction(update, context, target, "unban")


@operator_command
async def kick_command(update: Update, context: BotContext, target: Target) -> None:
    """/kick [user] [reason] — remove; they may join again."""
    await _sanction(update, context, target, "kick")


# --- warnings -------------------------------------------------------------------------------


@operator_command
async def warn_command(update: Update, context: BotContext, target: Target) -> None:
    """/warn [user] [reason]."""
    usage = t(target.lang, "moderation.example_warn")
    ref, rest = await target_member(update, context, target, usage)
    if ref is None:
        return
    why_not = await refusal(context, target, ref, "warn")
    if why_not is not None:
        await reply(update, why_not)
        return
    reason = " ".join(rest)[:MAX_REASON]
    text = await warn_member(
        context,
        target.chat_id,
        target.lang,
        ref,
        reason=reason,
        actor=actor_of(update, target.lang),
    )
    await reply(update, text)


async def warns_command(update: Update, context: BotContext) -> None:
    """/warns [user] — a member's active warnings (your own without a user)."""
    if is_group(update):
        info = await group_info(update, context)
        target = Target(info, update.effective_user.id if update.effective_user else 0, False)
    else:
        found = await resolve_target(update, context)
        if found is None:
            return
        target = found
    args = list(context.args or [])
    message = update.effective_message
    if not args and (message is None or message.reply_to_message is None) and not target.private:
        user = update.effective_user
        ref: MemberRef | None = MemberRef(user.id, user.full_name) if user else None
    else:
        ref, _ = await target_member(update, context, target, "/warns @username")
    if ref is None:
        return
    services = context.services
    now = services.clock()
    async with services.db() as session:
        warnings = await mod.active_warnings(session, target.chat_id, ref.user_id, now)
        settings = await mod.get_settings(session, target.chat_id)
    lang = target.lang
    if not warnings:
        await reply(update, t(lang, "moderation.warns_none", name=who(ref)))
        return
    tz = target.chat.timezone
    lines = [
        t(
            lang,
            "moderation.warns_list",
            name=who(ref),
            count=len(warnings),
            limit=settings.warn_limit,
        )
    ]
    for number, warning in enumerate(warnings, 1):
        day = warning.created_at.astimezone(tz).strftime("%Y-%m-%d")
        reason = escape(warning.reason) if warning.reason else "—"
        lines.append(f"{number}. {day} · {reason}")
    if settings.warn_expiry_days:
        lines.append(t(lang, "moderation.warns_expiry", days=settings.warn_expiry_days))
    await reply(update, "\n".join(lines))


@operator_command
async def unwarn_command(update: Update, context: BotContext, target: Target) -> None:
    """/unwarn [user] — withdraw the latest warning."""
    ref, _ = await target_member(update, context, target, "/unwarn @username")
    if ref is None:
        return
    services = context.services
    async with services.db.begin() as session:
        left = await mod.remove_last_warning(
            session, target.chat_id, ref.user_id, services.clock()
        )
    if left is None:
        await reply(update, t(target.lang, "moderation.unwarn_none", name=who(ref)))
        return
    actor = actor_of(update, target.lang)
    await sanctions.record(
        context.bot,
        services,
        target.chat_id,
        action="unwarn",
        actor_id=actor[0],
        actor_name=actor[1],
        target_id=ref.user_id,
        target_name=ref.name,
    )
    await reply(update, t(target.lang, "moderation.unwarned", name=who(ref), count=left))


@operator_command
async def resetwarns_command(update: Update, context: BotContext, target: Target) -> None:
    """/resetwarns [user] — clear every warning of a member."""
    ref, _ = await target_member(update, context, target, "/resetwarns @username")
    if ref is None:
        return
    services = context.services
    async with services.db.begin() as session:
        removed = await mod.reset_warnings(session, target.chat_id, ref.user_id)
    actor = actor_of(update, target.lang)
    await sanctions.record(
        context.bot,
        services,
        target.chat_id,
        action="resetwarns",
        actor_id=actor[0],
        actor_name=actor[1],
        target_id=ref.user_id,
        target_name=ref.name,
    )
    await reply(update, t(target.lang, "moderation.resetwarns_done", name=who(ref), count=removed))


@operator_command
async def setwarnlimit_command(update: Update, context: BotContext, target: Target) -> None:
    """/setwarnlimit N [mute|kick|ban] [duration]."""
    args = list(context.args or [])
    lang = target.lang
    low, high = mod.WARN_LIMIT_RANGE
    usage = t(lang, "moderation.setwarnlimit_usage", low=low, high=high)
    if not args or not args[0].isdigit() or not low <= int(args[0]) <= high:
        await reply(update, usage)
        return
    values: dict[str, object] = {"warn_limit": int(args[0])}
    if len(args) >= 2:
        action = args[1].lower()
        if action not in mod.SANCTIONS:
            await reply(update, usage)
            return
        values["warn_action"] = action
        values["warn_duration"] = None
        if len(args) >= 3:
            delta = parse_duration(args[2])
            if action == "kick" or delta is None or not mod.sanction_duration_ok(delta):
                await reply(
                    update,
                    t(
                        lang,
                        "moderation.bad_duration",
                        value=escape(args[2]),
                        example=example("/setwarnlimit 3 mute 1d"),
                    ),
                )
                return
            values["warn_duration"] = int(delta.total_seconds())
        if len(args) > 3:
            await reply(update, usage)
            return
    async with context.services.db.begin() as session:
        await mod.save_settings(session, target.chat_id, **values)
        settings = await mod.get_settings(session, target.chat_id)
    action_text = describe_action(lang, settings.warn_action, settings.warn_duration)
    await reply(
        update,
        t(lang, "moderation.setwarnlimit_done", limit=settings.warn_limit, action=action_text),
    )


@operator_command
async def setwarnexpiry_command(update: Update, context: BotContext, target: Target) -> None:
    """/setwarnexpiry 30d | off — warnings stop counting after that long."""
    args = list(context.args or [])
    lang = target.lang
    if len(args) == 1 and args[0].lower() in ("off", "never", "关闭"):
        async with context.services.db.begin() as session:
            await mod.save_settings(session, target.chat_id, warn_expiry_days=None)
        await reply(update, t(lang, "moderation.warnexpiry_off"))
        return
    delta = parse_duration(args[0]) if len(args) == 1 else None
    days = -(-int(delta.total_seconds()) // 86400) if delta else 0
    if delta is None or delta < timedelta(days=1) or days > 365:
        await reply(update, t(lang, "moderation.warnexpiry_usage"))
        return
    async with context.services.db.begin() as session:
        await mod.save_settings(session, target.chat_id, warn_expiry_days=days)
    await reply(update, t(lang, "moderation.warnexpiry_done", days=days))


# --- filters --------------------------------------------------------------------------------


def parse_filter_args(text: str) -> tuple[str | None, str, int | None, str | None]:
    """`PATTERN [action] [duration]` → (pattern, action, seconds, bad duration word)."""
    tokens = split_quoted(text)
    action, seconds = "delete", None
    if len(tokens) >= 3 and tokens[-2].lower() in ("mute", "ban"):
        delta = parse_duration(tokens[-1])
        if delta is None or not mod.sanction_duration_ok(delta):
            return None, action, None, tokens[-1]
        action, seconds, tokens = tokens[-2].lower(), int(delta.total_seconds()), tokens[:-2]
    elif len(tokens) >= 2 and tokens[-1].lower() in mod.FILTER_ACTIONS:
        action, tokens = tokens[-1].lower(), tokens[:-1]
    if action == "mute" and seconds is None:
        seconds = int(mod.DEFAULT_FILTER_MUTE.total_seconds())
    pattern = mod.normalize_pattern(" ".join(tokens)) if tokens else None
    return pattern, action, seconds, None


@operator_command
async def filter_command(update: Update, context: BotContext, target: Target) -> None:
    """/filter WORD|phrase|*wildcard* [delete|warn|mute|ban] [duration]."""
    lang = target.lang
    raw = command_text(update.effective_message)
    try:
        pattern, action, seconds, bad = parse_filter_args(raw)
    except VerifyArgsError:
        await reply(update, t(lang, "moderation.filter_usage"))
        return
    if bad is not None:
        await reply(
            update,
            t(
                lang,
                "moderation.bad_duration",
                value=escape(bad),
                example=example("/filter spam mute 1h"),
            ),
        )
        return
    if not raw.strip():
        await reply(update, t(lang, "moderation.filter_usage"))
        return
    if pattern is None:
        await reply(update, t(lang, "moderation.filter_bad_pattern", limit=mod.MAX_PATTERN_LENGTH))
        return
    services = context.services
    async with services.db.begin() as session:
        added = await mod.add_filter(
            session,
            chat_id=target.chat_id,
            pattern=pattern,
            action=action,
            duration=seconds,
            by=target.user_id,
            now=services.clock(),
        )
    if not added:
        await reply(update, t(lang, "moderation.filter_too_many", limit=mod.MAX_FILTERS))
        return
    guard_cache(services).invalidate(target.chat_id)
    text = t(
        lang,
        "moderation.filter_added",
        pattern=escape(pattern),
        action=describe_action(lang, action, seconds),
    )
    needed = [DELETE] + ([RESTRICT] if action in ("warn", "mute", "ban") else [])
    for right in needed:
        if not await bot_has_right(context.bot, services, target.chat_id, right):
            text += "\n" + t(lang, "moderation.needs_right", right=right_name(lang, right))
    await reply(update, text)


@operator_command
async def unfilter_command(update: Update, context: BotContext, target: Target) -> None:
    """/unfilter PATTERN."""
    lang = target.lang
    raw = command_text(update.effective_message)
    try:
        tokens = split_quoted(raw)
    except VerifyArgsError:
        tokens = raw.split()
    pattern = mod.normalize_pattern(" ".join(tokens)) if tokens else None
    if pattern is None:
        await reply(update, t(lang, "moderation.unfilter_usage"))
        return
    async with context.services.db.begin() as session:
        removed = await mod.remove_filter(session, target.chat_id, pattern)
    if not removed:
        await reply(update, t(lang, "moderation.unfilter_unknown", pattern=escape(pattern)))
        return
    guard_cache(context.services).invalidate(target.chat_id)
    await reply(update, t(lang, "moderation.unfilter_done", pattern=escape(pattern)))


async def filters_command(update: Update, context: BotContext) -> None:
    """/filters — the group's banned words and what each does."""
    if is_group(update):
        info = await group_info(update, context)
    else:
        found = await resolve_target(update, context)
        if found is None:
            return
        info = found.chat
    lang = info.language
    async with context.services.db() as session:
        items = await mod.list_filters(session, info.id)
    if not items:
        await reply(update, t(lang, "moderation.filters_none"))
        return
    lines = [t(lang, "moderation.filters_title", group=escape(info.title), count=len(items))]
    for item in items:
        action = describe_action(lang, item.action, item.duration)
        lines.append(f"• <code>{escape(item.pattern)}</code> → {action}")
    await reply(update, "\n".join(lines))


# --- flood ----------------------------------------------------------------------------------


@operator_command
async def setflood_command(update: Update, context: BotContext, target: Target) -> None:
    """/setflood N [seconds] [mute|kick|ban|warn] [duration] · /setflood off."""
    args = [a.lower() for a in context.args or []]
    lang = target.lang
    services = context.services
    low, high = mod.FLOOD_LIMIT_RANGE
    usage = t(lang, "moderation.flood_usage", low=low, high=high, most=mod.FLOOD_WINDOW_RANGE[1])
    if args and args[0] in ("off", "0", "关闭"):
        async with services.db.begin() as session:
            await mod.save_settings(session, target.chat_id, flood_limit=None)
        guard_cache(services).invalidate(target.chat_id)
        await reply(update, t(lang, "moderation.flood_off"))
        return
    if not args:
        async with services.db() as session:
            current = await mod.get_settings(session, target.chat_id)
        status = (
            _flood_summary(lang, current)
            if current.flood_limit
            else t(lang, "moderation.flood_status_off")
        )
        await reply(update, f"{status}\n\n{usage}")
        return
    try:
        values = mod.parse_flood_args(args)
    except mod.ArgumentError as exc:
        if exc.value is None:
            await reply(update, usage)
        else:
            await reply(
                update,
                t(
                    lang,
                    "moderation.bad_duration",
                    value=escape(exc.value),
                    example=example("/setflood 5 10 mute 10m"),
                ),
            )
        return
    async with services.db.begin() as session:
        await mod.save_settings(session, target.chat_id, **values)
        settings = await mod.get_settings(session, target.chat_id)
    guard_cache(services).invalidate(target.chat_id)
    text = _flood_summary(lang, settings)
    if not await bot_has_right(context.bot, services, target.chat_id, RESTRICT):
        text += "\n" + t(lang, "moderation.needs_right", right=right_name(lang, RESTRICT))
    await reply(update, text)


def _flood_summary(lang: str, settings: mod.ModerationSettings) -> str:
    return t(
        lang,
        "moderation.flood_done",
        limit=settings.flood_limit,
        seconds=settings.flood_window,
        action=describe_action(lang, settings.flood_action, settings.flood_duration),
    )


# --- reports --------------------------------------------------------------------------------


def calls_admins(message: Message) -> bool:
    """Text that calls the admins ("@admin", "@admins"); a cheap "@" test first."""
    text = message.text
    return text is not None and "@" in text and _ADMIN_CALL.search(text) is not None


def message_link(chat_id: int, username: str | None, message_id: int) -> str | None:
    """A t.me link to a group message (supergroups only)."""
    if username:
        return f"https://t.me/{username}/{message_id}"
    text = str(chat_id)
    if text.startswith("-100"):
        return f"https://t.me/c/{text[4:]}/{message_id}"
    return None


async def _admin_contacts(context: BotContext, chat_id: int) -> list[tuple[int, str, bool]]:
    """(id, name, has started the bot) for each administrator of the chat."""
    services = context.services
    admins = sorted(await services.operators.admins(context.bot, chat_id))
    if not admins:
        return []
    async with services.db() as session:
        names = dict(
            (
                await session.execute(
                    select(Member.user_id, Member.display_name).where(
                        Member.chat_id == chat_id, Member.user_id.in_(admins)
                    )
                )
            ).all()
        )
        profiles = {
            p.user_id: p
            for p in await session.scalars(
                select(UserProfile).where(UserProfile.user_id.in_(admins))
            )
        }
    contacts = []
    for admin_id in admins:
        profile = profiles.get(admin_id)
        name = names.get(admin_id) or (profile.first_name if profile else "") or "admin"
        contacts.append((admin_id, name, profile is not None and profile.started_at is not None))
    return contacts


async def report_command(update: Update, context: BotContext) -> None:
    """/report [reason] (reply) or "@admin": tell the operators, rate-limited per member."""
    message = update.effective_message
    if message is None:
        return
    if not is_group(update):
        lang = await _lang(update, context)
        await reply(update, t(lang, "moderation.report_in_group"))
        return
    reporter = message.from_user
    if reporter is None or message.sender_chat is not None:
        return
    info = await group_info(update, context)
    lang = info.language
    is_command = bool(message.text and message.text.startswith("/"))
    reported = message.reply_to_message
    if is_command and reported is None:
        await reply(update, t(lang, "moderation.report_usage"))
        return
    if reported is None:
        reported = message
    services = context.services
    now = services.clock()
    async with services.db() as session:
        last = await mod.last_report(session, info.id, reporter.id)
    if last is not None and now - last < mod.REPORT_INTERVAL:
        wait = mod.REPORT_INTERVAL - (now - last)
        minutes = max(1, -(-int(wait.total_seconds()) // 60))
        await reply(update, t(lang, "moderation.report_wait", minutes=minutes))
        return
    reason = command_text(message) if is_command else (message.text or "")
    reason = reason[:MAX_REASON]
    if reported.sender_chat is not None:
        target_id, target_name = reported.sender_chat.id, reported.sender_chat.title or "?"
        target_html = escape(target_name)
    else:
        author: User | None = reported.from_user
        target_id = author.id if author else None
        target_name = author.full_name if author else "?"
        target_html = mention(author.id, author.full_name) if author else "?"
    await sanctions.record(
        context.bot,
        services,
        info.id,
        action="report",
        actor_id=reporter.id,
        actor_name=reporter.full_name,
        target_id=target_id,
        target_name=target_name,
        reason=reason,
    )
    async with services.db() as session:
        chat_row = await session.get(Chat, info.id)
    link = message_link(info.id, chat_row.username if chat_row else None, reported.message_id)
    text = t(
        lang,
        "moderation.report_private",
        group=escape(info.title),
        reporter=mention(reporter.id, reporter.full_name),
        target=target_html,
    )
    if reason:
        text += "\n" + t(lang, "moderation.reason_line", reason=escape(reason))
    if link:
        text += "\n" + t(lang, "moderation.report_link", link=escape(link))
    unreached = []
    for admin_id, name, started in await _admin_contacts(context, info.id):
        if started:
            try:
                await context.bot.send_message(admin_id, text)
                continue
            except TelegramError:
                pass
        unreached.append(mention(admin_id, name))
    if unreached:
        ack = t(lang, "moderation.report_ack_mentions", mentions=", ".join(unreached[:20]))
    else:
        ack = t(lang, "moderation.report_ack")
    await reply(update, ack)


async def _lang(update: Update, context: BotContext) -> str:
    from handlers.common import reply_language

    return await reply_language(update, context)


# --- inactive members -----------------------------------------------------------------------


@operator_command
async def inactive_command(update: Update, context: BotContext, target: Target) -> None:
    """/inactive 30d [kick] — members silent that long; kick after an operator confirms."""
    args = [a.lower() for a in context.args or []]
    lang = target.lang
    delta = parse_duration(args[0]) if args else None
    kick = len(args) == 2 and args[1] in ("kick", "踢", "移除")
    if delta is None or delta < mod.MIN_INACTIVE or len(args) > 2 or (len(args) == 2 and not kick):
        await reply(update, t(lang, "moderation.inactive_usage"))
        return
    services = context.services
    now = services.clock()
    cutoff = now - delta
    period = escape(args[0])
    exclude = await services.operators.admins(context.bot, target.chat_id)
    exclude |= set(services.operators.owners)
    async with services.db() as session:
        members = await mod.inactive_members(session, target.chat_id, cutoff, exclude=exclude)
        chat_row = await session.get(Chat, target.chat_id)
    tz = target.chat.timezone
    if not members:
        text = t(lang, "moderation.inactive_none", period=period)
    else:
        lines = [t(lang, "moderation.inactive_title", period=period, count=len(members))]
        for member in members[:MAX_LISTED]:
            if member.last_active is not None:
                key, moment = "moderation.inactive_line_active", member.last_active
            else:
                key, moment = (
                    "moderation.inactive_line_never",
                    member.joined_at or member.first_seen,
                )
            lines.append(
                t(
                    lang,
                    key,
                    name=escape(member.display_name or "?"),
                    id=member.user_id,
                    date=moment.astimezone(tz).strftime("%Y-%m-%d"),
                )
            )
        if len(members) > MAX_LISTED:
            lines.append(t(lang, "moderation.inactive_more", count=len(members) - MAX_LISTED))
        text = "\n".join(lines)
    watching = chat_row.sees_all_since if chat_row and chat_row.sees_all_messages else None
    partial = watching is None or watching > cutoff
    if watching is None:
        text += "\n\n" + t(lang, "moderation.inactive_blind")
    elif partial:
        since = watching.astimezone(tz).strftime("%Y-%m-%d %H:%M")
        text += "\n\n" + t(lang, "moderation.inactive_partial", since=since)
    if not kick or not members:
        await reply(update, text)
        return
    if partial:
        await reply(
            update, text + "\n\n" + t(lang, "moderation.inactive_kick_refused", period=period)
        )
        return
    if not await bot_has_right(context.bot, services, target.chat_id, RESTRICT):
        await reply(
            update,
            text + "\n\n" + t(lang, "moderation.no_rights", right=right_name(lang, RESTRICT)),
        )
        return
    prompt_chat = update.effective_chat.id if update.effective_chat else target.chat_id
    async with services.db.begin() as session:
        purge = mod.InactivePurge(
            chat_id=target.chat_id,
            requested_by=target.user_id,
            cutoff=cutoff,
            period_days=max(1, int(delta.total_seconds() // 86400)),
            created_at=now,
            prompt_chat_id=prompt_chat,
        )
        session.add(purge)
        await session.flush()
        purge_id = purge.id
    keyboard = InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    t(lang, "moderation.inactive_confirm_button", count=len(members)),
                    callback_data=f"{PURGE_PREFIX}{purge_id}:yes",
                ),
                InlineKeyboardButton(
                    t(lang, "moderation.inactive_cancel_button"),
                    callback_data=f"{PURGE_PREFIX}{purge_id}:no",
                ),
            ]
        ]
    )
    text += "\n\n" + t(lang, "moderation.inactive_confirm", count=len(members))
    await reply(update, text, reply_markup=keyboard)


async def purge_pressed(update: Update, context: BotContext) -> None:
    """Confirmation button of /inactive … kick: an operator of that group, in that chat."""
    query = update.callback_query
    services = context.services
    raw = (query.data or "")[len(PURGE_PREFIX) :]
    purge_id, _, choice = raw.partition(":")
    async with services.db() as session:
        purge = await session.get(mod.InactivePurge, int(purge_id)) if purge_id.isdigit() else None
    info = await services.chats.get(purge.chat_id) if purge else None
    lang = info.language if info else "en"
    if (
        purge is None
        or info is None
        or query.message is None
        or query.message.chat.id != purge.prompt_chat_id
        or choice not in ("yes", "no")
    ):
        await query.answer(t(lang, "moderation.inactive_expired"), show_alert=True)
        return
    if not await services.operators.is_operator(context.bot, purge.chat_id, query.from_user.id):
        await query.answer(t(lang, "moderation.only_operators"), show_alert=True)
        return
    now = services.clock()
    if choice == "no":
        async with services.db.begin() as session:
            cancelled = await mod.cancel_purge(session, purge.id)  # type: ignore[arg-type]
        if not cancelled:
            await query.answer(t(lang, "moderation.inactive_expired"), show_alert=True)
            return
        await query.answer()
        await query.edit_message_text(t(lang, "moderation.inactive_cancelled"))
        return
    async with services.db.begin() as session:
        claimed = await mod.claim_purge(session, purge.id, now)  # type: ignore[arg-type]
    if claimed is None:
        await query.answer(t(lang, "moderation.inactive_expired"), show_alert=True)
        return
    await query.answer()
    removed, candidates = await _purge(context, claimed, query.from_user)
    async with services.db.begin() as session:
        await mod.finish_purge(session, claimed.id, len(removed))  # type: ignore[arg-type]
        for member in removed:
            await mod.log_entry(
                session,
                chat_id=claimed.chat_id,
                now=services.clock(),
                action="kick",
                actor_id=query.from_user.id,
                actor_name=query.from_user.full_name,
                target_id=member.user_id,
                target_name=member.display_name,
                reason=t(lang, "moderation.inactive_reason", days=claimed.period_days),
            )
        settings = await mod.get_settings(session, claimed.chat_id)
    if settings.log_chat_id is not None and removed:
        summary = mod.ModLogEntry(
            chat_id=claimed.chat_id,
            created_at=now,
            action="kick",
            actor_id=query.from_user.id,
            actor_name=query.from_user.full_name,
            target_id=None,
            target_name=t(lang, "moderation.inactive_members", count=len(removed)),
            reason=t(lang, "moderation.inactive_reason", days=claimed.period_days),
        )
        await sanctions.copy_to_log_channel(context.bot, services, settings.log_chat_id, summary)
    await query.edit_message_text(
        t(lang, "moderation.inactive_done", removed=len(removed), count=candidates)
    )


async def _purge(
    context: BotContext, purge: mod.InactivePurge, by: User
) -> tuple[list[Member], int]:
    """Remove the members still inactive since the cutoff (operators never)."""
    services = context.services
    exclude = await services.operators.admins(context.bot, purge.chat_id)
    exclude |= set(services.operators.owners) | {by.id}
    async with services.db() as session:
        members = await mod.inactive_members(session, purge.chat_id, purge.cutoff, exclude=exclude)
    removed = []
    for member in members:
        problem = await sanctions.kick(context.bot, purge.chat_id, user_id=member.user_id)
        if problem is Problem.NO_RIGHTS:
            break
        if problem is None:
            removed.append(member)
    return removed, len(members)


# --- the log --------------------------------------------------------------------------------


@operator_command
async def modlog_command(update: Update, context: BotContext, target: Target) -> None:
    """/modlog [user] — the latest moderation entries, of one member or of everyone."""
    target_id = None
    message = update.effective_message
    if context.args or (message and message.reply_to_message and not target.private):
        ref, _ = await target_member(update, context, target, "/modlog @username")
        if ref is None:
            return
        target_id = ref.sender_chat_id or ref.user_id
    async with context.services.db() as session:
        entries = await mod.recent_entries(session, target.chat_id, target_id=target_id)
    lang = target.lang
    if not entries:
        await reply(update, t(lang, "moderation.modlog_none"))
        return
    lines = [
        t(lang, "moderation.modlog_title", group=escape(target.chat.title), count=len(entries))
    ]
    lines += [sanctions.describe_entry(lang, entry, target.chat.timezone) for entry in entries]
    await reply(update, "\n".join(lines))


@operator_command
async def setlog_command(update: Update, context: BotContext, target: Target) -> None:
    """/setlog CHAT_ID | off, or reply /setlog to a message forwarded from the log channel."""
    lang = target.lang
    args = list(context.args or [])
    message = update.effective_message
    services = context.services
    if args and args[0].lower() in ("off", "关闭"):
        async with services.db.begin() as session:
            await mod.save_settings(session, target.chat_id, log_chat_id=None)
        await reply(update, t(lang, "moderation.setlog_off"))
        return
    log_chat: int | None = None
    if args and args[0].lstrip("-").isdigit():
        log_chat = int(args[0])
    elif not args and message is not None and message.reply_to_message is not None:
        origin = message.reply_to_message.forward_origin
        if isinstance(origin, MessageOriginChannel):
            log_chat = origin.chat.id
    if log_chat is None or log_chat == target.chat_id:
        await reply(update, t(lang, "moderation.setlog_usage"))
        return
    if not await _administers(context, log_chat, update):
        await reply(update, t(lang, "moderation.setlog_not_admin"))
        return
    try:
        sent = await context.bot.send_message(
            log_chat, t(lang, "moderation.setlog_hello", group=escape(target.chat.title))
        )
    except TelegramError:
        await reply(update, t(lang, "moderation.setlog_failed"))
        return
    async with services.db.begin() as session:
        await mod.save_settings(session, target.chat_id, log_chat_id=log_chat)
    name = sent.chat.title or sent.chat.username or str(log_chat)
    await reply(
        update,
        t(lang, "moderation.setlog_done", group=escape(target.chat.title), chat=escape(name)),
    )


async def _administers(context: BotContext, chat_id: int, update: Update) -> bool:
    """Whether the person sending the command administers `chat_id` too (so nobody can point
    their log at somebody else's chat). Anonymous admins can't be checked, so they can't."""
    user = update.effective_user
    if user is None or sent_as_group_admin(update.effective_message):
        return False
    if user.id in context.services.operators.owners:
        return True
    try:
        member = await context.bot.get_chat_member(chat_id, user.id)
    except TelegramError:
        return False
    return member.status in (ChatMember.OWNER, ChatMember.ADMINISTRATOR)


# One CommandHandler for all of this module's commands: every group message is checked
# against each handler, so one check instead of nineteen keeps the hot path short.
HANDLERS = {
    "warn": warn_command,
    "warns": warns_command,
    "unwarn": unwarn_command,
    "resetwarns": resetwarns_command,
    "setwarnlimit": setwarnlimit_command,
    "setwarnexpiry": setwarnexpiry_command,
    "mute": mute_command,
    "unmute": unmute_command,
    "ban": ban_command,
    "unban": unban_command,
    "kick": kick_command,
    "filter": filter_command,
    "unfilter": unfilter_command,
    "filters": filters_command,
    "setflood": setflood_command,
    "report": report_command,
    "inactive": inactive_command,
    "modlog": modlog_command,
    "setlog": setlog_command,
}


def command_name(message: Message | None) -> str:
    """`/Ban@bot 1d` → `ban`."""
    text = (message.text or "") if message else ""
    return text.split(maxsplit=1)[0][1:].split("@", 1)[0].lower() if text else ""


Callback = Callable[[Update, BotContext], Awaitable[None]]


def dispatcher(handlers: dict[str, Callback]) -> Callback:
    """A callback that runs the handler of the command it was given."""

    async def dispatch(update: Update, context: BotContext) -> None:
        await handlers[command_name(update.effective_message)](update, context)

    return dispatch


def register(app: Application) -> None:
    app.add_handlers(
        [
            CommandHandler(list(HANDLERS), dispatcher(HANDLERS)),
            CallbackQueryHandler(purge_pressed, pattern=f"^{PURGE_PREFIX}"),
            MessageGate(calls_admins, report_command),  # "@admin" in a group message
        ],
        group=COMMAND_GROUP,
    )
