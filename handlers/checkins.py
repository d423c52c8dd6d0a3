"""Check-ins and points: /checkin (or 签到 / 打卡 / "check in"), /makeup (补签), /me, /top,
and for operators /points and /checkinconfig.

The keyword handler sees every group message, so its filter is one length check and one
set lookup against the keywords of all groups (`RulesCache.keywords`); the callback then
applies the group's own rules. Everything else is an ordinary command.
"""

from __future__ import annotations

import logging
import re

from telegram import Message, Update, User
from telegram.ext import Application, CommandHandler, MessageHandler, filters

from bot import points
from bot.activity import is_countable_user
from bot.chats import GROUP_TYPES, ChatInfo
from bot.checkins import (
    MAKEUP_KEYWORDS,
    MAX_KEYWORD_LENGTH,
    SETTING_ALIASES,
    CheckinResult,
    ConfigError,
    Makeup,
    MakeupResult,
    Rules,
    RulesCache,
    apply_setting,
    check_in,
    checkin_day,
    checkin_leaderboard,
    checkins_since,
    day_start,
    display_names,
    make_up,
    member_stats,
    month_start,
    normalize_keyword,
    save_rules,
    week_start,
)
from bot.commands import Audience, CommandSpec
from bot.i18n import t
from bot.services import BotContext, services_of
from bot.text import escape
from handlers import COMMANDS as COMMAND_GROUP
from handlers import invites
from handlers.common import (
    Target,
    group_info,
    is_group,
    operator_command,
    reply,
    reply_language,
    resolve_member,
)

log = logging.getLogger(__name__)

FEATURE = "checkins"
COMMANDS = [
    CommandSpec("checkin", Audience.MEMBER, FEATURE),
    CommandSpec("makeup", Audience.MEMBER, FEATURE),
    CommandSpec("me", Audience.MEMBER, FEATURE),
    CommandSpec("top", Audience.MEMBER, FEATURE),
    CommandSpec("points", Audience.OPERATOR, FEATURE),
    CommandSpec("checkinconfig", Audience.OPERATOR, FEATURE),
]
SERVICE = "checkins"
KEYWORD_REFRESH_SECONDS = 60
# Longest text worth normalising: a keyword plus some spaces and punctuation around it.
MAX_KEYWORD_MESSAGE = MAX_KEYWORD_LENGTH + 8
TOP_DEFAULT, TOP_MAX = 10, 100
MAX_GRANT = 1_000_000
MAX_REASON = 200
MEDALS = ("🥇", "🥈", "🥉")


def counted(lang: str, key: str, n: int) -> str:
    """`key` with a number; English has a `_one` form for 1 ("1 point", "2 points")."""
    return t(lang, f"{key}_one" if n == 1 else key, n=n)


def rules_cache(context: BotContext) -> RulesCache:
    return context.services.extras[SERVICE]


class CheckinKeyword(filters.UpdateFilter):
    """A new group text message that is, after trimming, some group's check-in keyword.

    Cheap for the messages that are not (nearly all): no regex, one set lookup.
    """

    __slots__ = ("_cache",)

    def __init__(self, cache: RulesCache) -> None:
        super().__init__(name="CheckinKeyword")
        self._cache = cache

    def filter(self, update: Update) -> bool:
        message = update.message
        if message is None:
            return False
        text = message.text
        if text is None or len(text) > MAX_KEYWORD_MESSAGE:
            return False
        return message.chat.type in GROUP_TYPES and normalize_keyword(text) in self._cache.keywords


def _member(message: Message) -> User | None:
    """The person behind a message, or None for channels, anonymous admins and bots."""
    user = message.from_user
    if user is None or message.sender_chat is not None:
        return None
    return user if is_countable_user(user.id, user.is_bot) else None


