"""Campaigns (活动复盘): /campaign start|end|cancel|show, dated campaigns, /campaigns.

The review goes to the group itself (also when an operator ends the campaign from a private
chat through /groups); `/campaign show` shows a review again where it was asked for.
"""

from __future__ import annotations

from telegram import Update
from telegram.ext import Application, CommandHandler

from bot import campaigns as domain
from bot.commands import Audience, CommandSpec
from bot.i18n import t
from bot.services import BotContext
from bot.text import escape
from handlers import COMMANDS as COMMAND_GROUP
from handlers.common import Target, operator_command, reply
from schedules import campaigns as jobs

FEATURE = "campaigns"
COMMANDS = [
    CommandSpec("campaign", Audience.OPERATOR, FEATURE),
    CommandSpec("campaigns", Audience.OPERATOR, FEATURE),
]
LISTED = 20


def _usage(lang: str) -> str:
    return t(lang, "campaigns.usage")


def _describe(campaign: domain.Campaign, target: Target) -> str:
    lang, tz = target.lang, target.chat.timezone
    return t(
        lang,
        "campaigns.describe",
        name=escape(campaign.name),
        id=campaign.id,
        window=domain.window_text(campaign, tz),
        zone=tz.key,
        goals=domain.goals_text(campaign.goals, lang),
    )


@operator_command
async def campaign_command(update: Update, context: BotContext, target: Target) -> None:
    """/campaign start NAME [goal M V …] | NAME from D1 to D2 [goal …] | end | cancel | show X."""
    args = list(context.args or ())
    lang = target.lang
    word = args[0].lower() if args else ""
    if not args:
        await _status(update, context, target)
    elif len(args) == 1 and word in ("end", "stop", "结束"):
        await _end(update, context, target)
    elif len(args) == 1 and word in ("cancel", "取消"):
        await _cancel(update, context, target)
    elif word in ("show", "review", "查看") and not domain.looks_dated(args):
        await _show(update, context, target, " ".join(args[1:]))
    else:
        now = context.services.clock()
        try:
            if word in ("start", "开始") and not domain.looks_dated(args):
                spec = domain.parse_start(args[1:], now=now)
            else:
                spec = domain.parse_dated(args, now=now, tz=target.chat.timezone)
        except domain.CampaignArgsError as exc:
            await reply(update, t(lang, exc.key, **exc.values) + "\n\n" + _usage(lang))
            return
        await _create(update, context, target, spec)


async def _status(update: Update, context: BotContext, target: Target) -> None:
    async with context.services.db() as session:
        current = await domain.open_campaign(session, target.chat_id)
    lang = target.lang
    if current is None:
        text = t(lang, "campaigns.none_open")
    else:
        running = current.running(context.services.clock())
        key = "campaigns.status_running" if running else "campaigns.status_planned"
        text = t(lang, key) + "\n" + _describe(current, target)
    await reply(update, text + "\n\n" + _usage(lang))


async def _create(
    update: Update, context: BotContext, target: Target, spec: domain.CampaignSpec
) -> None:
    services = context.services
    lang = target.lang
    now = services.clock()
    created = await domain.create(services.db, target.chat_id, spec, by=target.user_id, now=now)
    if created is None:
        async with services.db() as session:
            current = await domain.open_campaign(session, target.chat_id)
        text = t(lang, "campaigns.already_open")
        if current is not None:
            text += "\n" + _describe(current, target)
        await reply(update, text)
        return
    assert created.id is not None
    if created.ends_at is not None and created.ends_at <= now:
        key = "campaigns.recorded"
    elif created.starts_at <= now:
        key = "campaigns.started_until" if created.ends_at else "campaigns.started"
    else:
        key = "campaigns.planned"
    await reply(update, t(lang, key) + "\n" + _describe(created, target))
    if created.ends_at is not None and created.ends_at <= now:
        # A period already over: its review right away.
        await jobs.run_review(context.application, created.id)
    else:
        jobs.schedule(context.application, created)


async def _end(update: Update, context: BotContext, target: Target) -> None:
    services = context.services
    lang = target.lang
    now = services.clock()
    async with services.db() as session:
        current = await domain.open_campaign(session, target.chat_id)
    if current is None or current.id is None:
        await reply(update, t(lang, "campaigns.none_to_end") + "\n\n" + _usage(lang))
        return
    if current.starts_at > now:
        await reply(
            update,
            t(lang, "campaigns.not_started", name=escape(current.name), id=current.id),
        )
        return
    outcome = await jobs.run_review(context.application, current.id, ended_by=target.user_id)
    if outcome == "taken":
        await reply(update, t(lang, "campaigns.already_ending", name=escape(current.name)))
    elif outcome == "failed":
        await reply(update, t(lang, "campaigns.review_failed", id=current.id))
    elif target.private:
        await reply(update, t(lang, "campaigns.review_posted", name=escape(current.name)))


async def _cancel(update: Update, context: BotContext, target: Target) -> None:
    services = context.services
    lang = target.lang
    async with services.db() as session:
        current = await domain.open_campaign(session, target.chat_id)
    if current is None or current.id is None:
        await reply(update, t(lang, "campaigns.none_to_end") + "\n\n" + _usage(lang))
        return
    if await domain.cancel(services.db, current.id, now=services.clock()):
        jobs.unschedule(context.application, current.id)
        await reply(update, t(lang, "campaigns.cancelled", name=escape(current.name)))
    else:
        await reply(update, t(lang, "campaigns.already_ending", name=escape(current.name)))


async def _show(update: Update, context: BotContext, target: Target, key: str) -> None:
    services = context.services
    lang = target.lang
    if not key.strip():
        await reply(update, t(lang, "campaigns.err_show") + "\n\n" + _usage(lang))
        return
    async with services.db() as session:
        found = await domain.find(session, target.chat_id, key)
    if found is None or found.state == domain.CANCELLED:
        await reply(update, t(lang, "campaigns.unknown", key=escape(key)))
        return
    if found.starts_at > services.clock():
        await reply(update, t(lang, "campaigns.show_planned") + "\n" + _describe(found, target))
        return
    chat = update.effective_chat
    assert chat is not None
    if await jobs.post_review(context.bot, services, found, chat.id) is None:
        await reply(update, t(lang, "campaigns.show_failed"))


@operator_command
async def campaigns_command(update: Update, context: BotContext, target: Target) -> None:
    """/campaigns: the group's campaigns, newest first, one line with each one's result."""
    services = context.services
    lang = target.lang
    async with services.db() as session:
        found = await domain.past(session, target.chat_id, LISTED)
    if not found:
        await reply(update, t(lang, "campaigns.list_empty") + "\n\n" + _usage(lang))
        return
    now = services.clock()
    lines = [t(lang, "campaigns.list_title", group=escape(target.chat.title))]
    lines += [domain.list_line(c, lang, target.chat.timezone, now) for c in found]
    lines += ["", t(lang, "campaigns.list_hint")]
    await reply(update, "\n".join(lines))


def register(app: Application) -> None:
    app.add_handlers(
        [
            CommandHandler("campaign", campaign_command),
            CommandHandler("campaigns", campaigns_command),
        ],
        group=COMMAND_GROUP,
    )


__all__ = ["COMMANDS", "register"]
