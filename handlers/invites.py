"""Invite links and referrals: /invite, /invites, /myinvite, /referralpoints, /top invites,
and the join requests whose link attributes the join that follows (bot.invites)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from telegram import ChatInviteLink, Message, Update
from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.ext import Application, ChatJoinRequestHandler, CommandHandler

from bot import invites as domain
from bot.activity import is_countable_user
from bot.chats import GROUP_TYPES, ChatInfo
from bot.checkins import display_names
from bot.commands import Audience, CommandSpec
from bot.i18n import t
from bot.kpi import local_today
from bot.services import BotContext
from bot.text import escape
from handlers import COMMANDS as COMMAND_GROUP
from handlers import TRACKING
from handlers.common import Target, group_info, is_group, operator_command, reply, user_language

log = logging.getLogger(__name__)

FEATURE = "invites"
COMMANDS = [
    CommandSpec("invite", Audience.OPERATOR, FEATURE),
    CommandSpec("invites", Audience.OPERATOR, FEATURE),
    CommandSpec("myinvite", Audience.MEMBER, FEATURE),
    CommandSpec("referralpoints", Audience.OPERATOR, FEATURE),
]
MAX_REFERRAL_POINTS = 10_000
TOP_WORDS = {"invites", "invite", "referrals", "邀请"}
TOP_DEFAULT, TOP_MAX = 10, 100


def command_text(message: Message | None) -> str:
    """Everything after the command word, as typed (quotes kept)."""
    text = (message.text or "") if message else ""
    parts = text.split(maxsplit=1)
    return parts[1] if len(parts) > 1 else ""


def _telegram_problem(lang: str, exc: TelegramError) -> str:
    """Why Telegram refused a link: mostly the bot lacking the invite right."""
    return t(lang, "invites.telegram_refused", reason=escape(exc.message))


# --- /invite ------------------------------------------------------------------------------


@operator_command
async def invite_command(update: Update, context: BotContext, target: Target) -> None:
    """/invite NAME [limit N] [expires 7d] [approval], or /invite revoke NAME."""
    lang = target.lang
    try:
        spec = domain.parse_invite_args(command_text(update.effective_message))
    except domain.InviteArgsError as exc:
        await reply(
            update, t(lang, exc.key, **exc.values) + "\n\n" + t(lang, "invites.invite_usage")
        )
        return
    if isinstance(spec, domain.RevokeSpec):
        await _revoke(update, context, target, spec.name)
        return
    services = context.services
    async with services.db() as session:
        existing = await domain.link_by_name(session, target.chat_id, spec.name)
    if existing is not None:
        await reply(update, t(lang, "invites.name_taken", name=escape(spec.name)))
        return
    now = services.clock()
    expire = now + spec.expires_in if spec.expires_in else None
    try:
        created = await context.bot.create_chat_invite_link(
            target.chat_id,
            name=spec.name,
            expire_date=expire,
            member_limit=spec.member_limit,
            creates_join_request=spec.approval or None,
        )
    except (BadRequest, Forbidden) as exc:
        await reply(update, _telegram_problem(lang, exc))
        return
    link = domain.InviteLink(
        chat_id=target.chat_id,
        name=spec.name,
        url=created.invite_link,
        creator_id=target.user_id or None,
        member_limit=spec.member_limit,
        expire_date=expire,
        creates_join_request=spec.approval,
        created_at=now,
    )
    async with services.db.begin() as session:
        saved = await domain.save_link(session, link)
    if not saved:  # the same name was created meanwhile (another process): keep theirs
        await _revoke_quietly(context, target.chat_id, created.invite_link)
        await reply(update, t(lang, "invites.name_taken", name=escape(spec.name)))
        return
    await reply(
        update,
        t(lang, "invites.created", name=escape(spec.name))
        + "\n"
        + _describe(lang, link, target.chat.timezone, now),
    )


def _describe(lang: str, link: domain.InviteLink, tz: ZoneInfo, now: datetime) -> str:
    """The link and its conditions, one line (times in the group's time zone)."""
    parts = [escape(link.url)]
    if link.member_limit:
        parts.append(t(lang, "invites.limit", n=link.member_limit))
    if link.expire_date:
        local = link.expire_date.astimezone(tz).strftime("%Y-%m-%d %H:%M")
        key = "invites.expired" if link.expire_date <= now else "invites.expires"
        parts.append(t(lang, key, when=local))
    if link.creates_join_request:
        parts.append(t(lang, "invites.approval"))
    if link.revoked_at:
        parts.append(t(lang, "invites.revoked_mark"))
    return " · ".join(parts)


async def _revoke_quietly(context: BotContext, chat_id: int, url: str) -> None:
    try:
        await context.bot.revoke_chat_invite_link(chat_id, url)
    except TelegramError as exc:
        log.warning("could not revoke a surplus invite link in %s: %s", chat_id, exc)


async def _revoke(update: Update, context: BotContext, target: Target, name: str) -> None:
    lang, services = target.lang, context.services
    async with services.db() as session:
        link = await domain.link_by_name(session, target.chat_id, name)
    if link is None or link.id is None:
        await reply(update, t(lang, "invites.unknown_name", name=escape(name)))
        return
    if link.revoked_at is not None:
        await reply(update, t(lang, "invites.already_revoked", name=escape(name)))
        return
    try:
        await context.bot.revoke_chat_invite_link(target.chat_id, link.url)
    except (BadRequest, Forbidden) as exc:
        await reply(update, _telegram_problem(lang, exc))
        return
    async with services.db.begin() as session:
        await domain.mark_revoked(session, link.id, services.clock())
    await reply(update, t(lang, "invites.revoked", name=escape(name)))


# --- /invites -----------------------------------------------------------------------------


@operator_command
async def invites_command(update: Update, context: BotContext, target: Target) -> None:
    """/invites: the group's named links with joins, D7 retention and share still active."""
    lang, services = target.lang, context.services
    await services.activity.flush()
    today = local_today(services.clock(), target.chat.timezone)
    async with services.db() as session:
        links = await domain.campaign_links(session, target.chat_id)
        first = min((link.created_at.date() for link in links), default=today)
        all_time = await domain.joins_by_source(
            session, target.chat_id, first - timedelta(days=1), today, today=today, links_only=True
        )
        recent = await domain.joins_by_source(
            session,
            target.chat_id,
            today - timedelta(days=domain.SECTION_DAYS - 1),
            today,
            today=today,
        )
    by_key = {entry.key: entry for entry in all_time}
    lines = [t(lang, "invites.list_title", group=escape(target.chat.title or target.chat_id))]
    if not links:
        lines.append(t(lang, "invites.list_empty"))
    for link in links:
        key = f"link:{link.name}"
        figures = by_key.get(key) or domain.SourceStats(key, link.name)
        lines.append(
            f"• <b>{escape(link.name)}</b> — "
            + _describe(lang, link, target.chat.timezone, services.clock())
        )
        lines.append("  " + domain.figures(lang, figures))
    others = [entry for entry in recent if not entry.key.startswith("link:")]
    if others:
        lines.append("")
        lines.append(t(lang, "invites.other_sources", days=domain.SECTION_DAYS))
        for entry in others:
            lines.append(f"• {domain.source_label(lang, entry)}: " + domain.figures(lang, entry))
    lines.append("")
    lines.append(t(lang, "invites.list_legend"))
    await reply(update, "\n".join(lines))


# --- /myinvite ----------------------------------------------------------------------------


async def myinvite_command(update: Update, context: BotContext) -> None:
    """/myinvite: the member's own invite link (created once, then the same one)."""
    message = update.effective_message
    if not is_group(update) or message is None:
        await reply(update, t(await user_language(update, context), "invites.myinvite_in_group"))
        return
    info = await group_info(update, context)
    user = message.from_user
    lang = info.language
    if (
        user is None
        or message.sender_chat is not None
        or not is_countable_user(user.id, user.is_bot)
    ):
        await reply(update, t(lang, "invites.myinvite_person_only"))
        return
    services = context.services
    async with services.db() as session:
        link = await domain.referral_link(session, info.id, user.id)
    if link is None:
        link = await _create_referral_link(update, context, info, user.id, user.full_name)
        if link is None:
            return
    if link.revoked_at is not None:
        await reply(update, t(lang, "invites.myinvite_revoked"))
        return
    text = t(lang, "invites.myinvite", group=escape(info.title or info.id), url=escape(link.url))
    try:
        await context.bot.send_message(user.id, text, parse_mode="HTML")
    except (Forbidden, BadRequest):
        await reply(update, text)  # they have not started the bot: answer here
        return
    await reply(update, t(lang, "invites.myinvite_sent_privately"))


async def _create_referral_link(
    update: Update, context: BotContext, info: ChatInfo, user_id: int, name: str
) -> domain.InviteLink | None:
    services = context.services
    try:
        created: ChatInviteLink = await context.bot.create_chat_invite_link(
            info.id, name=domain.referral_link_name(name)
        )
    except (BadRequest, Forbidden) as exc:
        await reply(update, _telegram_problem(info.language, exc))
        return None
    link = domain.InviteLink(
        chat_id=info.id,
        referrer_id=user_id,
        url=created.invite_link,
        creator_id=user_id,
        created_at=services.clock(),
    )
    async with services.db.begin() as session:
        saved = await domain.save_link(session, link)
        if not saved:
            link = await domain.referral_link(session, info.id, user_id)  # type: ignore[assignment]
    if not saved:  # created meanwhile elsewhere: keep that one, withdraw ours
        await _revoke_quietly(context, info.id, created.invite_link)
    return link


# --- /referralpoints ----------------------------------------------------------------------


@operator_command
async def referralpoints_command(update: Update, context: BotContext, target: Target) -> None:
    """/referralpoints [N]: points per referred member who stayed 7 days (0 = off)."""
    lang, services = target.lang, context.services
    args = list(context.args or ())
    if args:
        raw = args[0]
        if len(args) > 1 or not raw.isdecimal() or int(raw) > MAX_REFERRAL_POINTS:
            await reply(
                update,
                t(
                    lang,
                    "invites.points_bad",
                    value=escape(" ".join(args)),
                    max=MAX_REFERRAL_POINTS,
                ),
            )
            return
        async with services.db.begin() as session:
            await domain.set_referral_points(session, target.chat_id, int(raw))
    async with services.db() as session:
        amount = await domain.referral_points(session, target.chat_id)
    key = "invites.points_on" if amount else "invites.points_off"
    await reply(update, t(lang, key, n=amount))


# --- /top invites (called by /top in handlers.checkins) -------------------------------------


def wants_top_invites(args: list[str]) -> bool:
    return bool(args) and args[0].lower() in TOP_WORDS


async def top_invites(
    update: Update, context: BotContext, info: ChatInfo, args: list[str]
) -> None:
    """/top invites [N]: members by referred joiners who stayed 7 days."""
    lang, services = info.language, context.services
    rest = args[1:]
    size = TOP_DEFAULT
    if rest:
        if len(rest) > 1 or not rest[0].isdecimal() or not 1 <= int(rest[0]) <= TOP_MAX:
            await reply(
                update, t(lang, "invites.top_usage", word=escape(" ".join(rest)), max=TOP_MAX)
            )
            return
        size = int(rest[0])
    await services.activity.flush()
    async with services.db.begin() as session:  # judge what is due first (lazy check)
        await domain.settle_referrals(session, now=services.clock(), chat_id=info.id)
    async with services.db() as session:
        board = await domain.top_referrers(session, info.id, size)
        names = await display_names(session, chat_id=info.id, user_ids=[r.user_id for r in board])
    lines = [t(lang, "invites.top_title")]
    if not board:
        lines.append(t(lang, "invites.top_empty"))
    for place, entry in enumerate(board, start=1):
        name = names.get(entry.user_id) or str(entry.user_id)
        values = {"place": place, "name": escape(name), "stayed": entry.stayed}
        lines.append(t(lang, "invites.top_line", joined=entry.joined, **values))
    lines.append(t(lang, "invites.top_legend"))
    await reply(update, "\n".join(lines))


# --- join requests --------------------------------------------------------------------------


async def on_join_request(update: Update, context: BotContext) -> None:
    """chat_join_request: remember the link it came through for the join that follows."""
    request = update.chat_join_request
    if request is None or request.chat.type not in GROUP_TYPES:
        return
    link = request.invite_link
    when: datetime = request.date
    async with context.services.db.begin() as session:
        await domain.note_join_request(
            session,
            chat_id=request.chat.id,
            user_id=request.from_user.id,
            url=link.invite_link if link else None,
            name=link.name if link else None,
            when=when,
        )


HANDLERS = {
    "invite": invite_command,
    "invites": invites_command,
    "myinvite": myinvite_command,
    "referralpoints": referralpoints_command,
}


def register(app: Application) -> None:
    # Join requests are recorded with the tracking (no other feature handles them yet).
    app.add_handler(ChatJoinRequestHandler(on_join_request), group=TRACKING)
    app.add_handlers(
        [CommandHandler(name, callback) for name, callback in HANDLERS.items()],
        group=COMMAND_GROUP,
    )