async def _opted_out(update: Update, context: BotContext, info: ChatInfo, user: User) -> bool:
    """Someone who asked to be forgotten (bot.privacy) is told so, and nothing is recorded."""
    if not context.services.opt_outs.excluded(info.id, user.id):
        return False
    await reply(update, t(info.language, "privacy.opted_out_checkin"))
    return True


# --- checking in ------------------------------------------------------------------------------


def _parts(lang: str, result: CheckinResult | MakeupResult) -> str:
    names = []
    for award in result.awards:
        names.append(t(lang, f"checkins.part_{award.kind}", points=award.points, days=award.days))
    return t(lang, "checkins.parts_separator").join(names)


def render_checkin(lang: str, name: str, result: CheckinResult) -> str:
    if not result.new:
        return t(
            lang, "checkins.already", name=escape(name), streak=result.streak, total=result.total
        )
    return t(
        lang,
        "checkins.done",
        name=escape(name),
        position=result.position,
        earned=result.earned,
        parts=_parts(lang, result),
        streak=result.streak,
        total=result.total,
    )


async def do_checkin(update: Update, context: BotContext, info: ChatInfo, rules: Rules) -> None:
    message = update.effective_message
    user = _member(message)
    if user is None or await _opted_out(update, context, info, user):
        return
    async with context.services.hot() as session:
        result = await check_in(
            session,
            chat_id=info.id,
            user_id=user.id,
            name=user.full_name,
            username=user.username,
            when=message.date,
            tz=info.timezone,
            rules=rules,
        )
    await reply(update, render_checkin(info.language, user.full_name, result))


def render_makeup(lang: str, name: str, result: MakeupResult) -> str:
    values = {
        "name": escape(name),
        "day": result.day.isoformat(),
        "cost": result.cost,
        "total": result.total,
        "used": result.used,
        "limit": result.limit,
        "streak": result.streak,
    }
    text = t(lang, f"checkins.makeup_{result.status.value}", **values)
    if result.status is Makeup.DONE and result.awards:
        text += "\n" + t(lang, "checkins.makeup_bonus", parts=_parts(lang, result))
    return text


async def do_makeup(update: Update, context: BotContext, info: ChatInfo, rules: Rules) -> None:
    message = update.effective_message
    user = _member(message)
    if user is None or await _opted_out(update, context, info, user):
        return
    async with context.services.db.begin() as session:
        result = await make_up(
            session,
            chat_id=info.id,
            user_id=user.id,
            when=message.date,
            tz=info.timezone,
            rules=rules,
        )
    await reply(update, render_makeup(info.language, user.full_name, result))


async def on_keyword(update: Update, context: BotContext) -> None:
    """签到 / 打卡 / "check in" (the group's keywords), or 补签."""
    word = normalize_keyword(update.message.text or "")
    info = await group_info(update, context)
    rules = await rules_cache(context).get(info.id)
    if not rules.enabled:
        return
    if word in rules.keyword_set:
        await do_checkin(update, context, info, rules)
    elif word in MAKEUP_KEYWORDS:
        await do_makeup(update, context, info, rules)


async def _group_only(update: Update, context: BotContext) -> ChatInfo | None:
    if is_group(update):
        return await group_info(update, context)
    await reply(update, t(await reply_language(update, context), "checkins.group_only"))
    return None


async def checkin_command(update: Update, context: BotContext) -> None:
    """/checkin: check in for today."""
    info = await _group_only(update, context)
    if info is None:
        return
    rules = await rules_cache(context).get(info.id)
    if not rules.enabled:
        await reply(update, t(info.language, "checkins.disabled"))
        return
    await do_checkin(update, context, info, rules)


async def makeup_command(update: Update, context: BotContext) -> None:
    """/makeup: spend points to fill yesterday's gap (补签)."""
    info = await _group_only(update, context)
    if info is None:
        return
    await do_makeup(update, context, info, await rules_cache(context).get(info.id))


# --- reading -----------------------------------------------------------------------------------


async def me(update: Update, context: BotContext) -> None:
    """/me: my points, rank, streaks and check-ins."""
    info = await _group_only(update, context)
    if info is None:
        return
    user = _member(update.effective_message)
    if user is None:
        return
    rules = await rules_cache(context).get(info.id)
    today = checkin_day(context.services.clock(), info.timezone, rules.day_start_hour)
    async with context.services.hot(write=False) as session:
        stats = await member_stats(session, chat_id=info.id, user_id=user.id, today=today)
    lang = info.language
    lines = [
        t(lang, "checkins.me_title", name=escape(user.full_name)),
        t(lang, "checkins.me_points", points=stats.points)
        + (t(lang, "checkins.me_rank", rank=stats.rank) if stats.rank else ""),
        t(lang, "checkins.me_streak", streak=stats.streak, best=stats.best_streak),
        t(lang, "checkins.me_checkins", month=stats.month_checkins, total=stats.total_checkins),
        t(lang, "checkins.me_today_yes" if stats.checked_in_today else "checkins.me_today_no"),
    ]
    await reply(update, "\n".join(lines))


PERIODS = {
    "week": "week",
    "w": "week",
    "weekly": "week",
    "周": "week",
    "本周": "week",
    "month": "month",
    "m": "month",
    "monthly": "month",
    "月": "month",
    "本月": "month",
    "all": "all",
    "total": "all",
    "全部": "all",
    "总": "all",
}
METRICS = {
    "points": "points",
    "point": "points",
    "p": "points",
    "积分": "points",
    "checkins": "checkins",
    "checkin": "checkins",
    "c": "checkins",
    "签到": "checkins",
}


def parse_top_args(args: list[str]) -> tuple[str, str, int] | str:
    """(period, metric, size), or the offending word."""
    period, metric, size = "all", "points", TOP_DEFAULT
    for word in args:
        lowered = word.lower()
        if lowered in PERIODS:
            period = PERIODS[lowered]
        elif lowered in METRICS:
            metric = METRICS[lowered]
        elif lowered.isdigit() and 1 <= int(lowered) <= TOP_MAX:
            size = int(lowered)
        else:
            return word
    return period, metric, size


async def top(update: Update, context: BotContext) -> None:
    """/top [week|month|all] [points|checkins] [N]: the leaderboard (/top invites: referrals)."""
    info = await _group_only(update, context)
    if info is None:
        return
    lang = info.language
    if invites.wants_top_invites(list(context.args or ())):
        await invites.top_invites(update, context, info, list(context.args or ()))
        return
    parsed = parse_top_args(list(context.args or ()))
    if isinstance(parsed, str):
        await reply(update, t(lang, "checkins.top_usage", word=escape(parsed), max=TOP_MAX))
        return
    period, metric, size = parsed
    rules = await rules_cache(context).get(info.id)
    now = context.services.clock()
    today = checkin_day(now, info.timezone, rules.day_start_hour)
    first_day = {"week": week_start(today), "month": month_start(today), "all": None}[period]
    since = day_start(first_day, info.timezone, rules.day_start_hour) if first_day else None
    user = _member(update.effective_message)
    async with context.services.hot(write=False) as session:
        if metric == "points":
            board = await points.leaderboard(session, chat_id=info.id, since=since, limit=size)
        else:
            board = await checkin_leaderboard(
                session, chat_id=info.id, since=first_day, limit=size
            )
        names = await display_names(session, chat_id=info.id, user_ids=[s.user_id for s in board])
        mine = None
        if user is not None and all(s.user_id != user.id for s in board):
            if metric == "checkins":
                mine = await checkins_since(
                    session, chat_id=info.id, user_id=user.id, since=first_day
                )
            elif since is None:
                mine = await points.balance(session, chat_id=info.id, user_id=user.id)
            else:
                mine = await points.points_since(
                    session, chat_id=info.id, user_id=user.id, since=since
                )
    title = t(
        lang,
        "checkins.top_title",
        metric=t(lang, f"checkins.metric_{metric}"),
        period=t(lang, f"checkins.period_{period}"),
    )
    if not board:
        await reply(update, f"{title}\n{t(lang, 'checkins.top_empty')}")
        return
    lines = [title]
    for place, standing in enumerate(board, start=1):
        marker = MEDALS[place - 1] if place <= len(MEDALS) else f"{place}."
        name = names.get(standing.user_id) or t(
            lang, "checkins.unknown_member", id=standing.user_id
        )
        value = counted(lang, f"checkins.value_{metric}", standing.points)
        lines.append(f"{marker} {escape(name)} — {value}")
    if mine:
        value = counted(lang, f"checkins.value_{metric}", mine)
        lines.append(t(lang, "checkins.top_you", value=value))
    await reply(update, "\n".join(lines))


# --- operators ---------------------------------------------------------------------------------

_AMOUNT = re.compile(r"^[+-]?\d+$")
_SIGNED = re.compile(r"^[+-]\d+$")


def _split_amount(args: list[str]) -> tuple[str | None, list[str]]:
    """Take the amount from the front (`+50 @user`) or after the member (`@user +50`)."""
    if args and _AMOUNT.match(args[0]) and not (len(args) > 1 and _SIGNED.match(args[1])):
        return args[0], args[1:]
    return None, args


@operator_command
async def points_command(update: Update, context: BotContext, target: Target) -> None:
    """/points +50 @user reason — grant (or -50: deduct) points; /points @user — their balance."""
    lang, chat_id = target.lang, target.chat_id
    args = list(context.args or ())
    amount_text, rest = _split_amount(args)
    message = update.effective_message
    replying = message is not None and message.reply_to_message is not None and not target.private
    if amount_text is None and not rest and not replying:
        await reply(update, t(lang, "checkins.points_usage"))
        return
    member, rest = await resolve_member(update, context, chat_id, rest)
    if member is None:
        await reply(update, t(lang, "checkins.points_who"))
        return
    if member.is_bot or member.sender_chat_id is not None:
        await reply(update, t(lang, "checkins.points_not_person", name=member.label))
        return
    if amount_text is None and rest and _AMOUNT.match(rest[0]):
        amount_text, rest = rest[0], rest[1:]
    if amount_text is None:
        if rest:
            await reply(update, t(lang, "checkins.points_bad_amount", value=escape(rest[0])))
            return
        async with context.services.db() as session:
            current = await points.balance(session, chat_id=chat_id, user_id=member.user_id)
        await reply(update, t(lang, "checkins.points_balance", name=member.label, total=current))
        return
    amount = int(amount_text)
    if amount == 0 or abs(amount) > MAX_GRANT:
        await reply(update, t(lang, "checkins.points_range", max=MAX_GRANT))
        return
    reason = " ".join(rest).strip()[:MAX_REASON]
    ledger = {
        "chat_id": chat_id,
        "user_id": member.user_id,
        "reason": reason or "operator adjustment",
        "source": "admin",
        # The command message itself: a replayed or re-delivered update changes nothing.
        "source_key": f"{message.chat_id}:{message.message_id}",
        "now": context.services.clock(),
        "actor_id": target.user_id or None,
    }
    async with context.services.db.begin() as session:
        if amount > 0:
            outcome = (
                points.Spend.SPENT
                if await points.award(session, amount=amount, **ledger)
                else points.Spend.DUPLICATE
            )
        else:
            outcome = await points.spend(session, amount=-amount, **ledger)
        total = await points.balance(session, chat_id=chat_id, user_id=member.user_id)
    if outcome is points.Spend.INSUFFICIENT:
        text = t(lang, "checkins.points_insufficient", name=member.label, total=total)
    elif outcome is points.Spend.DUPLICATE:
        text = t(lang, "checkins.points_duplicate", name=member.label, total=total)
    else:
        key = "checkins.points_done_reason" if reason else "checkins.points_done"
        text = t(
            lang,
            key,
            name=member.label,
            amount=f"{amount:+d}",
            reason=escape(reason),
            total=total,
        )
    await reply(update, text)


def render_config(lang: str, info: ChatInfo, rules: Rules) -> str:
    milestones = t(lang, "checkins.parts_separator").join(
        t(lang, "checkins.part_milestone", days=days, points=bonus)
        for days, bonus in rules.milestones
    ) or t(lang, "checkins.config_none")
    makeup = (
        t(lang, "checkins.config_makeup", cost=rules.makeup_cost, limit=rules.makeup_limit)
        if rules.makeup_limit
        else t(lang, "checkins.config_makeup_off")
    )
    return t(
        lang,
        "checkins.config_show",
        group=escape(info.title or str(info.id)),
        status=t(lang, "checkins.config_on" if rules.enabled else "checkins.config_off"),
        hour=f"{rules.day_start_hour:02d}:00",
        zone=info.timezone.key,
        base=rules.base_points,
        streak=rules.streak_bonus,
        cap=rules.streak_cap,
        first=rules.first_bonus,
        milestones=milestones,
        makeup=makeup,
        keywords=escape(", ".join(rules.keywords)),
    )


@operator_command
async def checkinconfig(update: Update, context: BotContext, target: Target) -> None:
    """/checkinconfig [KEY VALUE | on | off | reset]: show or change the check-in rules."""
    services, lang = context.services, target.lang
    cache = rules_cache(context)
    args = list(context.args or ())
    current = await cache.get(target.chat_id)
    if not args:
        await reply(update, render_config(lang, target.chat, current))
        return
    name, value = args[0], " ".join(args[1:])
    if name.lower() in SETTING_ALIASES and not value:
        name, value = SETTING_ALIASES[name.lower()]
    try:
        if name.lower() in {"reset", "default", "defaults"} and not value:
            changed = Rules()
        else:
            changed = apply_setting(current, name, value)
    except ConfigError as error:
        values = {name: escape(value) for name, value in error.values.items()}
        detail = t(lang, f"checkins.{error.key}", **values)
        await reply(update, f"{detail}\n\n{t(lang, 'checkins.config_examples')}")
        return
    async with services.db.begin() as session:
        await save_rules(session, target.chat_id, changed, now=services.clock())
    cache.remember(target.chat_id, changed)
    await reply(
        update,
        t(lang, "checkins.config_saved") + "\n\n" + render_config(lang, target.chat, changed),
    )


# --- wiring ------------------------------------------------------------------------------------


async def _refresh_keywords(context: BotContext) -> None:
    await rules_cache(context).refresh_keywords()


async def on_startup(app: Application) -> None:
    """Learn every group's keywords, and keep learning them (other processes may set some)."""
    cache: RulesCache = services_of(app).extras[SERVICE]
    await cache.refresh_keywords()
    if app.job_queue is not None:
        app.job_queue.run_repeating(
            _refresh_keywords,
            interval=KEYWORD_REFRESH_SECONDS,
            first=KEYWORD_REFRESH_SECONDS,
            name="checkins:keywords",
        )


def register(app: Application) -> None:
    services = services_of(app)
    cache = services.extras.setdefault(SERVICE, RulesCache(services.db, services.engine))
    new_only = filters.UpdateType.MESSAGE  # an edited command or keyword is not a second try
    app.add_handlers(
        [
            CommandHandler("checkin", checkin_command, filters=new_only),
            CommandHandler("makeup", makeup_command, filters=new_only),
            CommandHandler("me", me, filters=new_only),
            CommandHandler("top", top, filters=new_only),
            CommandHandler("points", points_command, filters=new_only),
            CommandHandler("checkinconfig", checkinconfig, filters=new_only),
            MessageHandler(CheckinKeyword(cache), on_keyword),
        ],
        group=COMMAND_GROUP,
    )
